#!/usr/bin/env bash
# One harness run (embedded store unless MODE is set) with the gateway watched every 0.2 s
# until it stops: its bytes and calls read and written (/proc/PID/io), its CPU ticks (user,
# system) and its commits (the batch histogram of /metrics), as last seen.
# usage (from the project root): [MESSNETZ_BIN=…] scripts/bench/io.sh N
# (MESSNETZ_BIN in a copy of the project's layout, as for alternate.sh; PEERS: the harness's folder)
set -u
N=$1; PEERS=${PEERS:-../shared/bench-peers}
BIN=${MESSNETZ_BIN:-$(pwd)/target/release/messnetz}
log=$(mktemp)
( MESSNETZ_BIN=$BIN MODE=${MODE:-embedded} bash "$PEERS/run-messnetz.sh" "$N" > "$log" 2>&1 ) &
harness=$!
gw=""
for _ in $(seq 1 1200); do gw=$(pgrep -f "^$BIN" -n) && break; sleep 0.1; done
io=""; ticks=""; batches=""
while [ -n "$gw" ] && kill -0 "$gw" 2>/dev/null; do
  m=$(curl -s http://127.0.0.1:18080/metrics | grep -E '^messnetz_(ingest_batch_messages|store_commit_seconds)_(sum|count) ' | tr '\n' ' ')
  [ -n "$m" ] && batches=$m
  i=$(tr '\n' ' ' < "/proc/$gw/io" 2>/dev/null) && [ -n "$i" ] && io=$i
  t=$(awk '{print "user ticks", $14, "system ticks", $15}' "/proc/$gw/stat" 2>/dev/null) && [ -n "$t" ] && ticks=$t
  sleep 0.2
done
wait "$harness"
tail -2 "$log"; rm -f "$log"
echo "$io"; echo "$ticks"; echo "$batches"
