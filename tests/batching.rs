//! How the ingest stage cuts its input into commits: what waits is one batch; a busy stage
//! (`ingest.gather_ms`) gathers more while messages keep coming (`ingest.gather_quiet_ms`); a
//! lone message never waits.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use messnetz::config::MessageFormat;
use messnetz::ingest::Ingest;
use messnetz::metrics::Metrics;
use messnetz::model::{DeviceId, Quantity};
use messnetz::sources::{Ack, Inbound};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn stage(store: &TestStore, gather: Duration) -> (Ingest, Arc<Metrics>) {
    demo_ingest(store, Default::default(), gather)
}

/// The demo LHT65's uplink number `n`, measured `n` minutes into 2025.
fn message(n: u32) -> Inbound {
    let at = format!("2025-01-01T{:02}:{:02}:00Z", n / 60, n % 60);
    let payload = ttn_uplink("demo-lht65", "A840410000000001", n, LHT65_PAYLOAD, &at);
    Inbound {
        topic: "v3/demo@ttn/devices/demo-lht65/up".into(),
        size: payload.len(),
        payload: payload.into(),
        format: Some(MessageFormat::TtnV3),
        received_at: Utc::now(),
        ack: Ack::None,
    }
}

/// (commits, messages) as the `messnetz_ingest_batch_messages` histogram counts them.
fn batches(metrics: &Metrics) -> (f64, f64) {
    let text = metrics.render();
    let of = |name: &str| metric(&text, name).unwrap_or(0.0);
    (of("messnetz_ingest_batch_messages_count"), of("messnetz_ingest_batch_messages_sum"))
}

/// How many air temperatures the demo LHT65 has stored (one an uplink).
fn temperatures(dir: &TestStore) -> usize {
    let from = chrono::DateTime::from_timestamp(0, 0).unwrap();
    let to = chrono::DateTime::from_timestamp(4_102_444_800, 0).unwrap();
    let device = DeviceId::parse("demo-lht65").unwrap();
    let q = Quantity::by_name("air_temperature").unwrap();
    dir.open().readings(&device, q, from, to, 100).unwrap().len()
}

async fn until_stored(metrics: &Metrics, messages: f64) {
    wait_for(&format!("{messages} messages committed"), Duration::from_secs(20), || async {
        (batches(metrics).1 >= messages).then_some(())
    })
    .await
}

#[tokio::test]
async fn a_busy_stage_gathers_what_comes_meanwhile_into_one_commit() {
    let dir = TestStore::new();
    let (ingest, metrics) = stage(&dir, Duration::from_secs(2));
    let (tx, rx) = mpsc::channel(64);
    // Two waiting: the stage is busy, so what arrives within the gather time joins them.
    tx.send(message(1)).await.unwrap();
    tx.send(message(2)).await.unwrap();
    let run = tokio::spawn(ingest.run(rx, CancellationToken::new()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 3..6 {
        tx.send(message(n)).await.unwrap();
    }
    until_stored(&metrics, 5.0).await;
    assert_eq!(batches(&metrics), (1.0, 5.0), "one commit of five");
    drop(tx);
    run.await.unwrap();
    assert_eq!(temperatures(&dir), 5, "all five stored");

    // A lone message is committed at once, however long a busy batch would wait.
    let (ingest, metrics) = stage(&dir, Duration::from_secs(30));
    let (tx, rx) = mpsc::channel(64);
    let run = tokio::spawn(ingest.run(rx, CancellationToken::new()));
    let sent = Instant::now();
    tx.send(message(10)).await.unwrap();
    until_stored(&metrics, 1.0).await;
    assert!(sent.elapsed() < Duration::from_secs(10), "a lone message waited {:?}", sent.elapsed());
    drop(tx);
    tokio::time::timeout(Duration::from_secs(20), run).await.expect("the stage stops when its input closes").unwrap();
    assert_eq!(temperatures(&dir), 6);
}

#[tokio::test]
async fn a_busy_stage_gathers_while_messages_keep_coming_and_not_after_they_stop() {
    // A broker that sends no more until it has acknowledgements falls quiet: the batch is
    // committed after the quiet time, not after the whole gather time.
    let dir = TestStore::new();
    let (mut ingest, metrics) = stage(&dir, Duration::from_secs(30));
    ingest.quiet = Duration::from_millis(100);
    let (tx, rx) = mpsc::channel(64);
    tx.send(message(1)).await.unwrap();
    tx.send(message(2)).await.unwrap();
    let started = Instant::now();
    let run = tokio::spawn(ingest.run(rx, CancellationToken::new()));
    until_stored(&metrics, 2.0).await;
    assert!(started.elapsed() < Duration::from_secs(10), "a quiet input was waited for {:?}", started.elapsed());
    assert_eq!(batches(&metrics), (1.0, 2.0));
    drop(tx);
    run.await.unwrap();

    // Messages coming within the quiet time of each other keep the batch open past the quiet
    // time from its start: ten, each 100 ms after the last, with a quiet time of 600 ms.
    let (mut ingest, metrics) = stage(&dir, Duration::from_secs(30));
    ingest.quiet = Duration::from_millis(600);
    let (tx, rx) = mpsc::channel(64);
    tx.send(message(3)).await.unwrap();
    tx.send(message(4)).await.unwrap();
    let run = tokio::spawn(ingest.run(rx, CancellationToken::new()));
    for n in 5..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(message(n)).await.unwrap();
    }
    until_stored(&metrics, 12.0).await;
    assert_eq!(batches(&metrics), (1.0, 12.0), "one commit of twelve");
    drop(tx);
    run.await.unwrap();
    assert_eq!(temperatures(&dir), 14, "all fourteen stored");
}

#[tokio::test]
async fn without_gathering_each_wait_is_its_own_commit() {
    let dir = TestStore::new();
    let (ingest, metrics) = stage(&dir, Duration::ZERO);
    let (tx, rx) = mpsc::channel(64);
    tx.send(message(1)).await.unwrap();
    tx.send(message(2)).await.unwrap();
    let run = tokio::spawn(ingest.run(rx, CancellationToken::new()));
    until_stored(&metrics, 2.0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 3..6 {
        tx.send(message(n)).await.unwrap();
        until_stored(&metrics, n as f64).await;
    }
    assert_eq!(batches(&metrics), (4.0, 5.0), "the two waiting, then one by one");
    drop(tx);
    run.await.unwrap();
    assert_eq!(temperatures(&dir), 5);
}
