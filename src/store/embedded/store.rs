//! The embedded store (redb): opening, reopening after I/O errors, the batch commit, and the storage boundary's traits on top of the table modules beside it.
//!
//! redb was chosen by measurement (see the design notes in docs/data-model.md): fsync'd commits, a
//! pure-Rust build, and the fastest range queries of the engines tried. Readings are a row
//! per device and millisecond (`readings`), so writing the same reading twice overwrites it:
//! redelivered messages are idempotent.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableHandle};

use super::rollups::journal::{Pending, Touched};
use super::rollups::{self, FlushSummary, RebuildSummary};
use super::tables::{
    DEAD_LETTERS, DEAD_LETTER_DIGESTS, DEVICE_DISTRICT, DEVICE_WINDOWS, EXTENTS, FRAME_COUNTERS, LAST_SEEN, OUTBOX, READINGS,
    ROLLUPS, SERIES, SERIES_NAMES, WINDOW_JOURNAL,
};
use super::{citizens, dead_letters, frame_counters, outbox, readings, series, upgrade};
use crate::aggregates::{Interval, RollupDelta, Scope, Window};
use crate::citizens::CitizenSensor;
use crate::model::{DeviceId, QualityFlag, Quantity, Reading};
use crate::quality::{Neighbours, SeriesLookup};
use crate::sources::lorawan::FrameCounter;
use crate::store::batch::WriteBatch;
use crate::store::boundary::{
    engine, millis, AdminStore, BackupError, CitizenStore, CommitStore, Outbox, ReadStore, Removed, Snapshot, StoreError,
    StoreHealth,
};
use crate::store::dead_letter::{DeadLetter, ReplayOutcome};
use crate::store::spans::{self, Spans};
use crate::store::Spooled;

/// Journal rows one flush transaction handles at most, so a long backlog (after a restart
/// or an outage) is stored in steps and never holds up ingest's commits for long.
const FLUSH_BATCHES: usize = 64;

/// Shortest time between a failed attempt to reopen the database and the next: a reopen may
/// have to repair the file (read all of it), and every reader would otherwise try again.
/// (After a reopen that worked, only a writer's next I/O error calls for another, so writers'
/// own retry pace bounds them.)
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// Page cache of a store opened without a size (tools, tests, benchmarks): redb's own
/// default, 1 GiB. A smaller cache bounds the process's memory but costs throughput once the
/// store outgrows it (BENCHMARKS.md, "Page cache"): `store.cache_mb` chooses.
pub const DEFAULT_CACHE_BYTES: usize = 1024 * 1024 * 1024;

/// Readings a late reading's neighbour lookup reads from its time on, when no kept stretch
/// covers it: enough for the late readings that follow it in a batch, few enough that a
/// lone late reading costs little more than reading its two neighbours.
const NEIGHBOUR_PAGE: usize = 64;

/// The embedded store. Cheap to share: wrap it in an `Arc`; its calls block, so call them
/// from `spawn_blocking` in async code.
pub struct EmbeddedStore {
    /// The database file.
    path: PathBuf,
    /// redb's page cache in bytes (also used when the file is opened again).
    cache_bytes: usize,
    /// The open database; `None` while a reopen after an I/O error has not succeeded yet.
    /// Every use goes through [`Self::with_db`], which holds the read lock for as long as the
    /// transaction lives, so the reopen (write lock) never closes the file under a transaction.
    db: RwLock<Option<Database>>,
    /// Set by an I/O error: redb then refuses every later transaction ("previous I/O error")
    /// until the database is closed and opened again, which the next use does.
    poisoned: AtomicBool,
    /// When a reopen last failed, and why the store is closed: the I/O error that poisoned
    /// it, or the reopen's own failure.
    reopen: Mutex<(Option<Instant>, String)>,
    /// Reopens after I/O errors that succeeded.
    reopens: AtomicU64,
    /// Whether the last write transaction committed (see [`StoreHealth`]).
    health: Mutex<Option<Failure>>,
    /// Keep rollups up to date on every write (always, but for measuring what they cost).
    rollups: bool,
    /// Device windows journaled but not flushed yet.
    pending: Pending,
    /// Held by the flush in progress (see `rollups::devices::flush`).
    flushing: std::sync::Mutex<()>,
    /// What this process's flushes folded into stored device hour blocks.
    folded: rollups::devices::Folded,
    /// Device → district pairs known to be stored, so a batch looks up only new ones.
    /// Filled after commits only, so it never holds a pair a failed transaction wrote.
    districts_stored: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Series numbers known to be committed; filled after commits only.
    series_committed: std::sync::Mutex<series::Committed>,
    /// Stretches of series read for late readings' neighbours, kept in step with commits.
    spans: Spans,
    /// Held by a write that touches readings from its transaction until the spans have
    /// followed it, so two such writes can't update the spans in the other order.
    readings_writer: std::sync::Mutex<()>,
}

/// What a write transaction may do to stored readings, which decides what becomes of the
/// kept [spans](crate::store::spans).
#[derive(Clone, Copy)]
pub(super) enum Touches<'a> {
    /// Nothing in the readings table: the spans stay as they are.
    Nothing,
    /// Writes exactly these readings and removes none: if it commits, the spans take them in.
    These(&'a [Reading]),
    /// Removes readings, or writes ones not named here: the spans are forgotten.
    Any,
}

/// The first of a run of failed write transactions, and the latest error.
#[derive(Debug, Clone)]
struct Failure {
    since: DateTime<Utc>,
    error: String,
}

impl EmbeddedStore {
    /// Readings of one series with `from <= time < to`, at most `limit`, oldest or newest first.
    fn series(
        &self,
        device: &DeviceId,
        quantity: Quantity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<Reading>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let Some(s) = series::key(&tx.open_table(SERIES).map_err(engine)?, device.as_str(), quantity.name())? else {
                return Ok(Vec::new());
            };
            let table = tx.open_table(READINGS).map_err(engine)?;
            let range = readings::series(&table, s, from.timestamp_millis(), to.timestamp_millis())?;
            let entries: Box<dyn Iterator<Item = _>> = if newest_first { Box::new(range.rev()) } else { Box::new(range) };
            let mut out = Vec::new();
            for entry in entries.take(limit) {
                out.push(to_reading(device, quantity, &entry?)?);
            }
            Ok(out)
        })
    }

    /// Open (or create) the store in `dir` with a page cache of [`DEFAULT_CACHE_BYTES`].
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Open (or create) the store in `dir`; redb may cache up to `cache_bytes` of its pages.
    pub fn open_with_cache(dir: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory { path: dir.display().to_string(), source })?;
        let db = create(&dir.join("messnetz.redb"), cache_bytes)?;
        // Create the tables up front so readers never meet a missing table.
        let tx = db.begin_write().map_err(engine)?;
        let has_device_windows = tx.list_tables().map_err(engine)?.any(|t| t.name() == DEVICE_WINDOWS.name());
        let has_letter_digests = tx.list_tables().map_err(engine)?.any(|t| t.name() == DEAD_LETTER_DIGESTS.name());
        tx.open_table(READINGS).map_err(engine)?;
        tx.open_table(EXTENTS).map_err(engine)?;
        tx.open_table(SERIES).map_err(engine)?;
        tx.open_table(SERIES_NAMES).map_err(engine)?;
        tx.open_table(LAST_SEEN).map_err(engine)?;
        tx.open_table(DEAD_LETTERS).map_err(engine)?;
        tx.open_table(DEAD_LETTER_DIGESTS).map_err(engine)?;
        tx.open_table(OUTBOX).map_err(engine)?;
        tx.open_table(ROLLUPS).map_err(engine)?;
        tx.open_table(DEVICE_DISTRICT).map_err(engine)?;
        tx.open_table(FRAME_COUNTERS).map_err(engine)?;
        tx.open_table(WINDOW_JOURNAL).map_err(engine)?;
        // A store from before series numbers: its readings move to the series-keyed table.
        let moved = series::migrate(&tx)?;
        if moved > 0 {
            tracing::info!(readings = moved, "readings keyed by series number (first start of this version)");
        }
        // A store from before letters were kept once per message: index the ones it keeps.
        if !has_letter_digests {
            dead_letters::index_all(&tx)?;
        }
        tx.commit().map_err(engine)?;
        // A store from before a row per uplink: its readings move into rows, in steps.
        upgrade::rows_per_uplink(&db)?;
        // A store from before device windows were stored: build them from its readings, in
        // the transaction that creates their table (an interrupted build runs again at the
        // next start).
        if !has_device_windows {
            let tx = db.begin_write().map_err(engine)?;
            let (_, rows) = rollups::devices::build(&tx, i64::MIN, i64::MAX)?;
            if rows > 0 {
                tracing::info!(
                    day_rows = rows,
                    "device rollup windows built from the stored readings (first start of this version)"
                );
            }
            tx.commit().map_err(engine)?;
        }
        let pending = Pending::load(&db)?;
        Ok(Self {
            path: dir.join("messnetz.redb"),
            cache_bytes,
            db: RwLock::new(Some(db)),
            poisoned: AtomicBool::new(false),
            reopen: Mutex::new((None, String::new())),
            reopens: AtomicU64::new(0),
            health: Mutex::new(None),
            rollups: true,
            pending,
            flushing: Default::default(),
            folded: Default::default(),
            districts_stored: Default::default(),
            series_committed: Default::default(),
            spans: Default::default(),
            readings_writer: Default::default(),
        })
    }

    /// Run `f` on the open database: the one way in for every read and write. After an I/O
    /// error (a full disk) redb refuses everything until the file is closed and opened again;
    /// the error marks the store poisoned, and the next call reopens it first (after a failed
    /// reopen, not before [`REOPEN_EVERY`]), so ingest's retries resume by themselves once
    /// space returns. Must not be nested: the read lock is held while `f` runs.
    pub(super) fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        let Some(db) = guard.as_ref() else {
            // Another thread's reopen failed in the meantime.
            return Err(StoreError::Closed(self.closed_because()));
        };
        let result = f(db);
        if let Err(e) = &result {
            // Marked with the read lock still held, so it is this database that gets reopened.
            if e.is_io() && !self.poisoned.load(Ordering::Acquire) {
                self.reopen.lock().unwrap_or_else(|p| p.into_inner()).1 = e.to_string();
                self.poisoned.store(true, Ordering::Release);
                tracing::warn!(error = %e, "store I/O error: the database will be reopened before its next use");
            }
        }
        drop(guard);
        result
    }

    /// Like [`Self::with_db`] for a write transaction: its outcome is the store's health.
    /// `f` returns whether it committed (a flush with nothing to do does not); `touches`
    /// says what it does to readings, so the kept spans follow.
    pub(super) fn with_write<T>(
        &self,
        touches: Touches<'_>,
        f: impl FnOnce(&Database) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let writer = match touches {
            Touches::Nothing => None,
            _ => Some(self.readings_writer.lock().unwrap_or_else(|p| p.into_inner())),
        };
        let result = self.with_db(f);
        match (touches, &result) {
            (Touches::Nothing, _) => {}
            (Touches::These(readings), Ok((_, true))) => self.spans.committed(readings),
            // Whatever the outcome: it may have committed readings before it failed.
            _ => self.spans.forget(),
        }
        drop(writer);
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok((_, true)) => {
                if let Some(failure) = health.take() {
                    tracing::info!(failing_since = %failure.since, "store writable again");
                }
            }
            Ok((_, false)) => {}
            // A record that cannot be encoded or read is that record's problem, not the store's.
            Err(StoreError::Corrupt(_)) => {}
            Err(e) => {
                let error = e.to_string();
                match health.as_mut() {
                    Some(failure) => failure.error = error,
                    None => *health = Some(Failure { since: Utc::now(), error }),
                }
            }
        }
        result.map(|(t, _)| t)
    }

    /// Close the poisoned database and open it again (redb repairs it if it must). The
    /// in-memory state derived from the database is rebuilt from what is on disk: the
    /// pending window hours (a failed transaction may have noted hours its journal row never
    /// stored) and the districts known to be stored.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if !self.poisoned.load(Ordering::Acquire) {
            return Ok(()); // another thread reopened it while this one waited
        }
        {
            let reopen = self.reopen.lock().unwrap_or_else(|p| p.into_inner());
            if reopen.0.is_some_and(|failed| failed.elapsed() < REOPEN_EVERY) {
                return Err(StoreError::Closed(reopen.1.clone()));
            }
        }
        // No transaction is live (they all hold the read lock), so this closes the file now.
        drop(slot.take());
        let opened = create(&self.path, self.cache_bytes).and_then(|db| {
            self.pending.reload(&db)?;
            self.folded.clear();
            Ok(db)
        });
        match opened {
            Ok(db) => {
                *slot = Some(db);
                self.districts_stored.lock().unwrap_or_else(|p| p.into_inner()).clear();
                self.series_committed.lock().unwrap_or_else(|p| p.into_inner()).clear();
                self.reopen.lock().unwrap_or_else(|p| p.into_inner()).0 = None;
                self.poisoned.store(false, Ordering::Release);
                self.reopens.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %self.path.display(), "store reopened after an I/O error");
                Ok(())
            }
            Err(e) => {
                let why = e.to_string();
                tracing::warn!(error = %why, "cannot reopen the store yet; trying again at its next use");
                *self.reopen.lock().unwrap_or_else(|p| p.into_inner()) = (Some(Instant::now()), why.clone());
                Err(StoreError::Closed(why))
            }
        }
    }

    fn closed_because(&self) -> String {
        self.reopen.lock().unwrap_or_else(|p| p.into_inner()).1.clone()
    }

    /// Write a batch into an open transaction (the caller commits): a dead letter's replay
    /// removes the letter in the same transaction as the readings it produced.
    /// Returns the letters' ids and the series numbers taken from the table, for
    /// [`Self::committed`] once the transaction has committed.
    pub(super) fn write_in(
        &self,
        tx: &redb::WriteTransaction,
        batch: &WriteBatch,
        outbox_rows: &outbox::Rows<'_>,
    ) -> Result<(Vec<u64>, Vec<series::Found>), StoreError> {
        let mut ids = Vec::with_capacity(batch.dead_letters.len());
        // New readings go into the district rollups as deltas; a reading that replaces a
        // different stored value makes its district windows be recomputed; a repeated one
        // changes nothing. Device windows of new and changed readings go to the journal.
        let mut delta = RollupDelta::default();
        let mut changed = Vec::new();
        let mut touched = Touched::default();
        let found;
        {
            let committed = self.series_committed.lock().unwrap_or_else(|p| p.into_inner());
            let mut numbering = series::Numbering::open(tx, &committed)?;
            // Rows are written in key order, so that consecutive inserts land in the same leaf
            // (13 % less CPU for a batch from 1,000 devices when each reading was a row,
            // BENCHMARKS.md). The batch's position last keeps a repeated reading's later
            // value the one that stays, as in batch order.
            let mut keyed = Vec::with_capacity(batch.readings.len());
            for (k, r) in batch.readings.iter().enumerate() {
                let s = numbering.get(r.device.as_str(), r.quantity)?;
                keyed.push((s.device, r.time.timestamp_millis(), s.series, k));
            }
            let keyed = in_key_order(keyed);
            let rows: Vec<readings::ToStore<'_>> = keyed
                .iter()
                .map(|&(d, ms, series, k)| {
                    let r = &batch.readings[k];
                    let entry =
                        readings::Entry { series, value: r.value, flag: r.flag.to_byte(), reason: Cow::Borrowed(&r.reason) };
                    readings::ToStore { key: (d, ms), entry }
                })
                .collect();
            readings::write(&mut readings::open(tx)?, &rows, |i, old| {
                if !self.rollups {
                    return;
                }
                let r = &batch.readings[keyed[i].3];
                let district = batch.districts.get(&r.device).map(String::as_str);
                match old {
                    None => delta.add(r, district),
                    Some((v, f)) if v.to_bits() == r.value.to_bits() && f == r.flag.to_byte() => return,
                    Some((v, f)) => changed.push(rollups::districts::Replaced {
                        device: r.device.as_str(),
                        district: district.unwrap_or(""),
                        quantity: r.quantity,
                        ms: r.time.timestamp_millis(),
                        old: (v, QualityFlag::from_byte(f)),
                        new: (r.value, r.flag),
                    }),
                }
                touched.add(r.device.as_str(), r.time.timestamp_millis());
            })?;
            found = std::mem::take(&mut numbering.found);
        }
        let new_districts: Vec<(&str, &str)> = {
            let known = self.districts_stored.lock().unwrap_or_else(|p| p.into_inner());
            batch
                .districts
                .iter()
                .filter(|(d, z)| known.get(d.as_str()) != Some(*z))
                .map(|(d, z)| (d.as_str(), z.as_str()))
                .collect()
        };
        if !new_districts.is_empty() {
            rollups::districts::set_districts(tx, new_districts.iter().copied())?;
        }
        rollups::districts::apply(tx, &delta)?;
        rollups::journal::append(tx, &self.pending, &mut touched)?;
        if !changed.is_empty() {
            let written = batch.readings.iter().filter_map(|r| {
                Some(rollups::districts::Written {
                    device: r.device.as_str(),
                    district: batch.districts.get(&r.device)?.as_str(),
                    quantity: r.quantity,
                    ms: r.time.timestamp_millis(),
                    value: r.value,
                    flag: r.flag,
                })
            });
            rollups::districts::recompute(tx, &changed, written)?;
        }
        if !batch.seen.is_empty() {
            // A batch holds an entry per uplink: each device's newest is looked up and written once.
            let mut newest: rustc_hash::FxHashMap<&str, i64> = rustc_hash::FxHashMap::default();
            for (device, time) in &batch.seen {
                let t = newest.entry(device.as_str()).or_insert(i64::MIN);
                *t = (*t).max(time.timestamp_millis());
            }
            let mut seen = tx.open_table(LAST_SEEN).map_err(engine)?;
            for (device, t) in newest {
                let newer = match seen.get(device).map_err(engine)? {
                    Some(old) => old.value() < t,
                    None => true,
                };
                if newer {
                    seen.insert(device, t).map_err(engine)?;
                }
            }
        }
        ids.extend(dead_letters::append(tx, &batch.dead_letters)?);
        // The InfluxDB spool rides in the same commit: stored here == spooled for InfluxDB.
        // (`outbox_rows` are `batch.outbox` cut into rows, see [`outbox::rows`].)
        outbox::append(tx, outbox_rows)?;
        if !batch.frame_counters.is_empty() {
            frame_counters::write(tx, &batch.frame_counters)?;
        }
        Ok((ids, found))
    }

    /// Note what a committed batch stored that later batches need not look up: its device
    /// districts and its series numbers (call after the commit only).
    pub(super) fn committed(&self, batch: &WriteBatch, found: Vec<series::Found>) {
        self.series_committed.lock().unwrap_or_else(|p| p.into_inner()).add(found);
        let mut known = self.districts_stored.lock().unwrap_or_else(|p| p.into_inner());
        for (device, district) in &batch.districts {
            if known.get(device.as_str()) != Some(district) {
                known.insert(device.as_str().to_owned(), district.clone());
            }
        }
    }

    /// The nearest readings not flagged bad strictly before and strictly after `time`, within
    /// `within` on either side (both in milliseconds), as (time, value): a late reading's
    /// quality check asks this. Answered from the stretches of the series read since the last
    /// commit where one covers `time` (a burst of late readings of one series reads the table
    /// once), read otherwise ([`spans`](crate::store::spans)).
    pub fn neighbours(&self, device: &DeviceId, quantity: Quantity, t: i64, within: i64) -> Result<Neighbours, StoreError> {
        self.spans.neighbours(device, quantity, t, within, || {
            self.with_db(|db| {
                let tx = db.begin_read().map_err(engine)?;
                let (from_ms, to_ms) = spans::window(t, within);
                let Some(s) = series::key(&tx.open_table(SERIES).map_err(engine)?, device.as_str(), quantity.name())? else {
                    return Ok(spans::Span::of(t, (from_ms, to_ms), NEIGHBOUR_PAGE, Vec::new()));
                };
                let table = tx.open_table(READINGS).map_err(engine)?;
                let bad = QualityFlag::Bad.to_byte();
                let mut points = Vec::new();
                for entry in readings::series(&table, s, from_ms, t)?.rev() {
                    let stored = entry?;
                    if stored.flag != bad {
                        points.push((stored.ms, stored.value));
                        break;
                    }
                }
                let mut ahead = 0;
                for entry in readings::series(&table, s, t, to_ms.saturating_add(1))? {
                    let stored = entry?;
                    if stored.flag != bad {
                        points.push((stored.ms, stored.value));
                        ahead += 1;
                        if ahead == NEIGHBOUR_PAGE {
                            break;
                        }
                    }
                }
                Ok(spans::Span::of(t, (from_ms, to_ms), NEIGHBOUR_PAGE, points))
            })
        })
    }

    /// The first millisecond at or after `from` at which `device` has no reading of any
    /// quantity: each series is read on from there while its milliseconds follow each other.
    pub fn free_from(&self, device: &DeviceId, from: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let table = tx.open_table(READINGS).map_err(engine)?;
            let mut t = from.timestamp_millis();
            let Some(d) = series::device(&tx.open_table(SERIES).map_err(engine)?, device.as_str())? else {
                return millis(t);
            };
            // A device's readings at one millisecond are one row: the rows that follow each other.
            for entry in table.range((d, t)..=(d, i64::MAX)).map_err(engine)? {
                let (k, _) = entry.map_err(engine)?;
                if k.value().1 != t {
                    break;
                }
                t += 1;
            }
            millis(t)
        })
    }

    /// The readings of `device` at `time`'s millisecond, of every quantity.
    pub fn at(&self, device: &DeviceId, time: DateTime<Utc>) -> Result<Vec<Reading>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let table = tx.open_table(READINGS).map_err(engine)?;
            let t = time.timestamp_millis();
            let numbers = tx.open_table(SERIES).map_err(engine)?;
            let Some(d) = series::device(&numbers, device.as_str())? else { return Ok(Vec::new()) };
            let mut out = Vec::new();
            for (q, n) in series::of_device(&numbers, device.as_str())? {
                if let Some(stored) = readings::at(&table, readings::SeriesKey { device: d, series: n }, t)? {
                    out.push(to_reading(device, q, &stored)?);
                }
            }
            Ok(out)
        })
    }

    /// Dead letters with an id above `after`, oldest first, at most `limit`.
    pub fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let table = tx.open_table(DEAD_LETTERS).map_err(engine)?;
            let mut out = Vec::new();
            for entry in table.range(after.saturating_add(1)..).map_err(engine)?.take(limit) {
                let (_, v) = entry.map_err(engine)?;
                out.push(serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
            Ok(out)
        })
    }

    /// Turn rollup upkeep off or on: only for benchmarks that measure what it costs.
    pub fn set_rollups_enabled(&mut self, on: bool) {
        self.rollups = on;
    }

    /// Recompute the rollups of `[from, to)` (widened to whole UTC days) from the stored
    /// readings. `district_of` gives the district of each open device.
    pub fn rebuild_rollups(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        district_of: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RebuildSummary, StoreError> {
        self.flush_windows()?;
        let rebuilt = self.with_write(Touches::Nothing, |db| {
            Ok((rollups::districts::rebuild(db, from.timestamp_millis(), to.timestamp_millis(), district_of)?, true))
        });
        // The rebuild wrote device blocks of its own: the next flush recomputes what it touches.
        self.folded.clear();
        rebuilt
    }

    /// Store the journaled device windows, in steps of at most `FLUSH_BATCHES` rows, each
    /// its own transaction, until a step finds fewer: rows that arrive meanwhile wait for the
    /// next call, so a flush during a burst does not chase ingest batch by batch (measured:
    /// chasing cost about 30 % of store throughput instead of 5 %). With ingest stopped,
    /// this empties the journal. The gateway calls it every `store.window_flush_ms`;
    /// queries are current either way.
    pub fn flush_windows(&self) -> Result<FlushSummary, StoreError> {
        let mut total = FlushSummary::default();
        loop {
            let done = self.with_write(Touches::Nothing, |db| {
                let done = rollups::devices::flush(db, &self.pending, &self.folded, &self.flushing, FLUSH_BATCHES)?;
                Ok((done, done.batches > 0))
            })?;
            total.batches += done.batches;
            total.windows += done.windows;
            total.readings += done.readings;
            if done.batches < FLUSH_BATCHES {
                return Ok(total);
            }
        }
    }

    /// Space of the main tables, as (table, bytes of keys and values, bytes of pages in
    /// all: with branch pages and fragmentation): what readings and rollups take on disk.
    pub fn table_space(&self) -> Result<Vec<(&'static str, u64, u64)>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let space = |s: redb::TableStats| (s.stored_bytes(), s.stored_bytes() + s.metadata_bytes() + s.fragmented_bytes());
            let readings = space(tx.open_table(READINGS).map_err(engine)?.stats().map_err(engine)?);
            let devices = space(tx.open_table(DEVICE_WINDOWS).map_err(engine)?.stats().map_err(engine)?);
            let districts = space(tx.open_table(ROLLUPS).map_err(engine)?.stats().map_err(engine)?);
            let outbox = space(tx.open_table(OUTBOX).map_err(engine)?.stats().map_err(engine)?);
            Ok(vec![
                ("readings", readings.0, readings.1),
                ("device windows", devices.0, devices.1),
                ("district windows", districts.0, districts.1),
                ("InfluxDB spool", outbox.0, outbox.1),
            ])
        })
    }

    /// Number of stored readings (all devices).
    pub fn count_readings(&self) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            readings::count(&tx.open_table(READINGS).map_err(engine)?)
        })
    }
}

/// Open (or create) the database file with a page cache of `cache_bytes`.
fn create(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    redb::Builder::new().set_cache_size(cache_bytes).create(path).map_err(engine)
}

fn to_reading(device: &DeviceId, quantity: Quantity, stored: &readings::Stored<'_>) -> Result<Reading, StoreError> {
    Ok(Reading {
        device: device.clone(),
        quantity,
        value: stored.value,
        time: millis(stored.ms)?,
        flag: QualityFlag::from_byte(stored.flag),
        reason: stored.reason()?.into_owned().into(),
    })
}

impl ReadStore for EmbeddedStore {
    /// Whether the store takes writes (the last write transaction committed).
    fn health(&self) -> StoreHealth {
        let failure = self.health.lock().unwrap_or_else(|p| p.into_inner()).clone();
        StoreHealth {
            writable: failure.is_none(),
            error: failure.as_ref().map(|f| f.error.clone()),
            since: failure.map(|f| f.since),
            reopens: self.reopens.load(Ordering::Relaxed),
        }
    }

    /// The newest reading of every quantity of a device.
    fn latest(&self, device: &DeviceId) -> Result<Vec<Reading>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let table = tx.open_table(READINGS).map_err(engine)?;
            let numbers = tx.open_table(SERIES).map_err(engine)?;
            let Some(d) = series::device(&numbers, device.as_str())? else { return Ok(Vec::new()) };
            let extents = readings::extents(&tx.open_table(EXTENTS).map_err(engine)?, d)?;
            let mut out = Vec::new();
            for (q, n) in series::of_device(&numbers, device.as_str())? {
                let Some(&(_, _, last)) = extents.iter().find(|e| e.0 == n) else { continue };
                // Retention removes a series' readings oldest first: its newest gone, all are.
                if let Some(stored) = readings::at(&table, readings::SeriesKey { device: d, series: n }, last)? {
                    out.push(to_reading(device, q, &stored)?);
                }
            }
            Ok(out)
        })
    }

    /// Readings of one series with `from <= time < to`, oldest first, at most `limit`.
    fn readings(
        &self,
        device: &DeviceId,
        quantity: Quantity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Reading>, StoreError> {
        self.series(device, quantity, from, to, limit, false)
    }

    /// Readings of one series with `from <= time < to`, newest first, at most `limit`: the
    /// same range as [`ReadStore::readings`], read from its end (a newest-first page reads only
    /// what it returns).
    fn readings_newest_first(
        &self,
        device: &DeviceId,
        quantity: Quantity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Reading>, StoreError> {
        self.series(device, quantity, from, to, limit, true)
    }

    /// When the device was last heard from.
    fn last_seen(&self, device: &DeviceId) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let table = tx.open_table(LAST_SEEN).map_err(engine)?;
            match table.get(device.as_str()).map_err(engine)? {
                Some(t) => Ok(Some(millis(t.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Rollup windows of a device or district with `from <= start < to`, oldest first.
    fn rollups(
        &self,
        scope: &Scope,
        quantity: Quantity,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, Window)>, StoreError> {
        let (from, to) = (from.timestamp_millis(), to.timestamp_millis());
        let windows = self.with_db(|db| match scope {
            Scope::Device(device) => rollups::devices::query(db, &self.pending, device, quantity, interval, from, to),
            Scope::District(_) => {
                rollups::districts::stored(&db.begin_read().map_err(engine)?, scope, quantity, interval, from, to)
            }
        })?;
        windows.into_iter().map(|(start, w)| Ok((millis(start)?, w))).collect()
    }

    /// Times of the first and the last data of a device's series (its readings) or of a
    /// district's (its stored day windows): two lookups, whatever the length of the series.
    fn extent(&self, scope: &Scope, quantity: Quantity) -> Result<Option<crate::store::boundary::Extent>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let ends = rollups::districts::extent(&tx, scope, quantity)?;
            ends.map(|(first, last)| Ok((millis(first)?, millis(last)?))).transpose()
        })
    }

    /// Device windows journaled and not stored yet (a gauge in /metrics).
    fn pending_windows(&self) -> usize {
        self.pending.len()
    }

    fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        self.with_db(|db| dead_letters::get(db, id))
    }

    fn dead_letters_matching(
        &self,
        after: u64,
        limit: usize,
        max_scan: usize,
        keep: &mut dyn FnMut(&DeadLetter) -> bool,
    ) -> Result<(Vec<DeadLetter>, Option<u64>), StoreError> {
        self.with_db(|db| dead_letters::scan(db, after, limit, max_scan, keep))
    }
}

impl CommitStore for EmbeddedStore {
    /// Write a batch in one durable transaction: when this returns `Ok`, it is on disk.
    /// Returns the ids given to the batch's dead letters.
    fn write(&self, batch: &WriteBatch) -> Result<Vec<u64>, StoreError> {
        let rows = outbox::rows(&batch.outbox)?;
        let (ids, found) = self.with_write(Touches::These(&batch.readings), |db| {
            let tx = db.begin_write().map_err(engine)?;
            let written = self.write_in(&tx, batch, &rows)?;
            tx.commit().map_err(engine)?;
            Ok((written, true))
        })?;
        self.committed(batch, found);
        Ok(ids)
    }

    /// Commit what replaying dead letter `id` produced in one transaction with the letter's
    /// removal or its new reason ([`WriteBatch::settle_replay`]). If the letter is gone (replayed
    /// meanwhile), nothing is written: [`ReplayOutcome::Gone`].
    fn commit_replay(&self, id: u64, mut batch: WriteBatch) -> Result<ReplayOutcome, StoreError> {
        let (outcome, found) = self.with_write(Touches::Any, |db| {
            let tx = db.begin_write().map_err(engine)?;
            let Some(old) = dead_letters::get_in(&tx, id)? else {
                tx.abort().map_err(engine)?;
                return Ok(((ReplayOutcome::Gone, Vec::new()), false));
            };
            let (outcome, keep) = batch.settle_replay(&old);
            let (_, found) = self.write_in(&tx, &batch, &outbox::rows(&batch.outbox)?)?;
            dead_letters::replace(&tx, id, keep.as_ref())?;
            tx.commit().map_err(engine)?;
            Ok(((outcome, found), true))
        })?;
        self.committed(&batch, found);
        Ok(outcome)
    }

    fn frame_counter(&self, dev_addr: u32) -> Result<Option<FrameCounter>, StoreError> {
        self.with_db(|db| frame_counters::read(db, dev_addr))
    }
}

impl Outbox for EmbeddedStore {
    fn outbox_len(&self) -> Result<u64, StoreError> {
        self.with_db(outbox::len)
    }

    fn outbox_peek_except(&self, limit: usize, skip: &[u64]) -> Result<Spooled, StoreError> {
        self.with_db(|db| outbox::peek(db, limit, skip))
    }

    fn outbox_remove(&self, keys: &[u64]) -> Result<(), StoreError> {
        self.with_write(Touches::Nothing, |db| {
            let mut tx = db.begin_write().map_err(engine)?;
            // Not synced to disk: ingest's next commit makes the removal durable with its own
            // fsync. A removal lost to a crash before then only sends those lines again, and
            // InfluxDB overwrites a point of the same series and time.
            tx.set_durability(redb::Durability::None).map_err(engine)?;
            outbox::remove(&tx, keys)?;
            tx.commit().map_err(engine)?;
            Ok(((), true))
        })
    }

    fn outbox_drop_oldest(&self, n: u64) -> Result<u64, StoreError> {
        self.with_write(Touches::Nothing, |db| {
            let tx = db.begin_write().map_err(engine)?;
            let dropped = outbox::drop_oldest(&tx, n)?;
            tx.commit().map_err(engine)?;
            Ok((dropped, true))
        })
    }
}

/// The store as the history that quality control's spike and stuck tests read: the trait is
/// quality's, the store implements it.
impl SeriesLookup for EmbeddedStore {
    fn latest(&self, device: &DeviceId) -> Result<Vec<Reading>, String> {
        ReadStore::latest(self, device).map_err(|e| e.to_string())
    }

    fn neighbours(&self, device: &DeviceId, q: Quantity, time: i64, within: i64) -> Result<Neighbours, String> {
        EmbeddedStore::neighbours(self, device, q, time, within).map_err(|e| e.to_string())
    }

    fn free_from(&self, device: &DeviceId, from: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        EmbeddedStore::free_from(self, device, from).map_err(|e| e.to_string())
    }

    fn at(&self, device: &DeviceId, time: DateTime<Utc>) -> Result<Vec<Reading>, String> {
        EmbeddedStore::at(self, device, time).map_err(|e| e.to_string())
    }
}

impl CitizenStore for EmbeddedStore {
    fn citizen_sensors(&self) -> Result<Vec<CitizenSensor>, StoreError> {
        self.with_db(citizens::all)
    }

    fn citizen_sensor(&self, id: &DeviceId) -> Result<Option<CitizenSensor>, StoreError> {
        self.with_db(|db| citizens::get(db, id))
    }

    fn put_citizen_sensor(&self, sensor: &CitizenSensor) -> Result<(), StoreError> {
        self.with_write(Touches::Nothing, |db| {
            let tx = db.begin_write().map_err(engine)?;
            citizens::put(&tx, sensor)?;
            tx.commit().map_err(engine)?;
            Ok(((), true))
        })
    }

    fn remove_citizen_sensor(&self, id: &DeviceId) -> Result<Option<Removed>, StoreError> {
        self.with_write(Touches::Any, |db| {
            let tx = db.begin_write().map_err(engine)?;
            let Some(removed) = citizens::remove(&tx, id)? else {
                tx.abort().map_err(engine)?;
                return Ok((None, false));
            };
            tx.commit().map_err(engine)?;
            Ok((Some(removed), true))
        })
    }
}

impl AdminStore for EmbeddedStore {
    fn delete_dead_letters(&self, ids: &[u64]) -> Result<Vec<u64>, StoreError> {
        self.with_write(Touches::Nothing, |db| {
            let tx = db.begin_write().map_err(engine)?;
            let deleted = dead_letters::delete(&tx, ids)?;
            if deleted.is_empty() {
                tx.abort().map_err(engine)?;
                return Ok((deleted, false));
            }
            tx.commit().map_err(engine)?;
            Ok((deleted, true))
        })
    }

    fn backup_to(&self, dest: &Path) -> Result<Snapshot, BackupError> {
        self.snapshot_to(dest)
    }
}

impl rollups::flush::FlushWindows for EmbeddedStore {
    fn flush_windows(&self) -> Result<FlushSummary, StoreError> {
        EmbeddedStore::flush_windows(self)
    }
}

/// A batch's readings as (device number, ms, series number, position in the batch), sorted.
/// An uplink's readings lie together in the batch with one device and time: the runs of one
/// (device, ms) are sorted, one an uplink, then each run's readings by series and position
/// (a few, mostly in order already). The same order as sorting them all, for about a third
/// of that sort's instructions (BENCHMARKS.md, "A verdict's reason written once").
fn in_key_order(keyed: Vec<(u32, i64, u32, usize)>) -> Vec<(u32, i64, u32, usize)> {
    // (device, ms, first position, end): the first positions differ, so no two runs tie.
    let mut runs = Vec::new();
    let mut start = 0;
    for (i, w) in keyed.windows(2).enumerate() {
        if (w[0].0, w[0].1) != (w[1].0, w[1].1) {
            runs.push((w[0].0, w[0].1, start, i + 1));
            start = i + 1;
        }
    }
    if let Some(last) = keyed.last() {
        runs.push((last.0, last.1, start, keyed.len()));
    }
    runs.sort_unstable();
    let mut sorted = Vec::with_capacity(keyed.len());
    for &(_, _, from, to) in &runs {
        sorted.extend_from_slice(&keyed[from..to]);
    }
    // Runs of one (device, ms) are together now, also those the batch held apart (a repeated
    // uplink, readings moved aside).
    for same in sorted.chunk_by_mut(|a, b| (a.0, a.1) == (b.0, b.1)) {
        same.sort_unstable();
    }
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CommitStore, Outbox, ReadStore};

    #[test]
    fn readings_in_key_order_as_sorting_them_all_would_give() {
        // Uplinks of three devices at few distinct times, so that one (device, ms) recurs
        // apart in the batch; series out of order within an uplink now and then.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for len in [0, 1, 2, 7, 50, 600, 3_000] {
            let mut keyed = Vec::new();
            while keyed.len() < len {
                let (device, ms) = (next(3) as u32, next(40) as i64 - 20);
                for _ in 0..1 + next(6) {
                    let k = keyed.len();
                    keyed.push((device, ms, next(8) as u32, k));
                }
            }
            let mut all = keyed.clone();
            all.sort_unstable();
            assert_eq!(in_key_order(keyed), all, "{len} readings");
        }
    }

    fn reading(device: &str, q: &str, t: i64, value: f64) -> Reading {
        Reading {
            device: DeviceId::parse(device).unwrap(),
            quantity: Quantity::by_name(q).unwrap(),
            value,
            time: millis(t).unwrap(),
            flag: QualityFlag::Good,
            reason: Default::default(),
        }
    }

    #[test]
    fn kept_stretches_follow_writes_and_go_when_readings_are_removed() {
        use crate::citizens::CitizenSensor;
        use crate::store::CitizenStore;
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let within = 3 * 3_600_000;
        let (t, minute) = (Quantity::by_name("air_temperature").unwrap(), 60_000);
        let ask = |device: &str, at: i64| {
            let (before, after) = store.neighbours(&DeviceId::parse(device).unwrap(), t, at, within).unwrap();
            (before.map(|p| p.1), after.map(|p| p.1))
        };
        let id = "c-0123456789ab";
        let sensor: CitizenSensor = serde_json::from_value(serde_json::json!({
            "id": id, "name": "Balkon", "lat": 48.1, "lon": 11.5, "district": "",
            "token_hash": "00", "approved": true, "registered_at": "2026-11-30T10:00:00Z", "licence": "dl-by-de/2.0"
        }))
        .unwrap();
        store.put_citizen_sensor(&sensor).unwrap();
        let mut batch = WriteBatch::default();
        for device in ["a", id] {
            batch.readings.extend((0..10).map(|i| reading(device, "air_temperature", i * 10 * minute, i as f64)));
        }
        store.write(&batch).unwrap();
        assert_eq!((ask("a", 15 * minute), ask(id, 15 * minute)), ((Some(1.0), Some(2.0)), (Some(1.0), Some(2.0))));
        // Writes that touch no readings keep the stretches; a write of readings goes into them.
        store.flush_windows().unwrap();
        store
            .write(&WriteBatch { readings: vec![reading("a", "air_temperature", 12 * minute, 7.5)], ..Default::default() })
            .unwrap();
        assert_eq!(ask("a", 15 * minute), (Some(7.5), Some(2.0)));
        // Retention removes a's first hour; removing the citizen sensor removes all of its.
        let cursor = super::super::retention::SeriesCursor::default();
        let cutoff = |d: &str, _: &str| (d == "a").then_some(60 * minute);
        while store.expire_readings(&cursor, 1000, &cutoff).unwrap().deleted > 0 {}
        assert_eq!(ask("a", 15 * minute), (None, Some(6.0)), "retention's removal is seen");
        assert_eq!(ask(id, 15 * minute), (Some(1.0), Some(2.0)));
        store.remove_citizen_sensor(&DeviceId::parse(id).unwrap()).unwrap().unwrap();
        assert_eq!(ask(id, 15 * minute), (None, None), "the sensor's removal is seen");
    }

    #[test]
    fn series_are_separate_ordered_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut batch = WriteBatch::default();
        batch.readings.push(reading("a", "air_temperature", 2000, 2.0));
        batch.readings.push(reading("a", "air_temperature", 1000, 1.0));
        batch.readings.push(reading("a", "relative_humidity", 1500, 50.0));
        batch.readings.push(reading("ab", "air_temperature", 1500, 9.0));
        store.write(&batch).unwrap();
        store.write(&batch).unwrap();
        assert_eq!(store.count_readings().unwrap(), 4);

        let a = DeviceId::parse("a").unwrap();
        let t = Quantity::by_name("air_temperature").unwrap();
        let series = store.readings(&a, t, millis(0).unwrap(), millis(3000).unwrap(), 10).unwrap();
        assert_eq!(series.iter().map(|r| r.value).collect::<Vec<_>>(), vec![1.0, 2.0]);
        let half_open = store.readings(&a, t, millis(1000).unwrap(), millis(2000).unwrap(), 10).unwrap();
        assert_eq!(half_open.len(), 1);
        let latest = ReadStore::latest(&store, &a).unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!(latest[0].value, 2.0);
    }

    #[test]
    fn corrections_in_one_batch_leave_district_windows_as_computed_from_the_readings() {
        use std::collections::BTreeMap;

        use crate::aggregates::{Interval, Scope, Window};
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let in_district = |readings: Vec<Reading>| {
            let mut batch = WriteBatch::default();
            for r in &readings {
                batch.districts.insert(r.device.clone(), "Altstadt".into());
            }
            batch.readings = readings;
            batch
        };
        // Two devices, 50 readings each, one minute apart; then every other one corrected in
        // one batch (a burst of replacements in the same windows), one flagged bad.
        let first: Vec<Reading> =
            (0..100).map(|i| reading(["a", "b"][i % 2], "air_temperature", (i as i64 / 2) * 60_000, 10.0 + i as f64)).collect();
        store.write(&in_district(first.clone())).unwrap();
        let mut corrected: Vec<Reading> =
            first.iter().step_by(2).map(|r| Reading { value: r.value + 0.5, ..r.clone() }).collect();
        corrected[3].flag = QualityFlag::Bad;
        store.write(&in_district(corrected.clone())).unwrap();
        let mut now: BTreeMap<(String, i64), Reading> = BTreeMap::new();
        for r in first.into_iter().chain(corrected) {
            now.insert((r.device.as_str().to_owned(), r.time.timestamp_millis()), r);
        }
        let t = Quantity::by_name("air_temperature").unwrap();
        for interval in Interval::ALL {
            let mut expected: BTreeMap<i64, Window> = BTreeMap::new();
            for r in now.values() {
                let ms = r.time.timestamp_millis();
                expected.entry(interval.window_start(ms)).or_insert(Window::EMPTY).add(r.value, ms, r.flag);
            }
            let stored = store
                .rollups(&Scope::District("Altstadt".into()), t, interval, millis(0).unwrap(), millis(86_400_000).unwrap())
                .unwrap();
            let stored: BTreeMap<i64, Window> = stored.into_iter().map(|(start, w)| (start.timestamp_millis(), w)).collect();
            assert_eq!(stored.len(), expected.len(), "{interval:?}");
            for (start, w) in &expected {
                let s = &stored[start];
                assert_eq!(
                    (s.count, s.excluded, s.min, s.max, s.last, s.last_time),
                    (w.count, w.excluded, w.min, w.max, w.last, w.last_time),
                    "{interval:?} {start}"
                );
                assert!((s.sum - w.sum).abs() < 1e-9, "{interval:?} {start}: {} vs {}", s.sum, w.sum);
            }
        }
    }

    #[test]
    fn dead_letters_get_increasing_ids_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let letter = DeadLetter {
            id: 0,
            received_at: millis(5).unwrap(),
            topic: "t".into(),
            format: "ttn-v3".into(),
            device: None,
            reason: "bad".into(),
            payload: vec![0, 255, 10],
        };
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            // Three different messages (one message is one letter: see dead_letters.rs).
            let second = DeadLetter { payload: vec![0, 255, 10, 2], ..letter.clone() };
            let batch = WriteBatch { dead_letters: vec![letter.clone(), second], ..Default::default() };
            assert_eq!(store.write(&batch).unwrap(), vec![1, 2]);
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let third = DeadLetter { payload: vec![0, 255, 10, 3], ..letter.clone() };
        let batch = WriteBatch { dead_letters: vec![third], ..Default::default() };
        assert_eq!(store.write(&batch).unwrap(), vec![3]);
        let all = store.dead_letters(0, 10).unwrap();
        assert_eq!(all.iter().map(|d| d.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(all[0].payload, vec![0, 255, 10]);
        assert_eq!(store.dead_letters(2, 10).unwrap().len(), 1);
    }

    /// A small tmpfs of the test's own, unmounted when dropped; `None` (the test is skipped,
    /// saying why) where this process may not mount one.
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(size: &str) -> Option<Self> {
            let dir = tempfile::tempdir().unwrap();
            let status = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .stderr(std::process::Stdio::null())
                .status();
            match status {
                Ok(s) if s.success() => Some(Self(dir)),
                other => {
                    eprintln!("skipped: cannot mount a tmpfs here ({other:?}; needs root)");
                    None
                }
            }
        }

        /// Fill what is left of the file system with a file; returns its path.
        fn fill(&self) -> std::path::PathBuf {
            use std::io::Write;
            let path = self.0.path().join("ballast");
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
            let chunk = vec![0x5a_u8; 64 * 1024];
            while f.write_all(&chunk).is_ok() {}
            while f.write_all(&[0x5a; 512]).is_ok() {}
            path
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0.path()).status();
        }
    }

    fn burst(first: i64, n: i64) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for i in first..first + n {
            batch.readings.push(reading("dev-full", "air_temperature", i * 60_000, i as f64));
            batch.readings.push(reading("dev-full", "relative_humidity", i * 60_000, 50.0));
        }
        batch.districts.insert(DeviceId::parse("dev-full").unwrap(), "Altstadt".into());
        batch.outbox = (first..first + n).map(|i| format!("air_temperature,device=dev-full value={i}")).collect();
        batch
    }

    #[test]
    fn a_full_disk_poisons_nothing_for_good_the_store_reopens_when_space_returns() {
        let Some(fs) = Tmpfs::mount("4m") else { return };
        let store = EmbeddedStore::open(&fs.0.path().join("store")).unwrap();
        assert!(store.health().writable);
        let mut stored = 0;
        store.write(&burst(0, 200)).unwrap();
        stored += 200;
        let ballast = fs.fill();
        let error = loop {
            match store.write(&burst(stored, 200)) {
                Ok(_) => stored += 200,
                Err(e) => break e,
            }
            assert!(stored < 1_000_000, "the disk never filled");
        };
        assert!(error.is_io(), "a full disk is an I/O error: {error}");
        let health = store.health();
        assert!(!health.writable && health.since.is_some(), "{health:?}");
        // Still full: refused again, and the store stays usable for the next attempt. The
        // window flusher and the InfluxDB spool's writer meet the same disk: whatever they
        // manage, they leave the store consistent (checked below).
        fs.fill();
        std::thread::sleep(REOPEN_EVERY);
        assert!(store.write(&burst(stored, 200)).is_err());
        assert!(!store.health().writable);
        let _ = store.flush_windows();
        if let Ok(head) = store.outbox_peek(50) {
            let _ = store.outbox_remove(&head.keys(0..head.len()));
        }
        fs.fill();
        assert!(store.write(&burst(stored, 200)).is_err());

        std::fs::remove_file(&ballast).unwrap();
        std::thread::sleep(REOPEN_EVERY);
        store.write(&burst(stored, 200)).expect("writes resume once space returns, without a restart");
        stored += 200;
        let health = store.health();
        assert!(health.writable && health.error.is_none(), "{health:?}");
        assert!(health.reopens >= 1, "{health:?}");
        assert_eq!(store.count_readings().unwrap(), 2 * stored as u64, "every committed batch is there, once");
        // The spool: every committed batch's lines, in order, and its writer goes on.
        let spooled = store.outbox_peek(usize::MAX).unwrap();
        let values: Vec<i64> =
            spooled.iter().map(|(_, l)| std::str::from_utf8(l).unwrap().rsplit('=').next().unwrap().parse().unwrap()).collect();
        let removed_early = (stored as usize - values.len()) as i64;
        assert!(removed_early == 0 || removed_early == 50, "{removed_early} lines gone");
        assert_eq!(values, (removed_early..stored).collect::<Vec<_>>(), "spooled once each, in order");
        store.outbox_remove(&spooled.keys(0..spooled.len())).unwrap();
        assert_eq!(store.outbox_len().unwrap(), 0);
        // The window journal in memory matches the stored one: a flush empties both.
        store.flush_windows().unwrap();
        assert_eq!(store.pending_windows(), 0);
        let q = Quantity::by_name("air_temperature").unwrap();
        let scope = Scope::Device("dev-full".into());
        let days = store.rollups(&scope, q, Interval::Day, millis(0).unwrap(), millis(stored * 60_000).unwrap()).unwrap();
        assert_eq!(days.iter().map(|(_, w)| w.count as i64).sum::<i64>(), stored);
        let district = Scope::District("Altstadt".into());
        let days = store.rollups(&district, q, Interval::Day, millis(0).unwrap(), millis(stored * 60_000).unwrap()).unwrap();
        assert_eq!(days.iter().map(|(_, w)| w.count as i64).sum::<i64>(), stored, "district rollups: nothing doubled");
    }

    #[test]
    fn a_poisoned_store_reopens_at_its_next_use_with_the_journal_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.write(&burst(0, 10)).unwrap();
        assert_eq!(store.pending_windows(), 1);
        // A transaction that notes an hour as pending and then never commits (as one that
        // meets a full disk does).
        store
            .with_db(|db| {
                let tx = db.begin_write().map_err(engine)?;
                let mut touched = Touched::default();
                touched.add("dev-other", 7_200_000);
                rollups::journal::append(&tx, &store.pending, &mut touched)?;
                tx.abort().map_err(engine)
            })
            .unwrap();
        assert_eq!(store.pending_windows(), 2);
        store.districts_stored.lock().unwrap().insert("dev-gone".into(), "Nowhere".into());
        // What an I/O error leaves: the store marked poisoned. The next use reopens it.
        store.poisoned.store(true, Ordering::Release);
        assert_eq!(store.count_readings().unwrap(), 20);
        assert_eq!(store.health().reopens, 1);
        assert_eq!(store.pending_windows(), 1, "only the journal rows that were stored are pending");
        assert!(store.districts_stored.lock().unwrap().is_empty(), "districts are looked up afresh");
        store.write(&burst(10, 10)).unwrap();
        store.flush_windows().unwrap();
        assert_eq!(store.pending_windows(), 0, "the journal in memory and on disk agree");
        let q = Quantity::by_name("air_temperature").unwrap();
        for scope in [Scope::Device("dev-full".into()), Scope::District("Altstadt".into())] {
            let days = store.rollups(&scope, q, Interval::Day, millis(0).unwrap(), millis(86_400_000).unwrap()).unwrap();
            assert_eq!(days.iter().map(|(_, w)| w.count).sum::<u64>(), 20, "{scope:?}");
        }
        assert!(store.health().writable);
    }

    #[test]
    fn last_seen_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let a = DeviceId::parse("a").unwrap();
        store.write(&WriteBatch { seen: vec![(a.clone(), millis(2000).unwrap())], ..Default::default() }).unwrap();
        store.write(&WriteBatch { seen: vec![(a.clone(), millis(1000).unwrap())], ..Default::default() }).unwrap();
        assert_eq!(store.last_seen(&a).unwrap(), Some(millis(2000).unwrap()));
    }
}
