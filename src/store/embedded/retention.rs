//! Retention in the store: deleting readings, device windows, district rollups and dead
//! letters older than a cutoff, one bounded chunk at a time.
//!
//! Each chunk finds its rows in a read transaction (which never blocks ingest's writes) and
//! deletes them in a short write transaction of at most `max_rows` removals, so ingest's
//! commits wait for one small transaction at most. A walk over a table goes series by series
//! (a series' rows are contiguous and oldest first; readings' rows device by device), jumping
//! from one to the next rather than reading every row, and returns where the next chunk goes
//! on.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable};

use super::store::Touches;
use super::tables::{DEAD_LETTERS, DEVICE_WINDOWS, EXTENTS, READINGS, ROLLUPS, SERIES};
use super::EmbeddedStore;
use super::{readings, series};
use crate::store::boundary::{engine, AdminStore, StoreError};

/// Series looked at per chunk at most, on top of the rows deleted: a chunk over many series
/// with nothing to delete still ends soon.
const SERIES_PER_ROW: usize = 4;

/// One day in milliseconds: the longest rollup window.
const DAY_MS: i64 = 86_400_000;

/// Where a walk over a table of series goes on from: the first series at or after this one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesCursor {
    /// The series' leading key parts: (device, quantity), or for district rollups
    /// (scope key, quantity, interval code).
    pub parts: (String, String, u8),
}

/// What one chunk did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    /// Rows deleted.
    pub deleted: u64,
    /// Where the next chunk goes on; `None` when the walk reached the end of the table.
    pub next: Option<SeriesCursor>,
}

/// The keys a chunk deletes and where the walk stands, from the read phase.
type Found<K> = (Vec<K>, Option<SeriesCursor>);

impl EmbeddedStore {
    /// Delete readings older than their series' cutoff (ms since the epoch; `None` keeps the
    /// series whole), from series `from` on, at most `max_rows` rows.
    pub fn expire_readings(
        &self,
        from: &SeriesCursor,
        max_rows: usize,
        cutoff: &dyn Fn(&str, &str) -> Option<i64>,
    ) -> Result<Chunk, StoreError> {
        let walk = self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let numbers = tx.open_table(SERIES).map_err(engine)?;
            let extents = tx.open_table(EXTENTS).map_err(engine)?;
            let table = tx.open_table(READINGS).map_err(engine)?;
            walk_readings(&numbers, &extents, &table, from, max_rows, cutoff)
        })?;
        // The rows are read again in the write transaction: a reading stored since the walk
        // (into a row it found) stays unless it too is older than its cutoff.
        let deleted = self.with_write(Touches::Any, |db| {
            if walk.devices.is_empty() {
                return Ok((0, false));
            }
            let tx = db.begin_write().map_err(engine)?;
            let mut deleted = 0;
            {
                let mut tables = readings::open(&tx)?;
                for device in &walk.devices {
                    deleted += readings::expire(&mut tables, device.device, &device.rows, &device.cuts, device.reached)?;
                }
            }
            tx.commit().map_err(engine)?;
            Ok((deleted, true))
        })?;
        Ok(Chunk { deleted, next: walk.next })
    }

    /// Delete device rollup days that ended before `cutoff_ms`, from series `from` on.
    pub fn expire_device_windows(&self, from: &SeriesCursor, max_rows: usize, cutoff_ms: i64) -> Result<Chunk, StoreError> {
        let found: Found<(String, String, i64)> = self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let table = tx.open_table(DEVICE_WINDOWS).map_err(engine)?;
            walk3(&table, from, max_rows, &|_, _| Some(cutoff_ms - DAY_MS + 1))
        })?;
        let keys: Vec<_> = found.0.iter().map(|(d, q, t)| (d.as_str(), q.as_str(), *t)).collect();
        let deleted = self.delete(DEVICE_WINDOWS, &keys)?;
        Ok(Chunk { deleted, next: found.1 })
    }

    /// Delete district rollup windows that ended before `cutoff_ms` (every window is a day
    /// long at most), from series `from` on.
    pub fn expire_rollups(&self, from: &SeriesCursor, max_rows: usize, cutoff_ms: i64) -> Result<Chunk, StoreError> {
        let before = cutoff_ms - DAY_MS + 1;
        let (keys, next) = self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let table = tx.open_table(ROLLUPS).map_err(engine)?;
            let mut keys: Vec<(String, String, u8, i64)> = Vec::new();
            let (mut scope, mut quantity, mut code) = from.parts.clone();
            for _ in 0..max_rows.saturating_mul(SERIES_PER_ROW).max(1) {
                let first = table.range((scope.as_str(), quantity.as_str(), code, i64::MIN)..).map_err(engine)?.next();
                let Some(entry) = first else { return Ok((keys, None)) };
                let (k, _) = entry.map_err(engine)?;
                let (s, q, c, _) = k.value();
                (scope, quantity, code) = (s.to_owned(), q.to_owned(), c);
                for entry in table.range((s, q, c, i64::MIN)..(s, q, c, before)).map_err(engine)? {
                    if keys.len() >= max_rows {
                        return Ok((keys, Some(SeriesCursor { parts: (scope, quantity, code) })));
                    }
                    let (k, _) = entry.map_err(engine)?;
                    keys.push((scope.clone(), quantity.clone(), code, k.value().3));
                }
                // The next series: the smallest key past this one's last possible key.
                match code.checked_add(1) {
                    Some(next) => code = next,
                    None => {
                        quantity.push('\0');
                        code = 0;
                    }
                }
            }
            Ok((keys, Some(SeriesCursor { parts: (scope, quantity, code) })))
        })?;
        let keys: Vec<_> = keys.iter().map(|(s, q, c, t)| (s.as_str(), q.as_str(), *c, *t)).collect();
        let deleted = self.delete(ROLLUPS, &keys)?;
        Ok(Chunk { deleted, next })
    }

    /// Delete up to `max_rows` of the oldest dead letters received before `cutoff`; the
    /// number deleted. Letters are numbered in arrival order, so the walk stops at the first
    /// one that is young enough.
    pub fn expire_dead_letters(&self, max_rows: usize, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let ids = self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let table = tx.open_table(DEAD_LETTERS).map_err(engine)?;
            let mut ids = Vec::new();
            for entry in table.iter().map_err(engine)?.take(max_rows) {
                let (k, v) = entry.map_err(engine)?;
                #[derive(serde::Deserialize)]
                struct Received {
                    received_at: DateTime<Utc>,
                }
                // An unreadable letter is left for an operator to look at.
                match serde_json::from_slice::<Received>(v.value()) {
                    Ok(r) if r.received_at < cutoff => ids.push(k.value()),
                    Ok(_) => break,
                    Err(_) => continue,
                }
            }
            Ok(ids)
        })?;
        Ok(self.delete_dead_letters(&ids)?.len() as u64)
    }

    /// Remove these keys from a table in one write transaction; the number removed.
    fn delete<'k, K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: redb::TableDefinition<K, V>,
        keys: &[K::SelfType<'k>],
    ) -> Result<u64, StoreError> {
        self.with_write(Touches::Nothing, |db| {
            if keys.is_empty() {
                return Ok((0, false));
            }
            let tx = db.begin_write().map_err(engine)?;
            let mut n = 0;
            {
                let mut table = tx.open_table(def).map_err(engine)?;
                for key in keys {
                    n += u64::from(table.remove(key).map_err(engine)?.is_some());
                }
            }
            tx.commit().map_err(engine)?;
            Ok((n, true))
        })
    }
}

/// What a walk over the readings found to delete, device by device, and where to go on.
struct ReadingsWalk {
    devices: Vec<DeviceCut>,
    next: Option<SeriesCursor>,
}

/// One device's part of a chunk.
struct DeviceCut {
    device: u32,
    /// (series, cutoff ms) of its series that have a cutoff.
    cuts: Vec<(u32, i64)>,
    /// Times of the rows holding a reading older than its series' cutoff.
    rows: Vec<i64>,
    /// The walk found every such row before this time.
    reached: i64,
}

/// Walk the readings device by device, in device order from `from` (the cursor's first
/// part): the rows holding readings older than their series' cutoff, at most `max_rows`
/// readings, and where to go on. A device's walk starts at its cut series' first times,
/// which each chunk raises, so a walk does not read again what an earlier one kept.
fn walk_readings(
    numbers: &redb::ReadOnlyTable<(&'static str, &'static str), u32>,
    extents: &redb::ReadOnlyTable<u32, &'static [u8]>,
    table: &redb::ReadOnlyTable<(u32, i64), &'static [u8]>,
    from: &SeriesCursor,
    max_rows: usize,
    cutoff: &dyn Fn(&str, &str) -> Option<i64>,
) -> Result<ReadingsWalk, StoreError> {
    let mut devices = Vec::new();
    let mut device = from.parts.0.clone();
    let mut found = 0;
    for _ in 0..max_rows.saturating_mul(SERIES_PER_ROW).max(1) {
        let first = numbers.range((device.as_str(), "")..).map_err(engine)?.next();
        let Some(entry) = first else { return Ok(ReadingsWalk { devices, next: None }) };
        device = entry.map_err(engine)?.0.value().0.to_owned();
        let next_device = |mut d: String| {
            d.push('\0');
            d
        };
        let Some(number) = series::device(numbers, &device)? else {
            device = next_device(device);
            continue;
        };
        let of_device = readings::extents(extents, number)?;
        let mut cuts = Vec::new();
        let mut start = i64::MAX;
        for (q, n) in series::named(numbers, &device)? {
            let (Some(before), Some(&(_, first, _))) = (cutoff(&device, &q), of_device.iter().find(|e| e.0 == n)) else {
                continue;
            };
            if first < before {
                cuts.push((n, before));
                start = start.min(first);
            }
        }
        let Some(end) = cuts.iter().map(|c| c.1).max() else {
            device = next_device(device);
            continue;
        };
        let mut cut = DeviceCut { device: number, cuts, rows: Vec::new(), reached: end };
        let mut full = false;
        for row in table.range((number, start)..(number, end)).map_err(engine)? {
            let (k, v) = row.map_err(engine)?;
            let ms = k.value().1;
            let mut old = 0;
            for e in readings::entries(v.value()) {
                let e = e?;
                old += usize::from(cut.cuts.iter().any(|c| c.0 == e.series && ms < c.1));
            }
            if old == 0 {
                continue;
            }
            if found > 0 && found + old > max_rows {
                (cut.reached, full) = (ms, true);
                break;
            }
            found += old;
            cut.rows.push(ms);
        }
        devices.push(cut);
        if full {
            return Ok(ReadingsWalk { devices, next: Some(SeriesCursor { parts: (device, String::new(), 0) }) });
        }
        device = next_device(device);
    }
    Ok(ReadingsWalk { devices, next: Some(SeriesCursor { parts: (device, String::new(), 0) }) })
}

/// Walk a (text, text, time) table from `from`: the keys of rows before their series' cutoff,
/// at most `max_rows`, and where to go on.
fn walk3<V: redb::Value + 'static>(
    table: &redb::ReadOnlyTable<(&'static str, &'static str, i64), V>,
    from: &SeriesCursor,
    max_rows: usize,
    cutoff: &dyn Fn(&str, &str) -> Option<i64>,
) -> Result<Found<(String, String, i64)>, StoreError> {
    let mut keys = Vec::new();
    let (mut device, mut quantity) = (from.parts.0.clone(), from.parts.1.clone());
    for _ in 0..max_rows.saturating_mul(SERIES_PER_ROW).max(1) {
        let first = table.range((device.as_str(), quantity.as_str(), i64::MIN)..).map_err(engine)?.next();
        let Some(entry) = first else { return Ok((keys, None)) };
        let (k, _) = entry.map_err(engine)?;
        let (d, q, _) = k.value();
        (device, quantity) = (d.to_owned(), q.to_owned());
        if let Some(before) = cutoff(d, q) {
            for entry in table.range((d, q, i64::MIN)..(d, q, before)).map_err(engine)? {
                if keys.len() >= max_rows {
                    return Ok((keys, Some(SeriesCursor { parts: (device, quantity, 0) })));
                }
                let (k, _) = entry.map_err(engine)?;
                keys.push((device.clone(), quantity.clone(), k.value().2));
            }
        }
        // The next series: the smallest (device, quantity) above this one.
        quantity.push('\0');
    }
    Ok((keys, Some(SeriesCursor { parts: (device, quantity, 0) })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceId, QualityFlag, Quantity, Reading};
    use crate::store::{CommitStore, DeadLetter, ReadStore, WriteBatch};

    const HOUR: i64 = 3_600_000;

    fn readings(device: &str, quantity: &str, hours: std::ops::Range<i64>) -> Vec<Reading> {
        hours
            .map(|h| Reading {
                device: DeviceId::parse(device).unwrap(),
                quantity: Quantity::by_name(quantity).unwrap(),
                value: h as f64,
                time: DateTime::from_timestamp_millis(1_700_000_000_000 + h * HOUR).unwrap(),
                flag: QualityFlag::Good,
                reason: Default::default(),
            })
            .collect()
    }

    /// Run chunks until the walk ends; the rows deleted and the chunks it took.
    fn expire_all(store: &EmbeddedStore, max_rows: usize, cutoff: &dyn Fn(&str, &str) -> Option<i64>) -> (u64, usize) {
        let (mut cursor, mut deleted, mut chunks) = (SeriesCursor::default(), 0, 0);
        loop {
            let chunk = store.expire_readings(&cursor, max_rows, cutoff).unwrap();
            deleted += chunk.deleted;
            chunks += 1;
            assert!(chunk.deleted <= max_rows as u64);
            match chunk.next {
                Some(next) => cursor = next,
                None => return (deleted, chunks),
            }
        }
    }

    #[test]
    fn readings_older_than_their_series_cutoff_go_in_bounded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut all = readings("a", "air_temperature", 0..100);
        all.extend(readings("a", "battery_voltage", 0..100));
        all.extend(readings("b", "air_temperature", 0..100));
        store.write(&WriteBatch { readings: all, ..Default::default() }).unwrap();
        let at = |h: i64| 1_700_000_000_000 + h * HOUR;
        // a's battery keeps 10 hours, a's temperature 50, b's everything.
        let cutoff = |d: &str, q: &str| match (d, q) {
            ("a", "battery_voltage") => Some(at(90)),
            ("a", _) => Some(at(50)),
            _ => None,
        };
        let (deleted, chunks) = expire_all(&store, 7, &cutoff);
        assert_eq!(deleted, 90 + 50);
        assert!(chunks >= 20, "7 rows per chunk: {chunks} chunks");
        let left = |d: &str, q: &str| {
            store
                .readings(
                    &DeviceId::parse(d).unwrap(),
                    Quantity::by_name(q).unwrap(),
                    DateTime::from_timestamp_millis(0).unwrap(),
                    DateTime::from_timestamp_millis(at(1000)).unwrap(),
                    1000,
                )
                .unwrap()
        };
        assert_eq!(left("a", "battery_voltage").first().map(|r| r.time.timestamp_millis()), Some(at(90)));
        assert_eq!(left("a", "air_temperature").len(), 50);
        assert_eq!(left("b", "air_temperature").len(), 100);
        // Nothing more to do: a second walk deletes nothing.
        assert_eq!(expire_all(&store, 7, &cutoff).0, 0);
    }

    #[test]
    fn old_dead_letters_go_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let letter = |secs: i64| DeadLetter {
            id: 0,
            received_at: DateTime::from_timestamp(secs, 0).unwrap(),
            topic: "t".into(),
            format: "ttn-v3".into(),
            device: None,
            reason: "r".into(),
            // Ten different messages (one message is one letter).
            payload: secs.to_be_bytes().to_vec(),
        };
        let letters = (0..10).map(|i| letter(1_700_000_000 + i * 100)).collect();
        store.write(&WriteBatch { dead_letters: letters, ..Default::default() }).unwrap();
        let cutoff = DateTime::from_timestamp(1_700_000_000 + 650, 0).unwrap();
        assert_eq!(store.expire_dead_letters(4, cutoff).unwrap(), 4);
        assert_eq!(store.expire_dead_letters(4, cutoff).unwrap(), 3);
        assert_eq!(store.expire_dead_letters(4, cutoff).unwrap(), 0);
        assert_eq!(store.dead_letters(0, 100).unwrap().len(), 3);
    }

    #[test]
    fn rollups_and_device_windows_of_days_that_ended_before_the_cutoff_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut all = readings("a", "air_temperature", 0..(24 * 10));
        all.extend(readings("b", "air_temperature", 0..(24 * 10)));
        let mut batch = WriteBatch { readings: all, ..Default::default() };
        batch.districts.insert(DeviceId::parse("a").unwrap(), "Mitte".into());
        store.write(&batch).unwrap();
        store.flush_windows().unwrap();
        let count = |store: &EmbeddedStore| {
            store
                .table_space()
                .unwrap()
                .into_iter()
                .filter(|(name, _, _)| *name == "district windows" || *name == "device windows")
                .map(|(_, stored_bytes, _)| stored_bytes)
                .collect::<Vec<_>>()
        };
        let before = count(&store);
        assert_eq!(before.len(), 2, "both tables are measured");
        let cutoff = 1_700_000_000_000 + 5 * 24 * HOUR;
        let mut cursor = SeriesCursor::default();
        let mut deleted = 0;
        loop {
            let c = store.expire_rollups(&cursor, 5, cutoff).unwrap();
            deleted += c.deleted;
            match c.next {
                Some(n) => cursor = n,
                None => break,
            }
        }
        let mut cursor = SeriesCursor::default();
        loop {
            let c = store.expire_device_windows(&cursor, 5, cutoff).unwrap();
            deleted += c.deleted;
            match c.next {
                Some(n) => cursor = n,
                None => break,
            }
        }
        assert!(deleted > 0);
        let after = count(&store);
        assert!(after.iter().zip(&before).all(|(a, b)| a < b), "{before:?} -> {after:?}");
    }
}
