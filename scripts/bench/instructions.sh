#!/usr/bin/env bash
# Instructions per uplink of the ingest pipeline and the embedded store's commit, counted by
# callgrind on `benches/pipeline.rs` (they repeat from run to run, where seconds on a shared
# machine drift by more than most changes move them). Needs valgrind (Debian: apt install valgrind).
# usage (from the project root): scripts/bench/instructions.sh [UPLINKS] [OUT]
# (MESSNETZ_BENCH_INFLUX=1: with the InfluxDB spool's share of ingest, encoding and packing)
set -eu
N=${1:-20000}; OUT=${2:-$(mktemp)}
cargo bench --bench pipeline --no-run 2>&1 | tail -1
BENCH=$(cargo bench --bench pipeline --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "pipeline" and m.get("executable"):
        print(m["executable"])')
MESSNETZ_BENCH_UPLINKS=$N MESSNETZ_BENCH_RUNS=1 valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BENCH" 2>&1 \
  | grep -E 'I +refs|^run'
callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null | awk -v n="$N" '
  /PROGRAM TOTALS/ { name = "the whole bench" }
  /\/src\/ingest\/pipeline.rs:messnetz::ingest::pipeline::Pipeline::process$/ { name = "Pipeline::process" }
  /\/src\/quality\/series.rs:messnetz::quality::series::SeriesHistory::check$/ { name = "SeriesHistory::check" }
  /\/src\/sources\/ttn.rs:messnetz::sources::ttn::parse$/ { name = "ttn::parse" }
  /^ *[0-9,]+ .*src\/store\/embedded\/store.rs:<messnetz::store::embedded::store::EmbeddedStore as messnetz::store::boundary::CommitStore>::write / { name = "EmbeddedStore::write" }
  /redb-[0-9.]+\/src\/table.rs:redb::table::Table<K,V>::insert \[/ { name = "redb Table::insert" }
  /\/src\/sinks\/influx\/spool.rs:messnetz::sinks::influx::spool::Spool::encode$/ { name = "Spool::encode" }
  /\/src\/store\/embedded\/outbox.rs:messnetz::store::embedded::outbox::rows$/ { name = "outbox::rows" }
  name && !(name in seen) { ir = $1; gsub(",", "", ir); seen[name] = 1
    printf "%-24s %15s instructions, %8.0f per uplink\n", name, $1, ir / n }
  { name = "" }'
echo "callgrind output: $OUT (callgrind_annotate --inclusive=yes $OUT)"
