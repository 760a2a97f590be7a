#!/usr/bin/env bash
# The gateway's own pace: N uplinks queued at the broker while the gateway is stopped, then
# taken by it alone (no publisher on the cores). Measures from the gateway's start until it has
# acknowledged all N after their durable commit (embedded store unless MODE=influx, then until
# InfluxDB has them). The harness's broker, uplinks and publisher (../shared/bench-peers).
# usage (from the project root): [MESSNETZ_BIN=...] [MODE=influx] scripts/bench/drain.sh N [ROUNDS]
source "$(dirname "$0")/alone.sh"
[ "${MODE:-embedded}" = embedded ] || export MESSNETZ__INFLUXDB__URL=http://127.0.0.1:18428 \
  MESSNETZ__INFLUXDB__ORG=city MESSNETZ__INFLUXDB__BUCKET=climate MESSNETZ__INFLUXDB__TOKEN=peer
for r in $(seq 1 "$R"); do
  if [ "${MODE:-embedded}" != embedded ]; then # an empty VictoriaMetrics each round: it would count a round's points as the last's
    [ -n "${VM:-}" ] && { kill "$VM"; wait "$VM" 2>/dev/null; rm -rf "$W/vm"; }
    start_vm; VM=${PIDS[-1]}
  fi
  gateway; sleep 0.5; kill -TERM "$GW"; wait "$GW"   # subscribed once, then stopped
  publish2
  T0=$(date +%s.%N); gateway "$D"; PIDS+=("$GW")
  if [ "${MODE:-embedded}" = embedded ]; then # polled often: a drain takes seconds
    until_reached "$N" metric messnetz_messages_acked_total
  else wait_count vm_count '{__name__="air_temperature_value",device="demo-lht65"}'; fi
  echo "drain round $r: $C/$N in $(python3 -c "print(f'{$T1-$T0:.2f}')") s, $(python3 -c "print(f'{$C/($T1-$T0):.0f}')") msg/s;" \
    "gateway cpu $(awk '{printf "%.2f", ($14+$15)/100}' /proc/$GW/stat) s, peak RSS $(awk '/VmHWM/ {print int($2/1024)}' /proc/$GW/status) MB"
  # How much of that the commits took: the stage waits for each before decoding the next batch.
  curl -s http://127.0.0.1:18080/metrics | awk '$1=="messnetz_store_commit_seconds_sum" {s=$2} $1=="messnetz_store_commit_seconds_count" {n=$2}
    END {printf "  %d commits, %.2f s in them\n", n, s}'
  kill -TERM "$GW"; wait "$GW"
done
