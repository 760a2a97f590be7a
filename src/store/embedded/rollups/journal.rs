//! The device-window journal: which hours of which devices each batch touched, durable in the batch's transaction and mirrored in memory until flushed.
//!
//! One row per batch, keyed by a sequence number, in a compact layout (a burst of 2,000
//! uplinks from 1,000 devices journals about 1,000 device hours in some 12 kB). The unit
//! is the device hour: an uplink's readings share device and time, so a batch notes one
//! entry per uplink at most, and the flush recomputes every quantity the device has in
//! that hour. The in-memory mirror ([`Pending`]) tells a query which stored windows are stale.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use crate::aggregates::Interval;
use crate::store::boundary::{engine, StoreError};
use crate::store::embedded::tables::WINDOW_JOURNAL;

const HOUR_MS: i64 = 3_600_000;

/// Hours a batch touched: (device, hour start, earliest time touched in it), in any order.
#[derive(Debug, Default)]
pub(in crate::store::embedded) struct Touched<'a>(Vec<(&'a str, i64, i64)>);

impl<'a> Touched<'a> {
    pub(in crate::store::embedded) fn add(&mut self, device: &'a str, t_ms: i64) {
        let hour = Interval::Hour.window_start(t_ms);
        // An uplink's readings come together: merge the repeats next to each other early.
        match self.0.last_mut() {
            Some((d, h, t)) if *d == device && *h == hour => *t = (*t).min(t_ms),
            _ => self.0.push((device, hour, t_ms)),
        }
    }

    /// Sorted by device and hour, each once with the earliest time touched in it.
    fn settle(&mut self) {
        self.0.sort_unstable();
        self.0.dedup_by_key(|(d, h, _)| (*d, *h));
    }

    /// (device, hour start), sorted, each once: what a journal row keeps.
    fn hours(&self) -> Vec<(&'a str, i64)> {
        self.0.iter().map(|&(d, h, _)| (d, h)).collect()
    }
}

/// Journaled device hours not yet flushed, in memory: per device, each pending hour start
/// with the newest journal row that touched it.
#[derive(Debug, Default)]
pub(in crate::store::embedded) struct Pending {
    next_seq: AtomicU64,
    hours: Mutex<HashMap<String, BTreeMap<i64, u64>>>,
    /// Per journal row noted by this process: (device, hour start, earliest time touched),
    /// sorted. Rows read back from the journal have none (it keeps hours only).
    earliest: Mutex<HashMap<u64, Vec<Earliest>>>,
}

/// (device, hour start, earliest time touched in that hour).
type Earliest = (Box<str>, i64, i64);

impl Pending {
    /// Rebuild from the journal a previous run left (a crash, or a stop between flushes).
    pub(in crate::store::embedded) fn load(db: &redb::Database) -> Result<Self, StoreError> {
        let pending = Pending::default();
        let tx = db.begin_read().map_err(engine)?;
        let journal = tx.open_table(WINDOW_JOURNAL).map_err(engine)?;
        let mut last = 0;
        for entry in journal.iter().map_err(engine)? {
            let (k, v) = entry.map_err(engine)?;
            last = k.value();
            visit(v.value(), &mut |device, hours| pending.note(last, device, hours.iter().copied()))?;
        }
        pending.next_seq.store(last + 1, Ordering::Relaxed);
        Ok(pending)
    }

    /// Replace the contents with the journal as stored (after a reopen: a transaction that
    /// failed may have noted hours its journal row never stored).
    pub(in crate::store::embedded) fn reload(&self, db: &redb::Database) -> Result<(), StoreError> {
        let fresh = Self::load(db)?;
        let hours = fresh.hours.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut mine = self.hours.lock().unwrap_or_else(|p| p.into_inner());
        *mine = hours;
        self.earliest.lock().unwrap_or_else(|p| p.into_inner()).clear();
        // Never reuse a number a failed transaction took: keep counting up.
        self.next_seq.fetch_max(fresh.next_seq.load(Ordering::Relaxed), Ordering::Relaxed);
        Ok(())
    }

    fn note(&self, seq: u64, device: &str, hours: impl Iterator<Item = i64>) {
        let mut pending = self.hours.lock().unwrap_or_else(|p| p.into_inner());
        let of_device = match pending.get_mut(device) {
            Some(d) => d,
            None => pending.entry(device.to_owned()).or_default(),
        };
        for hour in hours {
            of_device.insert(hour, seq);
        }
    }

    /// Pending hour starts of one device in `[from, to)`.
    pub(in crate::store::embedded) fn between(&self, device: &str, from: i64, to: i64) -> Vec<i64> {
        let pending = self.hours.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get(device) {
            Some(hours) if from < to => hours.range(from..to).map(|(h, _)| *h).collect(),
            _ => Vec::new(),
        }
    }

    /// The earliest time the journal rows `seqs` touched in `device`'s hour starting at
    /// `hour`: the hour's start when one of the rows was not noted by this process.
    pub(in crate::store::embedded) fn earliest_touched(&self, seqs: &[u64], device: &str, hour: i64) -> i64 {
        let noted = self.earliest.lock().unwrap_or_else(|p| p.into_inner());
        let mut earliest = i64::MAX;
        for seq in seqs {
            let Some(row) = noted.get(seq) else { return hour };
            if let Ok(i) = row.binary_search_by(|(d, h, _)| (&**d, *h).cmp(&(device, hour))) {
                earliest = earliest.min(row[i].2);
            }
        }
        if earliest == i64::MAX {
            hour
        } else {
            earliest
        }
    }

    /// Forget hours whose newest journal row is at or below `seq`: a flush has stored them.
    pub(in crate::store::embedded) fn flushed(&self, seq: u64) {
        self.earliest.lock().unwrap_or_else(|p| p.into_inner()).retain(|s, _| *s > seq);
        let mut pending = self.hours.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, hours| {
            hours.retain(|_, s| *s > seq);
            !hours.is_empty()
        });
    }

    /// Number of pending device hours.
    pub(in crate::store::embedded) fn len(&self) -> usize {
        self.hours.lock().unwrap_or_else(|p| p.into_inner()).values().map(BTreeMap::len).sum()
    }
}

/// Append a batch's touched hours to the journal, in the batch's own transaction, and note
/// them as pending before the transaction commits: a query that does not find them pending
/// yet cannot see the readings that make them stale either.
pub(in crate::store::embedded) fn append(
    tx: &WriteTransaction,
    pending: &Pending,
    touched: &mut Touched,
) -> Result<(), StoreError> {
    if touched.0.is_empty() {
        return Ok(());
    }
    touched.settle();
    let hours = touched.hours();
    let seq = pending.next_seq.fetch_add(1, Ordering::Relaxed);
    for run in hours.chunk_by(|a, b| a.0 == b.0) {
        pending.note(seq, run[0].0, run.iter().map(|t| t.1));
    }
    let earliest = touched.0.iter().map(|&(d, h, t)| (Box::from(d), h, t)).collect();
    pending.earliest.lock().unwrap_or_else(|p| p.into_inner()).insert(seq, earliest);
    let mut table = tx.open_table(WINDOW_JOURNAL).map_err(engine)?;
    table.insert(seq, encode(&hours).as_slice()).map_err(engine)?;
    Ok(())
}

/// Read up to `max` journal rows, oldest first: `f` gets each row's sequence number, device
/// and hours. Returns the rows' sequence numbers.
pub(in crate::store::embedded) fn oldest(
    journal: &impl ReadableTable<u64, &'static [u8]>,
    max: usize,
    mut f: impl FnMut(u64, &str, &[i64]),
) -> Result<Vec<u64>, StoreError> {
    let mut seqs = Vec::new();
    for entry in journal.iter().map_err(engine)?.take(max) {
        let (k, v) = entry.map_err(engine)?;
        let seq = k.value();
        visit(v.value(), &mut |device, hours| f(seq, device, hours))?;
        seqs.push(seq);
    }
    Ok(seqs)
}

/// Drop journal rows a flush has handled (in the flush's transaction).
pub(in crate::store::embedded) fn remove(tx: &WriteTransaction, seqs: impl Iterator<Item = u64>) -> Result<(), StoreError> {
    let mut journal = tx.open_table(WINDOW_JOURNAL).map_err(engine)?;
    for seq in seqs {
        journal.remove(seq).map_err(engine)?;
    }
    Ok(())
}

// Row layout: the base, the earliest hour start as i64 little-endian; then as LEB128
// varints the number of devices and per device its id's length and bytes, its runs of
// adjacent hours (count), and per run the first hour's offset from the base and the run's
// length, both in hours.

fn encode(sorted: &[(&str, i64)]) -> Vec<u8> {
    let base = sorted.iter().map(|t| t.1).min().unwrap_or(0);
    let mut out = Vec::with_capacity(16 + sorted.len() * 12);
    out.extend_from_slice(&base.to_le_bytes());
    let devices: Vec<_> = sorted.chunk_by(|a, b| a.0 == b.0).collect();
    varint(&mut out, devices.len() as u64);
    for device in devices {
        varint(&mut out, device[0].0.len() as u64);
        out.extend_from_slice(device[0].0.as_bytes());
        let runs: Vec<_> = device.chunk_by(|a, b| b.1 - a.1 == HOUR_MS).collect();
        varint(&mut out, runs.len() as u64);
        for run in runs {
            varint(&mut out, ((run[0].1 - base) / HOUR_MS) as u64);
            varint(&mut out, run.len() as u64);
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

/// Call `f` with each device of a row and its hours (ascending), without copying the row.
fn visit(bytes: &[u8], f: &mut impl FnMut(&str, &[i64])) -> Result<(), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("window journal row: {what}"));
    let mut c = Cursor(bytes);
    let base = i64::from_le_bytes(c.take(8)?.try_into().map_err(|_| corrupt("short base"))?);
    let mut hours = Vec::new();
    let mut total = 0u64;
    for _ in 0..c.varint()? {
        let len = c.len()?;
        let device = std::str::from_utf8(c.take(len)?).map_err(|_| corrupt("a device id is not UTF-8"))?;
        hours.clear();
        for _ in 0..c.varint()? {
            let first = c.varint()?;
            let len = c.varint()?;
            total = total.saturating_add(len);
            if total > 1 << 24 {
                return Err(corrupt("more hours than a row can hold"));
            }
            for i in 0..len {
                let step = i64::try_from(first.saturating_add(i)).map_err(|_| corrupt("offset out of range"))?;
                let hour =
                    step.checked_mul(HOUR_MS).and_then(|o| base.checked_add(o)).ok_or_else(|| corrupt("offset out of range"))?;
                hours.push(hour);
            }
        }
        f(device, &hours);
    }
    if !c.0.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(())
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

    /// A length: must fit what is left of the row, so damage can't ask for gigabytes.
    fn len(&mut self) -> Result<usize, StoreError> {
        let v = self.varint()?;
        usize::try_from(v)
            .ok()
            .filter(|n| *n <= self.0.len())
            .ok_or_else(|| StoreError::Corrupt(format!("window journal row: a length of {v} with {} bytes left", self.0.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Vec<(String, Vec<i64>)>, StoreError> {
        let mut out = Vec::new();
        visit(bytes, &mut |d, h| out.push((d.to_owned(), h.to_vec())))?;
        Ok(out)
    }

    #[test]
    fn rows_round_trip_runs_and_reject_damage() {
        let mut touched = Touched::default();
        for t in [0, 600_000, 1_200_000, 3_600_000, -600_000, 1_200_001] {
            touched.add("dev-1", t);
        }
        touched.add("ä", 5);
        touched.add("dev-1", 86_400_000 * 400);
        touched.settle();
        assert_eq!(touched.0[1], ("dev-1", 0, 0), "the earliest time touched in the hour");
        let bytes = encode(&touched.hours());
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].0, "dev-1");
        assert_eq!(back[0].1, vec![-3_600_000, 0, 3_600_000, 86_400_000 * 400], "hours, each once");
        assert_eq!((back[1].0.as_str(), back[1].1.as_slice()), ("ä", &[0][..]));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "a row cut at {cut} bytes must not decode");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert!(decode(&[0xff; 16]).is_err());
    }

    #[test]
    fn a_burst_journals_in_a_few_bytes_per_device_hour() {
        let ids: Vec<String> = (0..1000).map(|d| format!("dev-{d:04}")).collect();
        let mut touched = Touched::default();
        for step in 0..2 {
            for id in &ids {
                for _quantity in 0..6 {
                    touched.add(id, step * 600_000);
                }
            }
        }
        assert_eq!(touched.0.len(), 2000, "an uplink's readings make one entry");
        touched.settle();
        let bytes = encode(&touched.hours());
        assert!(bytes.len() < 14 * 1000, "{} bytes for 1,000 device hours", bytes.len());
        assert_eq!(decode(&bytes).unwrap().iter().map(|s| s.1.len()).sum::<usize>(), 1000);
    }

    #[test]
    fn flushed_forgets_only_hours_no_newer_row_touched() {
        let p = Pending::default();
        p.note(1, "a", [0, 3_600_000].into_iter());
        p.note(2, "a", [3_600_000].into_iter());
        p.flushed(1);
        assert_eq!(p.between("a", 0, i64::MAX), vec![3_600_000]);
        p.flushed(2);
        assert_eq!(p.len(), 0);
    }
}
