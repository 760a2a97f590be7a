#!/usr/bin/env bash
# One harness run (embedded store unless MODE is set) with the gateway's threads watched every
# 0.2 s until it stops: per thread, its name, its user and system ticks and its voluntary and
# involuntary context switches, as last seen with every thread still there; then the totals.
# usage (from the project root): [MESSNETZ_BIN=…] scripts/bench/threads.sh N
# (MESSNETZ_BIN in a copy of the project's layout, as for alternate.sh; PEERS: the harness's folder)
set -u
N=$1
source "$(dirname "$0")/harness-start.sh"
# One line per thread: id, name, user ticks, system ticks, voluntary, involuntary switches.
snapshot() {
  for t in /proc/"$gw"/task/*; do
    awk -v id="${t##*/}" -v name="$(cat "$t/comm" 2>/dev/null)" '
      FILENAME ~ /stat$/ { u = $14; s = $15 }
      /^voluntary_ctxt_switches/ { v = $2 }
      /^nonvoluntary_ctxt_switches/ { n = $2 }
      END { if (u != "" && v != "") print id, name, u, s, v, n; else print "gone" }' "$t/stat" "$t/status" 2>/dev/null || echo gone
  done
}
last=""
while [ -n "$gw" ] && kill -0 "$gw" 2>/dev/null; do
  now=$(snapshot)
  # A thread that ended between listing and reading leaves the earlier snapshot standing.
  grep -q gone <<< "$now" || last=$now
  sleep 0.2
done
wait "$harness"
tail -2 "$log"; rm -f "$log"
echo "thread name user-ticks system-ticks voluntary involuntary"
echo "$last"
awk '{u += $3; s += $4; v += $5; n += $6} END {print "all", "-", u, s, v, n}' <<< "$last"
