#!/usr/bin/env bash
# The InfluxDB writer catching up after an outage: N uplinks taken and spooled while the write
# target is down, then the time from its return until every point is written (the gateway's
# own count, polled every 20 ms), with nothing else running. VictoriaMetrics is the target.
# usage (from the project root): [MESSNETZ_BIN=...] scripts/bench/catch-up.sh N [ROUNDS]
source "$(dirname "$0")/alone.sh"
export MESSNETZ__INFLUXDB__URL=http://127.0.0.1:18428 MESSNETZ__INFLUXDB__ORG=city MESSNETZ__INFLUXDB__BUCKET=climate \
  MESSNETZ__INFLUXDB__TOKEN=peer MESSNETZ__INFLUXDB__RETRY_MIN_MS=10 MESSNETZ__INFLUXDB__RETRY_MAX_MS=50
for r in $(seq 1 "$R"); do
  gateway; PIDS+=("$GW")
  publish2
  until_reached "$N" metric messnetz_messages_acked_total
  SPOOLED=$(metric messnetz_influx_spool_readings)
  rm -rf "$W/vm"; start_vm; VM=${PIDS[-1]}; T0=$(date +%s.%N)
  for _ in $(seq 1 3000); do [ "$(metric messnetz_influx_spool_readings)" -eq 0 ] && break; sleep 0.02; done; T1=$(date +%s.%N)
  echo "catch-up round $r: $SPOOLED points in $(python3 -c "print(f'{$T1-$T0:.2f} s, {$SPOOLED/($T1-$T0):.0f} points/s')")" \
    "(written $(metric messnetz_influx_points_written_total)); gateway cpu $(awk '{printf "%.2f", ($14+$15)/100}' /proc/$GW/stat) s"
  kill -TERM "$GW"; wait "$GW"; kill "$VM"; wait "$VM" 2>/dev/null
done
