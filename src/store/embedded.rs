//! The embedded store (redb): readings keyed by device, quantity and time; dead letters; last-seen times.
//!
//! redb was chosen by measurement (see the README's design notes): fsync'd commits, a
//! pure-Rust build, and the fastest range queries of the engines tried. Keys are
//! `(device, quantity, time)`, so a series is one contiguous range and writing the same
//! reading twice overwrites it: redelivered messages are idempotent.

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};

use super::device_windows::{self, FlushSummary};
use super::window_journal::{self, Pending, Touched};
use super::{engine, rollups, DeadLetter, StoreError, WriteBatch};
use crate::aggregates::{Interval, RollupDelta, Scope, Window};
use crate::model::{DeviceId, QualityFlag, Quantity, Reading};

/// (device, quantity name, time in ms since the epoch) → (value, flag, reason).
pub(super) const READINGS: TableDefinition<(&str, &str, i64), (f64, u8, &str)> = TableDefinition::new("readings");
/// device → last reception time in ms since the epoch.
const LAST_SEEN: TableDefinition<&str, i64> = TableDefinition::new("last_seen");
/// sequence number → dead letter as JSON.
pub(super) const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");

/// Journal rows one flush transaction handles at most, so a long backlog (after a restart
/// or an outage) is stored in steps and never holds up ingest's commits for long.
const FLUSH_BATCHES: usize = 64;

/// The embedded store. Cheap to share: wrap it in an `Arc`; its calls block, so call them
/// from `spawn_blocking` in async code.
pub struct EmbeddedStore {
    /// Shared with `outbox.rs`, which keeps the InfluxDB spool in the same database.
    pub(super) db: Database,
    /// Keep rollups up to date on every write (always, but for measuring what they cost).
    rollups: bool,
    /// Device windows journaled but not flushed yet.
    pending: Pending,
    /// Held by the flush in progress (see `device_windows::flush`).
    flushing: std::sync::Mutex<()>,
    /// Device → district pairs known to be stored, so a batch looks up only new ones.
    /// Filled after commits only, so it never holds a pair a failed transaction wrote.
    districts_stored: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl EmbeddedStore {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory { path: dir.display().to_string(), source })?;
        let db = Database::create(dir.join("messnetz.redb")).map_err(engine)?;
        // Create the tables up front so readers never meet a missing table.
        let tx = db.begin_write().map_err(engine)?;
        let has_device_windows = tx.list_tables().map_err(engine)?.any(|t| t.name() == device_windows::DEVICE_WINDOWS.name());
        tx.open_table(READINGS).map_err(engine)?;
        tx.open_table(LAST_SEEN).map_err(engine)?;
        tx.open_table(DEAD_LETTERS).map_err(engine)?;
        tx.open_table(super::outbox::OUTBOX).map_err(engine)?;
        tx.open_table(rollups::ROLLUPS).map_err(engine)?;
        tx.open_table(rollups::DEVICE_DISTRICT).map_err(engine)?;
        tx.open_table(super::frame_counters::FRAME_COUNTERS).map_err(engine)?;
        tx.open_table(window_journal::WINDOW_JOURNAL).map_err(engine)?;
        tx.open_table(device_windows::DEVICE_WINDOWS).map_err(engine)?;
        // A store from before device windows were stored: build them from its readings, in
        // this transaction (an interrupted build runs again at the next start).
        if !has_device_windows {
            let (_, rows) = device_windows::build(&tx, i64::MIN, i64::MAX)?;
            if rows > 0 {
                tracing::info!(
                    day_rows = rows,
                    "device rollup windows built from the stored readings (first start of this version)"
                );
            }
        }
        tx.commit().map_err(engine)?;
        let pending = Pending::load(&db)?;
        Ok(Self { db, rollups: true, pending, flushing: Default::default(), districts_stored: Default::default() })
    }

    /// Write a batch in one durable transaction: when this returns `Ok`, it is on disk.
    /// Returns the ids given to the batch's dead letters.
    pub fn write(&self, batch: &WriteBatch) -> Result<Vec<u64>, StoreError> {
        let tx = self.db.begin_write().map_err(engine)?;
        let ids = self.write_in(&tx, batch)?;
        tx.commit().map_err(engine)?;
        self.districts_committed(batch);
        Ok(ids)
    }

    /// Write a batch into an open transaction (the caller commits): a dead letter's replay
    /// removes the letter in the same transaction as the readings it produced.
    pub(super) fn write_in(&self, tx: &redb::WriteTransaction, batch: &WriteBatch) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::with_capacity(batch.dead_letters.len());
        // New readings go into the district rollups as deltas; a reading that replaces a
        // different stored value makes its district windows be recomputed; a repeated one
        // changes nothing. Device windows of new and changed readings go to the journal.
        let mut delta = RollupDelta::default();
        let mut changed = Vec::new();
        let mut touched = Touched::default();
        {
            let mut readings = tx.open_table(READINGS).map_err(engine)?;
            for r in &batch.readings {
                let old = readings
                    .insert(
                        (r.device.as_str(), r.quantity.name(), r.time.timestamp_millis()),
                        (r.value, r.flag.to_byte(), r.reason.as_str()),
                    )
                    .map_err(engine)?;
                if !self.rollups {
                    continue;
                }
                match old.map(|o| {
                    let (v, f, _) = o.value();
                    (v, f)
                }) {
                    None => delta.add(r, batch.districts.get(&r.device).map(String::as_str)),
                    Some((v, f)) if v.to_bits() == r.value.to_bits() && f == r.flag.to_byte() => continue,
                    Some(_) => changed.push((r.device.as_str(), r.quantity, r.time.timestamp_millis())),
                }
                touched.add(r.device.as_str(), r.time.timestamp_millis());
            }
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
            rollups::set_districts(tx, new_districts.iter().copied())?;
        }
        rollups::apply(tx, &delta)?;
        window_journal::append(tx, &self.pending, &mut touched)?;
        for (device, quantity, t) in changed {
            rollups::recompute(tx, device, quantity, t)?;
        }
        {
            let mut seen = tx.open_table(LAST_SEEN).map_err(engine)?;
            for (device, time) in &batch.seen {
                let t = time.timestamp_millis();
                let newer = match seen.get(device.as_str()).map_err(engine)? {
                    Some(old) => old.value() < t,
                    None => true,
                };
                if newer {
                    seen.insert(device.as_str(), t).map_err(engine)?;
                }
            }
            let mut dead = tx.open_table(DEAD_LETTERS).map_err(engine)?;
            let newest = dead.last().map_err(engine)?.map(|(k, _)| k.value());
            // Replays remove letters, the newest too: ids come from a sequence, never reused.
            let first = if batch.dead_letters.is_empty() {
                0
            } else {
                super::dead_letter::allocate_ids(tx, newest, batch.dead_letters.len())?
            };
            for (id, letter) in (first..).zip(&batch.dead_letters) {
                let mut letter = letter.clone();
                letter.id = id;
                let json = serde_json::to_vec(&letter).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                dead.insert(id, json.as_slice()).map_err(engine)?;
                ids.push(id);
            }
        }
        // The InfluxDB spool rides in the same commit: stored here == spooled for InfluxDB.
        if !batch.outbox.is_empty() {
            super::outbox::append(tx, &batch.outbox)?;
        }
        if !batch.frame_counters.is_empty() {
            super::frame_counters::write(tx, &batch.frame_counters)?;
        }
        Ok(ids)
    }

    /// Note a committed batch's device districts as stored (call after the commit only).
    pub(super) fn districts_committed(&self, batch: &WriteBatch) {
        let mut known = self.districts_stored.lock().unwrap_or_else(|p| p.into_inner());
        for (device, district) in &batch.districts {
            if known.get(device.as_str()) != Some(district) {
                known.insert(device.as_str().to_owned(), district.clone());
            }
        }
    }

    /// The newest reading of every quantity of a device.
    pub fn latest(&self, device: &DeviceId) -> Result<Vec<Reading>, StoreError> {
        let tx = self.db.begin_read().map_err(engine)?;
        let table = tx.open_table(READINGS).map_err(engine)?;
        let mut out = Vec::new();
        for q in Quantity::all() {
            let d = device.as_str();
            let mut range = table.range((d, q.name(), i64::MIN)..=(d, q.name(), i64::MAX)).map_err(engine)?;
            if let Some(entry) = range.next_back() {
                let (k, v) = entry.map_err(engine)?;
                let (_, _, t) = k.value();
                out.push(to_reading(device, q, t, v.value())?);
            }
        }
        Ok(out)
    }

    /// Readings of one series with `from <= time < to`, oldest first, at most `limit`.
    pub fn readings(
        &self,
        device: &DeviceId,
        quantity: Quantity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Reading>, StoreError> {
        let tx = self.db.begin_read().map_err(engine)?;
        let table = tx.open_table(READINGS).map_err(engine)?;
        let (d, q) = (device.as_str(), quantity.name());
        let range = table.range((d, q, from.timestamp_millis())..(d, q, to.timestamp_millis())).map_err(engine)?;
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (k, v) = entry.map_err(engine)?;
            out.push(to_reading(device, quantity, k.value().2, v.value())?);
        }
        Ok(out)
    }

    /// The nearest readings not flagged bad strictly before and strictly after `time`, within
    /// `within` on either side, as (time, value). Reads only as far as it must: a late reading's
    /// quality check calls this, and a burst of late readings must not scan whole ranges.
    #[allow(clippy::type_complexity)]
    pub fn neighbours(
        &self,
        device: &DeviceId,
        quantity: Quantity,
        time: DateTime<Utc>,
        within: chrono::Duration,
    ) -> Result<(Option<(DateTime<Utc>, f64)>, Option<(DateTime<Utc>, f64)>), StoreError> {
        let tx = self.db.begin_read().map_err(engine)?;
        let table = tx.open_table(READINGS).map_err(engine)?;
        let (d, q) = (device.as_str(), quantity.name());
        let (t, w) = (time.timestamp_millis(), within.num_milliseconds());
        let bad = QualityFlag::Bad.to_byte();
        let mut before = None;
        for entry in table.range((d, q, t.saturating_sub(w))..(d, q, t)).map_err(engine)?.rev() {
            let (k, v) = entry.map_err(engine)?;
            let (value, flag, _) = v.value();
            if flag != bad {
                before = Some((millis(k.value().2)?, value));
                break;
            }
        }
        let mut after = None;
        for entry in table.range((d, q, t.saturating_add(1))..=(d, q, t.saturating_add(w))).map_err(engine)? {
            let (k, v) = entry.map_err(engine)?;
            let (value, flag, _) = v.value();
            if flag != bad {
                after = Some((millis(k.value().2)?, value));
                break;
            }
        }
        Ok((before, after))
    }

    /// When the device was last heard from.
    pub fn last_seen(&self, device: &DeviceId) -> Result<Option<DateTime<Utc>>, StoreError> {
        let tx = self.db.begin_read().map_err(engine)?;
        let table = tx.open_table(LAST_SEEN).map_err(engine)?;
        match table.get(device.as_str()).map_err(engine)? {
            Some(t) => Ok(Some(millis(t.value())?)),
            None => Ok(None),
        }
    }

    /// Dead letters with an id above `after`, oldest first, at most `limit`.
    pub fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let tx = self.db.begin_read().map_err(engine)?;
        let table = tx.open_table(DEAD_LETTERS).map_err(engine)?;
        let mut out = Vec::new();
        for entry in table.range(after.saturating_add(1)..).map_err(engine)?.take(limit) {
            let (_, v) = entry.map_err(engine)?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    /// Turn rollup upkeep off or on: only for benchmarks that measure what it costs.
    pub fn set_rollups_enabled(&mut self, on: bool) {
        self.rollups = on;
    }

    /// Rollup windows of a device or district with `from <= start < to`, oldest first.
    pub fn rollups(
        &self,
        scope: &Scope,
        quantity: Quantity,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, Window)>, StoreError> {
        let (from, to) = (from.timestamp_millis(), to.timestamp_millis());
        let windows = match scope {
            Scope::Device(device) => device_windows::query(&self.db, &self.pending, device, quantity, interval, from, to)?,
            Scope::District(_) => rollups::stored(&self.db.begin_read().map_err(engine)?, scope, quantity, interval, from, to)?,
        };
        windows.into_iter().map(|(start, w)| Ok((millis(start)?, w))).collect()
    }

    /// Times of the first and the last data of a device's series (its readings) or of a
    /// district's (its stored day windows): two lookups, whatever the length of the series.
    pub fn extent(&self, scope: &Scope, quantity: Quantity) -> Result<Option<super::Extent>, StoreError> {
        let tx = self.db.begin_read().map_err(engine)?;
        let ends = rollups::extent(&tx, scope, quantity)?;
        ends.map(|(first, last)| Ok((millis(first)?, millis(last)?))).transpose()
    }

    /// Recompute the rollups of `[from, to)` (widened to whole UTC days) from the stored
    /// readings. `district_of` gives the district of each open device.
    pub fn rebuild_rollups(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        district_of: &dyn Fn(&str) -> Option<String>,
    ) -> Result<rollups::RebuildSummary, StoreError> {
        self.flush_windows()?;
        rollups::rebuild(&self.db, from.timestamp_millis(), to.timestamp_millis(), district_of)
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
            let done = device_windows::flush(&self.db, &self.pending, &self.flushing, FLUSH_BATCHES)?;
            total.batches += done.batches;
            total.windows += done.windows;
            if done.batches < FLUSH_BATCHES {
                return Ok(total);
            }
        }
    }

    /// Device windows journaled and not stored yet (a gauge in /metrics).
    pub fn pending_windows(&self) -> usize {
        self.pending.len()
    }

    /// Space of the main tables, as (table, bytes of keys and values, bytes of pages in
    /// all: with branch pages and fragmentation): what readings and rollups take on disk.
    pub fn table_space(&self) -> Result<Vec<(&'static str, u64, u64)>, StoreError> {
        let tx = self.db.begin_read().map_err(engine)?;
        let space = |s: redb::TableStats| (s.stored_bytes(), s.stored_bytes() + s.metadata_bytes() + s.fragmented_bytes());
        let readings = space(tx.open_table(READINGS).map_err(engine)?.stats().map_err(engine)?);
        let devices = space(tx.open_table(device_windows::DEVICE_WINDOWS).map_err(engine)?.stats().map_err(engine)?);
        let districts = space(tx.open_table(rollups::ROLLUPS).map_err(engine)?.stats().map_err(engine)?);
        Ok(vec![
            ("readings", readings.0, readings.1),
            ("device windows", devices.0, devices.1),
            ("district windows", districts.0, districts.1),
        ])
    }

    /// Number of stored readings (all devices).
    pub fn count_readings(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(engine)?;
        tx.open_table(READINGS).map_err(engine)?.len().map_err(engine)
    }
}

fn millis(t: i64) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_millis_opt(t).single().ok_or_else(|| StoreError::Corrupt(format!("time {t} ms is out of range")))
}

fn to_reading(
    device: &DeviceId,
    quantity: Quantity,
    t: i64,
    (value, flag, reason): (f64, u8, &str),
) -> Result<Reading, StoreError> {
    Ok(Reading {
        device: device.clone(),
        quantity,
        value,
        time: millis(t)?,
        flag: QualityFlag::from_byte(flag),
        reason: reason.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(device: &str, q: &str, t: i64, value: f64) -> Reading {
        Reading {
            device: DeviceId::parse(device).unwrap(),
            quantity: Quantity::by_name(q).unwrap(),
            value,
            time: millis(t).unwrap(),
            flag: QualityFlag::Good,
            reason: String::new(),
        }
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
        let latest = store.latest(&a).unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!(latest[0].value, 2.0);
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
            let batch = WriteBatch { dead_letters: vec![letter.clone(), letter.clone()], ..Default::default() };
            assert_eq!(store.write(&batch).unwrap(), vec![1, 2]);
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let batch = WriteBatch { dead_letters: vec![letter.clone()], ..Default::default() };
        assert_eq!(store.write(&batch).unwrap(), vec![3]);
        let all = store.dead_letters(0, 10).unwrap();
        assert_eq!(all.iter().map(|d| d.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(all[0].payload, vec![0, 255, 10]);
        assert_eq!(store.dead_letters(2, 10).unwrap().len(), 1);
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
