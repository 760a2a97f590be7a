//! Open aggregates end to end: a known series published through Mosquitto, every window checked against an independent calculation.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::Value;

const DEVICES: &str = r#"
[[device]]
id = "mitte-1"
name = "Marktplatz"
profile = "dragino-lht65"
dev_eui = "A8404100000000A1"
lat = 48.1371
lon = 11.5754
district = "Mitte"
owner = "Umweltamt"
licence = "dl-by-de/2.0"
visibility = "open"

[[device]]
id = "mitte-2"
name = "Rathausgarten"
profile = "dragino-lht65"
dev_eui = "A8404100000000A2"
lat = 48.1390
lon = 11.5790
height_m = 2.5
district = "Mitte"
owner = "Gartenamt"
licence = "dl-zero-de/2.0"
visibility = "open"

[[device]]
id = "mitte-secret"
name = "Depot"
profile = "dragino-lht65"
dev_eui = "A8404100000000A3"
lat = 48.1300
lon = 11.5700
district = "Mitte"
owner = "Baureferat"
licence = "dl-by-de/2.0"
visibility = "internal"
"#;

/// An LHT65 frame with this temperature (°C) and humidity (%), no probe.
fn lht65(temp: f64, hum: f64) -> String {
    let t = (temp * 100.0).round() as i16 as u16;
    let h = (hum * 10.0).round() as u16;
    format!("0BB8{t:04X}{h:04X}017FFF7FFF")
}

/// One planned reading: device, DevEUI, minutes after the start, temperature.
#[derive(Clone)]
struct Planned {
    device: &'static str,
    eui: &'static str,
    minute: i64,
    temp: f64,
}

const START: &str = "2026-06-01T00:00:00Z";

fn time_of(minute: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(START).unwrap().with_timezone(&chrono::Utc) + chrono::Duration::minutes(minute)
}

fn message(topics: &Topics, p: &Planned, f_cnt: u32) -> (String, Vec<u8>) {
    let at = time_of(p.minute).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (topics.ttn(p.device), ttn_uplink(p.device, p.eui, f_cnt, &lht65(p.temp, 50.0), &at))
}

/// The expected windows, computed here without any of the gateway's code.
#[derive(Debug, Default, Clone)]
struct Expected {
    values: Vec<(i64, f64)>,
    excluded: u64,
}

fn expected(plan: &[Planned], devices: &[&str], window_minutes: i64) -> BTreeMap<i64, Expected> {
    let mut out: BTreeMap<i64, Expected> = BTreeMap::new();
    for p in plan.iter().filter(|p| devices.contains(&p.device)) {
        let w = out.entry(p.minute.div_euclid(window_minutes) * window_minutes).or_default();
        if p.temp > 60.0 {
            w.excluded += 1; // outside the physical range of air temperature: flagged bad
        } else {
            w.values.push((p.minute, p.temp));
        }
    }
    out
}

fn check(points: &[Value], want: &BTreeMap<i64, Expected>, what: &str) {
    assert_eq!(points.len(), want.len(), "{what}: windows");
    for (point, (start, w)) in points.iter().zip(want) {
        assert_eq!(
            point["start"].as_str().unwrap(),
            time_of(*start).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "{what}"
        );
        assert_eq!(point["count"].as_u64().unwrap(), w.values.len() as u64, "{what} {start}: count");
        assert_eq!(point["excluded"].as_u64().unwrap(), w.excluded, "{what} {start}: excluded");
        if w.values.is_empty() {
            assert!(point["mean"].is_null(), "{what} {start}: {point}");
            continue;
        }
        let n = w.values.len() as f64;
        let mean = w.values.iter().map(|(_, v)| v).sum::<f64>() / n;
        let min = w.values.iter().map(|(_, v)| *v).fold(f64::INFINITY, f64::min);
        let max = w.values.iter().map(|(_, v)| *v).fold(f64::NEG_INFINITY, f64::max);
        let last = w.values.iter().max_by_key(|(m, _)| *m).unwrap().1;
        let close = |key: &str, v: f64| {
            let got = point[key].as_f64().unwrap_or(f64::NAN);
            assert!((got - v).abs() < 1e-6, "{what} {start}: {key} is {got}, expected {v}");
        };
        close("mean", mean);
        close("min", min);
        close("max", max);
        close("last", last);
    }
}

async fn get(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = reqwest::get(gw.url(path)).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn windows(gw: &Gateway, scope: &str, interval: &str) -> Vec<Value> {
    let (status, body) = get(gw, &format!("/v1/aggregates?{scope}&quantity=air_temperature&interval={interval}&from=2026-06-01T00:00:00Z&to=2026-06-04T00:00:00Z")).await;
    assert_eq!(status, 200, "{scope} {interval}: {body}");
    body["points"].as_array().unwrap().clone()
}

async fn check_all(gw: &Gateway, plan: &[Planned]) {
    for (interval, minutes) in [("10m", 10), ("1h", 60), ("1d", 1440)] {
        for device in ["mitte-1", "mitte-2"] {
            check(
                &windows(gw, &format!("device={device}"), interval).await,
                &expected(plan, &[device], minutes),
                &format!("{device} {interval}"),
            );
        }
        // The district holds only its open devices: the internal one's readings stay out.
        check(
            &windows(gw, "district=Mitte", interval).await,
            &expected(plan, &["mitte-1", "mitte-2"], minutes),
            &format!("Mitte {interval}"),
        );
    }
}

both_backends! {
#[tokio::test]
async fn aggregates_match_an_independent_calculation_and_hide_internal_devices() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let devices = dir.path().join("devices.toml");
    std::fs::write(&devices, DEVICES).unwrap();
    let topics = Topics::new("aggregates");
    let mut gw = Gateway::start_full(broker.port, dir.path(), &topics, "", &devices).await;

    // Two days of irregular readings, a few windows with several readings, one out of range.
    let mut plan = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for (device, eui, count) in
        [("mitte-1", "A8404100000000A1", 60), ("mitte-2", "A8404100000000A2", 40), ("mitte-secret", "A8404100000000A3", 20)]
    {
        let mut minute = 0;
        for _ in 0..count {
            minute += 1 + rnd(90) as i64;
            let temp = if device == "mitte-secret" { 45.0 } else { -5.0 + rnd(3000) as f64 / 100.0 };
            plan.push(Planned { device, eui, minute, temp });
        }
    }
    plan.push(Planned { device: "mitte-1", eui: "A8404100000000A1", minute: 12, temp: 85.0 });
    // Published in a shuffled order: out of order and late for the windows.
    let mut order: Vec<usize> = (0..plan.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rnd(i as u64 + 1) as usize);
    }
    let mut messages: Vec<_> = order.iter().map(|&i| message(&topics, &plan[i], i as u32)).collect();
    // A redelivered duplicate must not count twice.
    messages.push(messages[3].clone());
    let publisher = format!("{}-pub", topics.prefix);
    publish_all(broker.port, &publisher, messages).await;
    wait_for("every message stored", Duration::from_secs(30), || async {
        (gw.metric("messnetz_messages_acked_total").await >= (plan.len() + 1) as f64).then_some(())
    })
    .await;
    // Answered while device windows may still wait in the journal (folded from the readings),
    // then again once the flush has stored them: the same numbers either way.
    check_all(&gw, &plan).await;
    wait_for("the device windows flushed", Duration::from_secs(30), || async {
        (gw.metric("messnetz_rollup_windows_pending").await == 0.0).then_some(())
    })
    .await;
    check_all(&gw, &plan).await;

    // A corrected reading for an existing time replaces the old value in every window.
    let corrected = Planned { temp: 22.22, ..plan[5].clone() };
    publish_all(broker.port, &publisher, vec![message(&topics, &corrected, 9999)]).await;
    plan[5] = corrected;
    wait_for("the correction", Duration::from_secs(20), || async {
        (gw.metric("messnetz_messages_acked_total").await >= (plan.len() + 2) as f64).then_some(())
    })
    .await;
    check_all(&gw, &plan).await;

    // JSON carries unit, interval and licence; CSV parses with a standard reader.
    let (_, body) = get(
        &gw,
        "/v1/aggregates?device=mitte-2&quantity=air_temperature&interval=1d&from=2026-06-01T00:00:00Z&to=2026-06-04T00:00:00Z",
    )
    .await;
    assert_eq!(
        (body["unit"].as_str(), body["interval"].as_str(), body["licence"].as_str()),
        (Some("Cel"), Some("1d"), Some("dl-zero-de/2.0"))
    );
    let csv_url = gw.url("/v1/aggregates?district=Mitte&quantity=air_temperature&interval=1h&from=2026-06-01T00:00:00Z&to=2026-06-04T00:00:00Z&format=csv");
    let resp = reqwest::get(&csv_url).await.unwrap();
    let link = resp.headers().get_all("link").iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>().join(",");
    assert!(link.contains("dl-by-de/2.0>; rel=\"license\""), "{link}");
    let text = resp.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["start", "count", "excluded", "mean", "min", "max", "last", "unit"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let want = expected(&plan, &["mitte-1", "mitte-2"], 60);
    assert_eq!(rows.len(), want.len());
    let counts: u64 = rows.iter().map(|r| r[1].parse::<u64>().unwrap()).sum();
    assert_eq!(counts, want.values().map(|w| w.values.len() as u64).sum::<u64>());

    // ETag and 304.
    let url = gw.url(
        "/v1/aggregates?device=mitte-1&quantity=air_temperature&interval=1h&from=2026-06-01T00:00:00Z&to=2026-06-02T00:00:00Z",
    );
    let first = reqwest::get(&url).await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(first.headers()["cache-control"].to_str().unwrap().contains("max-age"));
    let again = reqwest::Client::new().get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 304);

    // The internal device: no aggregates, not on the map, not in the catalogue, not even by id.
    assert_eq!(get(&gw, "/v1/aggregates?device=mitte-secret&quantity=air_temperature&interval=1h").await.0, 404);
    let (_, map) = get(&gw, "/v1/latest").await;
    assert_eq!(map["type"], "FeatureCollection");
    let ids: Vec<&str> = map["features"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["mitte-1", "mitte-2"]);
    assert_eq!(map["features"][1]["geometry"]["coordinates"], serde_json::json!([11.579, 48.139, 2.5]));
    let catalog = reqwest::get(gw.url("/v1/catalog")).await.unwrap().text().await.unwrap();
    assert!(
        !catalog.contains("mitte-secret") && !catalog.contains("Depot") && !catalog.contains("Baureferat"),
        "internal device in the catalogue"
    );
    let catalog: Value = serde_json::from_str(&catalog).unwrap();
    assert_eq!(catalog["@type"], "dcat:Catalog");
    let datasets = catalog["dcat:dataset"].as_array().unwrap();
    let district_temp = datasets
        .iter()
        .find(|d| d["@id"].as_str().unwrap().ends_with("#district/Mitte/air_temperature"))
        .expect("a dataset for Mitte's air temperature");
    for key in ["dct:title", "dct:description", "dct:publisher", "dct:temporal", "dct:spatial"] {
        assert!(!district_temp[key].is_null(), "{key} missing");
    }
    for dist in district_temp["dcat:distribution"].as_array().unwrap() {
        assert_eq!(dist["dct:license"]["@id"], "http://dcat-ap.de/def/licenses/dl-by-de/2.0");
        assert!(dist["dcatde:licenseAttributionByText"].is_string());
        let access = dist["dcat:accessURL"]["@id"].as_str().unwrap();
        assert!(access.starts_with("http://127.0.0.1:8080/v1/aggregates?district=Mitte&quantity=air_temperature"), "{access}");
    }
    assert_eq!(district_temp["dct:temporal"]["dcat:startDate"], "2026-06-01T00:00:00Z");

    // A crash (SIGKILL, no shutdown flush) loses no window: the journal is replayed at start.
    gw.restart().await;
    check_all(&gw, &plan).await;
    // A rebuild from the readings gives the same numbers.
    assert!(gw.terminate().success());
    let rebuild = std::process::Command::new(env!("CARGO_BIN_EXE_messnetz"))
        .arg("--config")
        .arg(&gw.config)
        .args(["rollups", "rebuild"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&rebuild.stderr);
    if backend() == Backend::Postgres {
        // PostgreSQL keeps the windows in each batch's own transaction: the command refuses
        // and says why.
        assert!(!rebuild.status.success() && stderr.contains("nothing to rebuild"), "{stderr}");
    } else {
        assert!(rebuild.status.success(), "{stderr}");
    }
    gw.restart().await;
    check_all(&gw, &plan).await;
}
}
