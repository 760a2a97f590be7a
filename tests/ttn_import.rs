//! `messnetz profiles import-ttn` against a tree in The Things Network device repository's
//! layout that the project wrote itself (tests/fixtures/ttn-repo): the report, the profiles it
//! writes, re-runs that update its own profiles and leave edited ones alone, hostile vendor
//! files, and an imported profile decoding real uplinks end to end through MQTT.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn fixture() -> PathBuf {
    PathBuf::from(format!("{MANIFEST_DIR}/tests/fixtures/ttn-repo"))
}

/// Copies a directory tree (the fixture, so a test may change or add files).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Runs messnetz with the profiles directory `profiles` (for the commands that load it).
fn messnetz(args: &[&str], profiles: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_messnetz"))
        .args(args)
        .env("MESSNETZ__PROFILES__DIR", profiles)
        .output()
        .expect("run messnetz")
}

/// `profiles import-ttn SOURCE --dir PROFILES`: the report (stdout); the command must succeed.
fn import(source: &Path, profiles: &Path, extra: &[&str]) -> String {
    let mut args = vec!["profiles", "import-ttn", source.to_str().unwrap(), "--dir", profiles.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = messnetz(&args, profiles);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "import failed: {}\n{report}", String::from_utf8_lossy(&out.stderr));
    report
}

/// The report's block for one profile id (its lines up to the next blank line).
fn block<'a>(report: &'a str, id: &str) -> &'a str {
    let start = report.find(&format!("\n{id} (")).unwrap_or_else(|| panic!("{id} not in the report:\n{report}")) + 1;
    let end = report[start..].find("\n\n").map_or(report.len(), |e| start + e);
    &report[start..end]
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn import_writes_checked_profiles_and_reports_examples_and_unmapped_keys() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    let report = import(&fixture(), &profiles, &[]);

    assert!(
        report.starts_with(
            "models found: 5; imported: 3 (written 3, updated 0, unchanged 0); left alone: 0; not imported: 2; failed: 0\n"
        ),
        "{report}"
    );
    assert!(report.contains("examples: 7 of 8 decode to the vendor's output"), "{report}");

    let th1 = block(&report, "acme-th1");
    assert!(th1.starts_with("acme-th1 (vendor/acme/th1.yaml): written"), "{th1}");
    assert!(th1.contains("examples: 3 of 4 pass (decodeUplink + normalizeUplink)"), "{th1}");
    assert!(
        th1.contains("FAIL example 3 \"Typo in the vendor's humidity\": /data/Hum_SHT: expected 84.5, got 48.5"),
        "the failing example and its first difference: {th1}"
    );
    for line in [
        "mapped   /air/temperature -> air_temperature (values in Cel; normalized air.temperature)",
        "mapped   /air/relativeHumidity -> relative_humidity (values in %; normalized air.relativeHumidity)",
        "mapped   /battery -> battery_voltage (values in V; normalized battery)",
    ] {
        assert!(th1.contains(line), "{line} missing: {th1}");
    }

    let wx2 = block(&report, "acme-wx2");
    assert!(wx2.contains("examples: 2 of 2 pass (decodeUplink)"), "{wx2}");
    for line in [
        "mapped   /temperature -> air_temperature (values in Cel;",
        "mapped   /pressure_hPa -> air_pressure (values in hPa;",
        "mapped   /wind/speed -> wind_speed (values in m/s;",
        "mapped   /wind/direction -> wind_from_direction (values in deg;",
        "mapped   /rain_mm -> precipitation_amount (values in mm;",
        "unmapped /battery: a battery value without a unit (volts or percent?)",
        "unmapped /rssi_dbm: no pattern of the key table matches",
    ] {
        assert!(wx2.contains(line), "{line} missing: {wx2}");
    }
    // Text values (`status: ok`) are states, never listed as keys.
    assert!(!wx2.contains("/status"), "{wx2}");

    let soil = block(&report, "acme-soil3");
    assert!(soil.contains("mapped   /soil/moisture -> volume_fraction_of_condensed_water_in_soil"), "{soil}");
    assert!(soil.contains("unmapped /soil/ec: no climate quantity"), "{soil}");
    assert!(block(&report, "acme-door1").contains("not imported: no key of the decoded output maps to a quantity"), "{report}");
    assert!(block(&report, "acme-bare").contains("not imported: the codec has no examples"), "{report}");

    assert_eq!(
        files(&profiles),
        ["acme-soil3.js", "acme-soil3.toml", "acme-th1.js", "acme-th1.toml", "acme-wx2.js", "acme-wx2.toml"],
        "one profile and the unchanged vendor script per imported model, no staging left over"
    );
    let script = std::fs::read_to_string(profiles.join("acme-th1.js")).unwrap();
    assert_eq!(script, std::fs::read_to_string(fixture().join("vendor/acme/th1.js")).unwrap(), "the vendor's script, unchanged");
    let toml = std::fs::read_to_string(profiles.join("acme-th1.toml")).unwrap();
    assert!(toml.contains("# generated-by: messnetz profiles import-ttn; content-hash: "), "{toml}");
    assert!(toml.contains("vendor = \"Acme Sensors\"") && toml.contains("model = \"TH1\""), "{toml}");
    // The passing examples are the profile's, the failing one is not.
    assert_eq!(toml.matches("[[examples]]").count(), 3, "{toml}");
    assert!(toml.contains("error = \"unknown FPort 3\""), "{toml}");
    assert!(!toml.contains("84.5"), "{toml}");

    // The written profiles load and pass their examples like any profile.
    let out = messnetz(&["profiles", "test"], &profiles);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text, "ok   acme-soil3\nok   acme-th1\nok   acme-wx2\n");

    // The ES2015 codec decodes a payload of its own through the sandbox.
    let out = messnetz(&["decode", "--profile", "acme-wx2", "--fport", "2", "--hex", "FF9C27100064005A0000000050"], &profiles);
    assert!(!out.status.success(), "13 bytes: the codec's own length check must fail it");
    let out = messnetz(&["decode", "--profile", "acme-wx2", "--fport", "2", "--hex", "FF9C27100064005A00005050"], &profiles);
    let decoded: serde_json::Value = serde_json::from_slice(&out.stdout).expect("decode prints JSON");
    let value = |q: &str| {
        decoded["readings"].as_array().unwrap().iter().find(|r| r["quantity"] == q).map(|r| r["value"].as_f64().unwrap())
    };
    assert_eq!(value("air_temperature"), Some(-10.0));
    assert_eq!(value("air_pressure"), Some(1000.0));
    assert_eq!(value("wind_speed"), Some(1.0));
    assert_eq!(value("wind_from_direction"), Some(90.0));
    assert_eq!(value("precipitation_amount"), Some(0.0));
    assert_eq!(decoded["readings"].as_array().unwrap().len(), 5, "{decoded}");

    // One vendor folder alone imports the same profiles, with the vendor's name from the
    // repository's index beside it.
    let again = import(&fixture().join("vendor/acme"), &profiles, &[]);
    assert!(again.starts_with("models found: 5; imported: 3 (written 0, updated 0, unchanged 3)"), "{again}");
}

#[test]
fn re_runs_update_their_own_profiles_and_leave_edited_or_hand_written_ones_alone() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_tree(&fixture(), &repo);
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    // A hand-written profile with the id the import would use.
    let hand = "id = \"acme-soil3\"\nvendor = \"Acme\"\nmodel = \"Soil 3\"\nreference = \"own notes\"\n";
    std::fs::write(profiles.join("acme-soil3.toml"), hand).unwrap();

    let first = import(&repo, &profiles, &[]);
    assert!(
        block(&first, "acme-soil3").contains("left alone: acme-soil3.toml has no generated-by header: written by hand"),
        "{first}"
    );
    assert_eq!(std::fs::read_to_string(profiles.join("acme-soil3.toml")).unwrap(), hand);
    assert!(!profiles.join("acme-soil3.js").exists());

    // Unchanged input: nothing to write.
    let second = import(&repo, &profiles, &[]);
    assert!(second.starts_with("models found: 5; imported: 2 (written 0, updated 0, unchanged 2); left alone: 1"), "{second}");

    // The vendor fixes its example and its codec: the import's own profile is updated.
    let codec = repo.join("vendor/acme/th1-codec.yaml");
    std::fs::write(&codec, std::fs::read_to_string(&codec).unwrap().replace("Hum_SHT: 84.5", "Hum_SHT: 48.5")).unwrap();
    let third = import(&repo, &profiles, &[]);
    assert!(block(&third, "acme-th1").starts_with("acme-th1 (vendor/acme/th1.yaml): updated"), "{third}");
    assert!(block(&third, "acme-th1").contains("examples: 4 of 4 pass"), "{third}");
    assert_eq!(std::fs::read_to_string(profiles.join("acme-th1.toml")).unwrap().matches("[[examples]]").count(), 4);

    // An operator adjusts the generated profile: from then on it is theirs.
    let th1 = profiles.join("acme-th1.toml");
    let edited = std::fs::read_to_string(&th1).unwrap().replace("model = \"TH1\"", "model = \"TH1 (Rathaus)\"");
    std::fs::write(&th1, &edited).unwrap();
    // ... or only its script.
    let wx2_js = profiles.join("acme-wx2.js");
    let script = std::fs::read_to_string(&wx2_js).unwrap().replace("tenths(r.u16())", "tenths(r.u16()) ");
    std::fs::write(&wx2_js, &script).unwrap();
    std::fs::write(&codec, std::fs::read_to_string(&codec).unwrap().replace("description: Mild day", "description: Mild"))
        .unwrap();
    let fourth = import(&repo, &profiles, &[]);
    for id in ["acme-th1", "acme-wx2"] {
        assert!(
            block(&fourth, id).contains(&format!("left alone: {id}.toml or {id}.js was edited after the import wrote it")),
            "{fourth}"
        );
    }
    assert_eq!(std::fs::read_to_string(&th1).unwrap(), edited, "the edit survives the re-run");
    assert_eq!(std::fs::read_to_string(&wx2_js).unwrap(), script);

    // Overrides keep a profile generated while changing its mapping.
    let overrides = dir.path().join("overrides.toml");
    std::fs::write(
        &overrides,
        "[profiles.acme-door1.keys]\n\"/openings\" = { quantity = \"lightning_strike_count\" }\n\n[profiles.acme-soil3]\nnormalize = false\n",
    )
    .unwrap();
    let fifth = import(&repo, &profiles, &["--overrides", overrides.to_str().unwrap()]);
    let door = block(&fifth, "acme-door1");
    assert!(door.starts_with("acme-door1 (vendor/acme/door1.yaml): written"), "{fifth}");
    assert!(door.contains("mapped   /openings -> lightning_strike_count (values in 1; override)"), "{door}");
    std::fs::write(&overrides, "[profiles.acme-nothere.keys]\n\"/x\" = \"ignore\"\n").unwrap();
    let sixth = import(&repo, &profiles, &["--overrides", overrides.to_str().unwrap()]);
    assert!(sixth.contains("problem: the overrides name acme-nothere, which this import did not find"), "{sixth}");
    let bad = dir.path().join("bad-overrides.toml");
    std::fs::write(&bad, "[profiles.acme-door1.keys]\n\"/openings\" = { quantity = \"no_such_thing\" }\n").unwrap();
    let out = messnetz(
        &[
            "profiles",
            "import-ttn",
            repo.to_str().unwrap(),
            "--dir",
            profiles.to_str().unwrap(),
            "--overrides",
            bad.to_str().unwrap(),
        ],
        &profiles,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad-overrides.toml"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn hostile_vendor_files_are_reported_and_the_import_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_tree(&fixture(), &repo);
    let rogue = repo.join("vendor/rogue");
    std::fs::create_dir_all(&rogue).unwrap();
    let models = ["badyaml", "bomb", "huge", "thrower", "looper", "syntax", "escape", "missing", "hog", "badbytes", "bigjs"];
    std::fs::write(rogue.join("index.yaml"), format!("endDevices:\n{}", models.map(|m| format!("  - {m}\n")).concat())).unwrap();
    let device = |id: &str| {
        format!("name: {id}\nfirmwareVersions:\n  - version: '1'\n    profiles:\n      EU863-870:\n        codec: {id}-codec\n")
    };
    let codec = |id: &str, example: &str| format!("uplinkDecoder:\n  fileName: {id}.js\n  examples:\n{example}");
    let example =
        "    - input:\n        fPort: 2\n        bytes: [1, 2]\n      output:\n        data:\n          temperature: 21.5\n";
    for id in models {
        if id != "missing" {
            std::fs::write(rogue.join(format!("{id}.yaml")), device(id)).unwrap();
            std::fs::write(rogue.join(format!("{id}-codec.yaml")), codec(id, example)).unwrap();
            std::fs::write(
                rogue.join(format!("{id}.js")),
                "function decodeUplink(input) { return { data: { temperature: 21.5 } }; }",
            )
            .unwrap();
        }
    }
    std::fs::write(rogue.join("badyaml.yaml"), "name: [unclosed\nfirmwareVersions: {\n").unwrap();
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        bomb.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(", ")));
    }
    std::fs::write(rogue.join("bomb-codec.yaml"), format!("{bomb}{}", codec("bomb", example))).unwrap();
    let mut huge = codec("huge", example);
    huge.push_str(&format!("# {}\n", "x".repeat(2 << 20)));
    std::fs::write(rogue.join("huge-codec.yaml"), huge).unwrap();
    std::fs::write(
        rogue.join("thrower.js"),
        "function decodeUplink(input) { throw new Error('vendor bug at byte ' + input.bytes[0]); }",
    )
    .unwrap();
    std::fs::write(rogue.join("looper.js"), "function decodeUplink(input) { for (;;) {} }").unwrap();
    std::fs::write(rogue.join("syntax.js"), "function decodeUplink(input { return {}; }").unwrap();
    std::fs::write(
        rogue.join("escape-codec.yaml"),
        codec("escape", example).replace("fileName: escape.js", "fileName: ../../../../etc/passwd"),
    )
    .unwrap();
    std::fs::write(
        rogue.join("hog.js"),
        "function decodeUplink(input) { var a = []; for (;;) { a.push(new Array(100000).fill(input.bytes)); } }",
    )
    .unwrap();
    std::fs::write(rogue.join("badbytes-codec.yaml"), codec("badbytes", &example.replace("[1, 2]", "[1, 300]"))).unwrap();

    std::fs::write(
        rogue.join("bigjs.js"),
        format!("// {}\nfunction decodeUplink() {{ return {{ data: {{}} }}; }}", "x".repeat(300_000)),
    )
    .unwrap();

    // A vendor whose normalizedOutput no longer matches its normalizeUplink (and which also
    // has an example that expects an error): the decoded keys are mapped instead.
    let soil = repo.join("vendor/acme/soil3-codec.yaml");
    let stale = std::fs::read_to_string(&soil).unwrap().replace("              depth: 20\n", "              depth: 30\n")
        + "    - description: Unknown FPort\n      input:\n        fPort: 9\n        bytes: [1]\n      output:\n        errors: [unknown FPort]\n";
    std::fs::write(&soil, stale).unwrap();
    std::fs::write(
        repo.join("vendor/acme/soil3.js"),
        std::fs::read_to_string(repo.join("vendor/acme/soil3.js")).unwrap().replace(
            "function decodeUplink(input) {\n",
            "function decodeUplink(input) {\n  if (input.fPort === 9) return { errors: [\"unknown FPort\"] };\n",
        ),
    )
    .unwrap();

    let profiles = dir.path().join("profiles");
    let started = std::time::Instant::now();
    let report = import(&repo, &profiles, &[]);
    assert!(started.elapsed() < Duration::from_secs(60), "hostile codecs took {:?}", started.elapsed());
    // The fixture's own models are imported as ever.
    assert!(report.starts_with("models found: 16; imported: 3 (written 3,"), "{report}");
    let expect = [
        ("rogue-badyaml", "failed: vendor/rogue/badyaml.yaml: not valid YAML"),
        ("rogue-bomb", "failed: vendor/rogue/bomb-codec.yaml: the document holds more than 200000 values"),
        ("rogue-huge", "is larger than 1048576 bytes"),
        ("rogue-thrower", "the script failed: Error: vendor bug at byte 1"),
        ("rogue-looper", "the script failed: the script ran past its time limit"),
        ("rogue-syntax", "failed: syntax.js: the script does not load: SyntaxError"),
        ("rogue-escape", "is not a file name inside the vendor folder"),
        ("rogue-missing", "failed: vendor/rogue/missing.yaml: cannot read"),
        ("rogue-hog", "the script failed:"),
        ("rogue-badbytes", "`input.bytes` holds 300, not a byte"),
        ("rogue-bigjs", "failed: vendor/rogue/bigjs.js: "),
    ];
    for (id, text) in expect {
        let b = block(&report, id);
        assert!(b.contains(text), "{id}: expected {text:?} in:\n{b}");
        assert!(!b.contains(": written"), "{b}");
    }
    assert!(block(&report, "rogue-thrower").contains("not imported: no example decodes to the vendor's output"), "{report}");
    let soil = block(&report, "acme-soil3");
    assert!(soil.starts_with("acme-soil3 (vendor/acme/soil3.yaml): written"), "{soil}");
    assert!(
        soil.contains("FAIL example 0 \"Damp and warm\", normalizeUplink: /data/0/soil/depth: expected 30, got 20"),
        "{soil}"
    );
    assert!(soil.contains("examples: 2 of 2 pass (decodeUplink)"), "{soil}");
    assert!(soil.contains("mapped   /soil_temp -> soil_temperature"), "{soil}");
    assert!(
        soil.contains("note: normalizeUplink's output differs from the vendor's normalizedOutput in every example"),
        "{soil}"
    );
    assert_eq!(files(&profiles).len(), 6, "only the fixture's three profiles: {:?}", files(&profiles));
}

#[tokio::test]
async fn an_imported_profile_decodes_uplinks_end_to_end() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("ttn-import");
    let (devices, profiles) = own_devices_and_profiles(dir.path());
    let report = import(&fixture(), &profiles, &[]);
    assert!(report.contains("acme-th1 (vendor/acme/th1.yaml): written"), "{report}");
    let mut text = std::fs::read_to_string(&devices).unwrap();
    for (id, profile, eui) in [("ttn-th1", "acme-th1", "70B3D57ED0000101"), ("ttn-wx2", "acme-wx2", "70B3D57ED0000102")] {
        text.push_str(&format!(
            "\n[[device]]\nid = \"{id}\"\nname = \"Imported {profile}\"\nprofile = \"{profile}\"\ndev_eui = \"{eui}\"\n\
             lat = 48.1\nlon = 11.6\ndistrict = \"Altstadt\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n"
        ));
    }
    std::fs::write(&devices, text).unwrap();
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, "", &devices, &profiles).await;

    let time = |s: i64| (chrono::Utc::now() - chrono::Duration::seconds(s)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    publish_all(
        broker.port,
        "ttn-import-pub",
        vec![
            // 23.45 °C, 51.2 %, 3.1 V through decodeUplink + normalizeUplink.
            (topics.ttn("ttn-th1"), ttn_uplink("ttn-th1", "70B3D57ED0000101", 1, "092902009B", &time(60))),
            // -10.0 °C, 1000.0 hPa, 1 m/s from 90°, 0 mm through the ES2015 codec.
            (topics.ttn("ttn-wx2"), ttn_uplink("ttn-wx2", "70B3D57ED0000102", 1, "FF9C27100064005A00005050", &time(59))),
        ],
    )
    .await;

    let client = reqwest::Client::new();
    let readings = |device: &'static str| {
        let client = client.clone();
        let url = gw.url(&format!("/v1/devices/{device}/latest"));
        async move {
            let body: serde_json::Value = client.get(&url).send().await.ok()?.json().await.ok()?;
            let list: Vec<(String, f64)> = body["readings"]
                .as_array()?
                .iter()
                .map(|r| (r["quantity"].as_str().unwrap_or_default().to_owned(), r["value"].as_f64().unwrap_or(f64::NAN)))
                .collect();
            Some(list)
        }
    };
    let what = format!("the imported profiles' readings (log: {})", gw.log.display());
    let th1 = wait_for(&what, Duration::from_secs(20), || async { readings("ttn-th1").await.filter(|l| l.len() >= 3) }).await;
    let wx2 = wait_for(&what, Duration::from_secs(20), || async { readings("ttn-wx2").await.filter(|l| l.len() >= 5) }).await;
    let get = |list: &[(String, f64)], q: &str| list.iter().find(|(name, _)| name == q).map(|(_, v)| *v);
    assert_eq!(get(&th1, "air_temperature"), Some(23.45), "{th1:?}");
    assert_eq!(get(&th1, "relative_humidity"), Some(51.2), "{th1:?}");
    assert_eq!(get(&th1, "battery_voltage"), Some(3.1), "{th1:?}");
    // Besides what the gateway derives (dew point, heat index), nothing else.
    let derived = ["dew_point_temperature", "heat_index"];
    assert_eq!(th1.iter().filter(|(q, _)| !derived.contains(&q.as_str())).count(), 3, "{th1:?}");
    assert_eq!(get(&wx2, "air_temperature"), Some(-10.0), "{wx2:?}");
    assert_eq!(get(&wx2, "air_pressure"), Some(1000.0), "{wx2:?}");
    assert_eq!(get(&wx2, "wind_speed"), Some(1.0), "{wx2:?}");
    assert_eq!(get(&wx2, "wind_from_direction"), Some(90.0), "{wx2:?}");
    assert_eq!(get(&wx2, "precipitation_amount"), Some(0.0), "{wx2:?}");
}
