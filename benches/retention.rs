//! Benchmark: what retention costs ingest. A store holding MESSNETZ_BENCH_DAYS (60) days of
//! 10-minute readings of MESSNETZ_BENCH_DEVICES (200) devices and two quantities; a writer
//! commits ingest-sized batches (500 readings) back to back, first alone, then while
//! retention deletes the older half of the readings in the gateway's chunks (2000 rows,
//! 20 ms pause). Prints commit latency percentiles for both, and the deletion rate.
//!
//! `cargo bench --bench retention`

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::DateTime;
use messnetz::model::{DeviceId, QualityFlag, Quantity, Reading};
use messnetz::store::embedded::retention::SeriesCursor;
use messnetz::store::{CommitStore, EmbeddedStore, WriteBatch};

const START_MS: i64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z
const TEN_MIN_MS: i64 = 600_000;
const DAY_MS: i64 = 86_400_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn reading(device: &DeviceId, quantity: Quantity, t_ms: i64) -> Reading {
    Reading {
        device: device.clone(),
        quantity,
        value: (t_ms % 1000) as f64 / 10.0,
        time: DateTime::from_timestamp_millis(t_ms).unwrap(),
        flag: QualityFlag::Good,
        reason: Default::default(),
    }
}

/// Commit 500-reading batches of new readings until `stop`; each commit's latency.
fn ingest(store: &EmbeddedStore, devices: &[DeviceId], from_ms: i64, stop: &AtomicBool, at_least: usize) -> Vec<Duration> {
    let quantity = Quantity::by_name("air_temperature").unwrap();
    let mut latencies = Vec::new();
    let mut t = from_ms;
    while !stop.load(Ordering::Relaxed) || latencies.len() < at_least {
        let batch = WriteBatch {
            readings: (0..500).map(|i| reading(&devices[i % devices.len()], quantity, t + i as i64)).collect(),
            ..Default::default()
        };
        t += 1000;
        let started = Instant::now();
        store.write(&batch).unwrap();
        latencies.push(started.elapsed());
    }
    latencies
}

fn percentiles(mut l: Vec<Duration>) -> String {
    l.sort();
    let p = |q: f64| l[((l.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e3;
    format!("n = {:>5}  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms", l.len(), p(0.5), p(0.99), p(1.0))
}

fn main() {
    let devices_n = env("MESSNETZ_BENCH_DEVICES", 200);
    let days = env("MESSNETZ_BENCH_DAYS", 60) as i64;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let devices: Vec<DeviceId> = (0..devices_n).map(|d| DeviceId::parse(&format!("dev-{d:04}")).unwrap()).collect();
    let quantities = [Quantity::by_name("air_temperature").unwrap(), Quantity::by_name("relative_humidity").unwrap()];

    let started = Instant::now();
    let mut rows = 0u64;
    for day in 0..days {
        let mut batch = WriteBatch::default();
        for d in &devices {
            for q in quantities {
                for slot in 0..144 {
                    batch.readings.push(reading(d, q, START_MS + day * DAY_MS + slot * TEN_MIN_MS));
                }
            }
        }
        rows += batch.readings.len() as u64;
        store.write(&batch).unwrap();
        store.flush_windows().unwrap();
    }
    let file = std::fs::metadata(dir.path().join("messnetz.redb")).map(|m| m.len()).unwrap_or(0);
    println!(
        "store: {devices_n} devices x 2 quantities x {days} days = {rows} readings, {:.0} MiB, loaded in {:.1} s",
        file as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );

    let after_ms = START_MS + (days + 1) * DAY_MS;
    let stop = AtomicBool::new(false);
    let baseline = std::thread::scope(|s| {
        let h = s.spawn(|| ingest(&store, &devices, after_ms, &stop, 0));
        std::thread::sleep(Duration::from_secs(5));
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap()
    });
    println!("ingest alone:            {}", percentiles(baseline));

    // Keep the newer half: the readings of the first days/2 days go.
    let cutoff = START_MS + (days / 2) * DAY_MS;
    let stop = AtomicBool::new(false);
    let (during, deleted, took, chunks) = std::thread::scope(|s| {
        let h = s.spawn(|| ingest(&store, &devices, after_ms + 10_000_000, &stop, 0));
        let started = Instant::now();
        let (mut cursor, mut deleted, mut chunks) = (SeriesCursor::default(), 0, 0);
        loop {
            let chunk = store.expire_readings(&cursor, 2000, &|_, _| Some(cutoff)).unwrap();
            deleted += chunk.deleted;
            chunks += 1;
            match chunk.next {
                Some(next) => cursor = next,
                None => break,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        (h.join().unwrap(), deleted, took, chunks)
    });
    println!("ingest during retention: {}", percentiles(during));
    println!(
        "retention: {deleted} readings deleted in {chunks} chunks, {:.1} s ({:.0} readings/s including the 20 ms pauses)",
        took.as_secs_f64(),
        deleted as f64 / took.as_secs_f64()
    );
    assert_eq!(deleted, (devices_n as u64) * 2 * 144 * (days / 2) as u64);
}
