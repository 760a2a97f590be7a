#!/usr/bin/env bash
# Two builds of the gateway on the same harness job, alternated round by round (embedded store
# unless MODE is set): what a change does, measured in one sitting.
# usage (from the project root): scripts/bench/alternate.sh N ROUNDS BINARY_A BINARY_B
# e.g. MESSNETZ__STORE__CACHE_MB=32 scripts/bench/alternate.sh 1000000 2 /tmp/before /tmp/after
# PEERS: the harness's folder (default ../shared/bench-peers).
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
    echo "== $v (${!v}) round $r $(date -u +%T)"
    MESSNETZ_BIN="$layout/$v/target/release/messnetz" MODE=${MODE:-embedded} bash "$PEERS/run-messnetz.sh" "$N" 2>&1 | tail -2
  done
done
rm -rf "$layout"
