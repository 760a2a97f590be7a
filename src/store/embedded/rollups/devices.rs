//! Device windows: stored as hour blocks by a deferred flush that the window journal feeds, and current on every query.
//!
//! Every write that adds or changes readings also appends a journal row naming the series
//! hours it touched (`window_journal.rs`), in the same transaction. A flush, run every few
//! seconds by the gateway, recomputes those hours from the stored readings, then the days
//! that hold them, stores them and drops the journal
//! rows it handled, again in one transaction. So a crash loses no window (the journal is as
//! durable as the readings), corrections are exact (windows are recomputed, not patched),
//! and a burst of uplinks costs one row write per series and day per flush instead of
//! three window writes per reading. An hour whose rows all touched it after the newest
//! reading its stored block holds ([`Folded`]) is not recomputed: the new readings are
//! added to the block in time order, the same adds a recompute would make. A query
//! overlays the pending hours, folded from the readings, on the stored windows.
//!
//! Storage: one row per series and day holds the day's window and an hour block per hour
//! with data: the hour's window and its 10-minute windows (a 10-minute window of a single
//! good reading is kept as that reading's value and time). At a 10-minute cadence a full
//! day row is about 3 kB. Storing every window as a row of its own made the flush cost
//! about half of store throughput (each 10-minute window holds one reading at that
//! cadence); with a row per series and hour, most of the time a flush held the write lock
//! went into its B-tree inserts, one per row (see BENCHMARKS.md).
//!
//! Every window is built the same way, wherever it is built (flush, query, rebuild): the
//! 10-minute windows from the readings, an hour from its 10-minute windows and a day from
//! its hours, each merged oldest first. So a window has the same bits whichever path made it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use redb::{ReadableTable, WriteTransaction};

use super::journal::{self, Pending};
use crate::aggregates::{Interval, Window};
use crate::model::{QualityFlag, Quantity};
use crate::store::boundary::{engine, StoreError};
use crate::store::embedded::readings::{self, SeriesKey};
use crate::store::embedded::series;
use crate::store::embedded::tables::{DEVICE_WINDOWS, READINGS, SERIES, WINDOW_JOURNAL};

const TEN: Interval = Interval::TenMinutes;

type WindowsTable<'t> = redb::Table<'t, (&'static str, &'static str, i64), &'static [u8]>;

/// Per series hour whose block a flush of this process stored: the newest reading time
/// (any flag) folded into it, and checkpoints in its dense ten-minute windows. A later flush
/// whose rows touched that hour only after the newest folds the new readings into the stored
/// block instead of reading the whole hour again: added oldest first to the same windows,
/// they give the bits a recompute gives. One whose rows touched it earlier, inside a window
/// with a checkpoint before that time, goes on from the checkpoint the same way.
/// Per device hour also the newest journal row whose readings its blocks hold: a flush reads
/// an hour to its end, so it folds the readings of every batch committed before it read,
/// also of batches whose rows a later step of the same backlog takes. Those rows need
/// nothing more; without this a backlog of a dense hour was read again to its end by each
/// of its steps (the harness's million: 16 million readings read for 1.2 million stored).
/// Only in memory: after a start, a reopen or a rebuild every hour is recomputed once.
#[derive(Debug, Default)]
pub(in crate::store::embedded) struct Folded(Mutex<FoldedState>);

#[derive(Debug, Default)]
struct FoldedState {
    series: HashMap<(String, &'static str, i64), Fold>,
    /// (device, hour start) -> the newest journal row whose readings the hour's blocks hold.
    covered: HashMap<(String, i64), u64>,
}

/// What a flush folded into one series hour's stored block.
#[derive(Debug, Default)]
struct Fold {
    /// The newest reading's time.
    newest: i64,
    /// (t, w): the ten-minute window holding `t` as folded from its readings up to and
    /// including `t`, oldest first; one every [`CHECKPOINT_EVERY`] readings of a window.
    checkpoints: Vec<(i64, Window)>,
}

/// Series hours remembered in [`Folded`] at most; beyond, all are forgotten.
const FOLDED_MAX: usize = 200_000;

/// Readings of a ten-minute window between two checkpoints. A window that dense is a burst
/// stored at reception times a millisecond apart (up to 600,000 readings); readings measured
/// ahead of them, among them in time, made every flush read the window again from its start.
const CHECKPOINT_EVERY: u64 = 2048;

/// Checkpoints kept per series hour at most (a whole hour of a reading a millisecond).
const CHECKPOINTS_MAX: usize = 2048;

impl Folded {
    /// What is remembered of a series hour, forgotten here: the flush folding it puts back
    /// what it folds (a flush that fails leaves the hour to be recomputed, which is always
    /// right). Taken, not copied: a dense hour holds up to [`CHECKPOINTS_MAX`] windows.
    fn take(&self, device: &str, quantity: &'static str, hour: i64) -> Option<Fold> {
        self.lock().series.remove(&(device.to_owned(), quantity, hour))
    }

    /// The newest journal row whose readings a device hour's blocks hold (0: not known). A
    /// flush that fails leaves the blocks, and so this, as they were.
    fn covered(&self, device: &str, hour: i64) -> u64 {
        self.lock().covered.get(&(device.to_owned(), hour)).copied().unwrap_or(0)
    }

    fn set(&self, marks: Vec<Mark>, covered: Vec<((String, i64), u64)>) {
        let mut folded = self.lock();
        if folded.series.len() + marks.len() > FOLDED_MAX || folded.covered.len() + covered.len() > FOLDED_MAX {
            folded.series.clear();
            folded.covered.clear();
        }
        for (key, fold) in marks {
            match fold {
                Some(f) => folded.series.insert(key, f),
                None => folded.series.remove(&key),
            };
        }
        folded.covered.extend(covered);
    }

    /// Forget every hour: blocks were written by another path (a rebuild) or the store reopened.
    pub(in crate::store::embedded) fn clear(&self) {
        let mut folded = self.lock();
        folded.series.clear();
        folded.covered.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FoldedState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a flush folded into a series hour's stored block (`None`: no block).
type Mark = ((String, &'static str, i64), Option<Fold>);

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushSummary {
    /// Journal rows handled (one per batch).
    pub batches: usize,
    /// Day rows written or removed.
    pub windows: usize,
    /// Readings read to compute them.
    pub readings: u64,
}

/// Store the windows of up to `max_batches` journal rows (oldest first) and drop those rows.
///
/// The windows are computed from a read snapshot, so ingest keeps committing meanwhile; the
/// write transaction that follows only stores them. A batch committed after the snapshot
/// keeps its journal row (only the rows read are dropped) and its pending hours (they carry
/// a newer sequence number), so the next flush stores what this one could not see. Flushes
/// are serialised by `one_at_a_time`: hours a flush did not recompute are read from its
/// snapshot, which no other flush may change before it commits.
pub(in crate::store::embedded) fn flush(
    db: &redb::Database,
    pending: &Pending,
    folded: &Folded,
    one_at_a_time: &Mutex<()>,
    max_batches: usize,
) -> Result<FlushSummary, StoreError> {
    use redb::ReadableDatabase;
    let _only = one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
    let read = db.begin_read().map_err(engine)?;
    // Per device, the hours touched, each with the rows touching it.
    let mut dirty: HashMap<String, BTreeMap<i64, Vec<u64>>> = HashMap::new();
    let journal = read.open_table(WINDOW_JOURNAL).map_err(engine)?;
    let seqs = journal::oldest(&journal, max_batches, |seq, device, hours| {
        let of_device = match dirty.get_mut(device) {
            Some(h) => h,
            None => dirty.entry(device.to_owned()).or_default(),
        };
        for &hour in hours {
            of_device.entry(hour).or_default().push(seq);
        }
    })?;
    let Some(&last) = seqs.last() else {
        return Ok(FlushSummary::default());
    };
    // The newest batch this transaction sees: the hours read below hold its readings and
    // every earlier batch's (a batch's readings and its journal row are one commit).
    let visible = journal.last().map_err(engine)?.map_or(last, |(k, _)| k.value());
    let mut changes = Vec::new();
    let mut marks = Vec::new();
    let mut covered = Vec::new();
    let mut read_readings = 0;
    {
        let readings = read.open_table(READINGS).map_err(engine)?;
        let numbers = read.open_table(SERIES).map_err(engine)?;
        let stored = read.open_table(DEVICE_WINDOWS).map_err(engine)?;
        for (device, touched) in &dirty {
            // Hours whose blocks hold every row touching them are as they should be.
            let mut hours = BTreeMap::new();
            for (&h, rows) in touched {
                let held = folded.covered(device, h);
                let newer: Vec<u64> = rows.iter().copied().filter(|&seq| seq > held).collect();
                if !newer.is_empty() {
                    hours.insert(h, pending.earliest_touched(&newer, device, h));
                }
            }
            if hours.is_empty() {
                continue;
            }
            let Some(number) = series::device(&numbers, device)? else { continue };
            let series = series::of_device(&numbers, device)?.into_iter().map(|(q, n)| (n, q.name())).collect();
            let device = Device { number, name: device, series, stored: &stored };
            read_readings += device.changes(&readings, &hours, folded, &mut changes, &mut marks)?;
            // Only a backlog longer than this step has rows at or below `visible` left.
            if visible > last {
                covered.extend(hours.keys().map(|&h| ((device.name.to_owned(), h), visible)));
            }
        }
    }
    drop(journal);
    drop(read);
    // In key order: the inserts walk the tree once.
    changes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let summary = FlushSummary { batches: seqs.len(), windows: changes.len(), readings: read_readings };
    let tx = db.begin_write().map_err(engine)?;
    {
        let mut windows = tx.open_table(DEVICE_WINDOWS).map_err(engine)?;
        for ((device, quantity, day), value) in &changes {
            let key = (device.as_str(), *quantity, *day);
            match value {
                Some(bytes) => windows.insert(key, bytes.as_slice()).map_err(engine)?,
                None => windows.remove(key).map_err(engine)?,
            };
        }
    }
    journal::remove(&tx, seqs.into_iter())?;
    tx.commit().map_err(engine)?;
    folded.set(marks, covered);
    pending.flushed(last);
    Ok(summary)
}

/// A day row to write (`Some`) or remove (`None`): (device, quantity, day start).
type Change = ((String, &'static str, i64), Option<Vec<u8>>);

/// One device's series and stored windows, as a flush reads them.
struct Device<'a, S> {
    number: u32,
    name: &'a str,
    /// (series number, quantity name).
    series: Vec<(u32, &'static str)>,
    stored: &'a S,
}

impl<S> Device<'_, S>
where
    S: ReadableTable<(&'static str, &'static str, i64), &'static [u8]>,
{
    /// New hour blocks for `hours` (hour start -> earliest time the flush's rows touched in
    /// it), written into each series' day rows that hold them, the days' other hours kept as
    /// stored. An hour's rows are read once for all the device's series (each row holds an
    /// uplink's readings of all of them), from the earliest time one of them needs
    /// ([`Folding::start`]). Returns the readings folded.
    fn changes<R: ReadableTable<(u32, i64), &'static [u8]>>(
        &self,
        rows: &R,
        hours: &BTreeMap<i64, i64>,
        folded: &Folded,
        out: &mut Vec<Change>,
        marks: &mut Vec<Mark>,
    ) -> Result<u64, StoreError> {
        let mut read = 0;
        let hour_ms = Interval::Hour.millis();
        let days: BTreeSet<i64> = hours.keys().map(|h| Interval::Day.window_start(*h)).collect();
        for day in days {
            let end = day + Interval::Day.millis();
            // Per series: its stored day row, and its hour blocks as they become.
            let mut rows_of_day = Vec::with_capacity(self.series.len());
            for &(_, quantity) in &self.series {
                let old = self.stored.get((self.name, quantity, day)).map_err(engine)?.map(|row| row.value().to_vec());
                let mut blocks: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
                if let Some(row) = &old {
                    for (hour, block) in decode_day(day, row)?.1 {
                        blocks.insert(hour, block.to_vec());
                    }
                }
                rows_of_day.push((old, blocks));
            }
            for (&hour, &earliest) in hours.range(day..end) {
                let mut folds = Vec::with_capacity(self.series.len());
                for (&(_, quantity), (_, blocks)) in self.series.iter().zip(&rows_of_day) {
                    folds.push(Folding::start(folded.take(self.name, quantity, hour), blocks.get(&hour), hour, earliest)?);
                }
                let from = folds.iter().map(|f| f.from).min().unwrap_or(hour);
                readings::each_entry(rows, self.number, from, hour + hour_ms, |t, series, value, flag| {
                    if let Some(i) = self.series.iter().position(|s| s.0 == series) {
                        folds[i].add(t, value, flag);
                    }
                })?;
                for ((&(_, quantity), (_, blocks)), fold) in self.series.iter().zip(&mut rows_of_day).zip(folds) {
                    read += fold.read;
                    if fold.tens.is_empty() {
                        blocks.remove(&hour);
                    } else {
                        blocks.insert(hour, encode_block(&fold.tens));
                    }
                    let mark = fold.newest.map(|newest| Fold { newest, checkpoints: fold.checkpoints });
                    marks.push(((self.name.to_owned(), quantity, hour), mark));
                }
            }
            for (&(_, quantity), (old, blocks)) in self.series.iter().zip(rows_of_day) {
                let value = if blocks.is_empty() { None } else { Some(encode_day(day, &blocks)?) };
                // A quantity the device did not send in these hours leaves its rows as they are.
                if value != old {
                    out.push(((self.name.to_owned(), quantity, day), value));
                }
            }
        }
        Ok(read)
    }
}

/// One series hour as a flush folds it: its ten-minute windows so far, and from when its
/// readings are added to them.
struct Folding {
    from: i64,
    tens: Vec<(i64, Window)>,
    newest: Option<i64>,
    checkpoints: Vec<(i64, Window)>,
    /// Readings added to the last window since its start or its last checkpoint.
    since: u64,
    read: u64,
}

impl Folding {
    /// Where the hour's fold starts. When every reading the flush's rows touched is newer
    /// than all [`Folded`] into its stored block, those are added to the block's last
    /// ten-minute window and after it. Otherwise the hour's ten-minute windows from the one
    /// holding the earliest touched time are recomputed from their readings (from a
    /// checkpoint in it before that time, if there is one), the block's earlier windows kept:
    /// nothing before that time changed since the block was stored (a journal row this
    /// process did not note gives the hour's start). That spares most of a busy hour: one
    /// device's burst stored at reception times, a millisecond apart, puts up to 600,000
    /// readings of a series in a ten-minute window.
    fn start(mark: Option<Fold>, block: Option<&Vec<u8>>, hour: i64, earliest: i64) -> Result<Self, StoreError> {
        let (tens, from, newest, checkpoints) = match (mark, block) {
            (Some(mark), Some(block)) if earliest > mark.newest => {
                (decode_block(hour, block)?, mark.newest + 1, Some(mark.newest), mark.checkpoints)
            }
            (mark, Some(block)) if earliest > hour => {
                let from = TEN.window_start(earliest);
                let mut tens = decode_block(hour, block)?;
                tens.retain(|(start, _)| *start < from);
                // Nothing up to a checkpoint before `earliest` changed: go on from the last
                // one in the touched window, if any.
                let mut checkpoints = mark.map(|m| m.checkpoints).unwrap_or_default();
                checkpoints.retain(|(t, _)| *t < earliest);
                match checkpoints.last() {
                    Some(&(t, w)) if TEN.window_start(t) == from => {
                        tens.push((from, w));
                        (tens, t + 1, None, checkpoints)
                    }
                    _ => {
                        checkpoints.retain(|(t, _)| *t < from);
                        (tens, from, None, checkpoints)
                    }
                }
            }
            _ => (Vec::new(), hour, None, Vec::new()),
        };
        Ok(Self { from, tens, newest, checkpoints, since: 0, read: 0 })
    }

    /// Add the reading at `t` (oldest first), if the fold starts at or before it.
    fn add(&mut self, t: i64, value: f64, flag: u8) {
        if t < self.from {
            return;
        }
        if self.tens.last().is_none_or(|(s, _)| *s != TEN.window_start(t)) {
            self.since = 0;
        }
        add(&mut self.tens, t, value, flag);
        self.since += 1;
        if self.since == CHECKPOINT_EVERY && self.checkpoints.len() < CHECKPOINTS_MAX {
            self.since = 0;
            if let Some(&(_, w)) = self.tens.last() {
                self.checkpoints.push((t, w));
            }
        }
        self.newest = Some(t);
        self.read += 1;
    }
}

/// Add a reading at `t` to `tens` (10-minute windows, oldest first; `t` not before the last).
fn add(tens: &mut Vec<(i64, Window)>, t: i64, value: f64, flag: u8) {
    let start = TEN.window_start(t);
    if tens.last().is_none_or(|(s, _)| *s != start) {
        tens.push((start, Window::EMPTY));
    }
    if let Some((_, w)) = tens.last_mut() {
        w.add(value, t, QualityFlag::from_byte(flag));
    }
}

/// The non-empty 10-minute windows of one series in `[from, to)` (aligned), from its readings.
fn ten_minute_windows(
    readings: &impl ReadableTable<(u32, i64), &'static [u8]>,
    s: SeriesKey,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, Window)>, StoreError> {
    let mut out = Vec::new();
    for entry in readings::series(readings, s, from, to)? {
        let stored = entry?;
        add(&mut out, stored.ms, stored.value, stored.flag);
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
    readings: &impl ReadableTable<(u32, i64), &'static [u8]>,
    s: SeriesKey,
    interval: Interval,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, Window)>, StoreError> {
    let tens = ten_minute_windows(readings, s, from, to)?;
    Ok(match interval {
        Interval::TenMinutes => tens,
        Interval::Hour => coarsen(&tens, Interval::Hour),
        Interval::Day => coarsen(&coarsen(&tens, Interval::Hour), Interval::Day),
    })
}

/// A device's windows with `from <= start < to` (`from` aligned to `interval`): the stored
/// ones, with those in pending hours folded afresh from the readings.
pub(in crate::store::embedded) fn query(
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
    // Stale units: pending hours, or for day windows the days that hold them.
    let unit = if interval == Interval::Day { Interval::Day } else { Interval::Hour };
    let first = unit.window_start(from);
    let last = if to > from { unit.window_start(to - 1).saturating_add(unit.millis()) } else { first };
    // Pending first, then the snapshot: see `journal::append`.
    let stale: BTreeSet<i64> = pending.between(device, first, last).into_iter().map(|h| unit.window_start(h)).collect();
    let tx = db.begin_read().map_err(engine)?;
    let table = tx.open_table(DEVICE_WINDOWS).map_err(engine)?;
    let mut out = BTreeMap::new();
    let first_day = Interval::Day.window_start(from);
    for entry in table.range((device, q, first_day)..(device, q, to)).map_err(engine)? {
        let (k, v) = entry.map_err(engine)?;
        let day = k.value().2;
        let (day_window, blocks) = decode_day(day, v.value())?;
        match interval {
            Interval::Day => {
                out.insert(day, day_window);
            }
            Interval::Hour => {
                for (hour, block) in blocks.into_iter().filter(|(h, _)| (from..to).contains(h)) {
                    out.insert(hour, block_window(block)?);
                }
            }
            Interval::TenMinutes => {
                for (hour, block) in blocks.into_iter().filter(|(h, _)| *h + Interval::Hour.millis() > from && *h < to) {
                    out.extend(decode_block(hour, block)?.into_iter().filter(|(s, _)| (from..to).contains(s)));
                }
            }
        }
    }
    if !stale.is_empty() {
        let readings = tx.open_table(READINGS).map_err(engine)?;
        let key = series::key(&tx.open_table(SERIES).map_err(engine)?, device, q)?;
        for start in stale {
            let end = start + unit.millis();
            out.retain(|s, _| !(start..end).contains(s));
            let Some(key) = key else { continue };
            let fresh = from_readings(&readings, key, interval, start, end)?;
            out.extend(fresh.into_iter().filter(|(s, _)| (from..to).contains(s)));
        }
    }
    Ok(out.into_iter().collect())
}

/// Recompute every device window of the days in `[from, to)` (day-aligned) from the
/// readings, in the caller's transaction: at the first open of a store that has none, and
/// for `rollups rebuild`. Returns (readings read, day rows written).
pub(in crate::store::embedded) fn build(tx: &WriteTransaction, from: i64, to: i64) -> Result<(u64, usize), StoreError> {
    let readings = tx.open_table(READINGS).map_err(engine)?;
    let numbers = tx.open_table(SERIES).map_err(engine)?;
    let mut windows = tx.open_table(DEVICE_WINDOWS).map_err(engine)?;
    windows.retain(|(_, _, day), _| !(from..to).contains(&day)).map_err(engine)?;
    let mut rebuilder = Rebuilder::default();
    let mut read = 0;
    for (device, q, s) in series::all(&numbers)? {
        for entry in readings::series(&readings, s, from, to)? {
            let stored = entry?;
            rebuilder.add(&mut windows, &device, q.name(), stored.ms, stored.value, QualityFlag::from_byte(stored.flag))?;
            read += 1;
        }
    }
    rebuilder.finish(&mut windows)?;
    Ok((read, rebuilder.written))
}

/// Rebuilds device windows from readings fed in store order (series by series, oldest
/// first), writing each series' windows when the next series begins.
#[derive(Default)]
struct Rebuilder {
    series: Option<(String, &'static str)>,
    tens: Vec<(i64, Window)>,
    /// Day rows written so far.
    written: usize,
}

impl Rebuilder {
    fn add(
        &mut self,
        windows: &mut WindowsTable,
        device: &str,
        quantity: &'static str,
        t: i64,
        value: f64,
        flag: QualityFlag,
    ) -> Result<(), StoreError> {
        if self.series.as_ref().is_none_or(|(d, q)| d != device || *q != quantity) {
            self.finish(windows)?;
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
    fn finish(&mut self, windows: &mut WindowsTable) -> Result<(), StoreError> {
        let Some((device, quantity)) = self.series.take() else { return Ok(()) };
        let tens = std::mem::take(&mut self.tens);
        for day in tens.chunk_by(|a, b| Interval::Day.window_start(a.0) == Interval::Day.window_start(b.0)) {
            let start = Interval::Day.window_start(day[0].0);
            let blocks: BTreeMap<i64, Vec<u8>> = day
                .chunk_by(|a, b| Interval::Hour.window_start(a.0) == Interval::Hour.window_start(b.0))
                .map(|block| (Interval::Hour.window_start(block[0].0), encode_block(block)))
                .collect();
            windows.insert((device.as_str(), quantity, start), encode_day(start, &blocks)?.as_slice()).map_err(engine)?;
            self.written += 1;
        }
        Ok(())
    }
}

// Value layouts, little-endian. A window: count u32, excluded u32, then sum, min, max,
// last as f64 and the last value's time as i64 ms (48 bytes). An hour block: the hour's
// window, then per non-empty 10-minute window one byte (its slot in the hour, 0..5, plus
// 16 × its kind) and either the window (kind 0) or the one good reading's value (f64) and
// its time as ms after the window's start (u32) (kind 1). A day row: the day's window,
// then per hour with data its slot in the day (0..23), its block's length (u16) and the
// block. A full day at a 10-minute cadence is 3,144 bytes, so a row and its key fit a
// 4 kB page.

const WINDOW_BYTES: usize = 48;

fn encode_window(w: &Window) -> [u8; WINDOW_BYTES] {
    // A day of one series holds at most 86,400,000 readings (one per millisecond).
    let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = [0u8; WINDOW_BYTES];
    out[0..4].copy_from_slice(&count(w.count));
    out[4..8].copy_from_slice(&count(w.excluded));
    let fields = [w.sum.to_le_bytes(), w.min.to_le_bytes(), w.max.to_le_bytes(), w.last.to_le_bytes(), w.last_time.to_le_bytes()];
    for (chunk, field) in out[8..].chunks_exact_mut(8).zip(fields) {
        chunk.copy_from_slice(&field);
    }
    out
}

fn decode_window(bytes: &[u8]) -> Result<Window, StoreError> {
    let cut = || StoreError::Corrupt("a device window is cut short".into());
    let word = |i: usize| -> Result<[u8; 4], StoreError> { bytes.get(i..i + 4).and_then(|b| b.try_into().ok()).ok_or_else(cut) };
    let field = |i: usize| -> Result<[u8; 8], StoreError> {
        bytes.get(8 + i * 8..16 + i * 8).and_then(|b| b.try_into().ok()).ok_or_else(cut)
    };
    Ok(Window {
        count: u64::from(u32::from_le_bytes(word(0)?)),
        excluded: u64::from(u32::from_le_bytes(word(4)?)),
        sum: f64::from_le_bytes(field(0)?),
        min: f64::from_le_bytes(field(1)?),
        max: f64::from_le_bytes(field(2)?),
        last: f64::from_le_bytes(field(3)?),
        last_time: i64::from_le_bytes(field(4)?),
    })
}

/// Entry kinds in an hour block (the high half of the entry's first byte).
const FULL: u8 = 0;
const SINGLE: u8 = 1;

/// An hour block from the hour's non-empty 10-minute windows (oldest first).
fn encode_block(tens: &[(i64, Window)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(WINDOW_BYTES + tens.len() * (1 + WINDOW_BYTES));
    let hour = coarsen(tens, Interval::Hour).first().map(|(_, w)| *w).unwrap_or(Window::EMPTY);
    out.extend_from_slice(&encode_window(&hour));
    for (start, w) in tens {
        let slot = ((start - Interval::Hour.window_start(*start)) / TEN.millis()) as u8;
        // Kept as the reading only if rebuilding it from the reading gives the same bits.
        let mut single = Window::EMPTY;
        single.add(w.last, w.last_time, QualityFlag::Good);
        let offset = w.last_time.checked_sub(*start).and_then(|o| u32::try_from(o).ok()).filter(|o| i64::from(*o) < TEN.millis());
        match offset {
            Some(offset) if encode_window(&single) == encode_window(w) => {
                out.push(slot | SINGLE << 4);
                out.extend_from_slice(&w.last.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
            }
            _ => {
                out.push(slot | FULL << 4);
                out.extend_from_slice(&encode_window(w));
            }
        }
    }
    out
}

/// A day row from its hour blocks (by hour start, all in the day); the day's window is the
/// hours' windows merged oldest first.
fn encode_day(day: i64, blocks: &BTreeMap<i64, Vec<u8>>) -> Result<Vec<u8>, StoreError> {
    let mut w = Window::EMPTY;
    for block in blocks.values() {
        w.merge(&block_window(block)?);
    }
    let mut out = Vec::with_capacity(WINDOW_BYTES + blocks.values().map(|b| 3 + b.len()).sum::<usize>());
    out.extend_from_slice(&encode_window(&w));
    for (hour, block) in blocks {
        let len = u16::try_from(block.len()).map_err(|_| StoreError::Corrupt("an hour block over 64 kB".into()))?;
        out.push(((hour - day) / Interval::Hour.millis()) as u8);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(block);
    }
    Ok(out)
}

/// A day row's window and its hour blocks, as (hour start, block bytes).
type DayRow<'a> = (Window, Vec<(i64, &'a [u8])>);

fn decode_day(day: i64, bytes: &[u8]) -> Result<DayRow<'_>, StoreError> {
    let corrupt = || StoreError::Corrupt("a device day row is damaged".into());
    let window = decode_window(bytes)?;
    let mut rest = bytes.get(WINDOW_BYTES..).ok_or_else(corrupt)?;
    let mut blocks = Vec::with_capacity(24);
    while let [slot, a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*a, *b]));
        if *slot >= 24 || tail.len() < len {
            return Err(corrupt());
        }
        blocks.push((day + i64::from(*slot) * Interval::Hour.millis(), &tail[..len]));
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        return Err(corrupt());
    }
    Ok((window, blocks))
}

/// The hour's own window from a block.
fn block_window(bytes: &[u8]) -> Result<Window, StoreError> {
    decode_window(bytes)
}

/// The 10-minute windows of a block, as (start, window).
fn decode_block(hour: i64, bytes: &[u8]) -> Result<Vec<(i64, Window)>, StoreError> {
    let corrupt = || StoreError::Corrupt("a device hour block is damaged".into());
    let mut rest = bytes.get(WINDOW_BYTES..).ok_or_else(corrupt)?;
    let mut out = Vec::with_capacity(6);
    while let [head, tail @ ..] = rest {
        let (slot, kind) = (head & 0x0f, head >> 4);
        if slot >= 6 {
            return Err(corrupt());
        }
        let start = hour + i64::from(slot) * TEN.millis();
        match kind {
            SINGLE => {
                let value = f64::from_le_bytes(tail.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?);
                let offset = u32::from_le_bytes(tail.get(8..12).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?);
                let mut w = Window::EMPTY;
                w.add(value, start + i64::from(offset), QualityFlag::Good);
                out.push((start, w));
                rest = &tail[12..];
            }
            FULL => {
                out.push((start, decode_window(tail)?));
                rest = tail.get(WINDOW_BYTES..).ok_or_else(corrupt)?;
            }
            _ => return Err(corrupt()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregates::Scope;
    use crate::model::{DeviceId, Reading};
    use crate::store::{CommitStore, ReadStore};
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
            reason: Default::default(),
        }
    }

    fn write(store: &EmbeddedStore, readings: Vec<Reading>) {
        store.write(&WriteBatch { readings, ..Default::default() }).unwrap();
    }

    type ByInterval = Vec<(Interval, Vec<(DateTime<Utc>, Window)>)>;

    /// Every window of dev-a, all intervals, over two days, as the API would ask.
    fn all(store: &EmbeddedStore) -> ByInterval {
        let q = Quantity::by_name("air_temperature").unwrap();
        let scope = Scope::Device("dev-a".into());
        Interval::ALL
            .iter()
            .map(|i| (*i, store.rollups(&scope, q, *i, at(T0 - 86_400_000), at(T0 + 2 * 86_400_000)).unwrap()))
            .collect()
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
        let mut plan: Vec<(i64, f64, QualityFlag)> =
            (0..300).map(|i| (i * 7, (i as f64 * 0.37).sin() * 10.0, QualityFlag::Good)).collect();
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
            let done = store.flush_windows().unwrap();
            assert!(done.batches == 8 && done.windows > 0, "{done:?}");
            assert_eq!(store.pending_windows(), 0);
            assert_eq!(all(&store), folded, "stored windows must equal the folded ones bit for bit");
            check(&store, &plan, "flushed");

            // A correction and a late reading, then stop before any flush (a crash).
            plan[5].1 = 99.5;
            plan.push((-3, -40.0, QualityFlag::Good));
            write(
                &store,
                vec![reading("dev-a", plan[5].0, 99.5, QualityFlag::Good), reading("dev-a", -3, -40.0, QualityFlag::Good)],
            );
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
        assert_eq!(store.flush_windows().unwrap().batches, 1);
        assert_eq!(all(&store), folded);
        check(&store, &plan, "reopened and flushed");

        // A rebuild gives the same bits.
        let summary = store.rebuild_rollups(at(0), at(T0 * 2), &|_| None).unwrap();
        assert_eq!(summary.readings, plan.len() as u64);
        assert_eq!(all(&store), folded, "a rebuild gives the same numbers");
    }

    #[test]
    fn flushes_between_batches_of_one_hour_store_what_a_rebuild_would() {
        // Readings appended to an hour a batch at a time, each flush taking the ten-minute
        // windows before the batch's earliest from the stored block; then a late reading in
        // the hour's first window and a correction: those recompute from there.
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut plan: Vec<(i64, f64, QualityFlag)> = Vec::new();
        for batch in 0..9 {
            let chunk: Vec<(i64, f64, QualityFlag)> = (0..7)
                .map(|i| {
                    let minute = batch * 7 + i;
                    let flag = if minute % 11 == 3 { QualityFlag::Bad } else { QualityFlag::Good };
                    (minute, (minute as f64 * 0.71).cos() * 3.0, flag)
                })
                .collect();
            write(&store, chunk.iter().map(|&(m, v, f)| reading("dev-a", m, v, f)).collect());
            plan.extend(chunk);
            store.flush_windows().unwrap();
            check(&store, &plan, &format!("after batch {batch}"));
        }
        // The newest reading corrected: touched at the very time folded last.
        write(&store, vec![reading("dev-a", 62, 8.25, QualityFlag::Good)]);
        plan[62] = (62, 8.25, QualityFlag::Good);
        store.flush_windows().unwrap();
        check(&store, &plan, "newest corrected");
        write(&store, vec![reading("dev-a", 1, 55.0, QualityFlag::Good), reading("dev-a", 50, -5.0, QualityFlag::Suspect)]);
        plan[1].1 = 55.0;
        plan[50] = (50, -5.0, QualityFlag::Suspect);
        store.flush_windows().unwrap();
        check(&store, &plan, "corrected");
        let flushed = all(&store);
        store.rebuild_rollups(at(0), at(T0 * 2), &|_| None).unwrap();
        assert_eq!(all(&store), flushed, "flushed batch by batch, the windows have a rebuild's bits");
    }

    #[test]
    fn a_backlog_of_one_hour_is_read_once_however_many_steps_store_it() {
        // More batches than a flush step takes, all in one hour, a quarter of them with a
        // reading late in the hour's first minute. The first step reads the hour to its end,
        // which holds every batch's readings: the later steps have nothing to read again
        // (each read the hour again from its earliest touched time to its end).
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut written = 0u64;
        for b in 0..200i64 {
            let mut batch: Vec<Reading> = (0..5)
                .map(|k| {
                    let mut r = reading("dev-a", 0, ((b * 5 + k) as f64 * 0.37).sin() * 5.0, QualityFlag::Good);
                    r.time = at(T0 + (b * 5 + k) * 3_000);
                    r
                })
                .collect();
            if b % 4 == 3 {
                let mut late = reading("dev-a", 0, -1.5 - b as f64, QualityFlag::Suspect);
                late.time = at(T0 + 7 + b * 11);
                batch.push(late);
            }
            written += batch.len() as u64;
            write(&store, batch);
        }
        let done = store.flush_windows().unwrap();
        assert_eq!((done.batches, done.readings), (200, written), "{done:?}");
        let flushed = all(&store);
        // A late reading after that is a new row: its hour is folded again.
        let mut late = reading("dev-a", 0, 40.0, QualityFlag::Good);
        late.time = at(T0 + 5);
        write(&store, vec![late]);
        assert!(store.flush_windows().unwrap().readings > 0);
        let again = all(&store);
        assert_ne!(again, flushed, "the late reading is in the windows");
        store.rebuild_rollups(at(0), at(T0 * 2), &|_| None).unwrap();
        assert_eq!(all(&store), again, "flushed in steps, the windows have a rebuild's bits");
    }

    #[test]
    fn a_reading_before_the_folded_newest_reads_again_only_the_windows_from_its_own() {
        // An hour of a reading a minute: six ten-minute windows of ten.
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut plan: Vec<(i64, f64, QualityFlag)> =
            (0..60).map(|m| (m, (m as f64 * 0.53).sin() * 4.0, QualityFlag::Good)).collect();
        write(&store, plan.iter().map(|&(m, v, f)| reading("dev-a", m, v, f)).collect());
        let first = store.flush_windows().unwrap();
        assert_eq!(first.readings, 60, "{first:?}");
        // A correction in the last window: that window is read again, the five before are kept.
        write(&store, vec![reading("dev-a", 55, 12.5, QualityFlag::Suspect)]);
        plan[55] = (55, 12.5, QualityFlag::Suspect);
        assert_eq!(store.flush_windows().unwrap().readings, 10);
        check(&store, &plan, "corrected in the last window");
        // A new reading between two stored ones, in the fifth window: the last two are read.
        let mut late = reading("dev-a", 0, -7.25, QualityFlag::Good);
        late.time = at(T0 + 41 * MIN + 30_000);
        write(&store, vec![late]);
        assert_eq!(store.flush_windows().unwrap().readings, 21);
        // Appended after the newest: only the new reading is read.
        write(
            &store,
            vec![reading("dev-a", 59, plan[59].1, QualityFlag::Good), {
                let mut r = reading("dev-a", 0, 3.0, QualityFlag::Good);
                r.time = at(T0 + 59 * MIN + 1);
                r
            }],
        );
        assert_eq!(store.flush_windows().unwrap().readings, 1);
        // After a restart the stored block is as good: a correction noted by this process
        // reads its window again (ten readings and the one appended).
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        write(&store, vec![reading("dev-a", 52, 0.5, QualityFlag::Good)]);
        assert_eq!(store.flush_windows().unwrap().readings, 11);
        let flushed = all(&store);
        store.rebuild_rollups(at(0), at(T0 * 2), &|_| None).unwrap();
        assert_eq!(all(&store), flushed, "windows read again from the touched one have a rebuild's bits");
        assert_eq!(store.flush_windows().unwrap().readings, 0);
    }

    #[test]
    fn a_burst_among_readings_measured_ahead_is_folded_on_from_checkpoints_with_a_rebuilds_bits() {
        // A burst stored a millisecond apart in a ten-minute window that also holds readings
        // measured ahead of it (a second apart, later in the window): each batch of the
        // burst is earlier than the newest folded reading.
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let at_ms = |ms: i64, value: f64| {
            let mut r = reading("dev-a", 0, value, QualityFlag::Good);
            r.time = at(T0 + ms);
            r
        };
        const BATCH: i64 = 3000;
        const AHEAD: i64 = 200;
        for k in 0..8 {
            let mut batch: Vec<Reading> =
                (0..BATCH).map(|i| at_ms(k * BATCH + i, ((k * BATCH + i) as f64 * 0.37).sin())).collect();
            if k == 0 {
                batch.extend((0..AHEAD).map(|j| at_ms(60_000 + j * 1000, j as f64 / 7.0)));
            }
            write(&store, batch);
            let read = store.flush_windows().unwrap().readings;
            // Without checkpoints a flush read the window from its start: all of the burst so far.
            let bound = if k == 0 { BATCH + AHEAD } else { BATCH + CHECKPOINT_EVERY as i64 + AHEAD };
            assert!(read as i64 <= bound, "flush {k} read {read} readings (at most {bound})");
        }
        let flushed = all(&store);
        store.rebuild_rollups(at(0), at(T0 * 2), &|_| None).unwrap();
        assert_eq!(all(&store), flushed, "folded on from checkpoints, the windows have a rebuild's bits");
    }

    #[test]
    fn a_flush_stores_every_quantity_of_a_touched_device_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let names = ["air_temperature", "relative_humidity", "battery_voltage"];
        let mut readings = Vec::new();
        for (i, name) in names.iter().enumerate() {
            for minute in [0, 50, 70, 1500] {
                let mut r = reading("dev-q", minute, i as f64 + minute as f64 / 100.0, QualityFlag::Good);
                r.quantity = Quantity::by_name(name).unwrap();
                readings.push(r);
            }
        }
        readings.push(reading("dev-other", 5, 1.0, QualityFlag::Good));
        write(&store, readings);
        let scope = Scope::Device("dev-q".into());
        let ask = |name: &str, i: Interval| {
            store.rollups(&scope, Quantity::by_name(name).unwrap(), i, at(T0), at(T0 + 2 * 86_400_000)).unwrap()
        };
        let folded: Vec<_> = names.iter().flat_map(|n| Interval::ALL.map(|i| ask(n, i))).collect();
        assert!(folded.iter().all(|w| !w.is_empty()));
        let done = store.flush_windows().unwrap();
        assert_eq!(done.windows, 2 * 3 + 1, "a day row per quantity and day, and dev-other's");
        assert_eq!(store.pending_windows(), 0);
        let stored: Vec<_> = names.iter().flat_map(|n| Interval::ALL.map(|i| ask(n, i))).collect();
        assert_eq!(stored, folded);
        // A new reading of one quantity: the device's other quantities keep their rows.
        write(&store, vec![reading("dev-q", 71, 5.0, QualityFlag::Good)]);
        assert_eq!(store.flush_windows().unwrap().windows, 1);
    }

    #[test]
    fn a_store_from_before_device_windows_gets_them_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let plan: Vec<(i64, f64, QualityFlag)> = (0..50).map(|i| (i * 37, i as f64, QualityFlag::Good)).collect();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            write(&store, plan.iter().map(|&(m, v, f)| reading("dev-a", m, v, f)).collect());
            // What an older version left: readings, no journal, no device windows table.
            store
                .with_db(|db| {
                    let tx = db.begin_write().unwrap();
                    tx.delete_table(WINDOW_JOURNAL).unwrap();
                    tx.delete_table(DEVICE_WINDOWS).unwrap();
                    tx.commit().unwrap();
                    Ok(())
                })
                .unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.pending_windows(), 0, "nothing pending: the windows are stored");
        check(&store, &plan, "built at open");
    }

    #[test]
    fn a_query_overlays_only_its_own_series_pending_windows() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        write(&store, vec![reading("dev-a", 0, 1.0, QualityFlag::Good), reading("dev-ab", 0, 5.0, QualityFlag::Good)]);
        store.flush_windows().unwrap();
        write(&store, vec![reading("dev-ab", 1, 7.0, QualityFlag::Good)]);
        check(&store, &[(0, 1.0, QualityFlag::Good)], "other series pending");
        write(&store, vec![reading("dev-a", 2, 3.0, QualityFlag::Good)]);
        check(&store, &[(0, 1.0, QualityFlag::Good), (2, 3.0, QualityFlag::Good)], "own series pending");
    }

    #[test]
    fn hour_blocks_round_trip_bit_for_bit() {
        let h = 1_780_272_000_000;
        let one = |v: f64, t: i64, f: QualityFlag| {
            let mut w = Window::EMPTY;
            w.add(v, t, f);
            w
        };
        let mut two = one(1.5, h + 1, QualityFlag::Good);
        two.add(-2.0, h + 2, QualityFlag::Suspect);
        let tens = vec![
            (h, two),
            (h + 600_000, one(-0.0, h + 600_001, QualityFlag::Good)),
            (h + 1_200_000, one(9.0, h + 1_200_000, QualityFlag::Bad)),
            (h + 3_000_000, one(f64::MAX, h + 3_599_999, QualityFlag::Suspect)),
        ];
        let bytes = encode_block(&tens);
        assert_eq!(
            bytes.len(),
            WINDOW_BYTES + 2 * (1 + WINDOW_BYTES) + 2 * 13,
            "single readings are kept short: {}",
            bytes.len()
        );
        let back = decode_block(h, &bytes).unwrap();
        assert_eq!(back.len(), tens.len());
        for ((s1, w1), (s2, w2)) in back.iter().zip(&tens) {
            assert_eq!((s1, encode_window(w1)), (s2, encode_window(w2)));
        }
        assert_eq!(encode_window(&block_window(&bytes).unwrap()), encode_window(&coarsen(&tens, Interval::Hour)[0].1));
        for cut in 0..bytes.len() {
            // Never a panic; a cut on an entry boundary is a valid shorter block.
            let _ = decode_block(h, &bytes[..cut]);
        }
        assert!(decode_block(h, &bytes[..bytes.len() - 1]).is_err());
        assert!(decode_block(h, &bytes[..10]).is_err());

        // A day row: its window is the hours' merged oldest first; blocks come back as stored.
        let day = Interval::Day.window_start(h);
        let later = encode_block(&[(h + 7_200_000, one(4.0, h + 7_200_001, QualityFlag::Good))]);
        let blocks = BTreeMap::from([(h, bytes.clone()), (h + 7_200_000, later.clone())]);
        let row = encode_day(day, &blocks).unwrap();
        let (w, back) = decode_day(day, &row).unwrap();
        assert_eq!(back, vec![(h, bytes.as_slice()), (h + 7_200_000, later.as_slice())]);
        let mut want = Window::EMPTY;
        want.merge(&block_window(&bytes).unwrap());
        want.merge(&block_window(&later).unwrap());
        assert_eq!(encode_window(&w), encode_window(&want));
        assert!(decode_day(day, &row[..row.len() - 1]).is_err());
        let mut bad_slot = row.clone();
        bad_slot[WINDOW_BYTES] = 24;
        assert!(decode_day(day, &bad_slot).is_err());

        // A full day at a 10-minute cadence fits a 4 kB page with its key.
        let tens: Vec<(i64, Window)> =
            (0..144).map(|i| (day + i * 600_000, one(i as f64 * 0.1, day + i * 600_000 + 7, QualityFlag::Good))).collect();
        let full: BTreeMap<i64, Vec<u8>> =
            tens.chunks(6).map(|hour| (Interval::Hour.window_start(hour[0].0), encode_block(hour))).collect();
        assert_eq!(encode_day(day, &full).unwrap().len(), 3144);
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
