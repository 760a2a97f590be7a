//! Benchmark: the cost of rollup upkeep on ingest, and `/v1/aggregates` latency with a year of a city's readings loaded.
//!
//! `cargo bench --bench aggregates` (needs `wrk`: `apt-get install -y wrk`). Sizes:
//! MESSNETZ_BENCH_DEVICES (1000), MESSNETZ_BENCH_DAYS (365), MESSNETZ_BENCH_RUNS (3),
//! MESSNETZ_BENCH_WRK_S (10 seconds per load run).

#[path = "city/mod.rs"]
mod city;
#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use city::*;
use messnetz::model::Quantity;
use messnetz::store::{CommitStore, EmbeddedStore, ReadStore, WriteBatch};

/// The flush interval: the gateway's default unless MESSNETZ_BENCH_FLUSH_MS says otherwise.
fn flush_ms() -> u64 {
    env("MESSNETZ_BENCH_FLUSH_MS", messnetz::config::Settings::default().store.window_flush_ms as usize) as u64
}

/// Run `work` while a thread flushes the device-window journal every `flush_ms()`, as the
/// gateway does; then flush what is left.
fn with_flusher<T>(store: &EmbeddedStore, work: impl FnOnce() -> T) -> T {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let out = std::thread::scope(|s| {
        s.spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_millis(flush_ms())) {
                store.flush_windows().unwrap();
            }
        });
        let out = work();
        drop(stop);
        out
    });
    store.flush_windows().unwrap();
    assert_eq!(store.pending_windows(), 0);
    out
}

/// Ingest-shaped batches: uplinks arrive time-major from all devices, each uplink giving six
/// readings (an LHT65 with its derived quantities), `per_batch` uplinks per commit; the
/// device-window flusher runs alongside. Returns readings/s until the last batch committed,
/// and until the last window was stored as well (the flush after the last batch).
fn upkeep_run(store: &EmbeddedStore, devices: usize, uplinks: usize, per_batch: usize) -> (f64, f64) {
    let started = Instant::now();
    let (written, committed) = with_flusher(store, || (write_uplinks(store, devices, uplinks, per_batch), started.elapsed()));
    (written as f64 / committed.as_secs_f64(), written as f64 / started.elapsed().as_secs_f64())
}

fn write_uplinks(store: &EmbeddedStore, devices: usize, uplinks: usize, per_batch: usize) -> usize {
    let mut written = 0;
    for batch in uplink_batches(devices, uplinks, per_batch) {
        written += batch.readings.len();
        store.write(&batch).unwrap();
    }
    written
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let devices = env("MESSNETZ_BENCH_DEVICES", 1000);
    let days = env("MESSNETZ_BENCH_DAYS", 365);
    let runs = env("MESSNETZ_BENCH_RUNS", 3);
    let wrk_s = env("MESSNETZ_BENCH_WRK_S", 10);
    print_machine();

    // 1. Rollup upkeep: store throughput with and without rollups, same batches.
    let uplinks = env("MESSNETZ_BENCH_UPLINKS", 300_000);
    println!(
        "\n## rollup upkeep: {uplinks} uplinks x 6 readings from {devices} devices, 2,000 uplinks per commit, flush every {} ms\n",
        flush_ms()
    );
    println!("| run | readings/s without rollups | with rollups, to the last commit | cost | with rollups, to the last window stored | cost |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let (mut costs, mut costs_stored) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let a = tempfile::tempdir().unwrap();
        let mut plain = EmbeddedStore::open(a.path()).unwrap();
        plain.set_rollups_enabled(false);
        let (without, _) = upkeep_run(&plain, devices, uplinks, 2000);
        drop(plain);
        let b = tempfile::tempdir().unwrap();
        let with_store = EmbeddedStore::open(b.path()).unwrap();
        let (committed, stored) = upkeep_run(&with_store, devices, uplinks, 2000);
        let (cost, cost_stored) = (1.0 - committed / without, 1.0 - stored / without);
        costs.push(cost);
        costs_stored.push(cost_stored);
        println!(
            "| {run} | {without:.0} | {committed:.0} | {:.1} % | {stored:.0} | {:.1} % |",
            cost * 100.0,
            cost_stored * 100.0
        );
    }
    costs.sort_by(f64::total_cmp);
    costs_stored.sort_by(f64::total_cmp);
    println!(
        "\nmedian cost of rollup upkeep: {:.1} % of store ingest throughput to the last commit, {:.1} % to the last window stored",
        costs[costs.len() / 2] * 100.0,
        costs_stored[costs_stored.len() / 2] * 100.0
    );

    // 2. Load a year of 10-minute readings, series by series, through the production write path.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let per_device = days * 144;
    let started = Instant::now();
    {
        let store = EmbeddedStore::open(&data).unwrap();
        let q = Quantity::by_name("air_temperature").unwrap();
        with_flusher(&store, || {
            for d in 0..devices {
                let id = device_id(d);
                let mut batch = WriteBatch::default();
                batch.districts.insert(id.clone(), district(d));
                for i in 0..per_device {
                    let t = START_MS + i as i64 * TEN_MIN_MS;
                    batch.readings.push(reading(&id, q, t, temperature(d, t)));
                }
                store.write(&batch).unwrap();
            }
        });
    }
    let load_s = started.elapsed().as_secs_f64();
    let space = EmbeddedStore::open(&data).and_then(|s| s.table_space()).unwrap_or_default();
    let size = std::fs::metadata(data.join("messnetz.redb")).map(|m| m.len()).unwrap_or(0);
    println!(
        "\n## /v1/aggregates with {devices} devices x {days} days of 10-minute air temperature ({} readings)\n\nloaded in {load_s:.0} s ({:.0} readings/s with rollups), store file {:.2} GB",
        devices * per_device,
        (devices * per_device) as f64 / load_s,
        size as f64 / 1e9
    );
    for (table, stored, pages) in space {
        println!("- {table}: {:.2} GB of keys and values, {:.2} GB of pages", stored as f64 / 1e9, pages as f64 / 1e9);
    }

    // 3. The gateway on that store, loaded with wrk.
    let mut devices_toml = String::new();
    for d in 0..devices {
        devices_toml.push_str(&format!(
            "[[device]]\nid = \"dev-{d:04}\"\nname = \"Sensor {d}\"\nprofile = \"dragino-lht65\"\nlat = 48.1\nlon = 11.5\ndistrict = \"{}\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n\n",
            district(d)
        ));
    }
    std::fs::write(dir.path().join("devices.toml"), devices_toml).unwrap();
    let gateway = Served::start(dir.path(), &format!("path = \"{}\"", data.display()), &dir.path().join("devices.toml"));
    let http = gateway.http;
    let week = format!("http://127.0.0.1:{http}/v1/aggregates?device=dev-0042&quantity=air_temperature&interval=1h&from=2025-06-02T00:00:00Z&to=2025-06-09T00:00:00Z");
    let year = format!("http://127.0.0.1:{http}/v1/aggregates?district=Bezirk-03&quantity=air_temperature&interval=1d&from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z");
    let check: serde_json::Value = serde_json::from_str(
        &Command::new("curl")
            .args(["-s", &week])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    println!("device-week at 1h answers {} windows", check["points"].as_array().map(|p| p.len()).unwrap_or(0));
    println!("\n| run | device-week 1h p50 | p99 | req/s | district-year 1d p50 | p99 | req/s |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for run in 1..=runs {
        let (w50, w99, wrps) = wrk(&week, wrk_s, 8);
        let (y50, y99, yrps) = wrk(&year, wrk_s, 8);
        println!("| {run} | {w50} | {w99} | {wrps} | {y50} | {y99} | {yrps} |");
    }
    drop(gateway);
}
