//! Starts the real servers the end-to-end tests talk to (Mosquitto, the gateway binary) on free loopback ports, and stops them.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// The private PostgreSQL clusters of the tests (also `mod pg` of the PostgreSQL-only tests).
#[path = "../pg/mod.rs"]
pub mod pg;

pub const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The sensor profiles bundled with the repository.
pub fn bundled_profiles() -> PathBuf {
    PathBuf::from(format!("{MANIFEST_DIR}/sensor-profiles"))
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("local addr").port()
}

/// Poll `f` until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A real Mosquitto. Uses the one the test command started (`MESSNETZ_TEST_MQTT_PORT`) or
/// starts a private one on a free loopback port, stopped when dropped.
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Mosquitto {
    pub fn start() -> Self {
        if let Some(port) = std::env::var("MESSNETZ_TEST_MQTT_PORT").ok().and_then(|p| p.parse().ok()) {
            return Self { port, child: None, _dir: None };
        }
        Self::start_private()
    }

    /// A broker of this test's own, for tests that stop or restart it.
    pub fn start_private() -> Self {
        let port = free_port();
        Self::start_with_conf(port, &mosquitto_conf(port))
    }

    /// A private broker with this configuration, listening on `port`.
    pub fn start_with_conf(port: u16, conf_text: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, conf_text).expect("write mosquitto.conf");
        let child = Self::spawn(&conf, port);
        Self { port, child: Some(child), _dir: Some(dir) }
    }

    fn spawn(conf: &Path, port: u16) -> Child {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is not installed: run the tests with scripts/test, which installs it");
        assert!(wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(10)), "mosquitto did not start");
        child
    }

    /// Stop a private broker (SIGKILL: sessions and queued messages are gone, as after a crash).
    pub fn stop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start a stopped private broker again on the same port with the same configuration.
    pub fn restart(&mut self) {
        self.stop();
        let conf = self._dir.as_ref().expect("only private brokers restart").path().join("mosquitto.conf");
        self.child = Some(Self::spawn(&conf, self.port));
    }
}

/// The broker settings the tests and benchmarks use; the in-flight and queue limits are
/// raised as the README tells operators to (Mosquitto's defaults are 20 and 1000).
pub fn mosquitto_conf(port: u16) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 100\nmax_queued_messages 1000000\nmax_queued_bytes 0\n"
    )
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The gateway binary, run as a separate process against a broker, with its own store.
pub struct Gateway {
    child: Child,
    pub http: SocketAddr,
    pub data: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The database, when the test runs on PostgreSQL ([`backend`]); dropped after the
    /// gateway is stopped.
    pub pg: Option<PgDatabase>,
}

/// Where a test's gateway listens for its messages, so tests sharing a broker don't see each other's.
pub struct Topics {
    pub prefix: String,
}

impl Topics {
    pub fn new(test: &str) -> Self {
        // A test run on both stores at once has two sets of topics (and client ids).
        let backend = if backend() == Backend::Postgres { "-pg" } else { "" };
        Self { prefix: format!("test-{test}{backend}-{}", std::process::id()) }
    }

    pub fn ttn(&self, device_id: &str) -> String {
        format!("{}/v3/messnetz-test@ttn/devices/{device_id}/up", self.prefix)
    }

    pub fn chirpstack(&self, dev_eui: &str) -> String {
        format!("{}/application/6b7a1c5e/device/{}/event/up", self.prefix, dev_eui.to_lowercase())
    }
}

impl Gateway {
    /// Write a config for this test and start the gateway; returns once the API answers and
    /// both subscriptions are confirmed by the broker.
    pub async fn start(mqtt_port: u16, dir: &Path, topics: &Topics) -> Self {
        Self::start_with(mqtt_port, dir, topics, "").await
    }

    /// Like `start`, with extra lines for the `[mqtt]` section (credentials, TLS ...).
    pub async fn start_with(mqtt_port: u16, dir: &Path, topics: &Topics, mqtt_extra: &str) -> Self {
        let devices = PathBuf::from(format!("{MANIFEST_DIR}/demo/devices.toml"));
        Self::start_full(mqtt_port, dir, topics, mqtt_extra, &devices).await
    }

    /// Like `start`, with extra `[mqtt]` lines and a devices file of the test's own.
    pub async fn start_full(mqtt_port: u16, dir: &Path, topics: &Topics, mqtt_extra: &str, devices: &Path) -> Self {
        Self::start_config(dir, topics, "enabled = false", mqtt_port, mqtt_extra, devices, &bundled_profiles()).await
    }

    /// Write this test's config (its own topics, store, API port) and start the gateway.
    async fn start_config(
        dir: &Path,
        topics: &Topics,
        broker: &str,
        mqtt_port: u16,
        mqtt_extra: &str,
        devices: &Path,
        profiles: &Path,
    ) -> Self {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let data = dir.join("data");
        let config = dir.join("messnetz.toml");
        let pg = (backend() == Backend::Postgres).then(PgDatabase::new);
        let store_backend = match &pg {
            Some(db) => format!("backend = \"postgres\"\nurl = \"{}\"\npool_size = 4\n", db.url),
            None => String::new(),
        };
        std::fs::write(
            &config,
            format!(
                r#"[broker]
{broker}

[mqtt]
port = {mqtt_port}
client_id = "{prefix}"
{mqtt_extra}

[[mqtt.subscriptions]]
topic = "{prefix}/v3/+/devices/+/up"
format = "ttn-v3"

[[mqtt.subscriptions]]
topic = "{prefix}/application/+/device/+/event/up"
format = "chirpstack-v4"

[store]
path = "{data}"
{store_backend}
[api]
listen = "{http}"

[devices]
file = "{devices}"

[profiles]
dir = "{profiles}"

[reload]
interval_s = 1
"#,
                prefix = topics.prefix,
                data = data.display(),
                devices = devices.display(),
                profiles = profiles.display(),
            ),
        )
        .expect("write config");
        Self::spawn(http, data, config, dir.join("gateway.log"), pg).await
    }

    async fn spawn(http: SocketAddr, data: PathBuf, config: PathBuf, log: PathBuf, pg: Option<PgDatabase>) -> Self {
        let child = Self::spawn_child(&config, &log);
        let gw = Self { child, http, data, config, log, pg };
        gw.wait_ready().await;
        gw
    }

    fn spawn_child(config: &Path, log: &Path) -> Child {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        // MESSNETZ_TEST_BIN runs the end-to-end tests against another build (an older release,
        // to show that a test fails there).
        Command::new(
            std::env::var_os("MESSNETZ_TEST_BIN")
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_messnetz").into()),
        )
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .expect("start messnetz")
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let url = self.url("/readyz");
        let what = format!("the gateway to be ready: /readyz 200, input subscribed or listening (log: {})", self.log.display());
        wait_for(&what, Duration::from_secs(30), || {
            let client = client.clone();
            let url = url.clone();
            async move { client.get(&url).send().await.ok()?.status().is_success().then_some(()) }
        })
        .await;
    }

    /// Start the same gateway again (same config, same store, same client id) after it stopped.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn_child(&self.config, &self.log);
        self.wait_ready().await;
    }

    /// SIGKILL, then start the same gateway again without waiting for it to be ready.
    pub fn kill_and_respawn(&mut self) {
        self.kill();
        self.child = Self::spawn_child(&self.config, &self.log);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("gateway did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics")).await.expect("GET /metrics").text().await.expect("metrics body");
        metric(&text, name).unwrap_or_else(|| panic!("no metric {name}"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' '))).and_then(|v| v.trim().parse().ok())
}

/// Publish every message at QoS 1 and return once the broker acknowledged all of them.
pub async fn publish_all(port: u16, client_id: &str, messages: Vec<(String, Vec<u8>)>) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30)).set_inflight(100).set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let total = messages.len();
    let publisher = tokio::spawn(async move {
        for (topic, payload) in messages {
            client.publish(topic, QoS::AtLeastOnce, false, payload).await.expect("queue publish");
        }
        client
    });
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked < total {
        assert!(Instant::now() < deadline, "only {acked} of {total} publishes acknowledged in 120 s");
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher connection failed: {e}"),
            Err(_) => panic!("publisher stalled with {acked} of {total} acknowledged"),
        }
    }
    let client = publisher.await.expect("publisher task");
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

/// A TTS v3 uplink as its MQTT integration publishes it.
pub fn ttn_uplink(device_id: &str, dev_eui: &str, f_cnt: u32, payload_hex: &str, received_at: &str) -> Vec<u8> {
    let frm = base64::engine::general_purpose::STANDARD.encode(hex(payload_hex));
    serde_json::json!({
        "end_device_ids": {
            "device_id": device_id,
            "application_ids": {"application_id": "messnetz-test"},
            "dev_eui": dev_eui,
            "dev_addr": "260B1234"
        },
        "correlation_ids": [format!("as:up:01TEST{f_cnt:020}")],
        "received_at": received_at,
        "uplink_message": {
            "session_key_id": "AXBSH1Pk6Z0G166",
            "f_port": 2,
            "f_cnt": f_cnt,
            "frm_payload": frm,
            "rx_metadata": [{"gateway_ids": {"gateway_id": "gw-rathaus"}, "rssi": -87, "channel_rssi": -87, "snr": 7.5}],
            "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}}, "frequency": "868100000"},
            "received_at": received_at,
            "consumed_airtime": "0.061696s"
        }
    })
    .to_string()
    .into_bytes()
}

/// A ChirpStack v4 `up` event (JSON encoding).
pub fn chirpstack_uplink(dev_eui: &str, f_cnt: u32, payload_hex: &str, time: &str) -> Vec<u8> {
    let data = base64::engine::general_purpose::STANDARD.encode(hex(payload_hex));
    serde_json::json!({
        "deduplicationId": format!("3ac7e3c4-4401-4b8d-9386-{f_cnt:012}"),
        "time": time,
        "deviceInfo": {
            "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
            "tenantName": "Stadt",
            "applicationId": "6b7a1c5e",
            "applicationName": "Stadtklima",
            "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
            "deviceProfileName": "Dragino LHT65",
            "deviceName": "Stadtpark LHT65",
            "devEui": dev_eui.to_lowercase(),
            "tags": {}
        },
        "devAddr": "00189440",
        "adr": true,
        "dr": 5,
        "fCnt": f_cnt,
        "fPort": 2,
        "confirmed": false,
        "data": data,
        "rxInfo": [{"gatewayId": "0016c001f153a14c", "uplinkId": 4217106255u32, "rssi": -36, "snr": 10.5}],
        "txInfo": {"frequency": 868100000, "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}}}
    })
    .to_string()
    .into_bytes()
}

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

// ---- Bursts: the embedded-listener burst test and the end-to-end benchmark (benches/e2e.rs) ----

/// Dragino's published LHT65 example payload: 3.062 V, 28.29 °C, 88.6 %, probe 27.81 °C.
pub const LHT65_PAYLOAD: &str = "CBF60B0D0376010ADD7FFF";

/// The measured quantities one LHT65 uplink always becomes (its profile may derive more,
/// such as dew point; those are counted too).
pub const LHT65_QUANTITIES: [&str; 4] = ["battery_voltage", "air_temperature", "relative_humidity", "probe_temperature"];

/// `n` TTN uplinks of `demo-lht65`, each a distinct reading: `f_cnt` 1..=n, measured one
/// second apart from 2025-01-01T00:00:00Z (in the past, so none is flagged as from the future).
pub fn lht65_burst(topics: &Topics, n: usize) -> Vec<(String, Vec<u8>)> {
    const START: i64 = 1_735_689_600; // 2025-01-01T00:00:00Z
    let topic = topics.ttn("demo-lht65");
    (0..n)
        .map(|i| {
            let at = chrono::DateTime::from_timestamp(START + i as i64, 0)
                .expect("time in range")
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            (topic.clone(), ttn_uplink("demo-lht65", "A840410000000001", i as u32 + 1, LHT65_PAYLOAD, &at))
        })
        .collect()
}

/// Deal `messages` round-robin into `parts` lists, one per publisher connection.
pub fn deal<T>(messages: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..parts).map(|_| Vec::with_capacity(messages.len() / parts + 1)).collect();
    for (i, m) in messages.into_iter().enumerate() {
        out[i % parts].push(m);
    }
    out
}

/// A QoS 1 publisher connection that already has its CONNACK, so a measurement starts at the
/// first publish rather than at the handshake.
pub struct Publisher {
    client: AsyncClient,
    eventloop: rumqttc::EventLoop,
}

/// What a publisher got through.
#[derive(Debug)]
pub struct Published {
    /// PUBACKs received: messages the broker has taken responsibility for.
    pub acked: usize,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

impl Publisher {
    pub async fn connect(port: u16, client_id: &str) -> Self {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30)).set_inflight(100).set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let connected = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await;
        match connected {
            Ok(Ok(())) => Self { client, eventloop },
            Ok(Err(e)) => panic!("publisher {client_id} cannot connect to port {port}: {e}"),
            Err(_) => panic!("publisher {client_id}: no CONNACK from port {port} within 10 s"),
        }
    }

    /// Publish every message at QoS 1 and wait for every PUBACK. Never panics: stops at a
    /// connection error, after 10 s without a PUBACK, or at `deadline`, and says so.
    pub async fn publish_all(self, messages: Vec<(String, Vec<u8>)>, deadline: Duration) -> Published {
        let Self { client, mut eventloop } = self;
        let total = messages.len();
        let producer = {
            let client = client.clone();
            tokio::spawn(async move {
                for (topic, payload) in messages {
                    if client.publish(topic, QoS::AtLeastOnce, false, payload).await.is_err() {
                        break;
                    }
                }
            })
        };
        let until = Instant::now() + deadline;
        let mut acked = 0;
        let mut error = None;
        while acked < total {
            if Instant::now() > until {
                error = Some(format!("deadline of {deadline:?} passed"));
                break;
            }
            match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    error = Some(format!("connection failed: {e}"));
                    break;
                }
                Err(_) => {
                    error = Some("no PUBACK for 10 s".into());
                    break;
                }
            }
        }
        producer.abort();
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
        Published { acked, error }
    }
}

/// Publish `messages` from `connections` connections at once (each waits for its PUBACKs);
/// returns when all are done, with the total acknowledged and the first error.
pub async fn publish_from(
    port: u16,
    client_prefix: &str,
    connections: usize,
    messages: Vec<(String, Vec<u8>)>,
    deadline: Duration,
) -> Published {
    let mut publishers = Vec::new();
    for i in 0..connections {
        publishers.push(Publisher::connect(port, &format!("{client_prefix}-pub{i}")).await);
    }
    publish_connected(publishers, messages, deadline).await
}

/// Like [`publish_from`] with connections made beforehand (so a clock can start after them).
pub async fn publish_connected(publishers: Vec<Publisher>, messages: Vec<(String, Vec<u8>)>, deadline: Duration) -> Published {
    let parts = deal(messages, publishers.len());
    let tasks: Vec<_> = publishers.into_iter().zip(parts).map(|(p, part)| tokio::spawn(p.publish_all(part, deadline))).collect();
    let mut total = Published { acked: 0, error: None };
    for t in tasks {
        let p = t.await.expect("publisher task");
        total.acked += p.acked;
        total.error = total.error.or(p.error);
    }
    total
}

impl Gateway {
    /// Start the gateway with its embedded listener (the zero-setup default) on a free loopback
    /// port; returns the gateway and the listener's port.
    pub async fn start_embedded(dir: &Path, topics: &Topics) -> (Self, u16) {
        Self::start_embedded_with(dir, topics, "").await
    }

    /// Like [`Gateway::start_embedded`], with extra lines for the `[broker]` section.
    pub async fn start_embedded_with(dir: &Path, topics: &Topics, broker_extra: &str) -> (Self, u16) {
        let port = free_port();
        let broker = format!("enabled = true\nlisten = \"127.0.0.1:{port}\"\n{broker_extra}");
        let devices = PathBuf::from(format!("{MANIFEST_DIR}/demo/devices.toml"));
        (Self::start_config(dir, topics, &broker, port, "", &devices, &bundled_profiles()).await, port)
    }

    /// The value of an unlabelled metric, or `None` if the gateway does not answer.
    pub async fn try_metric(&self, client: &reqwest::Client, name: &str) -> Option<f64> {
        let text = client.get(self.url("/metrics")).send().await.ok()?.text().await.ok()?;
        metric(&text, name)
    }

    /// Poll `name` every 10 ms until it reaches `target`. `Ok(when)` once it has; `Err(last
    /// value)` after `timeout`, or after `stall` without any change.
    pub async fn wait_metric(&self, name: &str, target: f64, timeout: Duration, stall: Duration) -> Result<Instant, f64> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        let mut last = f64::NAN;
        let mut changed = Instant::now();
        loop {
            if let Some(v) = self.try_metric(&client, name).await {
                if v >= target {
                    return Ok(Instant::now());
                }
                if v != last {
                    last = v;
                    changed = Instant::now();
                }
            }
            if Instant::now() > deadline || changed.elapsed() > stall {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Peak resident memory of the gateway process so far, in MiB (Linux `VmHWM`).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib: f64 =
            status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib / 1024.0)
    }
}

impl Gateway {
    /// The gateway's store, opened by the test: the embedded one only while the gateway is
    /// stopped (one process at a time), the PostgreSQL database at any time.
    pub fn open_store(&self) -> std::sync::Arc<dyn messnetz::store::Store> {
        match &self.pg {
            Some(db) => db.open(),
            None => std::sync::Arc::new(
                messnetz::store::EmbeddedStore::open(&self.data).expect("open the store (is the gateway stopped?)"),
            ),
        }
    }

    /// Readings stored per quantity for `device`, from whichever store the gateway has (the
    /// embedded one only while the gateway is stopped).
    pub fn stored_per_quantity(&self, device: &str) -> Vec<(&'static str, usize)> {
        per_quantity(&*self.open_store(), device)
    }
}

/// The first `limit` dead letters in `store`, oldest first (either backend).
pub fn dead_letters_in(store: &dyn messnetz::store::Store, limit: usize) -> Vec<messnetz::store::DeadLetter> {
    store.dead_letters_matching(0, limit, usize::MAX, &mut |_| true).expect("read the dead letters").0
}

/// Readings stored per quantity for `device` in `store`.
pub fn per_quantity(store: &dyn messnetz::store::Store, device: &str) -> Vec<(&'static str, usize)> {
    use messnetz::model::{DeviceId, Quantity};
    let device = DeviceId::parse(device).expect("device id");
    let from = chrono::DateTime::from_timestamp(0, 0).expect("epoch");
    let to = chrono::DateTime::from_timestamp(4_102_444_800, 0).expect("2100"); // 2100-01-01
    Quantity::all()
        .map(|q| (q.name(), store.readings(&device, q, from, to, usize::MAX).expect("read series").len()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

// ---- Both stores: the end-to-end tests run once on each backend (`both_backends!`) ----

/// The store a test's gateways and in-process stages keep their data in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Postgres,
}

tokio::task_local! {
    /// The backend of the running async test, set by [`both_backends!`].
    pub static BACKEND: Backend;
}

thread_local! {
    /// The backend of the running plain test, set by [`both_backends!`].
    pub static SYNC_BACKEND: std::cell::Cell<Backend> = const { std::cell::Cell::new(Backend::Embedded) };
}

/// The running test's backend: embedded unless [`both_backends!`] says otherwise.
pub fn backend() -> Backend {
    BACKEND.try_with(|b| *b).unwrap_or_else(|_| SYNC_BACKEND.with(|b| b.get()))
}

/// Write a test once, run it on both stores: `name::embedded` and `name::postgres` (in a
/// database of its own, in the cluster the test binary's running tests share). The body does
/// not name the backend: [`Gateway`]s and [`TestStore`]s it starts take [`backend`]. An async
/// test's attributes (`#[tokio::test]` ...) go before `async fn`; a plain test has none.
#[allow(unused_macros)]
macro_rules! both_backends {
    ($(#[$attr:meta])+ async fn $name:ident() $body:block) => {
        async fn $name() $body
        mod $name {
            $(#[$attr])+
            async fn embedded() {
                crate::common::BACKEND.scope(crate::common::Backend::Embedded, super::$name()).await
            }
            $(#[$attr])+
            async fn postgres() {
                crate::common::BACKEND.scope(crate::common::Backend::Postgres, super::$name()).await
            }
        }
    };
    (fn $name:ident() $body:block) => {
        fn $name() $body
        mod $name {
            #[test]
            fn embedded() {
                crate::common::SYNC_BACKEND.with(|b| b.set(crate::common::Backend::Embedded));
                super::$name()
            }
            #[test]
            fn postgres() {
                crate::common::SYNC_BACKEND.with(|b| b.set(crate::common::Backend::Postgres));
                super::$name()
            }
        }
    };
}

/// One PostgreSQL cluster for the tests of this binary that run at the same time: started
/// by the first that needs it, stopped when the last lets go (a test run later starts another).
pub fn shared_cluster() -> std::sync::Arc<pg::Cluster> {
    use std::sync::{Arc, Mutex, Weak};
    static SHARED: Mutex<Weak<pg::Cluster>> = Mutex::new(Weak::new());
    let mut held = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(cluster) = held.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(pg::Cluster::start());
    *held = Arc::downgrade(&cluster);
    cluster
}

/// A database of its own in the [`shared_cluster`].
pub struct PgDatabase {
    pub cluster: std::sync::Arc<pg::Cluster>,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn new() -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let cluster = shared_cluster();
        let name = format!("test_{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let url = cluster.database(&name);
        Self { cluster, name, url }
    }

    /// The PostgreSQL store on this database (its schema migrated).
    pub fn open(&self) -> std::sync::Arc<dyn messnetz::store::Store> {
        let settings = messnetz::config::StoreSettings {
            backend: messnetz::config::StoreBackend::Postgres,
            url: self.url.clone(),
            pool_size: 4,
            ..Default::default()
        };
        std::sync::Arc::new(messnetz::store::PostgresStore::open(&settings).expect("open the PostgreSQL store"))
    }

    /// Run SQL in this database with psql (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        self.cluster.psql(&self.name, sql)
    }
}

/// An ingest stage in this process over `store`, with the demo's devices and profiles, raw
/// LoRaWAN `keys`, batches of up to 1,000 gathering for `gather` (with the same quiet time, so
/// only `gather` ends it), QoS 0 (nothing to acknowledge), no InfluxDB; and its metrics.
#[allow(dead_code)]
pub fn demo_ingest(
    store: &TestStore,
    keys: messnetz::sources::lorawan_keys::SessionKeys,
    gather: Duration,
) -> (messnetz::ingest::Ingest, std::sync::Arc<messnetz::metrics::Metrics>) {
    let mut settings = messnetz::config::Settings::default();
    settings.devices.file = format!("{MANIFEST_DIR}/demo/devices.toml").into();
    settings.profiles.dir = format!("{MANIFEST_DIR}/sensor-profiles").into();
    let (profiles, devices) = messnetz::registry::load(&settings).expect("demo registry");
    let metrics = std::sync::Arc::new(messnetz::metrics::Metrics::default());
    let ingest = messnetz::ingest::Ingest {
        store: store.open(),
        registry: std::sync::Arc::new(messnetz::registry::Registry::new(profiles, devices)),
        metrics: metrics.clone(),
        acks: messnetz::sources::Acknowledger::new(None),
        max_batch: 1000,
        gather,
        quiet: gather,
        spool: None,
        lorawan: std::sync::Arc::new(keys),
    };
    (ingest, metrics)
}

/// A store for an in-process test, of the running test's [`backend`]: the embedded one in a
/// directory of its own, or a database of its own.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub pg: Option<PgDatabase>,
}

impl TestStore {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self { dir, pg: (backend() == Backend::Postgres).then(PgDatabase::new) }
    }

    /// Open it (again, as after a restart); the embedded store opens once at a time.
    pub fn open(&self) -> std::sync::Arc<dyn messnetz::store::Store> {
        match &self.pg {
            Some(db) => db.open(),
            None => std::sync::Arc::new(messnetz::store::EmbeddedStore::open(self.dir.path()).expect("open the store")),
        }
    }
}

/// Readings stored per quantity for `device`, read from a stopped gateway's store directory.
pub fn stored_per_quantity(data: &Path, device: &str) -> Vec<(&'static str, usize)> {
    let store = messnetz::store::EmbeddedStore::open(data).expect("open the store (is the gateway stopped?)");
    per_quantity(&store, device)
}

// ---- InfluxDB v2 write target: VictoriaMetrics (tests/influx.rs, benches/influx.rs) ----

/// A private VictoriaMetrics on a free loopback port with its own data directory; it accepts
/// InfluxDB v2 `/api/v2/write` line protocol (gzip too). Stopped when dropped.
pub struct VictoriaMetrics {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl VictoriaMetrics {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vm = Self { port: free_port(), child: None, dir };
        vm.spawn();
        vm
    }

    fn spawn(&mut self) {
        let child = Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.dir.path().join("data").display()))
            // Older timestamps than the default retention (1 month) would be refused.
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics is not installed: run the tests with scripts/test, which installs it");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        assert!(wait_for_port(addr, Duration::from_secs(20)), "victoria-metrics did not start on {addr}");
    }

    /// The base URL to configure as `influxdb.url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stop it: the write API is gone at once. SIGTERM, so that the server keeps what it
    /// acknowledged (on SIGKILL VictoriaMetrics loses the samples still buffered in memory,
    /// which would be the server's loss, not the gateway's); SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Every sample of every series whose metric name matches `name_regex`, after making
    /// recent writes searchable. One JSON object per series (`metric`, `values`, `timestamps`).
    pub async fn export(&self, name_regex: &str) -> Vec<serde_json::Value> {
        let client = reqwest::Client::new();
        let base = self.url();
        client.get(format!("{base}/internal/force_flush")).send().await.expect("force_flush");
        let text = client
            .get(format!("{base}/api/v1/export"))
            .query(&[("match[]", format!("{{__name__=~\"{name_regex}\"}}"))])
            .send()
            .await
            .expect("export")
            .text()
            .await
            .expect("export body");
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("export line")).collect()
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `[influxdb]` section to pass as the `mqtt_extra` of [`Gateway::start_with`] /
/// [`Gateway::start_full`] (TOML allows the `[[mqtt.subscriptions]]` that follow it).
pub fn influx_section(url: &str, extra: &str) -> String {
    format!("\n[influxdb]\nurl = \"{url}\"\norg = \"stadt\"\nbucket = \"messnetz\"\ntoken = \"test-token\"\n{extra}\n")
}

/// `None` when every quantity stored for the device has exactly `n` readings and the LHT65's
/// measured quantities are among them; otherwise what is wrong.
pub fn stored_mismatch(stored: &[(&'static str, usize)], n: usize) -> Option<String> {
    let complete = LHT65_QUANTITIES.iter().all(|q| stored.iter().any(|(name, _)| name == q));
    if complete && stored.iter().all(|(_, c)| *c == n) {
        return None;
    }
    let counts: Vec<String> = stored.iter().map(|(q, c)| format!("{q} {c}")).collect();
    Some(format!("expected {n} readings of each of at least {LHT65_QUANTITIES:?}, stored: {}", counts.join(", ")))
}

// ---- Raw LoRaWAN frames from a gateway bridge (tests/lorawan.rs) ----

impl Topics {
    /// Where a ChirpStack Gateway Bridge publishes a gateway's uplink frames.
    pub fn gateway_bridge(&self, gateway_id: &str) -> String {
        format!("{}/eu868/gateway/{gateway_id}/event/up", self.prefix)
    }
}

/// Extra config for [`Gateway::start_full`]: a `lorawan` subscription for this test's
/// gateway-bridge topics and the `[lorawan]` section naming the keys file.
pub fn lorawan_section(topics: &Topics, keys_file: &Path) -> String {
    format!(
        "\n[[mqtt.subscriptions]]\ntopic = \"{}/eu868/gateway/+/event/up\"\nformat = \"lorawan\"\n\n[lorawan]\nkeys_file = \"{}\"\n",
        topics.prefix,
        keys_file.display()
    )
}

/// Write a session keys file with the given mode: (DevAddr, device, NwkSKey hex, AppSKey hex).
pub fn write_keys_file(path: &Path, mode: u32, sessions: &[(u32, &str, &str, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    let text: String = sessions
        .iter()
        .map(|(addr, device, nwk, app)| {
            format!(
                "[[session]]\ndev_addr = \"{addr:08X}\"\ndevice = \"{device}\"\nnwk_s_key = \"{nwk}\"\napp_s_key = \"{app}\"\n\n"
            )
        })
        .collect();
    std::fs::write(path, text).expect("write keys file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod keys file");
}

// ---- The operator API (tests/admin.rs, tests/replay.rs) ----

impl Gateway {
    /// Like [`Gateway::start_full`], with a profiles directory of the test's own (profile
    /// uploads write into it).
    pub async fn start_with_profiles(
        mqtt_port: u16,
        dir: &Path,
        topics: &Topics,
        extra: &str,
        devices: &Path,
        profiles: &Path,
    ) -> Self {
        Self::start_config(dir, topics, "enabled = false", mqtt_port, extra, devices, profiles).await
    }
}

/// Copy the demo devices file and the bundled profiles into `dir` (files the test may
/// change); returns (devices file, profiles directory).
pub fn own_devices_and_profiles(dir: &Path) -> (PathBuf, PathBuf) {
    let devices = dir.join("devices.toml");
    std::fs::copy(format!("{MANIFEST_DIR}/demo/devices.toml"), &devices).expect("copy devices");
    let profiles = dir.join("profiles");
    std::fs::create_dir_all(&profiles).expect("profiles dir");
    for entry in std::fs::read_dir(format!("{MANIFEST_DIR}/sensor-profiles")).expect("sensor-profiles") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::copy(&path, profiles.join(path.file_name().expect("name"))).expect("copy profile");
        }
    }
    (devices, profiles)
}

/// An argon2id hash of `token` with the smallest parameters, so tests stay fast; the gateway
/// verifies with whatever parameters a hash names.
pub fn cheap_token_hash(token: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).expect("params");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(token.as_bytes(), &SaltString::generate(&mut rand_core::OsRng))
        .expect("hash")
        .to_string()
}

/// An `[admin]` section for the `extra` of the start functions: (name, token, owners) each.
pub fn admin_section(max_failures_per_minute: u32, tokens: &[(&str, &str, &[&str])]) -> String {
    let mut out = format!("\n[admin]\nmax_failures_per_minute = {max_failures_per_minute}\n");
    for (name, token, owners) in tokens {
        let owners: Vec<String> = owners.iter().map(|o| format!("{o:?}")).collect();
        out.push_str(&format!(
            "\n[[admin.tokens]]\nname = \"{name}\"\nhash = \"{}\"\nowners = [{}]\n",
            cheap_token_hash(token),
            owners.join(", ")
        ));
    }
    out
}

// ---- A QoS 1 publisher that knows exactly which messages were acknowledged ----

/// Publish every message at QoS 1 with up to `window` in flight, over plain MQTT 3.1.1 framing
/// (rumqttc's codec), reconnecting whenever the connection breaks (the listener was killed)
/// and sending again what was not acknowledged, as a sensor bridge does. Returns, per
/// message, whether a PUBACK for it arrived. Gives up at `deadline`.
pub async fn publish_counting(
    port: u16,
    client_id: &str,
    messages: &[(String, Vec<u8>)],
    window: usize,
    deadline: Duration,
) -> Vec<bool> {
    use bytes::BytesMut;
    use rumqttc::mqttbytes::v4::{Connect, Packet as Frame, Publish};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let until = Instant::now() + deadline;
    let mut acked = vec![false; messages.len()];
    let mut in_flight: std::collections::BTreeMap<u16, usize> = Default::default();
    let mut next = 0usize;
    let pkid_of = |i: usize| (i % 65_000) as u16 + 1;
    'connection: while Instant::now() < until && (next < messages.len() || !in_flight.is_empty()) {
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(("127.0.0.1", port))).await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut out = BytesMut::new();
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 30;
        Frame::Connect(connect).write(&mut out, 1 << 20).expect("encode CONNECT");
        // What was sent and not acknowledged goes again, first.
        for (&pkid, &i) in &in_flight {
            let mut p = Publish::new(messages[i].0.clone(), QoS::AtLeastOnce, messages[i].1.clone());
            p.pkid = pkid;
            p.dup = true;
            Frame::Publish(p).write(&mut out, 1 << 20).expect("encode PUBLISH");
        }
        let mut input = BytesMut::with_capacity(4096);
        loop {
            while in_flight.len() < window && next < messages.len() {
                let mut p = Publish::new(messages[next].0.clone(), QoS::AtLeastOnce, messages[next].1.clone());
                p.pkid = pkid_of(next);
                in_flight.insert(p.pkid, next);
                Frame::Publish(p).write(&mut out, 1 << 20).expect("encode PUBLISH");
                next += 1;
            }
            if !out.is_empty() {
                if stream.write_all(&out).await.is_err() {
                    continue 'connection;
                }
                out.clear();
            }
            if in_flight.is_empty() && next >= messages.len() {
                break 'connection;
            }
            if Instant::now() > until {
                break 'connection;
            }
            match tokio::time::timeout(Duration::from_secs(10), stream.read_buf(&mut input)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => continue 'connection,
            }
            loop {
                match Frame::read(&mut input, 1 << 20) {
                    Ok(Frame::PubAck(ack)) => {
                        if let Some(i) = in_flight.remove(&ack.pkid) {
                            acked[i] = true;
                        }
                    }
                    Ok(_) => {}
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                    Err(_) => continue 'connection,
                }
            }
        }
    }
    acked
}

// ---- Open data (tests/open_data.rs, benches/catalog.rs) ----

impl Gateway {
    /// The gateway with its embedded listener, a devices file of the test's own and `sections`
    /// (whole TOML sections such as `[open_data]`) added to its config; returns the gateway
    /// and the listener's port.
    pub async fn start_embedded_devices(dir: &Path, topics: &Topics, devices: &Path, sections: &str) -> (Self, u16) {
        let port = free_port();
        let broker = format!("enabled = true\nlisten = \"127.0.0.1:{port}\"\n\n{sections}\n");
        (Self::start_config(dir, topics, &broker, port, "", devices, &bundled_profiles()).await, port)
    }
}

/// Writes a devices file of `devices` open Dragino LHT65s (`city-0000` ...) in `districts`
/// districts: district 0 ("Einzelhof") holds exactly one device, the others share the rest.
/// Names carry quotes, `&`, `<` and umlauts, to be escaped in every syntax; licences vary.
pub fn city_devices(path: &Path, devices: usize, districts: usize) {
    assert!(districts >= 2 && devices > districts);
    let licences = ["dl-by-de/2.0", "dl-zero-de/2.0", "cc-by/4.0"];
    let mut text = String::new();
    for i in 0..devices {
        let district = if i == 0 { "Einzelhof".to_owned() } else { format!("Bezirk Süd-{:02}", 1 + (i - 1) % (districts - 1)) };
        let (lat, lon) = (48.06 + (i % 40) as f64 * 0.004, 11.45 + (i / 40) as f64 * 0.008);
        text.push_str(&format!(
            "[[device]]\nid = \"city-{i:04}\"\nname = \"Messstelle \\\"{i}\\\" & <Süd>\"\nprofile = \"dragino-lht65\"\ndev_eui = \"A84041{:010X}\"\nlat = {lat:.5}\nlon = {lon:.5}\nheight_m = 3.0\ndistrict = \"{district}\"\nowner = \"Umweltamt\"\nlicence = \"{}\"\nvisibility = \"open\"\ninstalled = \"2026-0{}-01\"\n\n",
            0x0010_0000 + i,
            licences[i % licences.len()],
            1 + i % 9,
        ));
    }
    std::fs::write(path, text).expect("write devices");
}
