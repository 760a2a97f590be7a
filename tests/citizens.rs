//! Citizen sensors against the gateway binary over real HTTP and a real broker: registration,
//! the sensor.community push (stored only when acknowledged; 401, 413, 400 and unknown value
//! types as dead letters, none of which stops ingestion), approval before anything is public,
//! deletion with all data, the neighbour test against official stations, and the plain-JSON
//! MQTT format.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const ROOT: &str = "all-departments-token-0123456789abcd";
/// The walkthrough's LHT65 payload: 28.29 °C.
const LHT65_28_29: &str = "cbf60b0d0376010add7fff";

/// `[citizens]` on, a json subscription, an all-departments admin token.
fn extra(topics: &Topics) -> String {
    extra_with(topics, "")
}

/// Like [`extra`], with more `[citizens]` lines.
fn extra_with(topics: &Topics, citizens: &str) -> String {
    format!(
        "\n[[mqtt.subscriptions]]\ntopic = \"{}/tele/+/SENSOR\"\nformat = \"json\"\n\n[citizens]\nenabled = true\nmax_body_bytes = 4096\n{citizens}\n{}",
        topics.prefix,
        admin_section(100, &[("it", ROOT, &["*"])])
    )
}

/// The demo devices plus a plain-JSON sensor named `balkon-3`.
fn devices_with_json_sensor(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (devices, profiles) = own_devices_and_profiles(dir);
    let mut text = std::fs::read_to_string(&devices).unwrap();
    text.push_str(
        "\n[[device]]\nid = \"balkon-3\"\nname = \"Balkon 3 (ESPHome)\"\nprofile = \"generic-json-weather\"\nlat = 48.139\nlon = 11.578\ndistrict = \"Altstadt\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n",
    );
    std::fs::write(&devices, text).unwrap();
    (devices, profiles)
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn register(c: &Client, gw: &Gateway, name: &str, lat: f64, lon: f64) -> (String, String) {
    let (status, body) = json_of(
        c.post(gw.url("/v1/citizens/sensors"))
            .json(&json!({ "name": name, "lat": lat, "lon": lon, "district": "Altstadt" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (body["id"].as_str().unwrap().to_owned(), body["token"].as_str().unwrap().to_owned())
}

/// A push as the sensor.community firmware sends it (values as text, X-Sensor and X-Pin).
async fn push(c: &Client, gw: &Gateway, token: &str, body: String) -> (StatusCode, Value) {
    json_of(
        c.post(gw.url("/v1/citizens/push"))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .header("X-Sensor", "esp8266-13463610")
            .header("X-Pin", "11")
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn firmware_body(temperature: &str) -> String {
    json!({
        "esp8266id": "13463610",
        "software_version": "NRZ-2020-133",
        "sensordatavalues": [
            {"value_type": "SDS_P1", "value": "12.30"},
            {"value_type": "SDS_P2", "value": "7.10"},
            {"value_type": "BME280_temperature", "value": temperature},
            {"value_type": "BME280_humidity", "value": "41.50"},
            {"value_type": "BME280_pressure", "value": "101325.00"},
            {"value_type": "samples", "value": "871234"},
            {"value_type": "signal", "value": "-71"}
        ]
    })
    .to_string()
}

async fn approve(c: &Client, gw: &Gateway, id: &str) {
    let (status, body) =
        json_of(c.post(gw.url(&format!("/v1/admin/citizens/{id}/approve"))).bearer_auth(ROOT).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn latest(c: &Client, gw: &Gateway, id: &str) -> (StatusCode, Value) {
    json_of(c.get(gw.url(&format!("/v1/devices/{id}/latest"))).send().await.unwrap()).await
}

fn reading<'a>(latest: &'a Value, quantity: &str) -> &'a Value {
    latest["readings"].as_array().unwrap().iter().find(|r| r["quantity"] == quantity).unwrap_or(&Value::Null)
}

/// Wait until the device's latest `quantity` is there (MQTT messages are stored some time
/// after the broker acknowledged them); returns the whole answer.
async fn wait_latest(c: &Client, gw: &Gateway, id: &str, quantity: &str) -> Value {
    wait_for(&format!("{id}'s {quantity}"), Duration::from_secs(10), || async {
        let (_, body) = latest(c, gw, id).await;
        (!reading(&body, quantity).is_null()).then_some(body)
    })
    .await
}

async fn dead_letters(c: &Client, gw: &Gateway) -> Vec<Value> {
    let (status, body) = json_of(c.get(gw.url("/v1/admin/dead-letters")).bearer_auth(ROOT).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["dead_letters"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_firmware_push_is_stored_and_bad_pushes_are_refused_without_stopping_ingestion() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("citizens-push");
    let (devices, profiles) = devices_with_json_sensor(dir.path());
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, &extra(&topics), &devices, &profiles).await;
    let c = Client::new();
    let (id, token) = register(&c, &gw, "Balkon Nord", 48.1380, 11.5760).await;
    assert!(token.starts_with(&format!("{id}.")), "{token}");

    // Stored when answered: the readings are there right after the 200 (read as operator,
    // since the sensor is not approved yet and its data not public).
    let (status, body) = push(&c, &gw, &token, firmware_body("21.40")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stored"], 5, "{body}");
    assert_eq!(body["public"], false, "{body}");
    let (status, _) = latest(&c, &gw, &id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not public before an operator approves it");
    let listed: Value = c.get(gw.url("/v1/devices")).send().await.unwrap().json().await.unwrap();
    assert!(!listed.to_string().contains(&id), "an unapproved sensor is not listed: {listed}");
    approve(&c, &gw, &id).await;
    let (status, now) = latest(&c, &gw, &id).await;
    assert_eq!(status, StatusCode::OK, "{now}");
    assert_eq!(now["source"], "citizen", "{now}");
    assert_eq!(reading(&now, "air_temperature")["value"], 21.4, "{now}");
    assert_eq!(reading(&now, "air_pressure")["value"], 1013.25, "Pa become hPa: {now}");
    assert_eq!(reading(&now, "mass_concentration_of_pm10_ambient_aerosol_particles_in_air")["value"], 12.3, "{now}");
    let listed: Value = c.get(gw.url("/v1/devices")).send().await.unwrap().json().await.unwrap();
    let entry = listed["devices"].as_array().unwrap().iter().find(|d| d["id"] == id.as_str()).cloned().unwrap();
    assert_eq!(entry["source"], "citizen", "{entry}");
    let page = c.get(gw.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Balkon Nord") && page.contains("Bürgersensor"), "the page marks citizen data");

    // HTTP Basic with the token as password, as the firmware's user/password fields send it.
    let basic = c
        .post(gw.url("/v1/citizens/push"))
        .basic_auth("esp8266-13463610", Some(&token))
        .body(firmware_body("21.5"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);

    // Wrong, missing and another sensor's tokens: 401, nothing stored.
    let (other, other_token) = register(&c, &gw, "Garten", 48.14, 11.58).await;
    for bad in [format!("{token}x"), format!("{id}.{}", "A".repeat(43)), "nonsense".to_owned(), other_token.replace(&other, &id)]
    {
        let (status, body) = push(&c, &gw, &bad, firmware_body("99.0")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}: {body}");
    }
    let anonymous = c.post(gw.url("/v1/citizens/push")).body(firmware_body("99.0")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers()["www-authenticate"].to_str().unwrap().contains("Bearer"));

    // Over the limit: 413 (declared and chunked alike), nothing stored.
    let big = format!("{{\"sensordatavalues\":[],\"pad\":\"{}\"}}", "x".repeat(5000));
    let (status, _) = push(&c, &gw, &token, big.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let chunked = chunked_push(&gw, &token, big.as_bytes()).await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");

    // Malformed JSON: 400 and a dead letter; an unknown value type: 422 and a dead letter naming it.
    let (status, body) = push(&c, &gw, &token, "{\"sensordatavalues\": [".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["dead_letter"], true);
    let unknown = json!({"esp8266id": "1", "sensordatavalues": [{"value_type": "XYZ_flux", "value": "3"}]}).to_string();
    let (status, body) = push(&c, &gw, &token, unknown).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let letters = dead_letters(&c, &gw).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters.iter().any(|l| l["reason"].as_str().unwrap().contains("not valid sensor-community JSON")), "{letters:?}");
    assert!(letters.iter().any(|l| l["reason"].as_str().unwrap().contains("unknown value_type XYZ_flux")), "{letters:?}");
    assert!(letters.iter().all(|l| l["topic"] == format!("citizens/{id}/sensor-community")), "{letters:?}");

    // None of it stopped anything: the next push and an MQTT uplink are stored.
    let (status, _) = push(&c, &gw, &token, firmware_body("22.75")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reading(&latest(&c, &gw, &id).await.1, "air_temperature")["value"], 22.75);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    publish_all(
        broker.port,
        &format!("{}-pub", topics.prefix),
        vec![(topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", 7, LHT65_28_29, &now))],
    )
    .await;
    let official = wait_latest(&c, &gw, "demo-lht65", "air_temperature").await;
    assert_eq!(reading(&official, "air_temperature")["value"], 28.29, "{official}");
    assert!(official.get("source").is_none(), "official answers keep their documented shape: {official}");

    // The citizen deletes the sensor with its token: everything goes; the token is dead.
    let wrong = c.delete(gw.url(&format!("/v1/citizens/sensors/{id}"))).bearer_auth(&other_token).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "another sensor's token deletes nothing");
    let (status, body) =
        json_of(c.delete(gw.url(&format!("/v1/citizens/sensors/{id}"))).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["readings"].as_u64().unwrap() >= 15, "{body}");
    assert_eq!(latest(&c, &gw, &id).await.0, StatusCode::NOT_FOUND);
    let (status, _) = push(&c, &gw, &token, firmware_body("20.0")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, list) = json_of(c.get(gw.url("/v1/admin/citizens")).bearer_auth(ROOT).send().await.unwrap()).await;
    let ids: Vec<&str> = list["sensors"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![other.as_str()], "{list}");
    assert!(!list.to_string().contains("token"), "token hashes stay in the store: {list}");
}

/// A push whose body is sent chunked, without Content-Length; returns the status line on.
async fn chunked_push(gw: &Gateway, token: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let head = format!(
        "POST /v1/citizens/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(1000) {
        // The server may answer and close before the whole body is sent.
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.is_err()
            || s.write_all(chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_reading_8_degrees_above_its_two_nearest_official_neighbours_is_suspect() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("citizens-neighbours");
    let (devices, profiles) = own_devices_and_profiles(dir.path());
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, &extra(&topics), &devices, &profiles).await;
    let c = Client::new();
    // The two open demo stations, 1.6 km apart, both at 28.29 °C this hour.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    publish_all(
        broker.port,
        &format!("{}-pub", topics.prefix),
        vec![
            (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", 1, LHT65_28_29, &now)),
            (topics.chirpstack("A840410000000002"), chirpstack_uplink("A840410000000002", 1, LHT65_28_29, &now)),
        ],
    )
    .await;
    for station in ["demo-lht65", "demo-lht65-park"] {
        assert_eq!(reading(&wait_latest(&c, &gw, station, "air_temperature").await, "air_temperature")["value"], 28.29);
    }
    let (hot, hot_token) = register(&c, &gw, "Dachterrasse", 48.1410, 11.5800).await;
    let (fine, fine_token) = register(&c, &gw, "Hinterhof", 48.1420, 11.5810).await;
    approve(&c, &gw, &hot).await;
    approve(&c, &gw, &fine).await;
    assert_eq!(push(&c, &gw, &hot_token, firmware_body("36.29")).await.0, StatusCode::OK);
    assert_eq!(push(&c, &gw, &fine_token, firmware_body("29.10")).await.0, StatusCode::OK);

    let hot_now = latest(&c, &gw, &hot).await.1;
    assert_eq!(reading(&hot_now, "air_temperature")["quality"], "suspect", "{hot_now}");
    assert_eq!(reading(&hot_now, "air_pressure")["quality"], "good", "no official station measures pressure: {hot_now}");
    let fine_now = latest(&c, &gw, &fine).await.1;
    assert_eq!(reading(&fine_now, "air_temperature")["quality"], "good", "{fine_now}");

    // The reason names the test and both neighbours.
    let from = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let url = gw.url(&format!("/v1/readings?device={hot}&quantity=air_temperature&from={from}"));
    let series: Value = c.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(series["source"], "citizen", "{series}");
    let reason = series.to_string();
    assert!(reason.contains("neighbours: 36.29 Cel differs by more than 5 Cel"), "{reason}");
    assert!(reason.contains("demo-lht65 28.29") && reason.contains("demo-lht65-park 28.29"), "{reason}");

    // Citizen data stays out of the official district aggregates (opt-in only).
    let from_h = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let agg: Value = c
        .get(gw.url(&format!("/v1/aggregates?district=Altstadt&quantity=air_temperature&interval=1h&from={from_h}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let counted: u64 = agg["points"].as_array().unwrap().iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 1, "only the official station counts in Altstadt: {agg}");
}

#[tokio::test]
async fn plain_json_over_mqtt_is_read_by_the_devices_profile() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("citizens-json");
    let (devices, profiles) = devices_with_json_sensor(dir.path());
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, &extra(&topics), &devices, &profiles).await;
    let c = Client::new();
    publish_all(
        broker.port,
        &format!("{}-pub", topics.prefix),
        vec![
            (format!("{}/tele/balkon-3/SENSOR", topics.prefix), br#"{"temperature": 19.75, "humidity": 61}"#.to_vec()),
            (format!("{}/tele/balkon-3/SENSOR", topics.prefix), b"not json".to_vec()),
            (format!("{}/tele/unbekannt/SENSOR", topics.prefix), br#"{"temperature": 1}"#.to_vec()),
        ],
    )
    .await;
    let now = wait_latest(&c, &gw, "balkon-3", "relative_humidity").await;
    assert_eq!(reading(&now, "air_temperature")["value"], 19.75, "{now}");
    assert_eq!(reading(&now, "relative_humidity")["value"], 61.0, "{now}");
    let letters = wait_for("two dead letters", Duration::from_secs(10), || async {
        let letters = dead_letters(&c, &gw).await;
        (letters.len() == 2).then_some(letters)
    })
    .await;
    assert!(letters.iter().any(|l| l["reason"].as_str().unwrap().contains("not valid json JSON")), "{letters:?}");
    assert!(letters.iter().any(|l| l["reason"].as_str().unwrap().contains("unknown device")), "{letters:?}");
}

#[tokio::test]
async fn without_citizens_enabled_the_routes_do_not_exist() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("citizens-off");
    let gw = Gateway::start(broker.port, dir.path(), &topics).await;
    let c = Client::new();
    let r = c.post(gw.url("/v1/citizens/sensors")).json(&json!({"name": "x", "lat": 48.0, "lon": 11.0})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c.post(gw.url("/v1/citizens/push")).bearer_auth("c-1.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let page = c.get(gw.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(!page.contains("register-form"), "no registration form when citizens are off");
}

/// The hostile push bodies of fuzz/corpus/citizen_push, each sent to the gateway: every one is
/// answered (200, 400, 413 or 422, never a 5xx or a hang), and a good push afterwards is stored.
#[tokio::test]
async fn every_hostile_push_of_the_corpus_is_answered_and_ingestion_goes_on() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("citizens-corpus");
    let (devices, profiles) = own_devices_and_profiles(dir.path());
    let extra = extra_with(&topics, "max_pending = 6");
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, &extra, &devices, &profiles).await;
    let c = Client::new();
    let (id, token) = register(&c, &gw, "Korpus", 48.1380, 11.5760).await;
    let corpus = Path::new(common::MANIFEST_DIR).join("fuzz/corpus/citizen_push");
    let mut files: Vec<_> = std::fs::read_dir(&corpus).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 15, "corpus went missing");
    for file in &files {
        let body = std::fs::read(file).unwrap();
        let r = c.post(gw.url("/v1/citizens/push")).bearer_auth(&token).body(body).send().await.unwrap();
        let status = r.status();
        assert!(
            [StatusCode::OK, StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY, StatusCode::PAYLOAD_TOO_LARGE]
                .contains(&status),
            "{}: {status} {}",
            file.display(),
            r.text().await.unwrap()
        );
        let name = file.file_name().unwrap().to_str().unwrap();
        if name == "good-firmware" || name == "numbers-not-text" {
            assert_eq!(status, StatusCode::OK, "{name}");
        }
    }
    // The log stays one line per event: a value type with control characters is escaped.
    assert!(!gw.log_text().lines().any(|l| l.starts_with("FAKE LOG LINE")), "a push forged a log line");
    let (status, _) = push(&c, &gw, &token, firmware_body("23.5")).await;
    assert_eq!(status, StatusCode::OK);
    approve(&c, &gw, &id).await;
    assert_eq!(reading(&latest(&c, &gw, &id).await.1, "air_temperature")["value"], 23.5);

    // Bad registrations are refused with the reason.
    for bad in
        [json!({"name": "", "lat": 48.0, "lon": 11.0}), json!({"name": "x", "lat": 91.0, "lon": 11.0}), json!({"name": "x"})]
    {
        let r = c.post(gw.url("/v1/citizens/sensors")).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    // Registrations waiting for approval are bounded: with 6 pending, the next is refused.
    for i in 0..6 {
        let r = c
            .post(gw.url("/v1/citizens/sensors"))
            .json(&json!({"name": format!("s{i}"), "lat": 48.0, "lon": 11.0}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{i}");
    }
    let r = c
        .post(gw.url("/v1/citizens/sensors"))
        .json(&json!({"name": "one too many", "lat": 48.0, "lon": 11.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}
