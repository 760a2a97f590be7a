//! The device-window journal: which hours of which series each batch touched, durable in the batch's transaction and mirrored in memory until flushed.
//!
//! One row per batch, keyed by a sequence number, in a compact layout (a burst of 2,000
//! uplinks from 1,000 devices touches 6,000 series and journals them in about 40 kB). The
//! unit is the hour because the flush recomputes device windows an hour block at a time.
//! The in-memory mirror ([`Pending`]) lets a query know which stored windows are stale.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{engine, StoreError};
use crate::aggregates::Interval;
use crate::model::Quantity;

/// Journal sequence number → the series hours one batch touched, encoded by [`encode`].
pub(super) const WINDOW_JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("window_journal");

const HOUR_MS: i64 = 3_600_000;

/// Hours a batch touched: (device, quantity name, hour start), in any order.
#[derive(Debug, Default)]
pub(super) struct Touched<'a>(Vec<(&'a str, &'static str, i64)>);

impl<'a> Touched<'a> {
    pub(super) fn add(&mut self, device: &'a str, quantity: &'static str, t_ms: i64) {
        let hour = Interval::Hour.window_start(t_ms);
        // An uplink's readings come together: skip the repeats next to each other early.
        if self.0.last() != Some(&(device, quantity, hour)) {
            self.0.push((device, quantity, hour));
        }
    }

    pub(super) fn clear(&mut self) {
        self.0.clear();
    }

    /// Sorted by series and start, each window once.
    fn settle(&mut self) {
        self.0.sort_unstable();
        self.0.dedup();
    }
}

/// One decoded journal row: per series, the touched hour starts (ascending).
pub(super) type Row = Vec<(String, &'static str, Vec<i64>)>;

/// Journaled hours not yet flushed, in memory: per device and quantity, each pending hour
/// start with the newest journal row that touched it.
#[derive(Debug, Default)]
pub(super) struct Pending {
    next_seq: AtomicU64,
    hours: Mutex<HashMap<String, HashMap<&'static str, BTreeMap<i64, u64>>>>,
}

impl Pending {
    /// Rebuild from the journal a previous run left (a crash, or a stop between flushes).
    pub(super) fn load(db: &redb::Database) -> Result<Self, StoreError> {
        let pending = Pending::default();
        let tx = db.begin_read().map_err(engine)?;
        let journal = tx.open_table(WINDOW_JOURNAL).map_err(engine)?;
        let mut last = 0;
        for entry in journal.iter().map_err(engine)? {
            let (k, v) = entry.map_err(engine)?;
            last = k.value();
            for (device, quantity, starts) in decode(v.value())? {
                pending.note(last, &device, quantity, starts.iter().copied());
            }
        }
        pending.next_seq.store(last + 1, Ordering::Relaxed);
        Ok(pending)
    }

    fn note(&self, seq: u64, device: &str, quantity: &'static str, starts: impl Iterator<Item = i64>) {
        let mut hours = self.hours.lock().unwrap_or_else(|p| p.into_inner());
        let series = match hours.get_mut(device) {
            Some(d) => d,
            None => hours.entry(device.to_owned()).or_default(),
        };
        let pending = series.entry(quantity).or_default();
        for start in starts {
            pending.insert(start, seq);
        }
    }

    /// Pending hour starts of one series in `[from, to)`.
    pub(super) fn between(&self, device: &str, quantity: &'static str, from: i64, to: i64) -> Vec<i64> {
        let hours = self.hours.lock().unwrap_or_else(|p| p.into_inner());
        match hours.get(device).and_then(|d| d.get(quantity)) {
            Some(starts) if from < to => starts.range(from..to).map(|(s, _)| *s).collect(),
            _ => Vec::new(),
        }
    }

    /// Forget hours whose newest journal row is at or below `seq`: a flush has stored them.
    pub(super) fn flushed(&self, seq: u64) {
        let mut hours = self.hours.lock().unwrap_or_else(|p| p.into_inner());
        hours.retain(|_, series| {
            series.retain(|_, starts| {
                starts.retain(|_, s| *s > seq);
                !starts.is_empty()
            });
            !series.is_empty()
        });
    }

    /// Number of pending series hours.
    pub(super) fn len(&self) -> usize {
        let hours = self.hours.lock().unwrap_or_else(|p| p.into_inner());
        hours.values().flat_map(|d| d.values()).map(BTreeMap::len).sum()
    }
}

/// Append a batch's touched hours to the journal, in the batch's own transaction, and note
/// them as pending before the transaction commits: a query that does not find them pending
/// yet cannot see the readings that make them stale either.
pub(super) fn append(tx: &WriteTransaction, pending: &Pending, touched: &mut Touched) -> Result<(), StoreError> {
    if touched.0.is_empty() {
        return Ok(());
    }
    touched.settle();
    let seq = pending.next_seq.fetch_add(1, Ordering::Relaxed);
    for run in touched.0.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        pending.note(seq, run[0].0, run[0].1, run.iter().map(|t| t.2));
    }
    let mut table = tx.open_table(WINDOW_JOURNAL).map_err(engine)?;
    table.insert(seq, encode(&touched.0).as_slice()).map_err(engine)?;
    Ok(())
}

/// Up to `max` journal rows, oldest first, as (sequence number, row).
pub(super) fn oldest(journal: &impl ReadableTable<u64, &'static [u8]>, max: usize) -> Result<Vec<(u64, Row)>, StoreError> {
    let mut out = Vec::new();
    for entry in journal.iter().map_err(engine)?.take(max) {
        let (k, v) = entry.map_err(engine)?;
        out.push((k.value(), decode(v.value())?));
    }
    Ok(out)
}

/// Drop journal rows a flush has handled (in the flush's transaction).
pub(super) fn remove(tx: &WriteTransaction, seqs: impl Iterator<Item = u64>) -> Result<(), StoreError> {
    let mut journal = tx.open_table(WINDOW_JOURNAL).map_err(engine)?;
    for seq in seqs {
        journal.remove(seq).map_err(engine)?;
    }
    Ok(())
}

// Row layout, all counts and offsets as LEB128 varints:
//   the quantity names used (count, then length + bytes each);
//   the base: the earliest hour start, i64 little-endian;
//   the devices (count), each: length + bytes, its series (count), each: the quantity's
//   index in the names, its runs of adjacent hours (count), each: the first hour's offset
//   from the base and the run's length, both in hours.

fn encode(sorted: &[(&str, &'static str, i64)]) -> Vec<u8> {
    let mut names: Vec<&'static str> = sorted.iter().map(|t| t.1).collect();
    names.sort_unstable();
    names.dedup();
    let base = sorted.iter().map(|t| t.2).min().unwrap_or(0);
    let mut out = Vec::with_capacity(64 + sorted.len() * 4);
    varint(&mut out, names.len() as u64);
    for n in &names {
        varint(&mut out, n.len() as u64);
        out.extend_from_slice(n.as_bytes());
    }
    out.extend_from_slice(&base.to_le_bytes());
    let devices: Vec<_> = sorted.chunk_by(|a, b| a.0 == b.0).collect();
    varint(&mut out, devices.len() as u64);
    for device in devices {
        varint(&mut out, device[0].0.len() as u64);
        out.extend_from_slice(device[0].0.as_bytes());
        let series: Vec<_> = device.chunk_by(|a, b| a.1 == b.1).collect();
        varint(&mut out, series.len() as u64);
        for s in series {
            varint(&mut out, names.binary_search(&s[0].1).unwrap_or(0) as u64);
            let runs: Vec<_> = s.chunk_by(|a, b| b.2 - a.2 == HOUR_MS).collect();
            varint(&mut out, runs.len() as u64);
            for run in runs {
                varint(&mut out, ((run[0].2 - base) / HOUR_MS) as u64);
                varint(&mut out, run.len() as u64);
            }
        }
    }
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn decode(bytes: &[u8]) -> Result<Row, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("window journal row: {what}"));
    let mut c = Cursor(bytes);
    let mut names = Vec::new();
    for _ in 0..c.varint()? {
        let len = c.len()?;
        let name = std::str::from_utf8(c.take(len)?).map_err(|_| corrupt("a quantity name is not UTF-8"))?;
        names.push(Quantity::by_name(name).ok_or_else(|| corrupt(&format!("unknown quantity {name:?}")))?.name());
    }
    let base = i64::from_le_bytes(c.take(8)?.try_into().map_err(|_| corrupt("short base"))?);
    let mut out = Vec::new();
    let mut total = 0u64;
    for _ in 0..c.varint()? {
        let len = c.len()?;
        let device = std::str::from_utf8(c.take(len)?).map_err(|_| corrupt("a device id is not UTF-8"))?;
        for _ in 0..c.varint()? {
            let quantity = *names.get(c.len()?).ok_or_else(|| corrupt("quantity index out of range"))?;
            let mut starts = Vec::new();
            for _ in 0..c.varint()? {
                let first = c.varint()?;
                let len = c.varint()?;
                total = total.saturating_add(len);
                if total > 1 << 24 {
                    return Err(corrupt("more hours than a row can hold"));
                }
                for i in 0..len {
                    let step = i64::try_from(first.saturating_add(i)).map_err(|_| corrupt("offset out of range"))?;
                    let start = step
                        .checked_mul(HOUR_MS)
                        .and_then(|o| base.checked_add(o))
                        .ok_or_else(|| corrupt("offset out of range"))?;
                    starts.push(start);
                }
            }
            out.push((device.to_owned(), quantity, starts));
        }
    }
    if !c.0.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(out)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError::Corrupt("window journal row ends early".into()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, StoreError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(StoreError::Corrupt("window journal row: a number longer than 64 bits".into()))
    }

    /// A length or index: must fit what is left of the row, so damage can't ask for gigabytes.
    fn len(&mut self) -> Result<usize, StoreError> {
        let v = self.varint()?;
        usize::try_from(v)
            .ok()
            .filter(|n| *n <= self.0.len().max(u8::MAX as usize))
            .ok_or_else(|| StoreError::Corrupt(format!("window journal row: a length of {v} with {} bytes left", self.0.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_runs_and_reject_damage() {
        let mut touched = Touched::default();
        for t in [0, 600_000, 1_200_000, 3_600_000, -600_000, 1_200_001] {
            touched.add("dev-1", "air_temperature", t);
        }
        touched.add("ä", "relative_humidity", 5);
        touched.add("dev-1", "relative_humidity", 86_400_000 * 400);
        touched.settle();
        let bytes = encode(&touched.0);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!((back[0].0.as_str(), back[0].1), ("dev-1", "air_temperature"));
        assert_eq!(back[0].2, vec![-3_600_000, 0, 3_600_000], "hours, each once");
        assert_eq!(back[1].2, vec![86_400_000 * 400]);
        assert_eq!((back[2].0.as_str(), back[2].1, back[2].2.as_slice()), ("ä", "relative_humidity", &[0][..]));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "a row cut at {cut} bytes must not decode");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert!(decode(&[0xff; 16]).is_err());
    }

    #[test]
    fn a_burst_journals_in_a_few_bytes_per_window() {
        let mut touched = Touched::default();
        let names = ["air_temperature", "relative_humidity", "battery_voltage"];
        for d in 0..1000 {
            for q in names {
                for step in 0..2 {
                    touched.0.push((Box::leak(format!("dev-{d:04}").into_boxed_str()), q, step * HOUR_MS));
                }
            }
        }
        touched.settle();
        let bytes = encode(&touched.0);
        assert!(bytes.len() < 6 * 6000, "{} bytes for 6,000 series hours", bytes.len());
        assert_eq!(decode(&bytes).unwrap().iter().map(|s| s.2.len()).sum::<usize>(), 6000);
    }

    #[test]
    fn flushed_forgets_only_hours_no_newer_row_touched() {
        let p = Pending::default();
        p.note(1, "a", "air_temperature", [0, 3_600_000].into_iter());
        p.note(2, "a", "air_temperature", [3_600_000].into_iter());
        p.flushed(1);
        assert_eq!(p.between("a", "air_temperature", 0, i64::MAX), vec![3_600_000]);
        p.flushed(2);
        assert_eq!(p.len(), 0);
    }
}
