//! The synthetic city of the aggregates benchmarks (`benches/aggregates.rs` on the embedded store, `benches/aggregates_pg.rs` on PostgreSQL): devices, districts, a daily temperature curve and ingest-shaped batches; and the helpers every benchmark shares (sizes from the environment, a thread's CPU time).
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use messnetz::model::{DeviceId, QualityFlag, Quantity, Reading};
use messnetz::store::WriteBatch;

/// A size from the environment, or `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU time of this thread so far, in seconds (Linux: the first field of its schedstat).
pub fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    stat.split_whitespace().next().and_then(|ns| ns.parse::<f64>().ok()).unwrap_or(0.0) / 1e9
}

pub const START_MS: i64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z
pub const TEN_MIN_MS: i64 = 600_000;

pub fn district(d: usize) -> String {
    format!("Bezirk-{:02}", d % 10)
}

pub fn device_id(d: usize) -> DeviceId {
    DeviceId::parse(&format!("dev-{d:04}")).unwrap()
}

/// A smooth daily temperature curve with a little per-device offset.
pub fn temperature(d: usize, t_ms: i64) -> f64 {
    let hours = (t_ms / 3_600_000) as f64;
    10.0 + 8.0 * (hours / 24.0 * std::f64::consts::TAU).sin() + (d % 7) as f64 * 0.3
}

pub fn reading(device: &DeviceId, quantity: Quantity, t_ms: i64, value: f64) -> Reading {
    Reading {
        device: device.clone(),
        quantity,
        value,
        time: DateTime::<Utc>::from_timestamp_millis(t_ms).unwrap(),
        flag: QualityFlag::Good,
        reason: Default::default(),
    }
}

/// Ingest-shaped batches: uplinks arrive time-major from all devices, ten minutes apart per
/// device, each giving six readings (an LHT65 with its derived quantities), `per_batch`
/// uplinks per batch.
pub fn uplink_batches(devices: usize, uplinks: usize, per_batch: usize) -> impl Iterator<Item = WriteBatch> {
    let quantities: Vec<Quantity> =
        ["air_temperature", "relative_humidity", "probe_temperature", "battery_voltage", "dew_point_temperature", "heat_index"]
            .iter()
            .map(|n| Quantity::by_name(n).unwrap())
            .collect();
    let ids: Vec<DeviceId> = (0..devices).map(device_id).collect();
    (0..uplinks).step_by(per_batch.max(1)).map(move |i| {
        let mut batch = WriteBatch::default();
        for u in i..(i + per_batch).min(uplinks) {
            let d = u % devices;
            let t = START_MS + (u / devices) as i64 * TEN_MIN_MS;
            for (k, q) in quantities.iter().enumerate() {
                batch.readings.push(reading(&ids[d], *q, t, temperature(d, t) + k as f64));
            }
            batch.districts.insert(ids[d].clone(), district(d));
        }
        batch
    })
}

/// The gateway binary serving a prepared store: `store` is the `[store]` section's lines,
/// `devices` the devices file; its own embedded broker on a free port. Stopped when dropped.
pub struct Served {
    child: std::process::Child,
    /// The HTTP API's port on 127.0.0.1.
    pub http: u16,
}

impl Served {
    pub fn start(dir: &std::path::Path, store: &str, devices: &std::path::Path) -> Self {
        let free_port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (mqtt, http) = (free_port(), free_port());
        let config = dir.join("messnetz.toml");
        std::fs::write(
            &config,
            format!(
                "[broker]\nlisten = \"127.0.0.1:{mqtt}\"\n[mqtt]\nport = {mqtt}\n[store]\n{store}\n[api]\nlisten = \"127.0.0.1:{http}\"\n[devices]\nfile = \"{}\"\n[profiles]\ndir = \"{}/sensor-profiles\"\n",
                devices.display(),
                env!("CARGO_MANIFEST_DIR")
            ),
        )
        .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_messnetz"))
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
            assert!(std::time::Instant::now() < deadline, "gateway did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self { child, http }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Load `url` with wrk (one thread, `connections` connections, `seconds`): its p50, p99 and
/// requests per second as wrk prints them.
pub fn wrk(url: &str, seconds: usize, connections: usize) -> (String, String, String) {
    let out = std::process::Command::new("wrk")
        .args(["-t", "1", "-c", &connections.to_string(), "-d", &format!("{seconds}s"), "--latency", url])
        .output()
        .expect("wrk is needed: apt-get install -y wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let find = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .map(|l| l.split_whitespace().last().unwrap_or("").to_owned())
            .unwrap_or_else(|| format!("? ({text})"))
    };
    (find("50%"), find("99%"), find("Requests/sec:"))
}

/// Print the machine's cores and CPU model, for the benchmark's record.
pub fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    println!("machine: {} cores, {cpu}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
}
