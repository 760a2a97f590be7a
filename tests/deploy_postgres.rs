//! The PostgreSQL deployment (deploy/postgres/) runs as its files say, without a container engine: its init script makes Grafana's read-only login, two replicas start at once through the container's entrypoint with the shipped configuration and lay out one shared device list, both pick up a device added to it, share the uplinks of one `$share` subscription and answer alike, and every query of the shipped dashboard runs as Grafana's login, which can read nothing else.
//!
//! What containers would do is done by hand: the paths the compose file mounts
//! (`/srv/messnetz`, `/var/lib/messnetz`) become directories of the test, the host names
//! (`mosquitto`, `postgres`) loopback ports, through the same `MESSNETZ__…` variables.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const DASHBOARD_PASSWORD: &str = "grafana-pw-3c1e-not-printed";
const DB: &str = "city";

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{MANIFEST_DIR}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One replica as compose starts it: the entrypoint, the shipped messnetz.toml, its own
/// `/var/lib/messnetz`, the shared `/srv/messnetz`.
struct Replica {
    child: Child,
    http: String,
    log: PathBuf,
}

impl Replica {
    fn spawn(root: &Path, name: &str, shared: &Path, mqtt_port: u16, db_url: &str) -> Self {
        let own = root.join(name).join("var-lib-messnetz");
        std::fs::create_dir_all(&own).unwrap();
        let config = root.join(name).join("messnetz.toml");
        let text = read("deploy/postgres/messnetz.toml")
            .replace("/srv/messnetz", &shared.display().to_string())
            .replace("/var/lib/messnetz", &own.display().to_string());
        std::fs::write(&config, text).unwrap();
        let port = free_port();
        let log = root.join(name).join("log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("sh")
            .arg(format!("{MANIFEST_DIR}/deploy/container/entrypoint.sh"))
            .arg("--config")
            .arg(&config)
            .env("MESSNETZ_LAYOUT_DIR", shared)
            .env("MESSNETZ_BUNDLED_PROFILES", bundled_profiles())
            .env("MESSNETZ_BIN", env!("CARGO_BIN_EXE_messnetz"))
            .env("MESSNETZ__MQTT__HOST", "127.0.0.1")
            .env("MESSNETZ__MQTT__PORT", mqtt_port.to_string())
            .env("MESSNETZ__MQTT__CLIENT_ID", format!("messnetz-{name}-{}", std::process::id()))
            .env("MESSNETZ__API__LISTEN", format!("127.0.0.1:{port}"))
            .env("MESSNETZ__STORE__URL", db_url)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("run the entrypoint");
        Self { child, http: format!("http://127.0.0.1:{port}"), log }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        match reqwest::get(format!("{}{path}", self.http)).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    async fn acked(&self) -> f64 {
        let (_, text) = self.get("/metrics").await;
        metric(&text, "messnetz_messages_acked_total").unwrap_or(0.0)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// psql as Grafana's login; `Err` carries psql's error.
fn as_dashboard(cluster: &pg::Cluster, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-U", "grafana_reader", "-d", DB])
        .args(["-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", DASHBOARD_PASSWORD)
        .output()
        .expect("run psql");
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// Grafana's PostgreSQL macros and the dashboard's variable, expanded as Grafana does for the
/// range `from`..`to`: `$__timeFilter(c)` is `c BETWEEN from AND to`, `$__timeGroupAlias(c, 'i')`
/// the epoch floored to the interval, named "time".
fn expand(sql: &str, quantity: &str, from: &str, to: &str) -> String {
    let mut out = sql.replace("$quantity", quantity);
    while let Some(start) = out.find("$__timeFilter(") {
        let end = start + out[start..].find(')').expect("closing parenthesis");
        let column = out[start + "$__timeFilter(".len()..end].trim().to_owned();
        out.replace_range(start..=end, &format!("{column} BETWEEN '{from}' AND '{to}'"));
    }
    while let Some(start) = out.find("$__timeGroupAlias(") {
        let end = start + out[start..].find(')').expect("closing parenthesis");
        let args: Vec<String> =
            out[start + "$__timeGroupAlias(".len()..end].split(',').map(|a| a.trim().trim_matches('\'').to_owned()).collect();
        let seconds = match args[1].as_str() {
            "1m" => 60,
            "10m" => 600,
            "1h" => 3600,
            "1d" => 86_400,
            other => panic!("interval {other} not known to this test"),
        };
        let column = &args[0];
        out.replace_range(start..=end, &format!("floor(extract(epoch from {column})/{seconds})*{seconds} AS \"time\""));
    }
    out
}

/// Every rawSql of the shipped dashboard (panels and the variable's query).
fn dashboard_queries() -> (String, Vec<(String, String)>) {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/postgres/grafana/dashboards/messnetz.json")).expect("the dashboard is JSON");
    let variable = dashboard["templating"]["list"][0]["query"].as_str().expect("the quantity variable's query").to_owned();
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(sql) = target["rawSql"].as_str() {
                panels.push((panel["title"].as_str().unwrap_or("?").to_owned(), sql.to_owned()));
            }
        }
    }
    (variable, panels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_deployment_runs_as_its_files_say() {
    // The files agree with each other.
    let compose = read("deploy/postgres/compose.yaml");
    let datasource = read("deploy/postgres/grafana/provisioning/datasources/postgres.yaml");
    assert!(compose.contains("./initdb:/docker-entrypoint-initdb.d:ro"), "the init script is mounted");
    for replica in ["messnetz-a", "messnetz-b"] {
        assert!(compose.contains(&format!("{replica}-data:/var/lib/messnetz")), "{replica} has its own state volume");
    }
    assert_eq!(compose.matches("- shared:/srv/messnetz").count(), 2, "both replicas mount the shared volume");
    assert!(compose.contains("MESSNETZ_LAYOUT_DIR: /srv/messnetz"));
    assert!(read("deploy/Containerfile").contains("chown messnetz:messnetz /var/lib/messnetz /srv/messnetz"));
    assert!(datasource.contains("user: grafana_reader") && datasource.contains("$GRAFANA_DB_PASSWORD"), "{datasource}");
    assert!(!datasource.contains("MESSNETZ_DB_PASSWORD"), "Grafana never gets the owner's password");
    assert!(read("deploy/postgres/messnetz.toml").contains("dashboard_role = \"grafana_reader\""));

    // The database as the postgres image leaves it: the init script run once by its owner.
    let cluster = pg::Cluster::start();
    let db_url = cluster.database(DB);
    let init = Command::new("sh")
        .arg(format!("{MANIFEST_DIR}/deploy/postgres/initdb/10-dashboard-role.sh"))
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", cluster.port.to_string())
        .env("PGPASSWORD", pg::PASSWORD)
        .env("POSTGRES_USER", pg::USER)
        .env("POSTGRES_DB", DB)
        .env("GRAFANA_DB_PASSWORD", DASHBOARD_PASSWORD)
        .stdout(Stdio::null())
        .output()
        .expect("run the init script");
    assert!(init.status.success(), "init script: {}", String::from_utf8_lossy(&init.stderr));
    assert!(as_dashboard(&cluster, "SELECT 1").is_ok(), "Grafana's login works");

    // Two replicas started at the same moment, as compose does.
    let broker = Mosquitto::start_private();
    let root = tempfile::tempdir().unwrap();
    let shared = root.path().join("srv-messnetz");
    std::fs::create_dir_all(&shared).unwrap();
    let a = Replica::spawn(root.path(), "a", &shared, broker.port, &db_url);
    let b = Replica::spawn(root.path(), "b", &shared, broker.port, &db_url);
    for r in [&a, &b] {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while r.get("/readyz").await.0 != 200 {
            assert!(std::time::Instant::now() < deadline, "a replica not ready in 60 s; log:\n{}", r.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // One layout in the shared volume, whoever was first.
    let mut laid_out: Vec<String> =
        std::fs::read_dir(&shared).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    laid_out.sort();
    assert_eq!(laid_out, ["devices.toml", "profiles"], "nothing half-made or doubled in the shared volume");
    let names = |dir: &Path| {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&shared.join("profiles")), names(&bundled_profiles()), "the bundled profiles, once");

    // A device added to the shared list by hand is picked up by both.
    let demo = read("demo/devices.toml");
    let first = demo.find("\n[[device]]").expect("a device block");
    let lht65 = &demo[first..first + 1 + demo[first + 1..].find("\n[[device]]").expect("a second block")];
    let devices = shared.join("devices.toml");
    let mut text = std::fs::read_to_string(&devices).unwrap();
    text.push_str(lht65);
    std::fs::write(&devices, text).unwrap();
    for r in [&a, &b] {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !r.get("/v1/devices").await.1.contains("demo-lht65") {
            assert!(std::time::Instant::now() < deadline, "the added device not listed in 30 s; log:\n{}", r.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Uplinks through the shipped shared subscription.
    const N: usize = 300;
    let topic = "v3/city@ttn/devices/demo-lht65/up".to_owned();
    let messages: Vec<(String, Vec<u8>)> =
        lht65_burst(&Topics::new("deploy-pg"), N).into_iter().map(|(_, payload)| (topic.clone(), payload)).collect();
    publish_all(broker.port, "deploy-pg-pub", messages).await;
    wait_for("all uplinks acknowledged by the two replicas", Duration::from_secs(120), || async {
        (a.acked().await + b.acked().await >= N as f64).then_some(())
    })
    .await;
    let (acked_a, acked_b) = (a.acked().await, b.acked().await);
    assert!(acked_a > 0.0 && acked_b > 0.0, "the broker shared the uplinks: {acked_a} + {acked_b}");
    let stored = cluster.psql(DB, "SELECT count(*) FROM readings WHERE device = 'demo-lht65' AND quantity = 'air_temperature'");
    assert_eq!(stored, N.to_string(), "each uplink stored once; logs:\n{}\n{}", a.log_text(), b.log_text());
    for path in [
        "/v1/devices",
        "/v1/readings?device=demo-lht65&quantity=air_temperature&from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z",
        "/v1/aggregates?district=Altstadt&quantity=air_temperature&interval=1h&from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z",
    ] {
        let (from_a, from_b) = (a.get(path).await, b.get(path).await);
        assert_eq!(from_a.0, 200, "{path}: {}", from_a.1);
        assert_eq!(from_a, from_b, "{path}: both replicas answer alike");
    }

    // Every query of the dashboard answers, as Grafana's login, over the uplinks' hour.
    let (variable, panels) = dashboard_queries();
    // The windows are folded in from their journal every store.window_flush_ms (5 s): the
    // dashboard shows them that much later.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let quantities = as_dashboard(&cluster, &variable).unwrap_or_else(|e| panic!("the variable's query: {e}"));
        if quantities.lines().any(|q| q == "air_temperature") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no air_temperature windows folded in 30 s: {quantities}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(panels.len() >= 3, "{panels:?}");
    for (title, sql) in &panels {
        let sql = expand(sql, "air_temperature", "2025-01-01T00:00:00Z", "2025-01-01T01:00:00Z");
        let rows = as_dashboard(&cluster, &sql).unwrap_or_else(|e| panic!("panel {title}: {e}\n{sql}"));
        assert!(!rows.is_empty(), "panel {title} shows nothing:\n{sql}");
    }

    // ... and nothing beyond what dashboards show.
    for sql in [
        "SELECT count(*) FROM dead_letters",
        "SELECT count(*) FROM citizen_sensors",
        "SELECT count(*) FROM frame_counters",
        "SELECT count(*) FROM outbox",
        "DELETE FROM readings",
        "INSERT INTO last_seen VALUES ('x', now())",
    ] {
        let refused = as_dashboard(&cluster, sql).expect_err(sql);
        assert!(refused.contains("permission denied"), "{sql}: {refused}");
    }
    drop((a, b));

    // A dashboard role that the database does not have stops the start with the setting's name.
    let out = Command::new(env!("CARGO_BIN_EXE_messnetz"))
        .args(["--config", &root.path().join("a").join("messnetz.toml").display().to_string()])
        .env("MESSNETZ__MQTT__HOST", "127.0.0.1")
        .env("MESSNETZ__MQTT__PORT", broker.port.to_string())
        .env("MESSNETZ__API__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("MESSNETZ__STORE__URL", &db_url)
        .env("MESSNETZ__STORE__DASHBOARD_ROLE", "no_such_role")
        .output()
        .expect("run messnetz");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("store.dashboard_role") && stderr.contains("no_such_role"), "{stderr}");
    assert!(!stderr.contains(pg::PASSWORD), "{stderr}");
}
