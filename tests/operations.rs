//! Running the gateway for real: a backup taken under load is a consistent snapshot and a
//! restored store answers the API exactly as the original; dead letters are deleted and
//! purged (API and CLI), audited; retention deletes old readings while the gateway runs; the
//! health metrics say what readiness says; the log level and JSON logs are options.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const ROOT: &str = "all-departments-token-0123456789abcd";
const GARTEN: &str = "gartenamt-token-0123456789abcdefghij";

fn admin() -> String {
    admin_section(100, &[("it", ROOT, &["*"]), ("gartenamt-ops", GARTEN, &["Gartenamt"])])
}

async fn send(c: &Client, method: Method, url: String, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut r = c.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    let resp = r.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The CLI against a gateway's configuration.
fn cli(config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_messnetz"))
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run messnetz");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Rows per table as `messnetz backup` prints them.
fn rows(stdout: &str, table: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{table}\t")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no row count of {table} in\n{stdout}"))
}

/// The answers a restored store must give exactly as the original did.
fn answers(gw: &Gateway) -> Vec<String> {
    let window = "from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z";
    vec![
        gw.url("/v1/devices/demo-lht65/latest"),
        gw.url(&format!("/v1/readings?device=demo-lht65&quantity=air_temperature&{window}&limit=10000")),
        gw.url(&format!("/v1/readings?device=demo-lht65&quantity=battery_voltage&{window}&limit=10000")),
        gw.url(&format!("/v1/aggregates?device=demo-lht65&quantity=air_temperature&interval=10m&{window}")),
        gw.url(&format!("/v1/aggregates?district=Altstadt&quantity=air_temperature&interval=1h&{window}")),
        gw.url("/v1/latest?quantity=air_temperature"),
    ]
}

async fn fetch_all(c: &Client, urls: Vec<String>) -> Vec<(StatusCode, String)> {
    let mut out = Vec::new();
    for url in urls {
        let r = c.get(&url).send().await.expect("GET");
        out.push((r.status(), r.text().await.expect("body")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_is_consistent_and_a_restore_answers_the_same() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("ops-backup");
    let (devices, profiles) = own_devices_and_profiles(dir.path());
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, &admin(), &devices, &profiles).await;
    let c = Client::new();
    let backups = tempfile::tempdir().unwrap();

    // Under load: 3000 uplinks published while the CLI asks the running gateway for a backup.
    let n = 3000;
    let (port, client, burst) = (broker.port, format!("{}-pub", topics.prefix), lht65_burst(&topics, n));
    let load = tokio::spawn(async move { publish_all(port, &client, burst).await });
    wait_for("ingest under way", Duration::from_secs(30), || async {
        (gw.metric("messnetz_readings_stored_total").await > 600.0).then_some(())
    })
    .await;
    let under_load = backups.path().join("under-load.redb");
    let (config, file) = (gw.config.clone(), under_load.clone());
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || cli(&config, &["backup", file.to_str().unwrap()], &[("MESSNETZ_ADMIN_TOKEN", ROOT)]))
            .await
            .unwrap();
    assert!(ok, "backup under load failed: {err}");
    load.await.unwrap();
    // Consistent: whole messages only (each LHT65 uplink stores 6 readings in one commit),
    // and the district rollups hold exactly the snapshot's readings.
    let stored = rows(&out, "readings");
    assert!(stored > 0 && stored % 6 == 0, "a snapshot holds whole messages: {stored} readings\n{out}");

    // Everything stored: a second backup, restored into a second gateway's store.
    wait_for("all readings stored", Duration::from_secs(60), || async {
        (gw.metric("messnetz_readings_stored_total").await >= (n * 6) as f64).then_some(())
    })
    .await;
    let idle = backups.path().join("idle.redb");
    let (config, file) = (gw.config.clone(), idle.clone());
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || cli(&config, &["backup", file.to_str().unwrap()], &[("MESSNETZ_ADMIN_TOKEN", ROOT)]))
            .await
            .unwrap();
    assert!(ok, "{err}");
    assert_eq!(rows(&out, "readings"), (n * 6) as u64, "{out}");
    let audit = std::fs::read_to_string(gw.data.join("audit.log")).unwrap();
    assert!(audit.lines().any(|l| l.contains("\"action\":\"backup\"") && l.contains("\"who\":\"it\"")), "{audit}");

    // A department's token may not take one: the snapshot holds every department's data.
    let (status, _) = send(&c, Method::POST, gw.url("/v1/admin/backup"), GARTEN, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Restore refuses a store in use, then takes into a stopped one.
    let (config, file) = (gw.config.clone(), idle.clone());
    let (ok, _, err) =
        tokio::task::spawn_blocking(move || cli(&config, &["restore", file.to_str().unwrap()], &[])).await.unwrap();
    assert!(!ok && err.contains("stop the gateway"), "{err}");
    let dir2 = tempfile::tempdir().unwrap();
    let data2 = dir2.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_messnetz"))
        .args(["restore", idle.to_str().unwrap()])
        .env("MESSNETZ__STORE__PATH", &data2)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let topics2 = Topics::new("ops-restored");
    let restored = Gateway::start_with_profiles(broker.port, dir2.path(), &topics2, &admin(), &devices, &profiles).await;
    let original = fetch_all(&c, answers(&gw)).await;
    let again = fetch_all(&c, answers(&restored)).await;
    for ((url, a), b) in answers(&gw).iter().zip(&original).zip(&again) {
        assert_eq!(a.0, StatusCode::OK, "{url}: {}", a.1);
        assert_eq!(a, b, "{url} answers differently after the restore");
    }
    assert!(original[1].1.contains("28.29"), "the readings are there: {}", original[1].1);

    // A file that is no backup is refused and the store is left alone.
    let junk = backups.path().join("junk.redb");
    std::fs::write(&junk, b"no database").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_messnetz"))
        .args(["restore", junk.to_str().unwrap()])
        .env("MESSNETZ__STORE__PATH", dir.path().join("elsewhere"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a messnetz store"));
}

#[tokio::test]
async fn dead_letters_are_deleted_and_purged_through_the_api_and_the_cli_and_audited() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("ops-dead");
    let (devices, profiles) = own_devices_and_profiles(dir.path());
    let mut gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, &admin(), &devices, &profiles).await;
    let c = Client::new();

    // Five letters: three of no known device, two of Gartenamt's park sensor (broken payload).
    let mut messages = Vec::new();
    for i in 0..3 {
        messages.push((topics.ttn("stranger"), ttn_uplink("stranger", "A8404100000000F0", i + 1, "00", "2026-11-20T10:00:00Z")));
    }
    for i in 0..2 {
        messages.push((
            topics.chirpstack("A840410000000002"),
            chirpstack_uplink("A840410000000002", i + 1, "00", "2026-11-20T10:00:00Z"),
        ));
    }
    publish_all(broker.port, &format!("{}-pub", topics.prefix), messages).await;
    wait_for("5 dead letters", Duration::from_secs(20), || async {
        (gw.metric("messnetz_dead_letters_total").await >= 5.0).then_some(())
    })
    .await;
    let metrics = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("messnetz_dead_letters_by_reason_total{reason=\"unknown_device\"} 3"), "{metrics}");
    assert!(metrics.contains("messnetz_dead_letters_by_reason_total{reason=\"decode\"} 2"), "{metrics}");

    let (_, all) = send(&c, Method::GET, gw.url("/v1/admin/dead-letters"), ROOT, None).await;
    let ids: Vec<u64> = all["dead_letters"].as_array().unwrap().iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 5, "{all}");
    let (_, park) = send(&c, Method::GET, gw.url("/v1/admin/dead-letters"), GARTEN, None).await;
    let park: Vec<u64> = park["dead_letters"].as_array().unwrap().iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert_eq!(park.len(), 2);
    let stranger = *ids.iter().find(|id| !park.contains(id)).unwrap();

    // One deleted: a department can't delete another's (404, as if unknown); then it's gone.
    let (status, _) = send(&c, Method::DELETE, gw.url(&format!("/v1/admin/dead-letters/{stranger}")), GARTEN, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = send(&c, Method::DELETE, gw.url(&format!("/v1/admin/dead-letters/{stranger}")), ROOT, None).await;
    assert_eq!((status, body["deleted"].as_bool()), (StatusCode::OK, Some(true)), "{body}");
    let (status, _) = send(&c, Method::GET, gw.url(&format!("/v1/admin/dead-letters/{stranger}")), ROOT, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&c, Method::DELETE, gw.url(&format!("/v1/admin/dead-letters/{stranger}")), ROOT, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a second delete finds nothing");

    // Purge by filter: Gartenamt's `all` covers its own letters only.
    let (status, body) = send(&c, Method::POST, gw.url("/v1/admin/dead-letters/purge"), GARTEN, Some(json!({"all": true}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deleted"], 2, "{body}");
    let (status, body) = send(&c, Method::POST, gw.url("/v1/admin/dead-letters/purge"), ROOT, Some(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an empty selection purges nothing: {body}");
    let (_, left) = send(&c, Method::GET, gw.url("/v1/admin/dead-letters"), ROOT, None).await;
    assert_eq!(left["dead_letters"].as_array().unwrap().len(), 2, "{left}");

    let audit = std::fs::read_to_string(gw.data.join("audit.log")).unwrap();
    let changes: Vec<Value> =
        audit.lines().map(|l| serde_json::from_str(l).unwrap()).filter(|e: &Value| e["outcome"] != "attempt").collect();
    assert!(
        changes.iter().any(|e| e["action"] == "dead_letter.delete"
            && e["target"].as_str() == Some(stranger.to_string().as_str())
            && e["who"] == "it"),
        "{audit}"
    );
    assert!(
        changes
            .iter()
            .any(|e| e["action"] == "dead_letter.purge" && e["who"] == "gartenamt-ops" && e["detail"]["deleted"] == json!(park)),
        "{audit}"
    );

    // The CLI, with the gateway stopped: purge by reason, then a delete of an id that's gone.
    gw.terminate();
    let (ok, out, err) = cli(&gw.config, &["dead-letters", "purge", "--reason", "UNKNOWN DEVICE"], &[]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().filter(|l| l.ends_with("\tdeleted")).count(), 2, "{out}");
    let (ok, out, _) = cli(&gw.config, &["dead-letters", "delete", &stranger.to_string()], &[]);
    assert!(!ok && out.contains("gone"), "{out}");
    let (ok, _, err) = cli(&gw.config, &["dead-letters", "purge"], &[]);
    assert!(!ok && err.contains("--all"), "a purge needs a selection: {err}");
    let (_, out, _) = cli(&gw.config, &["dead-letters", "list"], &[]);
    assert_eq!(out.trim(), "", "{out}");
    let audit = std::fs::read_to_string(gw.data.join("audit.log")).unwrap();
    assert!(audit.lines().any(|l| l.contains("\"who\":\"cli\"") && l.contains("dead_letter.purge")), "{audit}");
}

#[tokio::test]
async fn retention_deletes_old_readings_while_the_gateway_runs_and_keeps_recent_ones() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("ops-retention");
    let (devices, profiles) = own_devices_and_profiles(dir.path());
    let retention = "\n[retention]\ninterval_s = 1\nchunk_rows = 50\nchunk_pause_ms = 1\n[retention.readings]\nopen_days = 30\n[retention.readings.quantities]\nbattery_voltage = 1\n";
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, retention, &devices, &profiles).await;
    // 200 uplinks from January 2025 (long past 30 days), and two from an hour and two days ago.
    let mut messages = lht65_burst(&topics, 200);
    let recent = |hours: i64, f_cnt: u32| {
        let at = (chrono::Utc::now() - chrono::Duration::hours(hours)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", f_cnt, LHT65_PAYLOAD, &at))
    };
    messages.push(recent(48, 1000));
    messages.push(recent(1, 1001));
    publish_all(broker.port, &format!("{}-pub", topics.prefix), messages).await;
    // Old readings: 200 x 6; of the recent ones, the battery voltage of two days ago (1-day rule).
    let expected = (200 * 6 + 1) as f64;
    wait_for("retention to delete the old readings", Duration::from_secs(60), || async {
        (gw.metric("messnetz_retention_readings_deleted_total").await >= expected).then_some(())
    })
    .await;
    assert_eq!(gw.metric("messnetz_retention_readings_deleted_total").await, expected);
    let latest: Value = reqwest::get(gw.url("/v1/devices/demo-lht65/latest")).await.unwrap().json().await.unwrap();
    assert_eq!(latest["readings"].as_array().map(Vec::len), Some(6), "the recent readings stay: {latest}");
    let from = (chrono::Utc::now() - chrono::Duration::days(5)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let url = gw.url(&format!("/v1/readings?device=demo-lht65&quantity=air_temperature&from={from}"));
    let series: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(series["readings"].as_array().map(Vec::len), Some(2), "{series}");
    let old = gw.url("/v1/readings?device=demo-lht65&quantity=air_temperature&from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z");
    let old: Value = reqwest::get(old).await.unwrap().json().await.unwrap();
    assert_eq!(old["readings"], json!([]), "{old}");
    // The district's rollups of January 2025 are kept (rollups_days = 0: for ever).
    let agg = gw.url(
        "/v1/aggregates?district=Altstadt&quantity=air_temperature&interval=1d&from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z",
    );
    let agg: Value = reqwest::get(agg).await.unwrap().json().await.unwrap();
    assert!(agg.to_string().contains("\"count\":200"), "rollups outlive their readings: {agg}");
    assert!(gw.metric("messnetz_retention_passes_total").await >= 1.0);
}

#[tokio::test]
async fn the_health_metrics_follow_the_broker_connection_and_name_the_build() {
    let mut broker = Mosquitto::start_private();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("ops-metrics");
    let gw = Gateway::start(broker.port, dir.path(), &topics).await;
    let text = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    for name in [
        "messnetz_mqtt_connected 1",
        "messnetz_ingest_queue_messages 0",
        "messnetz_ingest_queue_capacity_messages 16384",
        "messnetz_ingest_batch_messages_count",
        "messnetz_influx_spool_oldest_age_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(text.contains(&format!("messnetz_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))), "{text}");
    broker.stop();
    wait_for("messnetz_mqtt_connected to drop to 0", Duration::from_secs(20), || async {
        (gw.metric("messnetz_mqtt_connected").await == 0.0).then_some(())
    })
    .await;
    assert_eq!(reqwest::get(gw.url("/readyz")).await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    let health = reqwest::get(gw.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the process lives");
    let health: Value = health.json().await.unwrap();
    assert_eq!(
        (health["status"].as_str(), health["version"].as_str()),
        (Some("ok"), Some(env!("CARGO_PKG_VERSION"))),
        "{health}"
    );
}

#[test]
fn the_log_level_and_json_logs_are_options() {
    let dir = tempfile::tempdir().unwrap();
    let (api, mqtt) = (free_port(), free_port());
    let mut gw = Command::new(env!("CARGO_BIN_EXE_messnetz"))
        .args(["--log-format", "json", "--log-level", "debug"])
        .current_dir(MANIFEST_DIR)
        .env("MESSNETZ__STORE__PATH", dir.path())
        .env("MESSNETZ__API__LISTEN", format!("127.0.0.1:{api}"))
        .env("MESSNETZ__BROKER__LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("RUST_LOG", "error")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = gw.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr).lines().map_while(Result::ok).take(3).collect::<Vec<_>>()
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !lines.is_finished() {
        assert!(std::time::Instant::now() < deadline, "no log lines in 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = gw.kill();
    let _ = gw.wait();
    let lines = lines.join().unwrap();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string() && v["timestamp"].is_string(), "{line}");
    }
    // --log-level beats RUST_LOG=error: info lines are there.
    assert!(lines.iter().any(|l| l.contains("\"INFO\"")), "{lines:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_messnetz")).args(["--log-level", "messnetz=loud"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-level"));
}
