//! Rollup windows: district windows merged in the readings' own transaction; queries, extents and rebuilds of both kinds.
//!
//! A district's windows gather up to hundreds of devices, so a batch's readings are merged
//! into them as deltas in the batch's own transaction: few windows, many readings each. A
//! device's windows are stored by the deferred flush in `device_windows.rs`: storing them
//! batch by batch was measured to cost 69 % of store throughput (every commit rewrote a
//! window page per series and interval), against a 10 % budget.

use std::collections::{BTreeMap, BTreeSet};

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::aggregates::{Interval, RollupDelta, Scope, Window};
use crate::model::{QualityFlag, Quantity};
use crate::store::boundary::{engine, StoreError};
use crate::store::embedded::readings;
use crate::store::embedded::series;
use crate::store::embedded::tables::{DEVICE_DISTRICT, EXTENTS, READINGS, ROLLUPS, SERIES};

/// Merge a batch's deltas into the stored windows.
pub(in crate::store::embedded) fn apply(tx: &WriteTransaction, delta: &RollupDelta) -> Result<(), StoreError> {
    let mut table = tx.open_table(ROLLUPS).map_err(engine)?;
    for (district, windows) in &delta.windows {
        let scope = Scope::District(district.clone()).key();
        for ((quantity, code, start), d) in windows {
            let key = (scope.as_str(), *quantity, *code, *start);
            let mut w = match table.get(key).map_err(engine)? {
                Some(old) => Window::from_tuple(old.value()),
                None => Window::EMPTY,
            };
            w.merge(d);
            table.insert(key, w.as_tuple()).map_err(engine)?;
        }
    }
    Ok(())
}

/// Stored readings were replaced by different values: recompute the district windows that
/// hold them, each window once per batch however many of its readings changed. (Once per
/// changed reading made a burst of corrections in one district-day quadratic: every one
/// rescanned the whole day.) Only a ten-minute window is recomputed from the readings of the
/// district's devices; an hour is merged from its stored ten-minute windows and a day from its
/// hours, once those are recomputed. Rescanning a day's readings for each batch made a device
/// flooding one instant (a wrong clock: its readings stored at their reception time, several
/// a millisecond) cost a day's readings per batch.
pub(in crate::store::embedded) fn recompute<'a>(
    tx: &WriteTransaction,
    changed: impl IntoIterator<Item = (&'a str, Quantity, i64)>,
) -> Result<(), StoreError> {
    let readings = tx.open_table(READINGS).map_err(engine)?;
    let numbers = tx.open_table(SERIES).map_err(engine)?;
    let mut rollups = tx.open_table(ROLLUPS).map_err(engine)?;
    let districts = tx.open_table(DEVICE_DISTRICT).map_err(engine)?;
    // The windows to recompute, finest first: interval, district, quantity, start.
    let mut windows: BTreeSet<(Interval, String, Quantity, i64)> = BTreeSet::new();
    for (device, quantity, t_ms) in changed {
        let Some(district) = districts.get(device).map_err(engine)?.map(|d| d.value().to_owned()) else {
            continue;
        };
        for interval in Interval::ALL {
            windows.insert((interval, district.clone(), quantity, interval.window_start(t_ms)));
        }
    }
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (interval, district, quantity, start) in windows {
        let scope = Scope::District(district.clone()).key();
        let (s, q) = (scope.as_str(), quantity.name());
        let mut w = Window::EMPTY;
        if let Some(finer) = finer(interval) {
            for entry in
                rollups.range((s, q, finer.code(), start)..(s, q, finer.code(), start + interval.millis())).map_err(engine)?
            {
                let (_, v) = entry.map_err(engine)?;
                w.merge(&Window::from_tuple(v.value()));
            }
        } else {
            if !members.contains_key(&district) {
                let mut of_district = Vec::new();
                for entry in districts.iter().map_err(engine)? {
                    let (dev, dist) = entry.map_err(engine)?;
                    if dist.value() == district {
                        of_district.push(dev.value().to_owned());
                    }
                }
                members.insert(district.clone(), of_district);
            }
            for member in members.get(&district).into_iter().flatten() {
                let Some(key) = series::key(&numbers, member, q)? else { continue };
                for entry in readings::series(&readings, key, start, start + interval.millis())? {
                    let stored = entry?;
                    w.add(stored.value, stored.ms, QualityFlag::from_byte(stored.flag));
                }
            }
        }
        rollups.insert((s, q, interval.code(), start), w.as_tuple()).map_err(engine)?;
    }
    Ok(())
}

/// The interval whose windows tile one of `interval`'s, if it is not the finest.
fn finer(interval: Interval) -> Option<Interval> {
    match interval {
        Interval::TenMinutes => None,
        Interval::Hour => Some(Interval::TenMinutes),
        Interval::Day => Some(Interval::Hour),
    }
}

/// Record which district each open device's windows count towards.
pub(in crate::store::embedded) fn set_districts<'a>(
    tx: &WriteTransaction,
    districts: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<(), StoreError> {
    let mut table = tx.open_table(DEVICE_DISTRICT).map_err(engine)?;
    for (device, district) in districts {
        let same = table.get(device).map_err(engine)?.is_some_and(|d| d.value() == district);
        if !same {
            table.insert(device, district).map_err(engine)?;
        }
    }
    Ok(())
}

/// The stored windows of one scope and quantity with `from <= start < to`, oldest first.
/// (A device's may lag its readings until the next flush: see `device_windows::query`.)
pub(in crate::store::embedded) fn stored(
    tx: &ReadTransaction,
    scope: &Scope,
    quantity: Quantity,
    interval: Interval,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, Window)>, StoreError> {
    let table = tx.open_table(ROLLUPS).map_err(engine)?;
    let key = scope.key();
    let (s, q, c) = (key.as_str(), quantity.name(), interval.code());
    let mut out = Vec::new();
    for entry in table.range((s, q, c, from_ms)..(s, q, c, to_ms)).map_err(engine)? {
        let (k, v) = entry.map_err(engine)?;
        out.push((k.value().3, Window::from_tuple(v.value())));
    }
    Ok(out)
}

/// First and last time (ms) of a scope's data: readings for a device, day-window starts for a district.
pub(in crate::store::embedded) fn extent(
    tx: &ReadTransaction,
    scope: &Scope,
    quantity: Quantity,
) -> Result<Option<(i64, i64)>, StoreError> {
    let q = quantity.name();
    let (first, last) = match scope {
        Scope::Device(device) => {
            let Some(key) = series::key(&tx.open_table(SERIES).map_err(engine)?, device.as_str(), q)? else {
                return Ok(None);
            };
            let extents = readings::extents(&tx.open_table(EXTENTS).map_err(engine)?, key.device)?;
            let Some(&(_, first, last)) = extents.iter().find(|e| e.0 == key.series) else { return Ok(None) };
            let table = tx.open_table(READINGS).map_err(engine)?;
            // The last is the newest reading unless retention removed them all; the first a
            // lower bound that retention may have passed.
            if readings::at(&table, key, last)?.is_none() {
                return Ok(None);
            }
            let first = readings::series(&table, key, first, last)?.next().transpose()?.map_or(last, |r| r.ms);
            (Some(first), Some(last))
        }
        Scope::District(_) => {
            let table = tx.open_table(ROLLUPS).map_err(engine)?;
            let key = scope.key();
            let (s, c) = (key.as_str(), Interval::Day.code());
            let mut range = table.range((s, q, c, i64::MIN)..=(s, q, c, i64::MAX)).map_err(engine)?;
            let first = range.next().transpose().map_err(engine)?.map(|(k, _)| k.value().3);
            let last = range.next_back().transpose().map_err(engine)?.map(|(k, _)| k.value().3);
            (first, last.or(first))
        }
    };
    Ok(first.zip(last))
}

/// Recompute every window (device and district) that starts in `[from_ms, to_ms)` (widened
/// to whole days) from the stored readings, in one transaction. `district_of` names the
/// district of each open device. The caller flushes the window journal first.
pub(in crate::store::embedded) fn rebuild(
    db: &redb::Database,
    from_ms: i64,
    to_ms: i64,
    district_of: &dyn Fn(&str) -> Option<String>,
) -> Result<RebuildSummary, StoreError> {
    let from = Interval::Day.window_start(from_ms);
    let to = Interval::Day.window_start(to_ms.saturating_sub(1)).saturating_add(Interval::Day.millis());
    let mut delta = RollupDelta::default();
    let mut summary = RebuildSummary::default();
    let tx = db.begin_write().map_err(engine)?;
    (summary.readings, summary.device_windows) = super::devices::build(&tx, from, to)?;
    {
        let readings = tx.open_table(READINGS).map_err(engine)?;
        let numbers = tx.open_table(SERIES).map_err(engine)?;
        for (device, q, key) in series::all(&numbers)? {
            let Some(district) = district_of(&device) else { continue };
            for entry in readings::series(&readings, key, from, to)? {
                let stored = entry?;
                delta.add_to_district(&district, q, stored.ms, stored.value, QualityFlag::from_byte(stored.flag));
            }
        }
        let mut rollups = tx.open_table(ROLLUPS).map_err(engine)?;
        rollups.retain(|(_, _, _, start), _| !(from..to).contains(&start)).map_err(engine)?;
        let mut districts = tx.open_table(DEVICE_DISTRICT).map_err(engine)?;
        districts.retain(|device, _| district_of(device).is_some()).map_err(engine)?;
    }
    summary.district_windows = delta.len();
    apply(&tx, &delta)?;
    tx.commit().map_err(engine)?;
    Ok(summary)
}

/// What a rebuild did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RebuildSummary {
    pub readings: u64,
    pub device_windows: usize,
    pub district_windows: usize,
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use crate::aggregates::{Interval, Scope, Window};
    use crate::model::{DeviceId, QualityFlag, Quantity, Reading};
    use crate::store::{CommitStore, EmbeddedStore, ReadStore, WriteBatch};

    const T0: i64 = 1_780_272_000_000; // 2026-06-01T00:00:00Z

    fn batch(readings: &[(&str, i64, f64, QualityFlag)]) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for &(device, minute, value, flag) in readings {
            let id = DeviceId::parse(device).unwrap();
            batch.readings.push(Reading {
                device: id.clone(),
                quantity: Quantity::by_name("air_temperature").unwrap(),
                value,
                time: DateTime::from_timestamp_millis(T0 + minute * 60_000).unwrap(),
                flag,
                reason: String::new(),
            });
            batch.districts.insert(id, "Altstadt".into());
        }
        batch
    }

    fn district_windows(store: &EmbeddedStore) -> Vec<Vec<(DateTime<Utc>, Window)>> {
        let (from, to) =
            (DateTime::from_timestamp_millis(T0).unwrap(), DateTime::from_timestamp_millis(T0 + 2 * 86_400_000).unwrap());
        let t = Quantity::by_name("air_temperature").unwrap();
        Interval::ALL.iter().map(|&i| store.rollups(&Scope::District("Altstadt".into()), t, i, from, to).unwrap()).collect()
    }

    /// Values are multiples of 1/4, so every order of summing gives the same bits.
    #[test]
    fn replaced_readings_leave_the_district_windows_as_if_only_the_final_values_had_come() {
        use QualityFlag::{Bad, Good, Suspect};
        let first: Vec<(&str, i64, f64, QualityFlag)> = (0..200)
            .flat_map(|i| [("dev-a", i * 11, (i % 37) as f64 * 0.25, Good), ("dev-b", i * 13 + 5, -(i % 23) as f64 * 0.5, Good)])
            .collect();
        // Replacements: a new maximum, the old maximum lowered, a good reading made bad, the
        // same instant twice in one batch (the last one stays), and one in the next day.
        let corrections = [
            vec![("dev-a", 11 * 36, 99.25, Good), ("dev-b", 5, 3.0, Bad), ("dev-a", 0, 1.5, Suspect)],
            vec![("dev-a", 11 * 36, 2.75, Good), ("dev-b", 13 * 150 + 5, -30.5, Good), ("dev-b", 13 * 150 + 5, -1.25, Good)],
            vec![("dev-a", 11 * 199, 7.0, Good), ("dev-b", 18, 4.0, Good)],
        ];
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.write(&batch(&first)).unwrap();
        for c in &corrections {
            store.write(&batch(c)).unwrap();
        }

        let mut last: std::collections::BTreeMap<(&str, i64), (f64, QualityFlag)> = Default::default();
        for &(d, m, v, f) in first.iter().chain(corrections.iter().flatten()) {
            last.insert((d, m), (v, f));
        }
        let finals: Vec<_> = last.iter().map(|(&(d, m), &(v, f))| (d, m, v, f)).collect();
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = EmbeddedStore::open(fresh_dir.path()).unwrap();
        fresh.write(&batch(&finals)).unwrap();

        let (ours, theirs) = (district_windows(&store), district_windows(&fresh));
        assert!(ours.iter().all(|w| !w.is_empty()));
        assert_eq!(ours, theirs);
        // The days hold every reading once, 400, one of them bad; the replaced maximum is gone.
        let days = &ours[2];
        let (count, excluded) = days.iter().fold((0, 0), |(c, e), (_, w)| (c + w.count, e + w.excluded));
        assert_eq!((count, excluded), (399, 1), "{days:?}");
        assert!(days.iter().all(|(_, w)| w.max < 99.0), "{days:?}");
    }
}
