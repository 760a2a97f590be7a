//! The shipped deployment files do what they say: the systemd unit verifies and rates at most
//! 2.0 in `systemd-analyze security`; an operator API change is written under the unit's write
//! rules (only the state directory writable); the container and compose files keep their
//! promises; every metric the alert rules and the dashboard use is served.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const UNIT: &str = "deploy/messnetz.service";
const TOKEN: &str = "deploy-test-token-0123456789abcdefgh";

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{MANIFEST_DIR}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `systemd-analyze`, or `None` where it is missing outside CI (scripts/test installs it).
fn systemd_analyze() -> Option<PathBuf> {
    let found = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].into_iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "systemd-analyze is missing in CI: scripts/test installs the systemd package");
        eprintln!("skipped: systemd-analyze is not installed (scripts/test installs it)");
    }
    found
}

/// The unit with its binary path pointing at this build, as `messnetz.service` in `dir`.
fn unit_for_this_build(dir: &Path) -> PathBuf {
    let path = dir.join("messnetz.service");
    std::fs::write(&path, read(UNIT).replace("/usr/local/bin/messnetz", env!("CARGO_BIN_EXE_messnetz"))).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_rates_at_most_2_0_exposed() {
    let Some(analyze) = systemd_analyze() else { return };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let out = Command::new(&analyze).arg("verify").arg(&unit).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(!stderr.contains("messnetz.service"), "verify complains about the unit: {stderr}");

    let out = Command::new(&analyze).args(["security", "--offline=true"]).arg(&unit).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for messnetz.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in\n{text}{}", String::from_utf8_lossy(&out.stderr)));
    assert!(level <= 2.0, "systemd-analyze security rates the unit {level}, above 2.0:\n{text}");
    // The same through systemd's own threshold (exit status non-zero above it).
    let status =
        Command::new(&analyze).args(["security", "--offline=true", "--threshold=20"]).arg(&unit).output().unwrap().status;
    assert!(status.success());
}

/// Paths the unit lets the service write: `ReadWritePaths=` and the `StateDirectory=`.
fn writable_paths(unit: &str) -> Vec<PathBuf> {
    assert!(unit.lines().any(|l| l.trim() == "ProtectSystem=strict"), "the unit keeps the file system read-only");
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        if let Some(v) = line.strip_prefix("ReadWritePaths=") {
            out.extend(v.split_whitespace().map(PathBuf::from));
        }
        if let Some(v) = line.strip_prefix("StateDirectory=") {
            out.extend(v.split_whitespace().map(|d| Path::new("/var/lib").join(d)));
        }
    }
    out
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the binary on `config` as a user for whom only `state` is writable: as root,
/// `nobody` (root ignores file modes), else the current user.
fn start_confined(config: &Path, log: &Path, env: &[(String, String)]) -> Running {
    let root = nix_is_root();
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(env!("CARGO_BIN_EXE_messnetz"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_messnetz"))
    };
    let out = std::fs::File::create(log).unwrap();
    cmd.arg("--config").arg(config).envs(env.iter().map(|(k, v)| (k, v))).stdout(Stdio::null()).stderr(out);
    Running(cmd.spawn().expect("start messnetz"))
}

fn nix_is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Lay out /etc/messnetz (read-only) and /var/lib/messnetz (the service's own) under `root`,
/// with the deploy configuration pointed there; the devices file is where `devices_in` says.
fn lay_out(root: &Path, devices_in_etc: bool) -> (PathBuf, PathBuf, PathBuf) {
    let etc = root.join("etc/messnetz");
    let state = root.join("var/lib/messnetz");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let mut config = read("deploy/messnetz.toml").replace("/var/lib/messnetz", state.to_str().unwrap());
    let (devices, profiles) = own_devices_and_profiles(&state);
    std::fs::rename(&profiles, state.join("profiles")).unwrap();
    let devices = if devices_in_etc {
        // The layout of old releases: the editable files in the read-only /etc/messnetz.
        let moved = etc.join("devices.toml");
        std::fs::rename(&devices, &moved).unwrap();
        config = config.replace(state.join("devices.toml").to_str().unwrap(), moved.to_str().unwrap());
        moved
    } else {
        devices
    };
    config.push_str(&admin_section(100, &[("it", TOKEN, &["*"])]));
    let config_file = etc.join("messnetz.toml");
    std::fs::write(&config_file, config).unwrap();
    for dir in [root.to_path_buf(), root.join("etc"), root.join("var"), root.join("var/lib")] {
        chmod(&dir, 0o755);
    }
    chmod(&config_file, 0o444);
    if devices_in_etc {
        chmod(&devices, 0o444);
    }
    chmod(&etc, 0o555);
    if nix_is_root() {
        let status = Command::new("chown").args(["-R", "65534:65534"]).arg(&state).status().unwrap();
        assert!(status.success());
    }
    (config_file, state, devices)
}

async fn add_device(http: &str) -> reqwest::StatusCode {
    let device = serde_json::json!({
        "id": "unit-test-device", "name": "Written under the unit's rules", "profile": "dragino-lht65",
        "dev_eui": "A8404100000000D1", "lat": 48.1, "lon": 11.6, "district": "Altstadt", "owner": "Umweltamt",
        "licence": "dl-by-de/2.0", "visibility": "open"
    });
    let r = reqwest::Client::new()
        .post(format!("{http}/v1/admin/devices"))
        .bearer_auth(TOKEN)
        .body(device.to_string())
        .send()
        .await
        .expect("POST device");
    r.status()
}

async fn run_and_add_device(devices_in_etc: bool) -> (reqwest::StatusCode, String, String) {
    let broker = Mosquitto::start();
    let root = tempfile::tempdir().unwrap();
    let (config, state, devices) = lay_out(root.path(), devices_in_etc);
    let api = free_port();
    let env = vec![
        ("MESSNETZ__MQTT__PORT".to_owned(), broker.port.to_string()),
        ("MESSNETZ__MQTT__CLIENT_ID".to_owned(), format!("deploy-unit-{}", std::process::id())),
        ("MESSNETZ__API__LISTEN".to_owned(), format!("127.0.0.1:{api}")),
    ];
    let log = root.path().join("gateway.log");
    let _gw = start_confined(&config, &log, &env);
    let http = format!("http://127.0.0.1:{api}");
    let client = reqwest::Client::new();
    let what = format!("the confined gateway to be ready (log: {})", std::fs::read_to_string(&log).unwrap_or_default());
    wait_for(&what, Duration::from_secs(30), || {
        let (client, url) = (client.clone(), format!("{http}/readyz"));
        async move { client.get(url).send().await.ok()?.status().is_success().then_some(()) }
    })
    .await;
    let status = add_device(&http).await;
    let text = std::fs::read_to_string(&devices).unwrap();
    assert!(state.join("data/audit.log").exists(), "the audit log is written in the state directory");
    (status, text, std::fs::read_to_string(&log).unwrap_or_default())
}

#[tokio::test]
async fn an_admin_device_change_is_written_under_the_units_write_rules() {
    // Every path the gateway writes is one the unit allows.
    let writable = writable_paths(&read(UNIT));
    let settings = messnetz::config::load(Some(Path::new(&format!("{MANIFEST_DIR}/deploy/messnetz.toml")))).unwrap();
    for (key, path) in [
        ("store.path", settings.store.path.clone()),
        ("devices.file", settings.devices.file.clone()),
        ("profiles.dir", settings.profiles.dir.clone()),
        ("admin.audit_log", settings.admin.audit_log_path(&settings.store)),
    ] {
        assert!(
            writable.iter().any(|w| path.starts_with(w)),
            "{key} = {} is not writable under the unit ({writable:?})",
            path.display()
        );
    }

    // For real, with the file modes standing in for the unit's read-only /etc: the old layout
    // (devices file in /etc/messnetz) fails, the shipped one works.
    let (status, text, log) = run_and_add_device(true).await;
    assert!(!status.is_success(), "the emulation must refuse a write in /etc/messnetz ({status})\n{log}");
    assert!(!text.contains("unit-test-device"));
    let (status, text, log) = run_and_add_device(false).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{log}");
    assert!(text.contains("id = \"unit-test-device\""), "{text}");
}

/// The lines of one service of the compose file, up to the next top-level or service line.
fn service<'a>(compose: &'a str, name: &str) -> &'a str {
    let start = compose.find(&format!("\n  {name}:\n")).unwrap_or_else(|| panic!("no service {name}")) + 1;
    let body = &compose[start..];
    let mut end = body.len();
    let mut offset = body.find('\n').map_or(body.len(), |i| i + 1);
    for line in body[offset.min(body.len())..].split_inclusive('\n') {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if !line.trim().is_empty() && indent <= 2 {
            end = offset;
            break;
        }
        offset += line.len();
    }
    &body[..end]
}

#[test]
fn the_container_and_compose_files_keep_their_promises() {
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "the build context leaves target/ out");
    let containerfile = read("deploy/Containerfile");
    assert!(containerfile.contains("\nUSER messnetz\n"), "runs as a user of its own");
    assert!(containerfile.contains("strip "), "the binary is stripped");
    assert!(containerfile.contains("VOLUME /var/lib/messnetz"));
    assert!(!containerfile.contains("demo/"), "no demo devices baked in");
    let config = messnetz::config::load(Some(Path::new(&format!("{MANIFEST_DIR}/deploy/container/messnetz.toml")))).unwrap();
    for path in [&config.store.path, &config.devices.file, &config.profiles.dir] {
        assert!(path.starts_with("/var/lib/messnetz"), "{} is outside the volume", path.display());
    }

    let compose = read("deploy/compose.yaml");
    for name in ["mosquitto", "influxdb", "messnetz", "prometheus", "grafana"] {
        let s = service(&compose, name);
        assert!(s.contains("restart: unless-stopped"), "{name} has no restart policy:\n{s}");
        assert!(s.contains("healthcheck:"), "{name} has no healthcheck:\n{s}");
    }
    let messnetz = service(&compose, "messnetz");
    assert!(messnetz.contains("/readyz"), "the gateway's healthcheck asks /readyz:\n{messnetz}");
    // The InfluxDB admin token goes to InfluxDB only; messnetz and Grafana get their own.
    for name in ["messnetz", "grafana"] {
        assert!(!service(&compose, name).contains("ADMIN_TOKEN"), "{name} must not get the admin token");
    }
    let compose_config = messnetz::config::load(Some(Path::new(&format!("{MANIFEST_DIR}/deploy/compose/messnetz.toml"))));
    // The token file exists only inside the compose set-up: loading here fails on exactly it.
    let errors = compose_config.unwrap_err().to_string();
    assert!(errors.contains("influxdb.token_file") && errors.contains("/run/influx-tokens/messnetz"), "{errors}");
    let tokens = read("deploy/compose/influxdb-tokens.sh");
    assert!(tokens.contains("--write-bucket") && tokens.contains("--read-bucket"));
    let datasources = read("deploy/grafana/provisioning/datasources/influxdb.yaml");
    assert!(datasources.contains("$__file{/run/influx-tokens/grafana}"));
}

/// Metric names (`messnetz_*`, `process_*`) used in a text.
fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for start in text.match_indices("messnetz_").map(|(i, _)| i).chain(text.match_indices("process_").map(|(i, _)| i)) {
        if start > 0 && text[..start].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '/') {
            continue;
        }
        let name: String = text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let name = name.strip_suffix("_bucket").map(str::to_owned).unwrap_or(name);
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

#[tokio::test]
async fn every_metric_in_the_alert_rules_and_the_dashboard_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("deploy-metrics");
    let (gw, _) = Gateway::start_embedded(dir.path(), &topics).await;
    let text = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    let served: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split([' ', '{']).next()).collect();
    let rules = read("deploy/prometheus/alerts.yml");
    let dashboard = read("deploy/grafana/dashboards/messnetz.json");
    let used: Vec<String> = metric_names(&rules).into_iter().chain(metric_names(&dashboard)).collect();
    assert!(used.len() > 15, "{used:?}");
    for name in used.iter().filter(|n| n.as_str() != "messnetz_influxdb" && !n.ends_with('_')) {
        assert!(
            served.iter().any(|s| s == name || s.strip_suffix("_bucket") == Some(name)),
            "{name} is used by the alert rules or the dashboard but not served"
        );
    }
}
