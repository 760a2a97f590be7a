//! End to end over real sockets: uplinks published to a real Mosquitto come out of the gateway's HTTP API.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// Dragino's published LHT65 example: 3.062 V, 28.29 °C, 88.6 %, probe 27.81 °C.
const LHT65_EXAMPLE: &str = "CBF60B0D0376010ADD7FFF";

async fn get_json(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

async fn latest_with(gw: &Gateway, device: &str, n: usize) -> Value {
    let url = gw.url(&format!("/v1/devices/{device}/latest"));
    wait_for(&format!("{n} readings of {device}"), Duration::from_secs(20), || {
        let url = url.clone();
        async move {
            let (_, body) = get_json(&url).await;
            (body["readings"].as_array()?.len() >= n).then_some(body)
        }
    })
    .await
}

/// Follow `next` links until the series ends.
async fn all_pages(gw: &Gateway, first: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next {
        let (status, page) = get_json(&gw.url(&path)).await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["readings"].as_array().unwrap().iter().cloned());
        next = page["next"].as_str().map(str::to_owned);
    }
    out
}

fn value_of(latest: &Value, quantity: &str) -> (f64, String, String) {
    let r = latest["readings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["quantity"] == quantity)
        .unwrap_or_else(|| panic!("no {quantity} in {latest}"));
    (r["value"].as_f64().unwrap(), r["unit"].as_str().unwrap().into(), r["time"].as_str().unwrap().into())
}

both_backends! {
#[tokio::test]
async fn ttn_and_chirpstack_uplinks_reach_the_api_with_the_vendor_values() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("formats");
    let gw = Gateway::start(broker.port, dir.path(), &topics).await;

    publish_all(
        broker.port,
        &format!("{}-pub", topics.prefix),
        vec![
            (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", 1, LHT65_EXAMPLE, "2026-11-25T10:00:00Z")),
            (
                topics.chirpstack("A840410000000002"),
                chirpstack_uplink("A840410000000002", 7, LHT65_EXAMPLE, "2026-11-25T10:05:00.250Z"),
            ),
        ],
    )
    .await;

    for (device, time) in [("demo-lht65", "2026-11-25T10:00:00Z"), ("demo-lht65-park", "2026-11-25T10:05:00.250Z")] {
        let latest = latest_with(&gw, device, 6).await;
        assert_eq!(value_of(&latest, "battery_voltage"), (3.062, "V".into(), time.into()), "{device}");
        assert_eq!(value_of(&latest, "air_temperature"), (28.29, "Cel".into(), time.into()), "{device}");
        assert_eq!(value_of(&latest, "relative_humidity"), (88.6, "%".into(), time.into()), "{device}");
        assert_eq!(value_of(&latest, "probe_temperature"), (27.81, "Cel".into(), time.into()), "{device}");
        // Derived from temperature and humidity: Magnus dew point, NWS heat index.
        let (dew, unit, _) = value_of(&latest, "dew_point_temperature");
        assert!(dew == 26.22 && unit == "Cel", "{dew}");
        let (hi, _, _) = value_of(&latest, "heat_index");
        assert_eq!(hi, 34.57);
        assert_eq!(latest["readings"].as_array().unwrap().len(), 6, "{latest}");
    }

    // The catalogue lists the open devices with their last-seen time, never the internal one.
    let (status, catalogue) = get_json(&gw.url("/v1/devices")).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = catalogue["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["demo-lht65", "demo-lht65-park"]);
    assert!(catalogue["devices"][0]["last_seen"].is_string(), "{catalogue}");
    assert_eq!(catalogue["devices"][0]["district"], "Altstadt");

    let metrics = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(metric(&metrics, "messnetz_messages_decoded_total"), Some(2.0), "{metrics}");
    assert_eq!(metric(&metrics, "messnetz_readings_stored_total"), Some(12.0), "{metrics}");
    assert_eq!(metric(&metrics, "messnetz_messages_acked_total"), Some(2.0), "{metrics}");
    assert!(metric(&metrics, "messnetz_store_commit_seconds_count").unwrap() >= 1.0);
}
}

both_backends! {
#[tokio::test]
async fn malformed_messages_become_dead_letters_and_the_next_good_one_goes_through() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("deadletters");
    let mut gw = Gateway::start(broker.port, dir.path(), &topics).await;

    let bad = vec![
        (topics.ttn("demo-lht65"), b"{not json".to_vec()),
        // A device nobody registered.
        (topics.ttn("stranger"), ttn_uplink("stranger", "0000000000000099", 3, LHT65_EXAMPLE, "2026-11-25T10:00:00Z")),
        // A payload too short for the profile.
        (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", 4, "CBF60B", "2026-11-25T10:01:00Z")),
    ];
    let good = (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", 5, LHT65_EXAMPLE, "2026-11-25T10:02:00Z"));
    let mut messages = bad.clone();
    messages.push(good);
    publish_all(broker.port, &format!("{}-pub", topics.prefix), messages).await;

    let latest = latest_with(&gw, "demo-lht65", 4).await;
    assert_eq!(value_of(&latest, "air_temperature").2, "2026-11-25T10:02:00Z");
    wait_for("3 dead letters", Duration::from_secs(10), || async {
        (gw.metric("messnetz_dead_letters_total").await == 3.0).then_some(())
    })
    .await;
    assert_eq!(gw.metric("messnetz_messages_failed_total").await, 3.0);

    // The dead letters keep the raw bytes, the topic and the reason.
    assert!(gw.terminate().success(), "clean exit on SIGTERM");
    let store = gw.open_store();
    let letters = dead_letters_in(&*store, 10);
    assert_eq!(letters.len(), 3, "{letters:?}");
    for (letter, (topic, payload)) in letters.iter().zip(&bad) {
        assert_eq!(&letter.topic, topic);
        assert_eq!(&letter.payload, payload);
        assert_eq!(letter.format, "ttn-v3");
    }
    assert!(letters[0].reason.contains("not valid ttn-v3 JSON"), "{}", letters[0].reason);
    assert!(letters[1].reason.contains("unknown device"), "{}", letters[1].reason);
    assert!(letters[2].reason.contains("dragino-lht65"), "{}", letters[2].reason);
    assert_eq!(letters[2].device.as_deref(), Some("demo-lht65"));
}
}

both_backends! {
#[tokio::test]
async fn internal_devices_are_invisible_and_bad_queries_say_why() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("visibility");
    let gw = Gateway::start(broker.port, dir.path(), &topics).await;
    let mut messages = vec![(
        topics.ttn("demo-lht65-depot"),
        ttn_uplink("demo-lht65-depot", "A840410000000003", 1, LHT65_EXAMPLE, "2026-11-25T09:00:00Z"),
    )];
    for i in 0..5 {
        messages.push((
            topics.ttn("demo-lht65"),
            ttn_uplink("demo-lht65", "A840410000000001", 10 + i, LHT65_EXAMPLE, &format!("2026-11-25T09:{:02}:00Z", i * 10)),
        ));
    }
    publish_all(broker.port, &format!("{}-pub", topics.prefix), messages).await;
    // Decoded, and committed (acknowledged only after the commit): then the API serves them.
    wait_for("6 messages stored", Duration::from_secs(20), || async {
        (gw.metric("messnetz_messages_decoded_total").await == 6.0 && gw.metric("messnetz_messages_acked_total").await == 6.0)
            .then_some(())
    })
    .await;

    // The internal device was stored but is not served, and its 404 looks like an unknown id's.
    let (status, body) = get_json(&gw.url("/v1/devices/demo-lht65-depot/latest")).await;
    assert_eq!(status, 404, "{body}");
    let (_, unknown) = get_json(&gw.url("/v1/devices/no-such-device/latest")).await;
    assert_eq!(
        body["error"].as_str().unwrap().replace("demo-lht65-depot", "X"),
        unknown["error"].as_str().unwrap().replace("no-such-device", "X")
    );
    let (status, _) =
        get_json(&gw.url("/v1/readings?device=demo-lht65-depot&quantity=air_temperature&from=2026-11-25T00:00:00Z")).await;
    assert_eq!(status, 404);

    // A time series, paged.
    let url = gw.url(
        "/v1/readings?device=demo-lht65&quantity=relative_humidity&from=2026-11-25T09:00:00Z&to=2026-11-25T10:00:00Z&limit=3",
    );
    let (status, page) = get_json(&url).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["unit"], "%");
    let times: Vec<&str> = page["readings"].as_array().unwrap().iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert_eq!(times, vec!["2026-11-25T09:00:00Z", "2026-11-25T09:10:00Z", "2026-11-25T09:20:00Z"]);
    let (_, page2) = get_json(&gw.url(page["next"].as_str().unwrap())).await;
    let times: Vec<&str> = page2["readings"].as_array().unwrap().iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert_eq!(times, vec!["2026-11-25T09:30:00Z", "2026-11-25T09:40:00Z"]);
    assert!(page2["next"].is_null());

    // CSV of the same range.
    let csv = reqwest::get(gw.url(
        "/v1/readings?device=demo-lht65&quantity=air_temperature&from=2026-11-25T09:00:00Z&to=2026-11-25T09:15:00Z&format=csv",
    ))
    .await
    .unwrap();
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert_eq!(
        csv.text().await.unwrap(),
        "time,value,unit,quality\n2026-11-25T09:00:00Z,28.29,Cel,good\n2026-11-25T09:10:00Z,28.29,Cel,good\n"
    );

    // Bad parameters: 400 naming the parameter.
    for (query, param) in [
        ("quantity=air_temperature", "device"),
        ("device=demo-lht65&quantity=air_temperature&from=last-week", "from"),
        ("device=demo-lht65&quantity=temperature", "quantity"),
        ("device=demo-lht65&quantity=air_temperature&limit=-1", "limit"),
        ("device=demo-lht65&quantity=air_temperature&format=xlsx", "format"),
    ] {
        let (status, body) = get_json(&gw.url(&format!("/v1/readings?{query}"))).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].as_str().unwrap().starts_with(&format!("{param}:")), "{query}: {body}");
    }
}
}

both_backends! {
#[tokio::test]
async fn the_gateway_reconnects_and_resubscribes_after_the_broker_restarts() {
    // Its own broker: this test kills it. Without persistence the restarted broker has
    // forgotten the session, so only a fresh SUBSCRIBE gets messages flowing again.
    let mut broker = Mosquitto::start_private();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("reconnect");
    let gw = Gateway::start(broker.port, dir.path(), &topics).await;
    let publisher = format!("{}-pub", topics.prefix);
    let up = |f_cnt: u32, time: &str| {
        (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", f_cnt, LHT65_EXAMPLE, time))
    };

    publish_all(broker.port, &publisher, vec![up(1, "2026-11-25T08:00:00Z")]).await;
    wait_for("the first message", Duration::from_secs(20), || async {
        (gw.metric("messnetz_messages_acked_total").await == 1.0).then_some(())
    })
    .await;

    broker.restart();
    wait_for("a reconnect and new subscriptions", Duration::from_secs(30), || async {
        (gw.metric("messnetz_mqtt_connects_total").await >= 2.0 && gw.metric("messnetz_mqtt_subscriptions_total").await >= 4.0)
            .then_some(())
    })
    .await;
    publish_all(broker.port, &publisher, vec![up(2, "2026-11-25T08:10:00Z")]).await;
    let latest = latest_with(&gw, "demo-lht65", 4).await;
    let latest = wait_for("the message after the restart", Duration::from_secs(20), || {
        let latest = latest.clone();
        let url = gw.url("/v1/devices/demo-lht65/latest");
        async move {
            if value_of(&latest, "air_temperature").2 == "2026-11-25T08:10:00Z" {
                return Some(latest);
            }
            let (_, body) = get_json(&url).await;
            (value_of(&body, "air_temperature").2 == "2026-11-25T08:10:00Z").then_some(body)
        }
    })
    .await;
    assert_eq!(value_of(&latest, "air_temperature").0, 28.29);
}
}

both_backends! {
#[tokio::test]
async fn tls_and_a_password_are_configuration_not_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A throwaway CA and a server certificate for 127.0.0.1.
    let openssl = |args: &str| {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("cd {} && openssl {args}", d.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args}");
    };
    openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=messnetz-test-ca");
    openssl("req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1");
    std::fs::write(d.join("ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        .unwrap();
    openssl("x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext");
    let status = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(d.join("passwd"))
        .args(["messnetz", "s3cret-pass"])
        .status()
        .expect("mosquitto_passwd");
    assert!(status.success());
    // Mosquitto started as root drops to its own user before reading these throwaway files.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["ca.pem", "server.pem", "server.key", "passwd"] {
        std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    // TLS with a password for the gateway; a plain anonymous listener for the test's publisher.
    let (tls_port, plain_port) = (free_port(), free_port());
    let conf = format!(
        "per_listener_settings true\npersistence false\n\
         listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nallow_anonymous false\npassword_file {d}/passwd\n\
         listener {plain_port} 127.0.0.1\nallow_anonymous true\n",
        d = d.display()
    );
    let broker = Mosquitto::start_with_conf(plain_port, &conf);
    let topics = Topics::new("tls");
    let extra =
        format!("username = \"messnetz\"\npassword = \"s3cret-pass\"\n[mqtt.tls]\nca_file = \"{}/ca.pem\"\n", d.display());
    let gw = Gateway::start_with(tls_port, d, &topics, &extra).await;
    publish_all(
        broker.port,
        &format!("{}-pub", topics.prefix),
        vec![(topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", 1, LHT65_EXAMPLE, "2026-11-25T07:00:00Z"))],
    )
    .await;
    let latest = latest_with(&gw, "demo-lht65", 4).await;
    assert_eq!(value_of(&latest, "relative_humidity").0, 88.6);
    assert!(!gw.log_text().contains("s3cret-pass"), "the password reached the log");
}
}

both_backends! {
#[tokio::test]
async fn a_changed_devices_file_is_reloaded_and_a_broken_one_is_refused() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("reload");
    let devices = dir.path().join("devices.toml");
    let demo = std::fs::read_to_string(format!("{MANIFEST_DIR}/demo/devices.toml")).unwrap();
    std::fs::write(&devices, &demo).unwrap();
    let gw = Gateway::start_full(broker.port, dir.path(), &topics, "", &devices).await;
    let publisher = format!("{}-pub", topics.prefix);
    let newcomer = |f_cnt: u32| {
        (
            topics.ttn("hofgarten-lht65"),
            ttn_uplink("hofgarten-lht65", "A840410000000042", f_cnt, LHT65_EXAMPLE, "2026-11-25T06:00:00Z"),
        )
    };

    // Not registered yet: a dead letter.
    publish_all(broker.port, &publisher, vec![newcomer(1)]).await;
    wait_for("the dead letter", Duration::from_secs(20), || async {
        (gw.metric("messnetz_dead_letters_total").await == 1.0).then_some(())
    })
    .await;

    // Registered while running: picked up without a restart.
    let entry = "\n[[device]]\nid = \"hofgarten-lht65\"\nname = \"Hofgarten\"\nprofile = \"dragino-lht65\"\ndev_eui = \"A840410000000042\"\nlat = 48.1429\nlon = 11.5806\ndistrict = \"Altstadt\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n";
    std::fs::write(&devices, format!("{demo}{entry}")).unwrap();
    wait_for("the new device in the catalogue", Duration::from_secs(20), || async {
        let (_, body) = get_json(&gw.url("/v1/devices")).await;
        body["devices"].as_array()?.iter().any(|d| d["id"] == "hofgarten-lht65").then_some(())
    })
    .await;
    publish_all(broker.port, &publisher, vec![newcomer(2)]).await;
    latest_with(&gw, "hofgarten-lht65", 4).await;

    // A broken file is refused; the running registry stays.
    std::fs::write(&devices, format!("{demo}{entry}\n[[device]]\nid = \"broken\"\n")).unwrap();
    wait_for("the refusal in the log", Duration::from_secs(20), || async {
        gw.log_text().contains("reload refused").then_some(())
    })
    .await;
    let (_, body) = get_json(&gw.url("/v1/devices")).await;
    assert_eq!(body["devices"].as_array().unwrap().len(), 3, "{body}");
    publish_all(broker.port, &publisher, vec![newcomer(3)]).await;
    wait_for("the third message stored", Duration::from_secs(20), || async {
        (gw.metric("messnetz_messages_decoded_total").await == 2.0).then_some(())
    })
    .await;
    assert_eq!(gw.metric("messnetz_dead_letters_total").await, 1.0);
}
}

both_backends! {
#[tokio::test]
async fn a_gateway_killed_with_sigkill_loses_nothing_it_acknowledged() {
    const N: u32 = 20_000;
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("sigkill");
    let mut gw = Gateway::start(broker.port, dir.path(), &topics).await;

    // Each message has its own measurement time, so N messages must give N readings per quantity.
    let base = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap();
    let messages: Vec<_> = (0..N)
        .map(|i| {
            let t = (base + chrono::Duration::seconds(60 * i as i64)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", i, LHT65_EXAMPLE, &t))
        })
        .collect();
    let port = broker.port;
    let client_id = format!("{}-pub", topics.prefix);
    let publisher = tokio::spawn(async move { publish_all(port, &client_id, messages).await });

    // Kill the gateway while it is storing.
    wait_for("the gateway to be mid-run", Duration::from_secs(60), || async {
        (gw.metric("messnetz_messages_acked_total").await >= 200.0).then_some(())
    })
    .await;
    let acked_before_kill = gw.metric("messnetz_messages_acked_total").await;
    gw.kill();
    publisher.await.unwrap();
    assert!(acked_before_kill < N as f64, "the kill came too late to test anything");

    // The broker kept the unacknowledged rest in the persistent session.
    gw.restart().await;
    let path = "/v1/readings?device=demo-lht65&quantity=air_temperature&from=2026-10-31T00:00:00Z&to=2026-12-01T00:00:00Z";
    let series = wait_for("all readings after the restart", Duration::from_secs(120), || async {
        let series = all_pages(&gw, path).await;
        (series.len() >= N as usize).then_some(series)
    })
    .await;
    assert_eq!(series.len(), N as usize, "every message stored exactly once");
    for (i, r) in series.iter().enumerate() {
        let expected = (base + chrono::Duration::seconds(60 * i as i64)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert_eq!(r["time"].as_str().unwrap(), expected);
    }
}
}
