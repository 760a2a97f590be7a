//! Benchmark: rollup upkeep's share of ingest into PostgreSQL, and `/v1/aggregates` latency with a year of a city's readings in PostgreSQL.
//!
//! `cargo bench --bench aggregates_pg` (needs `wrk` and Debian's `postgresql`, as the tests
//! do). Everything runs against a private cluster with PostgreSQL's durable defaults (fsync
//! on, synchronous commit). Sizes: MESSNETZ_BENCH_DEVICES (1000), MESSNETZ_BENCH_DAYS (365),
//! MESSNETZ_BENCH_RUNS (3), MESSNETZ_BENCH_WRK_S (10 seconds per load run),
//! MESSNETZ_BENCH_WRK_C (8 connections),
//! MESSNETZ_BENCH_UPLINKS (100,000 uplinks of 6 readings for the upkeep share).
//!
//! The year is loaded the fast way: the first device through the store's own batch write
//! (which creates the monthly partitions and its windows as ingest does), every other device
//! by SQL inside PostgreSQL (readings from `generate_series`, their device and district
//! windows folded by `GROUP BY` and merged into the stored ones as the store merges a
//! batch). The bench checks that SQL, run for the first device, gives the windows the store
//! wrote for it.

#[path = "city/mod.rs"]
mod city;
#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Instant;

use chrono::{DateTime, Utc};
use city::*;
use messnetz::config::{StoreBackend, StoreSettings};
use messnetz::model::Quantity;
use messnetz::store::{CommitStore, PostgresStore, WriteBatch};

fn open(url: String) -> PostgresStore {
    let settings = StoreSettings { backend: StoreBackend::Postgres, url, pool_size: 4, ..Default::default() };
    PostgresStore::open(&settings).unwrap()
}

/// Ingest-shaped batches, as `benches/aggregates.rs` writes them: uplinks time-major from
/// all devices, six readings each, `per_batch` uplinks per commit. Returns readings/s.
/// Readings per second to the last commit, and to the last pending window folded.
fn upkeep_run(store: &PostgresStore, devices: usize, uplinks: usize, per_batch: usize) -> (f64, f64) {
    let started = Instant::now();
    let mut written = 0usize;
    for batch in uplink_batches(devices, uplinks, per_batch) {
        written += batch.readings.len();
        store.write(&batch).unwrap();
    }
    let to_commit = written as f64 / started.elapsed().as_secs_f64();
    // What is still journalled folded too (nothing when upkeep is off): the time until every
    // window is stored, as the embedded bench's "to the last window flush".
    store.fold_windows().unwrap();
    (to_commit, written as f64 / started.elapsed().as_secs_f64())
}

/// Readings of devices `$1..=$2`, `$3` ten-minute steps from 2025-01-01 each, as
/// [`temperature`] gives them (the same floating-point steps). Columns: device, district,
/// t (ms), value.
const GENERATED: &str = "SELECT format('dev-%s', lpad(d::text, 4, '0')) AS device,
        format('Bezirk-%s', lpad((d % 10)::text, 2, '0')) AS district,
        t, 10.0::float8 + 8.0::float8 * sin((t / 3600000)::float8 / 24.0::float8 * (2.0::float8 * pi()))
           + (d % 7)::float8 * 0.3::float8 AS value
    FROM generate_series($1::int8, $2::int8) AS d,
         LATERAL (SELECT 1735689600000::int8 + i * 600000 AS t FROM generate_series(0::int8, $3::int8 - 1) AS i) AS s";

/// The windows of the readings in `g` (columns as [`GENERATED`]'s) for `scopes` (`device`,
/// `district` or both), every interval the store keeps, as [`messnetz::aggregates::Window::add`] folds them
/// (the last value is the one with the latest time, the larger on a tie). Columns as the
/// rollups table's.
fn windows_of_g(scopes: &[&str]) -> String {
    let mut parts = Vec::new();
    for (code, len) in [(0, 600_000i64), (1, 3_600_000), (2, 86_400_000)] {
        // A device's 10-minute windows are not stored (computed from its readings).
        for key in scopes.iter().filter(|k| !(code == 0 && **k == "device")) {
            let prefix = if *key == "device" { "d:" } else { "z:" };
            parts.push(format!(
                "SELECT '{prefix}' || {key} AS scope, 'air_temperature'::text AS quantity, {code}::int2 AS interval,
                        to_timestamp((t / {len} * {len} / 1000)::float8) AS start, count(*)::int8 AS count,
                        0::int8 AS excluded, sum(value) AS sum, min(value) AS min, max(value) AS max,
                        (max(ARRAY[t::float8, value]))[2] AS last, max(t) AS last_time
                 FROM g GROUP BY {key}, t / {len}"
            ));
        }
    }
    parts.join(" UNION ALL ")
}

/// Load devices `$1..=$2` into readings and windows. Their device windows are new; their
/// district windows are merged into the stored ones as the store merges a batch's
/// (`src/store/postgres/rollups.rs`).
fn load_sql() -> String {
    format!(
        "WITH g AS MATERIALIZED ({GENERATED}),
         stored AS (INSERT INTO readings (device, quantity, time, value, flag, reason, district)
                    SELECT device, 'air_temperature', to_timestamp((t / 1000)::float8), value, 0, '', district FROM g),
         device_windows AS (INSERT INTO rollups SELECT * FROM ({}) AS w),
         members AS (INSERT INTO district_devices SELECT DISTINCT district, device FROM g ON CONFLICT DO NOTHING)
         INSERT INTO rollups AS r (scope, quantity, interval, start, count, excluded, sum, min, max, last, last_time)
         SELECT * FROM ({}) AS w
         ON CONFLICT (scope, quantity, interval, start) DO UPDATE SET
             count = r.count + EXCLUDED.count,
             excluded = r.excluded + EXCLUDED.excluded,
             sum = r.sum + EXCLUDED.sum,
             min = LEAST(r.min, EXCLUDED.min),
             max = GREATEST(r.max, EXCLUDED.max),
             last = CASE WHEN EXCLUDED.count > 0 AND (EXCLUDED.last_time > r.last_time
                         OR (EXCLUDED.last_time = r.last_time AND EXCLUDED.last > r.last))
                    THEN EXCLUDED.last ELSE r.last END,
             last_time = CASE WHEN EXCLUDED.count > 0 AND (EXCLUDED.last_time > r.last_time
                         OR (EXCLUDED.last_time = r.last_time AND EXCLUDED.last > r.last))
                    THEN EXCLUDED.last_time ELSE r.last_time END",
        windows_of_g(&["device"]),
        windows_of_g(&["district"])
    )
}

/// `sql` with `$1`, `$2`, `$3` replaced (psql takes no parameters with `-c`).
fn bind(sql: &str, from: usize, to: usize, steps: usize) -> String {
    sql.replace("$1", &from.to_string()).replace("$2", &to.to_string()).replace("$3", &steps.to_string())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let devices = env("MESSNETZ_BENCH_DEVICES", 1000).max(2);
    let days = env("MESSNETZ_BENCH_DAYS", 365);
    let runs = env("MESSNETZ_BENCH_RUNS", 3);
    let wrk_s = env("MESSNETZ_BENCH_WRK_S", 10);
    let uplinks = env("MESSNETZ_BENCH_UPLINKS", 100_000);
    let connections = env("MESSNETZ_BENCH_WRK_C", 8);
    print_machine();
    let cluster = common::pg::Cluster::start_durable();
    println!("PostgreSQL: {}", cluster.psql("postgres", "SHOW server_version"));

    // 1. Rollup upkeep: the store's write throughput with and without window upkeep.
    println!("\n## rollup upkeep: {uplinks} uplinks x 6 readings from {devices} devices, 2,000 uplinks per commit\n");
    // "With": windows journalled in each batch, the store's fold running every
    // store.window_flush_ms (5 s) meanwhile, and what is left folded after the last commit.
    println!("| run | readings/s without rollups | with rollups, to the last commit | to the last fold | cost (commit) | cost (fold) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let (mut costs, mut fold_costs) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        // Each arm starts from a checkpoint (neither writes out the other's dirty pages), and
        // they take turns going first.
        let arm = |rollups: bool| {
            let store = open(cluster.database(&format!("upkeep_{}_{run}", if rollups { "with" } else { "plain" })));
            store.set_rollups_enabled(rollups);
            cluster.psql("postgres", "CHECKPOINT");
            upkeep_run(&store, devices, uplinks, 2000)
        };
        let ((without, _), (with, folded)) = if run % 2 == 1 {
            let plain = arm(false);
            (plain, arm(true))
        } else {
            let with = arm(true);
            (arm(false), with)
        };
        let (cost, fold_cost) = (1.0 - with / without, 1.0 - folded / without);
        costs.push(cost);
        fold_costs.push(fold_cost);
        println!("| {run} | {without:.0} | {with:.0} | {folded:.0} | {:.1} % | {:.1} % |", cost * 100.0, fold_cost * 100.0);
    }
    costs.sort_by(f64::total_cmp);
    fold_costs.sort_by(f64::total_cmp);
    println!(
        "\nmedian cost of rollup upkeep: {:.1} % of the store's ingest throughput to the last commit, {:.1} % to the last fold",
        costs[costs.len() / 2] * 100.0,
        fold_costs[fold_costs.len() / 2] * 100.0
    );
    // Where the server's time went in the first run with windows (pg_stat_statements).
    cluster.psql("upkeep_with_1", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    println!(
        "\nthe server's time by statement, run 1 with windows (pg_stat_statements, top 8):\n{}",
        cluster.psql(
            "upkeep_with_1",
            "SELECT format('%8s ms %6s calls %9s rows  %s', round(total_exec_time), calls, rows,
                           left(regexp_replace(query, '\\s+', ' ', 'g'), 100))
             FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
             ORDER BY total_exec_time DESC LIMIT 8",
        )
    );

    // 2. A year of 10-minute air temperature: device 0 through the store, the rest by SQL.
    let url = cluster.database("year");
    let per_device = days * 144;
    let q = Quantity::by_name("air_temperature").unwrap();
    let started = Instant::now();
    {
        let store = open(url.clone());
        let id = device_id(0);
        let mut batch = WriteBatch::default();
        batch.districts.insert(id.clone(), district(0));
        for i in 0..per_device {
            let t = START_MS + i as i64 * TEN_MIN_MS;
            batch.readings.push(reading(&id, q, t, temperature(0, t)));
        }
        store.write(&batch).unwrap();
        store.fold_windows().unwrap();
    }
    let store_s = started.elapsed().as_secs_f64();
    println!(
        "\n## /v1/aggregates with {devices} devices x {days} days of 10-minute air temperature ({} readings)\n",
        devices * per_device
    );
    println!("device 0 through the store's batch write: {per_device} readings in {store_s:.1} s");
    // The SQL path, run for device 0 without storing: the same windows as the store wrote?
    let check = format!(
        "WITH g AS MATERIALIZED ({}), w AS ({}) SELECT count(*) FILTER (WHERE s.scope IS NOT NULL AND s.count = w.count AND s.excluded = w.excluded
                 AND abs(s.sum - w.sum) <= 1e-9 * greatest(1.0, abs(w.sum)) AND s.min = w.min AND s.max = w.max
                 AND s.last = w.last AND s.last_time = w.last_time), count(*)
         FROM w LEFT JOIN rollups s USING (scope, quantity, interval, start)",
        bind(GENERATED, 0, 0, per_device),
        windows_of_g(&["device", "district"])
    );
    let same = cluster.psql("year", &check);
    println!("the SQL load path run for device 0 gives the store's windows: {same} (equal|all)");
    let (equal, all) = same.split_once('|').unwrap_or(("0", "1"));
    assert_eq!(equal, all, "the SQL load path must give the windows the store writes");
    // Fewer checkpoints during the bulk load, as a site would set it for one.
    cluster.psql("postgres", "ALTER SYSTEM SET max_wal_size = '8GB'");
    cluster.psql("postgres", "SELECT pg_reload_conf()");
    let load = load_sql();
    let sql_started = Instant::now();
    let chunk = 100;
    let mut d = 1;
    while d < devices {
        let last = (d + chunk - 1).min(devices - 1);
        cluster.psql("year", &bind(&load, d, last, per_device));
        d = last + 1;
    }
    let sql_s = sql_started.elapsed().as_secs_f64();
    // What a loaded database settles into before it is queried: statistics, visibility map,
    // and the load's dirty pages written out (a checkpoint would otherwise compete with the
    // queries for the disk).
    cluster.psql("year", "VACUUM ANALYZE");
    cluster.psql("year", "CHECKPOINT");
    let all_s = started.elapsed().as_secs_f64();
    let stored = cluster.psql("year", "SELECT count(*) FROM readings");
    let windows = cluster.psql("year", "SELECT count(*) FROM rollups");
    let size = cluster.psql("year", "SELECT pg_size_pretty(pg_database_size('year'))");
    println!(
        "devices 1.. by SQL (max_wal_size 8GB) in {sql_s:.0} s ({:.0} readings/s with windows); {all_s:.0} s in all with VACUUM ANALYZE and a checkpoint; {stored} readings, {windows} windows, database {size}",
        ((devices - 1) * per_device) as f64 / sql_s
    );

    // 3. A gateway on that database, loaded with wrk.
    let dir = tempfile::tempdir().unwrap();
    let mut devices_toml = String::new();
    for d in 0..devices {
        devices_toml.push_str(&format!(
            "[[device]]\nid = \"dev-{d:04}\"\nname = \"Sensor {d}\"\nprofile = \"dragino-lht65\"\nlat = 48.1\nlon = 11.5\ndistrict = \"{}\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n\n",
            district(d)
        ));
    }
    std::fs::write(dir.path().join("devices.toml"), devices_toml).unwrap();
    let store = format!("backend = \"postgres\"\nurl = \"{url}\"\npath = \"{}\"", dir.path().join("data").display());
    let gateway = Served::start(dir.path(), &store, &dir.path().join("devices.toml"));
    let http = gateway.http;
    let last = devices - 1;
    // The week of 2 June when a year is loaded (as `benches/aggregates.rs` asks), else the
    // middle week of what is.
    let monday = if days >= 160 { 152 } else { days.saturating_sub(7) / 2 };
    let day = |n: usize| {
        (DateTime::<Utc>::from_timestamp_millis(START_MS).unwrap() + chrono::Duration::days(n as i64))
            .format("%Y-%m-%dT00:00:00Z")
            .to_string()
    };
    let week = format!(
        "http://127.0.0.1:{http}/v1/aggregates?device=dev-{:04}&quantity=air_temperature&interval=1h&from={}&to={}",
        42.min(last),
        day(monday),
        day(monday + 7)
    );
    // The same week at 10 minutes: a device's 10-minute windows are folded from its readings.
    let week_10m = week.replace("interval=1h", "interval=10m");
    let year = format!("http://127.0.0.1:{http}/v1/aggregates?district=Bezirk-03&quantity=air_temperature&interval=1d&from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z");
    for (name, url) in [("device-week at 1h", &week), ("device-week at 10m", &week_10m), ("district-year at 1d", &year)] {
        let body: serde_json::Value = serde_json::from_str(
            &Command::new("curl")
                .args(["-s", url])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        println!("{name} answers {} windows", body["points"].as_array().map(|p| p.len()).unwrap_or(0));
    }
    println!(
        "\n| run | device-week 1h p50 | p99 | req/s | device-week 10m p50 | p99 | req/s | district-year 1d p50 | p99 | req/s | load average before |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for run in 1..=runs {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load = load.split_whitespace().next().unwrap_or("?").to_owned();
        let (w50, w99, wrps) = wrk(&week, wrk_s, connections);
        let (t50, t99, trps) = wrk(&week_10m, wrk_s, connections);
        let (y50, y99, yrps) = wrk(&year, wrk_s, connections);
        println!("| {run} | {w50} | {w99} | {wrps} | {t50} | {t99} | {trps} | {y50} | {y99} | {yrps} | {load} |");
    }
    drop(gateway);
}
