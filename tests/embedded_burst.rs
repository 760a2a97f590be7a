//! The zero-setup default under a burst: 100,000 QoS 1 publishes from two connections into the embedded listener, every one acknowledged to its publisher, must all end up stored.
//!
//! The listener acknowledges a publish only after the batch holding it is durably committed,
//! so the publishers go at the gateway's pace and nothing waits in memory; this checks that a
//! burst of this size goes through whole and within the time limits.

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
        "the embedded listener acknowledged only {} of {BURST} publishes: {:?}",
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
            "{why}. {BURST} publishes were acknowledged by the embedded listener, which received {received:?} of them \
             and acknowledged {acked:?}; log: {}",
            gw.log.display()
        );
    }
}
