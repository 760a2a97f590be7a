#!/usr/bin/env bash
# Two builds of the gateway on the same harness job, alternated round by round (embedded store
# unless MODE is set): what a change does, measured in one sitting.
# usage (from the project root): scripts/bench/alternate.sh N ROUNDS BINARY_A BINARY_B
# e.g. MESSNETZ__STORE__CACHE_MB=32 scripts/bench/alternate.sh 1000000 2 /tmp/before /tmp/after
# ENV_A, ENV_B: settings for one side only (e.g. ENV_B=MESSNETZ__INFLUXDB__GZIP=false, the
# same binary on both sides). PEERS: the harness's folder (default ../shared/bench-peers). Each round also prints the
# gateway's CPU time to the clock tick (the harness rounds it to 0.1 s), read from /proc until
# the harness stops it.
set -u
N=$1; R=$2; A=$3; B=$4; PEERS=${PEERS:-../shared/bench-peers}
# The harness runs $MESSNETZ_BIN from a copy of the demo and profiles two folders above it.
layout=$(mktemp -d)
for v in A B; do
  mkdir -p "$layout/$v/target/release"
  cp "${!v}" "$layout/$v/target/release/messnetz"
  cp -r demo sensor-profiles "$layout/$v/"
done
for r in $(seq 1 "$R"); do
  for v in A B; do
    extra="ENV_$v"; echo "== $v (${!v} ${!extra:-}) round $r $(date -u +%T)"
    bin="$layout/$v/target/release/messnetz"
    ( gw=""; for _ in $(seq 1 1200); do gw=$(pgrep -f "^$bin" -n) && break; sleep 0.1; done
      tick=$(getconf CLK_TCK); cpu=0
      while c=$(awk "{print \$14+\$15, \$14, \$15}" "/proc/$gw/stat" 2>/dev/null); do cpu=$c; sleep 0.02; done
      echo "gateway cpu seconds (to the tick): $(awk -v c="$cpu" -v t="$tick" 'BEGIN {split(c, v, " "); printf "%.2f (user %.2f, system %.2f)", v[1]/t, v[2]/t, v[3]/t}')" ) &
    extra="ENV_$v"
    env ${!extra:-} MESSNETZ_BIN="$bin" MODE=${MODE:-embedded} bash "$PEERS/run-messnetz.sh" "$N" 2>&1 | tail -2
    wait
  done
done
rm -rf "$layout"
