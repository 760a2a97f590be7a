//! Moving the readings of a store written before a row per uplink into rows, in steps, when
//! such a store is opened.

use std::collections::HashMap;

use redb::{Database, ReadableTable, TableHandle};

use super::readings::{self, Entry, ToStore};
use super::series::{Committed, Numbering};
use super::tables::READINGS_BY_SERIES;
use crate::store::boundary::{engine, StoreError};

/// Readings moved per transaction: memory stays bounded, and a move that is interrupted goes
/// on from where its last step committed at the next open.
/// (A few in tests, so that a row's readings arrive in different steps.)
const STEP: usize = if cfg!(test) { 7 } else { 200_000 };

/// Move every reading of the series-keyed table into the rows of its device and millisecond,
/// a step per transaction, then drop the old table. The number of readings moved.
pub(super) fn rows_per_uplink(db: &Database) -> Result<u64, StoreError> {
    let mut moved = 0;
    loop {
        let tx = db.begin_write().map_err(engine)?;
        if !tx.list_tables().map_err(engine)?.any(|t| t.name() == READINGS_BY_SERIES.name()) {
            return Ok(moved);
        }
        let step = {
            let mut old = tx.open_table(READINGS_BY_SERIES).map_err(engine)?;
            let mut taken: Vec<(u32, i64, f64, u8, String)> = Vec::new();
            for entry in old.iter().map_err(engine)?.take(STEP) {
                let (k, v) = entry.map_err(engine)?;
                let ((n, ms), (value, flag, reason)) = (k.value(), v.value());
                taken.push((n, ms, value, flag, reason.to_owned()));
            }
            if let Some(&(n, ms, ..)) = taken.last() {
                old.retain_in(..=(n, ms), |_, _| false).map_err(engine)?;
            }
            let committed = Committed::default();
            let mut numbering = Numbering::open(&tx, &committed)?;
            let mut devices: HashMap<u32, Option<u32>> = HashMap::new();
            let mut rows = Vec::with_capacity(taken.len());
            for (n, ms, value, flag, reason) in &taken {
                let d = match devices.get(n) {
                    Some(d) => *d,
                    None => *devices.entry(*n).or_insert(numbering.device_of(*n)?),
                };
                // A reading of a series without a name cannot be read back: it stays out.
                let Some(d) = d else { continue };
                let entry = Entry { series: *n, value: *value, flag: *flag, reason: reason.into() };
                rows.push(ToStore { key: (d, *ms), entry });
            }
            drop(numbering);
            rows.sort_by_key(|r| (r.key, r.entry.series));
            readings::write(&mut readings::open(&tx)?, &rows, |_, _| {})?;
            taken.len()
        };
        if step == 0 {
            tx.delete_table(READINGS_BY_SERIES).map_err(engine)?;
        }
        tx.commit().map_err(engine)?;
        moved += step as u64;
        if step > 0 {
            tracing::info!(readings = moved, "readings moved into a row per uplink (first start of this version)");
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use redb::{ReadableDatabase, ReadableTable};

    use crate::aggregates::{Interval, Scope};
    use crate::model::{DeviceId, QualityFlag, Quantity, Reading};
    use crate::store::embedded::tables::{EXTENTS, READINGS, READINGS_BY_SERIES, SERIES, SERIES_NAMES};
    use crate::store::embedded::{readings, EmbeddedStore};
    use crate::store::{CommitStore, ReadStore, WriteBatch};

    const T0: i64 = 1_780_272_000_000;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    /// Everything a reader sees of a device: each series, the newest readings, hour windows,
    /// each series' extent and the readings at two instants.
    fn seen(store: &EmbeddedStore, devices: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for d in devices {
            let id = DeviceId::parse(d).unwrap();
            out.push(format!("{:?}", store.latest(&id).unwrap()));
            out.push(format!("{:?}", store.at(&id, at(T0)).unwrap()));
            out.push(format!("{:?}", store.free_from(&id, at(T0)).unwrap()));
            for q in Quantity::all() {
                out.push(format!("{:?}", store.readings(&id, q, at(0), at(T0 * 2), 1000).unwrap()));
                let scope = Scope::Device(d.to_string());
                out.push(format!("{:?}", store.rollups(&scope, q, Interval::Hour, at(0), at(T0 * 2)).unwrap()));
                out.push(format!("{:?}", store.extent(&scope, q).unwrap()));
            }
        }
        out
    }

    #[test]
    fn a_store_with_a_row_per_reading_moves_them_into_rows_per_uplink_in_steps_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let devices = ["a", "b"];
        let before = {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let mut batch = Vec::new();
            for (i, d) in devices.iter().enumerate() {
                for m in 0..40 {
                    let time = at(T0 + m * 60_000);
                    let one = |q: &str, value: f64, flag: QualityFlag, reason: &str| Reading {
                        device: DeviceId::parse(d).unwrap(),
                        quantity: Quantity::by_name(q).unwrap(),
                        value,
                        time,
                        flag,
                        reason: reason.into(),
                    };
                    batch.push(one("air_temperature", m as f64 + i as f64, QualityFlag::Good, ""));
                    // Humidity every other minute, flagged now and then: rows differ.
                    if m % 2 == 0 {
                        let flag = if m % 6 == 0 { QualityFlag::Suspect } else { QualityFlag::Good };
                        batch.push(one("relative_humidity", 50.0 + m as f64, flag, if m % 6 == 0 { "stuck: 1 h" } else { "" }));
                    }
                }
            }
            store.write(&WriteBatch { readings: batch, ..Default::default() }).unwrap();
            store.flush_windows().unwrap();
            let seen = seen(&store, &devices);
            // What the version before rows per uplink left: a row per reading keyed (series,
            // time), no device numbers, no extents.
            store
                .with_db(|db| {
                    let tx = db.begin_write().unwrap();
                    {
                        let rows = tx.open_table(READINGS).unwrap();
                        let mut old = tx.open_table(READINGS_BY_SERIES).unwrap();
                        for row in rows.iter().unwrap() {
                            let (k, v) = row.unwrap();
                            for e in readings::entries(v.value()) {
                                let e = e.unwrap();
                                old.insert((e.series, k.value().1), (e.value, e.flag, &*e.reason)).unwrap();
                            }
                        }
                        let mut series = tx.open_table(SERIES).unwrap();
                        let mut names = tx.open_table(SERIES_NAMES).unwrap();
                        for d in devices {
                            let n = series.remove((d, "")).unwrap().unwrap().value();
                            names.remove(n).unwrap();
                        }
                    }
                    tx.delete_table(READINGS).unwrap();
                    tx.delete_table(EXTENTS).unwrap();
                    tx.commit().unwrap();
                    Ok(())
                })
                .unwrap();
            seen
        };
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.count_readings().unwrap(), 2 * 60, "every reading moved");
        assert_eq!(seen(&store, &devices), before);
        store
            .with_db(|db| {
                let tx = db.begin_read().unwrap();
                assert!(tx.open_table(READINGS_BY_SERIES).is_err(), "the old table is gone");
                assert_eq!(
                    redb::ReadableTableMetadata::len(&tx.open_table(READINGS).unwrap()).unwrap(),
                    2 * 40,
                    "a row per uplink"
                );
                Ok(())
            })
            .unwrap();
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(seen(&store, &devices), before, "a second open moves nothing again");
    }
}
