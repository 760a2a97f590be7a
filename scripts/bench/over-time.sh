#!/usr/bin/env bash
# Gateway CPU per acknowledged uplink as the store grows during one harness run (embedded store
# unless MODE is set): every STEP acknowledgements (default a tenth of N), how many were
# acknowledged in that stretch and the CPU time they took, read from /proc and /metrics.
# usage (from the project root): [STEP=n] scripts/bench/over-time.sh N
# e.g. MESSNETZ__STORE__CACHE_MB=32 scripts/bench/over-time.sh 1000000
# PEERS: the harness's folder (default ../shared/bench-peers); MESSNETZ_BIN: the binary.
set -u
N=$1; STEP=${STEP:-$((N / 10))}
source "$(dirname "$0")/harness-start.sh"
tick=$(getconf CLK_TCK)
acked() { curl -s --max-time 1 http://127.0.0.1:18080/metrics | awk '$1=="messnetz_messages_acked_total" {print $2; f=1} END {if (!f) print 0}'; }
printf '%-17s %10s %12s %16s\n' "acknowledged" "uplinks" "CPU seconds" "µs an uplink"
last_n=0; last_cpu=$(awk '{print $14+$15}' "/proc/$gw/stat" 2>/dev/null || echo 0); next=$STEP
while cpu=$(awk '{print $14+$15}' "/proc/$gw/stat" 2>/dev/null); do
  n=$(acked); n=${n%.*}
  if [ "${n:-0}" -ge "$next" ]; then
    awk -v a="$last_n" -v b="$n" -v c0="$last_cpu" -v c1="$cpu" -v t="$tick" \
      'BEGIN {s = (c1 - c0) / t; printf "%7d–%-9d %10d %12.2f %16.1f\n", a, b, b - a, s, 1e6 * s / (b - a)}'
    last_n=$n; last_cpu=$cpu; next=$((n - n % STEP + STEP))
  fi
  sleep 0.05
done
wait "$harness"
tail -2 "$log"; rm -f "$log"
