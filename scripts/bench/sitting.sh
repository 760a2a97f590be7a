#!/usr/bin/env bash
# One sitting of the side-by-side harness without Node-RED, rounds interleaved: the broker,
# messnetz on the embedded store, messnetz with InfluxDB (VictoriaMetrics), the Python script.
# usage (from the project root, after `cargo build --release`): scripts/bench/sitting.sh [N] [ROUNDS]
# PEERS: the harness's folder (default ../shared/bench-peers).
set -u
N=${1:-100000}; R=${2:-3}; PEERS=${PEERS:-../shared/bench-peers}
for r in $(seq 1 "$R"); do
  echo "== round $r $(date -u +%T)"
  bash "$PEERS/run-broker.sh" "$N" 2>&1 | tail -1
  MODE=embedded bash "$PEERS/run-messnetz.sh" "$N" 2>&1 | tail -2
  bash "$PEERS/run-messnetz.sh" "$N" 2>&1 | tail -2
  bash "$PEERS/run-python.sh" "$N" 2>&1 | tail -1
done
