# Sourced by drain.sh, catch-up.sh, null-target.sh and redelivery.sh: the harness's broker and
# uplinks, and the gateway run alone on them. Sets N, R, BIN and LIB from "$@" (N [ROUNDS]) and
# the environment.
set -u
N=$1; R=${2:-1}
BIN=${MESSNETZ_BIN:-$(pwd)/target/release/messnetz}
PEERS=${PEERS:-../shared/bench-peers}
source "$PEERS/common.sh" "$N"; LIB=$(cd "$PEERS/lib" && pwd)
start_mosquitto; make_uplinks
# The gateway started in a new folder under the harness's, with the demo's devices and the
# bundled profiles (two levels above the binary); sets D and GW. Its session at the broker is
# kept (clean_session is off by default).
gateway() {
  D=${1:-$(mktemp -d "$W/gw.XXXX")}
  [ -d "$D/demo" ] || cp -r "$(dirname "$BIN")/../../demo" "$(dirname "$BIN")/../../sensor-profiles" "$D/"
  ( cd "$D" && MESSNETZ__BROKER__ENABLED=false MESSNETZ__MQTT__PORT=18833 MESSNETZ__API__LISTEN=127.0.0.1:18080 \
    exec "$BIN" >>"$D/mn.log" 2>&1 ) & GW=$!
  for _ in $(seq 1 200); do curl -fs http://127.0.0.1:18080/healthz >/dev/null 2>&1 && return; sleep 0.05; done
}
# A counter or gauge of the gateway's /metrics, as an integer (0 if absent).
metric() { curl -s http://127.0.0.1:18080/metrics | awk -v m="$1" '$1==m {print int($2); f=1} END {if (!f) print 0}'; }
# until_reached WANT CMD...: run CMD (it prints an integer) every 20 ms until it prints WANT or
# more, for at most two minutes; sets C (what it printed last) and T1 (when polling stopped).
until_reached() {
  local want=$1; shift; C=0
  for _ in $(seq 1 6000); do C=$("$@"); [ "$C" -ge "$want" ] && break; sleep 0.02; done
  T1=$(date +%s.%N)
}
