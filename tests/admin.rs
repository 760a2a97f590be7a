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
