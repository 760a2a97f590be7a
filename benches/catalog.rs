//! Benchmark: `/v1/catalog` latency for a city of 1,000 devices in 20 districts, compressed.
//!
//! `cargo bench --bench catalog`. Sizes: MESSNETZ_BENCH_DEVICES (1000), MESSNETZ_BENCH_DISTRICTS
//! (20), MESSNETZ_BENCH_REQUESTS (500 per case), MESSNETZ_BENCH_RUNS (3). The store holds a day
//! of hourly readings of every quantity of every device (rollups and coverage included); the
//! release gateway serves it; one client asks one request at a time (no If-None-Match, so every
//! answer is computed, serialised and compressed anew) and the time to the last body byte is
//! measured.

#[path = "city/mod.rs"]
mod city;
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use chrono::DateTime;
use city::{env, print_machine, Served};
use messnetz::devices::DeviceRegistry;
use messnetz::model::{QualityFlag, Quantity, Reading};
use messnetz::store::{CommitStore, EmbeddedStore, WriteBatch};

const START_MS: i64 = 1_764_547_200_000; // 2025-12-01T00:00:00Z

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let devices = env("MESSNETZ_BENCH_DEVICES", 1000);
    let districts = env("MESSNETZ_BENCH_DISTRICTS", 20);
    let requests = env("MESSNETZ_BENCH_REQUESTS", 500);
    let runs = env("MESSNETZ_BENCH_RUNS", 3);
    print_machine();
    // Other builds on a shared 2-core machine show in the latencies; the load says how much.
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ");
    println!("load average at start: {}", load());

    let dir = tempfile::tempdir().unwrap();
    let devices_file = dir.path().join("devices.toml");
    common::city_devices(&devices_file, devices, districts);
    let registry = DeviceRegistry::load(&devices_file, |_| true).unwrap();
    let data = dir.path().join("data");
    let quantities: Vec<Quantity> =
        ["air_temperature", "relative_humidity", "probe_temperature", "battery_voltage", "dew_point_temperature", "heat_index"]
            .iter()
            .map(|n| Quantity::by_name(n).unwrap())
            .collect();
    {
        let store = EmbeddedStore::open(&data).unwrap();
        for d in registry.iter() {
            let mut batch = WriteBatch::default();
            batch.districts.insert(d.id.clone(), d.district.clone());
            for h in 0..24 {
                for (k, q) in quantities.iter().enumerate() {
                    batch.readings.push(Reading {
                        device: d.id.clone(),
                        quantity: *q,
                        value: 10.0 + k as f64 + h as f64 * 0.1,
                        time: DateTime::from_timestamp_millis(START_MS + h * 3_600_000).unwrap(),
                        flag: QualityFlag::Good,
                        reason: Default::default(),
                    });
                }
            }
            store.write(&batch).unwrap();
        }
        store.flush_windows().unwrap();
    }

    let gateway = Served::start(dir.path(), &format!("path = \"{}\"", data.display()), &devices_file);
    let http = gateway.http;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http}/v1/catalog");
    let cases = [
        ("JSON-LD, first page, br", base.clone(), "application/ld+json", "br"),
        ("JSON-LD, first page, gzip", base.clone(), "application/ld+json", "gzip"),
        ("Turtle, first page, br", base.clone(), "text/turtle", "br"),
        ("RDF/XML, first page, br", base.clone(), "application/rdf+xml", "br"),
        // Every device has its 6 quantities, every district too; 100 datasets a page by default.
        (
            "JSON-LD, last page, br",
            format!("{base}?page={}", ((districts + devices) * 6).div_ceil(100)),
            "application/ld+json",
            "br",
        ),
    ];
    runtime.block_on(async {
        let get = |url: String, accept: &'static str, encoding: &'static str| {
            let client = client.clone();
            async move {
                let started = Instant::now();
                let r = client.get(&url).header("accept", accept).header("accept-encoding", encoding).send().await.unwrap();
                assert_eq!(r.status(), 200, "{url}");
                assert_eq!(r.headers()["content-encoding"], encoding);
                let body = r.bytes().await.unwrap();
                (started.elapsed(), body.len())
            }
        };
        let whole = client.get(&base).send().await.unwrap().bytes().await.unwrap();
        println!(
            "\n## /v1/catalog, {devices} devices in {districts} districts, {requests} sequential requests per case\n\nfirst page uncompressed: {} bytes",
            whole.len()
        );
        println!("\n| run | case | compressed bytes | p50 | p99 | max |");
        println!("| --- | --- | --- | --- | --- | --- |");
        for run in 1..=runs {
            for (name, url, accept, encoding) in &cases {
                for _ in 0..10 {
                    get(url.clone(), accept, encoding).await;
                }
                let mut times = Vec::with_capacity(requests);
                let mut bytes = 0;
                for _ in 0..requests {
                    let (t, n) = get(url.clone(), accept, encoding).await;
                    times.push(t);
                    bytes = n;
                }
                times.sort();
                let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
                println!(
                    "| {run} | {name} | {bytes} | {} | {} | {} |",
                    ms(percentile(&times, 0.5)),
                    ms(percentile(&times, 0.99)),
                    ms(*times.last().unwrap())
                );
            }
        }
    });
    println!("\nload average at the end: {}", load());
    drop(gateway);
}
