#!/usr/bin/env bash
# What the gateway's own InfluxDB path adds, without the time-series server's work on the same
# cores: the harness's uplinks, once to the embedded store alone and once more with the InfluxDB
# writer sending to scripts/bench/null-target.py (which counts lines and keeps nothing), a fresh
# gateway each time, round by round. Prints each run's time, the gateway's CPU to the tick and
# the messages it took.
# usage (from the project root): [MESSNETZ_BIN=...] scripts/bench/null-target.sh N [ROUNDS]
# (MESSNETZ__INFLUXDB__* settings in the environment apply to the runs with InfluxDB only)
source "$(dirname "$0")/alone.sh"
# One broker serves every run: each gateway starts a clean session, so none is handed messages
# its predecessor took (Mosquitto 2.0.11 sends a resumed session tens of thousands again).
export MESSNETZ__MQTT__CLEAN_SESSION=true
TARGET=$(dirname "$0")/null-target.py
cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f s (user %.2f, system %.2f)", ($14+$15)/t, $14/t, $15/t}' "/proc/$1/stat"; }
# run NAME COUNT...: a fresh gateway takes the uplinks; done when COUNT reaches what N should give.
run() {
  local name=$1 want=$2; shift 2
  gateway; PIDS+=("$GW"); sleep 0.5
  kill -0 "$GW" 2>/dev/null || { echo "$name: the gateway did not start:"; tail -3 "$D/mn.log"; exit 1; }
  publish2
  until_reached "$want" "$@"
  echo "$name: $C/$want in $(python3 -c "print(f'{$T1-$T0:.2f}')") s; gateway cpu $(cpu "$GW");" \
    "messages taken $(metric messnetz_messages_received_total)"
  kill -TERM "$GW"; wait "$GW"
}
for r in $(seq 1 "$R"); do
  echo "== round $r $(date -u +%T)"
  ( for v in $(compgen -e | grep '^MESSNETZ__INFLUXDB__'); do unset "$v"; done
    run "embedded store alone" "$N" metric messnetz_messages_acked_total ) || exit 1
  python3 "$TARGET" 18429 & T=$!; PIDS+=("$T")
  for _ in $(seq 1 100); do curl -fs http://127.0.0.1:18429/count >/dev/null 2>&1 && break; sleep 0.05; done
  ( export MESSNETZ__INFLUXDB__URL=http://127.0.0.1:18429 MESSNETZ__INFLUXDB__ORG=city MESSNETZ__INFLUXDB__BUCKET=climate \
      MESSNETZ__INFLUXDB__TOKEN=peer
    run "with InfluxDB, null target" $((6 * N)) curl -s http://127.0.0.1:18429/count ) || exit 1
  kill "$T"; wait "$T" 2>/dev/null
done
