//! InfluxDB v2 path: end-to-end readings/s from MQTT into the server, next to the broker's own delivery rate and the server's own ingest rate, and the time to drain a spool of one million readings.
//!
//! `cargo bench --bench influx` (N = `MESSNETZ_BENCH_N`, default 40,000 messages; runs =
//! `MESSNETZ_BENCH_RUNS`, default 3; spool = `MESSNETZ_BENCH_SPOOL`, default 1,000,000).
//! The write target is VictoriaMetrics (Debian's `victoria-metrics`), which accepts the
//! InfluxDB v2 write API; no InfluxDB 2 server is packaged here. Each run, with a fresh
//! private Mosquitto and a fresh VictoriaMetrics:
//!
//! - **broker ceiling**: N TTN uplinks of a Dragino LHT65 from two QoS 1 publisher
//!   connections (each waits for every PUBACK) to a bare rumqttc QoS 1 subscriber; time from
//!   the first publish until the subscriber has all N;
//! - **server ingest**: the same readings as line protocol, gzip'd before the clock starts,
//!   posted directly to `/api/v2/write` in requests of 5,000 lines, one after the other; time
//!   until the last request is answered;
//! - **gateway end to end**: the same N messages through Mosquitto into the gateway binary
//!   with `[influxdb]` on (defaults: batches of 5,000, gzip); time from the first publish
//!   until `/metrics` shows every message acknowledged and every stored reading written to
//!   the server; then the server's copy is checked for N distinct times per series.
//!
//! Then once, **spool drain**: a store whose spool holds `MESSNETZ_BENCH_SPOOL` readings
//! (filled directly, before the clock) is opened by a gateway pointed at a fresh server;
//! time from starting the process until the spool is empty.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use messnetz::model::{DeviceId, QualityFlag, Quantity, Reading};
use messnetz::store::{CommitStore, Outbox};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const PHASE_TIMEOUT: Duration = Duration::from_secs(300);
const STALL: Duration = Duration::from_secs(30);
const BURST_START_S: i64 = 1_735_689_600; // 2025-01-01T00:00:00Z, as lht65_burst

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let n = env_usize("MESSNETZ_BENCH_N", 40_000);
    let runs = env_usize("MESSNETZ_BENCH_RUNS", 3);
    let spool = env_usize("MESSNETZ_BENCH_SPOOL", 1_000_000);
    println!("## messnetz → InfluxDB v2 write API benchmark\n");
    print_machine();
    let per_message = lht65_lines("bench", 0).len();
    println!("- N = {n} TTN v3 uplinks of a Dragino LHT65 (= {} readings, {per_message} per uplink incl. derived), 2 publisher connections at QoS 1", n * per_message);
    println!(
        "- runs = {runs}; each with a fresh Mosquitto ({}) and a fresh VictoriaMetrics\n",
        mosquitto_conf(0).replace("listener 0 127.0.0.1\n", "").trim().replace('\n', "; ")
    );
    println!(
        "| run | broker ceiling msg/s | server ingest, direct: lines/s | gateway end to end: msg/s | readings/s | in server |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for run in 1..=runs {
        let ceiling = broker_ceiling(n, run).await;
        let direct = server_direct(n).await;
        let (e2e, readings, check) = gateway_e2e(n, run).await;
        println!("| {run} | {} | {} | {} | {} | {check} |", fmt(ceiling), fmt(direct), fmt(e2e), fmt(readings));
    }
    println!();
    spool_drain(spool).await;
}

fn fmt(rate: Option<f64>) -> String {
    rate.map(|r| format!("{:.0}k", r / 1000.0)).unwrap_or_else(|| "failed".into())
}

/// The lines one LHT65 uplink becomes (the four decoded values and the derived ones), as the
/// gateway writes them, for a device with the demo device's tags.
fn lht65_lines(device: &str, i: i64) -> Vec<String> {
    let dev: messnetz::devices::Device = toml::from_str(&format!(
        "id = \"{device}\"\nname = \"bench\"\nprofile = \"dragino-lht65\"\nlat = 48.1\nlon = 11.5\ndistrict = \"Altstadt\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n"
    ))
    .expect("device");
    let mut values: Vec<messnetz::profiles::DecodedValue> =
        [("battery_voltage", 3.062), ("air_temperature", 28.29), ("relative_humidity", 88.6), ("probe_temperature", 27.81)]
            .into_iter()
            .map(|(q, value)| messnetz::profiles::DecodedValue { quantity: Quantity::by_name(q).expect("quantity"), value })
            .collect();
    messnetz::aggregates::derived::add_derived(&mut values);
    let time = chrono::DateTime::from_timestamp(BURST_START_S + i, 0).expect("time");
    values
        .into_iter()
        .map(|v| {
            let r = Reading {
                device: DeviceId::parse(device).expect("id"),
                quantity: v.quantity,
                value: v.value,
                time,
                flag: QualityFlag::Good,
                reason: Default::default(),
            };
            let mut line = String::new();
            messnetz::sinks::influx::write_line(&r, &dev, &mut line);
            line
        })
        .collect()
}

async fn broker_ceiling(n: usize, run: usize) -> Option<f64> {
    let broker = Mosquitto::start_private();
    let topics = Topics::new(&format!("influx-ceiling-{run}"));
    let mut options = MqttOptions::new(format!("{}-sub", topics.prefix), "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    client.subscribe(format!("{}/v3/+/devices/+/up", topics.prefix), QoS::AtLeastOnce).await.ok()?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            _ => return None,
        }
    }
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let sub = tokio::spawn(async move {
        while counter.load(Ordering::Relaxed) < n {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let messages = lht65_burst(&topics, n);
    let publishers = vec![
        Publisher::connect(broker.port, &format!("{}-pub0", topics.prefix)).await,
        Publisher::connect(broker.port, &format!("{}-pub1", topics.prefix)).await,
    ];
    let started = Instant::now();
    let published = publish_connected(publishers, messages, PHASE_TIMEOUT).await;
    let done = tokio::time::timeout(PHASE_TIMEOUT, sub).await;
    let elapsed = started.elapsed();
    if published.acked != n || done.is_err() || received.load(Ordering::Relaxed) != n {
        eprintln!("ceiling run {run}: published {} of {n}, received {}", published.acked, received.load(Ordering::Relaxed));
        return None;
    }
    Some(n as f64 / elapsed.as_secs_f64())
}

/// Readings/s VictoriaMetrics ingests when the same line protocol is posted directly.
async fn server_direct(n: usize) -> Option<f64> {
    let vm = VictoriaMetrics::start();
    let lines: Vec<String> = (0..n as i64).flat_map(|i| lht65_lines("bench-direct", i)).collect();
    let total = lines.len();
    let bodies: Vec<Vec<u8>> = lines
        .chunks(5000)
        .map(|chunk| {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            for l in chunk {
                enc.write_all(l.as_bytes()).expect("gzip");
                enc.write_all(b"\n").expect("gzip");
            }
            enc.finish().expect("gzip")
        })
        .collect();
    let client = reqwest::Client::new();
    let url = format!("{}/api/v2/write?org=stadt&bucket=messnetz&precision=ms", vm.url());
    let started = Instant::now();
    for body in bodies {
        let resp = client.post(&url).header("Content-Encoding", "gzip").body(body).send().await.ok()?;
        if !resp.status().is_success() {
            eprintln!("direct write: HTTP {}", resp.status());
            return None;
        }
    }
    Some(total as f64 / started.elapsed().as_secs_f64())
}

/// (messages/s, readings/s, what the server holds) through the gateway.
async fn gateway_e2e(n: usize, run: usize) -> (Option<f64>, Option<f64>, String) {
    let broker = Mosquitto::start_private();
    let vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = Topics::new(&format!("influx-e2e-{run}"));
    let mut gw = Gateway::start_with(broker.port, dir.path(), &topics, &influx_section(&vm.url(), "")).await;
    let messages = lht65_burst(&topics, n);
    let publishers = vec![
        Publisher::connect(broker.port, &format!("{}-pub0", topics.prefix)).await,
        Publisher::connect(broker.port, &format!("{}-pub1", topics.prefix)).await,
    ];
    let started = Instant::now();
    let published = publish_connected(publishers, messages, PHASE_TIMEOUT).await;
    if published.acked != n {
        return (None, None, format!("published {} of {n}: {:?}", published.acked, published.error));
    }
    if let Err(last) = gw.wait_metric("messnetz_messages_acked_total", n as f64, PHASE_TIMEOUT, STALL).await {
        return (None, None, format!("gateway acked {last} of {n}"));
    }
    let client = reqwest::Client::new();
    let stored = gw.try_metric(&client, "messnetz_readings_stored_total").await.unwrap_or(f64::NAN);
    if let Err(last) = gw.wait_metric("messnetz_influx_points_written_total", stored, PHASE_TIMEOUT, STALL).await {
        return (None, None, format!("written {last} of {stored}"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    gw.terminate();
    let export = vm.export("air_temperature_value").await;
    let distinct: std::collections::BTreeSet<i64> =
        export.iter().flat_map(|s| s["timestamps"].as_array().cloned().unwrap_or_default()).filter_map(|t| t.as_i64()).collect();
    (Some(n as f64 / elapsed), Some(stored / elapsed), format!("{} of {n} times", distinct.len()))
}

async fn spool_drain(readings: usize) {
    let vm = VictoriaMetrics::start();
    let broker = Mosquitto::start_private();
    let dir = tempfile::tempdir().expect("tempdir");
    let per_message = lht65_lines("bench-spool", 0).len();
    let fill_started = Instant::now();
    {
        let store = messnetz::store::EmbeddedStore::open(&dir.path().join("data")).expect("store");
        let mut i = 0i64;
        let mut left = readings;
        while left > 0 {
            let mut batch = messnetz::store::WriteBatch::default();
            while batch.outbox.len() < 10_000.min(left) {
                let room = 10_000.min(left) - batch.outbox.len();
                batch.outbox.extend(lht65_lines("bench-spool", i).into_iter().take(room));
                i += 1;
            }
            left -= batch.outbox.len();
            store.write(&batch).expect("fill the spool");
        }
        assert_eq!(store.outbox_len().expect("len"), readings as u64);
    }
    let fill = fill_started.elapsed();
    let topics = Topics::new("influx-spool");
    let started = Instant::now();
    let gw = Gateway::start_with(broker.port, dir.path(), &topics, &influx_section(&vm.url(), "")).await;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let drained = loop {
        if gw.try_metric(&client, "messnetz_influx_spool_readings").await == Some(0.0) {
            break Some(started.elapsed());
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let written = gw.try_metric(&client, "messnetz_influx_points_written_total").await.unwrap_or(f64::NAN);
    println!("Spool drain: {readings} readings ({per_message} per uplink) spooled in the embedded store (filled directly in {:.1} s, commits of 10,000)", fill.as_secs_f64());
    match drained {
        Some(d) => println!(
            "- drained in **{:.1} s** ({:.0}k readings/s) from starting the gateway process, batches of 5,000, gzip; points written: {written}",
            d.as_secs_f64(),
            readings as f64 / d.as_secs_f64() / 1000.0
        ),
        None => println!("- NOT drained within {PHASE_TIMEOUT:?}; points written: {written}"),
    }
}

fn print_machine() {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default();
    let vm = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Version}", "victoria-metrics"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "- machine: {cpus} CPUs, {model}, Linux {kernel}; load average at start: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("- server: {vm}");
}
