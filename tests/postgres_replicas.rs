//! Two gateway replicas storing into one PostgreSQL: behind one Mosquitto `$share` subscription every acknowledged uplink is stored exactly once (one replica is killed with SIGKILL midway and started again), every public and admin route answers byte for byte the same from either, and a raw LoRaWAN frame that reaches both at the same moment is stored once.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::pg;
use common::*;
use messnetz::sources::lorawan::{bridge_json, build_frame};
use messnetz::sources::lorawan_keys::{DeviceSession, SessionKey};

/// One gateway replica: its own config, API port and client id; the store is the database.
struct Replica {
    child: Child,
    http: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl Replica {
    /// Start replica `name` with `subscriptions` (TOML `[[mqtt.subscriptions]]` tables) and `extra` sections.
    async fn start(dir: &Path, name: &str, mqtt_port: u16, db_url: &str, subscriptions: &str, extra: &str) -> Self {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"[broker]
enabled = false

[mqtt]
port = {mqtt_port}
client_id = "{name}-{pid}"

{subscriptions}

[store]
backend = "postgres"
path = "{data}"
pool_size = 4

[api]
listen = "{http}"

[devices]
file = "{MANIFEST_DIR}/demo/devices.toml"

[profiles]
dir = "{profiles}"
{extra}
"#,
                pid = std::process::id(),
                data = dir.join(format!("{name}-data")).display(),
                profiles = bundled_profiles().display(),
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        // The URL (with its password) only in the environment, as the docs advise.
        let child = spawn(&config, &log, db_url);
        let replica = Self { child, http, config, log };
        replica.wait_ready(db_url).await;
        replica
    }

    async fn wait_ready(&self, _db_url: &str) {
        self.wait_ready_within(Duration::from_secs(60)).await;
    }

    /// Wait for `/readyz` to answer 200; on timeout, fail with its last answer and the log's end.
    async fn wait_ready_within(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match reqwest::get(self.url("/readyz")).await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            assert!(Instant::now() < deadline, "replica not ready in {timeout:?}: {last}\nlog:\n{}", tail(&self.log));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// SIGKILL and start again on the same config (the same client id: the broker keeps its session).
    fn kill_and_respawn(&mut self, db_url: &str) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.config, &self.log, db_url);
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(self.url("/metrics")).await.ok()?.text().await.ok()?;
        metric(&text, name)
    }

    fn terminate(&mut self) -> bool {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        false
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config: &Path, log: &Path, db_url: &str) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_messnetz"))
        .arg("--config")
        .arg(config)
        .env("MESSNETZ__STORE__URL", db_url)
        .env("RUST_LOG", "info")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start messnetz")
}

/// The end of a log, for a failure message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text[text.len().saturating_sub(4000)..].to_owned()
}

/// Wait until both replicas acknowledged all they received and nothing new came for 3 s.
async fn settle(replicas: &[&Replica], expect_total: f64) {
    let deadline = Instant::now() + Duration::from_secs(420);
    let mut last = (f64::NAN, Instant::now());
    loop {
        let mut received = 0.0;
        let mut acked = 0.0;
        let mut answered = true;
        for r in replicas {
            match (r.metric("messnetz_messages_received_total").await, r.metric("messnetz_messages_acked_total").await) {
                (Some(a), Some(b)) => {
                    received += a;
                    acked += b;
                }
                _ => answered = false,
            }
        }
        if answered {
            if received != last.0 {
                last = (received, Instant::now());
            } else if acked >= received && received >= expect_total && last.1.elapsed() > Duration::from_secs(3) {
                return;
            }
        }
        if Instant::now() >= deadline {
            let mut why = String::new();
            for r in replicas {
                let connects = r.metric("messnetz_mqtt_connects_total").await;
                why.push_str(&format!("\n--- {} ({connects:?} connections to the broker):\n{}", r.log.display(), tail(&r.log)));
            }
            panic!("the replicas did not settle in 420 s (received {received}, acked {acked}){why}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Uplinks of the shared-subscription test: the issue's 100,000 unless
/// `MESSNETZ_TEST_REPLICA_UPLINKS` says otherwise (docs/postgres.md, "What the tests prove").
fn uplinks() -> usize {
    std::env::var("MESSNETZ_TEST_REPLICA_UPLINKS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}
const TOKEN: &str = "replica-admin-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_behind_a_shared_subscription_store_every_uplink_once_and_answer_alike() {
    let (uplinks, run) = (uplinks(), Instant::now());
    let cluster = pg::Cluster::start();
    let db = cluster.database("replicas");
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("pg-replicas");
    let subscriptions =
        format!("[[mqtt.subscriptions]]\ntopic = \"$share/{p}/{p}/v3/+/devices/+/up\"\nformat = \"ttn-v3\"\n", p = topics.prefix);
    let admin = admin_section(100, &[("ops", TOKEN, &["Umweltamt"])]);
    let mut a = Replica::start(dir.path(), "replica-a", broker.port, &db, &subscriptions, &admin).await;
    let b = Replica::start(dir.path(), "replica-b", broker.port, &db, &subscriptions, &admin).await;

    // A burst of distinct readings and a few messages that can only be dead letters.
    let mut messages = lht65_burst(&topics, uplinks);
    for i in 0..5 {
        messages.push((topics.ttn("demo-lht65"), format!("{{\"not\": \"an uplink {i}\"").into_bytes()));
    }
    let total = messages.len();
    let port = broker.port;
    let client = format!("{}-pub", topics.prefix);
    let publisher = tokio::spawn(async move { publish_from(port, &client, 2, messages, Duration::from_secs(420)).await });
    // Replica A is killed midway (it takes about half of the burst and has acknowledged half
    // of that), and started again.
    let started = Instant::now();
    while a.metric("messnetz_messages_acked_total").await.unwrap_or(0.0) < (uplinks / 4) as f64 {
        assert!(started.elapsed() < Duration::from_secs(300), "replica A acknowledged too little; log:\n{}", tail(&a.log));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill_and_respawn(&db);
    let published = publisher.await.unwrap();
    assert_eq!(published.acked, total, "the broker took every message: {:?}", published.error);
    // Its session kept what the broker gave it while it was down: it subscribes again once it
    // has caught up with that.
    a.wait_ready_within(Duration::from_secs(300)).await;
    settle(&[&a, &b], 0.0).await;

    let stored: usize = cluster
        .psql("replicas", "SELECT count(*) FROM readings WHERE device = 'demo-lht65' AND quantity = 'air_temperature'")
        .parse()
        .unwrap();
    assert_eq!(stored, uplinks, "every uplink stored exactly once (logs: {}, {})", a.log.display(), b.log.display());
    // Each bad message is one dead letter, and nothing else is: one whose batch was committed
    // just before the kill but not yet acknowledged comes back from the broker and finds its
    // letter (one message, one letter).
    let letters = cluster.psql("replicas", "SELECT count(*), count(DISTINCT payload) FROM dead_letters");
    assert_eq!(letters, "5|5", "each bad message dead-lettered once");
    let others: usize = cluster
        .psql(
            "replicas",
            "SELECT count(*) FROM dead_letters WHERE convert_from(payload, 'UTF8') NOT LIKE '{\"not\": \"an uplink %'",
        )
        .parse()
        .unwrap();
    assert_eq!(others, 0, "only the bad messages are dead letters");
    let b_took = b.metric("messnetz_messages_acked_total").await.unwrap();
    assert!(b_took > 0.0, "the shared subscription gave replica B a share");

    // Every public and admin route: the same bytes from either replica.
    let http = reqwest::Client::new();
    let routes = [
        "/v1/readings?device=demo-lht65&quantity=air_temperature&from=2025-01-01T00:00:00Z&to=2025-01-03T00:00:00Z&limit=10000",
        "/v1/aggregates?device=demo-lht65&quantity=air_temperature&interval=10m&from=2025-01-01T00:00:00Z&to=2025-01-03T00:00:00Z",
        // Up to 172,800 uplinks (one a second): every one falls in these two days.
        "/v1/aggregates?district=Altstadt&quantity=air_temperature&interval=1h&from=2025-01-01T00:00:00Z&to=2025-01-03T00:00:00Z",
        "/v1/aggregates?district=Altstadt&quantity=relative_humidity&interval=1d&from=2025-01-01T00:00:00Z&to=2025-01-03T00:00:00Z&format=csv",
        "/v1/devices",
        "/v1/devices/demo-lht65/latest",
        "/v1/latest",
        "/v1/catalog",
        "/v1/admin/dead-letters",
        "/v1/admin/devices",
    ];
    for route in routes {
        let get = |r: &Replica| {
            let request = http.get(r.url(route));
            let request = if route.starts_with("/v1/admin") { request.bearer_auth(TOKEN) } else { request };
            async move {
                let response = request.send().await.unwrap();
                (response.status().as_u16(), response.bytes().await.unwrap())
            }
        };
        let (from_a, from_b) = (get(&a).await, get(&b).await);
        assert_eq!(from_a.0, 200, "{route}: {}", String::from_utf8_lossy(&from_a.1));
        assert!(
            from_a == from_b,
            "{route} differs:\n{}\n---\n{}",
            String::from_utf8_lossy(&from_a.1),
            String::from_utf8_lossy(&from_b.1)
        );
    }
    let aggregates = http.get(a.url(routes[2])).send().await.unwrap().text().await.unwrap();
    let counts: u64 = serde_json::from_str::<serde_json::Value>(&aggregates).unwrap()["points"]
        .as_array()
        .map(|p| p.iter().map(|w| w["count"].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0);
    assert_eq!(counts as usize, uplinks, "district windows counted each reading once: {aggregates}");
    assert!(a.terminate(), "clean exit; log {}", a.log.display());
    eprintln!("{uplinks} uplinks through two replicas, one killed: {:.1} s", run.elapsed().as_secs_f64());
}

const DEV_ADDR: u32 = 0x260B_1234;
const NWK: &str = "2B7E151628AED2A6ABF7158809CF4F3C";
const APP: &str = "000102030405060708090A0B0C0D0E0F";

fn frame(f_cnt: u32, gateway: &str, minute: u32) -> Vec<u8> {
    let session = DeviceSession {
        device: "demo-lht65".into(),
        nwk_s_key: SessionKey::parse_hex(NWK).unwrap(),
        app_s_key: SessionKey::parse_hex(APP).unwrap(),
    };
    let phy = build_frame(DEV_ADDR, f_cnt, 2, &hex(LHT65_PAYLOAD), false, &session);
    bridge_json(&phy, gateway, &format!("2025-01-01T{:02}:{:02}:00Z", minute / 60, minute % 60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_frame_reaching_both_replicas_at_once_is_stored_once_and_replays_are_refused() {
    let cluster = pg::Cluster::start();
    let db = cluster.database("frames");
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("pg-frames");
    let keys = dir.path().join("keys.toml");
    write_keys_file(&keys, 0o600, &[(DEV_ADDR, "demo-lht65", NWK, APP)]);
    // Not shared: both replicas get every frame, at the same moment.
    let subscriptions =
        format!("[[mqtt.subscriptions]]\ntopic = \"{}/eu868/gateway/+/event/up\"\nformat = \"lorawan\"\n", topics.prefix);
    let extra = format!("\n[lorawan]\nkeys_file = \"{}\"\n", keys.display());
    let a = Replica::start(dir.path(), "frames-a", broker.port, &db, &subscriptions, &extra).await;
    let b = Replica::start(dir.path(), "frames-b", broker.port, &db, &subscriptions, &extra).await;

    // A device's frames come minutes apart: each is sent once, a moment after the one before.
    const FRAMES: u32 = 40;
    for f in 1..=FRAMES {
        let message = (topics.gateway_bridge("gw-rathaus"), frame(f, "gw-rathaus", f));
        publish_all(broker.port, &format!("{}-pub-{f}", topics.prefix), vec![message]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    settle(&[&a, &b], 2.0 * FRAMES as f64).await;
    let stored: u32 = cluster
        .psql("frames", "SELECT count(*) FROM readings WHERE device = 'demo-lht65' AND quantity = 'air_temperature'")
        .parse()
        .unwrap();
    assert_eq!(stored, FRAMES, "each frame stored once");
    let mut duplicates = 0.0;
    for r in [&a, &b] {
        duplicates += r.metric("messnetz_lorawan_duplicates_total").await.unwrap();
    }
    // Each frame: one replica stored it, the other saw its copy as a duplicate, at once or
    // when its batch, refused because the other replica was first, was decoded again. What
    // decoding gave is counted once the batch is stored, so each frame counts once.
    assert_eq!(duplicates, FRAMES as f64, "duplicates counted for {FRAMES} frames");
    let (mut decoded, mut assessed) = (0.0, 0.0);
    for r in [&a, &b] {
        decoded += r.metric("messnetz_messages_decoded_total").await.unwrap();
        for flag in ["good", "suspect", "bad"] {
            assessed += r.metric(&format!("messnetz_readings_quality_total{{flag=\"{flag}\"}}")).await.unwrap();
        }
    }
    let readings: f64 = cluster.psql("frames", "SELECT count(*) FROM readings").parse().unwrap();
    assert_eq!((decoded, assessed), (FRAMES as f64, readings), "messages decoded, readings assessed");
    assert_eq!(cluster.psql("frames", "SELECT count(*) FROM dead_letters"), "0");

    // An old frame sent again an hour later: a replay for both, stored by neither.
    publish_all(
        broker.port,
        &format!("{}-pub2", topics.prefix),
        vec![(topics.gateway_bridge("gw-dom"), frame(5, "gw-dom", 120))],
    )
    .await;
    settle(&[&a, &b], 2.0 * FRAMES as f64 + 2.0).await;
    assert_eq!(cluster.psql("frames", "SELECT count(*) FROM readings WHERE quantity = 'air_temperature'"), FRAMES.to_string());
    let mut replays = 0.0;
    for r in [&a, &b] {
        replays += r.metric("messnetz_lorawan_replays_total").await.unwrap();
    }
    assert_eq!(replays, 2.0);
    // Both replicas refused the same message: one message, one letter.
    let letters = cluster.psql("frames", "SELECT reason FROM dead_letters");
    assert!(letters.lines().count() == 1 && letters.contains("replayed frame"), "{letters}");
}

/// How long PostgreSQL is down in the outage test (the issue's 30 s).
const OUTAGE: Duration = Duration::from_secs(30);

/// `/readyz` of `r` once it answers 503; the body says why.
async fn not_ready(r: &Replica) -> String {
    let readyz = r.url("/readyz");
    wait_for("/readyz to say the store fails", Duration::from_secs(30), || {
        let readyz = readyz.clone();
        async move {
            let response = reqwest::get(&readyz).await.ok()?;
            let status = response.status().as_u16();
            let body = response.text().await.ok()?;
            (status == 503).then_some(body)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgresql_is_down_for_30_s_nothing_is_acknowledged_and_ingest_resumes_by_itself() {
    let mut cluster = pg::Cluster::start();
    let db = cluster.database("outage");
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("pg-outage");
    // A short keep-alive and a small queue: the queue is full long before the outage ends, and
    // the connection must stay up meanwhile (pings answered, nothing sent again).
    let subscriptions = format!(
        "keep_alive_s = 5\n\n[[mqtt.subscriptions]]\ntopic = \"$share/{p}/{p}/v3/+/devices/+/up\"\nformat = \"ttn-v3\"\n",
        p = topics.prefix
    );
    let small_queue = "\n[ingest]\nqueue_capacity = 16\n";
    let a = Replica::start(dir.path(), "outage-a", broker.port, &db, &subscriptions, small_queue).await;
    let b = Replica::start(dir.path(), "outage-b", broker.port, &db, &subscriptions, small_queue).await;
    const TOTAL: usize = 3_000;
    let mut burst = lht65_burst(&topics, TOTAL);
    let rest = burst.split_off(1_000);
    publish_all(broker.port, &format!("{}-pub1", topics.prefix), burst).await;
    settle(&[&a, &b], 1_000.0).await;

    // The rest comes steadily, 50 a second, before, during and after the outage.
    let (port, prefix) = (broker.port, topics.prefix.clone());
    let publisher = tokio::spawn(async move {
        for (i, chunk) in rest.chunks(50).enumerate() {
            publish_all(port, &format!("{prefix}-pub2-{i}"), chunk.to_vec()).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.stop();
    let down = Instant::now();
    for r in [&a, &b] {
        let why = not_ready(r).await;
        assert!(why.contains("store commits fail") && why.contains("PostgreSQL"), "{why}");
        assert!(!why.contains(pg::PASSWORD), "{why}");
    }
    // A commit under way when the server went is refused too; from now on nothing moves.
    let acked_a = a.metric("messnetz_messages_acked_total").await.unwrap();
    let acked_b = b.metric("messnetz_messages_acked_total").await.unwrap();
    let received =
        a.metric("messnetz_messages_received_total").await.unwrap() + b.metric("messnetz_messages_received_total").await.unwrap();
    while down.elapsed() < OUTAGE {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            a.metric("messnetz_messages_acked_total").await,
            Some(acked_a),
            "replica A acknowledged while PostgreSQL was down"
        );
        assert_eq!(
            b.metric("messnetz_messages_acked_total").await,
            Some(acked_b),
            "replica B acknowledged while PostgreSQL was down"
        );
    }
    for r in [&a, &b] {
        assert_eq!(reqwest::get(r.url("/readyz")).await.unwrap().status().as_u16(), 503, "still not ready after {OUTAGE:?}");
    }
    let received_down =
        a.metric("messnetz_messages_received_total").await.unwrap() + b.metric("messnetz_messages_received_total").await.unwrap();
    assert!(received_down > received, "uplinks kept arriving while PostgreSQL was down ({received} -> {received_down})");

    cluster.resume();
    tokio::time::timeout(Duration::from_secs(300), publisher).await.expect("publisher done in 300 s").unwrap();
    settle(&[&a, &b], TOTAL as f64).await;
    let stored: usize = cluster
        .psql("outage", "SELECT count(*) FROM readings WHERE device = 'demo-lht65' AND quantity = 'air_temperature'")
        .parse()
        .unwrap();
    assert_eq!(stored, TOTAL, "nothing lost, nothing twice; logs:\n{}\n---\n{}", tail(&a.log), tail(&b.log));
    // The replicas fold the rollup journal after the commits (acknowledged by then): wait for
    // the last fold, then the count must be exact.
    let district_day = || -> usize {
        cluster
            .psql(
                "outage",
                "SELECT coalesce(sum(count), 0) FROM rollups WHERE scope = 'z:Altstadt' AND quantity = 'air_temperature' AND interval = 2",
            )
            .parse()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while district_day() < TOTAL && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(district_day(), TOTAL, "each reading counted once in its district's day");
    assert_eq!(cluster.psql("outage", "SELECT count(*) FROM dead_letters"), "0");
    for (name, r) in [("A", &a), ("B", &b)] {
        let connects = r.metric("messnetz_mqtt_connects_total").await;
        assert_eq!(connects, Some(1.0), "replica {name}'s MQTT connection stayed up through the outage; log:\n{}", tail(&r.log));
    }
    for r in [&a, &b] {
        let ready = reqwest::get(r.url("/readyz")).await.unwrap().status().as_u16();
        assert_eq!(ready, 200, "ready again by itself");
    }
}

/// Throughput into PostgreSQL, in one sitting on one machine: the embedded store, one
/// PostgreSQL replica and two replicas behind a shared subscription, each with a fresh store
/// and a durable PostgreSQL (fsync on). Not part of the suite (`--ignored`); run it with
/// `cargo test --release --test postgres_replicas throughput -- --ignored --nocapture`
/// (N = `MESSNETZ_BENCH_N`, default 20,000). Results in BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_embedded_vs_one_and_two_postgres_replicas() {
    let n: usize = std::env::var("MESSNETZ_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let cluster = pg::Cluster::start_durable();
    let broker = Mosquitto::start_private();
    println!("N = {n} TTN uplinks (LHT65), 2 publisher connections waiting for every PUBACK; time until all are acknowledged by the gateway(s)");
    for round in 0..2 {
        // The ceiling: the broker's own QoS 1 delivery of the same burst to a bare subscriber.
        let topics = Topics::new(&format!("bench-broker-{round}"));
        let mut options = rumqttc::MqttOptions::new(format!("{}-sub", topics.prefix), "127.0.0.1", broker.port);
        options.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = rumqttc::AsyncClient::new(options, 1000);
        client.subscribe(format!("{}/v3/+/devices/+/up", topics.prefix), rumqttc::QoS::AtLeastOnce).await.unwrap();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.poll()).await.expect("a SUBACK within 10 s");
            if let rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) = event.expect("the subscriber connects") {
                break;
            }
        }
        let delivered = tokio::spawn(async move {
            let _client = client;
            let mut got = 0;
            while got < n {
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) =
                    events.poll().await.expect("the subscriber stays connected")
                {
                    got += 1;
                }
            }
            Instant::now()
        });
        let messages = lht65_burst(&topics, n);
        let started = Instant::now();
        let published = publish_from(broker.port, &format!("{}-pub", topics.prefix), 2, messages, Duration::from_secs(600)).await;
        assert_eq!(published.acked, n);
        let done = tokio::time::timeout(Duration::from_secs(600), delivered).await.expect("all delivered").unwrap();
        let secs = (done - started).as_secs_f64();
        println!("round {round}: broker to a bare subscriber: {:>8.0} msg/s ({secs:.2} s)", n as f64 / secs);

        // Embedded store (the gateway of tests/common).
        let dir = tempfile::tempdir().unwrap();
        let topics = Topics::new(&format!("bench-emb-{round}"));
        let gw = Gateway::start(broker.port, dir.path(), &topics).await;
        let messages = lht65_burst(&topics, n);
        let started = Instant::now();
        let published = publish_from(broker.port, &format!("{}-pub", topics.prefix), 2, messages, Duration::from_secs(600)).await;
        let done =
            gw.wait_metric("messnetz_messages_acked_total", n as f64, Duration::from_secs(600), Duration::from_secs(30)).await;
        let secs = (done.expect("embedded: all acknowledged") - started).as_secs_f64();
        assert_eq!(published.acked, n);
        let client = reqwest::Client::new();
        let commits = gw.try_metric(&client, "messnetz_store_commit_seconds_count").await.unwrap_or(0.0);
        let commit_s = gw.try_metric(&client, "messnetz_store_commit_seconds_sum").await.unwrap_or(0.0);
        println!(
            "round {round}: embedded store:           {:>8.0} msg/s ({secs:.2} s; {commits} commits, {:.1} messages and {:.1} ms each)",
            n as f64 / secs,
            n as f64 / commits.max(1.0),
            1000.0 * commit_s / commits.max(1.0)
        );
        drop(gw);

        for replicas in [1usize, 2] {
            let db = cluster.database(&format!("bench_{round}_{replicas}"));
            let dir = tempfile::tempdir().unwrap();
            let topics = Topics::new(&format!("bench-pg{replicas}-{round}"));
            let subscriptions = format!(
                "[[mqtt.subscriptions]]\ntopic = \"$share/{p}/{p}/v3/+/devices/+/up\"\nformat = \"ttn-v3\"\n",
                p = topics.prefix
            );
            let mut started_replicas = Vec::new();
            for r in 0..replicas {
                started_replicas
                    .push(Replica::start(dir.path(), &format!("bench-{r}"), broker.port, &db, &subscriptions, "").await);
            }
            let messages = lht65_burst(&topics, n);
            let started = Instant::now();
            let published =
                publish_from(broker.port, &format!("{}-pub", topics.prefix), 2, messages, Duration::from_secs(600)).await;
            assert_eq!(published.acked, n);
            loop {
                let mut acked = 0.0;
                for r in &started_replicas {
                    acked += r.metric("messnetz_messages_acked_total").await.unwrap_or(0.0);
                }
                if acked >= n as f64 {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(600), "postgres x{replicas}: {acked} of {n} acknowledged");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let secs = started.elapsed().as_secs_f64();
            let stored: usize = cluster
                .psql(
                    &format!("bench_{round}_{replicas}"),
                    "SELECT count(*) FROM readings WHERE device = 'demo-lht65' AND quantity = 'air_temperature'",
                )
                .parse()
                .unwrap();
            assert_eq!(stored, n);
            let (mut commits, mut commit_s) = (0.0, 0.0);
            for r in &started_replicas {
                commits += r.metric("messnetz_store_commit_seconds_count").await.unwrap_or(0.0);
                commit_s += r.metric("messnetz_store_commit_seconds_sum").await.unwrap_or(0.0);
            }
            // Transactions the server committed for this database (a statement outside a
            // transaction block is one): the round trips besides the batches' commits. The
            // replicas stop first, so their backends report their counts.
            drop(started_replicas);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            cluster.psql(&format!("bench_{round}_{replicas}"), "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
            let statements = cluster.psql(
                &format!("bench_{round}_{replicas}"),
                "SELECT format('%8s ms %7s calls %9s rows  %s', round(total_exec_time), calls, rows,
                               left(regexp_replace(query, '\\s+', ' ', 'g'), 110))
                 FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                 ORDER BY total_exec_time DESC LIMIT 12",
            );
            let xacts: f64 = cluster
                .psql("postgres", &format!("SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench_{round}_{replicas}'"))
                .parse()
                .unwrap_or(f64::NAN);
            println!(
                "round {round}: postgres, {replicas} replica(s):  {:>8.0} msg/s ({secs:.2} s; {commits} commits, {:.1} messages and {:.1} ms each; {xacts} server transactions, {:.2} per message)",
                n as f64 / secs,
                n as f64 / commits.max(1.0),
                1000.0 * commit_s / commits.max(1.0),
                xacts / n as f64
            );
            println!("  the server's time by statement (pg_stat_statements, top 12):\n{statements}");
        }
    }
}

/// A sensor.community push as its firmware sends it: 21.5 °C and 41.5 % from a BME280.
fn firmware_push(client: &reqwest::Client, url: String, token: &str) -> reqwest::RequestBuilder {
    let body = serde_json::json!({
        "esp8266id": "13463610",
        "software_version": "NRZ-2020-133",
        "sensordatavalues": [
            {"value_type": "BME280_temperature", "value": "21.50"},
            {"value_type": "BME280_humidity", "value": "41.50"}
        ]
    });
    client.post(url).bearer_auth(token).header("X-Sensor", "esp8266-13463610").json(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_sensor_registered_and_approved_through_one_replica_is_known_to_the_other() {
    const ROOT: &str = "replica-citizens-admin-token-0123456789";
    let cluster = pg::Cluster::start();
    let db = cluster.database("citizens");
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("pg-citizens");
    let subscriptions = format!("[[mqtt.subscriptions]]\ntopic = \"{}/v3/+/devices/+/up\"\nformat = \"ttn-v3\"\n", topics.prefix);
    let extra = format!("\n[citizens]\nenabled = true\n{}", admin_section(100, &[("it", ROOT, &["*"])]));
    let a = Replica::start(dir.path(), "citizens-a", broker.port, &db, &subscriptions, &extra).await;
    let b = Replica::start(dir.path(), "citizens-b", broker.port, &db, &subscriptions, &extra).await;
    let client = reqwest::Client::new();

    // Registered through A; its first push goes to B at once.
    let registered: serde_json::Value = client
        .post(a.url("/v1/citizens/sensors"))
        .json(&serde_json::json!({"name": "Balkon Nord", "lat": 48.1372, "lon": 11.5756, "district": "Altstadt"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, token) = (registered["id"].as_str().unwrap().to_owned(), registered["token"].as_str().unwrap().to_owned());
    let answer = firmware_push(&client, b.url("/v1/citizens/push"), &token).send().await.unwrap();
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    assert_eq!(status, 200, "B took the push of a sensor registered through A: {text}\nlog:\n{}", tail(&b.log));
    let stored = cluster.psql(
        "citizens",
        &format!("SELECT string_agg(quantity || '=' || value, ',' ORDER BY quantity) FROM readings WHERE device = '{id}' AND quantity IN ('air_temperature', 'relative_humidity')"),
    );
    assert_eq!(stored, "air_temperature=21.5,relative_humidity=41.5", "both values stored");
    assert_eq!(cluster.psql("citizens", "SELECT count(*) FROM dead_letters"), "0");

    // Not public before approval, on either replica; approved through A, public on B too.
    for r in [&a, &b] {
        let devices = reqwest::get(r.url("/v1/devices")).await.unwrap().text().await.unwrap();
        assert!(!devices.contains(&id), "unapproved sensor listed: {devices}");
    }
    let approved = client.post(a.url(&format!("/v1/admin/citizens/{id}/approve"))).bearer_auth(ROOT).send().await.unwrap();
    assert_eq!(approved.status().as_u16(), 200);
    for r in [&a, &b] {
        let url = r.url("/v1/devices");
        wait_for("the approved sensor listed by both replicas", Duration::from_secs(15), || {
            let (url, id) = (url.clone(), id.clone());
            async move { reqwest::get(&url).await.ok()?.text().await.ok()?.contains(&id).then_some(()) }
        })
        .await;
    }
    let (from_a, from_b) = (
        reqwest::get(a.url("/v1/devices")).await.unwrap().text().await.unwrap(),
        reqwest::get(b.url("/v1/devices")).await.unwrap().text().await.unwrap(),
    );
    assert_eq!(from_a, from_b, "/v1/devices alike on both replicas");
}
