#!/usr/bin/env bash
# A perf profile of the gateway during one harness run (embedded store unless MODE is set).
# usage (from the project root): [DELAY=s] [SECS=s] scripts/bench/profile.sh N OUT.data
# (FREQ=samples a second; CALLGRAPH="--call-graph dwarf" for whole stacks from the release
# build's debug info; EVENT="-e page-faults -c 1" counts events instead of sampling time)
# then: perf report -i OUT.data --no-children --sort symbol --stdio -g none
# PEERS: the harness's folder (default ../shared/bench-peers).
set -u
N=$1; OUT=$2
source "$(dirname "$0")/harness-start.sh"
# From the first acknowledgement (the burst has begun), after DELAY seconds, for SECS seconds.
for _ in $(seq 1 200); do
  curl -s http://127.0.0.1:18080/metrics | awk '$1=="messnetz_messages_acked_total" && $2>0 {f=1} END {exit !f}' && break
  sleep 0.05
done
sleep "${DELAY:-0}"
[ -n "$gw" ] && perf record ${EVENT:--F ${FREQ:-1999}} ${CALLGRAPH:--g} -p "$gw" -o "$OUT" -- sleep "${SECS:-4}" 2>/dev/null
wait "$harness"
cat "$log"; rm -f "$log"
