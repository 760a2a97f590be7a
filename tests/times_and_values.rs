//! Hostile times and values end to end, through the real gateway over Mosquitto: measurement
//! times in year 9999 and 0001, decoders producing NaN and infinities, and JSON profiles fed by
//! the network server's own decoder (TTN `decoded_payload`, ChirpStack `object`).

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use common::*;
use serde_json::{json, Value};

const ROOT: &str = "all-departments-token-0123456789abcd";

fn lht65(temp: f64, hum: f64) -> String {
    let t = (temp * 100.0).round() as i16 as u16;
    let h = (hum * 10.0).round() as u16;
    format!("0BB8{t:04X}{h:04X}017FFF7FFF")
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn get_json(url: String) -> Value {
    let response = reqwest::get(&url).await.unwrap();
    assert!(response.status().is_success(), "{url}: {}", response.status());
    // Parsing is the check that the body is valid JSON, whatever the values.
    response.json().await.unwrap_or_else(|e| panic!("{url}: not valid JSON: {e}"))
}

async fn wait_counts(gw: &Gateway, decoded: f64, dead: f64) {
    wait_for(&format!("{decoded} messages decoded and {dead} dead letters, all stored"), StdDuration::from_secs(20), || async {
        let text = reqwest::get(gw.url("/metrics")).await.ok()?.text().await.ok()?;
        let got = (metric(&text, "messnetz_messages_decoded_total")?, metric(&text, "messnetz_dead_letters_total")?);
        // Decoding is counted before the commit; a message is acknowledged after it.
        let stored = metric(&text, "messnetz_messages_acked_total")? == metric(&text, "messnetz_messages_received_total")?;
        (got == (decoded, dead) && stored).then_some(())
    })
    .await;
}

/// The readings of one series since `from`, as the API serves them.
async fn readings(gw: &Gateway, device: &str, quantity: &str, from: DateTime<Utc>) -> Vec<Value> {
    readings_until(gw, device, quantity, from, None).await
}

/// As [`readings`], up to a minute ahead of the clock: uplinks arriving in the same millisecond
/// are stored at successive milliseconds from their reception on, so a burst of them runs
/// ahead of the clock for a while (`to` is the clock by default).
async fn readings_ahead(gw: &Gateway, device: &str, quantity: &str, from: DateTime<Utc>) -> Vec<Value> {
    readings_until(gw, device, quantity, from, Some(Utc::now() + Duration::minutes(1))).await
}

async fn readings_until(
    gw: &Gateway,
    device: &str,
    quantity: &str,
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
) -> Vec<Value> {
    let to = to.map(|t| format!("&to={}", stamp(t))).unwrap_or_default();
    let url = gw.url(&format!("/v1/readings?device={device}&quantity={quantity}&from={}{to}", stamp(from)));
    get_json(url).await["readings"].as_array().unwrap().clone()
}

#[tokio::test]
async fn implausible_measurement_times_never_become_the_latest_value_nor_the_catalogues_coverage() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("times");
    let gw = Gateway::start(broker.port, dir.path(), &topics).await;
    let publisher = format!("{}-pub", topics.prefix);
    let start = Utc::now() - Duration::seconds(1);

    // A good reading five minutes old, then one claiming 9999-12-31 (TTN) and one claiming
    // 0001-01-01 (ChirpStack), each in its own batch.
    let good = ttn_uplink("demo-lht65", "A840410000000001", 1, &lht65(20.0, 50.0), &stamp(Utc::now() - Duration::minutes(5)));
    publish_all(broker.port, &publisher, vec![(topics.ttn("demo-lht65"), good)]).await;
    wait_counts(&gw, 1.0, 0.0).await;
    let future = ttn_uplink("demo-lht65", "A840410000000001", 2, &lht65(20.5, 50.0), "9999-12-31T23:59:59Z");
    publish_all(broker.port, &publisher, vec![(topics.ttn("demo-lht65"), future)]).await;
    wait_counts(&gw, 2.0, 0.0).await;
    let ancient = chirpstack_uplink("A840410000000001", 3, &lht65(20.7, 50.0), "0001-01-01T00:00:00Z");
    publish_all(broker.port, &publisher, vec![(topics.chirpstack("A840410000000001"), ancient)]).await;
    wait_counts(&gw, 3.0, 0.0).await;
    let end = Utc::now() + Duration::seconds(1);
    let in_window = |t: &str| {
        let t = DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}")).with_timezone(&Utc);
        start <= t && t <= end
    };

    // Both stored, at their reception time, flagged suspect with the time they claimed.
    let series = readings(&gw, "demo-lht65", "air_temperature", start - Duration::hours(1)).await;
    assert_eq!(series.len(), 3, "{series:?}");
    let future = series.iter().find(|r| r["value"] == json!(20.5)).expect("the 9999 reading is stored");
    assert_eq!(future["quality"], "suspect", "{future}");
    let reason = future["reason"].as_str().unwrap();
    assert!(reason.contains("future: measurement time 9999-12-31T23:59:59Z is "), "{reason}");
    assert!(reason.contains("stored at the reception time"), "{reason}");
    assert!(in_window(future["time"].as_str().unwrap()), "{future}");
    let ancient = series.iter().find(|r| r["value"] == json!(20.7)).expect("the 0001 reading is stored");
    assert_eq!(ancient["quality"], "suspect", "{ancient}");
    let reason = ancient["reason"].as_str().unwrap();
    assert!(reason.contains("age: measurement time 0001-01-01T00:00:00Z is before 2000-01-01"), "{reason}");
    assert!(in_window(ancient["time"].as_str().unwrap()), "{ancient}");

    // The device's latest values are from now, not from year 9999.
    let latest = get_json(gw.url("/v1/devices/demo-lht65/latest")).await;
    for r in latest["readings"].as_array().unwrap() {
        assert!(in_window(r["time"].as_str().unwrap()), "{latest}");
    }
    let t = latest["readings"].as_array().unwrap().iter().find(|r| r["quantity"] == "air_temperature").unwrap();
    assert_eq!(t["value"], json!(20.7), "the newest reception is the latest value: {latest}");
    let map = get_json(gw.url("/v1/latest")).await;
    let feature = map["features"].as_array().unwrap().iter().find(|f| f["id"] == "demo-lht65").unwrap();
    for (q, r) in feature["properties"]["readings"].as_object().unwrap() {
        assert!(in_window(r["time"].as_str().unwrap()), "{q}: {map}");
    }

    // The catalogue covers real days only.
    let catalogue = get_json(gw.url("/v1/catalog")).await;
    let mut covered = 0;
    for d in catalogue["dcat:dataset"].as_array().unwrap() {
        let Some(period) = d.get("dct:temporal") else { continue };
        covered += 1;
        let day = |key: &str| {
            let text = period[key].as_str().unwrap();
            DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{key} {text}: {e}")).with_timezone(&Utc)
        };
        let (first, last) = (day("dcat:startDate"), day("dcat:endDate"));
        assert!(first >= start - Duration::days(1) && last <= end + Duration::days(2), "{}: {period}", d["@id"]);
    }
    assert!(covered > 0, "{catalogue}");
}

#[tokio::test]
async fn a_reading_stored_at_its_reception_that_also_jumped_gives_the_time_test_first() {
    // The time test chose the time the spike test then judged: its words come first, as for
    // the uplink's other readings (their row holds them once).
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("times-spike");
    let gw = Gateway::start(broker.port, dir.path(), &topics).await;
    let publisher = format!("{}-pub", topics.prefix);
    let start = Utc::now() - Duration::minutes(10);
    let good = ttn_uplink("demo-lht65", "A840410000000001", 1, &lht65(20.0, 50.0), &stamp(Utc::now() - Duration::minutes(5)));
    publish_all(broker.port, &publisher, vec![(topics.ttn("demo-lht65"), good)]).await;
    wait_counts(&gw, 1.0, 0.0).await;
    let jumped = ttn_uplink("demo-lht65", "A840410000000001", 2, &lht65(40.0, 50.0), "2099-01-01T00:00:00Z");
    publish_all(broker.port, &publisher, vec![(topics.ttn("demo-lht65"), jumped)]).await;
    wait_counts(&gw, 2.0, 0.0).await;

    let flagged = |series: Vec<Value>| {
        let found: Vec<String> =
            series.iter().filter_map(|r| r["reason"].as_str().filter(|w| !w.is_empty()).map(str::to_owned)).collect();
        assert_eq!(found.len(), 1, "one of the two readings is flagged: {series:?}");
        found[0].clone()
    };
    let humidity = flagged(readings_ahead(&gw, "demo-lht65", "relative_humidity", start).await);
    assert!(humidity.starts_with("future: measurement time 2099-01-01T00:00:00Z is "), "{humidity}");
    assert!(humidity.ends_with("stored at the reception time"), "{humidity}");
    let temperature = flagged(readings_ahead(&gw, "demo-lht65", "air_temperature", start).await);
    let spike = format!("{humidity}; spike: changed by 20.000 Cel against 20 Cel at ");
    assert!(temperature.starts_with(&spike), "{temperature}\nshould start with\n{spike}");
}

#[tokio::test]
async fn a_burst_of_uplinks_stored_at_their_reception_keeps_every_reading() {
    // A network server replaying a device whose clock is set years ahead: the uplinks arrive
    // within a few milliseconds, several in one, and each is stored at its reception time.
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("burst-times");
    let gw = Gateway::start(broker.port, dir.path(), &topics).await;
    let start = Utc::now() - Duration::seconds(1);
    let n = 400;
    let uplinks = (0..n)
        .map(|i| {
            let payload = lht65(10.0 + i as f64 / 100.0, 50.0);
            (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", i + 1, &payload, "2099-01-01T00:00:00Z"))
        })
        .collect();
    publish_all(broker.port, &format!("{}-pub", topics.prefix), uplinks).await;
    wait_counts(&gw, n as f64, 0.0).await;
    let url = gw.url(&format!(
        "/v1/readings?device=demo-lht65&quantity=air_temperature&from={}&to={}",
        stamp(start),
        stamp(Utc::now() + Duration::hours(1))
    ));
    let series = get_json(url).await["readings"].as_array().unwrap().clone();
    let mut values: Vec<i64> = series.iter().map(|r| (r["value"].as_f64().unwrap() * 100.0).round() as i64).collect();
    values.sort_unstable();
    assert_eq!(values, (0..n as i64).map(|i| 1000 + i).collect::<Vec<_>>(), "every acknowledged uplink's reading is stored");
    assert!(series.iter().all(|r| r["quality"] == "suspect"), "each still says it claimed 2099");
}

/// A copy of the demo devices and bundled profiles, with `extra` devices and profile files
/// added; returns (devices file, profiles directory).
fn devices_and_profiles(dir: &Path, extra_devices: &str, profiles: &[(&str, &str)]) -> (PathBuf, PathBuf) {
    let (devices, profile_dir) = own_devices_and_profiles(dir);
    let mut text = std::fs::read_to_string(&devices).unwrap();
    text.push_str(extra_devices);
    std::fs::write(&devices, text).unwrap();
    for (name, body) in profiles {
        std::fs::write(profile_dir.join(name), body).unwrap();
    }
    (devices, profile_dir)
}

fn device(id: &str, profile: &str, dev_eui: &str) -> String {
    format!(
        "\n[[device]]\nid = \"{id}\"\nname = \"{id}\"\nprofile = \"{profile}\"\ndev_eui = \"{dev_eui}\"\nlat = 48.1\nlon = 11.5\ndistrict = \"Altstadt\"\nowner = \"Umweltamt\"\nlicence = \"dl-zero-de/2.0\"\nvisibility = \"open\"\n"
    )
}

/// A fixed layout whose formula divides by the raw byte: 0 gives infinity.
const DIVIDE_PROFILE: &str = r#"
id = "test-divide"
vendor = "test"
model = "a formula dividing by the raw value"
reference = "tests/times_and_values.rs"

[[layouts]]
kind = "fixed"
fports = [2]

[[layouts.fields]]
quantity = "air_temperature"
byte = 0
type = "u8"
formula = "100 / x"

[[layouts.fields]]
quantity = "relative_humidity"
byte = 1
type = "u8"

[[examples]]
fport = 2
payload_hex = "0432"
readings = [{ quantity = "air_temperature", value = 25 }, { quantity = "relative_humidity", value = 50 }]
"#;

/// A codec returning NaN and infinity as text (byte 0 = 1), or as numbers (byte 0 = 2; JSON
/// can't carry them: they arrive as null).
const JS_PROFILE: &str = r#"
id = "test-js-nan"
vendor = "test"
model = "a codec returning NaN and Infinity"
reference = "tests/times_and_values.rs"

[[layouts]]
kind = "javascript"
fports = [2]
script = '''
function decodeUplink(input) {
  if (input.bytes[0] === 1) { return { data: { t: "NaN", h: "-Infinity" } }; }
  if (input.bytes[0] === 2) { return { data: { t: Infinity, h: NaN } }; }
  return { data: { t: 21.5, h: 40 } };
}
'''

[[layouts.fields]]
quantity = "air_temperature"
pointer = "/t"

[[layouts.fields]]
quantity = "relative_humidity"
pointer = "/h"

[[examples]]
fport = 2
payload_hex = "00"
readings = [{ quantity = "air_temperature", value = 21.5 }, { quantity = "relative_humidity", value = 40 }]
"#;

const DIVIDE_EUI: &str = "70B3D57ED0000201";
const JS_EUI: &str = "70B3D57ED0000202";

async fn dead_letters(gw: &Gateway) -> Vec<Value> {
    let c = reqwest::Client::new();
    let response = c.get(gw.url("/v1/admin/dead-letters")).bearer_auth(ROOT).send().await.unwrap();
    let body: Value = response.json().await.unwrap();
    body["dead_letters"].as_array().unwrap_or_else(|| panic!("{body}")).clone()
}

#[tokio::test]
async fn nan_and_infinity_from_decoders_become_bad_readings_or_dead_letters_never_nothing() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("nan");
    let extra = device("test-divide", "test-divide", DIVIDE_EUI) + &device("test-js-nan", "test-js-nan", JS_EUI);
    let (devices, profiles) =
        devices_and_profiles(dir.path(), &extra, &[("test-divide.toml", DIVIDE_PROFILE), ("test-js-nan.toml", JS_PROFILE)]);
    let admin = admin_section(100, &[("it", ROOT, &["*"])]);
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, &admin, &devices, &profiles).await;
    let from = Utc::now() - Duration::hours(1);
    let at = stamp(Utc::now() - Duration::minutes(1));
    let at2 = stamp(Utc::now() - Duration::minutes(2));
    let messages = vec![
        // 100 / 0 and a humidity of 50 %.
        (topics.ttn("test-divide"), ttn_uplink("test-divide", DIVIDE_EUI, 1, "0032", &at)),
        // "NaN" and "-Infinity" as text.
        (topics.ttn("test-js-nan"), ttn_uplink("test-js-nan", JS_EUI, 1, "01", &at)),
        // Infinity and NaN as numbers (JSON has none: they come back as their text).
        (topics.ttn("test-js-nan"), ttn_uplink("test-js-nan", JS_EUI, 2, "02", &at2)),
    ];
    publish_all(broker.port, &format!("{}-pub", topics.prefix), messages).await;
    wait_counts(&gw, 3.0, 0.0).await;

    let temp = readings(&gw, "test-divide", "air_temperature", from).await;
    assert_eq!(temp.len(), 1, "{temp:?}");
    assert_eq!((&temp[0]["quality"], &temp[0]["value"]), (&json!("bad"), &Value::Null), "{temp:?}");
    assert!(temp[0]["reason"].as_str().unwrap().contains("range: value inf is not a finite number"), "{temp:?}");
    let hum = readings(&gw, "test-divide", "relative_humidity", from).await;
    assert_eq!((&hum[0]["quality"], &hum[0]["value"]), (&json!("good"), &json!(50.0)), "{hum:?}");
    // CSV: an empty cell, not a word a spreadsheet reads as text.
    let url = gw.url(&format!("/v1/readings?device=test-divide&quantity=air_temperature&from={}&format=csv", stamp(from)));
    let csv = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let row = csv.lines().nth(1).unwrap_or_else(|| panic!("{csv}"));
    assert!(row.ends_with(",,Cel,bad"), "{csv}");
    // The latest values and the map stay valid JSON with the bad reading in them.
    let latest = get_json(gw.url("/v1/devices/test-divide/latest")).await;
    let t = latest["readings"].as_array().unwrap().iter().find(|r| r["quantity"] == "air_temperature").unwrap();
    assert_eq!((&t["quality"], &t["value"]), (&json!("bad"), &Value::Null), "{latest}");
    get_json(gw.url("/v1/latest")).await;

    for q in ["air_temperature", "relative_humidity"] {
        let got = readings(&gw, "test-js-nan", q, from).await;
        assert_eq!(got.len(), 2, "{q}: as text and as numbers: {got:?}");
        for r in &got {
            assert_eq!((&r["quality"], &r["value"]), (&json!("bad"), &Value::Null), "{q}: {got:?}");
            assert!(r["reason"].as_str().unwrap().contains("is not a finite number"), "{q}: {got:?}");
        }
    }
    assert_eq!(dead_letters(&gw).await.len(), 0);
}

const JSON_EUI: &str = "70B3D57ED0000301";

/// `message` (a TTN or ChirpStack uplink) with `key` set to `value` at `path` (a JSON pointer
/// to the object that gets it).
fn with(message: Vec<u8>, path: &str, key: &str, value: Value) -> Vec<u8> {
    let mut m: Value = serde_json::from_slice(&message).unwrap();
    m.pointer_mut(path).unwrap()[key] = value;
    m.to_string().into_bytes()
}

#[tokio::test]
async fn json_profiles_decode_ttn_decoded_payload_and_chirpstack_object() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("jsonprofile");
    let (devices, profiles) = devices_and_profiles(dir.path(), &device("json-station", "generic-json-weather", JSON_EUI), &[]);
    let admin = admin_section(100, &[("it", ROOT, &["*"])]);
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, &admin, &devices, &profiles).await;
    let from = Utc::now() - Duration::hours(1);
    let at = |min: i64| stamp(Utc::now() - Duration::minutes(min));
    let full = json!({"temperature": 21.5, "humidity": 48, "pressure": 1013.2, "wind": {"speed": 36, "gust": 54, "direction": 270}, "rain": 0.2, "pm2_5": 7.5});
    let ttn = with(ttn_uplink("json-station", JSON_EUI, 1, "00", &at(3)), "/uplink_message", "decoded_payload", full);
    let cs = with(
        chirpstack_uplink(JSON_EUI, 2, "00", &at(2)),
        "",
        "object",
        json!({"temperature": 22.0, "humidity": 50, "pressure": 1012.8}),
    );
    // No formatter ran on the network server: nothing for the JSON layout to read.
    let bare = ttn_uplink("json-station", JSON_EUI, 3, "00", &at(1));
    // A number no double holds: JSON decoders refuse it, so the message can't be read.
    let huge = with(
        ttn_uplink("json-station", JSON_EUI, 4, "00", &at(1)),
        "/uplink_message",
        "decoded_payload",
        json!({"temperature": 12345.678}),
    );
    let huge = String::from_utf8(huge).unwrap().replace("12345.678", "1e999").into_bytes();
    let messages = vec![
        (topics.ttn("json-station"), ttn),
        (topics.chirpstack(JSON_EUI), cs),
        (topics.ttn("json-station"), bare),
        (topics.ttn("json-station"), huge),
    ];
    publish_all(broker.port, &format!("{}-pub", topics.prefix), messages).await;
    wait_counts(&gw, 2.0, 2.0).await;

    let values = |rs: Vec<Value>| rs.iter().map(|r| r["value"].as_f64().unwrap()).collect::<Vec<f64>>();
    assert_eq!(values(readings(&gw, "json-station", "air_temperature", from).await), vec![21.5, 22.0]);
    assert_eq!(values(readings(&gw, "json-station", "air_pressure", from).await), vec![1013.2, 1012.8]);
    // km/h converted: 36 km/h = 10 m/s; only the TTN message had wind.
    assert_eq!(values(readings(&gw, "json-station", "wind_speed", from).await), vec![10.0]);
    // Derived from temperature and humidity, as for binary profiles.
    assert_eq!(readings(&gw, "json-station", "dew_point_temperature", from).await.len(), 2);
    let letters = dead_letters(&gw).await;
    let reasons: Vec<&str> = letters.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons.len(), 2, "{letters:?}");
    assert!(reasons.iter().any(|r| r.contains("generic-json-weather") && r.contains("no decoded object")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("out of range")), "{reasons:?}");
}

both_backends! {
#[tokio::test]
async fn readings_stored_at_their_reception_never_take_the_place_of_stored_readings() {
    // A device whose clock is sometimes right and sometimes years ahead: the plausible uplinks
    // keep their measurement times, one every millisecond of a few seconds just ahead of the
    // clock; then, while the clock is inside those seconds, uplinks claiming 2099 arrive and
    // are stored at their reception time, whose milliseconds are all taken. Once with the
    // taken milliseconds written by the same run, once after a restart (known only to the store).
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("taken-times");
    let mut gw = Gateway::start(broker.port, dir.path(), &topics).await;
    let publisher = format!("{}-pub", topics.prefix);
    let (window, burst) = (4000_i64, 300_u32);
    let first = Utc::now() + Duration::seconds(8);
    let first = DateTime::from_timestamp_millis(first.timestamp_millis()).unwrap();
    let second = first + Duration::milliseconds(window) + Duration::seconds(12);
    let mut f_cnt = 0;
    let mut measured = Vec::new();
    for start in [first, second] {
        for k in 0..window {
            f_cnt += 1;
            let at = (start + Duration::milliseconds(k)).to_rfc3339_opts(SecondsFormat::Millis, true);
            let payload = lht65(10.0 + (k % 1000) as f64 / 100.0, 50.0);
            measured.push((topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", f_cnt, &payload, &at)));
        }
    }
    publish_all(broker.port, &publisher, measured).await;
    wait_counts(&gw, (2 * window) as f64, 0.0).await;
    assert!(Utc::now() < first, "the plausible uplinks took too long to store for this test");

    let mut decoded = 2 * window;
    for (round, start) in [first, second].into_iter().enumerate() {
        if round == 1 {
            gw.restart().await;
            decoded = 0;
        }
        let at = start + Duration::milliseconds(100);
        tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await;
        let uplinks = (0..burst)
            .map(|_| {
                f_cnt += 1;
                let payload = lht65(-5.0, 50.0);
                (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", f_cnt, &payload, "2099-01-01T00:00:00Z"))
            })
            .collect();
        publish_all(broker.port, &publisher, uplinks).await;
        decoded += burst as i64;
        wait_counts(&gw, decoded as f64, 0.0).await;
        assert!(
            Utc::now() < start + Duration::milliseconds(window),
            "round {round}: the burst arrived after the taken milliseconds; nothing was tested"
        );
    }
    gw.terminate();
    let expected = (2 * window + 2 * burst as i64) as usize;
    let stored = gw.stored_per_quantity("demo-lht65");
    assert!(!stored.is_empty());
    for (quantity, n) in stored {
        assert_eq!(n, expected, "{quantity}: every acknowledged uplink's reading is stored");
    }
}
}

both_backends! {
#[tokio::test]
async fn a_measured_reading_at_a_millisecond_given_at_reception_moves_that_reading_aside() {
    // Uplinks claiming 2099 are stored at their reception time; then an uplink measured at
    // exactly one of those milliseconds arrives. It is stored at its measurement time and the
    // reading that held it moves to a free millisecond: both are kept.
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("moved-aside");
    let mut gw = Gateway::start(broker.port, dir.path(), &topics).await;
    let publisher = format!("{}-pub", topics.prefix);
    let start = Utc::now() - Duration::seconds(1);
    let n = 50_u32;
    let uplinks = (0..n)
        .map(|i| {
            let payload = lht65(10.0 + i as f64 / 10.0, 50.0);
            (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", i + 1, &payload, "2099-01-01T00:00:00Z"))
        })
        .collect();
    publish_all(broker.port, &publisher, uplinks).await;
    wait_counts(&gw, n as f64, 0.0).await;
    let series = readings_ahead(&gw, "demo-lht65", "air_temperature", start).await;
    assert_eq!(series.len(), n as usize);
    let taken = series[n as usize / 2].clone();
    let at = taken["time"].as_str().unwrap().to_owned();
    let measured = ttn_uplink("demo-lht65", "A840410000000001", n + 1, &lht65(-7.5, 50.0), &at);
    publish_all(broker.port, &publisher, vec![(topics.ttn("demo-lht65"), measured)]).await;
    wait_counts(&gw, n as f64 + 1.0, 0.0).await;

    let series = readings_ahead(&gw, "demo-lht65", "air_temperature", start).await;
    let here: Vec<&Value> = series.iter().filter(|r| r["time"] == json!(at)).collect();
    assert_eq!(here.len(), 1, "{series:?}");
    assert_eq!(here[0]["value"], json!(-7.5), "the measured reading keeps its time: {series:?}");
    let moved: Vec<&Value> = series.iter().filter(|r| r["value"] == taken["value"]).collect();
    assert_eq!(moved.len(), 1, "{series:?}");
    assert_ne!(moved[0]["time"], json!(at));
    assert_eq!(moved[0]["quality"], "suspect", "still says it claimed 2099: {}", moved[0]);
    let text = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    gw.terminate();
    let stored = gw.stored_per_quantity("demo-lht65");
    for (quantity, stored) in &stored {
        assert_eq!(*stored, n as usize + 1, "{quantity}: every acknowledged uplink's reading is stored");
    }
    // One reading of each quantity moved, and the metric says so.
    assert_eq!(metric(&text, "messnetz_readings_moved_aside_total"), Some(stored.len() as f64), "{text}");
}
}
