//! Hostile JavaScript codecs against the real gateway binary: a result nested 50,000 deep, a
//! catastrophic regular expression and a join over 2^32 - 1 elements (native code the engine
//! cannot interrupt), a codec that replaces its own entry point, and a profile whose examples
//! all run into the time limit. Each as an MQTT uplink (a dead letter with the reason, the next
//! good uplink stored, the gateway still answering) and as an admin upload and dry-run (a clear
//! refusal within a bounded time). The scripts of fuzz/corpus/js_codec/ are all replayed.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

const ROOT: &str = "all-departments-token-0123456789abcd";
const DEVICE: &str = "js-sensor";
const DEV_EUI: &str = "A8404100000000E1";

/// One codec for every case, chosen by the payload's first byte; bytes 1–2 are the
/// temperature in tenths of a degree.
const CODEC: &str = r#"
function decodeUplink(input) {
  var b = input.bytes;
  switch (b[0]) {
    case 2: { var o = { temperature: 1 }; for (var i = 0; i < 50000; i++) o = { a: o }; return { data: o }; }
    case 3: /(a+)+$/.test("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"); break;
    case 4: { var x = []; x.length = 4294967295; x.join("-"); break; }
    case 5: {
      var r = { data: { temperature: (((b[1] << 8) | b[2]) / 10).toFixed(1) } };
      globalThis.decodeUplink = function () { return { data: { temperature: "-99" } }; };
      Number.prototype.toFixed = function () { return "-99"; };
      globalThis.calls = 1000;
      return r;
    }
    case 6: for (;;) {}
    case 7: { var a = []; for (;;) a.push(new Array(100000).fill(1.5)); }
  }
  globalThis.calls = (globalThis.calls || 0) + 1;
  var t = ((b[1] << 8) | b[2]) / 10 + (globalThis.calls - 1);
  return { data: { temperature: t.toFixed(1) } };
}
"#;

/// A profile running `script`, with the given `[[examples]]` text.
fn profile(id: &str, script: &str, timeout_ms: u64, examples: &str) -> String {
    format!(
        r#"id = "{id}"
vendor = "Acme"
model = "JS"
reference = "hostile codec test"

[[layouts]]
kind = "javascript"
fports = [2]
timeout_ms = {timeout_ms}
script = '''
{script}
'''

[[layouts.fields]]
quantity = "air_temperature"
pointer = "/temperature"

{examples}"#
    )
}

fn example(payload_hex: &str) -> String {
    format!("[[examples]]\nfport = 2\npayload_hex = \"{payload_hex}\"\nreadings = [{{ quantity = \"air_temperature\", value = 21.5 }}]\n\n")
}

struct Setup {
    _broker: Mosquitto,
    _dir: tempfile::TempDir,
    topics: Topics,
    gw: Gateway,
    port: u16,
    profiles: PathBuf,
    client: Client,
    f_cnt: u32,
}

/// A gateway with the bundled profiles, `acme-js` (the codec above, 100 ms limit) and a device
/// using it, and an all-departments admin token.
async fn start(test: &str) -> Setup {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new(test);
    let (devices, profiles) = own_devices_and_profiles(dir.path());
    std::fs::write(profiles.join("acme-js.toml"), profile("acme-js", CODEC, 100, &example("0100D7"))).unwrap();
    let mut text = std::fs::read_to_string(&devices).unwrap();
    text.push_str(&format!(
        "\n[[device]]\nid = \"{DEVICE}\"\nname = \"JS codec sensor\"\nprofile = \"acme-js\"\ndev_eui = \"{DEV_EUI}\"\n\
         lat = 48.1\nlon = 11.6\ndistrict = \"Altstadt\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n"
    ));
    std::fs::write(&devices, text).unwrap();
    let admin = admin_section(100, &[("it", ROOT, &["*"])]);
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, &admin, &devices, &profiles).await;
    let client = Client::builder().timeout(Duration::from_secs(40)).build().unwrap();
    Setup { port: broker.port, _broker: broker, _dir: dir, topics, gw, profiles, client, f_cnt: 0 }
}

impl Setup {
    fn uplink(&mut self, payload_hex: &str) -> (String, Vec<u8>) {
        self.f_cnt += 1;
        // A second apart, in the past: each uplink is its own reading.
        let time = chrono::Utc::now() - chrono::Duration::seconds(120 - i64::from(self.f_cnt));
        let time = time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        (self.topics.ttn(DEVICE), ttn_uplink(DEVICE, DEV_EUI, self.f_cnt, payload_hex, &time))
    }

    async fn admin(&self, method: Method, path: &str, body: Option<String>) -> (StatusCode, Value, Duration) {
        let started = Instant::now();
        let mut request = self.client.request(method, self.gw.url(path)).bearer_auth(ROOT);
        if let Some(b) = body {
            request = request.body(b);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: no answer after {:?} ({e}); log:\n{}", started.elapsed(), self.gw.log_text()));
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), started.elapsed())
    }

    /// The gateway still answers and still takes uplinks.
    async fn assert_alive(&self) {
        let health = self.client.get(self.gw.url("/healthz")).send().await;
        assert!(health.is_ok_and(|r| r.status().is_success()), "the gateway stopped answering; log:\n{}", self.gw.log_text());
    }

    async fn wait_metric(&self, name: &str, at_least: f64) {
        let what = format!("{name} >= {at_least} (log: {})", self.gw.log.display());
        wait_for(&what, Duration::from_secs(20), || async {
            let text = self.client.get(self.gw.url("/metrics")).send().await.ok()?.text().await.ok()?;
            // Decoding is counted before the commit: wait until what came in is also stored.
            let stored = metric(&text, "messnetz_messages_acked_total")? == metric(&text, "messnetz_messages_received_total")?;
            (metric(&text, name)? >= at_least && stored).then_some(())
        })
        .await;
    }

    async fn dead_letter_reasons(&self) -> Vec<String> {
        let (status, body, _) = self.admin(Method::GET, "/v1/admin/dead-letters", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["dead_letters"].as_array().unwrap().iter().map(|l| l["reason"].as_str().unwrap_or_default().to_owned()).collect()
    }

    async fn latest_temperature(&self) -> Option<f64> {
        let url = self.gw.url(&format!("/v1/devices/{DEVICE}/latest"));
        let body: Value = self.client.get(url).send().await.ok()?.json().await.ok()?;
        body["readings"].as_array()?.iter().find(|r| r["quantity"] == "air_temperature")?["value"].as_f64()
    }

    /// Publishes the hostile uplink and a good one (21.5 °C) right after it: the first is a dead
    /// letter whose reason contains `reason`, the second is stored, the gateway lives on.
    async fn hostile_uplink_then_good(&mut self, hostile_hex: &str, reason: &str) {
        let started = Instant::now();
        let messages = vec![self.uplink(hostile_hex), self.uplink("0100D7")];
        publish_all(self.port, &format!("{}-pub", self.topics.prefix), messages).await;
        self.wait_metric("messnetz_dead_letters_total", 1.0).await;
        self.wait_metric("messnetz_readings_stored_total", 1.0).await;
        let took = started.elapsed();
        let reasons = self.dead_letter_reasons().await;
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains(reason), "dead letter reason {:?} does not say {reason:?}", reasons[0]);
        assert_eq!(self.latest_temperature().await, Some(21.5));
        // The bad uplink held ingest up for at most a few of its time limits, not minutes.
        assert!(took < Duration::from_secs(10), "took {took:?}");
        self.assert_alive().await;
        assert_no_runaway_children(self.gw.pid());
    }

    /// Uploads a profile whose example runs the hostile case (422, nothing changed) and
    /// dry-runs it (ok: false with the reason), each answered within `within`.
    async fn hostile_upload_and_dry_run(&self, toml: &str, reason: &str, within: Duration) {
        let (status, body, took) = self.admin(Method::PUT, "/v1/admin/profiles/acme-bad", Some(toml.to_owned())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body.to_string().contains(reason), "upload refusal {body} does not say {reason:?}");
        assert!(took < within, "the upload took {took:?}");
        assert!(!self.profiles.join("acme-bad.toml").exists(), "a refused profile was written");
        let (status, body, took) = self.admin(Method::POST, "/v1/admin/profiles/acme-bad/test", Some(toml.to_owned())).await;
        assert_eq!((status, &body["ok"]), (StatusCode::OK, &Value::Bool(false)), "{body}");
        assert!(body.to_string().contains(reason), "dry-run answer {body} does not say {reason:?}");
        assert!(took < within, "the dry-run took {took:?}");
        self.assert_alive().await;
        assert_no_runaway_children(self.gw.pid());
    }
}

/// CPU time (user + system, clock ticks) of each child process of `pid`.
fn children_cpu(pid: u32) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // Fields after the command name (which may contain spaces): state, ppid, ... utime (12th), stime (13th).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            let ticks = fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
                + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            out.push((child, ticks));
        }
    }
    out
}

/// No codec worker of the gateway keeps burning CPU after its call was given up.
fn assert_no_runaway_children(pid: u32) {
    let before = children_cpu(pid);
    std::thread::sleep(Duration::from_millis(600));
    let after = children_cpu(pid);
    for (child, ticks) in &after {
        if let Some((_, was)) = before.iter().find(|(c, _)| c == child) {
            // 100 ticks per second: more than a quarter of the interval is a runaway.
            assert!(ticks - was < 15, "child {child} of the gateway used {} ticks in 600 ms", ticks - was);
        }
    }
}

#[tokio::test]
async fn a_result_nested_50000_deep_is_a_dead_letter_and_a_refused_upload() {
    let mut s = start("js-deep").await;
    s.hostile_uplink_then_good("0200D7", "nested deeper than 32 levels").await;
    let toml = profile("acme-bad", CODEC, 100, &example("0200D7"));
    s.hostile_upload_and_dry_run(&toml, "nested deeper than 32 levels", Duration::from_secs(5)).await;
}

/// The worker running the native loop was killed at twice the 100 ms limit, as its dead
/// letter says ("stopped after N ms"); a little more is allowed for a loaded machine.
async fn assert_stopped_at_twice_the_limit(s: &Setup) {
    let reasons = s.dead_letter_reasons().await;
    let after: u64 = reasons[0]
        .split("stopped after ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stopping time in {:?}", reasons[0]));
    assert!((200..400).contains(&after), "stopped after {after} ms: {:?}", reasons[0]);
}

#[tokio::test]
async fn a_catastrophic_regex_is_stopped_within_twice_its_limit() {
    let mut s = start("js-regex").await;
    s.hostile_uplink_then_good("0300D7", "time limit").await;
    assert_stopped_at_twice_the_limit(&s).await;
    let toml = profile("acme-bad", CODEC, 100, &example("0300D7"));
    s.hostile_upload_and_dry_run(&toml, "time limit", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_join_over_four_billion_elements_is_stopped_within_twice_its_limit() {
    let mut s = start("js-join").await;
    s.hostile_uplink_then_good("0400D7", "time limit").await;
    assert_stopped_at_twice_the_limit(&s).await;
    let toml = profile("acme-bad", CODEC, 100, &example("0400D7"));
    s.hostile_upload_and_dry_run(&toml, "time limit", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_codec_that_replaces_globals_does_not_change_the_next_uplinks() {
    let mut s = start("js-globals").await;
    // The replacing uplink decodes normally itself; the ones after it must too.
    let messages = vec![s.uplink("0500D7"), s.uplink("0100D7"), s.uplink("0100D7")];
    publish_all(s.port, &format!("{}-pub", s.topics.prefix), messages).await;
    s.wait_metric("messnetz_messages_decoded_total", 3.0).await;
    assert_eq!(s.dead_letter_reasons().await, Vec::<String>::new());
    let url = s.gw.url(&format!("/v1/readings?device={DEVICE}&quantity=air_temperature"));
    let body: Value = s.client.get(url).send().await.unwrap().json().await.unwrap();
    let values: Vec<f64> = body["readings"].as_array().expect("readings").iter().filter_map(|r| r["value"].as_f64()).collect();
    assert_eq!(values, vec![21.5, 21.5, 21.5], "{body}");
    // As examples: the second example must not see what the first one did.
    let examples = format!("{}{}{}", example("0500D7"), example("0100D7"), example("0100D7"));
    let toml = profile("acme-good", CODEC, 100, &examples);
    let (status, body, _) = s.admin(Method::POST, "/v1/admin/profiles/acme-good/test", Some(toml)).await;
    assert_eq!((status, &body["ok"]), (StatusCode::OK, &Value::Bool(true)), "{body}");
    s.assert_alive().await;
}

#[tokio::test]
async fn a_codec_that_exhausts_its_heap_fails_only_its_uplink() {
    let mut s = start("js-memory").await;
    // The engine either reports the exhausted heap or crashes building the error; the worker
    // process takes either, and the next uplink gets a working one.
    s.hostile_uplink_then_good("0700D7", "codec").await;
    let reasons = s.dead_letter_reasons().await;
    assert!(reasons[0].contains("out of memory") || reasons[0].contains("codec worker crashed"), "{reasons:?}");
    for _ in 0..3 {
        let toml = profile("acme-bad", CODEC, 100, &example("0700D7"));
        let (status, body, took) = s.admin(Method::POST, "/v1/admin/profiles/acme-bad/test", Some(toml)).await;
        assert_eq!((status, &body["ok"]), (StatusCode::OK, &Value::Bool(false)), "{body}");
        assert!(took < Duration::from_secs(5), "the dry-run took {took:?}");
    }
    s.assert_alive().await;
}

#[tokio::test]
async fn a_worker_killed_from_outside_is_replaced_without_losing_an_uplink() {
    let mut s = start("js-worker-killed").await;
    // Loading the profiles left a warm worker; kill every child of the gateway.
    let children = children_cpu(s.gw.pid());
    assert!(!children.is_empty(), "the gateway has no codec worker");
    for (child, _) in &children {
        let status = std::process::Command::new("kill").arg("-KILL").arg(child.to_string()).status().unwrap();
        assert!(status.success());
    }
    let messages = vec![s.uplink("0100D7")];
    publish_all(s.port, &format!("{}-pub", s.topics.prefix), messages).await;
    s.wait_metric("messnetz_readings_stored_total", 1.0).await;
    assert_eq!(s.dead_letter_reasons().await, Vec::<String>::new());
    assert_eq!(s.latest_temperature().await, Some(21.5));
}

#[tokio::test]
async fn examples_that_all_hit_the_time_limit_are_bounded_in_total() {
    let mut s = start("js-slow-examples").await;
    // Twelve examples of a second each: twelve seconds unbounded; the budget is five limits.
    let examples: String = (0..12).map(|_| example("0600D7")).collect();
    let toml = profile("acme-bad", CODEC, 1000, &examples);
    s.hostile_upload_and_dry_run(&toml, "time budget", Duration::from_secs(9)).await;
    // The same as an uplink: one limit's worth, then the next good uplink.
    s.hostile_uplink_then_good("0600D7", "time limit").await;

    // `messnetz check` with that profile in the directory: refused, within the same bound.
    let profiles = s.profiles.clone();
    std::fs::write(profiles.join("acme-bad.toml"), &toml).unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_messnetz"))
        .arg("--config")
        .arg(&s.gw.config)
        .arg("check")
        .output()
        .expect("run messnetz check");
    let took = started.elapsed();
    std::fs::remove_file(profiles.join("acme-bad.toml")).unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("time budget"), "{text}");
    assert!(took < Duration::from_secs(9), "check took {took:?}");
}

fn corpus() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/js_codec");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).expect("corpus").map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

#[tokio::test]
async fn every_hostile_codec_of_the_corpus_is_refused_in_bounded_time() {
    let mut s = start("js-corpus").await;
    let scripts = corpus();
    assert!(scripts.len() >= 20, "the corpus went missing");
    for (name, script) in &scripts {
        let toml = profile("acme-corpus", script, 100, &example("0100D7"));
        let (status, body, took) = s.admin(Method::POST, "/v1/admin/profiles/acme-corpus/test", Some(toml)).await;
        assert_eq!((status, &body["ok"]), (StatusCode::OK, &Value::Bool(false)), "{name}: {body}");
        // Loading (one call) and the example (one call), each killed at twice 100 ms at worst.
        assert!(took < Duration::from_secs(5), "{name}: the dry-run took {took:?}");
        s.assert_alive().await;
    }
    // And the gateway still decodes uplinks with its own codec.
    let messages = vec![s.uplink("0100D7")];
    publish_all(s.port, &format!("{}-pub", s.topics.prefix), messages).await;
    s.wait_metric("messnetz_readings_stored_total", 1.0).await;
    assert_eq!(s.latest_temperature().await, Some(21.5));
    assert_no_runaway_children(s.gw.pid());
}
