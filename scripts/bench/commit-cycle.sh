#!/usr/bin/env bash
# One harness run (embedded store unless MODE is set) that reads the gateway's /metrics before
# the harness stops it: the number of commits, their summed latency and the messages per commit.
# usage (from the project root): scripts/bench/commit-cycle.sh [N]
# PEERS: the harness's folder (default ../shared/bench-peers).
set -u
N=${1:-100000}; PEERS=${PEERS:-../shared/bench-peers}
copy=$(mktemp -d)
cp -r "$PEERS/." "$copy/"
# The harness's own script, with a scrape of /metrics once every message is acknowledged.
sed -i 's|^GW=\$(pgrep|curl -s http://127.0.0.1:18080/metrics > "$W/metrics.txt"\nGW=$(pgrep|' "$copy/run-messnetz.sh"
MODE=${MODE:-embedded} bash "$copy/run-messnetz.sh" "$N" 2>&1 | tail -2
W=$(ls -td /tmp/peer.* | head -1)
grep -E '^messnetz_(store_commit_seconds|ingest_batch_messages)_(sum|count) ' "$W/metrics.txt"
rm -rf "$copy"
