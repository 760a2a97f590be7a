#!/usr/bin/env bash
# The InfluxDB writer catching up after an outage: N uplinks taken and spooled while the write
# target is down, then the time from its return until every point is written (the gateway's
# own count, polled every 20 ms), with nothing else running. VictoriaMetrics is the target.
# usage (from the project root): [MESSNETZ_BIN=...] scripts/bench/catch-up.sh N [ROUNDS]
set -u
N=$1; R=${2:-1}
BIN=${MESSNETZ_BIN:-$(pwd)/target/release/messnetz}
PEERS=${PEERS:-../shared/bench-peers}
source "$PEERS/common.sh" "$N"; LIB=$(cd "$PEERS/lib" && pwd)
start_mosquitto; make_uplinks
export MESSNETZ__INFLUXDB__URL=http://127.0.0.1:18428 MESSNETZ__INFLUXDB__ORG=city MESSNETZ__INFLUXDB__BUCKET=climate \
  MESSNETZ__INFLUXDB__TOKEN=peer MESSNETZ__INFLUXDB__RETRY_MIN_MS=10 MESSNETZ__INFLUXDB__RETRY_MAX_MS=50
metric() { curl -s http://127.0.0.1:18080/metrics | awk -v m="$1" '$1==m {print int($2); f=1} END {if (!f) print 0}'; }
for r in $(seq 1 "$R"); do
  D=$(mktemp -d "$W/gw.XXXX"); cp -r "$(dirname "$BIN")/../../demo" "$(dirname "$BIN")/../../sensor-profiles" "$D/"
  ( cd "$D" && MESSNETZ__BROKER__ENABLED=false MESSNETZ__MQTT__PORT=18833 MESSNETZ__API__LISTEN=127.0.0.1:18080 \
    exec "$BIN" >>"$D/mn.log" 2>&1 ) & GW=$!
  for _ in $(seq 1 200); do curl -fs http://127.0.0.1:18080/healthz >/dev/null 2>&1 && break; sleep 0.05; done
  publish2
  for _ in $(seq 1 2400); do [ "$(metric messnetz_messages_acked_total)" -ge "$N" ] && break; sleep 0.05; done
  SPOOLED=$(metric messnetz_influx_spool_readings)
  rm -rf "$W/vm"; start_vm; VM=${PIDS[-1]}; T0=$(date +%s.%N)
  for _ in $(seq 1 3000); do [ "$(metric messnetz_influx_spool_readings)" -eq 0 ] && break; sleep 0.02; done; T1=$(date +%s.%N)
  echo "catch-up round $r: $SPOOLED points in $(python3 -c "print(f'{$T1-$T0:.2f} s, {$SPOOLED/($T1-$T0):.0f} points/s')")" \
    "(written $(metric messnetz_influx_points_written_total)); gateway cpu $(awk '{printf "%.2f", ($14+$15)/100}' /proc/$GW/stat) s"
  kill -TERM "$GW"; wait "$GW"; kill "$VM"; wait "$VM" 2>/dev/null
done
