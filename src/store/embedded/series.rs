//! Device and series numbers: each device and each (device, quantity) that has readings gets
//! a number once; readings rows are keyed by (device number, time) and name their series.
//!
//! A write takes a number from those known to be committed ([`Committed`], kept by the
//! store), else from the table, numbering a new device or series in the same transaction; a
//! read looks up the one it wants. Numbers are never reused or changed, so a number once
//! committed stays right for as long as the file is the same. A device's own number is its
//! row (device, "") in the series table, from the same sequence.

use std::collections::HashMap;

use redb::{ReadableTable, Table, TableHandle, WriteTransaction};

use super::readings::SeriesKey;
use super::tables::{READINGS_BY_NAME, READINGS_BY_SERIES, SERIES, SERIES_NAMES};
use crate::model::Quantity;
use crate::store::boundary::{engine, StoreError};

/// The number of `device`'s `quantity`, if it has ever had a reading.
pub(super) fn number(
    series: &impl ReadableTable<(&'static str, &'static str), u32>,
    device: &str,
    quantity: &str,
) -> Result<Option<u32>, StoreError> {
    Ok(series.get((device, quantity)).map_err(engine)?.map(|n| n.value()))
}

/// The number of `device`, if it has ever had a reading.
pub(super) fn device(
    series: &impl ReadableTable<(&'static str, &'static str), u32>,
    device: &str,
) -> Result<Option<u32>, StoreError> {
    number(series, device, "")
}

/// Where `device`'s `quantity` is found in the readings table, if it has ever had a reading.
pub(super) fn key(
    series: &impl ReadableTable<(&'static str, &'static str), u32>,
    device: &str,
    quantity: &str,
) -> Result<Option<SeriesKey>, StoreError> {
    let Some(n) = number(series, device, quantity)? else { return Ok(None) };
    let Some(d) = self::device(series, device)? else { return Ok(None) };
    Ok(Some(SeriesKey { device: d, series: n }))
}

/// The quantities `device` has had readings of, with their series numbers, in the order of
/// [`Quantity::all`].
pub(super) fn of_device(
    series: &impl ReadableTable<(&'static str, &'static str), u32>,
    device: &str,
) -> Result<Vec<(Quantity, u32)>, StoreError> {
    let mut out: Vec<(Quantity, u32)> =
        named(series, device)?.into_iter().filter_map(|(q, n)| Some((Quantity::by_name(&q)?, n))).collect();
    out.sort_unstable_by_key(|(q, _)| *q);
    Ok(out)
}

/// Every series of `device` as (quantity name, number), a quantity this version does not
/// know included, in name order.
pub(super) fn named(
    series: &impl ReadableTable<(&'static str, &'static str), u32>,
    device: &str,
) -> Result<Vec<(String, u32)>, StoreError> {
    let mut out = Vec::new();
    for entry in series.range((device, "")..).map_err(engine)? {
        let (k, n) = entry.map_err(engine)?;
        let (d, q) = k.value();
        if d != device {
            break;
        }
        if !q.is_empty() {
            out.push((q.to_owned(), n.value()));
        }
    }
    Ok(out)
}

/// Every series of a quantity this version knows, as (device, quantity, key), in device order.
pub(super) fn all(
    series: &impl ReadableTable<(&'static str, &'static str), u32>,
) -> Result<Vec<(String, Quantity, SeriesKey)>, StoreError> {
    let mut out = Vec::new();
    // A device's own row (device, "") sorts before its series.
    let mut device: Option<(String, u32)> = None;
    for entry in series.iter().map_err(engine)? {
        let (k, n) = entry.map_err(engine)?;
        let (d, q) = k.value();
        if q.is_empty() {
            device = Some((d.to_owned(), n.value()));
            continue;
        }
        let (Some((name, number)), Some(quantity)) = (&device, Quantity::by_name(q)) else { continue };
        if name == d {
            out.push((d.to_owned(), quantity, SeriesKey { device: *number, series: n.value() }));
        }
    }
    Ok(out)
}

/// A number taken from the table in a transaction: (device, quantity or `None` for the
/// device's own, number).
pub(super) type Found = (String, Option<Quantity>, u32);

/// Series numbers known to be committed, by device, filled after commits only (so it never
/// holds a number a failed transaction gave). Without it, a network of many devices, whose
/// batches switch device with every uplink, looked every reading's number up in the table.
#[derive(Default)]
pub(super) struct Committed {
    by_device: HashMap<String, Known>,
}

/// A device's numbers: its own and its series'.
#[derive(Default)]
struct Known {
    device: Option<u32>,
    series: Vec<(Quantity, u32)>,
}

impl Committed {
    /// Devices remembered at most; past it the map starts again.
    const MAX_DEVICES: usize = 100_000;

    fn get(&self, device: &str) -> Option<&Known> {
        self.by_device.get(device)
    }

    /// Note numbers whose transaction committed.
    pub(super) fn add(&mut self, found: Vec<Found>) {
        for (device, quantity, n) in found {
            if !self.by_device.contains_key(&device) && self.by_device.len() >= Self::MAX_DEVICES {
                self.by_device.clear();
            }
            let known = self.by_device.entry(device).or_default();
            match quantity {
                None => known.device = Some(n),
                Some(quantity) if !known.series.iter().any(|(q, _)| *q == quantity) => known.series.push((quantity, n)),
                Some(_) => {}
            }
        }
    }

    /// Forget everything (the file was opened again).
    pub(super) fn clear(&mut self) {
        self.by_device.clear();
    }
}

/// Numbers series inside a write transaction, remembering those of the device last asked for
/// (a batch holds each uplink's readings together).
pub(super) struct Numbering<'t, 'k> {
    series: Table<'t, (&'static str, &'static str), u32>,
    names: Table<'t, u32, (&'static str, &'static str)>,
    committed: &'k Committed,
    device: String,
    known: Known,
    /// Numbers this transaction took from the table (new ones included): for
    /// [`Committed::add`] once it has committed.
    pub(super) found: Vec<Found>,
}

impl<'t, 'k> Numbering<'t, 'k> {
    pub(super) fn open(tx: &'t WriteTransaction, committed: &'k Committed) -> Result<Self, StoreError> {
        Ok(Self {
            series: tx.open_table(SERIES).map_err(engine)?,
            names: tx.open_table(SERIES_NAMES).map_err(engine)?,
            committed,
            device: String::new(),
            known: Known::default(),
            found: Vec::new(),
        })
    }

    /// Where `device`'s `quantity` goes, numbering the device and the series now if new.
    pub(super) fn get(&mut self, device: &str, quantity: Quantity) -> Result<SeriesKey, StoreError> {
        if self.device != device {
            self.device.clear();
            self.device.push_str(device);
            let known = self.committed.get(device);
            self.known.device = known.and_then(|k| k.device);
            self.known.series.clear();
            self.known.series.extend_from_slice(known.map(|k| k.series.as_slice()).unwrap_or_default());
        }
        let d = match self.known.device {
            Some(d) => d,
            None => {
                let d = self.number_or_new(device, "")?;
                self.known.device = Some(d);
                self.found.push((device.to_owned(), None, d));
                d
            }
        };
        if let Some(&(_, n)) = self.known.series.iter().find(|(q, _)| *q == quantity) {
            return Ok(SeriesKey { device: d, series: n });
        }
        let n = self.number_or_new(device, quantity.name())?;
        self.known.series.push((quantity, n));
        self.found.push((device.to_owned(), Some(quantity), n));
        Ok(SeriesKey { device: d, series: n })
    }

    /// The number of the device whose series is number `n`, numbering the device now if
    /// it has none; `None` if no series has that number.
    pub(super) fn device_of(&mut self, n: u32) -> Result<Option<u32>, StoreError> {
        let Some(name) = self.names.get(n).map_err(engine)? else { return Ok(None) };
        let device = name.value().0.to_owned();
        drop(name);
        self.number_or_new(&device, "").map(Some)
    }

    pub(super) fn number_or_new(&mut self, device: &str, quantity: &str) -> Result<u32, StoreError> {
        if let Some(n) = number(&self.series, device, quantity)? {
            return Ok(n);
        }
        let n = match self.names.last().map_err(engine)? {
            Some((last, _)) => last.value().checked_add(1).ok_or_else(|| StoreError::Corrupt("series numbers ran out".into()))?,
            None => 0,
        };
        self.series.insert((device, quantity), n).map_err(engine)?;
        self.names.insert(n, (device, quantity)).map_err(engine)?;
        Ok(n)
    }
}

/// Move the readings of a store written before series numbers into the series-keyed table, in the
/// caller's transaction (the opening one: an interrupted move runs again at the next start).
/// The number of readings moved.
pub(super) fn migrate(tx: &WriteTransaction) -> Result<u64, StoreError> {
    let exists = tx.list_tables().map_err(engine)?.any(|t| t.name() == READINGS_BY_NAME.name());
    if !exists {
        return Ok(0);
    }
    let mut moved = 0;
    {
        let old = tx.open_table(READINGS_BY_NAME).map_err(engine)?;
        let mut readings = tx.open_table(READINGS_BY_SERIES).map_err(engine)?;
        let committed = Committed::default();
        let mut numbering = Numbering::open(tx, &committed)?;
        // The old table is in (device, quantity, time) order: one lookup per series.
        let mut current: Option<(String, String, u32)> = None;
        for entry in old.iter().map_err(engine)? {
            let (k, v) = entry.map_err(engine)?;
            let (device, quantity, t) = k.value();
            let n = match &current {
                Some((d, q, n)) if d == device && q == quantity => *n,
                _ => {
                    let n = numbering.number_or_new(device, quantity)?;
                    current = Some((device.to_owned(), quantity.to_owned(), n));
                    n
                }
            };
            readings.insert((n, t), v.value()).map_err(engine)?;
            moved += 1;
        }
    }
    tx.delete_table(READINGS_BY_NAME).map_err(engine)?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use redb::ReadableDatabase;

    use super::*;
    use crate::aggregates::{Interval, Scope};
    use crate::model::{DeviceId, QualityFlag, Reading};
    use crate::store::embedded::tables::{DEVICE_WINDOWS, EXTENTS, READINGS, WINDOW_JOURNAL};
    use crate::store::embedded::EmbeddedStore;
    use crate::store::{CommitStore, ReadStore, WriteBatch};

    const T0: i64 = 1_780_272_000_000;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn reading(device: &str, q: &str, minute: i64, value: f64) -> Reading {
        Reading {
            device: DeviceId::parse(device).unwrap(),
            quantity: Quantity::by_name(q).unwrap(),
            value,
            time: at(T0 + minute * 60_000),
            flag: if value < 0.0 { QualityFlag::Bad } else { QualityFlag::Good },
            reason: if value < 0.0 { "range: below".into() } else { Default::default() },
        }
    }

    /// Everything a reader sees of the devices' series: readings, the newest ones, hour windows.
    fn seen(store: &EmbeddedStore, devices: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for d in devices {
            let id = DeviceId::parse(d).unwrap();
            out.push(format!("{:?}", store.latest(&id).unwrap()));
            for q in Quantity::all() {
                out.push(format!("{:?}", store.readings(&id, q, at(0), at(T0 * 2), 1000).unwrap()));
                let hours = store.rollups(&Scope::Device(d.to_string()), q, Interval::Hour, at(0), at(T0 * 2)).unwrap();
                out.push(format!("{hours:?}"));
            }
        }
        out
    }

    #[test]
    fn only_committed_numbers_are_remembered_and_a_remembered_one_is_not_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("n.redb")).unwrap();
        let t = Quantity::by_name("air_temperature").unwrap();
        let h = Quantity::by_name("relative_humidity").unwrap();
        let mut committed = Committed::default();
        // A transaction that numbers x's temperature and then fails: nothing is remembered.
        let tx = db.begin_write().unwrap();
        {
            let mut numbering = Numbering::open(&tx, &committed).unwrap();
            assert_eq!(numbering.get("x", t).unwrap(), SeriesKey { device: 0, series: 1 });
            assert_eq!(numbering.found, vec![("x".to_owned(), None, 0), ("x".to_owned(), Some(t), 1)]);
        }
        tx.abort().unwrap();
        // The next one gives 0 to y and 1, 2 to its series; it commits, and y's numbers are remembered.
        let tx = db.begin_write().unwrap();
        let found = {
            let mut numbering = Numbering::open(&tx, &committed).unwrap();
            let key = |series| SeriesKey { device: 0, series };
            assert_eq!((numbering.get("y", t).unwrap(), numbering.get("y", h).unwrap()), (key(1), key(2)));
            assert_eq!(numbering.get("y", t).unwrap(), key(1), "the device's numbers are kept for the batch");
            std::mem::take(&mut numbering.found)
        };
        tx.commit().unwrap();
        assert_eq!(found.len(), 3);
        committed.add(found);
        // x gets a number of its own; y's come from memory, not from the table.
        let tx = db.begin_write().unwrap();
        let mut numbering = Numbering::open(&tx, &committed).unwrap();
        assert_eq!(numbering.get("x", t).unwrap(), SeriesKey { device: 3, series: 4 });
        let key = |series| SeriesKey { device: 0, series };
        assert_eq!((numbering.get("y", h).unwrap(), numbering.get("y", t).unwrap()), (key(2), key(1)));
        assert_eq!(numbering.found, vec![("x".to_owned(), None, 3), ("x".to_owned(), Some(t), 4)]);
    }

    #[test]
    fn a_store_keyed_by_names_moves_its_readings_to_series_numbers_at_open_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let devices = ["a", "ab", "b"];
        let before = {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let mut readings = Vec::new();
            for (i, d) in devices.iter().enumerate() {
                for m in 0..150 {
                    readings.push(reading(d, "air_temperature", m * 7, (m + i as i64) as f64 % 13.0 - 1.0));
                    readings.push(reading(d, "relative_humidity", m * 5, 50.0 + m as f64));
                }
            }
            store.write(&WriteBatch { readings, ..Default::default() }).unwrap();
            store.flush_windows().unwrap();
            let seen = seen(&store, &devices);
            // What a version before series numbers left: readings keyed by names, one of a
            // quantity this version does not know, no series tables, no device windows.
            store
                .with_db(|db| {
                    let tx = db.begin_write().unwrap();
                    {
                        let mut old = tx.open_table(READINGS_BY_NAME).unwrap();
                        for d in devices {
                            for q in Quantity::all() {
                                let id = DeviceId::parse(d).unwrap();
                                for r in store.readings(&id, q, at(0), at(T0 * 2), 1000).unwrap() {
                                    let value = (r.value, r.flag.to_byte(), r.reason.as_str());
                                    old.insert((d, q.name(), r.time.timestamp_millis()), value).unwrap();
                                }
                            }
                        }
                        old.insert(("a", "retired_quantity", T0), (1.0, 0, "")).unwrap();
                    }
                    for table in [
                        READINGS.name(),
                        EXTENTS.name(),
                        SERIES.name(),
                        SERIES_NAMES.name(),
                        DEVICE_WINDOWS.name(),
                        WINDOW_JOURNAL.name(),
                    ] {
                        assert!(tx.delete_table(redb::TableDefinition::<u64, u64>::new(table)).unwrap());
                    }
                    tx.commit().unwrap();
                    Ok(())
                })
                .unwrap();
            seen
        };
        // A backup of such a store is accepted, restored, and moved at its first open.
        let snapshot = dir.path().join("older.redb");
        std::fs::copy(dir.path().join(crate::store::embedded::backup::FILE_NAME), &snapshot).unwrap();
        let inspected = crate::store::embedded::backup::inspect(&snapshot).unwrap();
        assert!(inspected.tables.contains(&("readings".to_owned(), 3 * 300 + 1)), "{:?}", inspected.tables);
        let restored = tempfile::tempdir().unwrap();
        crate::store::embedded::backup::restore(&snapshot, restored.path()).unwrap();
        assert_eq!(seen(&EmbeddedStore::open(restored.path()).unwrap(), &devices), before);

        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.count_readings().unwrap(), 3 * 300 + 1, "every reading moved, the unknown quantity's too");
        assert_eq!(seen(&store, &devices), before);
        // The moved series keep their numbers for new readings; a new series gets the next one.
        store
            .write(&WriteBatch {
                readings: vec![reading("a", "air_temperature", 5000, 3.0), reading("c", "air_temperature", 0, 1.0)],
                ..Default::default()
            })
            .unwrap();
        let a = DeviceId::parse("a").unwrap();
        let temperature = Quantity::by_name("air_temperature").unwrap();
        assert_eq!(store.readings(&a, temperature, at(0), at(T0 * 2), 1000).unwrap().len(), 151);
        let numbers = store
            .with_db(|db| {
                let tx = db.begin_read().unwrap();
                assert!(!tx.list_tables().unwrap().any(|t| t.name() == READINGS_BY_NAME.name()), "the old table is gone");
                let names = tx.open_table(SERIES_NAMES).unwrap();
                Ok(names.iter().unwrap().map(|e| e.unwrap().0.value()).collect::<Vec<u32>>())
            })
            .unwrap();
        assert_eq!(
            numbers,
            (0..12).collect::<Vec<u32>>(),
            "3 devices x 2 quantities and the retired one, then the 3 devices, then c and its temperature"
        );
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.count_readings().unwrap(), 3 * 300 + 3, "a second open moves nothing again");
    }
}
