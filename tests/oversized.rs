//! A message larger than the size limit, through Mosquitto and through the embedded listener: it becomes a dead letter with its first bytes and the reason, the connection stays up, and the next message is stored.
//!
//! Before, rumqttc refused a packet over `mqtt.max_packet_bytes` by ending the connection; the
//! broker delivered the same message on the next connection, every 200 ms, forever, and nothing
//! behind it was stored.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const BIG: usize = 300 * 1024;

/// The oversized uplink: a TTN message padded to `size` bytes.
fn oversized_uplink(size: usize) -> Vec<u8> {
    let mut body = ttn_uplink("demo-lht65", "A840410000000001", 1, LHT65_PAYLOAD, "2025-03-01T10:00:00Z");
    body.pop(); // the closing brace
    body.extend_from_slice(br#","padding":""#);
    body.resize(size - 2, b'x');
    body.extend_from_slice(br#""}"#);
    body
}

fn good_uplink(f_cnt: u32) -> Vec<u8> {
    ttn_uplink("demo-lht65", "A840410000000001", f_cnt, LHT65_PAYLOAD, &format!("2025-03-01T10:{f_cnt:02}:00Z"))
}

/// The dead letters of a stopped gateway, as the CLI lists them.
fn dead_letters(gw: &Gateway) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_messnetz"))
        .arg("--config")
        .arg(&gw.config)
        .args(["dead-letters", "list"])
        .output()
        .expect("run messnetz dead-letters list");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn wait_acked(gw: &Gateway, n: f64) {
    let result = gw.wait_metric("messnetz_messages_acked_total", n, Duration::from_secs(30), Duration::from_secs(15)).await;
    assert!(result.is_ok(), "acknowledged {:?} of {n}; log: {}", result.err(), gw.log.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_from_mosquitto_is_dead_lettered_and_the_next_is_stored() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("oversized-mosquitto");
    let mut gw = Gateway::start(broker.port, dir.path(), &topics).await;
    let topic = topics.ttn("demo-lht65");
    publish_all(
        broker.port,
        &format!("{}-pub", topics.prefix),
        vec![(topic.clone(), oversized_uplink(BIG)), (topic, good_uplink(2))],
    )
    .await;
    wait_acked(&gw, 2.0).await;
    assert_eq!(gw.metric("messnetz_messages_decoded_total").await, 1.0, "the good message behind it was stored");
    assert_eq!(gw.metric("messnetz_dead_letters_total").await, 1.0);
    // Give a reconnect loop time to show.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(gw.metric("messnetz_mqtt_connects_total").await, 1.0, "the connection stayed up; log: {}", gw.log.display());
    assert!(gw.terminate().success());
    let letters = dead_letters(&gw);
    assert!(letters.contains(&format!("message of {BIG} bytes is over the size limit")), "{letters}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_to_the_embedded_listener_is_dead_lettered_and_the_next_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("oversized-embedded");
    // A limit below the message, so that the listener reads past the rest of it.
    let (mut gw, port) = Gateway::start_embedded_with(dir.path(), &topics, "max_packet_bytes = 65536").await;
    let topic = topics.ttn("demo-lht65");
    let messages = vec![(topic.clone(), good_uplink(1)), (topic.clone(), oversized_uplink(BIG)), (topic, good_uplink(3))];
    let acked = publish_counting(port, &format!("{}-pub", topics.prefix), &messages, 10, Duration::from_secs(30)).await;
    assert_eq!(acked, vec![true; 3], "every message acknowledged on one connection");
    wait_acked(&gw, 3.0).await;
    assert_eq!(gw.metric("messnetz_messages_decoded_total").await, 2.0, "the good messages around it were stored");
    assert_eq!(gw.metric("messnetz_dead_letters_total").await, 1.0);
    assert!(gw.terminate().success());
    let letters = dead_letters(&gw);
    assert!(letters.contains(&format!("message of {} bytes is over the size limit", BIG)), "{letters}");
}
