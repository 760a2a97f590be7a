//! The SensorThings API (`/sta/v1.1`): entities, paging, `$filter`, `$orderby`, `$expand`,
//! `$select`, errors and the invisibility of internal devices through `router(state).oneshot`;
//! and a real SensorThings client (`frost-sta-client` from PyPI) against the real binary.
//!
//! The store holds 10,000 air-temperature readings of demo-lht65 (one a minute), a few of its
//! humidity, one of demo-lht65-park, and readings of the internal demo-lht65-depot whose values
//! (99 °C) would match `result gt 25` if they ever leaked.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, Duration, Utc};
use messnetz::api::admin::AdminState;
use messnetz::api::{router, AppState};
use messnetz::ingest::Ingest;
use messnetz::metrics::Metrics;
use messnetz::model::{DeviceId, QualityFlag, Quantity, Reading};
use messnetz::registry::Registry;
use messnetz::replay::Replayer;
use messnetz::status::InputStatus;
use messnetz::store::{CommitStore, EmbeddedStore, WriteBatch};
use serde_json::Value;
use tower::ServiceExt;

use common::own_devices_and_profiles;

const ROOT: &str = "http://sta.test/sta/v1.1";
const AIR: &str = "demo-lht65:air_temperature";
const N: usize = 10_000;

fn start() -> DateTime<Utc> {
    "2026-11-18T00:00:00Z".parse().unwrap()
}

/// The i-th air temperature of demo-lht65: 15 to 27 °C in steps of 0.75, so 3 in 17 are above 25.
fn temperature(i: usize) -> f64 {
    15.0 + (i % 17) as f64 * 0.75
}

/// Readings the tests rely on, written in one batch.
fn seed(store: &EmbeddedStore) {
    let id = |s: &str| DeviceId::parse(s).unwrap();
    let reading = |device: &str, quantity: &str, value: f64, time: DateTime<Utc>, flag: QualityFlag, reason: &str| Reading {
        device: id(device),
        quantity: Quantity::by_name(quantity).unwrap(),
        value,
        time,
        flag,
        reason: reason.into(),
    };
    let mut batch = WriteBatch::default();
    for i in 0..N {
        let (value, flag, reason) = match i {
            5000 => (f64::NAN, QualityFlag::Bad, "range: not a finite number"),
            i if i % 97 == 0 => (temperature(i), QualityFlag::Suspect, "spike"),
            i => (temperature(i), QualityFlag::Good, ""),
        };
        let time = start() + Duration::minutes(i as i64);
        batch.readings.push(reading("demo-lht65", "air_temperature", value, time, flag, reason));
    }
    for i in 0..10 {
        batch.readings.push(reading(
            "demo-lht65",
            "relative_humidity",
            80.0 + i as f64,
            start() + Duration::hours(i),
            QualityFlag::Good,
            "",
        ));
    }
    batch.readings.push(reading("demo-lht65-park", "air_temperature", 18.0, start(), QualityFlag::Good, ""));
    for i in 0..50 {
        batch.readings.push(reading(
            "demo-lht65-depot",
            "air_temperature",
            99.0,
            start() + Duration::minutes(i),
            QualityFlag::Good,
            "",
        ));
    }
    batch.seen = vec![(id("demo-lht65"), Utc::now()), (id("demo-lht65-park"), Utc::now()), (id("demo-lht65-depot"), Utc::now())];
    batch.districts.insert(id("demo-lht65"), "Altstadt".into());
    batch.districts.insert(id("demo-lht65-park"), "Stadtpark".into());
    store.write(&batch).unwrap();
}

struct Fixture {
    _tmp: tempfile::TempDir,
    state: AppState,
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error in {}", self.text())).to_owned()
    }
}

impl Fixture {
    fn new() -> Self {
        Self::with(|_| {})
    }

    /// The fixture, with more readings written by `extra` after the common ones.
    fn with(extra: impl FnOnce(&EmbeddedStore)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (devices, profiles) = own_devices_and_profiles(tmp.path());
        let config = format!(
            "[store]\npath = {:?}\n[devices]\nfile = {:?}\n[profiles]\ndir = {:?}\n[open_data]\nbase_url = \"https://daten.example.org\"\n",
            tmp.path().join("data"),
            devices,
            profiles,
        );
        let config_path = tmp.path().join("messnetz.toml");
        std::fs::write(&config_path, config).unwrap();
        let settings = messnetz::config::load_with_env(Some(&config_path), std::iter::empty()).unwrap();
        let (profile_set, device_registry) = messnetz::registry::load(&settings).unwrap();
        let store = Arc::new(EmbeddedStore::open(&settings.store.path).unwrap());
        seed(&store);
        extra(&store);
        let registry = Arc::new(Registry::new(profile_set, device_registry));
        let metrics = Arc::new(Metrics::default());
        let keys = Arc::new(messnetz::sources::lorawan_keys::SessionKeys::load(None, std::iter::empty()).unwrap());
        let ingest = Ingest::offline(store.clone(), registry.clone(), metrics.clone(), None, keys);
        let admin = AdminState::new(&settings, Replayer::new(ingest, &settings.mqtt.subscriptions)).unwrap();
        let state = AppState {
            input: Arc::new(InputStatus::default()),
            store,
            registry,
            metrics,
            max_points: settings.api.max_points,
            open_data: Arc::new(settings.open_data.clone()),
            admin: Arc::new(admin),
            citizens: Default::default(),
            page: Arc::new(settings.page.clone()),
        };
        Self { _tmp: tmp, state }
    }

    /// GET a path below `/sta/v1.1` (or an absolute link the API gave), with `Host: sta.test`.
    async fn get(&self, path: &str) -> Answer {
        let uri = path.strip_prefix("http://sta.test").unwrap_or(path);
        let uri = if uri.starts_with("/sta/") { uri.to_owned() } else { format!("/sta/v1.1/{uri}") };
        let request = Request::get(uri.replace(' ', "%20")).header("host", "sta.test").body(Body::empty()).unwrap();
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec();
        Answer { status, content_type, body }
    }

    async fn ok(&self, path: &str) -> Value {
        let a = self.get(path).await;
        assert_eq!(a.status, StatusCode::OK, "GET {path}: {}", a.text());
        a.json()
    }

    /// Every entity of a collection, following `@iot.nextLink`; also the number of pages.
    async fn all(&self, path: &str) -> (Vec<Value>, usize) {
        let mut out = Vec::new();
        let mut next = Some(path.to_owned());
        let mut pages = 0;
        while let Some(url) = next {
            pages += 1;
            assert!(pages <= 2_000, "more pages than there can be");
            let page = self.ok(&url).await;
            out.extend(page["value"].as_array().unwrap().iter().cloned());
            next = page["@iot.nextLink"].as_str().map(str::to_owned);
            if let Some(n) = &next {
                assert!(n.starts_with(ROOT), "next links are absolute, from the Host header: {n}");
            }
        }
        (out, pages)
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["value"].as_array().unwrap().iter().map(|v| v["@iot.id"].as_str().unwrap().to_owned()).collect()
}

// ---- Entities ----

#[tokio::test]
async fn the_service_root_lists_every_entity_set() {
    let f = Fixture::new();
    let root = f.ok("/sta/v1.1").await;
    let names: Vec<&str> = root["value"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    for set in [
        "Things",
        "Locations",
        "HistoricalLocations",
        "Datastreams",
        "Sensors",
        "Observations",
        "ObservedProperties",
        "FeaturesOfInterest",
    ] {
        assert!(names.contains(&set), "{set} missing: {root}");
    }
    assert_eq!(root["value"][0]["url"], format!("{ROOT}/Things"));
    assert!(root["serverSettings"]["conformance"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c.as_str().unwrap().ends_with("/req/request-data")));
}

#[tokio::test]
async fn things_are_the_open_devices_with_their_location_and_links() {
    let f = Fixture::new();
    let things = f.ok("Things").await;
    assert_eq!(ids(&things), ["demo-lht65", "demo-lht65-park"]);
    let thing = f.ok("Things('demo-lht65')").await;
    assert_eq!(thing["@iot.selfLink"], format!("{ROOT}/Things('demo-lht65')"));
    assert_eq!(thing["name"], "Rathausplatz, Dragino LHT65");
    assert_eq!(thing["properties"]["district"], "Altstadt");
    assert_eq!(thing["properties"]["licence"], "dl-by-de/2.0");
    assert_eq!(thing["Datastreams@iot.navigationLink"], format!("{ROOT}/Things('demo-lht65')/Datastreams"));
    let locations = f.ok("Things('demo-lht65')/Locations").await;
    let location = &locations["value"][0];
    assert_eq!(location["encodingType"], "application/geo+json");
    assert_eq!(location["location"], serde_json::json!({"type": "Point", "coordinates": [11.57549, 48.13743]}));
    assert_eq!(ids(&f.ok("Locations('demo-lht65')/Things").await), ["demo-lht65"]);
    assert_eq!(f.ok("FeaturesOfInterest('demo-lht65')").await["feature"]["coordinates"][1], 48.13743);
    assert_eq!(f.ok("Things('demo-lht65')/HistoricalLocations").await["value"], serde_json::json!([]));

    // Links only ($ref), and a path through several navigation properties.
    let refs = f.ok("Things('demo-lht65')/Datastreams/$ref?$top=1").await;
    assert_eq!(refs["value"], serde_json::json!([{"@iot.selfLink": format!("{ROOT}/Datastreams('{AIR}')")}]), "{refs}");
    let via = f.ok(&format!("Things('demo-lht65')/Datastreams('{AIR}')/Thing/Locations")).await;
    assert_eq!(ids(&via), ["demo-lht65"]);

    // A property, and its raw value.
    assert_eq!(f.ok("Things('demo-lht65')/name").await, serde_json::json!({"name": "Rathausplatz, Dragino LHT65"}));
    let raw = f.get("Things('demo-lht65')/name/$value").await;
    assert_eq!((raw.status, raw.text().as_str()), (StatusCode::OK, "Rathausplatz, Dragino LHT65"));
    assert!(raw.content_type.starts_with("text/plain"));
}

#[tokio::test]
async fn datastreams_sensors_and_observed_properties_of_the_demo_device() {
    let f = Fixture::new();
    let streams = f.ok("Things('demo-lht65')/Datastreams").await;
    let list = ids(&streams);
    assert!(list.contains(&AIR.to_owned()) && list.contains(&"demo-lht65:relative_humidity".to_owned()), "{list:?}");
    let air = f.ok(&format!("Datastreams('{AIR}')")).await;
    assert_eq!(air["unitOfMeasurement"]["symbol"], "Cel");
    assert_eq!(air["unitOfMeasurement"]["name"], "degree Celsius");
    assert_eq!(air["observationType"], "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement");
    assert_eq!(air["phenomenonTime"], "2026-11-18T00:00:00Z/2026-11-24T22:39:00Z");
    assert!(air["properties"]["aggregates"]
        .as_str()
        .unwrap()
        .ends_with("/v1/aggregates?device=demo-lht65&quantity=air_temperature"));
    let property = f.ok(&format!("Datastreams('{AIR}')/ObservedProperty")).await;
    assert_eq!(property["@iot.id"], "air_temperature");
    assert_eq!(property["definition"], "http://vocab.nerc.ac.uk/standard_name/air_temperature/");
    let sensor = f.ok(&format!("Datastreams('{AIR}')/Sensor")).await;
    assert_eq!(sensor["@iot.id"], "dragino-lht65");
    assert_eq!(f.ok(&format!("Datastreams('{AIR}')/Thing")).await["@iot.id"], "demo-lht65");
    assert!(ids(&f.ok("Sensors('dragino-lht65')/Datastreams").await).contains(&AIR.to_owned()));
    let by_property = ids(&f.ok("ObservedProperties('air_temperature')/Datastreams").await);
    assert!(by_property.contains(&AIR.to_owned()) && by_property.contains(&"demo-lht65-park:air_temperature".to_owned()));

    // One observation, by id and through its datastream.
    let first = f.ok(&format!("Datastreams('{AIR}')/Observations?$top=1")).await;
    let obs = &first["value"][0];
    assert_eq!(obs["@iot.id"], format!("{AIR}:{}", start().timestamp_millis()));
    assert_eq!((&obs["phenomenonTime"], &obs["result"]), (&serde_json::json!("2026-11-18T00:00:00Z"), &serde_json::json!(15.0)));
    assert_eq!(obs["resultQuality"], serde_json::json!({"flag": "suspect", "reason": "spike"}));
    let again = f.ok(obs["@iot.selfLink"].as_str().unwrap()).await;
    assert_eq!(again["@iot.id"], obs["@iot.id"]);
    assert_eq!(f.ok(obs["Datastream@iot.navigationLink"].as_str().unwrap()).await["@iot.id"], AIR);
    assert_eq!(f.ok(obs["FeatureOfInterest@iot.navigationLink"].as_str().unwrap()).await["@iot.id"], "demo-lht65");
    // The bad NaN reading is kept, with a null result.
    let nan = f.ok(&format!("Observations('{AIR}:{}')", (start() + Duration::minutes(5000)).timestamp_millis())).await;
    assert_eq!((&nan["result"], &nan["resultQuality"]["flag"]), (&Value::Null, &serde_json::json!("bad")));
}

// ---- Paging, filtering, ordering ----

#[tokio::test]
async fn paging_through_ten_thousand_observations_returns_each_once_in_order() {
    let f = Fixture::new();
    let (all, pages) = f.all(&format!("Datastreams('{AIR}')/Observations")).await;
    assert_eq!(all.len(), N);
    assert_eq!(pages, N / 100, "the default page is 100");
    let times: Vec<DateTime<Utc>> = all.iter().map(|o| o["phenomenonTime"].as_str().unwrap().parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "oldest first, no repeats");
    assert_eq!((times[0], times[N - 1]), (start(), start() + Duration::minutes(N as i64 - 1)));
    let unique: HashSet<&str> = all.iter().map(|o| o["@iot.id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), N);

    // $top above the maximum is lowered to 1,000, and the rest is paged.
    let (big, pages) = f.all(&format!("Datastreams('{AIR}')/Observations?$top=5000&$select=id")).await;
    assert_eq!((big.len(), pages), (N, 10));
    assert_eq!(big[0].as_object().unwrap().len(), 1, "only the id is selected: {}", big[0]);

    // $top=0 asks for the count only, and has no next page (it would be the same one).
    for path in [format!("Datastreams('{AIR}')/Observations?$top=0&$count=true"), "Things?$top=0&$count=true".to_owned()] {
        let only = f.ok(&path).await;
        assert_eq!(only["value"], serde_json::json!([]), "{path}");
        assert!(only.get("@iot.nextLink").is_none(), "{path}: {only}");
        assert!(only["@iot.count"].as_u64().unwrap() > 0, "{path}: {only}");
    }

    // $count, $skip.
    let counted = f.ok(&format!("Datastreams('{AIR}')/Observations?$count=true&$top=2&$skip=9999")).await;
    assert_eq!(counted["@iot.count"], N);
    assert_eq!(counted["value"].as_array().unwrap().len(), 1);
    assert!(counted.get("@iot.nextLink").is_none(), "{counted}");
}

#[tokio::test]
async fn filter_result_gt_25_answers_exactly_the_matching_readings() {
    let f = Fixture::new();
    let expected: Vec<usize> = (0..N).filter(|&i| i != 5000 && temperature(i) > 25.0).collect();
    let (found, _) = f.all(&format!("Datastreams('{AIR}')/Observations?$filter=result gt 25")).await;
    assert_eq!(found.len(), expected.len());
    for (o, i) in found.iter().zip(&expected) {
        assert_eq!(o["result"].as_f64().unwrap(), temperature(*i));
        assert_eq!(
            o["phenomenonTime"],
            (start() + Duration::minutes(*i as i64)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        );
    }
    // On all observations: the internal device's 99 °C never shows.
    let (everywhere, _) =
        f.all("Observations?$filter=result gt 25 and Datastream/ObservedProperty/@iot.id eq 'air_temperature'&$top=1000").await;
    assert_eq!(everywhere.len(), expected.len(), "only demo-lht65's air temperatures are above 25");
    assert!(everywhere.iter().all(|o| o["result"].as_f64().unwrap() < 99.0));

    // Time, functions, logic and navigation in one filter; the time bounds narrow the scan.
    let filter = "phenomenonTime ge 2026-11-18T01:00:00Z and phenomenonTime lt 2026-11-18T02:00:00Z and (result gt 25 or resultQuality/flag eq 'suspect') and Datastream/Thing/@iot.id eq 'demo-lht65' and hour(phenomenonTime) eq 1";
    let hour = f.ok(&format!("Observations?$filter={}&$count=true", urlencode(filter))).await;
    // demo-lht65's hot or suspect air temperatures of that hour, and its humidity of 01:00 (81 %).
    let want = (60..120).filter(|&i| temperature(i) > 25.0 || i % 97 == 0).count() + 1;
    assert_eq!(hour["@iot.count"], want);
    assert_eq!(hour["value"].as_array().unwrap().len(), want);

    // Filters on other entity sets.
    assert_eq!(ids(&f.ok("Things?$filter=substringof('Stadtpark', name)").await), ["demo-lht65-park"]);
    assert_eq!(ids(&f.ok("Things?$filter=properties/district eq 'Altstadt' and startswith(id, 'demo')").await), ["demo-lht65"]);
    assert_eq!(
        ids(&f
            .ok("Datastreams?$filter=Thing/name eq 'Rathausplatz, Dragino LHT65' and ObservedProperty/name eq 'air_temperature'")
            .await),
        [AIR]
    );
    assert_eq!(ids(&f.ok("Things?$filter=not (endswith(name, 'LHT65'))").await), ["demo-lht65-park"]);
}

#[tokio::test]
async fn orderby_phenomenon_time_desc_pages_from_the_newest() {
    let f = Fixture::new();
    let (all, _) = f.all(&format!("Datastreams('{AIR}')/Observations?$orderby=phenomenonTime desc&$top=1000")).await;
    assert_eq!(all.len(), N);
    let times: Vec<DateTime<Utc>> = all.iter().map(|o| o["phenomenonTime"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(times[0], start() + Duration::minutes(N as i64 - 1), "newest first");
    assert!(times.windows(2).all(|w| w[0] > w[1]), "strictly newest first across pages");
    // Combined with a filter and $skip.
    let page = f
        .ok(&format!("Datastreams('{AIR}')/Observations?$orderby=phenomenonTime desc&$filter=result gt 25&$top=2&$skip=1"))
        .await;
    let newest_hot: Vec<usize> = (0..N).rev().filter(|&i| i != 5000 && temperature(i) > 25.0).skip(1).take(2).collect();
    let got: Vec<String> = ids(&page);
    let want: Vec<String> =
        newest_hot.iter().map(|i| format!("{AIR}:{}", (start() + Duration::minutes(*i as i64)).timestamp_millis())).collect();
    assert_eq!(got, want);
    // On all observations, a filter that pins one datastream reads only it, and orders it.
    let pinned = f.ok(&format!("Observations?$filter=Datastream/@iot.id eq '{AIR}'&$orderby=phenomenonTime desc&$top=2")).await;
    let want: Vec<String> =
        [N - 1, N - 2].iter().map(|i| format!("{AIR}:{}", (start() + Duration::minutes(*i as i64)).timestamp_millis())).collect();
    assert_eq!(ids(&pinned), want);
    // Entity sets in memory sort by any property.
    assert_eq!(ids(&f.ok("Things?$orderby=name desc").await), ["demo-lht65-park", "demo-lht65"]);
}

#[tokio::test]
async fn expand_and_select_shape_the_response() {
    let f = Fixture::new();
    let thing = f
        .ok(&format!(
            "Things('demo-lht65')?$select=id,name&$expand={}",
            urlencode("Locations,Datastreams($filter=ObservedProperty/@iot.id eq 'air_temperature';$expand=Observations($top=2;$orderby=phenomenonTime desc),ObservedProperty,Sensor,Thing($select=name))")
        ))
        .await;
    let keys: HashSet<&str> = thing.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(["@iot.id", "name", "Locations", "Datastreams"]), "{thing}");
    let streams = thing["Datastreams"].as_array().unwrap();
    assert_eq!(streams.len(), 1, "{thing}");
    let ds = &streams[0];
    assert_eq!(ds["ObservedProperty"]["@iot.id"], "air_temperature");
    assert_eq!(ds["Sensor"]["@iot.id"], "dragino-lht65");
    assert_eq!(ds["Thing"], serde_json::json!({"name": "Rathausplatz, Dragino LHT65"}));
    let obs = ds["Observations"].as_array().unwrap();
    assert_eq!(obs.len(), 2);
    assert_eq!(obs[0]["phenomenonTime"], "2026-11-24T22:39:00Z");
    let more = ds["Observations@iot.nextLink"].as_str().expect("the expanded observations page on");
    assert_eq!(f.ok(more).await["value"][0]["phenomenonTime"], "2026-11-24T22:37:00Z");
    assert_eq!(thing["Locations"][0]["location"]["type"], "Point");

    // An observation with its datastream and feature of interest.
    let o = f.ok(&format!("Datastreams('{AIR}')/Observations?$top=1&$expand=Datastream($select=name),FeatureOfInterest")).await;
    assert_eq!(o["value"][0]["Datastream"]["name"], "air_temperature at Rathausplatz, Dragino LHT65");
    assert_eq!(o["value"][0]["FeatureOfInterest"]["@iot.id"], "demo-lht65");
}

// ---- Bad input ----

#[tokio::test]
async fn an_invalid_filter_is_400_naming_the_position_and_what_was_expected() {
    let f = Fixture::new();
    for (filter, position, expected) in [
        ("result gtt 25", 8, "an operator"),
        ("result gt", 10, "a value"),
        ("(result gt 25", 14, "')'"),
        ("name eq 'open", 9, "a closing quote"),
        ("frobnicate(name) eq 1", 1, "a known function"),
        ("startswith(name) eq true", 1, "2 argument"),
        ("result gt 2026-13-45T00:00:00Z", 11, "a time"),
        ("result eq #", 11, "a property, a literal"),
    ] {
        let a = f.get(&format!("Datastreams('{AIR}')/Observations?$filter={}", urlencode(filter))).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{filter}: {}", a.text());
        let e = a.error();
        assert!(e.starts_with(&format!("$filter: at position {position}: expected {expected}")), "{filter}: {e}");
    }
    for (query, name) in [
        ("$top=-1", "$top"),
        ("$skip=x", "$skip"),
        ("$count=maybe", "$count"),
        ("$orderby=result", "$orderby"),
        ("$expand=Things", "$expand"),
        ("$select=colour", "$select"),
        ("$skiptoken=nowhere", "$skiptoken"),
        ("$frobnicate=1", "$frobnicate"),
    ] {
        let a = f.get(&format!("Datastreams('{AIR}')/Observations?{query}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query}: {}", a.text());
        assert!(a.error().starts_with(name), "{query}: {}", a.error());
    }
    let a = f.get("Things/Datastreams").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    for order in ["phenomenonTime desc", "phenomenonTime asc", "result"] {
        let a = f.get(&format!("Observations?$orderby={order}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "time order is per datastream: {}", a.text());
        assert!(a.error().starts_with("$orderby:"), "{}", a.error());
    }
    // Too many entities in one response.
    let a =
        f.get(&format!("Datastreams('{AIR}')/Observations?$top=1000&$expand=Datastream($expand=Observations($top=1000))")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", &a.text()[..a.text().len().min(500)]);
    assert!(a.error().contains("10000 entities"), "{}", a.error());
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let f = Fixture::new();
    for path in [
        "Things('no-such-device')",
        "Locations('no-such-device')",
        "FeaturesOfInterest('no-such-device')",
        "Sensors('no-such-profile')",
        "ObservedProperties('temperature')",
        "ObservedProperties('wind_speed')",
        "Datastreams('demo-lht65:wind_speed')",
        "Datastreams('nonsense')",
        "Observations('demo-lht65:air_temperature:1')",
        "Observations('garbage')",
        "Things('demo-lht65')/Datastreams('demo-lht65-park:air_temperature')",
        "Things('demo-lht65')/colour",
        "Gadgets",
    ] {
        let a = f.get(path).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}: {}", a.text());
        assert!(!a.error().is_empty());
    }
}

#[tokio::test]
async fn the_internal_device_is_invisible_everywhere() {
    let f = Fixture::new();
    // By id: the same 404 as an id that never existed.
    for (internal, unknown) in [
        ("Things('demo-lht65-depot')", "Things('demo-lht65-nope')"),
        ("Locations('demo-lht65-depot')", "Locations('demo-lht65-nope')"),
        ("FeaturesOfInterest('demo-lht65-depot')", "FeaturesOfInterest('demo-lht65-nope')"),
        ("Datastreams('demo-lht65-depot:air_temperature')", "Datastreams('demo-lht65-nope:air_temperature')"),
    ] {
        let (a, b) = (f.get(internal).await, f.get(unknown).await);
        assert_eq!((a.status, b.status), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND), "{internal}");
        assert_eq!(a.error().replace("depot", "X"), b.error().replace("nope", "X"));
    }
    let t = start().timestamp_millis();
    assert_eq!(f.get(&format!("Observations('demo-lht65-depot:air_temperature:{t}')")).await.status, StatusCode::NOT_FOUND);
    // In every collection, expansion and filter.
    for path in [
        "Things?$expand=Datastreams($expand=Observations($top=1000)),Locations&$top=1000",
        "Locations?$expand=Things",
        "FeaturesOfInterest?$expand=Observations",
        "Datastreams?$expand=Thing,Observations($top=60)&$top=1000",
        "Sensors?$expand=Datastreams/Thing",
        "ObservedProperties?$expand=Datastreams",
        "Observations?$filter=Datastream/Thing/@iot.id eq 'demo-lht65-depot'",
        "Observations?$filter=result eq 99",
    ] {
        let a = f.get(path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text());
        assert!(!a.text().contains("depot"), "{path} shows the internal device: {}", a.text());
    }
    let (all, _) = f.all("Observations?$top=1000").await;
    assert_eq!(all.len(), N + 10 + 1, "every open reading once, and none of the internal device");
    assert!(all.iter().all(|o| !o["@iot.id"].as_str().unwrap().contains("depot")));
}

#[tokio::test]
async fn a_filter_that_matches_nothing_reads_at_most_the_scan_limit_per_request() {
    // 150,000 readings of the park sensor: more than one request may read (100,000).
    let f = Fixture::with(|store| {
        let mut batch = WriteBatch::default();
        for i in 0..150_000 {
            batch.readings.push(Reading {
                device: DeviceId::parse("demo-lht65-park").unwrap(),
                quantity: Quantity::by_name("relative_humidity").unwrap(),
                value: 50.0,
                time: start() + Duration::seconds(i),
                flag: QualityFlag::Good,
                reason: Default::default(),
            });
        }
        store.write(&batch).unwrap();
    });
    let url = "Datastreams('demo-lht65-park:relative_humidity')/Observations?$filter=result gt 1000&$count=true";
    let first = f.ok(url).await;
    assert_eq!(first["value"], serde_json::json!([]), "nothing matches");
    assert!(first.get("@iot.count").is_none(), "counting would pass the scan limit, so there is no count: {first}");
    let next = first["@iot.nextLink"].as_str().expect("the scan stopped at the limit and says where to go on");
    let token =
        format!("$skiptoken=demo-lht65-park%3Arelative_humidity%3A{}", (start() + Duration::seconds(99_999)).timestamp_millis());
    assert!(next.contains(&token), "the next page starts after the 100,000th reading: {next}");
    let second = f.ok(next).await;
    assert_eq!(second["value"], serde_json::json!([]));
    assert!(second.get("@iot.nextLink").is_none(), "the rest (50,000) fits in one request: {second}");
    // A time condition narrows what is read: the last 10,000 readings only, so the count is there.
    let since = (start() + Duration::seconds(140_000)).to_rfc3339();
    let narrow = f
        .ok(&format!(
            "Datastreams('demo-lht65-park:relative_humidity')/Observations?$count=true&$filter={}",
            urlencode(&format!("result gt 1000 and phenomenonTime ge {since}"))
        ))
        .await;
    assert_eq!(narrow["@iot.count"], 0, "{narrow}");
    assert!(narrow.get("@iot.nextLink").is_none(), "{narrow}");
}

// ---- A real SensorThings client against the real binary ----

/// The Python of a venv with `frost-sta-client` (scripts/test installs it and sets this).
const CLIENT_PYTHON: &str = "FROST_STA_PYTHON";

/// Reads Things, the demo device's Datastreams and all 10,000 of its air temperatures as a
/// FROST user would, with `frost-sta-client` following `@iot.nextLink` itself.
const CLIENT_SCRIPT: &str = r#"
import json, sys
import frost_sta_client as fsc

service = fsc.SensorThingsService(sys.argv[1])
things = list(service.things().query().list())
thing = service.things().find('demo-lht65')
location = list(thing.get_locations().query().list())[0]
streams = list(thing.get_datastreams().query().list())
air = service.datastreams().find('demo-lht65:air_temperature')
observations = list(air.get_observations().query().top(1000).list())
hot = list(air.get_observations().query().filter('result gt 25').top(1000).list())
newest = air.get_observations().query().orderby('phenomenonTime', 'desc').top(3).list()
print(json.dumps({
    "things": sorted(t.id for t in things),
    "location": list(location.location['coordinates']),
    "streams": sorted(d.id for d in streams),
    "unit": air.unit_of_measurement.symbol,
    "observations": [[o.id, o.phenomenon_time, o.result] for o in observations],
    "hot": [o.result for o in hot],
    "newest": [o.phenomenon_time for o in newest.entities],
}))
"#;

#[tokio::test]
async fn the_frost_client_reads_things_datastreams_and_pages_through_10000_observations() {
    let Some(python) = std::env::var_os(CLIENT_PYTHON) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{CLIENT_PYTHON} is not set: scripts/test installs frost-sta-client and sets it"
        );
        eprintln!("skipped: {CLIENT_PYTHON} is not set (scripts/test sets it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    seed(&EmbeddedStore::open(&dir.path().join("data")).unwrap());
    let broker = common::Mosquitto::start();
    let topics = common::Topics::new("sensorthings-client");
    let gw = common::Gateway::start(broker.port, dir.path(), &topics).await;
    let script = dir.path().join("client.py");
    std::fs::write(&script, CLIENT_SCRIPT).unwrap();
    let root = gw.url("/sta/v1.1");
    // Output goes to files: a pipe nobody reads while the client runs would fill and stall it.
    let (stdout, stderr) = (dir.path().join("client.out"), dir.path().join("client.err"));
    let (out_file, err_file) = (std::fs::File::create(&stdout).unwrap(), std::fs::File::create(&stderr).unwrap());
    let status = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(python)
            .arg(&script)
            .arg(&root)
            .stdout(out_file)
            .stderr(err_file)
            .spawn()
            .expect("start the client's python");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let (out, err) = (std::fs::read_to_string(&stdout).unwrap(), std::fs::read_to_string(&stderr).unwrap());
    assert!(
        status.is_some_and(|s| s.success()),
        "the client failed or took over 120 s ({status:?}): {err}\ngateway log: {}",
        gw.log_text()
    );
    let seen: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("client output is not JSON ({e}): {out}"));
    assert_eq!(seen["things"], serde_json::json!(["demo-lht65", "demo-lht65-park"]));
    assert_eq!(seen["location"], serde_json::json!([11.57549, 48.13743]));
    let streams: Vec<&str> = seen["streams"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(streams.contains(&AIR) && streams.contains(&"demo-lht65:relative_humidity"), "{streams:?}");
    assert_eq!(seen["unit"], "Cel");
    let observations = seen["observations"].as_array().unwrap();
    assert_eq!(observations.len(), N, "the client paged through every observation");
    for (i, o) in observations.iter().enumerate() {
        let time = start() + Duration::minutes(i as i64);
        assert_eq!(o[0], format!("{AIR}:{}", time.timestamp_millis()));
        assert_eq!(o[1].as_str().unwrap().parse::<DateTime<Utc>>().unwrap(), time);
        if i != 5000 {
            assert_eq!(o[2].as_f64().unwrap(), temperature(i), "observation {i}");
        }
    }
    let hot: Vec<f64> = seen["hot"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(hot.len(), (0..N).filter(|&i| i != 5000 && temperature(i) > 25.0).count());
    assert!(hot.iter().all(|v| *v > 25.0));
    let newest: Vec<DateTime<Utc>> =
        seen["newest"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().parse().unwrap()).collect();
    let last = start() + Duration::minutes(N as i64 - 1);
    assert_eq!(newest, [last, last - Duration::minutes(1), last - Duration::minutes(2)]);
}

/// A query value, percent-encoded.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}
