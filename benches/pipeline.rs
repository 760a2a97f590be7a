//! Benchmark: the ingest pipeline's CPU per uplink on the side-by-side harness's job, decoding
//! apart from committing, without a broker, so a change of a few per cent can be told apart.
//!
//! The harness's messages (`../shared/bench-peers/lib/burst.py`: TTS v3 uplinks of the demo
//! LHT65, one a second, its temperature a saw-tooth) in the order its two publishers bring them:
//! the burst's two halves interleaved, so every reading of the earlier half arrives late. In
//! batches of MESSNETZ_BENCH_BATCH (3,000) messages, each run through the pipeline (JSON,
//! device, profile, derived quantities, quality with the store as history) into a batch, then
//! committed to a fresh embedded store (`EmbeddedStore::write`), as the ingest stage does.
//! MESSNETZ_BENCH_UPLINKS (100,000) uplinks, MESSNETZ_BENCH_RUNS (3) runs, each into a fresh
//! store. The burst starts MESSNETZ_BENCH_BACK (200,000) seconds ago, as the harness's does; by
//! default each uplink is received a second after its time. MESSNETZ_BENCH_RECEIVED=now receives
//! them as the harness's gateway does, from now on, 50 µs apart (20,000 a second): uplinks dated
//! more than ten minutes ahead of that are stored at their reception time and flagged `future`.
//! Of the harness's million, 80 % are: `MESSNETZ_BENCH_UPLINKS=40000 MESSNETZ_BENCH_BACK=8000
//! MESSNETZ_BENCH_RECEIVED=now` is that job at a 25th of its size. Prints, per run, µs of this thread's CPU per uplink for decoding and for committing,
//! and the readings flagged by the spike and stuck tests. MESSNETZ_BENCH_INFLUX=1 also does
//! what an `[influxdb]` section adds to ingest: each uplink's readings encoded as spool lines
//! (counted with decoding) and the lines packed and spooled in the commit; nothing drains the
//! spool, as while InfluxDB is away. With MESSNETZ_BENCH_GZIP=0 (`gzip = false`) the spool
//! keeps the lines as text.
//!
//! `cargo bench --bench pipeline` (from the project root: it reads the demo's devices and the
//! bundled profiles).

#[path = "city/mod.rs"]
mod city;

use std::time::Instant;

use city::{env, thread_cpu};

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use messnetz::config::MessageFormat;
use messnetz::ingest::pipeline::Tally;
use messnetz::ingest::{readings_taken, Message, Outcome, Pipeline};
use messnetz::quality::QualityControl;
use messnetz::sources::lorawan_keys::SessionKeys;
use messnetz::store::{CommitStore, EmbeddedStore, WriteBatch};

const TOPIC: &str = "v3/demo@ttn/devices/demo-lht65/up";

/// Uplink `i` (1-based) of a burst starting at `base` (seconds): the harness's message, byte for
/// byte as `burst.py` writes it (`tests/common::ttn_uplink` is a fuller TTS message, a longer parse).
fn uplink(i: i64, base: i64) -> (Vec<u8>, DateTime<Utc>) {
    let mut raw = vec![0xCB, 0xF6];
    raw.extend_from_slice(&(((i % 300) * 10) as i16).to_be_bytes());
    raw.extend_from_slice(&[0x03, 0x76, 0x01, 0x0A, 0xDD, 0x7F, 0xFF]);
    let at = DateTime::from_timestamp(base + i, 0).unwrap();
    let text = at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let payload = base64::engine::general_purpose::STANDARD.encode(&raw);
    let json = format!(
        r#"{{"end_device_ids":{{"device_id":"demo-lht65","application_ids":{{"application_id":"demo"}},"dev_eui":"A840410000000001"}},"received_at":"{text}","uplink_message":{{"f_port":2,"f_cnt":{i},"frm_payload":"{payload}","rx_metadata":[{{"gateway_ids":{{"gateway_id":"gw1"}},"rssi":-80,"snr":7.5}}],"received_at":"{text}"}}}}"#
    );
    (json.into_bytes(), at)
}

fn main() {
    let uplinks = env("MESSNETZ_BENCH_UPLINKS", 100_000) as i64;
    let batch_size = env("MESSNETZ_BENCH_BATCH", 3_000);
    let runs = env("MESSNETZ_BENCH_RUNS", 3);
    let settings = messnetz::config::load(None).expect("default settings");
    let (profiles, devices) = messnetz::registry::load(&settings).expect("the demo's devices and the bundled profiles");
    let back = env("MESSNETZ_BENCH_BACK", 200_000) as i64;
    let as_now = std::env::var("MESSNETZ_BENCH_RECEIVED").is_ok_and(|v| v == "now");
    let spool = (env("MESSNETZ_BENCH_INFLUX", 0) == 1).then(|| {
        // The defaults of an `[influxdb]` section; nothing is sent.
        let section =
            format!("url = \"http://127.0.0.1:9\"\norg = \"o\"\nbucket = \"b\"\ngzip = {}\n", env("MESSNETZ_BENCH_GZIP", 1) == 1);
        let influx: messnetz::config::InfluxSettings = toml::from_str(&section).expect("an influxdb section");
        messnetz::sinks::influx::Spool::new(&influx, std::sync::Arc::new(messnetz::metrics::Metrics::default()), 0)
    });
    let base = Utc::now().timestamp() - back;
    // The two halves, interleaved; each received a second after it was measured (or now).
    let half = uplinks / 2;
    let order = (1..=half).flat_map(|i| [half + i, i]);
    let messages: Vec<(Vec<u8>, DateTime<Utc>)> = order.map(|i| uplink(i, base)).collect();
    println!(
        "{} uplinks in batches of {batch_size}, {runs} runs{}",
        messages.len(),
        if spool.is_some() { ", InfluxDB spool lines encoded and stored" } else { "" }
    );
    for run in 1..=runs {
        let start = Utc::now();
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut qc = QualityControl::new(settings.quality.max_series);
        let keys = SessionKeys::default();
        let (mut decoding, mut committing, mut commit_wall) = (0.0, 0.0, 0.0);
        let (mut readings, mut spikes, mut stuck, mut future) = (0usize, 0usize, 0usize, 0usize);
        let mut batch = WriteBatch::default();
        let mut nth = 0i64;
        for chunk in messages.chunks(batch_size) {
            let started = thread_cpu();
            let tally = Tally::default();
            let pipeline = Pipeline { devices: &devices, profiles: &profiles, lorawan: &keys, history: &store, tally: &tally };
            qc.new_batch();
            for (payload, at) in chunk {
                nth += 1;
                let received_at =
                    if as_now { start + chrono::Duration::microseconds(50 * nth) } else { *at + chrono::Duration::seconds(1) };
                let m = Message { topic: TOPIC, payload, size: payload.len(), format: Some(MessageFormat::TtnV3), received_at };
                let first = batch.readings.len();
                let (outcome, _) = pipeline.process(&m, &mut qc, |_| Ok(None), &mut batch.readings);
                match outcome {
                    // What the ingest stage adds with them (spool lines, last seen, district).
                    Outcome::Readings { device } => {
                        readings_taken(&mut batch, first, &device, received_at, &devices, spool.as_ref())
                    }
                    other => panic!("the harness's uplink was not stored: {other:?}"),
                }
            }
            decoding += thread_cpu() - started;
            readings += batch.readings.len();
            spikes += batch.readings.iter().filter(|r| r.reason.contains("spike:")).count();
            stuck += batch.readings.iter().filter(|r| r.reason.contains("stuck:")).count();
            future += batch.readings.iter().filter(|r| r.reason.contains("future:")).count();
            let (started, wall) = (thread_cpu(), Instant::now());
            store.write(&batch).unwrap();
            committing += thread_cpu() - started;
            commit_wall += wall.elapsed().as_secs_f64();
            batch.clear();
        }
        let per = |s: f64| s * 1e6 / messages.len() as f64;
        let space = store.table_space().unwrap();
        let mb_of = |table: &str| space.iter().find(|(t, ..)| *t == table).map_or(0.0, |(_, kv, _)| *kv as f64 / 1e6);
        let (mb, spool_mb) = (mb_of("readings"), mb_of("InfluxDB spool"));
        println!(
            "run {run}: decoding {:.2} µs CPU/uplink, committing {:.2} µs CPU/uplink ({:.2} µs wall); {readings} readings, {spikes} spike, {stuck} stuck, {future} future; readings table {mb:.1} MB of keys and rows{}",
            per(decoding),
            per(committing),
            per(commit_wall),
            if spool.is_some() { format!(", the spool {spool_mb:.1} MB") } else { String::new() }
        );
    }
}
