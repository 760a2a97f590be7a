//! Device windows: persisted by a deferred flush that a per-batch journal feeds, and current on every query.
//!
//! Every write that adds or changes readings also appends one journal row (the 10-minute
//! windows it touched, per series) in the same transaction, and notes the same windows in
//! memory as pending. A flush, run every second by the gateway, recomputes the pending
//! windows from the stored readings, stores them, and drops the journal rows it handled,
//! again in one transaction. So a crash loses no window (the journal is as durable as the
//! readings), corrections are exact (windows are recomputed, not patched), and a queue of
//! uplinks costs one window write per series and window per flush instead of one per batch.
//! A query overlays the pending windows, folded from the readings, on the stored ones.
//!
//! Every window is built the same way, wherever it is built (flush, query, rebuild): the
//! 10-minute windows from the readings, an hour from its 10-minute windows and a day from
//! its hours, each merged oldest first. So a window has the same bits whichever path made it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::embedded::READINGS;
use super::rollups::ROLLUPS;
use super::{engine, StoreError};
use crate::aggregates::{Interval, Scope, Window};
use crate::model::{QualityFlag, Quantity};

/// Journal sequence number → the 10-minute windows one batch touched, encoded by [`encode`].
pub(super) const WINDOW_JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("window_journal");

const TEN: Interval = Interval::TenMinutes;

/// The 10-minute window starts a batch touched, by series (device, quantity name).
pub(super) type Touched<'a> = BTreeMap<(&'a str, &'static str), BTreeSet<i64>>;

/// A series: device and quantity name.
type Series = (String, &'static str);

/// Windows written to the journal and not yet flushed, in memory: per series, each pending
/// 10-minute window start with the newest journal row that touched it.
#[derive(Debug, Default)]
pub(super) struct Pending {
    next_seq: AtomicU64,
    windows: Mutex<HashMap<Series, BTreeMap<i64, u64>>>,
}

impl Pending {
    /// Rebuild from the journal a previous run left (a crash or a stop between flushes).
    pub(super) fn load(db: &redb::Database) -> Result<Self, StoreError> {
        use redb::ReadableDatabase;
        let pending = Pending::default();
        let tx = db.begin_read().map_err(engine)?;
        let journal = tx.open_table(WINDOW_JOURNAL).map_err(engine)?;
        let mut last = 0;
        for entry in journal.iter().map_err(engine)? {
            let (k, v) = entry.map_err(engine)?;
            let seq = k.value();
            last = seq;
            let series = decode(v.value())?;
            pending.note(seq, series.iter().map(|(d, q, starts)| ((d.as_str(), *q), starts)));
        }
        pending.next_seq.store(last + 1, Ordering::Relaxed);
        Ok(pending)
    }

    fn note<'a>(&self, seq: u64, series: impl Iterator<Item = ((&'a str, &'static str), &'a BTreeSet<i64>)>) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        for ((device, quantity), starts) in series {
            let entry = match windows.get_mut(&(device.to_owned(), quantity)) {
                Some(e) => e,
                None => windows.entry((device.to_owned(), quantity)).or_default(),
            };
            for start in starts {
                entry.insert(*start, seq);
            }
        }
    }

    /// Pending 10-minute window starts of one series in `[from, to)`.
    fn between(&self, device: &str, quantity: &'static str, from: i64, to: i64) -> Vec<i64> {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        match windows.get(&(device.to_owned(), quantity)) {
            Some(starts) if from < to => starts.range(from..to).map(|(s, _)| *s).collect(),
            _ => Vec::new(),
        }
    }

    /// Forget windows whose newest journal row is at or below `seq`: a flush has stored them.
    fn flushed(&self, seq: u64) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        windows.retain(|_, starts| {
            starts.retain(|_, s| *s > seq);
            !starts.is_empty()
        });
    }

    /// Number of pending windows (all series).
    pub(super) fn len(&self) -> usize {
        self.windows.lock().unwrap_or_else(|p| p.into_inner()).values().map(BTreeMap::len).sum()
    }
}

/// Append a batch's touched windows to the journal, in the batch's own transaction, and note
/// them as pending before the transaction commits: a query that finds them not pending yet
/// also cannot see the readings that make them stale.
pub(super) fn journal(tx: &WriteTransaction, pending: &Pending, touched: &Touched) -> Result<(), StoreError> {
    if touched.is_empty() {
        return Ok(());
    }
    let seq = pending.next_seq.fetch_add(1, Ordering::Relaxed);
    pending.note(seq, touched.iter().map(|(k, v)| (*k, v)));
    let mut table = tx.open_table(WINDOW_JOURNAL).map_err(engine)?;
    table.insert(seq, encode(touched).as_slice()).map_err(engine)?;
    Ok(())
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushSummary {
    /// Journal rows handled (one per batch).
    pub batches: usize,
    /// Windows written or removed, all intervals.
    pub windows: usize,
}

/// Store the windows of up to `max_batches` journal rows (oldest first) and drop those rows.
pub(super) fn flush(db: &redb::Database, pending: &Pending, max_batches: usize) -> Result<FlushSummary, StoreError> {
    let tx = db.begin_write().map_err(engine)?;
    let mut dirty: BTreeMap<(String, &'static str), BTreeSet<i64>> = BTreeMap::new();
    let mut handled = Vec::new();
    {
        let journal = tx.open_table(WINDOW_JOURNAL).map_err(engine)?;
        for entry in journal.iter().map_err(engine)?.take(max_batches) {
            let (k, v) = entry.map_err(engine)?;
            handled.push(k.value());
            for (device, quantity, starts) in decode(v.value())? {
                dirty.entry((device, quantity)).or_default().extend(starts);
            }
        }
    }
    let Some(&last) = handled.last() else {
        tx.abort().map_err(engine)?;
        return Ok(FlushSummary::default());
    };
    let mut summary = FlushSummary { batches: handled.len(), windows: 0 };
    {
        let readings = tx.open_table(READINGS).map_err(engine)?;
        let mut rollups = tx.open_table(ROLLUPS).map_err(engine)?;
        for ((device, quantity), starts) in &dirty {
            summary.windows += store_series(&readings, &mut rollups, device, quantity, starts)?;
        }
        let mut journal = tx.open_table(WINDOW_JOURNAL).map_err(engine)?;
        for seq in &handled {
            journal.remove(*seq).map_err(engine)?;
        }
    }
    tx.commit().map_err(engine)?;
    pending.flushed(last);
    Ok(summary)
}

type ReadingsTable<'t> = redb::Table<'t, (&'static str, &'static str, i64), (f64, u8, &'static str)>;
pub(super) type RollupsTable<'t> = redb::Table<'t, (&'static str, &'static str, u8, i64), (u64, u64, f64, f64, f64, f64, i64)>;

/// Recompute and store one series' windows that hold the given 10-minute windows.
fn store_series(
    readings: &ReadingsTable,
    rollups: &mut RollupsTable,
    device: &str,
    quantity: &'static str,
    starts: &BTreeSet<i64>,
) -> Result<usize, StoreError> {
    let key = Scope::Device(device.to_owned()).key();
    let k = key.as_str();
    let mut written = 0;
    // 10 minutes: one range read per run of adjacent windows.
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &s in starts {
        match runs.last_mut() {
            Some((_, end)) if *end == s => *end = s + TEN.millis(),
            _ => runs.push((s, s + TEN.millis())),
        }
    }
    for (from, to) in runs {
        let mut fresh = ten_minute_windows(readings, device, quantity, from, to)?.into_iter().peekable();
        for start in (from..to).step_by(TEN.millis() as usize) {
            match fresh.next_if(|(s, _)| *s == start) {
                Some((_, w)) => rollups.insert((k, quantity, TEN.code(), start), w.as_tuple()).map_err(engine)?,
                None => rollups.remove((k, quantity, TEN.code(), start)).map_err(engine)?,
            };
            written += 1;
        }
    }
    // Hours from their 10-minute windows, then days from their hours.
    let mut finer = starts.clone();
    for (fine, coarse) in [(TEN, Interval::Hour), (Interval::Hour, Interval::Day)] {
        let outer: BTreeSet<i64> = finer.iter().map(|s| coarse.window_start(*s)).collect();
        for &start in &outer {
            let mut w = Window::EMPTY;
            for entry in rollups.range((k, quantity, fine.code(), start)..(k, quantity, fine.code(), start + coarse.millis())).map_err(engine)? {
                let (_, v) = entry.map_err(engine)?;
                w.merge(&Window::from_tuple(v.value()));
            }
            if w.count + w.excluded > 0 {
                rollups.insert((k, quantity, coarse.code(), start), w.as_tuple()).map_err(engine)?;
            } else {
                rollups.remove((k, quantity, coarse.code(), start)).map_err(engine)?;
            }
            written += 1;
        }
        finer = outer;
    }
    Ok(written)
}

/// The non-empty 10-minute windows of one series in `[from, to)` (aligned), from its readings.
fn ten_minute_windows(
    readings: &impl ReadableTable<(&'static str, &'static str, i64), (f64, u8, &'static str)>,
    device: &str,
    quantity: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, Window)>, StoreError> {
    let mut out: Vec<(i64, Window)> = Vec::new();
    for entry in readings.range((device, quantity, from)..(device, quantity, to)).map_err(engine)? {
        let (k, v) = entry.map_err(engine)?;
        let t = k.value().2;
        let (value, flag, _) = v.value();
        let start = TEN.window_start(t);
        if out.last().is_none_or(|(s, _)| *s != start) {
            out.push((start, Window::EMPTY));
        }
        if let Some((_, w)) = out.last_mut() {
            w.add(value, t, QualityFlag::from_byte(flag));
        }
    }
    Ok(out)
}

/// Merge windows (oldest first) into the longer windows of `interval` that hold them.
fn coarsen(fine: &[(i64, Window)], interval: Interval) -> Vec<(i64, Window)> {
    let mut out: Vec<(i64, Window)> = Vec::new();
    for (s, w) in fine {
        let start = interval.window_start(*s);
        match out.last_mut() {
            Some((last, acc)) if *last == start => acc.merge(w),
            _ => {
                let mut acc = Window::EMPTY;
                acc.merge(w);
                out.push((start, acc));
            }
        }
    }
    out
}

/// Windows of `interval` starting in `[from, to)` (both aligned to `interval`), built from
/// the readings the way the flush builds them.
fn from_readings(
    readings: &impl ReadableTable<(&'static str, &'static str, i64), (f64, u8, &'static str)>,
    device: &str,
    quantity: &str,
    interval: Interval,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, Window)>, StoreError> {
    let tens = ten_minute_windows(readings, device, quantity, from, to)?;
    Ok(match interval {
        Interval::TenMinutes => tens,
        Interval::Hour => coarsen(&tens, Interval::Hour),
        Interval::Day => coarsen(&coarsen(&tens, Interval::Hour), Interval::Day),
    })
}

/// A device's windows with `from <= start < to` (`from` aligned to `interval`): the stored
/// ones, with those holding pending 10-minute windows folded afresh from the readings.
pub(super) fn query(
    db: &redb::Database,
    pending: &Pending,
    device: &str,
    quantity: Quantity,
    interval: Interval,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, Window)>, StoreError> {
    use redb::ReadableDatabase;
    let q = quantity.name();
    let len = interval.millis();
    let end = if to > from { interval.window_start(to - 1).saturating_add(len) } else { from };
    // Pending first, then the snapshot: see `journal`.
    let stale: BTreeSet<i64> = pending.between(device, q, from, end).into_iter().map(|s| interval.window_start(s)).filter(|s| (from..to).contains(s)).collect();
    let tx = db.begin_read().map_err(engine)?;
    let mut out: BTreeMap<i64, Window> =
        super::rollups::stored(&tx, &Scope::Device(device.to_owned()), quantity, interval, from, to)?.into_iter().collect();
    if !stale.is_empty() {
        let readings = tx.open_table(READINGS).map_err(engine)?;
        for start in stale {
            out.remove(&start);
            out.extend(from_readings(&readings, device, q, interval, start, start + len)?);
        }
    }
    Ok(out.into_iter().collect())
}

/// Rebuilds device windows from readings fed in store order (series by series, oldest
/// first), writing each series' windows when the next series begins.
#[derive(Default)]
pub(super) struct Rebuilder {
    series: Option<(String, &'static str)>,
    tens: Vec<(i64, Window)>,
    /// Windows written so far, all intervals.
    pub(super) written: usize,
}

impl Rebuilder {
    pub(super) fn add(
        &mut self,
        rollups: &mut RollupsTable,
        device: &str,
        quantity: &'static str,
        t: i64,
        value: f64,
        flag: QualityFlag,
    ) -> Result<(), StoreError> {
        if self.series.as_ref().is_none_or(|(d, q)| d != device || *q != quantity) {
            self.finish(rollups)?;
            self.series = Some((device.to_owned(), quantity));
        }
        let start = TEN.window_start(t);
        if self.tens.last().is_none_or(|(s, _)| *s != start) {
            self.tens.push((start, Window::EMPTY));
        }
        if let Some((_, w)) = self.tens.last_mut() {
            w.add(value, t, flag);
        }
        Ok(())
    }

    /// Write the current series' windows.
    pub(super) fn finish(&mut self, rollups: &mut RollupsTable) -> Result<(), StoreError> {
        let Some((device, quantity)) = self.series.take() else { return Ok(()) };
        let tens = std::mem::take(&mut self.tens);
        let hours = coarsen(&tens, Interval::Hour);
        let days = coarsen(&hours, Interval::Day);
        let key = Scope::Device(device).key();
        for (interval, windows) in [(TEN, &tens), (Interval::Hour, &hours), (Interval::Day, &days)] {
            for (start, w) in windows {
                rollups.insert((key.as_str(), quantity, interval.code(), *start), w.as_tuple()).map_err(engine)?;
                self.written += 1;
            }
        }
        Ok(())
    }
}

/// Journal row layout (all integers little-endian): series count (u32); then per series the
/// device's length (u16) and bytes, the quantity name's length (u8) and bytes, the number of
/// window starts (u32) and the starts (i64 ms each).
fn encode(touched: &Touched) -> Vec<u8> {
    let size: usize = touched.iter().map(|((d, q), s)| 2 + d.len() + 1 + q.len() + 4 + 8 * s.len()).sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(touched.len() as u32).to_le_bytes());
    for ((device, quantity), starts) in touched {
        out.extend_from_slice(&(device.len() as u16).to_le_bytes());
        out.extend_from_slice(device.as_bytes());
        out.push(quantity.len() as u8);
        out.extend_from_slice(quantity.as_bytes());
        out.extend_from_slice(&(starts.len() as u32).to_le_bytes());
        for s in starts {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    out
}

fn decode(bytes: &[u8]) -> Result<Vec<(String, &'static str, BTreeSet<i64>)>, StoreError> {
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
        fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
            let mut a = [0; N];
            a.copy_from_slice(self.take(N)?);
            Ok(a)
        }
    }
    let mut c = Cursor(bytes);
    let n = u32::from_le_bytes(c.array()?) as usize;
    let mut out = Vec::with_capacity(n.min(bytes.len()));
    for _ in 0..n {
        let len = u16::from_le_bytes(c.array()?) as usize;
        let device = std::str::from_utf8(c.take(len)?).map_err(|e| StoreError::Corrupt(format!("window journal: {e}")))?;
        let len = c.array::<1>()?[0] as usize;
        let name = std::str::from_utf8(c.take(len)?).map_err(|e| StoreError::Corrupt(format!("window journal: {e}")))?;
        let quantity = Quantity::by_name(name)
            .ok_or_else(|| StoreError::Corrupt(format!("window journal: unknown quantity {name:?}")))?
            .name();
        let count = u32::from_le_bytes(c.array()?) as usize;
        let mut starts = BTreeSet::new();
        for _ in 0..count {
            starts.insert(i64::from_le_bytes(c.array()?));
        }
        out.push((device.to_owned(), quantity, starts));
    }
    if !c.0.is_empty() {
        return Err(StoreError::Corrupt("window journal row has trailing bytes".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceId, Reading};
    use crate::store::{EmbeddedStore, WriteBatch};
    use chrono::{DateTime, Utc};

    const T0: i64 = 1_780_272_000_000; // 2026-06-01T00:00:00Z
    const MIN: i64 = 60_000;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn reading(device: &str, minute: i64, value: f64, flag: QualityFlag) -> Reading {
        Reading {
            device: DeviceId::parse(device).unwrap(),
            quantity: Quantity::by_name("air_temperature").unwrap(),
            value,
            time: at(T0 + minute * MIN),
            flag,
            reason: String::new(),
        }
    }

    fn write(store: &EmbeddedStore, readings: Vec<Reading>) {
        store.write(&WriteBatch { readings, ..Default::default() }).unwrap();
    }

    /// Every window of dev-a, all intervals, over two days, as the API would ask.
    fn all(store: &EmbeddedStore) -> Vec<(Interval, Vec<(DateTime<Utc>, Window)>)> {
        let q = Quantity::by_name("air_temperature").unwrap();
        let scope = Scope::Device("dev-a".into());
        Interval::ALL.iter().map(|i| (*i, store.rollups(&scope, q, *i, at(T0 - 86_400_000), at(T0 + 2 * 86_400_000)).unwrap())).collect()
    }

    /// Windows computed independently, straight from a list of (minute, value, flag).
    fn expected(readings: &[(i64, f64, QualityFlag)], interval: Interval) -> Vec<(i64, u64, u64, f64, f64, f64)> {
        let mut by: BTreeMap<i64, Vec<(i64, f64, QualityFlag)>> = BTreeMap::new();
        for &(m, v, f) in readings {
            by.entry(interval.window_start(T0 + m * MIN)).or_default().push((m, v, f));
        }
        by.into_iter()
            .map(|(start, rs)| {
                let good: Vec<(i64, f64)> = rs.iter().filter(|r| r.2 != QualityFlag::Bad).map(|r| (r.0, r.1)).collect();
                let sum: f64 = good.iter().map(|g| g.1).sum();
                let min = good.iter().map(|g| g.1).fold(f64::INFINITY, f64::min);
                let last = good.iter().max_by_key(|g| g.0).map(|g| g.1).unwrap_or(f64::NAN);
                (start, good.len() as u64, (rs.len() - good.len()) as u64, sum, min, last)
            })
            .collect()
    }

    fn check(store: &EmbeddedStore, readings: &[(i64, f64, QualityFlag)], what: &str) {
        for (interval, got) in all(store) {
            let want = expected(readings, interval);
            assert_eq!(got.len(), want.len(), "{what} {interval:?}: windows");
            for ((start, w), (s, count, excluded, sum, min, last)) in got.iter().zip(want) {
                assert_eq!(start.timestamp_millis(), s, "{what} {interval:?}");
                assert_eq!((w.count, w.excluded), (count, excluded), "{what} {interval:?} {start}");
                if count > 0 {
                    assert!((w.sum - sum).abs() < 1e-9 && w.min == min && w.last == last, "{what} {interval:?} {start}: {w:?}");
                }
            }
        }
    }

    #[test]
    fn flushed_windows_equal_folded_ones_bit_for_bit_through_late_readings_corrections_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan: Vec<(i64, f64, QualityFlag)> = (0..300).map(|i| (i * 7, (i as f64 * 0.37).sin() * 10.0, QualityFlag::Good)).collect();
        plan[17].2 = QualityFlag::Bad;
        plan[18].2 = QualityFlag::Suspect;
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            // In arrival order: the second half first, then the first half (late readings).
            for chunk in plan[150..].chunks(40).chain(plan[..150].chunks(40)) {
                write(&store, chunk.iter().map(|&(m, v, f)| reading("dev-a", m, v, f)).collect());
            }
            check(&store, &plan, "pending");
            let folded = all(&store);
            assert!(store.pending_windows() > 0);
            let done = store.flush_all().unwrap();
            assert!(done.batches == 8 && done.windows > 0, "{done:?}");
            assert_eq!(store.pending_windows(), 0);
            assert_eq!(all(&store), folded, "stored windows must equal the folded ones bit for bit");
            check(&store, &plan, "flushed");

            // A correction and a late reading, then stop before any flush (a crash).
            plan[5].1 = 99.5;
            plan.push((-3, -40.0, QualityFlag::Good));
            write(&store, vec![reading("dev-a", plan[5].0, 99.5, QualityFlag::Good), reading("dev-a", -3, -40.0, QualityFlag::Good)]);
            // A repeat of a stored reading changes nothing and journals nothing.
            let before = store.pending_windows();
            write(&store, vec![reading("dev-a", plan[6].0, plan[6].1, plan[6].2)]);
            assert_eq!(store.pending_windows(), before);
            check(&store, &plan, "corrected, pending");
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert!(store.pending_windows() > 0, "the journal survives a restart");
        check(&store, &plan, "reopened");
        let folded = all(&store);
        assert_eq!(store.flush_all().unwrap().batches, 1);
        assert_eq!(all(&store), folded);
        check(&store, &plan, "reopened and flushed");

        // A rebuild gives the same bits.
        let summary = store.rebuild_rollups(at(0), at(T0 * 2), &|_| None).unwrap();
        assert_eq!(summary.readings, plan.len() as u64);
        assert_eq!(all(&store), folded, "a rebuild gives the same numbers");
    }

    #[test]
    fn a_query_overlays_only_its_own_series_pending_windows() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        write(&store, vec![reading("dev-a", 0, 1.0, QualityFlag::Good), reading("dev-ab", 0, 5.0, QualityFlag::Good)]);
        store.flush_all().unwrap();
        write(&store, vec![reading("dev-ab", 1, 7.0, QualityFlag::Good)]);
        check(&store, &[(0, 1.0, QualityFlag::Good)], "other series pending");
        write(&store, vec![reading("dev-a", 2, 3.0, QualityFlag::Good)]);
        check(&store, &[(0, 1.0, QualityFlag::Good), (2, 3.0, QualityFlag::Good)], "own series pending");
    }

    #[test]
    fn journal_rows_round_trip_and_reject_damage() {
        let mut touched = Touched::new();
        touched.entry(("dev-1", "air_temperature")).or_default().extend([600_000, -600_000]);
        touched.entry(("ä", "relative_humidity")).or_default().insert(0);
        let bytes = encode(&touched);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].0, "dev-1");
        assert_eq!(back[0].2.iter().copied().collect::<Vec<_>>(), vec![-600_000, 600_000]);
        assert_eq!((back[1].0.as_str(), back[1].1), ("ä", "relative_humidity"));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "a row cut at {cut} bytes must not decode");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn coarsening_merges_oldest_first_into_aligned_windows() {
        let mut a = Window::EMPTY;
        a.add(1.0, 0, QualityFlag::Good);
        let mut b = Window::EMPTY;
        b.add(3.0, 3_000_000, QualityFlag::Good);
        let mut c = Window::EMPTY;
        c.add(9.0, 3_600_000, QualityFlag::Bad);
        let hours = coarsen(&[(0, a), (3_000_000, b), (3_600_000, c)], Interval::Hour);
        assert_eq!(hours.len(), 2);
        assert_eq!((hours[0].0, hours[0].1.count, hours[0].1.mean(), hours[0].1.last), (0, 2, Some(2.0), 3.0));
        assert_eq!((hours[1].0, hours[1].1.count, hours[1].1.excluded), (3_600_000, 0, 1));
    }
}
