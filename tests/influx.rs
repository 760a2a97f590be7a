//! InfluxDB v2 end to end: uplinks published to a real Mosquitto reach a real server speaking the InfluxDB v2 write API (VictoriaMetrics), through outages and crashes.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use messnetz::store::{Lines, Store, WriteBatch};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Readings the gateway stored (embedded store), which InfluxDB must all receive.
async fn stored(gw: &Gateway) -> f64 {
    gw.metric("messnetz_readings_stored_total").await
}

/// Wait until every stored reading has reached InfluxDB and the spool is empty.
async fn wait_drained(gw: &Gateway, messages: f64, timeout: Duration) {
    wait_for("every reading written to InfluxDB and an empty spool", timeout, || async {
        let acked = gw.metric("messnetz_messages_acked_total").await;
        let stored = stored(gw).await;
        let written = gw.metric("messnetz_influx_points_written_total").await;
        let spooled = gw.metric("messnetz_influx_spool_readings").await;
        (acked >= messages && written >= stored && spooled == 0.0).then_some(())
    })
    .await;
}

/// (series labels without the name, timestamps) of the exported series named `name`.
fn series<'a>(export: &'a [Value], name: &str) -> Vec<&'a Value> {
    export.iter().filter(|s| s["metric"]["__name__"] == name).collect()
}

fn timestamps(series: &Value) -> Vec<i64> {
    series["timestamps"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap()).collect()
}

/// Measurement times of `lht65_burst`: 2025-01-01T00:00:00Z plus one second per message.
const BURST_START_MS: i64 = 1_735_689_600_000;

#[tokio::test]
async fn readings_arrive_with_tags_fields_and_measurement_times() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("influx-schema");
    let gw = Gateway::start_with(broker.port, dir.path(), &topics, &influx_section(&vm.url(), "flush_interval_ms = 100")).await;

    publish_all(broker.port, &format!("{}-pub", topics.prefix), lht65_burst(&topics, 3)).await;
    wait_drained(&gw, 3.0, Duration::from_secs(30)).await;
    assert_eq!(gw.metric("messnetz_influx_points_written_total").await, stored(&gw).await);

    let export = vm.export("air_temperature_.*|battery_voltage_.*").await;
    let temp = series(&export, "air_temperature_value");
    assert_eq!(temp.len(), 1, "{export:?}");
    let labels = &temp[0]["metric"];
    assert_eq!(labels["device"], "demo-lht65", "{labels}");
    assert_eq!(labels["district"], "Altstadt", "{labels}");
    assert_eq!(labels["owner"], "Umweltamt", "{labels}");
    assert_eq!(labels["profile"], "dragino-lht65", "{labels}");
    assert_eq!(labels["unit"], "Cel", "{labels}");
    // The measurement time from the uplink, not the arrival time.
    assert_eq!(timestamps(temp[0]), vec![BURST_START_MS, BURST_START_MS + 1000, BURST_START_MS + 2000]);
    assert_eq!(temp[0]["values"], serde_json::json!([28.29, 28.29, 28.29]));
    let quality = series(&export, "air_temperature_quality");
    assert_eq!(quality[0]["values"], serde_json::json!([0, 0, 0]), "{export:?}");
    let volts = series(&export, "battery_voltage_value");
    assert_eq!(volts[0]["values"], serde_json::json!([3.062, 3.062, 3.062]), "{export:?}");
    assert_eq!(volts[0]["metric"]["unit"], "V");
}

#[tokio::test]
async fn a_batch_that_is_not_full_goes_once_ingest_is_quiet_not_after_the_flush_interval() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("influx-linger");
    // A minute's flush interval and a batch far from full: only the linger sends them.
    let extra = "flush_interval_ms = 60000\nbatch_size = 5000\nlinger_ms = 50";
    let gw = Gateway::start_with(broker.port, dir.path(), &topics, &influx_section(&vm.url(), extra)).await;
    for round in 1..=2u32 {
        let started = std::time::Instant::now();
        let burst: Vec<_> = lht65_burst(&topics, 2 * round as usize).into_iter().skip(2 * (round as usize - 1)).collect();
        publish_all(broker.port, &format!("{}-pub-{round}", topics.prefix), burst).await;
        wait_drained(&gw, 2.0 * f64::from(round), Duration::from_secs(20)).await;
        assert!(started.elapsed() < Duration::from_secs(20), "round {round}: sent after {:?}", started.elapsed());
    }
    let export = vm.export("air_temperature_value").await;
    assert_eq!(timestamps(&export[0]).len(), 4, "{export:?}");
}

#[tokio::test]
async fn server_outage_loses_nothing_and_duplicates_nothing() {
    const N: usize = 300;
    let broker = Mosquitto::start();
    let mut vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("influx-outage");
    let extra = "flush_interval_ms = 100\nbatch_size = 50\nretry_min_ms = 50\nretry_max_ms = 400\nrequest_timeout_ms = 2000";
    let gw = Gateway::start_with(broker.port, dir.path(), &topics, &influx_section(&vm.url(), extra)).await;
    let mut burst = lht65_burst(&topics, N);
    let third: Vec<_> = burst.drain(..N / 3).collect();
    let second: Vec<_> = burst.drain(..N / 3).collect();
    let pub_id = format!("{}-pub", topics.prefix);

    publish_all(broker.port, &pub_id, third).await;
    wait_drained(&gw, (N / 3) as f64, Duration::from_secs(30)).await;

    let before = vm.export("air_temperature_value").await;
    assert_eq!(timestamps(&before[0]).len(), N / 3, "{before:?}");

    // InfluxDB goes away: messages are still acknowledged, because they are spooled.
    vm.stop();
    publish_all(broker.port, &pub_id, second).await;
    wait_for("acks and retries while InfluxDB is down", Duration::from_secs(30), || async {
        let acked = gw.metric("messnetz_messages_acked_total").await;
        let errors = gw.metric("messnetz_influx_write_errors_total").await;
        let spooled = gw.metric("messnetz_influx_spool_readings").await;
        (acked >= (2 * N / 3) as f64 && errors >= 2.0 && spooled > 0.0).then_some(())
    })
    .await;

    vm.restart();
    publish_all(broker.port, &pub_id, burst).await;
    wait_drained(&gw, N as f64, Duration::from_secs(60)).await;

    let export = vm.export("air_temperature_value|relative_humidity_value|battery_voltage_value").await;
    assert_eq!(export.len(), 3, "{export:?}");
    let expected: Vec<i64> = (0..N as i64).map(|i| BURST_START_MS + i * 1000).collect();
    for s in &export {
        let mut ts = timestamps(s);
        assert_eq!(ts.len(), N, "{}: every reading exactly once", s["metric"]["__name__"]);
        ts.sort_unstable();
        assert_eq!(ts, expected, "{}", s["metric"]["__name__"]);
    }
    assert_eq!(gw.metric("messnetz_influx_points_rejected_total").await, 0.0);
}

#[tokio::test]
async fn gateway_killed_mid_run_ends_with_every_reading() {
    const N: usize = 3000;
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("influx-kill");
    let extra = "flush_interval_ms = 200\nbatch_size = 500";
    let mut gw = Gateway::start_with(broker.port, dir.path(), &topics, &influx_section(&vm.url(), extra)).await;

    let port = broker.port;
    let pub_id = format!("{}-pub", topics.prefix);
    let publisher = tokio::spawn(publish_all(port, Box::leak(pub_id.into_boxed_str()), lht65_burst(&topics, N)));
    // Kill it while messages are flowing: some stored and spooled, some in flight.
    gw.wait_metric("messnetz_messages_acked_total", (N / 5) as f64, Duration::from_secs(60), Duration::from_secs(20))
        .await
        .expect("the gateway makes progress before the kill");
    gw.kill();
    gw.restart().await;
    publisher.await.expect("publisher");

    let expected: BTreeSet<i64> = (0..N as i64).map(|i| BURST_START_MS + i * 1000).collect();
    let export = wait_for("every reading in InfluxDB after the restart", Duration::from_secs(90), || async {
        let export = vm.export("air_temperature_value|relative_humidity_value|battery_voltage_value").await;
        let complete = export.len() == 3 && export.iter().all(|s| timestamps(s).into_iter().collect::<BTreeSet<_>>() == expected);
        complete.then_some(export)
    })
    .await;
    // Messages redelivered after the kill are written again with the same series and time:
    // InfluxDB overwrites them (VictoriaMetrics keeps both samples, so count distinct times).
    for s in &export {
        let distinct: BTreeSet<i64> = timestamps(s).into_iter().collect();
        assert_eq!(distinct.len(), N, "{}", s["metric"]["__name__"]);
    }
}

both_backends! {
fn the_spool_gives_back_each_commits_lines_in_order_until_they_are_removed() {
    let test_store = TestStore::new();
    let store: Arc<dyn Store> = test_store.open();
    let first: Lines = ["t v=1 1", "t v=2 2", "t v=3 3"].into_iter().collect();
    store.write(&WriteBatch { outbox: first, ..Default::default() }).unwrap();
    store.write(&WriteBatch { outbox: ["t v=4 4"].into_iter().collect(), ..Default::default() }).unwrap();
    assert_eq!(store.outbox_len().unwrap(), 4);
    let text = |limit| -> (Vec<u64>, Vec<String>) {
        store.outbox_peek(limit).unwrap().iter().map(|(k, l)| (k, String::from_utf8(l.to_vec()).unwrap())).unzip()
    };
    let (keys, lines) = text(3);
    assert_eq!(lines, ["t v=1 1", "t v=2 2", "t v=3 3"]);
    store.outbox_remove(&keys[..2]).unwrap();
    assert_eq!(text(10).1, ["t v=3 3", "t v=4 4"]);
    assert_eq!(store.outbox_len().unwrap(), 2);
    // Lines in flight (sent, not removed yet) left out, wherever they are.
    store.write(&WriteBatch { outbox: ["t v=5 5", "t v=6 6", "t v=7 7"].into_iter().collect(), ..Default::default() }).unwrap();
    let keys = text(10).0;
    let except = |limit, skip: &[u64]| -> Vec<String> {
        store.outbox_peek_except(limit, skip).unwrap().iter().map(|(_, l)| String::from_utf8(l.to_vec()).unwrap()).collect()
    };
    assert_eq!(except(10, &[keys[0], keys[2]]), ["t v=4 4", "t v=6 6", "t v=7 7"]);
    // At most the limit, at least one; the embedded store leaves a row that does not fit.
    let head = except(2, &[keys[0]]);
    assert!(!head.is_empty() && ["t v=4 4", "t v=5 5"].map(String::from).starts_with(&head), "{head:?}");
    assert_eq!(except(1, &keys[..3]), ["t v=6 6"]);
    assert!(except(10, &keys).is_empty());
    assert_eq!(store.outbox_len().unwrap(), 5, "peeking removes nothing");
}
}

/// Removing sent lines from the spool is not synced to disk on its own (the next ingest commit
/// syncs it): a clean stop must still keep every removal, so a restart sends nothing again.
#[tokio::test]
async fn a_clean_stop_keeps_the_spool_removals_and_a_restart_sends_nothing_again() {
    const N: usize = 200;
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("influx-clean-stop");
    let extra = "flush_interval_ms = 100\nbatch_size = 50";
    let mut gw = Gateway::start_with(broker.port, dir.path(), &topics, &influx_section(&vm.url(), extra)).await;
    publish_all(broker.port, &format!("{}-pub", topics.prefix), lht65_burst(&topics, N)).await;
    wait_drained(&gw, N as f64, Duration::from_secs(30)).await;
    assert!(gw.terminate().success(), "{}", gw.log_text());

    gw.restart().await;
    assert_eq!(gw.metric("messnetz_influx_spool_readings").await, 0.0, "the sent lines stayed removed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.metric("messnetz_influx_points_written_total").await, 0.0, "{}", gw.log_text());
    let export = vm.export("air_temperature_value").await;
    assert_eq!(timestamps(&export[0]).len(), N, "each reading sent once, not again after the restart");
}

/// How the stand-in server answers one request.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// 400 to a request holding a line of the device owned by `Baureferat`, else 204.
    RejectBaureferat,
    /// Request 1: 503; request 2: 429 with `Retry-After: 1`; request 3: no answer for 5 s
    /// (longer than the gateway's timeout); from then on 204.
    UnavailableThenSlow,
    /// 204 to every request, the odd ones (first, third, ...) after 40 ms, the others after
    /// 5 ms: of two requests at once, the later is answered first.
    Slow,
}

/// A stand-in for InfluxDB's write API, keeping the lines it accepted, in the order of the
/// requests, and counting the most requests it had at once. VictoriaMetrics can't play these
/// parts: it answers 204 even to malformed lines, and it is never slow on cue.
async fn fake_influx(behaviour: Behaviour) -> (u16, Arc<Mutex<Vec<String>>>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let keep = accepted.clone();
    let requests = Arc::new(AtomicUsize::new(0));
    let (open, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let most_at_once = most.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let accepted = keep.clone();
            let requests = requests.clone();
            let (open, most) = (open.clone(), most.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Read one request: headers, then Content-Length bytes of body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 8192];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 8192];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let raw = &buf[head_end..head_end + len];
                    let body = if head.contains("content-encoding: gzip") {
                        // One gzip member is what InfluxDB's readers expect at the least: read
                        // only the first, as a reader that knows no more than that would.
                        let mut text = String::new();
                        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(raw), &mut text).unwrap();
                        text
                    } else {
                        String::from_utf8_lossy(raw).into_owned()
                    };
                    buf.drain(..head_end + len);
                    let nth = requests.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(open.fetch_add(1, SeqCst) + 1, SeqCst);
                    if behaviour == Behaviour::Slow {
                        tokio::time::sleep(Duration::from_millis(if nth % 2 == 1 { 40 } else { 5 })).await;
                    }
                    let response = if behaviour == Behaviour::UnavailableThenSlow && nth <= 3 {
                        match nth {
                            1 => "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_owned(),
                            2 => "HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n".to_owned(),
                            _ => {
                                tokio::time::sleep(Duration::from_secs(5)).await;
                                return;
                            }
                        }
                    } else if behaviour == Behaviour::RejectBaureferat && body.contains("owner=Baureferat") {
                        let msg = r#"{"code":"invalid","message":"partial write: field type conflict: input field \"value\" on measurement is type string, already exists as type float dropped=1"}"#;
                        format!(
                            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{msg}",
                            msg.len()
                        )
                    } else {
                        accepted.lock().unwrap().extend(body.lines().map(str::to_owned));
                        "HTTP/1.1 204 No Content\r\n\r\n".to_owned()
                    };
                    open.fetch_sub(1, SeqCst);
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, accepted, most_at_once)
}

#[tokio::test]
async fn a_rejected_point_is_dead_lettered_and_the_rest_continue() {
    let broker = Mosquitto::start();
    let (port, accepted, _) = fake_influx(Behaviour::RejectBaureferat).await;
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("influx-reject");
    let url = format!("http://127.0.0.1:{port}");
    let extra = "flush_interval_ms = 300\ngzip = false\nretry_min_ms = 50\nretry_max_ms = 200";
    let mut gw = Gateway::start_with(broker.port, dir.path(), &topics, &influx_section(&url, extra)).await;

    let good =
        |f_cnt: u32, at: &str| (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", f_cnt, LHT65_PAYLOAD, at));
    let bad = (
        topics.ttn("demo-lht65-depot"),
        ttn_uplink("demo-lht65-depot", "A840410000000003", 1, LHT65_PAYLOAD, "2025-01-01T00:00:01Z"),
    );
    let messages = vec![good(1, "2025-01-01T00:00:00Z"), bad, good(2, "2025-01-01T00:00:02Z")];
    publish_all(broker.port, &format!("{}-pub", topics.prefix), messages).await;

    let per_message = wait_for("the good points written and the bad ones rejected", Duration::from_secs(30), || async {
        let stored = stored(&gw).await;
        let written = gw.metric("messnetz_influx_points_written_total").await;
        let rejected = gw.metric("messnetz_influx_points_rejected_total").await;
        let spooled = gw.metric("messnetz_influx_spool_readings").await;
        (stored > 0.0 && written + rejected == stored && spooled == 0.0).then_some(stored / 3.0)
    })
    .await;
    assert_eq!(gw.metric("messnetz_influx_points_rejected_total").await, per_message);
    assert_eq!(gw.metric("messnetz_influx_points_written_total").await, 2.0 * per_message);
    let lines = accepted.lock().unwrap().clone();
    assert_eq!(lines.len(), 2 * per_message as usize, "{lines:?}");
    assert!(lines.iter().all(|l| l.contains(",device=demo-lht65,")), "{lines:?}");

    assert!(gw.terminate().success(), "clean exit on SIGTERM");
    let store = messnetz::store::EmbeddedStore::open(&gw.data).unwrap();
    let letters = store.dead_letters(0, 100).unwrap();
    assert_eq!(letters.len(), per_message as usize, "{letters:?}");
    for letter in &letters {
        assert_eq!(letter.topic, "influxdb");
        assert_eq!(letter.device.as_deref(), Some("demo-lht65-depot"));
        assert!(letter.reason.contains("HTTP 400") && letter.reason.contains("field type conflict"), "{}", letter.reason);
        assert!(String::from_utf8_lossy(&letter.payload).contains("owner=Baureferat"));
    }
    assert_eq!(messnetz::store::Outbox::outbox_len(&store).unwrap(), 0);
}

#[tokio::test]
async fn unavailable_throttling_and_slow_servers_are_retried_until_they_accept() {
    let broker = Mosquitto::start();
    let (port, accepted, _) = fake_influx(Behaviour::UnavailableThenSlow).await;
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("influx-retry");
    let url = format!("http://127.0.0.1:{port}");
    let extra = "flush_interval_ms = 100\ngzip = false\nretry_min_ms = 50\nretry_max_ms = 200\nrequest_timeout_ms = 500";
    let gw = Gateway::start_with(broker.port, dir.path(), &topics, &influx_section(&url, extra)).await;

    publish_all(broker.port, &format!("{}-pub", topics.prefix), lht65_burst(&topics, 5)).await;
    wait_drained(&gw, 5.0, Duration::from_secs(30)).await;
    // 503, 429 and a timeout: three failed tries, then everything in one piece.
    assert_eq!(gw.metric("messnetz_influx_write_errors_total").await, 3.0);
    assert_eq!(gw.metric("messnetz_influx_points_rejected_total").await, 0.0);
    let lines = accepted.lock().unwrap().clone();
    assert_eq!(lines.len() as f64, stored(&gw).await, "{lines:?}");
}

/// Two write requests go at once only when no point of one is in the other, so a point's
/// later value (a reading replaced by a later uplink of the same time) is the one InfluxDB
/// keeps even when the server answers the later request first; every line goes once.
#[tokio::test]
async fn requests_at_once_share_no_point_and_each_line_goes_once() {
    requests_at_once_share_no_point("gzip = false").await;
}

/// The same with the spool's packed rows, sent as stored in one gzip member.
#[tokio::test]
async fn packed_requests_at_once_share_no_point_and_each_line_goes_once() {
    requests_at_once_share_no_point("gzip = true").await;
}

async fn requests_at_once_share_no_point(gzip: &str) {
    const N: usize = 60;
    let broker = Mosquitto::start();
    let (port, accepted, most_at_once) = fake_influx(Behaviour::Slow).await;
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("influx-in-order");
    let url = format!("http://127.0.0.1:{port}");
    // A batch is one message's readings: a batch and the next share their points when they
    // are an uplink and its correction, and none when they are a correction and the next
    // uplink, wherever the first request began.
    let gw =
        Gateway::start_with(broker.port, dir.path(), &topics, &influx_section(&url, &format!("{gzip}\nbatch_size = 6"))).await;
    // Each uplink followed by its correction: same time, 25.73 °C instead of 28.29 °C.
    let topic = topics.ttn("demo-lht65");
    let messages = (0..N as u32).flat_map(|i| {
        let at = chrono::DateTime::from_timestamp(BURST_START_MS / 1000 + i64::from(i), 0).unwrap().to_rfc3339();
        [(2 * i + 1, LHT65_PAYLOAD), (2 * i + 2, "CBF60A0D0376010ADD7FFF")]
            .map(|(f_cnt, payload)| (topic.clone(), ttn_uplink("demo-lht65", "A840410000000001", f_cnt, payload, &at)))
    });
    publish_all(broker.port, &format!("{}-pub", topics.prefix), messages.collect()).await;
    wait_drained(&gw, 2.0 * N as f64, Duration::from_secs(30)).await;
    let lines = accepted.lock().unwrap().clone();
    assert_eq!(lines.len() as f64, stored(&gw).await, "every line once");
    // The value each point was left with: the correction's.
    let mut last = std::collections::HashMap::new();
    for line in lines.iter().filter(|l| l.starts_with("air_temperature,")) {
        let mut words = line.split(' ');
        let (series, value, time) = (words.next().unwrap(), words.next().unwrap(), words.next().unwrap());
        last.insert((series.to_owned(), time.to_owned()), value.to_owned());
    }
    assert_eq!(last.len(), N);
    assert!(last.values().all(|v| v.starts_with("value=25.73,")), "{last:?}");
    assert_eq!(most_at_once.load(SeqCst), 2, "a backlog goes two requests at once");
}

/// A gateway whose spool holds two messages' readings (6 each), one message per commit,
/// writing to `vm`, which the caller has stopped.
async fn gateway_with_tiny_spool(
    broker: &Mosquitto,
    vm: &VictoriaMetrics,
    dir: &std::path::Path,
    topics: &Topics,
    policy: &str,
) -> Gateway {
    let extra = format!(
        "batch_size = 6\nspool_max_readings = 12\nspool_full = \"{policy}\"\nflush_interval_ms = 50\nretry_min_ms = 50\nretry_max_ms = 200\n\n[ingest]\nmax_batch = 1\n"
    );
    Gateway::start_with(broker.port, dir, topics, &influx_section(&vm.url(), &extra)).await
}

#[tokio::test]
async fn a_full_spool_with_backpressure_stops_acknowledging_until_the_server_returns() {
    let broker = Mosquitto::start();
    let mut vm = VictoriaMetrics::start();
    vm.stop();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("influx-backpressure");
    let gw = gateway_with_tiny_spool(&broker, &vm, dir.path(), &topics, "backpressure").await;

    publish_all(broker.port, &format!("{}-pub", topics.prefix), lht65_burst(&topics, 10)).await;
    wait_for("ingest to wait for room in the spool", Duration::from_secs(20), || async {
        (gw.metric("messnetz_influx_spool_full_waits_total").await >= 1.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Two messages filled the spool; the rest are held unacknowledged by the broker.
    assert_eq!(gw.metric("messnetz_messages_acked_total").await, 2.0);
    assert_eq!(gw.metric("messnetz_influx_spool_readings").await, 12.0);
    // Readiness says why messages wait.
    let ready = reqwest::get(gw.url("/readyz")).await.expect("GET /readyz");
    assert_eq!(ready.status().as_u16(), 503);
    let body: serde_json::Value = ready.json().await.expect("/readyz answers JSON");
    assert_eq!(body["checks"]["influxdb_spool"]["ok"], false, "{body}");
    assert!(body["checks"]["influxdb_spool"]["error"].as_str().unwrap().contains("spool"), "{body}");

    vm.restart();
    wait_drained(&gw, 10.0, Duration::from_secs(30)).await;
    assert!(reqwest::get(gw.url("/readyz")).await.unwrap().status().is_success(), "ready again once drained");
    let export = vm.export("air_temperature_value").await;
    assert_eq!(timestamps(&export[0]).len(), 10, "{export:?}");
    assert_eq!(gw.metric("messnetz_influx_spool_dropped_total").await, 0.0);
}

#[tokio::test]
async fn a_full_spool_with_drop_oldest_keeps_acknowledging_and_counts_what_it_drops() {
    let broker = Mosquitto::start();
    let mut vm = VictoriaMetrics::start();
    vm.stop();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("influx-dropoldest");
    let gw = gateway_with_tiny_spool(&broker, &vm, dir.path(), &topics, "drop-oldest").await;

    publish_all(broker.port, &format!("{}-pub", topics.prefix), lht65_burst(&topics, 10)).await;
    wait_for("all acknowledged and the spool trimmed to its limit", Duration::from_secs(20), || async {
        let acked = gw.metric("messnetz_messages_acked_total").await;
        let spooled = gw.metric("messnetz_influx_spool_readings").await;
        (acked == 10.0 && spooled <= 12.0).then_some(())
    })
    .await;

    vm.restart();
    wait_for("the rest of the spool written", Duration::from_secs(30), || async {
        let spooled = gw.metric("messnetz_influx_spool_readings").await;
        let written = gw.metric("messnetz_influx_points_written_total").await;
        (spooled == 0.0 && written > 0.0).then_some(())
    })
    .await;
    let dropped = gw.metric("messnetz_influx_spool_dropped_total").await;
    let written = gw.metric("messnetz_influx_points_written_total").await;
    assert_eq!((dropped, written), (48.0, 12.0));
    // The newest two messages reached the server; every reading is still in the embedded store.
    let export = vm.export("air_temperature_value").await;
    assert_eq!(timestamps(&export[0]), vec![BURST_START_MS + 8000, BURST_START_MS + 9000]);
    assert_eq!(stored(&gw).await, 60.0);
}
