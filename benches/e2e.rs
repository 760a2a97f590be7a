//! End-to-end throughput at QoS 1, measured against the physical ceiling on the same machine.
//!
//! `cargo bench --bench e2e` (N = `MESSNETZ_BENCH_N`, default 100,000; runs =
//! `MESSNETZ_BENCH_RUNS`, default 3). Each run measures, alternately:
//!
//! - **broker ceiling**: a private Mosquitto and a bare rumqttc QoS 1 subscriber; N TTN
//!   uplinks of a Dragino LHT65 from two publisher connections that wait for every PUBACK;
//!   time from the first publish until the subscriber has all N;
//! - **gateway**: the same messages through the same kind of Mosquitto into the gateway
//!   binary (fresh store); time from the first publish until `/metrics` shows N messages
//!   acknowledged, which the gateway does only after their batch is durably committed; then
//!   the gateway is stopped (SIGTERM) and its store is checked for exactly N readings per
//!   quantity.
//!
//! Then once: **embedded default burst**, the gateway with its embedded broker (default
//! sizing) and a burst of 100,000 QoS 1 publishes (`MESSNETZ_BENCH_EMBEDDED_N`);
//! published-and-acknowledged vs received by the gateway vs stored.
//!
//! Messages are generated before the clock starts; publisher connections are made before it
//! too. Every wait has a timeout; every process is stopped by its guard, also on panic.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Whole-run bound for one phase's publishing and for its wait for completion.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);
/// A phase gives up when its progress counter has not moved for this long.
const STALL: Duration = Duration::from_secs(20);
/// The embedded burst checks the default sizing against a known burst (100,000 unless
/// `MESSNETZ_BENCH_EMBEDDED_N` says otherwise).
fn embedded_burst_size() -> usize {
    env_usize("MESSNETZ_BENCH_EMBEDDED_N", 100_000)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let n = env_usize("MESSNETZ_BENCH_N", 100_000);
    let runs = env_usize("MESSNETZ_BENCH_RUNS", 3);
    println!("## messnetz end-to-end benchmark (QoS 1)\n");
    print_machine();
    println!("- N = {n} TTN v3 uplinks of a Dragino LHT65 per measurement (distinct f_cnt and time), 2 publisher connections, each waiting for every PUBACK");
    let sample = lht65_burst(&Topics::new("bench-ceiling-1"), 1);
    println!("- one message: {} B JSON payload on a {} B topic", sample[0].1.len(), sample[0].0.len());
    println!("- Mosquitto config: {}", mosquitto_conf(0).replace("listener 0 127.0.0.1\n", "").trim().replace('\n', "; "));
    println!("- runs = {runs}, alternating broker ceiling and gateway\n");

    let watch = CompilerWatch::start();
    let mut rows = Vec::new();
    for run in 1..=runs {
        let load_before = loadavg();
        watch.reset();
        let broker = broker_ceiling(run, n).await;
        let gateway = gateway_end_to_end(run, n).await;
        rows.push((run, broker, gateway, format!("{load_before} → {}", loadavg()), watch.summary()));
    }

    println!("\n| run | broker msg/s | gateway msg/s | ratio gateway/broker | stored/N (per quantity) | gateway peak RSS | load avg before → after | other compilers running |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut ratios = Vec::new();
    for (run, broker, gateway, load, compilers) in &rows {
        let ratio = match (broker.rate, gateway.rate) {
            (Some(b), Some(g)) => {
                ratios.push(g / b);
                format!("{:.2}", g / b)
            }
            _ => "—".into(),
        };
        println!(
            "| {run} | {} | {} | {ratio} | {} | {} | {load} | {compilers} |",
            rate(broker.rate),
            rate(gateway.rate),
            gateway.stored,
            gateway.peak_rss_mib.map(|m| format!("{m:.0} MiB")).unwrap_or_else(|| "—".into()),
        );
    }
    match median(&mut ratios) {
        Some(m) => println!("\nMedian ratio gateway/broker: **{m:.2}** ({} runs)", ratios.len()),
        None => println!("\nMedian ratio gateway/broker: — (no run completed both measurements)"),
    }
    println!("\nPublish side (all N PUBACKs received), broker / gateway runs, msg/s:");
    for (run, broker, gateway, _, _) in &rows {
        println!("- run {run}: {} / {}", rate(broker.publish_rate), rate(gateway.publish_rate));
    }
    for (run, broker, gateway, _, _) in &rows {
        for note in broker.notes.iter().chain(&gateway.notes) {
            println!("- run {run}: {note}");
        }
    }

    println!("\n### Embedded default burst\n");
    let load_before = loadavg();
    watch.reset();
    let embedded = embedded_burst().await;
    println!("| burst | published and acknowledged | gateway received | gateway acknowledged | stored (per quantity) | publish msg/s | stored msg/s | gateway peak RSS | load avg before → after | other compilers running |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {load_before} → {} | {} |",
        embedded_burst_size(),
        embedded.published,
        opt(embedded.received),
        opt(embedded.acked),
        embedded.stored,
        rate(embedded.publish_rate),
        rate(embedded.stored_rate),
        embedded.peak_rss_mib.map(|m| format!("{m:.0} MiB")).unwrap_or_else(|| "—".into()),
        loadavg(),
        watch.summary(),
    );
    println!("\n(\"other compilers running\": share of 100 ms samples during the measurement in which a rustc/cc/ld process was running on the machine; anything above 0 % means the figures were disturbed.)");
    for note in &embedded.notes {
        println!("- {note}");
    }
}

/// Samples /proc every 100 ms for compiler processes (other builds running on this
/// machine), so a disturbed run shows in the table.
struct CompilerWatch {
    samples: Arc<AtomicUsize>,
    busy: Arc<AtomicUsize>,
}

impl CompilerWatch {
    fn start() -> Self {
        let samples = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicUsize::new(0));
        let (s, b) = (samples.clone(), busy.clone());
        // Ends with the process.
        std::thread::spawn(move || loop {
            s.fetch_add(1, Ordering::Relaxed);
            if compilers_running() {
                b.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(100));
        });
        Self { samples, busy }
    }

    fn reset(&self) {
        self.samples.store(0, Ordering::Relaxed);
        self.busy.store(0, Ordering::Relaxed);
    }

    fn summary(&self) -> String {
        let (s, b) = (self.samples.load(Ordering::Relaxed), self.busy.load(Ordering::Relaxed));
        format!("{:.0} % of {s} samples", if s == 0 { 0.0 } else { 100.0 * b as f64 / s as f64 })
    }
}

fn compilers_running() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else { return false };
    dir.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("comm"))
            .map(|c| matches!(c.trim(), "rustc" | "cc1" | "cc1plus" | "ld" | "ld.lld" | "rust-lld" | "clang" | "c++" | "cc"))
            .unwrap_or(false)
    })
}

/// One measurement's outcome; `rate` is `None` when it did not complete.
#[derive(Default)]
struct Outcome {
    rate: Option<f64>,
    publish_rate: Option<f64>,
    stored: String,
    peak_rss_mib: Option<f64>,
    notes: Vec<String>,
}

async fn broker_ceiling(run: usize, n: usize) -> Outcome {
    let broker = Mosquitto::start_private();
    let topics = Topics::new(&format!("bench-ceiling-{run}"));
    let messages = lht65_burst(&topics, n);
    let received = Arc::new(AtomicUsize::new(0));
    let subscriber = Subscriber::start(
        broker.port,
        &format!("{}-sub", topics.prefix),
        &format!("{}/v3/+/devices/+/up", topics.prefix),
        received.clone(),
    )
    .await;
    let publishers = vec![
        Publisher::connect(broker.port, &format!("{}-pub0", topics.prefix)).await,
        Publisher::connect(broker.port, &format!("{}-pub1", topics.prefix)).await,
    ];

    let started = Instant::now();
    let publishing = tokio::spawn(async move {
        let p = publish_connected(publishers, messages, PHASE_TIMEOUT).await;
        (p, started.elapsed())
    });
    let done = wait_count(&received, n).await;
    let (published, published_after) = publishing.await.expect("publishers");
    subscriber.stop();
    drop(broker);

    let mut out = Outcome { stored: "n/a".into(), ..Default::default() };
    if published.acked == n {
        out.publish_rate = Some(n as f64 / published_after.as_secs_f64());
    } else {
        out.notes.push(format!("broker ceiling: only {} of {n} publishes acknowledged ({:?})", published.acked, published.error));
    }
    match done {
        Ok(at) => out.rate = Some(n as f64 / (at - started).as_secs_f64()),
        Err(got) => out.notes.push(format!("broker ceiling: the subscriber received {got} of {n} before giving up")),
    }
    eprintln!("run {run} broker ceiling: {} msg/s", rate(out.rate));
    out
}

async fn gateway_end_to_end(run: usize, n: usize) -> Outcome {
    let broker = Mosquitto::start_private();
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = Topics::new(&format!("bench-gateway-{run}"));
    let messages = lht65_burst(&topics, n);
    let mut gw = Gateway::start(broker.port, dir.path(), &topics).await;
    let publishers = vec![
        Publisher::connect(broker.port, &format!("{}-pub0", topics.prefix)).await,
        Publisher::connect(broker.port, &format!("{}-pub1", topics.prefix)).await,
    ];

    let started = Instant::now();
    let publishing = tokio::spawn(async move {
        let p = publish_connected(publishers, messages, PHASE_TIMEOUT).await;
        (p, started.elapsed())
    });
    let done = gw.wait_metric("messnetz_messages_acked_total", n as f64, PHASE_TIMEOUT, STALL).await;
    let (published, published_after) = publishing.await.expect("publishers");

    let mut out = Outcome { peak_rss_mib: gw.peak_rss_mib(), ..Default::default() };
    if published.acked == n {
        out.publish_rate = Some(n as f64 / published_after.as_secs_f64());
    } else {
        out.notes.push(format!("gateway: only {} of {n} publishes acknowledged ({:?})", published.acked, published.error));
    }
    match done {
        Ok(at) => out.rate = Some(n as f64 / (at - started).as_secs_f64()),
        Err(last) => {
            out.notes.push(format!("gateway: messages_acked_total stopped at {last} of {n} (log: {})", gw.log.display()))
        }
    }
    let status = gw.terminate();
    if !status.success() {
        out.notes.push(format!("gateway: exit status {status} on SIGTERM"));
    }
    out.stored = stored_summary(&gw.data, n);
    drop(broker);
    eprintln!("run {run} gateway: {} msg/s, stored {}", rate(out.rate), out.stored);
    out
}

struct EmbeddedOutcome {
    published: usize,
    received: Option<f64>,
    acked: Option<f64>,
    stored: String,
    publish_rate: Option<f64>,
    stored_rate: Option<f64>,
    peak_rss_mib: Option<f64>,
    notes: Vec<String>,
}

async fn embedded_burst() -> EmbeddedOutcome {
    let n = embedded_burst_size();
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = Topics::new("bench-embedded");
    let messages = lht65_burst(&topics, n);
    let (mut gw, port) = Gateway::start_embedded(dir.path(), &topics).await;
    let publishers = vec![
        Publisher::connect(port, &format!("{}-pub0", topics.prefix)).await,
        Publisher::connect(port, &format!("{}-pub1", topics.prefix)).await,
    ];

    let started = Instant::now();
    let published = publish_connected(publishers, messages, PHASE_TIMEOUT).await;
    let published_after = started.elapsed();
    let done = gw.wait_metric("messnetz_messages_acked_total", published.acked as f64, PHASE_TIMEOUT, STALL).await;
    let client = reqwest::Client::new();
    let received = gw.try_metric(&client, "messnetz_messages_received_total").await;
    let acked = gw.try_metric(&client, "messnetz_messages_acked_total").await;
    let failed = gw.try_metric(&client, "messnetz_messages_failed_total").await;
    let peak_rss_mib = gw.peak_rss_mib();
    let mut notes = Vec::new();
    if let Some(e) = &published.error {
        notes.push(format!("publishers stopped early: {e}"));
    }
    if let Err(last) = done {
        notes.push(format!("messages_acked_total stopped at {last} (log: {})", gw.log.display()));
    }
    if failed.unwrap_or(0.0) > 0.0 {
        notes.push(format!("{failed:?} messages were dead-lettered"));
    }
    let status = gw.terminate();
    if !status.success() {
        notes.push(format!("exit status {status} on SIGTERM"));
    }
    let stored = stored_summary(&gw.data, published.acked);
    if received.is_some_and(|r| (r as usize) < published.acked) {
        notes.push(format!(
            "LOSS IN THE BROKER: {} publishes acknowledged to the publishers, the gateway received {received:?}",
            published.acked
        ));
    }
    EmbeddedOutcome {
        published: published.acked,
        received,
        acked,
        stored,
        publish_rate: (published.acked == n).then(|| n as f64 / published_after.as_secs_f64()),
        stored_rate: done.ok().filter(|_| published.acked == n).map(|at| n as f64 / (at - started).as_secs_f64()),
        peak_rss_mib,
        notes,
    }
}

/// "N/N" when every quantity stored for the device has exactly `n` readings, else the counts.
fn stored_summary(data: &std::path::Path, n: usize) -> String {
    let stored = stored_per_quantity(data, "demo-lht65");
    match stored_mismatch(&stored, n) {
        None => format!("{n}/{n} (×{} quantities)", stored.len()),
        Some(why) => format!("MISMATCH: {why}"),
    }
}

/// A bare QoS 1 subscriber (automatic acks) counting what it receives.
struct Subscriber {
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    async fn start(port: u16, client_id: &str, filter: &str, received: Arc<AtomicUsize>) -> Self {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        client.subscribe(filter, QoS::AtLeastOnce).await.expect("queue subscribe");
        let subscribed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => return,
                    Ok(_) => {}
                    Err(e) => panic!("subscriber cannot connect: {e}"),
                }
            }
        })
        .await;
        assert!(subscribed.is_ok(), "no SUBACK within 10 s");
        let task = tokio::spawn(async move {
            let _client = client;
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(_)) = event {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Self { task }
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// Wait (polling every 2 ms) until `counter` reaches `n`: `Ok(when)`, or `Err(count)` on timeout or stall.
async fn wait_count(counter: &AtomicUsize, n: usize) -> Result<Instant, usize> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut last = 0;
    let mut changed = Instant::now();
    loop {
        let c = counter.load(Ordering::Relaxed);
        if c >= n {
            return Ok(Instant::now());
        }
        if c != last {
            last = c;
            changed = Instant::now();
        }
        if Instant::now() > deadline || changed.elapsed() > STALL {
            return Err(c);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn rate(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{:.1}k", r / 1000.0),
        None => "—".into(),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "—".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn print_machine() {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown".into());
    let mosquitto = std::process::Command::new("mosquitto")
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
            text.lines().find(|l| l.contains("version")).map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned()))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default();
    println!("- machine: {cpus} CPUs (nproc), {model}, {mem} RAM, Linux {kernel}");
    println!("- broker: {mosquitto}");
    println!("- gateway binary: {} (bench profile = release)", env!("CARGO_BIN_EXE_messnetz"));
}
