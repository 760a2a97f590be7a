//! A broker that delivers faster than the gateway stores: the connection holds, every message is acknowledged once, and none comes twice.
//!
//! Mosquitto 2.0.11 (Debian 12's) keeps a subscriber to `max_inflight_messages` only while it
//! acknowledges nothing; once acknowledgements flow it sends far past the window (BENCHMARKS.md),
//! so a burst piles up in its queue to the gateway. Acknowledgements must then leave as fast as
//! batches are stored, and the answer to a keep-alive ping, queued behind the pile, must not
//! count as missing: a connection ended for either comes back with every unacknowledged
//! message delivered again.

mod common;

use std::time::Duration;

use common::*;

/// Enough for the broker's queue to the gateway to take longer than two keep-alive times to read.
const BURST: usize = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_flooding_past_its_window_keeps_the_connection_and_nothing_comes_twice() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start_private();
    let topics = Topics::new("broker-flood");
    // The shortest keep-alive the configuration takes: a ping every 5 s.
    let mut gw = Gateway::start_with(broker.port, dir.path(), &topics, "keep_alive_s = 5").await;

    let published = publish_from(broker.port, &topics.prefix, 2, lht65_burst(&topics, BURST), Duration::from_secs(120)).await;
    assert_eq!(published.acked, BURST, "the broker took only {} of {BURST}: {:?}", published.acked, published.error);

    let done =
        gw.wait_metric("messnetz_messages_acked_total", BURST as f64, Duration::from_secs(300), Duration::from_secs(30)).await;
    let client = reqwest::Client::new();
    let received = gw.try_metric(&client, "messnetz_messages_received_total").await;
    let connects = gw.try_metric(&client, "messnetz_mqtt_connects_total").await;
    assert!(done.is_ok(), "acknowledged only {done:?} of {BURST} (received {received:?}); log: {}", gw.log.display());
    assert_eq!(connects, Some(1.0), "the connection to the broker was made again; log: {}", gw.log.display());
    assert_eq!(received, Some(BURST as f64), "messages were delivered again; log: {}", gw.log.display());
    assert!(gw.terminate().success(), "clean exit on SIGTERM; log: {}", gw.log.display());
    if let Some(why) = stored_mismatch(&stored_per_quantity(&gw.data, "demo-lht65"), BURST) {
        panic!("{why}; log: {}", gw.log.display());
    }
}
