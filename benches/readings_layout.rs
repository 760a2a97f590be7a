//! Benchmark: what storing an uplink's readings costs in the embedded store's engine, for the
//! layout the store has (a row per reading) and for others, to size a redesign.
//!
//! The harness's job in miniature: LHT65s sending MESSNETZ_BENCH_UPLINKS (100,000) uplinks of
//! six readings (four decoded, two derived), five of them flagged stuck with a reason of the
//! stuck test's length, committed in batches of MESSNETZ_BENCH_BATCH (500) uplinks with the
//! engine's default durability and a page cache of MESSNETZ_BENCH_CACHE_MB (1,024, the
//! store's default). The uplinks come from MESSNETZ_BENCH_DEVICES (1, as in the harness)
//! devices in turn: a city's thousand devices spread each commit over a thousand places in a
//! table keyed by series. Writers, each into a fresh file:
//!
//! - `EmbeddedStore::write`: the gateway's commit (readings, series numbers, district rollup
//!   deltas, window journal, last seen);
//! - the readings table alone: the same keys and values as the store's `readings_by_series`
//!   table, six inserts an uplink;
//! - the same, each commit's inserts in key order (series by series);
//! - the same, without reasons (what the reasons' bytes cost);
//! - a row per reading with key and value packed (one `u128` of series and ms; bytes), keyed
//!   series first as the store is, and time first (a log: every insert lands at the end);
//! - blocks of MESSNETZ_BENCH_BLOCK (256) readings of a series, the newest block read, extended
//!   and written back once a commit;
//! - a row per uplink: key (device number, ms), the six readings packed into one value.
//!
//! Prints µs per uplink (wall clock, with the commits' fsyncs, and this thread's CPU) and the
//! bytes of the readings' pages for each. Then reads back from the four tables' files
//! MESSNETZ_BENCH_QUERIES (2,000) times one series' readings in a window of
//! MESSNETZ_BENCH_WINDOW_S (3,600) seconds at a pseudo-random device, quantity and time, and
//! the series' newest reading; prints µs per query (the second pass, pages cached) and checks
//! that every layout read the same readings.
//!
//! `cargo bench --bench readings_layout`

#[path = "city/mod.rs"]
mod city;

use std::time::Instant;

use city::{env, thread_cpu};

use chrono::DateTime;
use messnetz::model::{DeviceId, QualityFlag, Quantity, Reading};
use messnetz::store::{CommitStore, EmbeddedStore, WriteBatch};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

/// The same key and value types as the embedded store's readings table.
const BY_READING: TableDefinition<(u32, i64), (f64, u8, &str)> = TableDefinition::new("by_reading");
/// (device number, ms) -> per reading: quantity byte, value, flag byte, reason length, reason.
const BY_UPLINK: TableDefinition<(u32, i64), &[u8]> = TableDefinition::new("by_uplink");
/// (series, first ms) -> up to BLOCK readings of the series: ms, value, flag, reason length, reason.
const BLOCKS: TableDefinition<(u32, i64), &[u8]> = TableDefinition::new("blocks");
/// A row per reading, the key (series, ms) packed into one integer and the value into bytes.
const PACKED: TableDefinition<u128, &[u8]> = TableDefinition::new("packed");

const START_MS: i64 = 1_764_547_200_000; // 2025-12-01T00:00:00Z
const QUANTITIES: [&str; 6] =
    ["battery_voltage", "air_temperature", "relative_humidity", "probe_temperature", "dew_point_temperature", "heat_index"];
/// As long as the stuck test's reason for a humidity reading.
const STUCK: &str = "stuck: 88.6 % unchanged since 2025-12-01 00:00:01 UTC (6.0 h)";

/// The six readings of uplink `u`: the air temperature changes, the others repeat (stuck).
fn uplink(device: &DeviceId, quantities: &[Quantity], u: usize) -> Vec<Reading> {
    let time = DateTime::from_timestamp_millis(START_MS + u as i64 * 1000).unwrap();
    quantities
        .iter()
        .enumerate()
        .map(|(i, &quantity)| {
            let changing = i == 1;
            Reading {
                device: device.clone(),
                quantity,
                value: if changing { (u % 300) as f64 / 10.0 } else { 88.6 },
                time,
                flag: if changing { QualityFlag::Good } else { QualityFlag::Suspect },
                reason: if changing { Default::default() } else { STUCK.into() },
            }
        })
        .collect()
}

/// `pages`: bytes of the readings' pages (keys, values, page metadata and fragmentation).
fn report(what: &str, uplinks: usize, (seconds, cpu): (f64, f64), pages: u64) {
    println!(
        "{what:<34} {:>6.2} µs/uplink ({:>5.2} µs CPU)  {:>7.0} uplinks/s  readings' pages {:>6.1} MiB",
        seconds * 1e6 / uplinks as f64,
        cpu * 1e6 / uplinks as f64,
        uplinks as f64 / seconds,
        pages as f64 / 1048576.0
    );
}

fn pages(s: redb::TableStats) -> u64 {
    s.stored_bytes() + s.metadata_bytes() + s.fragmented_bytes()
}

/// One layout's table written from the batches into a fresh file, one transaction a batch.
struct Layout {
    what: String,
    path: std::path::PathBuf,
    cache_mb: usize,
    uplinks: usize,
}

impl Layout {
    /// Write every batch with `insert` (given the table, the batch's number and its readings),
    /// then report the time per uplink and the table's pages.
    fn run<K: redb::Key + 'static, V: redb::Value + 'static>(
        self,
        def: TableDefinition<K, V>,
        batches: &[Vec<Reading>],
        mut insert: impl FnMut(&mut redb::Table<K, V>, usize, &[Reading]),
    ) {
        let db = Database::builder().set_cache_size(self.cache_mb << 20).create(&self.path).unwrap();
        let (started, cpu0) = (Instant::now(), thread_cpu());
        for (b, readings) in batches.iter().enumerate() {
            let tx = db.begin_write().unwrap();
            insert(&mut tx.open_table(def).unwrap(), b, readings);
            tx.commit().unwrap();
        }
        let seconds = (started.elapsed().as_secs_f64(), thread_cpu() - cpu0);
        let space = pages(db.begin_read().unwrap().open_table(def).unwrap().stats().unwrap());
        report(&self.what, self.uplinks, seconds, space);
    }
}

/// A reading packed after its key part: value, flag, reason length (at most 255), reason.
fn push_reading(out: &mut Vec<u8>, r: &Reading) {
    let reason = &r.reason.as_bytes()[..r.reason.len().min(255)];
    out.extend_from_slice(&r.value.to_le_bytes());
    out.push(r.flag.to_byte());
    out.push(reason.len() as u8);
    out.extend_from_slice(reason);
}

fn main() {
    let uplinks = env("MESSNETZ_BENCH_UPLINKS", 100_000);
    let per_batch = env("MESSNETZ_BENCH_BATCH", 500);
    let cache_mb = env("MESSNETZ_BENCH_CACHE_MB", 1024);
    let devices = env("MESSNETZ_BENCH_DEVICES", 1);
    let ids: Vec<DeviceId> = (0..devices).map(|d| DeviceId::parse(&format!("demo-lht65-{d:04}")).unwrap()).collect();
    let block_len = env("MESSNETZ_BENCH_BLOCK", 256);
    // The series of reading `k` of batch `b` when the uplinks come from `devices` devices in turn
    // (numbered as the store numbers them when it sees the devices in turn).
    let series_of = |b: usize, k: usize| {
        (((b * per_batch + k / QUANTITIES.len()) % devices) * QUANTITIES.len() + k % QUANTITIES.len()) as u32
    };
    let quantities: Vec<Quantity> = QUANTITIES.iter().map(|q| Quantity::by_name(q).unwrap()).collect();
    let batches: Vec<Vec<Reading>> = (0..uplinks)
        .step_by(per_batch)
        .map(|first| (first..(first + per_batch).min(uplinks)).flat_map(|u| uplink(&ids[u % devices], &quantities, u)).collect())
        .collect();
    println!(
        "{uplinks} uplinks of {} readings from {devices} device(s), {per_batch} uplinks a commit, page cache {cache_mb} MiB",
        quantities.len()
    );

    // The gateway's commit.
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with_cache(dir.path(), cache_mb << 20).unwrap();
    let mut batch = WriteBatch::default();
    let (started, cpu0) = (Instant::now(), thread_cpu());
    for readings in &batches {
        batch.readings.clone_from(readings);
        store.write(&batch).unwrap();
    }
    let seconds = (started.elapsed().as_secs_f64(), thread_cpu() - cpu0);
    let space = store.table_space().unwrap();
    report("EmbeddedStore::write", uplinks, seconds, space.iter().find(|s| s.0 == "readings").unwrap().2);
    assert_eq!(store.count_readings().unwrap(), (uplinks * quantities.len()) as u64);
    drop(store);

    // The readings table alone, a row per reading: as the readings come, in key order,
    // without reasons.
    let dir = tempfile::tempdir().unwrap();
    let write = |what: &str, name: &str| Layout { what: what.to_owned(), path: dir.path().join(name), cache_mb, uplinks };
    for (what, in_order, reasons) in [
        ("readings table, a row per reading", false, true),
        ("readings table, in key order", true, true),
        ("readings table, no reasons", false, false),
    ] {
        write(what, &format!("by-reading-{in_order}-{reasons}.redb")).run(BY_READING, &batches, |table, b, readings| {
            // Series numbers as the store gives them: one per quantity of a device.
            let mut keys: Vec<(u32, i64, usize)> =
                readings.iter().enumerate().map(|(k, r)| (series_of(b, k), r.time.timestamp_millis(), k)).collect();
            if in_order {
                keys.sort_unstable();
            }
            for (series, ms, k) in keys {
                let r = &readings[k];
                let reason = if reasons { r.reason.as_str() } else { "" };
                table.insert((series, ms), (r.value, r.flag.to_byte(), reason)).unwrap();
            }
        });
    }

    // A row per reading, key and value packed; and the same keyed by time first (a log).
    for (what, time_first) in [("a row per reading, packed", false), ("a row per reading, time first", true)] {
        let mut row = Vec::new();
        write(what, &format!("packed-{time_first}.redb")).run(PACKED, &batches, |table, b, readings| {
            for (k, r) in readings.iter().enumerate() {
                let series = series_of(b, k) as u128;
                let ms = (r.time.timestamp_millis() as u64 ^ (1 << 63)) as u128;
                row.clear();
                row.extend_from_slice(&r.value.to_le_bytes());
                row.push(r.flag.to_byte());
                row.extend_from_slice(r.reason.as_bytes());
                let key = if time_first { ms << 64 | series } else { series << 64 | ms };
                table.insert(key, row.as_slice()).unwrap();
            }
        });
    }

    // Blocks of a series' readings: each commit appends to its series' newest block (read,
    // extended, written back) and starts a new one when it is full.
    let mut block = Vec::new();
    let blocks = write(&format!("blocks of {block_len} readings a series"), "blocks.redb");
    blocks.run(BLOCKS, &batches, |table, b, readings| {
        let mut by_series: std::collections::BTreeMap<u32, Vec<&Reading>> = Default::default();
        for (k, r) in readings.iter().enumerate() {
            by_series.entry(series_of(b, k)).or_default().push(r);
        }
        for (series, mine) in by_series {
            let (mut first, mut count) = (None, 0);
            block.clear();
            if let Some(entry) = table.range((series, i64::MIN)..=(series, i64::MAX)).unwrap().next_back() {
                let (k, v) = entry.unwrap();
                first = Some(k.value().1);
                block.extend_from_slice(v.value());
                count = u16::from_le_bytes([block[0], block[1]]) as usize;
            }
            if block.is_empty() {
                block.extend_from_slice(&[0, 0]);
            }
            for r in mine {
                if count == block_len {
                    table.insert((series, first.unwrap()), block.as_slice()).unwrap();
                    block.clear();
                    block.extend_from_slice(&[0, 0]);
                    (first, count) = (None, 0);
                }
                let ms = r.time.timestamp_millis();
                first.get_or_insert(ms);
                block.extend_from_slice(&ms.to_le_bytes());
                push_reading(&mut block, r);
                count += 1;
                block[..2].copy_from_slice(&(count as u16).to_le_bytes());
            }
            table.insert((series, first.unwrap()), block.as_slice()).unwrap();
        }
    });

    // A row per uplink.
    let mut row = Vec::new();
    write("a row per uplink", "by-uplink.redb").run(BY_UPLINK, &batches, |table, b, readings| {
        for (u, one) in readings.chunks(QUANTITIES.len()).enumerate() {
            row.clear();
            for (q, r) in one.iter().enumerate() {
                row.push(q as u8);
                push_reading(&mut row, r);
            }
            let device = series_of(b, u * QUANTITIES.len()) / QUANTITIES.len() as u32;
            table.insert((device, one[0].time.timestamp_millis()), row.as_slice()).unwrap();
        }
    });

    // Reading back: one series' readings in a window (the API's series, a rollup's fold) and
    // its newest reading (a series' history seeded for the quality tests), per layout.
    let queries = env("MESSNETZ_BENCH_QUERIES", 2000);
    let window_s = env("MESSNETZ_BENCH_WINDOW_S", 3600) as i64;
    let span_s = uplinks as i64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let asked: Vec<(u32, usize, i64)> = (0..queries)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let device = ((seed >> 33) % devices as u64) as u32;
            let q = ((seed >> 20) % QUANTITIES.len() as u64) as usize;
            let from = START_MS + ((seed >> 8) % (span_s.max(1) as u64)) as i64 * 1000;
            (device, q, from)
        })
        .collect();
    let open = |name: &str| Database::builder().set_cache_size(cache_mb << 20).create(dir.path().join(name)).unwrap();
    // Each layout answers (readings in the window, their values' sum in tenths, the newest one's ms).
    let tenths = |value: f64| (value * 10.0).round() as i64;
    let time = |what: &str, answer: &dyn Fn(u32, usize, i64) -> (u64, i64, i64)| {
        let run = || asked.iter().map(|&(d, q, from)| answer(d, q, from)).collect::<Vec<_>>();
        let warm = run();
        let (started, cpu0) = (Instant::now(), thread_cpu());
        let answers = run();
        let (seconds, cpu) = (started.elapsed().as_secs_f64(), thread_cpu() - cpu0);
        let read: u64 = answers.iter().map(|a| a.0).sum();
        println!(
            "read back, {what:<28} {:>8.2} µs a query ({:>8.2} µs CPU), {:.1} readings a window",
            seconds * 1e6 / queries as f64,
            cpu * 1e6 / queries as f64,
            read as f64 / queries as f64
        );
        assert_eq!(warm.len(), answers.len());
        answers
    };
    let to_of = |from: i64| from + window_s * 1000;
    let unpacked = |bytes: &[u8]| (f64::from_le_bytes(bytes[..8].try_into().unwrap()), bytes[8]);

    let by_reading = {
        let db = open("by-reading-false-true.redb");
        let tx = db.begin_read().unwrap();
        let table = tx.open_table(BY_READING).unwrap();
        time("a row per reading", &|d, q, from| {
            let n = d * QUANTITIES.len() as u32 + q as u32;
            let (mut count, mut sum) = (0, 0);
            for entry in table.range((n, from)..(n, to_of(from))).unwrap() {
                let (_, v) = entry.unwrap();
                count += 1;
                sum += tenths(v.value().0);
            }
            let newest = table.range((n, i64::MIN)..=(n, i64::MAX)).unwrap().next_back().unwrap().unwrap().0.value().1;
            (count, sum, newest)
        })
    };

    let time_first = {
        let db = open("packed-true.redb");
        let tx = db.begin_read().unwrap();
        let table = tx.open_table(PACKED).unwrap();
        let key = |ms: i64| (ms as u64 ^ (1 << 63)) as u128;
        time("a row per reading, time first", &|d, q, from| {
            let n = (d * QUANTITIES.len() as u32 + q as u32) as u128;
            let (mut count, mut sum) = (0, 0);
            for entry in table.range(key(from) << 64..key(to_of(from)) << 64).unwrap() {
                let (k, v) = entry.unwrap();
                if k.value() & u64::MAX as u128 == n {
                    count += 1;
                    sum += tenths(unpacked(v.value()).0);
                }
            }
            let mut newest = 0;
            for entry in table.iter().unwrap().rev() {
                let (k, _) = entry.unwrap();
                if k.value() & u64::MAX as u128 == n {
                    newest = ((k.value() >> 64) as u64 ^ (1 << 63)) as i64;
                    break;
                }
            }
            (count, sum, newest)
        })
    };

    let blocks = {
        let db = open("blocks.redb");
        let tx = db.begin_read().unwrap();
        let table = tx.open_table(BLOCKS).unwrap();
        // Each reading in a block: ms, value, flag, reason length, reason.
        let entries = |block: &[u8], each: &mut dyn FnMut(i64, f64)| {
            let mut at = 2;
            while at < block.len() {
                let ms = i64::from_le_bytes(block[at..at + 8].try_into().unwrap());
                let (value, _) = unpacked(&block[at + 8..]);
                each(ms, value);
                at += 8 + 8 + 1 + 1 + block[at + 17] as usize;
            }
        };
        time("blocks of a series", &|d, q, from| {
            let n = d * QUANTITIES.len() as u32 + q as u32;
            let to = to_of(from);
            let (mut count, mut sum) = (0, 0);
            for entry in table.range((n, i64::MIN)..(n, to)).unwrap().rev() {
                let (k, v) = entry.unwrap();
                entries(v.value(), &mut |ms, value| {
                    if (from..to).contains(&ms) {
                        count += 1;
                        sum += tenths(value);
                    }
                });
                if k.value().1 < from {
                    break;
                }
            }
            let mut newest = 0;
            let last = table.range((n, i64::MIN)..=(n, i64::MAX)).unwrap().next_back().unwrap().unwrap();
            entries(last.1.value(), &mut |ms, _| newest = ms);
            (count, sum, newest)
        })
    };

    let by_uplink = {
        let db = open("by-uplink.redb");
        let tx = db.begin_read().unwrap();
        let table = tx.open_table(BY_UPLINK).unwrap();
        // The reading of quantity `q` in an uplink's row.
        let pick = |row: &[u8], q: usize| {
            let mut at = 0;
            while at < row.len() {
                if row[at] as usize == q {
                    return Some(unpacked(&row[at + 1..]).0);
                }
                at += 1 + 8 + 1 + 1 + row[at + 10] as usize;
            }
            None
        };
        time("a row per uplink", &|d, q, from| {
            let (mut count, mut sum) = (0, 0);
            for entry in table.range((d, from)..(d, to_of(from))).unwrap() {
                let (_, v) = entry.unwrap();
                if let Some(value) = pick(v.value(), q) {
                    count += 1;
                    sum += tenths(value);
                }
            }
            let mut newest = 0;
            for entry in table.range((d, i64::MIN)..=(d, i64::MAX)).unwrap().rev() {
                let (k, v) = entry.unwrap();
                if pick(v.value(), q).is_some() {
                    newest = k.value().1;
                    break;
                }
            }
            (count, sum, newest)
        })
    };
    // Every layout read the same.
    for other in [&time_first, &blocks, &by_uplink] {
        assert!(other == &by_reading, "a layout read other readings back");
    }
}
