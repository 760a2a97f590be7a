//! The zero-setup default under a burst: 100,000 QoS 1 publishes into the embedded broker,
//! every one acknowledged to its publisher, must all end up stored.
//!
//! rumqttd keeps messages in an in-memory log per topic filter and drops what a lagging
//! subscriber has not read once that log is full (see FACTS.md); the gateway acknowledges
//! only after a durable commit, so it lags the publishers during a burst. This test checks
//! that the default sizing absorbs a burst of this size and, if not, says where the loss is.

mod common;

use std::time::{Duration, Instant};

use common::*;

const BURST: usize = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_publish_of_a_100k_burst_into_the_embedded_broker_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("embedded-burst");
    let (mut gw, port) = Gateway::start_embedded(dir.path(), &topics).await;
    let messages = lht65_burst(&topics, BURST);

    let started = Instant::now();
    let published = publish_from(port, &topics.prefix, 2, messages, Duration::from_secs(120)).await;
    let published_after = started.elapsed();
    assert_eq!(
        published.acked, BURST,
        "the embedded broker acknowledged only {} of {BURST} publishes: {:?}",
        published.acked, published.error
    );

    let done =
        gw.wait_metric("messnetz_messages_acked_total", BURST as f64, Duration::from_secs(180), Duration::from_secs(20)).await;
    let client = reqwest::Client::new();
    let received = gw.try_metric(&client, "messnetz_messages_received_total").await;
    let acked = gw.try_metric(&client, "messnetz_messages_acked_total").await;
    let failed = gw.try_metric(&client, "messnetz_messages_failed_total").await;
    let stored_after = done.map(|t| t - started);
    eprintln!(
        "embedded burst: {BURST} publishes acknowledged in {published_after:?}; gateway received {received:?}, \
         acknowledged {acked:?} (failed {failed:?}), all stored after {stored_after:?}; peak RSS {:?} MiB",
        gw.peak_rss_mib()
    );

    assert!(gw.terminate().success(), "clean exit on SIGTERM; log: {}", gw.log.display());
    let stored = stored_per_quantity(&gw.data, "demo-lht65");
    if let Some(why) = stored_mismatch(&stored, BURST) {
        panic!(
            "{why}. {BURST} publishes were acknowledged by the embedded broker, the gateway received {received:?} of them \
             (fewer: the broker dropped them; all: the gateway lost them) and acknowledged {acked:?}; log: {}",
            gw.log.display()
        );
    }
}
