//! The operator API over real HTTP against the gateway binary: token scopes, 401 for a
//! missing or wrong token, 404 for another department's device, the devices file as the
//! source of truth, profile uploads, the audit log and the brute-force limit.

mod common;

use common::*;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const OPS: &str = "umweltamt-token-0123456789abcdefghij";
const GARTEN: &str = "gartenamt-token-0123456789abcdefghij";
const ROOT: &str = "all-departments-token-0123456789abcd";

async fn call(
    client: &Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = client.request(method, url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request.body(b);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        body["devices"].as_array().expect("devices").iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

fn new_device(id: &str, owner: &str) -> String {
    json!({
        "id": id, "name": "Neuer Sensor", "profile": "dragino-lht65", "dev_eui": "A8404100000000F1",
        "lat": 48.1, "lon": 11.6, "district": "Altstadt", "owner": owner, "licence": "dl-by-de/2.0", "visibility": "open"
    })
    .to_string()
}

#[tokio::test]
async fn tokens_are_scoped_to_departments_and_other_departments_devices_are_404() {
    use reqwest::Method;
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("admin-scopes");
    let (devices, profiles) = own_devices_and_profiles(dir.path());
    let admin = admin_section(
        100,
        &[("umweltamt-ops", OPS, &["Umweltamt"]), ("gartenamt-ops", GARTEN, &["Gartenamt"]), ("it", ROOT, &["*"])],
    );
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, &admin, &devices, &profiles).await;
    let c = Client::new();
    let url = |p: &str| gw.url(p);

    // No token, a wrong one, another scheme: 401 with a Bearer challenge.
    for token in [None, Some("wrong-token-wrong-token-wrong")] {
        let (status, headers, body) = call(&c, Method::GET, &url("/v1/admin/devices"), token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"), "{headers:?}");
        assert!(body["error"].is_string(), "{body}");
    }
    let basic = c.get(url("/v1/admin/devices")).basic_auth("umweltamt-ops", Some(OPS)).send().await.unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);

    // Each token sees its departments' devices, internal ones too; "*" sees all.
    let (status, _, body) = call(&c, Method::GET, &url("/v1/admin/devices"), Some(OPS), None).await;
    assert_eq!((status, ids(&body)), (StatusCode::OK, vec!["demo-lht65".to_owned()]), "{body}");
    let (_, _, body) = call(&c, Method::GET, &url("/v1/admin/devices"), Some(ROOT), None).await;
    assert_eq!(ids(&body), vec!["demo-lht65", "demo-lht65-depot", "demo-lht65-park"], "{body}");

    // Another department's device answers exactly like an unknown one.
    let (s1, _, unknown) = call(&c, Method::GET, &url("/v1/admin/devices/no-such-device"), Some(OPS), None).await;
    let (s2, _, foreign) = call(&c, Method::GET, &url("/v1/admin/devices/demo-lht65-park"), Some(OPS), None).await;
    assert_eq!((s1, s2), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(unknown, foreign);
    let (s3, _, change) = call(
        &c,
        Method::PUT,
        &url("/v1/admin/devices/demo-lht65-park/visibility"),
        Some(OPS),
        Some(r#"{"visibility":"internal"}"#.into()),
    )
    .await;
    let (s4, _, update) = call(
        &c,
        Method::PUT,
        &url("/v1/admin/devices/demo-lht65-park"),
        Some(OPS),
        Some(new_device("demo-lht65-park", "Umweltamt")),
    )
    .await;
    assert_eq!((s3, s4), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!((&change, &update), (&unknown, &unknown));
    let (status, _, body) = call(&c, Method::GET, &url("/v1/admin/devices/demo-lht65-park"), Some(GARTEN), None).await;
    assert_eq!((status, body["owner"].as_str()), (StatusCode::OK, Some("Gartenamt")), "{body}");

    // Create: only for one's own departments, never over a taken id.
    let (status, _, body) =
        call(&c, Method::POST, &url("/v1/admin/devices"), Some(OPS), Some(new_device("umwelt-neu", "Gartenamt"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) =
        call(&c, Method::POST, &url("/v1/admin/devices"), Some(OPS), Some(new_device("demo-lht65-park", "Umweltamt"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _, body) =
        call(&c, Method::POST, &url("/v1/admin/devices"), Some(OPS), Some(new_device("umwelt-neu", "Umweltamt"))).await;
    assert_eq!((status, body["id"].as_str()), (StatusCode::CREATED, Some("umwelt-neu")), "{body}");
    // A device that fails the registry's checks is refused whole, with the reason.
    let mut bad: Value = serde_json::from_str(&new_device("umwelt-kaputt", "Umweltamt")).unwrap();
    bad["profile"] = json!("no-such-profile");
    bad["dev_eui"] = json!("A8404100000000F2");
    let (status, _, body) = call(&c, Method::POST, &url("/v1/admin/devices"), Some(OPS), Some(bad.to_string())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["problems"][0].as_str().unwrap().contains("no-such-profile"), "{body}");

    // The file is the source of truth: the entry is in it, the operators' comments still are.
    let text = std::fs::read_to_string(&devices).unwrap();
    assert!(text.starts_with("# Demo device list"), "{text}");
    assert!(text.contains("[[device]]\nid = \"umwelt-neu\""), "{text}");
    assert!(!text.contains("umwelt-kaputt"), "{text}");
    let (status, _, open) = call(&c, Method::GET, &url("/v1/devices"), None, None).await;
    assert!(status.is_success() && ids(&open).contains(&"umwelt-neu".to_owned()), "{open}");

    // Take it out of the open API, and it is gone there; the other department doesn't see it.
    let (status, _, body) = call(
        &c,
        Method::PUT,
        &url("/v1/admin/devices/umwelt-neu/visibility"),
        Some(OPS),
        Some(r#"{"visibility":"internal"}"#.into()),
    )
    .await;
    assert_eq!((status, body["visibility"].as_str()), (StatusCode::OK, Some("internal")), "{body}");
    let (status, _, _) = call(&c, Method::GET, &url("/v1/devices/umwelt-neu/latest"), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(std::fs::read_to_string(&devices).unwrap().contains("visibility = \"internal\""));
    let (status, _, body) = call(&c, Method::GET, &url("/v1/admin/devices/umwelt-neu"), Some(GARTEN), None).await;
    assert_eq!((status, &body), (StatusCode::NOT_FOUND, &unknown));

    // Profiles: a broken upload is refused and not written; a profile other departments use
    // can't be replaced by one department; a good new one is written and loaded.
    let (status, _, body) =
        call(&c, Method::PUT, &url("/v1/admin/profiles/neu"), Some(OPS), Some("id = \"neu\"\nbogus = 1\n".into())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(!profiles.join("neu.toml").exists());
    let lht65 = std::fs::read_to_string(profiles.join("dragino-lht65.toml")).unwrap();
    let (status, _, body) = call(&c, Method::PUT, &url("/v1/admin/profiles/dragino-lht65"), Some(OPS), Some(lht65.clone())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let copy = lht65.replace("id = \"dragino-lht65\"", "id = \"dragino-lht65-copy\"");
    let (status, _, body) =
        call(&c, Method::POST, &url("/v1/admin/profiles/dragino-lht65-copy/test"), Some(OPS), Some(copy.clone())).await;
    assert_eq!((status, &body["ok"]), (StatusCode::OK, &json!(true)), "{body}");
    let (status, _, body) = call(&c, Method::PUT, &url("/v1/admin/profiles/dragino-lht65-copy"), Some(OPS), Some(copy)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(profiles.join("dragino-lht65-copy.toml").exists());
    let (_, _, body) = call(&c, Method::GET, &url("/v1/admin/profiles"), Some(OPS), None).await;
    assert!(body["profiles"].as_array().unwrap().iter().any(|p| p["id"] == "dragino-lht65-copy"), "{body}");
    let (status, _, body) = call(&c, Method::POST, &url("/v1/admin/profiles/dragino-lht65/test"), Some(GARTEN), None).await;
    assert_eq!((status, &body["ok"]), (StatusCode::OK, &json!(true)), "{body}");
    let (status, _, body) = call(&c, Method::POST, &url("/v1/admin/reload"), Some(OPS), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Every change is in the audit log, with who; no token anywhere in it or the gateway's log.
    let audit = std::fs::read_to_string(gw.data.join("audit.log")).unwrap();
    let entries: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let done: Vec<(&str, &str, &str)> = entries
        .iter()
        .filter(|e| e["outcome"] == "ok")
        .map(|e| (e["who"].as_str().unwrap(), e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    for expected in [
        ("umweltamt-ops", "device.create", "umwelt-neu"),
        ("umweltamt-ops", "device.visibility", "umwelt-neu"),
        ("umweltamt-ops", "profile.upload", "dragino-lht65-copy"),
        ("umweltamt-ops", "reload", ""),
    ] {
        assert!(done.contains(&expected), "{expected:?} not in {audit}");
    }
    assert!(entries.iter().all(|e| e["time"].as_str().is_some_and(|t| t.ends_with('Z'))));
    let log = gw.log_text();
    for token in [OPS, GARTEN, ROOT] {
        assert!(!audit.contains(token) && !log.contains(token), "a token leaked");
    }
}

#[tokio::test]
async fn wrong_tokens_are_rate_limited_per_client() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("admin-ratelimit");
    let (devices, profiles) = own_devices_and_profiles(dir.path());
    let admin = admin_section(3, &[("umweltamt-ops", OPS, &["Umweltamt"])]);
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, &admin, &devices, &profiles).await;
    let c = Client::new();
    let url = gw.url("/v1/admin/devices");
    for i in 0..3 {
        let (status, _, _) =
            call(&c, reqwest::Method::GET, &url, Some(&format!("guess-{i}-aaaaaaaaaaaaaaaaaaaaaaaa")), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Limit reached: refused before any check, even with the right token, until the minute is over.
    for token in ["guess-4-aaaaaaaaaaaaaaaaaaaaaaaa", OPS] {
        let (status, headers, body) = call(&c, reqwest::Method::GET, &url, Some(token), None).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
    // The open API is not affected.
    assert_eq!(c.get(gw.url("/v1/devices")).send().await.unwrap().status(), StatusCode::OK);
}

#[test]
fn hash_token_prints_a_hash_the_gateway_accepts() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_messnetz"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = run(&["admin", "hash-token"], &format!("{OPS}\n"));
    assert_eq!(code, Some(0));
    assert!(messnetz::api::admin::auth::verify_one(out.trim(), OPS), "{out}");
    let (code, _) = run(&["admin", "hash-token"], "too-short\n");
    assert_eq!(code, Some(2));
    let (code, out) = run(&["admin", "hash-token", "--generate"], "");
    assert_eq!(code, Some(0));
    let token = out.lines().find_map(|l| l.strip_prefix("token: ")).unwrap();
    let hash = out.lines().find_map(|l| l.strip_prefix("hash:  ")).unwrap();
    assert!(messnetz::api::admin::auth::verify_one(hash, token), "{out}");
}

/// The audit entries of `target` (a request path), as (who, outcome) in the order written.
fn attempts_on(audit: &str, method: &str, target: &str) -> Vec<(String, String)> {
    audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["target"] == target && e["action"].as_str().is_some_and(|a| a.starts_with(&format!("{method} "))))
        .map(|e| (e["who"].as_str().unwrap().to_owned(), e["outcome"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn every_admin_attempt_is_audited_before_acting_and_with_its_outcome_failures_included() {
    use reqwest::Method;
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("admin-attempts");
    let (devices, profiles) = own_devices_and_profiles(dir.path());
    let admin = admin_section(100, &[("umweltamt-ops", OPS, &["Umweltamt"]), ("it", ROOT, &["*"])]);
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, &admin, &devices, &profiles).await;
    let c = Client::new();
    let url = |p: &str| gw.url(p);

    // A dead letter of another department's device (Gartenamt's demo-lht65-park): a frame too
    // short for its profile.
    let bad = ttn_uplink("demo-lht65-park", "A840410000000002", 1, "00", "2026-11-25T10:00:00Z");
    publish_all(broker.port, &format!("{}-pub", topics.prefix), vec![(topics.ttn("demo-lht65-park"), bad)]).await;
    let letter = wait_for("a dead letter", std::time::Duration::from_secs(20), || async {
        let (_, _, body) = call(&c, Method::GET, &url("/v1/admin/dead-letters"), Some(ROOT), None).await;
        body["dead_letters"].as_array().and_then(|l| l.first()).and_then(|l| l["id"].as_u64())
    })
    .await;

    // Refused and failing attempts of every kind.
    let (s401a, _, _) = call(&c, Method::POST, &url("/v1/admin/reload"), None, None).await;
    let (s401b, _, _) = call(&c, Method::POST, &url("/v1/admin/reload"), Some("wrong-token-wrong-token-wrong"), None).await;
    let (s404, _, _) = call(&c, Method::GET, &url("/v1/admin/devices/demo-lht65-park"), Some(OPS), None).await;
    let (s409, _, _) =
        call(&c, Method::POST, &url("/v1/admin/devices"), Some(OPS), Some(new_device("demo-lht65-park", "Umweltamt"))).await;
    let replay = format!("/v1/admin/dead-letters/{letter}/replay");
    let (s404r, _, _) = call(&c, Method::POST, &url(&replay), Some(OPS), None).await;
    let (s422, _, _) =
        call(&c, Method::PUT, &url("/v1/admin/profiles/kaputt"), Some(OPS), Some("id = \"kaputt\"\n".into())).await;
    let (s409p, _, _) = call(
        &c,
        Method::PUT,
        &url("/v1/admin/profiles/dragino-lht65"),
        Some(OPS),
        Some(std::fs::read_to_string(profiles.join("dragino-lht65.toml")).unwrap()),
    )
    .await;
    assert_eq!(
        [s401a, s401b, s404, s409, s404r, s422, s409p],
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::NOT_FOUND,
            StatusCode::CONFLICT,
            StatusCode::NOT_FOUND,
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::CONFLICT
        ]
    );

    let audit = std::fs::read_to_string(gw.data.join("audit.log")).unwrap();
    // Refused at the token check: recorded once each, with no operator and the reason.
    let reloads = attempts_on(&audit, "POST", "/v1/admin/reload");
    assert_eq!(reloads.len(), 2, "{audit}");
    assert!(reloads.iter().all(|(who, outcome)| who == "-" && outcome.starts_with("401: ")), "{reloads:?}");
    // With a valid token: the attempt before acting, then the outcome with its status.
    for (method, target, status) in [
        ("GET", "/v1/admin/devices/demo-lht65-park", "404"),
        ("POST", "/v1/admin/devices", "409"),
        ("POST", replay.as_str(), "404"),
        ("PUT", "/v1/admin/profiles/kaputt", "422"),
        ("PUT", "/v1/admin/profiles/dragino-lht65", "409"),
    ] {
        let entries = attempts_on(&audit, method, target);
        let outcomes: Vec<&str> = entries.iter().map(|(_, o)| o.as_str()).collect();
        assert_eq!(outcomes.len(), 2, "{method} {target}: {audit}");
        assert_eq!(outcomes[0], "attempt", "{method} {target}: {audit}");
        assert!(outcomes[1].starts_with(&format!("{status}: ")), "{method} {target}: {outcomes:?}");
        assert!(entries.iter().all(|(who, _)| who == "umweltamt-ops"), "{entries:?}");
    }
    // The dead letter is still there: the refused replay did nothing.
    let (status, _, _) = call(&c, Method::GET, &url(&format!("/v1/admin/dead-letters/{letter}")), Some(ROOT), None).await;
    assert_eq!(status, StatusCode::OK);
    for token in [OPS, ROOT, "wrong-token-wrong-token-wrong"] {
        assert!(!audit.contains(token), "a token is in the audit log");
    }

    // Requests without any token cost nothing to send: a flood of them is recorded once a minute.
    for _ in 0..20 {
        let (status, _, _) = call(&c, Method::GET, &url("/v1/admin/profiles"), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let audit = std::fs::read_to_string(gw.data.join("audit.log")).unwrap();
    assert_eq!(attempts_on(&audit, "GET", "/v1/admin/profiles").len(), 1, "{audit}");
}

#[tokio::test]
async fn a_network_device_id_of_two_devices_is_refused_naming_both_or_only_ones_own() {
    use reqwest::Method;
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("admin-ns-id");
    let (devices, profiles) = own_devices_and_profiles(dir.path());
    let admin = admin_section(100, &[("umweltamt-ops", OPS, &["Umweltamt"]), ("it", ROOT, &["*"])]);
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, &admin, &devices, &profiles).await;
    let c = Client::new();
    let with_ns = |id: &str, eui: &str, ns: &str| {
        let mut d: Value = serde_json::from_str(&new_device(id, "Umweltamt")).unwrap();
        d["dev_eui"] = json!(eui);
        d["ns_device_id"] = json!(ns);
        d.to_string()
    };
    let (status, _, body) =
        call(&c, Method::POST, &gw.url("/v1/admin/devices"), Some(OPS), Some(with_ns("ns-eins", "A8404100000000E1", "ttn-x")))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The same network id again: refused like a taken DevEUI, naming both devices.
    let (status, _, body) =
        call(&c, Method::POST, &gw.url("/v1/admin/devices"), Some(OPS), Some(with_ns("ns-zwei", "A8404100000000E2", "ttn-x")))
            .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let problem = body["problems"][0].as_str().unwrap();
    assert!(problem.contains("ns-zwei") && problem.contains("ns-eins") && problem.contains("ns_device_id"), "{body}");
    // Equal to another department's device id: refused, without naming that device.
    let (status, _, body) = call(
        &c,
        Method::POST,
        &gw.url("/v1/admin/devices"),
        Some(OPS),
        Some(with_ns("ns-drei", "A8404100000000E3", "demo-lht65-park")),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let problem = body["problems"][0].as_str().unwrap();
    assert!(problem.contains("ns-drei") && problem.contains("another department"), "{body}");
    let text = std::fs::read_to_string(&devices).unwrap();
    assert!(!text.contains("ns-zwei") && !text.contains("ns-drei"), "{text}");

    // In the devices file itself, the gateway refuses to start, naming both.
    let mut file = text.clone();
    file.push_str("\n[[device]]\nid = \"ns-vier\"\nname = \"V\"\nprofile = \"dragino-lht65\"\nns_device_id = \"ttn-x\"\nlat = 48.1\nlon = 11.6\ndistrict = \"Altstadt\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n");
    let broken = dir.path().join("broken-devices.toml");
    std::fs::write(&broken, file).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_messnetz"))
        .args(["--config", gw.config.to_str().unwrap(), "check"])
        .env("MESSNETZ__DEVICES__FILE", &broken)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("(ns-vier): ns_device_id: \"ttn-x\"") && stderr.contains("(ns-eins)"), "{stderr}");
}
