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
    for (district, windows) in delta.windows() {
        let scope = Scope::District(district.to_owned()).key();
        for ((quantity, code, start), d) in &windows {
            let key = (scope.as_str(), quantity.name(), *code, *start);
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

/// A stored reading of an open device that a batch replaced by another value or flag.
pub(in crate::store::embedded) struct Replaced<'a> {
    pub device: &'a str,
    /// The device's district in the batch.
    pub district: &'a str,
    pub quantity: Quantity,
    pub ms: i64,
    pub old: (f64, QualityFlag),
    pub new: (f64, QualityFlag),
}

/// A reading of an open device as a batch wrote it (new, repeated or replacing).
pub(in crate::store::embedded) struct Written<'a> {
    pub device: &'a str,
    /// The device's district in the batch.
    pub district: &'a str,
    pub quantity: Quantity,
    pub ms: i64,
    pub value: f64,
    pub flag: QualityFlag,
}

/// Stored readings were replaced by different values (`replaced`; `written`: the batch's
/// readings of open devices, in batch order, the new ones already merged into the stored
/// windows): bring the district windows that hold
/// them up to date, each window once per batch however many of its readings changed. (Once
/// per changed reading made a burst of corrections in one district-day quadratic: every one
/// rescanned the whole day.)
///
/// A ten-minute window is patched where the patch is what a rescan would give (see
/// [`patched`]): a reading stored at its reception time and moved aside, its millisecond
/// taken by a measured one, is removed from one place and added at the next, and rescanning
/// for it read every reading of the district in the window (a million-uplink burst of one
/// device spent 2.5 of its 11 s of CPU there). Otherwise it is recomputed from the readings
/// of the district's devices, every quantity of the district's window rescanned in one pass
/// over each device's rows. An hour is merged from its stored ten-minute windows and a day
/// from its hours, once those are up to date. Rescanning a day's readings for each batch made a
/// device flooding one instant (a wrong clock: its readings stored at their reception time,
/// several a millisecond) cost a day's readings per batch.
pub(in crate::store::embedded) fn recompute<'a>(
    tx: &WriteTransaction,
    replaced: &[Replaced<'a>],
    written: impl IntoIterator<Item = Written<'a>>,
) -> Result<(), StoreError> {
    let readings = tx.open_table(READINGS).map_err(engine)?;
    let numbers = tx.open_table(SERIES).map_err(engine)?;
    let mut rollups = tx.open_table(ROLLUPS).map_err(engine)?;
    let districts = tx.open_table(DEVICE_DISTRICT).map_err(engine)?;
    // The windows to bring up to date, finest first: interval, district, quantity, start; and
    // each ten-minute window's replacements, or `None` where one of them is a device counted
    // towards another district in the store than in the batch (only a rescan can tell).
    let mut windows: BTreeSet<(Interval, String, Quantity, i64)> = BTreeSet::new();
    let mut tens: BTreeMap<(String, Quantity, i64), Option<Vec<&Replaced<'a>>>> = BTreeMap::new();
    let mut patchable: BTreeSet<(&'a str, Quantity, i64)> = BTreeSet::new();
    for r in replaced {
        let Some(district) = districts.get(r.device).map_err(engine)?.map(|d| d.value().to_owned()) else {
            continue;
        };
        let start = Interval::TenMinutes.window_start(r.ms);
        let ten = tens.entry((district.clone(), r.quantity, start)).or_insert(Some(Vec::new()));
        match ten {
            Some(list) if district == r.district => {
                list.push(r);
                patchable.insert((r.district, r.quantity, start));
            }
            _ => *ten = None,
        }
        for interval in Interval::ALL {
            windows.insert((interval, district.clone(), r.quantity, interval.window_start(r.ms)));
        }
    }
    // What the batch wrote into those windows (where a moved reading's copy lands), by
    // reading: of two at one device, quantity and millisecond the later one stays, as in the
    // store. Then the good values among them, by window.
    let mut kept: BTreeMap<(&str, Quantity, i64), (&str, f64, QualityFlag)> = BTreeMap::new();
    for w in written {
        if patchable.contains(&(w.district, w.quantity, Interval::TenMinutes.window_start(w.ms))) {
            kept.insert((w.device, w.quantity, w.ms), (w.district, w.value, w.flag));
        }
    }
    let mut in_window: BTreeMap<(&str, Quantity, i64), Vec<f64>> = BTreeMap::new();
    for ((_, q, ms), (district, value, flag)) in kept {
        if flag != QualityFlag::Bad {
            in_window.entry((district, q, Interval::TenMinutes.window_start(ms))).or_default().push(value);
        }
    }
    // Ten-minute windows first: patched, or rescanned, all of a district's quantities in one
    // pass over each of its devices' rows of the window.
    let mut rescans: BTreeMap<(String, i64), BTreeMap<Quantity, Window>> = BTreeMap::new();
    for (_, district, quantity, start) in windows.iter().filter(|w| w.0 == Interval::TenMinutes) {
        let scope = Scope::District(district.clone()).key();
        let key = (scope.as_str(), quantity.name(), Interval::TenMinutes.code(), *start);
        let patch = match tens.get(&(district.clone(), *quantity, *start)) {
            Some(Some(list)) => {
                let stored = rollups.get(key).map_err(engine)?.map(|v| Window::from_tuple(v.value()));
                let kept = in_window.get(&(district.as_str(), *quantity, *start)).map_or(&[][..], Vec::as_slice);
                stored.and_then(|stored| patched(stored, list, kept))
            }
            _ => None,
        };
        match patch {
            Some(w) => {
                rollups.insert(key, w.as_tuple()).map_err(engine)?;
            }
            None => {
                rescans.entry((district.clone(), *start)).or_default().insert(*quantity, Window::EMPTY);
            }
        }
    }
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((district, start), mut by_quantity) in rescans {
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
        let end = start + Interval::TenMinutes.millis();
        for member in members.get(&district).into_iter().flatten() {
            // The member's series numbers of the quantities rescanned (its device number is
            // the same for all).
            let mut wanted: Vec<(u32, Quantity)> = Vec::with_capacity(by_quantity.len());
            let mut device = None;
            for &q in by_quantity.keys() {
                if let Some(key) = series::key(&numbers, member, q.name())? {
                    wanted.push((key.series, q));
                    device = Some(key.device);
                }
            }
            let Some(device) = device else { continue };
            readings::each_entry(&readings, device, start, end, |ms, series, value, flag| {
                if let Some(&(_, q)) = wanted.iter().find(|w| w.0 == series) {
                    if let Some(w) = by_quantity.get_mut(&q) {
                        w.add(value, ms, QualityFlag::from_byte(flag));
                    }
                }
            })?;
        }
        let scope = Scope::District(district.clone()).key();
        for (q, w) in by_quantity {
            rollups.insert((scope.as_str(), q.name(), Interval::TenMinutes.code(), start), w.as_tuple()).map_err(engine)?;
        }
    }
    // Then hours from their ten-minute windows, and days from their hours.
    for (interval, district, quantity, start) in windows {
        let Some(finer) = finer(interval) else { continue };
        let scope = Scope::District(district).key();
        let (s, q) = (scope.as_str(), quantity.name());
        let mut w = Window::EMPTY;
        for entry in
            rollups.range((s, q, finer.code(), start)..(s, q, finer.code(), start + interval.millis())).map_err(engine)?
        {
            let (_, v) = entry.map_err(engine)?;
            w.merge(&Window::from_tuple(v.value()));
        }
        rollups.insert((s, q, interval.code(), start), w.as_tuple()).map_err(engine)?;
    }
    Ok(())
}

/// `stored` (a ten-minute window as stored, this batch's new readings merged in) with the
/// readings `replaced` in it taken out and their new values put in, where that is what a
/// rescan of the window's readings would give; `None` where only a rescan can tell. `kept`:
/// the good values of the window's readings the batch wrote (they are all in the window
/// afterwards).
///
/// Count, excluded and sum follow by difference (the sum can differ from a rescan's in the
/// last bits, as any two orders of summing can; windows merged batch by batch already do).
/// Minimum and maximum are the stored ones widened by the new values if every good value taken
/// out lies strictly between them or is among `kept`: the window still holds the stored
/// extremes then. That is the case of a reading moved aside within its window; an extreme
/// lowered, or moved to the next window, is neither. The last value holds unless a reading
/// taken out was it and its replacement is not the same value.
fn patched(stored: Window, replaced: &[&Replaced<'_>], kept: &[f64]) -> Option<Window> {
    let good = |(v, f): (f64, QualityFlag)| (f != QualityFlag::Bad).then_some(v.to_bits());
    let (min, max) = (stored.min, stored.max);
    let still_held = |v: f64| (min < v && v < max) || kept.iter().any(|k| k.to_bits() == v.to_bits());
    if replaced.iter().any(|r| good(r.old).is_some() && !still_held(r.old.0)) {
        return None;
    }
    let mut w = stored;
    for r in replaced {
        if r.old.1 == QualityFlag::Bad {
            w.excluded = w.excluded.checked_sub(1)?;
        } else {
            w.count = w.count.checked_sub(1)?;
            w.sum -= r.old.0;
        }
    }
    for r in replaced {
        w.add(r.new.0, r.ms, r.new.1);
    }
    let last_lowered = replaced
        .iter()
        .any(|r| good(r.old).is_some_and(|bits| r.ms == w.last_time && bits == w.last.to_bits() && good(r.new) != Some(bits)));
    (!last_lowered).then_some(w)
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
    use std::collections::BTreeMap;

    use chrono::{DateTime, Utc};

    use super::{patched, Replaced};
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
                reason: Default::default(),
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

    /// A small deterministic generator (xorshift), so that every run checks the same cases.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }

        /// A multiple of 1/4 (sums of these have the same bits in any order), often repeated.
        fn value(&mut self) -> f64 {
            (self.below(9) as f64 - 4.0) * 0.25
        }

        fn flag(&mut self) -> QualityFlag {
            [QualityFlag::Good, QualityFlag::Good, QualityFlag::Suspect, QualityFlag::Bad][self.below(4) as usize]
        }
    }

    fn window_of<'r>(readings: impl IntoIterator<Item = (&'r (u8, i64), &'r (f64, QualityFlag))>) -> Window {
        let mut w = Window::EMPTY;
        for (&(_, ms), &(value, flag)) in readings {
            w.add(value, ms, flag);
        }
        w
    }

    /// A window's fields with its numbers as bits (an empty window's last value is NaN).
    fn bits(w: &Window) -> [u64; 7] {
        let (count, excluded, sum, min, max, last, last_time) = w.as_tuple();
        [count, excluded, sum.to_bits(), min.to_bits(), max.to_bits(), last.to_bits(), last_time as u64]
    }

    /// One ten-minute window of two devices and a batch of replacements (moved aside: the old
    /// value added again at a free millisecond; corrected: a new value or flag only), readings
    /// repeated as they are stored, and new readings: where `patched` answers, it answers what a rescan of the final readings gives.
    #[test]
    fn a_patched_window_is_what_a_rescan_of_its_readings_gives() {
        let t = Quantity::by_name("air_temperature").unwrap();
        let (mut answered, mut declined, mut moved_answered) = (0, 0, 0);
        for case in 1..=3000u64 {
            let mut rng = Rng(case.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let free = |rng: &mut Rng, taken: &BTreeMap<(u8, i64), (f64, QualityFlag)>| loop {
                let key = (rng.below(2) as u8, rng.below(30) as i64 * 20_000);
                if !taken.contains_key(&key) {
                    break key;
                }
            };
            let mut before = BTreeMap::new();
            for _ in 0..1 + rng.below(10) {
                let key = free(&mut rng, &before);
                before.insert(key, (rng.value(), rng.flag()));
            }
            let mut after = before.clone();
            let (mut replaced, mut added, mut repeated) = (Vec::new(), BTreeMap::new(), BTreeMap::new());
            let mut only_moves = true;
            for _ in 0..1 + rng.below(4) {
                let keys: Vec<(u8, i64)> = before.keys().copied().collect();
                let key = keys[rng.below(keys.len() as u64) as usize];
                match rng.below(4) {
                    _ if replaced.iter().any(|&(k, _, _)| k == key) || repeated.contains_key(&key) => {}
                    0 => {
                        let old = before[&key];
                        let new = (rng.value(), rng.flag());
                        let to = free(&mut rng, &after);
                        after.insert(to, old);
                        added.insert(to, old);
                        if new != old {
                            after.insert(key, new);
                            replaced.push((key, old, new));
                        }
                    }
                    1 => {
                        let (old, new) = (before[&key], (rng.value(), rng.flag()));
                        if new != old {
                            after.insert(key, new);
                            replaced.push((key, old, new));
                            only_moves = false;
                        }
                    }
                    2 => {
                        repeated.insert(key, before[&key]);
                    }
                    _ => {
                        let to = free(&mut rng, &after);
                        let new = (rng.value(), rng.flag());
                        after.insert(to, new);
                        added.insert(to, new);
                    }
                }
            }
            if replaced.is_empty() {
                continue;
            }
            let stored = window_of(before.iter().chain(added.iter()));
            let rescan = window_of(after.iter());
            let rows: Vec<Replaced<'_>> = replaced
                .iter()
                .map(|&((_, ms), old, new)| Replaced { device: "d", district: "Altstadt", quantity: t, ms, old, new })
                .collect();
            let refs: Vec<&Replaced<'_>> = rows.iter().collect();
            // What the batch wrote: new readings, readings repeated as stored, replacements.
            let written =
                added.values().copied().chain(repeated.values().copied()).chain(replaced.iter().map(|&(_, _, new)| new));
            let kept: Vec<f64> = written.filter(|(_, f)| *f != QualityFlag::Bad).map(|(v, _)| v).collect();
            match patched(stored, &refs, &kept) {
                Some(w) => {
                    assert_eq!(bits(&w), bits(&rescan), "case {case}: {before:?} then {replaced:?}, added {added:?}");
                    answered += 1;
                    moved_answered += usize::from(only_moves);
                }
                None => declined += 1,
            }
        }
        // Both answers are common, and moves within the window are mostly answered.
        assert!(answered > 1000 && declined > 300 && moved_answered > 300, "{answered} {declined} {moved_answered}");
    }

    /// The cases by name: a reading moved aside within its window, an extreme lowered, an
    /// extreme moved to the next window, a value between the extremes corrected, the last
    /// value lowered.
    #[test]
    fn patching_answers_for_moves_and_values_between_the_extremes_and_declines_for_lost_extremes() {
        use QualityFlag::Good;
        let t = Quantity::by_name("air_temperature").unwrap();
        let readings = |pairs: &[(i64, f64)]| -> BTreeMap<(u8, i64), (f64, QualityFlag)> {
            pairs.iter().map(|&(ms, v)| ((0, ms), (v, Good))).collect()
        };
        let at = |ms, old: f64, new: f64| Replaced {
            device: "d",
            district: "Altstadt",
            quantity: t,
            ms,
            old: (old, Good),
            new: (new, Good),
        };
        let stored = readings(&[(0, 5.0), (1, 1.0), (2, 3.0), (3, 2.0)]);
        let window = window_of(stored.iter());
        // The maximum moved from 0 to 4 (added there, in this window), 0 now holds 2.5.
        let moved = window_of(readings(&[(0, 5.0), (1, 1.0), (2, 3.0), (3, 2.0), (4, 5.0)]).iter());
        let patched_move = patched(moved, &[&at(0, 5.0, 2.5)], &[5.0, 2.5]);
        assert_eq!(patched_move, Some(window_of(readings(&[(0, 2.5), (1, 1.0), (2, 3.0), (3, 2.0), (4, 5.0)]).iter())));
        // The maximum lowered, or moved to the next window: only a rescan knows the new one.
        assert_eq!(patched(window, &[&at(0, 5.0, 2.5)], &[2.5]), None);
        assert_eq!(patched(window, &[&at(1, 1.0, 2.5)], &[2.5]), None);
        // A value between the extremes: answered.
        let between = patched(window, &[&at(2, 3.0, 4.0)], &[4.0]);
        assert_eq!(between, Some(window_of(readings(&[(0, 5.0), (1, 1.0), (2, 4.0), (3, 2.0)]).iter())));
        // The last value lowered: declined; raised: answered.
        assert_eq!(patched(window, &[&at(3, 2.0, 1.5)], &[1.5]), None);
        assert_eq!(
            patched(window, &[&at(3, 2.0, 2.5)], &[2.5]),
            Some(window_of(readings(&[(0, 5.0), (1, 1.0), (2, 3.0), (3, 2.5)]).iter()))
        );
    }

    /// Two quantities of two devices, their extremes lowered and raised in one batch (both
    /// quantities' windows rescanned in one pass over each device's rows), and a reading of
    /// each moved aside within its window (patched): the windows are those of a store that
    /// only ever got the final values.
    #[test]
    fn windows_of_several_quantities_rescanned_together_count_each_quantity_once() {
        use QualityFlag::Good;
        let (t, h) = (Quantity::by_name("air_temperature").unwrap(), Quantity::by_name("relative_humidity").unwrap());
        // In the same rows, not corrected: a rescan must leave its readings out.
        let v = Quantity::by_name("battery_voltage").unwrap();
        let batch_of = |readings: &[(&str, Quantity, i64, f64)]| {
            let mut batch = WriteBatch::default();
            for &(device, quantity, minute, value) in readings {
                let id = DeviceId::parse(device).unwrap();
                batch.readings.push(Reading {
                    device: id.clone(),
                    quantity,
                    value,
                    time: DateTime::from_timestamp_millis(T0 + minute * 60_000).unwrap(),
                    flag: Good,
                    reason: Default::default(),
                });
                batch.districts.insert(id, "Altstadt".into());
            }
            batch
        };
        let first: Vec<(&str, Quantity, i64, f64)> = (0..40)
            .flat_map(|i| {
                let d = if i % 2 == 0 { "dev-a" } else { "dev-b" };
                [(d, t, i, (i % 7) as f64 * 0.5), (d, h, i, 50.0 + (i % 5) as f64 * 0.25), (d, v, i, 3.25)]
            })
            .collect();
        // In the first ten minutes: the temperature's maximum (3.0 at 6) lowered, the
        // humidity's maximum (51.0 at 4) made its minimum and another raised past it (all
        // rescanned). From minute 10: a temperature between the extremes corrected (2.5 at 12),
        // and the maximum at 20 moved aside to minute 25 (patched).
        let correction = vec![
            ("dev-a", t, 6, 0.25),
            ("dev-a", h, 4, 49.0),
            ("dev-a", h, 6, 52.0),
            ("dev-a", t, 12, 1.0),
            ("dev-a", t, 20, 1.5),
            ("dev-a", t, 25, 3.0),
        ];
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.write(&batch_of(&first)).unwrap();
        store.write(&batch_of(&correction)).unwrap();

        let mut last: BTreeMap<(&str, Quantity, i64), f64> = BTreeMap::new();
        for &(d, q, m, v) in first.iter().chain(&correction) {
            last.insert((d, q, m), v);
        }
        let finals: Vec<_> = last.iter().map(|(&(d, q, m), &v)| (d, q, m, v)).collect();
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = EmbeddedStore::open(fresh_dir.path()).unwrap();
        fresh.write(&batch_of(&finals)).unwrap();

        let (from, to) =
            (DateTime::from_timestamp_millis(T0).unwrap(), DateTime::from_timestamp_millis(T0 + 86_400_000).unwrap());
        for q in [t, h, v] {
            for interval in Interval::ALL {
                let scope = Scope::District("Altstadt".into());
                let (ours, theirs) = (
                    store.rollups(&scope, q, interval, from, to).unwrap(),
                    fresh.rollups(&scope, q, interval, from, to).unwrap(),
                );
                assert!(!ours.is_empty());
                assert_eq!(ours, theirs, "{} {interval:?}", q.name());
            }
        }
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
