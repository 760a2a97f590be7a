//! The operator commands: `check`, `config default`, `decode`, `profiles`, run as a user would.

use std::process::{Command, Output};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn messnetz(args: &[&str], config: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_messnetz"));
    cmd.current_dir(MANIFEST_DIR);
    if let Some(text) = config {
        let file = dir.path().join("messnetz.toml");
        std::fs::write(&file, text).unwrap();
        cmd.arg("--config").arg(file);
    }
    cmd.args(args).output().expect("run messnetz")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_the_defaults() {
    let out = messnetz(&["check"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("3 device(s)"), "{}", text(&out.stdout));
}

#[test]
fn check_reports_every_bad_key_with_its_path_and_fails() {
    let out = messnetz(
        &["check"],
        Some("[mqtt]\nport = 99999\n[api]\nlisten = \"localhost\"\n[store]\npaht = \"x\"\n[[mqtt.subscriptions]]\ntopic = \"a/#/b\"\nformat = \"ttn-v3\"\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for path in ["mqtt.port", "api.listen", "store", "paht"] {
        assert!(err.contains(path), "{path} missing from:\n{err}");
    }
}

#[test]
fn check_fails_on_a_device_with_an_unknown_profile() {
    let dir = tempfile::tempdir().unwrap();
    let devices = dir.path().join("devices.toml");
    let demo = std::fs::read_to_string(format!("{MANIFEST_DIR}/demo/devices.toml")).unwrap();
    std::fs::write(&devices, demo.replacen("profile = \"dragino-lht65\"", "profile = \"dragino-lht99\"", 1)).unwrap();
    let out = messnetz(&["check"], Some(&format!("[devices]\nfile = \"{}\"\n", devices.display())));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("device[0] (demo-lht65): profile") && err.contains("dragino-lht99"), "{err}");
}

#[test]
fn check_refuses_a_licence_outside_the_dcat_ap_de_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let devices = dir.path().join("devices.toml");
    let demo = std::fs::read_to_string(format!("{MANIFEST_DIR}/demo/devices.toml")).unwrap();
    // A non-commercial licence is not open data, and not in the vocabulary; it would have been
    // published as a bare, unknown IRI.
    std::fs::write(&devices, demo.replacen("licence = \"dl-zero-de/2.0\"", "licence = \"cc-by-nc/4.0\"", 1)).unwrap();
    let out = messnetz(&["check"], Some(&format!("[devices]\nfile = \"{}\"\n", devices.display())));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("device[1] (demo-lht65-park): licence: \"cc-by-nc/4.0\" is not in the DCAT-AP.de licence vocabulary"),
        "{err}"
    );
    assert!(err.contains("dl-by-de/2.0, dl-zero-de/2.0, cc-by/4.0, cc-by-sa/4.0, cc-zero"), "{err}");
    // The district licence too, as a configuration error with its key.
    let out = messnetz(&["check"], Some("[open_data]\ndistrict_licence = \"odbl-1.0\"\n"));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("open_data.district_licence") && err.contains("DCAT-AP.de licence vocabulary"), "{err}");
}

#[test]
fn check_names_each_bad_open_data_setting() {
    let out = messnetz(
        &["check"],
        Some("[open_data]\nmunicipality_key = \"0916\"\ncontributor_id = \"a b\"\nlanguage = \"de\"\nupdate_frequency = \"often\"\ncontact_email = \"mailto:x@example.org\"\ncatalog_page_size = 0\ncors_origins = [\"https://a.example.org/path\"]\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for key in [
        "open_data.municipality_key",
        "open_data.contributor_id",
        "open_data.language",
        "open_data.update_frequency",
        "open_data.contact_email",
        "open_data.catalog_page_size",
        "open_data.cors_origins[0]",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
}

#[test]
fn config_default_prints_a_file_that_loads() {
    let out = messnetz(&["config", "default"], None);
    assert!(out.status.success());
    let printed = text(&out.stdout);
    assert!(printed.contains("[mqtt]") && printed.contains("connect_timeout_ms"), "{printed}");
    let check = messnetz(&["check"], Some(&printed));
    assert!(check.status.success(), "{}", text(&check.stderr));
}

#[test]
fn decode_prints_the_readings_of_one_payload() {
    let out = messnetz(&["decode", "--profile", "dragino-lht65", "--fport", "2", "--hex", "CBF60B0D0376010ADD7FFF"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let readings: Vec<(String, f64, String)> = json["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["quantity"].as_str().unwrap().into(), r["value"].as_f64().unwrap(), r["unit"].as_str().unwrap().into()))
        .collect();
    assert!(readings.contains(&("air_temperature".into(), 28.29, "Cel".into())), "{readings:?}");
    assert!(readings.contains(&("battery_voltage".into(), 3.062, "V".into())), "{readings:?}");

    let short = messnetz(&["decode", "--profile", "dragino-lht65", "--fport", "2", "--hex", "CBF6"], None);
    assert_eq!(short.status.code(), Some(1));
    assert!(text(&short.stderr).contains("too short"), "{}", text(&short.stderr));
    let bad_hex = messnetz(&["decode", "--profile", "dragino-lht65", "--hex", "XYZ"], None);
    assert_eq!(bad_hex.status.code(), Some(2));
}

#[test]
fn profiles_list_and_test() {
    let list = messnetz(&["profiles", "list"], None);
    assert!(text(&list.stdout).lines().any(|l| l == "dragino-lht65"));
    let test = messnetz(&["profiles", "test"], None);
    assert!(test.status.success(), "{}", text(&test.stdout));
    assert!(text(&test.stdout).contains("ok   dragino-lht65"));
    let unknown = messnetz(&["profiles", "test", "nope"], None);
    assert_eq!(unknown.status.code(), Some(1));
}

#[test]
fn the_deploy_configurations_load() {
    // The files under deploy/ point at /var/lib/messnetz; the same files with the bundled
    // devices and profiles must pass `check`. The compose file reads its InfluxDB token from
    // a file InfluxDB writes at its first start: here, one of the test's own.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("influx-token");
    std::fs::write(&token, "write-only-token\n").unwrap();
    for file in ["deploy/messnetz.toml", "deploy/compose/messnetz.toml", "deploy/container/messnetz.toml"] {
        let mut check = Command::new(env!("CARGO_BIN_EXE_messnetz"));
        check
            .current_dir(MANIFEST_DIR)
            .env("MESSNETZ__DEVICES__FILE", "demo/devices.toml")
            .env("MESSNETZ__PROFILES__DIR", "sensor-profiles")
            .args(["--config", file, "check"]);
        if file.contains("compose") {
            check.env("MESSNETZ__INFLUXDB__TOKEN_FILE", &token);
        }
        let out = check.output().expect("run messnetz");
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{MANIFEST_DIR}/deploy/grafana/dashboards/messnetz.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dashboard["uid"], "messnetz");
}

/// Run `messnetz --config FILE ARGS` (no ARGS: start the gateway) and return its exit code
/// and stderr; a run still going after 20 s is killed and fails the test.
fn run_with_config(dir: &std::path::Path, config: &str, args: &[&str]) -> (Option<i32>, String) {
    let file = dir.join("messnetz.toml");
    std::fs::write(&file, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_messnetz"))
        .current_dir(MANIFEST_DIR)
        .arg("--config")
        .arg(&file)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run messnetz");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("messnetz {args:?} still running after 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), text(&out.stderr))
}

#[test]
fn config_syntax_errors_never_quote_a_password_or_token_but_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "Zq7-very-secret-Xw";
    let head = "[mqtt]\nusername = \"messnetz\"\n";
    let influx = "[influxdb]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\n";
    // (file, line the error is on)
    let cases = [
        (format!("{head}password = \"{secret}\n"), 3),
        (format!("{head}password = {secret}\n"), 3),
        (format!("{head}password = \"\"\"{secret}\n{secret}-2\n"), 4),
        (format!("{head}username = \"u\" password = \"{secret}\"\n"), 3),
        (format!("{influx}token = \"abc\" \"{secret}\"\n"), 5),
        (format!("{influx}token = '{secret}\n"), 5),
    ];
    for (config, line) in cases {
        for args in [&["check"][..], &[][..]] {
            let (code, stderr) = run_with_config(dir.path(), &config, args);
            assert_eq!(code, Some(2), "{args:?}: {stderr}");
            assert!(!stderr.contains(secret) && !stderr.contains("very-secret"), "{args:?} leaked the secret:\n{stderr}");
            assert!(stderr.contains(&format!("line {line}")) && stderr.contains("messnetz.toml"), "{args:?}: {stderr}");
        }
    }
    // A value of the wrong type for a secret key is not quoted either.
    let (code, stderr) = run_with_config(dir.path(), &format!("{head}password = [\"{secret}\"]\n"), &["check"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains(secret) && stderr.contains("mqtt.password"), "{stderr}");
}

#[test]
fn a_session_key_pasted_into_dev_addr_is_never_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let key = "2B7E151628AED2A6ABF7158809CF4F3C";
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!("[[session]]\ndev_addr = \"{key}\"\ndevice = \"demo-lht65\"\nnwk_s_key = \"{key}\"\napp_s_key = \"{key}\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = format!(
        "[broker]\nenabled = false\n[api]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n[lorawan]\nkeys_file = \"{}\"\n",
        dir.path().join("data").display(),
        keys.display()
    );
    for args in [&["check"][..], &[][..]] {
        let (code, stderr) = run_with_config(dir.path(), &config, args);
        assert_ne!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.to_uppercase().contains(&key[..12]), "{args:?} leaked the key:\n{stderr}");
        assert!(stderr.contains("session[0]") && stderr.contains("dev_addr"), "{args:?}: {stderr}");
    }
}
