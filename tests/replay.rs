//! Dead letters replayed after a fix land exactly once — through the admin API while the
//! gateway runs, and through the CLI while it is stopped — and a message that fails again
//! stays a dead letter with the new reason.

#[macro_use]
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const OPS: &str = "umweltamt-token-0123456789abcdefghij";
const GARTEN: &str = "gartenamt-token-0123456789abcdefghij";
const ROOT: &str = "all-departments-token-0123456789abcd";

/// A device no registry knows yet, and one uplink of it (Dragino's LHT65 example frame).
const LATE_EUI: &str = "A8404100000000AA";

fn late_uplink(topics: &Topics) -> (String, Vec<u8>) {
    (topics.ttn("late-lht65"), ttn_uplink("late-lht65", LATE_EUI, 1, LHT65_PAYLOAD, "2026-11-20T10:00:00Z"))
}

fn late_device(profile: &str) -> Value {
    json!({
        "id": "late-lht65", "name": "Nachgetragen", "profile": profile, "dev_eui": LATE_EUI,
        "lat": 48.1, "lon": 11.6, "district": "Altstadt", "owner": "Umweltamt", "licence": "dl-by-de/2.0", "visibility": "open"
    })
}

async fn send(c: &Client, method: reqwest::Method, url: String, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut r = c.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    let resp = r.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn wait_dead_letters(gw: &Gateway, n: f64) {
    wait_for(&format!("{n} dead letter(s)"), Duration::from_secs(20), || async move {
        (gw.metric("messnetz_dead_letters_total").await >= n).then_some(())
    })
    .await;
}

both_backends! {
#[tokio::test]
async fn a_replayed_dead_letter_lands_once_through_the_admin_api() {
    use reqwest::Method;
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("replay-api");
    let (devices, profiles) = own_devices_and_profiles(dir.path());
    let admin = admin_section(
        100,
        &[("umweltamt-ops", OPS, &["Umweltamt"]), ("gartenamt-ops", GARTEN, &["Gartenamt"]), ("it", ROOT, &["*"])],
    );
    let mut gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, &admin, &devices, &profiles).await;
    let c = Client::new();

    publish_all(broker.port, &format!("{}-pub", topics.prefix), vec![late_uplink(&topics)]).await;
    wait_dead_letters(&gw, 1.0).await;

    // A letter of no known device: only the all-departments token sees it.
    let (_, all) = send(&c, Method::GET, gw.url("/v1/admin/dead-letters"), ROOT, None).await;
    let letters = all["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{all}");
    assert!(letters[0]["reason"].as_str().unwrap().contains("unknown device"), "{all}");
    let id = letters[0]["id"].as_u64().unwrap();
    let (_, mine) = send(&c, Method::GET, gw.url("/v1/admin/dead-letters"), OPS, None).await;
    assert_eq!(mine["dead_letters"], json!([]), "{mine}");

    // Registered (with the wrong profile, as happens): now it is Umweltamt's letter.
    let (status, body) =
        send(&c, Method::POST, gw.url("/v1/admin/devices"), OPS, Some(late_device("generic-json-weather"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, mine) = send(&c, Method::GET, gw.url("/v1/admin/dead-letters?device=late-lht65&reason=UNKNOWN"), OPS, None).await;
    assert_eq!(mine["dead_letters"][0]["device"], "late-lht65", "{mine}");
    let (status, _) = send(&c, Method::GET, gw.url(&format!("/v1/admin/dead-letters/{id}")), GARTEN, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&c, Method::POST, gw.url(&format!("/v1/admin/dead-letters/{id}/replay")), GARTEN, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Replayed with the wrong profile: it fails again and stays, with the new reason.
    let (status, body) = send(&c, Method::POST, gw.url(&format!("/v1/admin/dead-letters/{id}/replay")), OPS, None).await;
    assert_eq!((status, body["outcome"].as_str()), (StatusCode::OK, Some("failed")), "{body}");
    assert!(body["reason"].as_str().unwrap().contains("generic-json-weather"), "{body}");
    let (status, shown) = send(&c, Method::GET, gw.url(&format!("/v1/admin/dead-letters/{id}")), OPS, None).await;
    assert_eq!((status, &shown["reason"]), (StatusCode::OK, &body["reason"]), "{shown}");
    assert!(shown["payload_text"].as_str().unwrap().contains(LATE_EUI), "{shown}");

    // The profile fixed, two replays at once: exactly one stores, the other finds it gone.
    let (status, body) =
        send(&c, Method::PUT, gw.url("/v1/admin/devices/late-lht65"), OPS, Some(late_device("dragino-lht65"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = gw.url(&format!("/v1/admin/dead-letters/{id}/replay"));
    let (a, b) = tokio::join!(send(&c, Method::POST, url.clone(), OPS, None), send(&c, Method::POST, url.clone(), OPS, None));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::NOT_FOUND], "{a:?} {b:?}");
    let stored = if a.0 == StatusCode::OK { a.1 } else { b.1 };
    assert_eq!((stored["outcome"].as_str(), stored["device"].as_str()), (Some("stored"), Some("late-lht65")), "{stored}");
    let readings = stored["readings"].as_u64().unwrap();
    assert!(readings >= LHT65_QUANTITIES.len() as u64, "{stored}");
    let (status, _) = send(&c, Method::POST, url, OPS, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a third replay finds nothing");
    let (_, left) = send(&c, Method::GET, gw.url("/v1/admin/dead-letters"), ROOT, None).await;
    assert_eq!(left["dead_letters"], json!([]), "{left}");

    let latest: Value = reqwest::get(gw.url("/v1/devices/late-lht65/latest")).await.unwrap().json().await.unwrap();
    let air =
        latest["readings"].as_array().unwrap().iter().find(|r| r["quantity"] == "air_temperature").cloned().unwrap_or_default();
    assert_eq!((air["value"].as_f64(), air["time"].as_str()), (Some(28.29), Some("2026-11-20T10:00:00Z")), "{latest}");

    let audit = std::fs::read_to_string(gw.data.join("audit.log")).unwrap();
    let replays: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "dead_letter.replay")
        .collect();
    assert_eq!(replays.iter().filter(|e| e["outcome"] == "ok").count(), 1, "{audit}");
    assert!(replays.iter().all(|e| e["who"] == "umweltamt-ops"), "{audit}");

    // Bulk replays pick letters by device (or reason, ids); what fails again stays.
    let short = (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", 9, "CBF60B", "2026-11-20T11:00:00Z"));
    publish_all(broker.port, &format!("{}-pub2", topics.prefix), vec![short]).await;
    wait_dead_letters(&gw, 2.0).await;
    let (status, body) = send(&c, Method::POST, gw.url("/v1/admin/dead-letters/replay"), OPS, Some(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) =
        send(&c, Method::POST, gw.url("/v1/admin/dead-letters/replay"), OPS, Some(json!({"device": "demo-lht65"}))).await;
    assert_eq!((status, body["replayed"].as_u64(), body["stored"].as_u64()), (StatusCode::OK, Some(1), Some(0)), "{body}");
    let short_id = body["results"][0]["id"].as_u64().unwrap();
    assert!(short_id > id, "ids are not reused: {body}");
    assert!(body["results"][0]["reason"].as_str().unwrap().contains("dragino-lht65"), "{body}");
    let (_, body) =
        send(&c, Method::POST, gw.url("/v1/admin/dead-letters/replay"), GARTEN, Some(json!({"ids": [short_id]}))).await;
    assert_eq!(body["results"][0]["outcome"], "gone", "another department's letter: {body}");

    // Every quantity of the uplink is stored once.
    assert!(gw.terminate().success());
    let stored = gw.stored_per_quantity("late-lht65");
    assert_eq!(stored.iter().map(|(_, n)| n).sum::<usize>() as u64, readings, "{stored:?}");
    assert_eq!(stored_mismatch(&stored, 1), None);
}
}

fn cli(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_messnetz")).arg("--config").arg(config).args(args).output().expect("run messnetz");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

both_backends! {
#[tokio::test]
async fn the_cli_replays_dead_letters_once_while_the_gateway_is_stopped() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("replay-cli");
    let (devices, profiles) = own_devices_and_profiles(dir.path());
    let mut gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, "", &devices, &profiles).await;
    publish_all(broker.port, &format!("{}-pub", topics.prefix), vec![late_uplink(&topics)]).await;
    wait_dead_letters(&gw, 1.0).await;
    assert!(gw.terminate().success());

    let (code, out, err) = cli(&gw.config, &["dead-letters", "list", "--reason", "unknown device"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("1\t2026-") && out.contains("unknown device"), "{out}");
    let (code, out, _) = cli(&gw.config, &["dead-letters", "show", "1"]);
    assert_eq!(code, 0);
    assert!(out.contains(LATE_EUI), "{out}");
    let (code, _, err) = cli(&gw.config, &["dead-letters", "replay"]);
    assert_eq!(code, 2, "a replay names what to replay: {err}");

    // The fix: the device goes into the devices file.
    let mut text = std::fs::read_to_string(&devices).unwrap();
    text.push_str(&format!(
        "\n[[device]]\nid = \"late-lht65\"\nname = \"Nachgetragen\"\nprofile = \"dragino-lht65\"\ndev_eui = \"{LATE_EUI}\"\nlat = 48.1\nlon = 11.6\ndistrict = \"Altstadt\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n"
    ));
    std::fs::write(&devices, text).unwrap();
    let (code, out, err) = cli(&gw.config, &["dead-letters", "list", "--device", "late-lht65"]);
    assert!(code == 0 && out.starts_with("1\t"), "{out} {err}");

    let (code, out, err) = cli(&gw.config, &["dead-letters", "replay", "--device", "late-lht65"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.starts_with("1\tstored\tlate-lht65: "), "{out}");
    let (code, out, _) = cli(&gw.config, &["dead-letters", "replay", "1"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("1\tgone"), "{out}");
    let (code, out, _) = cli(&gw.config, &["dead-letters", "list"]);
    assert_eq!((code, out.as_str()), (0, ""));

    assert_eq!(stored_mismatch(&gw.stored_per_quantity("late-lht65"), 1), None);
    let audit = std::fs::read_to_string(gw.data.join("audit.log")).unwrap();
    assert!(audit.contains("\"who\":\"cli\"") && audit.contains("dead_letter.replay"), "{audit}");
}
}
