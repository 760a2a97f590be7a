//! Raw LoRaWAN frames: MIC, frame counters, replays, duplicates from several gateways and decryption, in process and end to end.

#[macro_use]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::*;
use messnetz::config::MessageFormat;
use messnetz::metrics::Metrics;
use messnetz::model::{DeviceId, Quantity};
use messnetz::sources::lorawan::{bridge_json, build_frame};
use messnetz::sources::lorawan_keys::{DeviceSession, SessionKey, SessionKeys};
use messnetz::sources::{Ack, Inbound};
use messnetz::store::Store;
use tokio_util::sync::CancellationToken;

const DEV_ADDR: u32 = 0x260B_1234;
const NWK: &str = "2B7E151628AED2A6ABF7158809CF4F3C";
const APP: &str = "000102030405060708090A0B0C0D0E0F";

fn session(nwk: &str, app: &str) -> DeviceSession {
    DeviceSession {
        device: "demo-lht65".into(),
        nwk_s_key: SessionKey::parse_hex(nwk).unwrap(),
        app_s_key: SessionKey::parse_hex(app).unwrap(),
    }
}

/// A bridge event carrying the LHT65 example payload at FCnt `f_cnt`, measured `minute` minutes into 2025.
fn uplink(f_cnt: u32, gateway: &str, minute: u32) -> Vec<u8> {
    frame_event(build_frame(DEV_ADDR, f_cnt, 2, &hex(LHT65_PAYLOAD), false, &session(NWK, APP)), gateway, minute)
}

fn frame_event(phy: Vec<u8>, gateway: &str, minute: u32) -> Vec<u8> {
    bridge_json(&phy, gateway, &format!("2025-01-01T{:02}:{:02}:00Z", minute / 60, minute % 60))
}

/// Run one ingest stage over `messages` (all taken as one batch) against `store`.
async fn ingest_once(store: &TestStore, messages: Vec<Vec<u8>>) -> Arc<Metrics> {
    let mut keys = SessionKeys::default();
    keys.insert(DEV_ADDR, session(NWK, APP));
    let (ingest, metrics) = demo_ingest(store, keys, Duration::ZERO);
    let (tx, rx) = tokio::sync::mpsc::channel(messages.len() + 1);
    for payload in messages {
        let inbound = Inbound {
            topic: "eu868/gateway/g/event/up".into(),
            size: payload.len(),
            payload: payload.into(),
            format: Some(MessageFormat::Lorawan),
            received_at: Utc::now(),
            ack: Ack::None,
        };
        tx.send(inbound).await.unwrap();
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(30), ingest.run(rx, CancellationToken::new())).await.expect("ingest finished");
    metrics
}

fn temperatures(store: &dyn Store) -> Vec<(String, f64)> {
    let from = chrono::DateTime::from_timestamp(0, 0).unwrap();
    let to = chrono::DateTime::from_timestamp(4_102_444_800, 0).unwrap();
    let device = DeviceId::parse("demo-lht65").unwrap();
    let q = Quantity::by_name("air_temperature").unwrap();
    store.readings(&device, q, from, to, 100).unwrap().into_iter().map(|r| (r.time.to_rfc3339(), r.value)).collect()
}

fn count(m: &Metrics, c: &std::sync::atomic::AtomicU64) -> u64 {
    let _ = m;
    c.load(std::sync::atomic::Ordering::Relaxed)
}

both_backends! {
#[tokio::test]
async fn every_kind_of_frame_in_one_batch_gets_its_own_fate() {
    let dir = TestStore::new();
    let good = session(NWK, APP);
    let lht = hex(LHT65_PAYLOAD);
    let mut flipped = build_frame(DEV_ADDR, 1, 2, &lht, false, &good);
    *flipped.last_mut().unwrap() ^= 0x80;
    let wrong_key = build_frame(DEV_ADDR, 2, 2, &lht, false, &session("2B7E151628AED2A6ABF7158809CF4F3D", APP));
    let replay = build_frame(DEV_ADDR, 0, 2, &lht, false, &good);
    let truncated = build_frame(DEV_ADDR, 3, 2, &lht, false, &good)[..10].to_vec();
    let oversized = vec![0x40; 300];
    let join_request = vec![0x00; 23];
    let stranger = build_frame(0x0102_0304, 1, 2, &lht, false, &good);
    let messages = vec![
        uplink(1, "gw-rathaus", 1),
        uplink(1, "gw-bahnhof", 1),
        uplink(1, "gw-dom", 1),
        frame_event(flipped, "gw-rathaus", 2),
        frame_event(wrong_key, "gw-rathaus", 3),
        frame_event(replay, "gw-rathaus", 4),
        frame_event(truncated, "gw-rathaus", 5),
        frame_event(oversized, "gw-rathaus", 6),
        frame_event(join_request, "gw-rathaus", 7),
        frame_event(stranger, "gw-rathaus", 8),
        uplink(65_535, "gw-rathaus", 9),
        // Past the 16-bit field: 65_538 travels as 2.
        uplink(65_538, "gw-rathaus", 10),
        uplink(65_538, "gw-dom", 10),
        // A confirmed uplink is data too.
        frame_event(build_frame(DEV_ADDR, 65_539, 2, &lht, true, &good), "gw-dom", 11),
    ];
    let m = ingest_once(&dir, messages).await;
    assert_eq!(count(&m, &m.messages_decoded), 4);
    assert_eq!(count(&m, &m.lorawan_duplicates), 3);
    assert_eq!(count(&m, &m.lorawan_ignored), 1);
    assert_eq!(count(&m, &m.lorawan_mic_failures), 2);
    assert_eq!(count(&m, &m.lorawan_replays), 1);
    assert_eq!(count(&m, &m.dead_letters), 6);

    let store = dir.open();
    let times: Vec<String> = temperatures(&*store)
        .into_iter()
        .map(|(t, v)| {
            assert_eq!(v, 28.29);
            t
        })
        .collect();
    assert_eq!(
        times,
        ["2025-01-01T00:01:00+00:00", "2025-01-01T00:09:00+00:00", "2025-01-01T00:10:00+00:00", "2025-01-01T00:11:00+00:00"]
    );
    let reasons: Vec<String> = dead_letters_in(&*store, 100)
        .into_iter()
        .map(|d| {
            assert_eq!(d.format, "lorawan");
            d.reason
        })
        .collect();
    let expected = [
        "MIC check failed",
        "MIC check failed",
        "replayed frame",
        "too short",
        "longer than a LoRa frame",
        "no session keys for DevAddr 01020304",
    ];
    assert_eq!(reasons.len(), expected.len(), "{reasons:?}");
    for (reason, want) in reasons.iter().zip(expected) {
        assert!(reason.contains(want), "{reason:?} should say {want:?}");
        assert!(!reason.contains(NWK) && !reason.contains(APP));
    }
    assert_eq!(store.frame_counter(DEV_ADDR).unwrap().unwrap().last, 65_539);
    drop(store);

    // After a restart the counters are still there: an older genuine frame is a replay, a
    // copy of the last one a duplicate, and the next frame goes through.
    let m = ingest_once(
        &dir,
        vec![uplink(65_537, "gw-rathaus", 12), uplink(65_538, "gw-bahnhof", 10), uplink(65_540, "gw-rathaus", 13)],
    )
    .await;
    assert_eq!((count(&m, &m.lorawan_replays), count(&m, &m.lorawan_duplicates), count(&m, &m.messages_decoded)), (1, 1, 1));
    let store = dir.open();
    assert_eq!(temperatures(&*store).len(), 5);
    assert_eq!(store.frame_counter(DEV_ADDR).unwrap().unwrap().last, 65_540);
}
}

both_backends! {
#[tokio::test]
async fn frames_from_three_gateways_over_mqtt_make_one_reading_and_keys_stay_secret() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("lorawan");
    let keys = dir.path().join("keys.toml");

    // A keys file others can read is refused at start, without quoting it.
    write_keys_file(&keys, 0o644, &[(DEV_ADDR, "demo-lht65", NWK, APP)]);
    let config = dir.path().join("refused.toml");
    std::fs::write(&config, format!("[broker]\nenabled = false\n[lorawan]\nkeys_file = \"{}\"\n", keys.display())).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_messnetz")).arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains(NWK) && !stderr.contains(APP));

    write_keys_file(&keys, 0o600, &[(DEV_ADDR, "demo-lht65", NWK, APP)]);
    let devices = Path::new(MANIFEST_DIR).join("demo/devices.toml");
    let mut gw = Gateway::start_full(broker.port, dir.path(), &topics, &lorawan_section(&topics, &keys), &devices).await;
    let messages = ["gw-rathaus", "gw-bahnhof", "gw-dom"].iter().map(|g| (topics.gateway_bridge(g), uplink(7, g, 30))).collect();
    publish_all(broker.port, &format!("{}-pub", topics.prefix), messages).await;
    wait_for("3 frames acknowledged", Duration::from_secs(20), || async {
        (gw.metric("messnetz_messages_acked_total").await == 3.0).then_some(())
    })
    .await;
    assert_eq!(gw.metric("messnetz_messages_decoded_total").await, 1.0);
    assert_eq!(gw.metric("messnetz_lorawan_duplicates_total").await, 2.0);
    assert_eq!(gw.metric("messnetz_dead_letters_total").await, 0.0);
    let latest: serde_json::Value = reqwest::get(gw.url("/v1/devices/demo-lht65/latest")).await.unwrap().json().await.unwrap();
    let temp = latest["readings"].as_array().unwrap().iter().find(|r| r["quantity"] == "air_temperature").expect("temperature");
    assert_eq!((temp["value"].as_f64(), temp["time"].as_str()), (Some(28.29), Some("2025-01-01T00:30:00Z")));

    // The counter survives a restart of the gateway.
    gw.restart().await;
    let messages = vec![
        (topics.gateway_bridge("gw-dom"), uplink(6, "gw-dom", 29)),
        (topics.gateway_bridge("gw-dom"), uplink(8, "gw-dom", 31)),
    ];
    publish_all(broker.port, &format!("{}-pub2", topics.prefix), messages).await;
    wait_for("2 frames acknowledged", Duration::from_secs(20), || async {
        (gw.metric("messnetz_messages_acked_total").await == 2.0).then_some(())
    })
    .await;
    assert_eq!(gw.metric("messnetz_lorawan_replays_total").await, 1.0);
    assert_eq!(gw.metric("messnetz_messages_decoded_total").await, 1.0);

    let metrics = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(gw.terminate().success());
    for text in [metrics, gw.log_text()] {
        assert!(!text.contains(NWK) && !text.contains(APP) && !text.to_lowercase().contains(&NWK.to_lowercase()));
    }
    let store = gw.open_store();
    assert_eq!(temperatures(&*store).len(), 2);
    assert!(dead_letters_in(&*store, 10)[0].reason.contains("replayed frame"));
}
}

/// The fuzz corpus of hostile frames: each is refused or ignored with an error, never a panic.
#[test]
fn hostile_frames_give_errors_not_panics() {
    let dir = Path::new(MANIFEST_DIR).join("fuzz/corpus/lorawan_frame");
    let mut keys = SessionKeys::default();
    keys.insert(DEV_ADDR, session(NWK, APP));
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 10, "corpus went missing");
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&path).unwrap();
        let r = messnetz::sources::lorawan::process(&data, &keys, 0, |_| Ok(None));
        match name.as_str() {
            "good" | "good-confirmed" => assert!(r.is_ok(), "{name}: {r:?}"),
            "join-request" | "downlink" => {
                assert!(matches!(r, Ok(messnetz::sources::lorawan::Outcome::Ignored(_))), "{name}: {r:?}")
            }
            _ => assert!(r.is_err(), "{name} was accepted: {r:?}"),
        }
    }
}

/// Writes the seed corpus of fuzz/corpus/lorawan_frame/ (run with `--ignored` to regenerate it).
#[test]
#[ignore]
fn write_corpus() {
    let dir = Path::new(MANIFEST_DIR).join("fuzz/corpus/lorawan_frame");
    std::fs::create_dir_all(&dir).unwrap();
    let good = session(NWK, APP);
    let lht = hex(LHT65_PAYLOAD);
    let frame = |f: u32, confirmed: bool| build_frame(DEV_ADDR, f, 2, &lht, confirmed, &good);
    let mut flipped = frame(1, false);
    flipped[12] ^= 0x01;
    let mut lying = frame(1, false);
    lying[5] = 0x0F;
    let mut major = frame(1, false);
    major[0] |= 0x01;
    let mut proprietary = frame(1, false);
    proprietary[0] = 0xE0;
    let mut downlink = frame(1, false);
    downlink[0] = 0x60;
    let ev = |phy: Vec<u8>| frame_event(phy, "gw-rathaus", 1);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("good", ev(frame(1, false))),
        ("good-confirmed", ev(frame(1, true))),
        ("join-request", ev(vec![0x00; 23])),
        ("downlink", ev(downlink)),
        (
            "mic-flipped",
            ev({
                let mut f = frame(1, false);
                *f.last_mut().unwrap() ^= 0xFF;
                f
            }),
        ),
        ("payload-bit-flipped", ev(flipped)),
        ("wrong-key", ev(build_frame(DEV_ADDR, 1, 2, &lht, false, &session(APP, NWK)))),
        ("unknown-devaddr", ev(build_frame(0xFFFF_FFFF, 1, 2, &lht, false, &good))),
        ("truncated", ev(frame(1, false)[..9].to_vec())),
        ("oversized-256", ev(vec![0x40; 256])),
        ("fopts-len-lies", ev(lying)),
        ("major-rfu", ev(major)),
        ("proprietary", ev(proprietary)),
        ("mhdr-only", ev(vec![0x40])),
        ("phy-empty", br#"{"phyPayload": ""}"#.to_vec()),
        ("phy-missing", br#"{"rxInfo": {"gatewayId": "g"}}"#.to_vec()),
        ("phy-not-base64", br#"{"phyPayload": "%%%%"}"#.to_vec()),
        ("phy-number", br#"{"phyPayload": 12}"#.to_vec()),
        ("phy-base64-huge", format!(r#"{{"phyPayload": "{}"}}"#, "QUFB".repeat(4000)).into_bytes()),
        ("bad-crc", {
            let mut v: serde_json::Value = serde_json::from_slice(&ev(frame(1, false))).unwrap();
            v["rxInfo"]["crcStatus"] = "BAD_CRC".into();
            v.to_string().into_bytes()
        }),
        ("gwtime-garbage", {
            let mut v: serde_json::Value = serde_json::from_slice(&ev(frame(1, false))).unwrap();
            v["rxInfo"]["gwTime"] = "\u{0}yesterday".into();
            v.to_string().into_bytes()
        }),
        ("rxinfo-array", {
            let mut v: serde_json::Value = serde_json::from_slice(&ev(frame(1, false))).unwrap();
            v["rxInfo"] = serde_json::json!([{"gatewayId": 5}]);
            v.to_string().into_bytes()
        }),
        ("not-json", b"\x00\xff{phyPayload".to_vec()),
        ("empty", Vec::new()),
        ("deep-nesting", format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes()),
        ("raw-frame-not-json", frame(1, false)),
    ];
    for (name, data) in files {
        std::fs::write(dir.join(name), data).unwrap();
    }
}
