//! Every public and admin route through `router(state).oneshot(..)`, without a socket, a
//! broker or the binary: a temporary embedded store, the bundled profiles and demo devices,
//! readings written straight into the store, and the admin state on an offline ingest stage.
//!
//! Each test asserts what a client relies on: status, content type, body, ETag and 304, CSV
//! shape, paging, the parameter a 400 names, the same 401/404 whatever the department, 413,
//! and that an internal device never shows on an open route.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use base64::Engine;
use chrono::{DateTime, Utc};
use messnetz::api::admin::AdminState;
use messnetz::api::{router, AppState};
use messnetz::config::Settings;
use messnetz::ingest::Ingest;
use messnetz::metrics::Metrics;
use messnetz::model::{DeviceId, QualityFlag, Quantity, Reading};
use messnetz::registry::Registry;
use messnetz::replay::Replayer;
use messnetz::status::InputStatus;
use messnetz::store::{CommitStore, DeadLetter, EmbeddedStore, WriteBatch};
use serde_json::{json, Value};
use tower::ServiceExt;

use common::{cheap_token_hash, metric, own_devices_and_profiles, ttn_uplink, LHT65_PAYLOAD};

const OPS: &str = "umweltamt-token-0123456789abcdefghij";
const GARTEN: &str = "gartenamt-token-0123456789abcdefghij";
const ROOT: &str = "all-departments-token-0123456789abcd";
const BASE: &str = "https://daten.example.org";
/// `api.max_points` of the fixture: small, so paging and range limits are cheap to reach.
const MAX_POINTS: usize = 100;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A response, read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Every value of a header, joined (`Link` comes as several).
    fn all(&self, name: header::HeaderName) -> String {
        self.headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>().join(", ")
    }

    /// The error message of a JSON error answer.
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error in {}", self.text())).to_owned()
    }
}

/// The dead letters the seeded fixture holds, by what they are.
struct Letters {
    /// Gartenamt's demo-lht65-park: a frame too short for its profile (fails again).
    park_short: u64,
    /// A device no registry knows: only all-departments tokens see it.
    stranger: u64,
    /// Umweltamt's demo-lht65: a good frame that failed once (a replay stores it).
    lht65_good: u64,
    /// A topic no subscription matches: a replay is refused.
    no_route: u64,
}

struct Fixture {
    _tmp: tempfile::TempDir,
    devices: PathBuf,
    profiles: PathBuf,
    audit: PathBuf,
    state: AppState,
    /// The store behind `state`, for seeding and for looking at what a request left.
    store: Arc<EmbeddedStore>,
}

impl Fixture {
    fn new() -> Self {
        Self::with(|_| {})
    }

    /// The fixture with settings changed before anything is built from them.
    fn with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (devices, profiles) = own_devices_and_profiles(tmp.path());
        let token = |name: &str, token: &str, owners: &str| {
            format!("\n[[admin.tokens]]\nname = \"{name}\"\nhash = \"{}\"\nowners = [{owners}]\n", cheap_token_hash(token))
        };
        let config = format!(
            "[store]\npath = {:?}\n[devices]\nfile = {:?}\n[profiles]\ndir = {:?}\n[api]\nmax_points = {MAX_POINTS}\n[open_data]\nbase_url = \"{BASE}\"\n[admin]\nmax_failures_per_minute = 100\n{}{}{}",
            tmp.path().join("data"),
            devices,
            profiles,
            token("umweltamt-ops", OPS, "\"Umweltamt\""),
            token("gartenamt-ops", GARTEN, "\"Gartenamt\""),
            token("it", ROOT, "\"*\""),
        );
        let config_path = tmp.path().join("messnetz.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut settings = messnetz::config::load_with_env(Some(&config_path), std::iter::empty()).unwrap();
        tweak(&mut settings);
        let (profile_set, device_registry) = messnetz::registry::load(&settings).unwrap();
        let store = Arc::new(EmbeddedStore::open(&settings.store.path).unwrap());
        let registry = Arc::new(Registry::new(profile_set, device_registry));
        let metrics = Arc::new(Metrics::default());
        let keys = Arc::new(messnetz::sources::lorawan_keys::SessionKeys::load(None, std::iter::empty()).unwrap());
        let ingest = Ingest::offline(store.clone(), registry.clone(), metrics.clone(), None, keys);
        let admin = AdminState::new(&settings, Replayer::new(ingest, &settings.mqtt.subscriptions)).unwrap();
        let state = AppState {
            input: Arc::new(InputStatus::default()),
            store: store.clone(),
            registry,
            metrics,
            max_points: settings.api.max_points,
            open_data: Arc::new(settings.open_data.clone()),
            admin: Arc::new(admin),
            citizens: Default::default(),
            page: Arc::new(settings.page.clone()),
        };
        let audit = settings.admin.audit_log_path(&settings.store);
        Self { _tmp: tmp, devices, profiles, audit, state, store }
    }

    /// The fixture with readings of all three demo devices and four dead letters.
    fn seeded() -> (Self, Letters) {
        let f = Self::new();
        let letters = f.seed();
        (f, letters)
    }

    /// demo-lht65 (open, Altstadt): air temperature and humidity every 10 minutes from
    /// 09:00 to 09:50 on 2026-11-25, one suspect value, one that needs rounding and one bad
    /// NaN; heard from just now. demo-lht65-park (open, Stadtpark): one reading, heard from
    /// days ago (stale). demo-lht65-depot (internal): one reading, heard from just now.
    fn seed(&self) -> Letters {
        let id = |s: &str| DeviceId::parse(s).unwrap();
        let q = |n: &str| Quantity::by_name(n).unwrap();
        let reading = |device: &str, quantity: &str, value: f64, time: &str, flag: QualityFlag, reason: &str| Reading {
            device: id(device),
            quantity: q(quantity),
            value,
            time: at(time),
            flag,
            reason: reason.into(),
        };
        let mut batch = WriteBatch::default();
        let temps = [
            (20.0, QualityFlag::Good, ""),
            (20.5, QualityFlag::Good, ""),
            (21.0, QualityFlag::Good, ""),
            (21.5, QualityFlag::Suspect, "spike: 0.5 K in 10 min"),
            (0.1 + 0.2, QualityFlag::Good, ""),
            (f64::NAN, QualityFlag::Bad, "range: not a finite number"),
        ];
        for (i, (value, flag, reason)) in temps.into_iter().enumerate() {
            let time = format!("2026-11-25T09:{:02}:00Z", i * 10);
            batch.readings.push(reading("demo-lht65", "air_temperature", value, &time, flag, reason));
            batch.readings.push(reading("demo-lht65", "relative_humidity", 88.6, &time, QualityFlag::Good, ""));
        }
        batch.readings.push(reading("demo-lht65-park", "air_temperature", 18.0, "2026-11-25T09:05:00Z", QualityFlag::Good, ""));
        batch.readings.push(reading("demo-lht65-depot", "air_temperature", 99.0, "2026-11-25T09:00:00Z", QualityFlag::Good, ""));
        batch.seen = vec![
            (id("demo-lht65"), Utc::now()),
            (id("demo-lht65-park"), at("2026-11-25T09:05:00Z")),
            (id("demo-lht65-depot"), Utc::now()),
        ];
        batch.districts.insert(id("demo-lht65"), "Altstadt".into());
        batch.districts.insert(id("demo-lht65-park"), "Stadtpark".into());
        let letter = |topic: &str, format: &str, device: Option<&str>, reason: &str, payload: Vec<u8>| DeadLetter {
            id: 0,
            received_at: at("2026-11-20T10:00:01Z"),
            topic: topic.into(),
            format: format.into(),
            device: device.map(str::to_owned),
            reason: reason.into(),
            payload,
        };
        batch.dead_letters = vec![
            letter(
                "v3/messnetz-test/devices/demo-lht65-park/up",
                "ttn-v3",
                Some("demo-lht65-park"),
                "profile dragino-lht65: payload too short",
                ttn_uplink("demo-lht65-park", "A840410000000002", 1, "00", "2026-11-20T10:00:00Z"),
            ),
            letter(
                "v3/messnetz-test/devices/stranger/up",
                "ttn-v3",
                None,
                "unknown device: no registry entry for DevEUI A8404100000000AA",
                ttn_uplink("stranger", "A8404100000000AA", 1, LHT65_PAYLOAD, "2026-11-20T10:00:00Z"),
            ),
            letter(
                "v3/messnetz-test/devices/demo-lht65/up",
                "ttn-v3",
                Some("demo-lht65"),
                "device demo-lht65: profile \"dragino-lht65\" is not loaded",
                ttn_uplink("demo-lht65", "A840410000000001", 1, LHT65_PAYLOAD, "2026-11-20T10:00:00Z"),
            ),
            letter("elsewhere/up", "-", None, "the topic matches no configured subscription", b"{}".to_vec()),
        ];
        let ids = self.store.write(&batch).unwrap();
        assert_eq!(ids.len(), 4);
        Letters { park_short: ids[0], stranger: ids[1], lht65_good: ids[2], no_route: ids[3] }
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec();
        Answer { status, headers, body }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    async fn get_if_none_match(&self, uri: &str, etag: &str) -> Answer {
        self.send(Request::get(uri).header(header::IF_NONE_MATCH, etag).body(Body::empty()).unwrap()).await
    }

    /// An admin request from 192.0.2.1.
    async fn admin(&self, method: Method, uri: impl AsRef<str>, token: Option<&str>, body: impl Into<Body>) -> Answer {
        self.admin_from("192.0.2.1", method, uri.as_ref(), token, body).await
    }

    async fn admin_from(&self, client: &str, method: Method, uri: &str, token: Option<&str>, body: impl Into<Body>) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let mut request = request.body(body.into()).unwrap();
        let addr: SocketAddr = format!("{client}:40000").parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(addr));
        self.send(request).await
    }

    fn audit_entries(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// (who, action, target) of the audit entries with outcome "ok".
    fn audited_changes(&self) -> Vec<(String, String, String)> {
        self.audit_entries()
            .iter()
            .filter(|e| e["outcome"] == "ok" && !e["action"].as_str().unwrap().contains(' '))
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap().to_owned();
                (s("who"), s("action"), s("target"))
            })
            .collect()
    }
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    let mut ids: Vec<String> = list[key].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

fn new_device(id: &str, owner: &str, dev_eui: &str) -> String {
    json!({
        "id": id, "name": "Neuer Sensor", "profile": "dragino-lht65", "dev_eui": dev_eui,
        "lat": 48.1, "lon": 11.6, "district": "Altstadt", "owner": owner, "licence": "dl-by-de/2.0", "visibility": "open"
    })
    .to_string()
}

/// A 404 body with the id taken out, to compare two of them.
fn without(answer: &Answer, id: &str) -> String {
    answer.error().replace(id, "X")
}

// ---- Health, readiness, metrics, the OpenAPI document ----

#[tokio::test]
async fn healthz_answers_and_readyz_names_each_check() {
    let f = Fixture::new();
    let health = f.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.header(header::CACHE_CONTROL), Some("no-store"));
    let body: serde_json::Value = serde_json::from_str(&health.text()).unwrap();
    assert_eq!((body["status"].as_str(), body["version"].as_str()), (Some("ok"), Some(env!("CARGO_PKG_VERSION"))), "{body}");
    assert!(body["uptime_s"].is_u64(), "{body}");

    // No input yet (as before the broker connects): 503 saying why, since when.
    let ready = f.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.text());
    assert_eq!(ready.header(header::CACHE_CONTROL), Some("no-store"));
    assert!(ready.header(header::CONTENT_TYPE).unwrap().starts_with("application/json"));
    let body = ready.json();
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["mqtt"]["ok"], false);
    assert_eq!(body["checks"]["mqtt"]["error"], "not connected yet");
    assert!(body["checks"]["mqtt"]["since"].as_str().is_some_and(|s| s.ends_with('Z')), "{body}");
    assert_eq!(body["checks"]["store"], json!({ "ok": true }), "absent, not null, when passing: {body}");
    assert!(body["checks"].get("influxdb_spool").is_none(), "no InfluxDB, no spool check: {body}");

    f.state.input.ready();
    let ready = f.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    assert_eq!(ready.json()["ready"], true);
    f.state.input.not_ready("broker went away".into());
    let ready = f.get("/readyz").await;
    assert_eq!(
        (ready.status, ready.json()["checks"]["mqtt"]["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("broker went away"))
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_store_and_stale_devices() {
    let (f, _) = Fixture::seeded();
    let answer = f.get("/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header(header::CONTENT_TYPE), Some("text/plain; version=0.0.4"));
    let text = answer.text();
    assert_eq!(metric(&text, "messnetz_store_writable"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "messnetz_store_reopens_total"), Some(0.0), "{text}");
    assert!(metric(&text, "messnetz_rollup_windows_pending").is_some(), "{text}");
    // The park device was last heard days ago; the other two (one internal) just now.
    assert_eq!(metric(&text, "messnetz_devices_stale"), Some(1.0), "{text}");
    assert!(text.contains("# TYPE messnetz_devices_stale gauge"), "{text}");
    assert!(answer.header(header::ETAG).is_none(), "/metrics is not cached");
}

#[tokio::test]
async fn the_openapi_document_is_served_with_an_etag_and_304() {
    let f = Fixture::new();
    let first = f.get("/openapi.json").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header(header::CONTENT_TYPE), Some("application/json"));
    assert_eq!(first.text(), messnetz::api::OPENAPI_JSON);
    assert_eq!(first.header(header::CACHE_CONTROL), Some("public, max-age=60"));
    let etag = first.header(header::ETAG).expect("an ETag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2, "a strong, quoted tag: {etag}");

    for tag in [etag.as_str(), "*", &format!("\"other\", {etag}")] {
        let again = f.get_if_none_match("/openapi.json", tag).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "If-None-Match: {tag}");
        assert!(again.body.is_empty());
        assert_eq!(again.header(header::ETAG), Some(etag.as_str()));
        assert!(again.header(header::CONTENT_TYPE).is_none());
    }
    let changed = f.get_if_none_match("/openapi.json", "\"0000000000000000\"").await;
    assert_eq!((changed.status, changed.body.len()), (StatusCode::OK, first.body.len()));
}

/// Every path of the OpenAPI document answers, with one of the statuses it documents, to a
/// request built from its parameters (and the router serves no open path it leaves out).
#[tokio::test]
async fn every_documented_route_answers_with_a_documented_status() {
    let (f, _) = Fixture::seeded();
    let doc: Value = serde_json::from_str(messnetz::api::OPENAPI_JSON).unwrap();
    let examples = [
        ("id", "demo-lht65"),
        ("device", "demo-lht65"),
        ("quantity", "air_temperature"),
        ("from", "2026-11-25T09:00:00Z"),
        ("to", "2026-11-25T10:00:00Z"),
        ("interval", "1h"),
        ("limit", "3"),
        ("format", "csv"),
    ];
    let mut served = Vec::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            assert_eq!(method, "get", "{path}: the open API only reads");
            let mut uri = path.clone();
            let mut query = Vec::new();
            for p in operation["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                // The catalogue's format is a syntax, not json/csv.
                let value = match (path.as_str(), name) {
                    ("/v1/catalog", "format") => Some("ttl"),
                    _ => examples.iter().find(|(n, _)| *n == name).map(|(_, v)| *v),
                };
                match (p["in"].as_str(), value) {
                    (Some("path"), Some(v)) => uri = uri.replace(&format!("{{{name}}}"), v),
                    (Some("query"), Some(v)) => query.push(format!("{name}={v}")),
                    (Some("path"), None) => panic!("{path}: no example for {name}"),
                    _ => {}
                }
            }
            if !query.is_empty() {
                uri = format!("{uri}?{}", query.join("&"));
            }
            let answer = f.get(&uri).await;
            let documented: Vec<&String> = operation["responses"].as_object().unwrap().keys().collect();
            assert!(
                documented.iter().any(|s| s.as_str() == answer.status.as_str()),
                "GET {uri}: {} is not among {documented:?}: {}",
                answer.status,
                answer.text()
            );
            // A route that documents 304 tags its answers, and its tag sent back is a 304.
            if documented.iter().any(|s| *s == "304") {
                assert_eq!(answer.status, StatusCode::OK, "GET {uri}: {}", answer.text());
                let etag = answer.header(header::ETAG).unwrap_or_else(|| panic!("GET {uri}: no ETag"));
                assert_eq!(f.get_if_none_match(&uri, etag).await.status, StatusCode::NOT_MODIFIED, "GET {uri}");
            } else {
                assert!(answer.header(header::ETAG).is_none(), "GET {uri}: an ETag, but no 304 documented");
            }
            served.push(path.clone());
        }
    }
    served.sort();
    assert_eq!(
        served,
        [
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/readyz",
            "/v1/aggregates",
            "/v1/catalog",
            "/v1/devices",
            "/v1/devices/{id}/latest",
            "/v1/latest",
            "/v1/readings"
        ],
        "the document and these tests cover the same routes"
    );
}

// ---- The open routes ----

#[tokio::test]
async fn the_device_list_shows_open_devices_only_with_last_seen_and_staleness() {
    let (f, _) = Fixture::seeded();
    let answer = f.get("/v1/devices").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.header(header::CONTENT_TYPE).unwrap().starts_with("application/json"));
    let body = answer.json();
    assert_eq!(ids(&body, "devices"), ["demo-lht65", "demo-lht65-park"], "{body}");
    assert!(!answer.text().contains("depot"), "an internal device leaked: {body}");
    let lht65 = &body["devices"][0];
    assert_eq!(lht65["id"], "demo-lht65");
    assert_eq!(
        (&lht65["district"], &lht65["owner"], &lht65["licence"], &lht65["profile"]),
        (&json!("Altstadt"), &json!("Umweltamt"), &json!("dl-by-de/2.0"), &json!("dragino-lht65"))
    );
    assert_eq!((&lht65["lat"], &lht65["lon"], &lht65["height_m"]), (&json!(48.13743), &json!(11.57549), &json!(3.0)));
    assert_eq!(lht65["installed"], "2026-04-01");
    assert!(lht65["last_seen"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
    assert_eq!(lht65["stale"], false);
    let park = &body["devices"][1];
    assert_eq!((&park["last_seen"], &park["stale"]), (&json!("2026-11-25T09:05:00Z"), &json!(true)), "{body}");

    // The ETag follows the content: a new last-seen time makes the old tag stale.
    let etag = answer.header(header::ETAG).unwrap().to_owned();
    assert_eq!(f.get_if_none_match("/v1/devices", &etag).await.status, StatusCode::NOT_MODIFIED);
    let mut batch = WriteBatch::default();
    batch.seen.push((DeviceId::parse("demo-lht65-park").unwrap(), Utc::now()));
    f.store.write(&batch).unwrap();
    let after = f.get_if_none_match("/v1/devices", &etag).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_ne!(after.header(header::ETAG), Some(etag.as_str()));
    assert_eq!(after.json()["devices"][1]["stale"], false);
}

#[tokio::test]
async fn latest_values_of_an_open_device_and_one_404_for_internal_and_unknown_ones() {
    let (f, _) = Fixture::seeded();
    let answer = f.get("/v1/devices/demo-lht65/latest").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(answer.header(header::ETAG).is_some());
    let body = answer.json();
    assert_eq!((&body["device"], &body["licence"]), (&json!("demo-lht65"), &json!("dl-by-de/2.0")));
    let mut readings: Vec<Value> = body["readings"].as_array().unwrap().clone();
    readings.sort_by_key(|r| r["quantity"].as_str().unwrap().to_owned());
    assert_eq!(
        readings,
        [
            // The newest temperature is the bad NaN: no value, and its flag says so.
            json!({ "quantity": "air_temperature", "value": null, "unit": "Cel", "time": "2026-11-25T09:50:00Z", "quality": "bad" }),
            json!({ "quantity": "relative_humidity", "value": 88.6, "unit": "%", "time": "2026-11-25T09:50:00Z", "quality": "good" }),
        ],
        "{body}"
    );

    let internal = f.get("/v1/devices/demo-lht65-depot/latest").await;
    let unknown = f.get("/v1/devices/no-such-device/latest").await;
    assert_eq!((internal.status, unknown.status), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(without(&internal, "demo-lht65-depot"), without(&unknown, "no-such-device"));
    assert!(!internal.text().contains("99"), "{}", internal.text());
    assert!(internal.header(header::ETAG).is_none(), "errors are not cached");
}

#[tokio::test]
async fn readings_come_as_json_pages_that_follow_next_and_link() {
    let (f, _) = Fixture::seeded();
    let first =
        "/v1/readings?device=demo-lht65&quantity=relative_humidity&from=2026-11-25T09:00:00Z&to=2026-11-25T10:00:00Z&limit=4";
    let page = f.get(first).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let body = page.json();
    assert_eq!(
        (&body["device"], &body["quantity"], &body["unit"], &body["licence"], &body["from"], &body["to"]),
        (
            &json!("demo-lht65"),
            &json!("relative_humidity"),
            &json!("%"),
            &json!("dl-by-de/2.0"),
            &json!("2026-11-25T09:00:00Z"),
            &json!("2026-11-25T10:00:00Z")
        )
    );
    let times = |b: &Value| -> Vec<String> {
        b["readings"].as_array().unwrap().iter().map(|r| r["time"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(times(&body), ["2026-11-25T09:00:00Z", "2026-11-25T09:10:00Z", "2026-11-25T09:20:00Z", "2026-11-25T09:30:00Z"]);
    let next = body["next"].as_str().expect("a next page").to_owned();
    assert_eq!(
        next,
        "/v1/readings?device=demo-lht65&quantity=relative_humidity&from=2026-11-25T09:30:00.001Z&to=2026-11-25T10:00:00Z&limit=4"
    );
    let link = page.all(header::LINK);
    assert!(link.contains(&format!("<{next}>; rel=\"next\"")), "{link}");
    assert!(link.contains("<http://dcat-ap.de/def/licenses/dl-by-de/2.0>; rel=\"license\""), "{link}");

    let last = f.get(&next).await;
    let body = last.json();
    assert_eq!(times(&body), ["2026-11-25T09:40:00Z", "2026-11-25T09:50:00Z"]);
    assert!(body["next"].is_null(), "{body}");
    assert!(!last.all(header::LINK).contains("rel=\"next\""));

    // Flags, their reasons, rounding and a value that is not a number.
    let temps = f
        .get("/v1/readings?device=demo-lht65&quantity=air_temperature&from=2026-11-25T09:00:00Z&to=2026-11-25T10:00:00Z")
        .await
        .json();
    let points = temps["readings"].as_array().unwrap();
    assert_eq!(points.len(), 6, "{temps}");
    assert_eq!(points[0], json!({ "time": "2026-11-25T09:00:00Z", "value": 20.0, "quality": "good" }));
    assert_eq!(
        points[3],
        json!({ "time": "2026-11-25T09:30:00Z", "value": 21.5, "quality": "suspect", "reason": "spike: 0.5 K in 10 min" })
    );
    assert_eq!(points[4]["value"], json!(0.3), "0.1 + 0.2 is printed as the decimal meant");
    assert_eq!(
        points[5],
        json!({ "time": "2026-11-25T09:50:00Z", "value": null, "quality": "bad", "reason": "range: not a finite number" })
    );
    assert!(temps["next"].is_null());
}

#[tokio::test]
async fn readings_as_csv_are_a_table_with_the_licence_link() {
    let (f, _) = Fixture::seeded();
    let answer = f
        .get("/v1/readings?device=demo-lht65&quantity=air_temperature&from=2026-11-25T09:00:00Z&to=2026-11-25T10:00:00Z&format=csv")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.header(header::CONTENT_TYPE), Some("text/csv; charset=utf-8"));
    assert!(answer.header(header::ETAG).is_some());
    assert!(answer.all(header::LINK).contains("dl-by-de/2.0>; rel=\"license\""), "{:?}", answer.headers);
    assert_eq!(
        answer.text(),
        "time,value,unit,quality\n\
         2026-11-25T09:00:00Z,20,Cel,good\n\
         2026-11-25T09:10:00Z,20.5,Cel,good\n\
         2026-11-25T09:20:00Z,21,Cel,good\n\
         2026-11-25T09:30:00Z,21.5,Cel,suspect\n\
         2026-11-25T09:40:00Z,0.3,Cel,good\n\
         2026-11-25T09:50:00Z,,Cel,bad\n"
    );
    let mut reader = csv::Reader::from_reader(answer.body.as_slice());
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), ["time", "value", "unit", "quality"]);
    assert!(reader.records().all(|r| r.unwrap().len() == 4));

    // A CSV page's next link stays CSV.
    let paged = f
        .get("/v1/readings?device=demo-lht65&quantity=air_temperature&from=2026-11-25T09:00:00Z&to=2026-11-25T10:00:00Z&format=csv&limit=2")
        .await;
    assert_eq!(paged.text().lines().count(), 3, "header and two rows: {}", paged.text());
    let link = paged.all(header::LINK);
    assert!(link.contains("from=2026-11-25T09:10:00.001Z") && link.contains("&limit=2&format=csv>; rel=\"next\""), "{link}");
}

#[tokio::test]
async fn bad_reading_queries_are_400_naming_the_parameter_and_hidden_devices_404() {
    let (f, _) = Fixture::seeded();
    let ok = "device=demo-lht65&quantity=air_temperature";
    for (query, param) in [
        ("quantity=air_temperature".to_owned(), "device"),
        ("device=demo-lht65".to_owned(), "quantity"),
        ("device=demo-lht65&quantity=temperature".to_owned(), "quantity"),
        (format!("{ok}&from=last-week"), "from"),
        (format!("{ok}&to=2026-13-01T00:00:00Z"), "to"),
        (format!("{ok}&from=2026-11-25T10:00:00Z&to=2026-11-25T09:00:00Z"), "from"),
        (format!("{ok}&from=2026-11-25T10:00:00Z&to=2026-11-25T10:00:00Z"), "from"),
        (format!("{ok}&limit=0"), "limit"),
        (format!("{ok}&limit=-1"), "limit"),
        (format!("{ok}&limit={}", MAX_POINTS + 1), "limit"),
        (format!("{ok}&format=xlsx"), "format"),
        (format!("{ok}&colour=red"), "colour"),
    ] {
        let answer = f.get(&format!("/v1/readings?{query}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}: {}", answer.text());
        assert!(answer.header(header::CONTENT_TYPE).unwrap().starts_with("application/json"), "{query}");
        assert!(answer.error().starts_with(&format!("{param}:")), "{query}: {}", answer.text());
        assert!(answer.header(header::ETAG).is_none());
    }
    let range = "quantity=air_temperature&from=2026-11-25T00:00:00Z&to=2026-11-26T00:00:00Z";
    let internal = f.get(&format!("/v1/readings?device=demo-lht65-depot&{range}")).await;
    let unknown = f.get(&format!("/v1/readings?device=no-such-device&{range}")).await;
    assert_eq!((internal.status, unknown.status), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(without(&internal, "demo-lht65-depot"), without(&unknown, "no-such-device"));
    let csv = f.get(&format!("/v1/readings?device=demo-lht65-depot&{range}&format=csv")).await;
    assert_eq!(csv.status, StatusCode::NOT_FOUND);
    assert!(!csv.text().contains("99"));
}

#[tokio::test]
async fn aggregates_of_a_device_and_a_district_as_json_and_csv() {
    let (f, _) = Fixture::seeded();
    let range = "quantity=air_temperature&interval=1h&from=2026-11-25T09:00:00Z&to=2026-11-25T10:00:00Z";
    // The bad NaN is excluded; the suspect value counts.
    let window = json!({
        "start": "2026-11-25T09:00:00Z", "count": 5, "excluded": 1, "mean": 16.66, "min": 0.3, "max": 21.5, "last": 0.3
    });
    let device = f.get(&format!("/v1/aggregates?device=demo-lht65&{range}")).await;
    assert_eq!(device.status, StatusCode::OK, "{}", device.text());
    assert!(device.header(header::ETAG).is_some());
    let body = device.json();
    assert_eq!(
        (&body["device"], &body["quantity"], &body["unit"], &body["interval"], &body["licence"], &body["licence_uri"]),
        (
            &json!("demo-lht65"),
            &json!("air_temperature"),
            &json!("Cel"),
            &json!("1h"),
            &json!("dl-by-de/2.0"),
            &json!("http://dcat-ap.de/def/licenses/dl-by-de/2.0")
        )
    );
    assert_eq!((&body["from"], &body["to"]), (&json!("2026-11-25T09:00:00Z"), &json!("2026-11-25T10:00:00Z")));
    assert_eq!(body["points"], json!([window]), "{body}");

    let district = f.get(&format!("/v1/aggregates?district=Altstadt&{range}")).await;
    assert_eq!(district.status, StatusCode::OK, "{}", district.text());
    let body = district.json();
    assert_eq!(body["district"], "Altstadt");
    assert!(body.get("device").is_none());
    assert_eq!(body["licence"], json!(f.state.open_data.district_licence));
    assert_eq!(body["points"], json!([window]), "{body}");

    // 10-minute windows, from a `from` inside a window (widened to its start).
    let tens = f
        .get("/v1/aggregates?device=demo-lht65&quantity=relative_humidity&interval=10m&from=2026-11-25T09:05:00Z&to=2026-11-25T10:00:00Z")
        .await
        .json();
    let starts: Vec<&str> = tens["points"].as_array().unwrap().iter().map(|p| p["start"].as_str().unwrap()).collect();
    assert_eq!(
        starts,
        [
            "2026-11-25T09:00:00Z",
            "2026-11-25T09:10:00Z",
            "2026-11-25T09:20:00Z",
            "2026-11-25T09:30:00Z",
            "2026-11-25T09:40:00Z",
            "2026-11-25T09:50:00Z"
        ]
    );
    assert_eq!(tens["from"], "2026-11-25T09:00:00Z");
    assert!(tens["points"].as_array().unwrap().iter().all(|p| p["mean"] == json!(88.6) && p["count"] == 1), "{tens}");

    let csv = f.get(&format!("/v1/aggregates?device=demo-lht65&{range}&format=csv")).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.header(header::CONTENT_TYPE), Some("text/csv; charset=utf-8"));
    assert!(csv.all(header::LINK).contains("rel=\"license\""));
    assert_eq!(csv.text(), "start,count,excluded,mean,min,max,last,unit\n2026-11-25T09:00:00Z,5,1,16.66,0.3,21.5,0.3,Cel\n");
    // A window of only excluded readings has empty cells, not NaN or infinity.
    let only_bad = f
        .get("/v1/aggregates?device=demo-lht65&quantity=air_temperature&interval=10m&from=2026-11-25T09:50:00Z&to=2026-11-25T10:00:00Z&format=csv")
        .await;
    assert_eq!(only_bad.text(), "start,count,excluded,mean,min,max,last,unit\n2026-11-25T09:50:00Z,0,1,,,,,Cel\n");
}

#[tokio::test]
async fn bad_aggregate_queries_are_400_and_internal_devices_and_districts_404() {
    let (f, _) = Fixture::seeded();
    let q = "quantity=air_temperature&from=2026-11-25T00:00:00Z&to=2026-11-26T00:00:00Z";
    for (query, param) in [
        ("quantity=air_temperature".to_owned(), "device"),
        (format!("device=demo-lht65&district=Altstadt&{q}"), "device"),
        ("device=demo-lht65".to_owned(), "quantity"),
        ("device=demo-lht65&quantity=temperature".to_owned(), "quantity"),
        (format!("device=demo-lht65&{q}&interval=2h"), "interval"),
        (format!("device=demo-lht65&{q}&format=xml"), "format"),
        ("device=demo-lht65&quantity=air_temperature&from=yesterday".to_owned(), "from"),
        ("device=demo-lht65&quantity=air_temperature&from=2026-11-26T00:00:00Z&to=2026-11-25T00:00:00Z".to_owned(), "from"),
        // More windows than max_points.
        (format!("device=demo-lht65&{q}&interval=10m"), "to"),
        (format!("device=demo-lht65&{q}&colour=red"), "colour"),
    ] {
        let answer = f.get(&format!("/v1/aggregates?{query}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}: {}", answer.text());
        assert!(answer.error().starts_with(&format!("{param}:")), "{query}: {}", answer.text());
    }
    let internal = f.get(&format!("/v1/aggregates?device=demo-lht65-depot&{q}")).await;
    let unknown = f.get(&format!("/v1/aggregates?device=no-such-device&{q}")).await;
    assert_eq!((internal.status, unknown.status), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(without(&internal, "demo-lht65-depot"), without(&unknown, "no-such-device"));
    // A district of internal devices only is as unknown as a made-up one.
    let internal = f.get(&format!("/v1/aggregates?district=Ost&{q}")).await;
    let unknown = f.get(&format!("/v1/aggregates?district=Nirgendwo&{q}")).await;
    assert_eq!((internal.status, unknown.status), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(without(&internal, "Ost"), without(&unknown, "Nirgendwo"));
}

#[tokio::test]
async fn the_map_layer_is_geojson_of_open_devices() {
    let (f, _) = Fixture::seeded();
    let answer = f.get("/v1/latest").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.header(header::ETAG).is_some());
    let body = answer.json();
    assert_eq!(body["type"], "FeatureCollection");
    assert_eq!(ids(&body, "features"), ["demo-lht65", "demo-lht65-park"], "{body}");
    assert!(!answer.text().contains("depot"), "{body}");
    let lht65 = body["features"].as_array().unwrap().iter().find(|f| f["id"] == "demo-lht65").unwrap();
    assert_eq!(lht65["type"], "Feature");
    // Longitude first, then latitude and height.
    assert_eq!(lht65["geometry"], json!({ "type": "Point", "coordinates": [11.57549, 48.13743, 3.0] }));
    let p = &lht65["properties"];
    assert_eq!((&p["district"], &p["licence"]), (&json!("Altstadt"), &json!("dl-by-de/2.0")));
    assert_eq!(p["licence_uri"], "http://dcat-ap.de/def/licenses/dl-by-de/2.0");
    assert_eq!(
        p["readings"]["relative_humidity"],
        json!({ "value": 88.6, "unit": "%", "time": "2026-11-25T09:50:00Z", "quality": "good" })
    );
    let park = body["features"].as_array().unwrap().iter().find(|f| f["id"] == "demo-lht65-park").unwrap();
    assert_eq!(park["properties"]["last_seen"], "2026-11-25T09:05:00Z");
    assert_eq!(park["properties"]["readings"]["air_temperature"]["value"], json!(18.0));
}

#[tokio::test]
async fn the_catalogue_describes_open_datasets_with_licences_and_coverage() {
    let (f, _) = Fixture::seeded();
    let answer = f.get("/v1/catalog").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.header(header::ETAG).is_some());
    let text = answer.text();
    assert!(!text.contains("depot") && !text.contains("Ost"), "an internal device or its district leaked");
    let body = answer.json();
    assert_eq!((&body["@type"], &body["@id"]), (&json!("dcat:Catalog"), &json!(format!("{BASE}/v1/catalog"))));
    assert_eq!(body["dcat:service"][0]["dcat:endpointDescription"]["@id"], format!("{BASE}/openapi.json"));
    let datasets = body["dcat:dataset"].as_array().unwrap();
    let find = |id: &str| {
        datasets
            .iter()
            .find(|d| d["@id"] == format!("{BASE}/v1/catalog#{id}"))
            .unwrap_or_else(|| panic!("no dataset {id} in {body}"))
    };
    let district = find("district/Altstadt/air_temperature");
    assert_eq!(
        district["dcat:distribution"][0]["dcat:accessURL"]["@id"],
        format!("{BASE}/v1/aggregates?district=Altstadt&quantity=air_temperature&interval=1h")
    );
    let device = find("device/demo-lht65/air_temperature");
    // Whole UTC days around the stored readings.
    assert_eq!(
        device["dct:temporal"],
        json!({ "@type": "dct:PeriodOfTime", "dcat:startDate": "2026-11-25T00:00:00Z", "dcat:endDate": "2026-11-26T00:00:00Z" })
    );
    let distributions = device["dcat:distribution"].as_array().unwrap();
    assert_eq!(distributions.len(), 3);
    // DCAT-AP.de 3.0: the media type is an IANA IRI, not a literal.
    assert_eq!(distributions[1]["dcat:mediaType"]["@id"], "https://www.iana.org/assignments/media-types/text/csv");
    assert_eq!(
        distributions[1]["dcat:accessURL"]["@id"],
        format!("{BASE}/v1/readings?device=demo-lht65&quantity=air_temperature&format=csv")
    );
    assert_eq!(distributions[0]["dct:license"]["@id"], "http://dcat-ap.de/def/licenses/dl-by-de/2.0");
    assert!(distributions[0]["dcatde:licenseAttributionByText"].is_string(), "a BY licence names its attribution");
    // Derived quantities are datasets too; a zero licence needs no attribution.
    let park = find("device/demo-lht65-park/dew_point_temperature");
    assert!(park.get("dct:temporal").is_none(), "no data, no coverage: {park}");
    assert_eq!(park["dcat:distribution"][0]["dct:license"]["@id"], "http://dcat-ap.de/def/licenses/dl-zero-de/2.0");
    assert!(park["dcat:distribution"][0].get("dcatde:licenseAttributionByText").is_none());
}

// ---- The admin API: tokens ----

/// Every admin route, once per method, with a body where it takes one.
fn admin_routes(letter: u64) -> Vec<(Method, String, String)> {
    let device = new_device("demo-lht65", "Umweltamt", "A840410000000001");
    vec![
        (Method::GET, "/v1/admin/devices".into(), String::new()),
        (Method::POST, "/v1/admin/devices".into(), new_device("neu", "Umweltamt", "A8404100000000F1")),
        (Method::GET, "/v1/admin/devices/demo-lht65".into(), String::new()),
        (Method::PUT, "/v1/admin/devices/demo-lht65".into(), device),
        (Method::PUT, "/v1/admin/devices/demo-lht65/visibility".into(), r#"{"visibility":"internal"}"#.into()),
        (Method::GET, "/v1/admin/profiles".into(), String::new()),
        (Method::GET, "/v1/admin/profiles/dragino-lht65".into(), String::new()),
        (Method::PUT, "/v1/admin/profiles/neu".into(), "id = \"neu\"\n".into()),
        (Method::POST, "/v1/admin/profiles/dragino-lht65/test".into(), String::new()),
        (Method::GET, "/v1/admin/dead-letters".into(), String::new()),
        (Method::POST, "/v1/admin/dead-letters/replay".into(), r#"{"all":true}"#.into()),
        (Method::GET, format!("/v1/admin/dead-letters/{letter}"), String::new()),
        (Method::POST, format!("/v1/admin/dead-letters/{letter}/replay"), String::new()),
        (Method::POST, "/v1/admin/reload".into(), String::new()),
        (Method::GET, "/v1/admin/citizens".into(), String::new()),
        (Method::POST, "/v1/admin/citizens/c-0123456789ab/approve".into(), String::new()),
        (Method::DELETE, "/v1/admin/citizens/c-0123456789ab".into(), String::new()),
    ]
}

#[tokio::test]
async fn the_public_page_renders_open_devices_without_javascript_and_hides_internal_ones() {
    let (f, _) = Fixture::seeded();
    let page = f.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header(header::CONTENT_TYPE).unwrap().starts_with("text/html"));
    assert!(page.header(header::CONTENT_SECURITY_POLICY).unwrap().contains("script-src 'self'"));
    let html = page.text();
    assert!(html.contains("<html lang=\"de\">") && html.contains("Aktuelle Werte"), "{html}");
    assert!(html.contains("88,6 %"), "the server-rendered table has the latest values: {html}");
    assert!(html.contains("Rathausplatz") && !html.contains("demo-lht65-depot") && !html.contains("Bauhof"), "{html}");
    assert!(!html.contains("register-form"), "citizens are off by default");
    let english = f.get("/?lang=en").await.text();
    assert!(english.contains("<html lang=\"en\">") && english.contains("88.6 %") && english.contains("Latest values"));
    for (asset, kind) in [("/page/app.js", "text/javascript"), ("/page/style.css", "text/css")] {
        let a = f.get(asset).await;
        assert_eq!(a.status, StatusCode::OK, "{asset}");
        assert!(a.header(header::CONTENT_TYPE).unwrap().starts_with(kind), "{asset}");
    }
    // Citizen routes are off by default: they answer as if they did not exist.
    let push = f.send(Request::post("/v1/citizens/push").body(Body::from("{}")).unwrap()).await;
    assert_eq!(push.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_admin_route_wants_a_valid_bearer_token_and_does_nothing_without() {
    let (f, letters) = Fixture::seeded();
    let devices_before = std::fs::read_to_string(&f.devices).unwrap();
    for (method, uri, body) in admin_routes(letters.lht65_good) {
        for token in [None, Some("wrong-token-wrong-token-wrong")] {
            let answer = f.admin(method.clone(), &uri, token, body.clone()).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {uri} {token:?}: {}", answer.text());
            assert_eq!(answer.header(header::WWW_AUTHENTICATE), Some("Bearer realm=\"messnetz-admin\""), "{method} {uri}");
            assert!(!answer.error().is_empty());
        }
        // Another scheme with a valid secret is no bearer token.
        let mut request = Request::builder().method(method.clone()).uri(&uri);
        request = request.header(
            header::AUTHORIZATION,
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("x:{OPS}"))),
        );
        let answer = f.send(request.body(Body::from(body.clone())).unwrap()).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {uri} with Basic");
    }
    // Nothing changed: the file, the letters, the profiles.
    assert_eq!(std::fs::read_to_string(&f.devices).unwrap(), devices_before);
    assert_eq!(f.store.dead_letters(0, 10).unwrap().len(), 4);
    assert!(!f.profiles.join("neu.toml").exists());
    assert!(f.audited_changes().is_empty(), "{:?}", f.audit_entries());
    // Refusals are on record, under no operator, without the token.
    let audit = std::fs::read_to_string(&f.audit).unwrap();
    assert!(audit.contains("\"who\":\"-\"") && !audit.contains("wrong-token") && !audit.contains(OPS), "{audit}");
}

#[tokio::test]
async fn wrong_tokens_are_limited_per_client_and_the_open_api_is_not() {
    let f = Fixture::with(|s| s.admin.max_failures_per_minute = 3);
    for i in 0..3 {
        let answer = f.admin(Method::GET, "/v1/admin/devices", Some(&format!("guess-{i}-aaaaaaaaaaaaaaaaaaaaaaaa")), "").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    // The limit reached: refused before any check, even with the right token.
    for token in ["guess-4-aaaaaaaaaaaaaaaaaaaaaaaa", OPS] {
        let answer = f.admin(Method::GET, "/v1/admin/devices", Some(token), "").await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{}", answer.text());
        let wait: u64 = answer.header(header::RETRY_AFTER).unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(answer.error().contains("too many"), "{}", answer.text());
    }
    // Another client is not held back; nor is the open API.
    let other = f.admin_from("192.0.2.2", Method::GET, "/v1/admin/devices", Some(OPS), "").await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text());
    assert_eq!(f.get("/v1/devices").await.status, StatusCode::OK);

    // Requests without any token cost nothing to send: a flood is recorded once a minute per
    // client and route, while each wrong token (which counts) is recorded.
    for _ in 0..20 {
        let answer = f.admin_from("192.0.2.3", Method::GET, "/v1/admin/profiles", None, "").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let entries = f.audit_entries();
    let on = |client: &str, action: &str| entries.iter().filter(|e| e["client"] == client && e["action"] == action).count();
    assert_eq!(on("192.0.2.3", "GET /v1/admin/profiles"), 1, "{entries:?}");
    // Three wrong tokens, and the first refusal over the limit (the second is sampled away).
    assert_eq!(on("192.0.2.1", "GET /v1/admin/devices"), 4, "{entries:?}");
}

// ---- The admin API: devices ----

#[tokio::test]
async fn admin_device_lists_and_views_are_scoped_to_departments() {
    let (f, _) = Fixture::seeded();
    let list = |token| f.admin(Method::GET, "/v1/admin/devices", Some(token), "");
    let ops = list(OPS).await;
    assert_eq!(ops.status, StatusCode::OK);
    assert_eq!(ids(&ops.json(), "devices"), ["demo-lht65"]);
    assert_eq!(ids(&list(GARTEN).await.json(), "devices"), ["demo-lht65-park"]);
    let all = list(ROOT).await.json();
    assert_eq!(ids(&all, "devices"), ["demo-lht65", "demo-lht65-depot", "demo-lht65-park"], "internal ones too: {all}");
    let depot = all["devices"].as_array().unwrap().iter().find(|d| d["id"] == "demo-lht65-depot").unwrap();
    assert_eq!((&depot["visibility"], &depot["dev_eui"]), (&json!("internal"), &json!("A840410000000003")), "{depot}");
    assert!(depot["last_seen"].is_string(), "{depot}");

    let shown = f.admin(Method::GET, "/v1/admin/devices/demo-lht65-park", Some(GARTEN), "").await;
    assert_eq!((shown.status, shown.json()["owner"].as_str()), (StatusCode::OK, Some("Gartenamt")));
    assert_eq!(shown.json()["last_seen"], "2026-11-25T09:05:00Z");
    // Another department's device answers exactly like an unknown one.
    let foreign = f.admin(Method::GET, "/v1/admin/devices/demo-lht65-park", Some(OPS), "").await;
    let unknown = f.admin(Method::GET, "/v1/admin/devices/no-such-device", Some(OPS), "").await;
    assert_eq!((foreign.status, unknown.status), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(foreign.body, unknown.body);
}

#[tokio::test]
async fn creating_a_device_checks_it_writes_the_file_and_publishes_it() {
    let f = Fixture::new();
    let create = |body: String| f.admin(Method::POST, "/v1/admin/devices", Some(OPS), body);
    let refused = [
        (create(new_device("umwelt-neu", "Gartenamt", "A8404100000000F1")).await, StatusCode::BAD_REQUEST, "owner:"),
        (create("{not json".into()).await, StatusCode::BAD_REQUEST, "body:"),
        (create(new_device("mit leerzeichen", "Umweltamt", "A8404100000000F1")).await, StatusCode::BAD_REQUEST, "id:"),
        // Ids are global: taken by another department's device is taken.
        (create(new_device("demo-lht65-park", "Umweltamt", "A8404100000000F1")).await, StatusCode::CONFLICT, "the id"),
    ];
    for (answer, status, start) in &refused {
        assert_eq!(answer.status, *status, "{}", answer.text());
        assert!(answer.error().starts_with(start), "{start}: {}", answer.text());
    }
    let mut bad: Value = serde_json::from_str(&new_device("umwelt-kaputt", "Umweltamt", "A8404100000000F2")).unwrap();
    bad["profile"] = json!("no-such-profile");
    let answer = create(bad.to_string()).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.text());
    assert!(answer.json()["problems"][0].as_str().unwrap().contains("no-such-profile"), "{}", answer.text());
    // A DevEUI another department's device has: refused without naming that device.
    let answer = create(new_device("umwelt-dup", "Umweltamt", "A840410000000002")).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.text());
    let problem = answer.json()["problems"][0].as_str().unwrap().to_owned();
    assert!(problem.contains("another department") && !problem.contains("demo-lht65-park"), "{problem}");

    let answer = create(new_device("umwelt-neu", "Umweltamt", "A8404100000000F1")).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    let body = answer.json();
    assert_eq!((&body["id"], &body["owner"], &body["last_seen"]), (&json!("umwelt-neu"), &json!("Umweltamt"), &Value::Null));

    // The file is the source of truth: the entry is in it, the comments still are, the
    // refused ones are not.
    let text = std::fs::read_to_string(&f.devices).unwrap();
    assert!(text.starts_with("# Demo device list"), "{text}");
    assert!(text.contains("[[device]]\nid = \"umwelt-neu\""), "{text}");
    assert!(!text.contains("umwelt-kaputt") && !text.contains("umwelt-dup") && !text.contains("mit leerzeichen"), "{text}");
    assert!(ids(&f.get("/v1/devices").await.json(), "devices").contains(&"umwelt-neu".to_owned()));
    assert_eq!(f.get("/v1/devices/umwelt-neu/latest").await.status, StatusCode::OK);

    let changes = f.audited_changes();
    assert_eq!(changes, [("umweltamt-ops".to_owned(), "device.create".to_owned(), "umwelt-neu".to_owned())]);
    // Every request is on record before it acts, then with its status: refusals included.
    let attempts: Vec<String> = f
        .audit_entries()
        .iter()
        .filter(|e| e["action"] == "POST /v1/admin/devices")
        .map(|e| format!("{} {}", e["who"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    let statuses: Vec<&str> =
        attempts.iter().skip(1).step_by(2).map(|a| a["umweltamt-ops ".len()..].split(':').next().unwrap()).collect();
    assert_eq!(statuses, ["400", "400", "400", "409", "422", "422", "ok"], "{attempts:?}");
    assert!(attempts.iter().step_by(2).all(|a| a == "umweltamt-ops attempt"), "{attempts:?}");
    let audit = std::fs::read_to_string(&f.audit).unwrap();
    assert!(!audit.contains(OPS), "a token is in the audit log");
}

#[tokio::test]
async fn updating_a_device_and_its_visibility_and_the_open_api_follows() {
    let f = Fixture::new();
    let mut lht65: Value = serde_json::from_str(&new_device("demo-lht65", "Umweltamt", "A840410000000001")).unwrap();
    lht65["name"] = json!("Rathausplatz, umgesetzt");
    let answer = f.admin(Method::PUT, "/v1/admin/devices/demo-lht65", Some(OPS), lht65.to_string()).await;
    assert_eq!(
        (answer.status, answer.json()["name"].as_str()),
        (StatusCode::OK, Some("Rathausplatz, umgesetzt")),
        "{}",
        answer.text()
    );
    assert_eq!(f.get("/v1/devices").await.json()["devices"][0]["name"], "Rathausplatz, umgesetzt");
    assert!(std::fs::read_to_string(&f.devices).unwrap().contains("Rathausplatz, umgesetzt"));

    // The id can't change; a department can't give its device away.
    let answer = f
        .admin(Method::PUT, "/v1/admin/devices/demo-lht65", Some(OPS), new_device("anders", "Umweltamt", "A840410000000001"))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().starts_with("id:"), "{}", answer.text());
    let answer = f
        .admin(Method::PUT, "/v1/admin/devices/demo-lht65", Some(OPS), new_device("demo-lht65", "Gartenamt", "A840410000000001"))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().starts_with("owner:"), "{}", answer.text());

    // Another department's device: the same 404 as an unknown one, for every change.
    let unknown = f.admin(Method::GET, "/v1/admin/devices/no-such-device", Some(OPS), "").await;
    let update = f
        .admin(
            Method::PUT,
            "/v1/admin/devices/demo-lht65-park",
            Some(OPS),
            new_device("demo-lht65-park", "Umweltamt", "A840410000000002"),
        )
        .await;
    let visibility =
        f.admin(Method::PUT, "/v1/admin/devices/demo-lht65-park/visibility", Some(OPS), r#"{"visibility":"internal"}"#).await;
    let unknown_visibility =
        f.admin(Method::PUT, "/v1/admin/devices/no-such-device/visibility", Some(OPS), r#"{"visibility":"internal"}"#).await;
    for answer in [&update, &visibility, &unknown_visibility] {
        assert_eq!((answer.status, &answer.body), (StatusCode::NOT_FOUND, &unknown.body), "{}", answer.text());
    }

    for body in ["", "{\"visibility\":\"secret\"}", "{\"visibility\":\"open\",\"also\":1}"] {
        let answer = f.admin(Method::PUT, "/v1/admin/devices/demo-lht65/visibility", Some(OPS), body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}: {}", answer.text());
        assert!(answer.error().starts_with("body:"), "{}", answer.text());
    }
    let answer = f.admin(Method::PUT, "/v1/admin/devices/demo-lht65/visibility", Some(OPS), r#"{"visibility":"internal"}"#).await;
    assert_eq!((answer.status, answer.json()["visibility"].as_str()), (StatusCode::OK, Some("internal")), "{}", answer.text());
    assert_eq!(f.get("/v1/devices/demo-lht65/latest").await.status, StatusCode::NOT_FOUND);
    assert_eq!(ids(&f.get("/v1/devices").await.json(), "devices"), ["demo-lht65-park"]);
    assert!(std::fs::read_to_string(&f.devices).unwrap().contains("visibility = \"internal\""));
    let answer = f.admin(Method::PUT, "/v1/admin/devices/demo-lht65/visibility", Some(OPS), r#"{"visibility":"open"}"#).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(f.get("/v1/devices/demo-lht65/latest").await.status, StatusCode::OK);

    let actions: Vec<String> = f.audited_changes().into_iter().map(|(_, a, _)| a).collect();
    assert_eq!(actions, ["device.update", "device.visibility", "device.visibility"]);
}

// ---- The admin API: profiles ----

#[tokio::test]
async fn profiles_are_listed_shown_and_tested() {
    let f = Fixture::new();
    let list = f.admin(Method::GET, "/v1/admin/profiles", Some(OPS), "").await;
    assert_eq!(list.status, StatusCode::OK);
    let body = list.json();
    let lht65 = body["profiles"].as_array().unwrap().iter().find(|p| p["id"] == "dragino-lht65").cloned().unwrap();
    assert_eq!((&lht65["your_devices"], &lht65["runs_script"]), (&json!(1), &json!(false)), "{lht65}");
    assert!(lht65["quantities"].as_array().unwrap().contains(&json!("air_temperature")), "{lht65}");
    let all = f.admin(Method::GET, "/v1/admin/profiles", Some(ROOT), "").await.json();
    let count = std::fs::read_dir(&f.profiles).unwrap().count();
    assert_eq!(all["profiles"].as_array().unwrap().len(), count, "every bundled profile");
    assert!(all["profiles"].as_array().unwrap().iter().any(|p| p["id"] == "dragino-lht65" && p["your_devices"] == 3));

    let shown = f.admin(Method::GET, "/v1/admin/profiles/dragino-lht65", Some(GARTEN), "").await;
    assert_eq!(shown.status, StatusCode::OK);
    let file = std::fs::read_to_string(f.profiles.join("dragino-lht65.toml")).unwrap();
    assert_eq!(shown.json()["toml"], json!(file));
    let unknown = f.admin(Method::GET, "/v1/admin/profiles/no-such-profile", Some(OPS), "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let test = |id: &str, body: String| f.admin(Method::POST, format!("/v1/admin/profiles/{id}/test"), Some(OPS), body);
    let loaded = test("dragino-lht65", String::new()).await;
    assert_eq!(loaded.status, StatusCode::OK);
    assert_eq!(loaded.json(), json!({ "id": "dragino-lht65", "ok": true, "problems": [], "mismatches": [] }));
    let copy = file.replace("id = \"dragino-lht65\"", "id = \"lht65-copy\"");
    assert_eq!(test("lht65-copy", copy.clone()).await.json()["ok"], true);
    // Broken, or an example that doesn't decode as it says: 200 with ok = false and why.
    let broken = test("kaputt", "id = \"kaputt\"\nbogus = 1\n".into()).await;
    assert_eq!((broken.status, &broken.json()["ok"]), (StatusCode::OK, &json!(false)), "{}", broken.text());
    assert!(!broken.json()["problems"].as_array().unwrap().is_empty());
    let wrong = test("lht65-copy", copy.replacen("value = 28.29", "value = 30.0", 1)).await;
    let body = wrong.json();
    assert_eq!((wrong.status, &body["ok"]), (StatusCode::OK, &json!(false)), "{body}");
    assert_eq!(body["mismatches"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["mismatches"][0]["example"], json!(0), "{body}");
    // Nothing tested is saved.
    assert!(!f.profiles.join("lht65-copy.toml").exists() && !f.profiles.join("kaputt.toml").exists());

    assert_eq!(test("no-such-profile", String::new()).await.status, StatusCode::NOT_FOUND);
    for id in [".hidden", "mit%20leerzeichen"] {
        let answer = test(id, copy.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{id}: {}", answer.text());
        assert!(answer.error().starts_with("id:"), "{}", answer.text());
    }
    let not_text = f.admin(Method::POST, "/v1/admin/profiles/x/test", Some(OPS), vec![0xff, 0xfe, 0x00]).await;
    assert_eq!(not_text.status, StatusCode::BAD_REQUEST, "{}", not_text.text());
}

#[tokio::test]
async fn a_profile_upload_is_checked_whole_before_it_is_written() {
    let f = Fixture::new();
    let file = std::fs::read_to_string(f.profiles.join("dragino-lht65.toml")).unwrap();
    let upload = |token, id: &str, body: String| f.admin(Method::PUT, format!("/v1/admin/profiles/{id}"), Some(token), body);

    let broken = upload(OPS, "neu", "id = \"neu\"\nbogus = 1\n".into()).await;
    assert_eq!(broken.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", broken.text());
    assert!(!broken.json()["problems"].as_array().unwrap().is_empty());
    let copy = file.replace("id = \"dragino-lht65\"", "id = \"lht65-copy\"");
    let mismatch = upload(OPS, "lht65-copy", copy.replacen("value = 28.29", "value = 30.0", 1)).await;
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", mismatch.text());
    assert!(mismatch.error().contains("examples"), "{}", mismatch.text());
    assert!(!f.profiles.join("neu.toml").exists() && !f.profiles.join("lht65-copy.toml").exists());
    // Used by other departments' devices: only an all-departments token may replace it.
    let shared = upload(OPS, "dragino-lht65", file.clone()).await;
    assert_eq!(shared.status, StatusCode::CONFLICT, "{}", shared.text());
    // The profile's id must be its file name, which is the URL's id.
    let renamed = upload(OPS, "anderer-name", copy.clone()).await;
    assert_eq!(renamed.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", renamed.text());
    assert!(renamed.json()["problems"].to_string().contains("anderer-name"), "{}", renamed.text());
    assert!(!f.profiles.join("anderer-name.toml").exists());
    let bad_id = upload(OPS, ".hidden", copy.clone()).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST, "{}", bad_id.text());

    let created = upload(OPS, "lht65-copy", copy.clone()).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    assert_eq!((&created.json()["id"], &created.json()["your_devices"]), (&json!("lht65-copy"), &json!(0)));
    assert_eq!(std::fs::read_to_string(f.profiles.join("lht65-copy.toml")).unwrap(), copy);
    let list = f.admin(Method::GET, "/v1/admin/profiles", Some(OPS), "").await.json();
    assert!(list["profiles"].as_array().unwrap().iter().any(|p| p["id"] == "lht65-copy"), "loaded at once");
    let replaced = upload(ROOT, "dragino-lht65", file.replace("Dragino", "Dragino (checked)")).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text());

    let changes = f.audited_changes();
    assert_eq!(
        changes,
        [
            ("umweltamt-ops".to_owned(), "profile.upload".to_owned(), "lht65-copy".to_owned()),
            ("it".to_owned(), "profile.upload".to_owned(), "dragino-lht65".to_owned())
        ]
    );
}

// ---- The admin API: dead letters ----

#[tokio::test]
async fn dead_letters_are_listed_per_department_filtered_and_paged() {
    let (f, l) = Fixture::seeded();
    let list = |token, query: &str| f.admin(Method::GET, format!("/v1/admin/dead-letters{query}"), Some(token), "");
    let ids_of = |body: &Value| -> Vec<u64> {
        body["dead_letters"].as_array().unwrap().iter().map(|d| d["id"].as_u64().unwrap()).collect()
    };

    let all = list(ROOT, "").await;
    assert_eq!(all.status, StatusCode::OK);
    let body = all.json();
    assert_eq!(ids_of(&body), [l.park_short, l.stranger, l.lht65_good, l.no_route], "oldest first: {body}");
    assert!(body["next"].is_null(), "{body}");
    let first = &body["dead_letters"][0];
    assert_eq!(
        (&first["device"], &first["format"], &first["topic"], &first["received_at"]),
        (
            &json!("demo-lht65-park"),
            &json!("ttn-v3"),
            &json!("v3/messnetz-test/devices/demo-lht65-park/up"),
            &json!("2026-11-20T10:00:01Z")
        )
    );
    assert!(first["payload_bytes"].as_u64().unwrap() > 100 && first.get("payload").is_none(), "{first}");
    // A department sees its devices' letters only; no one but "*" sees letters of no device.
    assert_eq!(ids_of(&list(OPS, "").await.json()), [l.lht65_good]);
    assert_eq!(ids_of(&list(GARTEN, "").await.json()), [l.park_short]);

    assert_eq!(ids_of(&list(ROOT, "?device=demo-lht65-park").await.json()), [l.park_short]);
    assert_eq!(ids_of(&list(ROOT, "?reason=UNKNOWN%20device").await.json()), [l.stranger], "case-insensitive");
    assert_eq!(ids_of(&list(OPS, "?reason=unknown").await.json()), Vec::<u64>::new());

    let page = list(ROOT, "?limit=3").await.json();
    assert_eq!(ids_of(&page), [l.park_short, l.stranger, l.lht65_good]);
    let next = page["next"].as_u64().expect("a next page");
    let rest = list(ROOT, &format!("?after={next}&limit=3")).await.json();
    assert_eq!((ids_of(&rest), &rest["next"]), (vec![l.no_route], &Value::Null), "{rest}");

    for query in ["?limit=abc", "?after=-1"] {
        let answer = list(ROOT, query).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(answer.error().starts_with(&query[1..query.find('=').unwrap()]), "{}", answer.text());
    }
}

#[tokio::test]
async fn a_dead_letter_is_shown_with_its_message_to_its_department_only() {
    let (f, l) = Fixture::seeded();
    let show = |token, id: &str| f.admin(Method::GET, format!("/v1/admin/dead-letters/{id}"), Some(token), "");
    let answer = show(GARTEN, &l.park_short.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let body = answer.json();
    let payload = base64::engine::general_purpose::STANDARD.decode(body["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload, ttn_uplink("demo-lht65-park", "A840410000000002", 1, "00", "2026-11-20T10:00:00Z"));
    assert_eq!(body["payload_text"], json!(String::from_utf8(payload).unwrap()));
    assert_eq!(body["reason"], "profile dragino-lht65: payload too short");

    let unknown = show(GARTEN, "999999").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    for (token, id) in [(OPS, l.park_short.to_string()), (GARTEN, l.stranger.to_string()), (GARTEN, "abc".into())] {
        let answer = show(token, &id).await;
        assert_eq!((answer.status, &answer.body), (StatusCode::NOT_FOUND, &unknown.body), "{id}");
    }
    assert_eq!(show(ROOT, &l.stranger.to_string()).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_replayed_dead_letter_lands_once_and_one_that_fails_again_stays() {
    let (f, l) = Fixture::seeded();
    let replay = |token, id: u64| f.admin(Method::POST, format!("/v1/admin/dead-letters/{id}/replay"), Some(token), "");

    // Another department's letter: 404, as if it did not exist; it stays.
    let foreign = replay(OPS, l.park_short).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    assert_eq!(foreign.body, replay(OPS, 999_999).await.body);

    let stored = replay(OPS, l.lht65_good).await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.text());
    let body = stored.json();
    assert_eq!(
        (&body["id"], &body["outcome"], &body["device"]),
        (&json!(l.lht65_good), &json!("stored"), &json!("demo-lht65")),
        "{body}"
    );
    // The four measured quantities and the two derived ones.
    assert_eq!(body["readings"], 6, "{body}");
    let series = f
        .get("/v1/readings?device=demo-lht65&quantity=air_temperature&from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z")
        .await
        .json();
    assert_eq!(series["readings"], json!([{ "time": "2026-11-20T10:00:00Z", "value": 28.29, "quality": "good" }]), "{series}");
    // Gone once replayed: a second replay and a show find nothing.
    assert_eq!(replay(OPS, l.lht65_good).await.status, StatusCode::NOT_FOUND);
    let shown = f.admin(Method::GET, &format!("/v1/admin/dead-letters/{}", l.lht65_good), Some(OPS), "").await;
    assert_eq!(shown.status, StatusCode::NOT_FOUND);

    // Fails again: stays, with the new reason.
    let failed = replay(GARTEN, l.park_short).await;
    let body = failed.json();
    assert_eq!((failed.status, &body["outcome"]), (StatusCode::OK, &json!("failed")), "{body}");
    assert!(body["reason"].as_str().unwrap().contains("dragino-lht65"), "{body}");
    let shown = f.admin(Method::GET, &format!("/v1/admin/dead-letters/{}", l.park_short), Some(GARTEN), "").await.json();
    assert_eq!(shown["reason"], body["reason"], "{shown}");

    // A topic no subscription matches: refused, not guessed.
    let refused = replay(ROOT, l.no_route).await;
    assert_eq!((refused.status, &refused.json()["outcome"]), (StatusCode::OK, &json!("refused")), "{}", refused.text());

    let outcomes: Vec<(String, String)> = f
        .audit_entries()
        .iter()
        .filter(|e| e["action"] == "dead_letter.replay")
        .map(|e| (e["who"].as_str().unwrap().to_owned(), e["outcome"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        outcomes,
        [("umweltamt-ops".into(), "ok".into()), ("gartenamt-ops".into(), "failed".into()), ("it".into(), "refused".into())]
    );
}

#[tokio::test]
async fn two_replays_of_one_letter_at_once_store_it_once() {
    let (f, l) = Fixture::seeded();
    let uri = format!("/v1/admin/dead-letters/{}/replay", l.lht65_good);
    let (a, b) = tokio::join!(f.admin(Method::POST, &uri, Some(OPS), ""), f.admin(Method::POST, &uri, Some(ROOT), ""));
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::NOT_FOUND], "{} {}", a.text(), b.text());
    let stored = if a.status == StatusCode::OK { a.json() } else { b.json() };
    assert_eq!(stored["outcome"], "stored", "{stored}");
    let latest = f
        .get("/v1/readings?device=demo-lht65&quantity=relative_humidity&from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z")
        .await
        .json();
    assert_eq!(latest["readings"].as_array().unwrap().len(), 1, "{latest}");
    assert_eq!(f.audit_entries().iter().filter(|e| e["action"] == "dead_letter.replay" && e["outcome"] == "ok").count(), 1);
}

#[tokio::test]
async fn bulk_replays_pick_letters_by_id_device_reason_or_all() {
    let (f, l) = Fixture::seeded();
    let bulk = |token, body: &str| f.admin(Method::POST, "/v1/admin/dead-letters/replay", Some(token), body.to_owned());
    for body in ["", "{}", "[1]", "{\"ids\": [1], \"colour\": \"red\"}"] {
        let answer = bulk(OPS, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}: {}", answer.text());
        assert!(answer.error().starts_with("body:"), "{}", answer.text());
    }
    // Letters of other departments are "gone" to this operator, and untouched.
    let answer = bulk(OPS, &format!("{{\"ids\": [{}, {}]}}", l.park_short, l.lht65_good)).await;
    let body = answer.json();
    assert_eq!(
        (answer.status, &body["replayed"], &body["stored"], &body["more"]),
        (StatusCode::OK, &json!(2), &json!(1), &json!(false)),
        "{body}"
    );
    assert_eq!(body["results"][0], json!({ "id": l.park_short, "outcome": "gone" }));
    assert_eq!(body["results"][1]["outcome"], "stored");
    assert_eq!(f.store.dead_letters(0, 10).unwrap().len(), 3);

    let by_device = bulk(GARTEN, "{\"device\": \"demo-lht65-park\"}").await.json();
    assert_eq!((&by_device["replayed"], &by_device["stored"]), (&json!(1), &json!(0)), "{by_device}");
    assert_eq!(by_device["results"][0]["outcome"], "failed");
    let by_reason = bulk(ROOT, "{\"reason\": \"unknown device\"}").await.json();
    assert_eq!(
        by_reason["results"],
        json!([{ "id": l.stranger, "outcome": "failed", "reason": by_reason["results"][0]["reason"] }])
    );
    assert!(by_reason["results"][0]["reason"].as_str().unwrap().contains("unknown device"), "{by_reason}");
    let all = bulk(ROOT, "{\"all\": true}").await.json();
    let outcomes: Vec<&str> = all["results"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["failed", "failed", "refused"], "{all}");
    assert_eq!((&all["replayed"], &all["stored"], &all["more"]), (&json!(3), &json!(0), &json!(false)), "{all}");
    assert_eq!(f.store.dead_letters(0, 10).unwrap().len(), 3, "what failed again stays");
}

// ---- The admin API: reload, limits, the audit log ----

#[tokio::test]
async fn reload_reads_the_files_again_and_refuses_a_broken_set() {
    let f = Fixture::new();
    let mut text = std::fs::read_to_string(&f.devices).unwrap();
    text.push_str("\n[[device]]\nid = \"nachgetragen\"\nname = \"N\"\nprofile = \"dragino-lht65\"\ndev_eui = \"A8404100000000B1\"\nlat = 48.1\nlon = 11.6\ndistrict = \"Altstadt\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n");
    std::fs::write(&f.devices, &text).unwrap();
    assert!(!ids(&f.get("/v1/devices").await.json(), "devices").contains(&"nachgetragen".to_owned()), "not before the reload");
    let answer = f.admin(Method::POST, "/v1/admin/reload", Some(OPS), "").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let profiles = std::fs::read_dir(&f.profiles).unwrap().count();
    assert_eq!(answer.json(), json!({ "profiles": profiles, "devices": 4 }));
    assert!(ids(&f.get("/v1/devices").await.json(), "devices").contains(&"nachgetragen".to_owned()));

    // The same DevEUI twice: refused, the running set stays. Details only for "*".
    std::fs::write(&f.devices, text.replace("A8404100000000B1", "A840410000000003")).unwrap();
    let answer = f.admin(Method::POST, "/v1/admin/reload", Some(OPS), "").await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.text());
    assert_eq!(answer.json()["problems"], json!(["details are in the gateway's log"]));
    let answer = f.admin(Method::POST, "/v1/admin/reload", Some(ROOT), "").await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let problems = answer.json()["problems"].to_string();
    assert!(problems.contains("A840410000000003") && problems.contains("demo-lht65-depot"), "{problems}");
    assert_eq!(f.state.registry.devices().len(), 4);
    assert!(f.state.registry.devices().get("nachgetragen").is_some());
    // A devices file with problems (a hand edit in progress) is not built on.
    let broken = std::fs::read_to_string(&f.devices).unwrap();
    let answer =
        f.admin(Method::POST, "/v1/admin/devices", Some(OPS), new_device("umwelt-neu", "Umweltamt", "A8404100000000F1")).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.text());
    assert!(answer.error().contains("devices file has problems"), "{}", answer.text());
    assert_eq!(std::fs::read_to_string(&f.devices).unwrap(), broken);

    let outcomes: Vec<String> =
        f.audit_entries().iter().filter(|e| e["action"] == "reload").map(|e| e["outcome"].as_str().unwrap().to_owned()).collect();
    assert_eq!(outcomes, ["ok", "refused: 1 problem(s)", "refused: 1 problem(s)"]);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_and_change_nothing() {
    let f = Fixture::new();
    let before = std::fs::read_to_string(&f.devices).unwrap();
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(3 << 20));
    for (method, uri) in [
        (Method::POST, "/v1/admin/devices"),
        (Method::PUT, "/v1/admin/devices/demo-lht65"),
        (Method::PUT, "/v1/admin/devices/demo-lht65/visibility"),
        (Method::PUT, "/v1/admin/profiles/huge"),
        (Method::POST, "/v1/admin/profiles/huge/test"),
        (Method::POST, "/v1/admin/dead-letters/replay"),
    ] {
        let answer = f.admin(method.clone(), uri, Some(OPS), huge.clone()).await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{method} {uri}: {}", answer.text());
    }
    assert_eq!(std::fs::read_to_string(&f.devices).unwrap(), before);
    assert!(!f.profiles.join("huge.toml").exists());
}

#[tokio::test]
async fn without_a_writable_audit_log_changes_are_refused_and_reads_still_answer() {
    let f = Fixture::with(|s| s.admin.audit_log = Some(PathBuf::from("/dev/full")));
    let before = std::fs::read_to_string(&f.devices).unwrap();
    let list = f.admin(Method::GET, "/v1/admin/devices", Some(OPS), "").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    for (method, uri, body) in [
        (Method::POST, "/v1/admin/devices", new_device("umwelt-neu", "Umweltamt", "A8404100000000F1")),
        (Method::PUT, "/v1/admin/devices/demo-lht65/visibility", r#"{"visibility":"internal"}"#.to_owned()),
        (Method::POST, "/v1/admin/reload", String::new()),
    ] {
        let answer = f.admin(method.clone(), uri, Some(OPS), body).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{method} {uri}: {}", answer.text());
        assert!(answer.error().contains("audit log"), "{}", answer.text());
    }
    assert_eq!(std::fs::read_to_string(&f.devices).unwrap(), before);
    assert_eq!(f.get("/v1/devices/demo-lht65/latest").await.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_admin_paths_and_methods_are_not_routes() {
    let f = Fixture::new();
    let answer = f.admin(Method::DELETE, "/v1/admin/devices/demo-lht65", Some(OPS), "").await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    let answer = f.admin(Method::GET, "/v1/admin/nothing", Some(OPS), "").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let answer = f.send(Request::post("/v1/devices").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
}
