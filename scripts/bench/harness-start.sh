# Sourced by the bench scripts that watch the gateway during one harness run: starts
# run-messnetz.sh for $N uplinks in the background (embedded store unless MODE is set; its
# output in $log, its PID in $harness) and waits until the gateway runs ($gw, its PID).
# PEERS: the harness's folder (default ../shared/bench-peers); MESSNETZ_BIN: the binary.
PEERS=${PEERS:-../shared/bench-peers}
BIN=${MESSNETZ_BIN:-$(pwd)/target/release/messnetz}
log=$(mktemp)
( MODE=${MODE:-embedded} bash "$PEERS/run-messnetz.sh" "$N" > "$log" 2>&1 ) &
harness=$!
gw=""
# Generating a million uplinks takes the harness a while before the gateway starts.
for _ in $(seq 1 1200); do gw=$(pgrep -f "^$BIN" -n) && break; sleep 0.1; done
