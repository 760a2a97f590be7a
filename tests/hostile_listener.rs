//! Hostile byte streams to the embedded MQTT listener, over real sockets (the corpus in fuzz/corpus/listener_frames): after each, the gateway still runs and the next publisher's uplink is acknowledged and stored.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(MANIFEST_DIR).join("fuzz/corpus/listener_frames");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("corpus dir").map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            // The first byte is the fuzz target's read size; the stream follows.
            (p.file_name().unwrap().to_string_lossy().into_owned(), data[1..].to_vec())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_streams_to_the_listener_never_stop_the_next_publisher() {
    let files = corpus();
    assert!(files.len() >= 20, "corpus went missing");
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("hostile-listener");
    // A short connect timeout, so that a connection that never sends CONNECT is seen closed.
    let (mut gw, port) =
        Gateway::start_embedded_with(dir.path(), &topics, "max_packet_bytes = 4096\nconnect_timeout_ms = 500").await;
    let burst = lht65_burst(&topics, files.len());
    for ((name, stream), good) in files.iter().zip(&burst) {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        // Send it all (the listener may close early: that is fine), then half-close and read
        // whatever comes back until the listener closes or 2 s pass.
        let _ = conn.write_all(stream).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut answer)).await;
        drop(conn);
        let acked =
            publish_counting(port, &format!("{}-{name}", topics.prefix), std::slice::from_ref(good), 1, Duration::from_secs(10))
                .await;
        assert_eq!(acked, [true], "{name}: the next publisher got no PUBACK; log: {}", gw.log.display());
    }
    let n = files.len() as f64;
    let done = gw.wait_metric("messnetz_messages_decoded_total", n, Duration::from_secs(20), Duration::from_secs(10)).await;
    assert!(done.is_ok(), "decoded {:?} of {n}", done.err());
    assert!(gw.terminate().success(), "clean exit; log: {}", gw.log.display());
    let stored = stored_per_quantity(&gw.data, "demo-lht65");
    assert!(stored_mismatch(&stored, files.len()).is_none(), "{stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_answers_subscribe_with_failure_and_qos2_with_pubrec_after_storage() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("listener-protocol");
    let (gw, port) = Gateway::start_embedded(dir.path(), &topics).await;
    let mut options = MqttOptions::new(format!("{}-c", topics.prefix), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    let good = &lht65_burst(&topics, 1)[0];
    client.publish(good.0.clone(), QoS::ExactlyOnce, false, good.1.clone()).await.unwrap();
    let (mut refused, mut completed) = (false, false);
    tokio::time::timeout(Duration::from_secs(10), async {
        while !(refused && completed) {
            match eventloop.poll().await.expect("connection") {
                Event::Incoming(Packet::SubAck(ack)) => {
                    refused = ack.return_codes == [rumqttc::SubscribeReasonCode::Failure];
                    assert!(refused, "{ack:?}");
                }
                Event::Incoming(Packet::PubComp(_)) => completed = true,
                _ => {}
            }
        }
    })
    .await
    .expect("SUBACK and PUBCOMP within 10 s");
    // PUBREC went out after the commit: the reading is already there.
    assert_eq!(gw.metric("messnetz_messages_decoded_total").await, 1.0);
    assert_eq!(gw.metric("messnetz_messages_acked_total").await, 1.0);
}
