//! The recent history of each series (device and quantity) that the spike and stuck tests
//! compare a new reading with: bounded in memory, seeded from the store.
//!
//! A reading newer than everything seen of its series is compared with the last accepted
//! value (spike) and the run of equal values (stuck), and moves the history on. A late
//! reading (at or before the newest one seen: out of order, or redelivered after a restart)
//! is compared with its neighbours before and after it instead, and leaves the history
//! alone: a newer reading is no reason to flag an older one. Its neighbours are those stored
//! and those of its own batch accepted before it (stored in the same commit), so how a
//! burst is cut into batches does not change a verdict. The neighbour test of citizen
//! sensors reads the official stations the same way ([`Nearby`]).

use std::cell::RefCell;

use chrono::{DateTime, Duration, Utc};
use rustc_hash::FxHashMap;

use super::neighbours::NearbyLookup;
use super::points::Points;
use super::verdict::{Limits, Test, Verdict};
use crate::model::{DeviceId, QualityFlag, Quantity, Reading};
use crate::text::{Shortest, Stamp, Style, Thousandths};

/// How far before and after a late reading its stored neighbours are looked for (3 hours, in
/// milliseconds).
const LATE_NEIGHBOUR_WINDOW: i64 = 3 * 3_600_000;

/// The nearest readings not flagged bad before and after a time, as (milliseconds, value).
pub type Neighbours = (Option<(i64, f64)>, Option<(i64, f64)>);

/// Where the history of a series comes from when memory does not have it: the store, which
/// implements this trait (so quality never imports the store).
pub trait SeriesLookup {
    /// The newest stored reading of every quantity of `device`.
    fn latest(&self, device: &DeviceId) -> Result<Vec<Reading>, String>;
    /// The nearest stored readings strictly before and strictly after `time` within
    /// `within`, skipping bad ones. Times in milliseconds, as readings are timed (chrono's
    /// arithmetic cost more than the rest of a late reading's test).
    fn neighbours(&self, device: &DeviceId, q: Quantity, time: i64, within: i64) -> Result<Neighbours, String>;
    /// The first millisecond at or after `from` at which `device` has no stored reading of
    /// any quantity.
    fn free_from(&self, device: &DeviceId, from: DateTime<Utc>) -> Result<DateTime<Utc>, String>;
    /// The stored readings of `device` at `time`, of every quantity.
    fn at(&self, device: &DeviceId, time: DateTime<Utc>) -> Result<Vec<Reading>, String>;
}

/// What is remembered of one series.
#[derive(Debug, Clone)]
struct SeriesState {
    /// Time (ms, as all times here: a reading's time is a millisecond, and date arithmetic on
    /// `DateTime`s cost a tenth of these tests) and value of the newest reading seen, whatever
    /// its flag.
    last: (i64, f64),
    /// Since when the value has been `last.1` (start of the current run of equal values).
    unchanged_since: i64,
    /// The newest reading that passed the range and spike tests: what the next one is compared
    /// with, so that one outlier does not also flag the good reading after it.
    reference: Option<(i64, f64)>,
    /// When it was last used, for forgetting the least recently used series.
    used: u64,
    /// The stuck test's reason without its duration ("88.6 % unchanged since …") and the
    /// value's bits it names, written once per run of equal values: a stuck sensor's every
    /// reading gets the same words.
    stuck_words: Option<(u64, String)>,
}

/// The history of the series seen recently, at most `cap` of them.
pub struct SeriesHistory {
    /// Keys are registered devices' series (unknown devices never get here), so a fast hash.
    series: FxHashMap<(DeviceId, Quantity), SeriesState>,
    cap: usize,
    clock: u64,
    unstored: Unstored,
}

/// The readings of the batch being decoded by series, indexed when a late reading first
/// asks for its neighbours (input in time order never does) and caught up at each ask. Only
/// quantities asked about are indexed: the spike test asks for a few of a device's
/// quantities, the neighbour test for the ones compared.
#[derive(Default)]
struct Unstored {
    series: FxHashMap<(DeviceId, Quantity), Points>,
    /// Per quantity asked about: how many of the batch's readings were looked through for it.
    indexed: Vec<(Quantity, usize)>,
}

impl Unstored {
    /// Index the readings of quantity `q` added to `batch` since the last call, and return
    /// the series' points.
    fn catch_up(&mut self, batch: &[Reading], key: &(DeviceId, Quantity)) -> Option<&Points> {
        let q = key.1;
        if self.indexed.iter().any(|&(_, n)| n > batch.len()) {
            self.clear();
        }
        let slot = match self.indexed.iter().position(|&(k, _)| k == q) {
            Some(i) => i,
            None => {
                self.indexed.push((q, 0));
                self.indexed.len() - 1
            }
        };
        for r in batch[self.indexed[slot].1..].iter().filter(|r| r.quantity == q) {
            // A later reading of the same millisecond replaces an earlier one, as in the store.
            let points = self.series.entry((r.device.clone(), q)).or_default();
            points.insert(r.time.timestamp_millis(), r.value, r.flag == QualityFlag::Bad);
        }
        self.indexed[slot].1 = batch.len();
        self.series.get(key)
    }

    fn clear(&mut self) {
        self.series.clear();
        self.indexed.clear();
    }
}

impl SeriesHistory {
    pub fn new(cap: usize) -> Self {
        Self { series: FxHashMap::default(), cap: cap.max(1), clock: 0, unstored: Unstored::default() }
    }

    /// A new batch begins: the last one's readings are stored (or will be decoded again).
    pub fn new_batch(&mut self) {
        self.unstored.clear();
    }

    /// The official stations' readings as the neighbour test sees them: those stored, with
    /// `batch` (the readings accepted since [`Self::new_batch`], stored with the one asking)
    /// over them. The batch is indexed when a station is first asked for (a citizen reading
    /// with no station near, or of a quantity not compared, never pays for it).
    pub fn nearby<'a>(&'a mut self, lookup: &'a dyn SeriesLookup, batch: &'a [Reading]) -> Nearby<'a> {
        Nearby { lookup, batch, ours: RefCell::new(&mut self.unstored) }
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Run the spike and stuck tests on one finite value whose range and time tests are in
    /// `verdict` already, and remember it. `batch`: the readings accepted before it in its
    /// batch, not stored yet (since [`Self::new_batch`]).
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &mut self,
        lookup: &dyn SeriesLookup,
        batch: &[Reading],
        limits: &Limits,
        device: &DeviceId,
        q: Quantity,
        value: f64,
        time: DateTime<Utc>,
        verdict: &mut Verdict,
    ) {
        self.clock += 1;
        let key = (device.clone(), q);
        if !self.series.contains_key(&key) {
            self.seed(lookup, device);
        }
        let in_range = !verdict.failed(Test::Range);
        let ms = time.timestamp_millis();
        let Some(state) = self.series.get_mut(&key) else {
            // The first reading of the series: nothing to compare with yet.
            let reference = in_range.then_some((ms, value));
            let state = SeriesState { last: (ms, value), unchanged_since: ms, reference, used: self.clock, stuck_words: None };
            self.insert(key, state);
            return;
        };
        state.used = self.clock;
        if ms <= state.last.0 {
            if let (Some(per_h), true) = (limits.spike_per_h(q), in_range) {
                let ours = self.unstored.catch_up(batch, &key);
                late_spike(lookup, ours, limits, per_h, device, q, value, time, verdict);
            }
            return;
        }
        let mut spiked = false;
        if let (Some(per_h), Some(reference), true) = (limits.spike_per_h(q), state.reference, in_range) {
            if let Some(j) = jump(limits, per_h, reference, (ms, value)) {
                verdict.fail_with(Test::Spike, |out| j.why(q, per_h).write_to(out));
                spiked = true;
            }
        }
        if same(value, state.last.1) {
            if let Some(after) = limits.stuck_after(q) {
                let unchanged_for = ms.saturating_sub(state.unchanged_since);
                if unchanged_for >= after.num_milliseconds() {
                    let hours = (unchanged_for / 60_000) as f64 / 60.0;
                    // `same` allows a rounding error: the words name this reading's value.
                    let bits = value.to_bits();
                    let words = match &mut state.stuck_words {
                        Some((named, words)) if *named == bits => words,
                        slot => {
                            let since = DateTime::from_timestamp_millis(state.unchanged_since).unwrap_or_default();
                            let words = format!("{value} {} unchanged since {since}", q.unit());
                            &mut slot.insert((bits, words)).1
                        }
                    };
                    verdict.fail(Test::Stuck, format_args!("{words} ({hours:.1} h)"));
                }
            }
        } else {
            state.unchanged_since = ms;
            state.stuck_words = None;
        }
        state.last = (ms, value);
        if in_range && !spiked {
            state.reference = Some((ms, value));
        }
    }

    /// Load the newest stored reading of each of the device's series. After a restart this
    /// keeps the spike test working from the first reading; the run of equal values (stuck)
    /// starts again at the stored reading. A store error only leaves the history empty.
    fn seed(&mut self, lookup: &dyn SeriesLookup, device: &DeviceId) {
        let latest = match lookup.latest(device) {
            Ok(latest) => latest,
            Err(e) => {
                tracing::debug!(device = %device, error = %e, "no history for the spike and stuck tests");
                return;
            }
        };
        for r in latest {
            // A stored outlier is no reference for what follows it.
            let usable = r.flag != QualityFlag::Bad && !r.reason.contains("spike:") && r.value.is_finite();
            let ms = r.time.timestamp_millis();
            let state = SeriesState {
                last: (ms, r.value),
                unchanged_since: ms,
                reference: usable.then_some((ms, r.value)),
                used: self.clock,
                stuck_words: None,
            };
            self.insert((r.device, r.quantity), state);
        }
    }

    fn insert(&mut self, key: (DeviceId, Quantity), state: SeriesState) {
        if self.series.len() >= self.cap && !self.series.contains_key(&key) {
            self.forget_least_used();
        }
        self.series.insert(key, state);
    }

    /// Forget the least recently used half: one O(n) pass per cap/2 new series keeps the
    /// cost per reading constant, where evicting one at a time would scan on every insert.
    fn forget_least_used(&mut self) {
        let mut ages: Vec<u64> = self.series.values().map(|s| s.used).collect();
        let mid = ages.len() / 2;
        let (_, &mut cut, _) = ages.select_nth_unstable(mid);
        self.series.retain(|_, s| s.used > cut);
    }
}

/// Exactly equal, as a stuck sensor repeats the same raw value (decoded the same way).
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// How `(time, value)` moved against `other`, if faster than allowed: a spike.
struct Jump {
    change: f64,
    other: (DateTime<Utc>, f64),
    gap: Duration,
}

/// Whether `(ms, value)` is a spike against `other` (ms, value), and by how much.
fn jump(limits: &Limits, per_h: f64, other: (i64, f64), (ms, value): (i64, f64)) -> Option<Jump> {
    let gap = ms.saturating_sub(other.0).saturating_abs();
    let window = gap.max(limits.settings.spike_min_window_min.min(1_000_000) as i64 * 60_000);
    let allowed = per_h * window as f64 / 3_600_000.0;
    let change = (value - other.1).abs();
    (change > allowed).then(|| Jump {
        change,
        other: (DateTime::from_timestamp_millis(other.0).unwrap_or_default(), other.1),
        gap: Duration::milliseconds(gap),
    })
}

impl Jump {
    /// The reason text (written only for a reading that is flagged, straight into its reason).
    fn why(&self, q: Quantity, per_h: f64) -> JumpWhy<'_> {
        JumpWhy { jump: self, q, per_h }
    }
}

/// [`Jump::why`]: the explanation of a spike, written where it is displayed.
struct JumpWhy<'a> {
    jump: &'a Jump,
    q: Quantity,
    per_h: f64,
}

impl JumpWhy<'_> {
    /// The text, written piece by piece into `out` (for the reason `String`, without the
    /// formatting machinery: a burst of late readings explains many spikes).
    fn write_to(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        // "changed by {:.3} {unit} against {} {unit} at {time} ({} min apart); at most {per_h}
        // {unit} per hour" (see `text`: the same text, less machinery).
        let (j, unit, per_h) = (self.jump, self.q.unit(), self.per_h);
        let mut minutes = itoa::Buffer::new();
        out.write_str("changed by ")?;
        Thousandths(j.change).write_to(out)?;
        for piece in [" ", unit, " against "] {
            out.write_str(piece)?;
        }
        Shortest(j.other.1).write_to(out)?;
        for piece in [" ", unit, " at "] {
            out.write_str(piece)?;
        }
        Stamp(j.other.0, Style::Display).write_to(out)?;
        for piece in [" (", minutes.format(j.gap.num_minutes()), " min apart); at most "] {
            out.write_str(piece)?;
        }
        Shortest(per_h).write_to(out)?;
        for piece in [" ", unit, " per hour"] {
            out.write_str(piece)?;
        }
        Ok(())
    }
}

impl std::fmt::Display for JumpWhy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write_to(f)
    }
}

/// A late reading is a spike only if it jumps against every neighbour it has: a single
/// outlier stands apart from both sides, while a step change stays close to one of them.
#[allow(clippy::too_many_arguments)]
fn late_spike(
    lookup: &dyn SeriesLookup,
    ours: Option<&Points>,
    limits: &Limits,
    per_h: f64,
    device: &DeviceId,
    q: Quantity,
    value: f64,
    time: DateTime<Utc>,
    verdict: &mut Verdict,
) {
    let ms = time.timestamp_millis();
    let (before, after) = match neighbours(lookup, ours, device, q, ms, LATE_NEIGHBOUR_WINDOW) {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(device = %device, error = %e, "no neighbours for the spike test of a late reading");
            return;
        }
    };
    // Per side: no neighbour, a neighbour it stays close to, or a jump against it.
    let side = |n: Option<(i64, f64)>| n.map(|neighbour| jump(limits, per_h, neighbour, (ms, value)));
    // Against every neighbour it has (and it has one), or it is no spike. Nothing is allocated
    // unless the reading is flagged: late readings are common in a burst.
    match (side(before), side(after)) {
        (Some(Some(a)), Some(Some(b))) => verdict.fail_with(Test::Spike, |out| {
            a.why(q, per_h).write_to(out)?;
            out.push_str(", and ");
            b.why(q, per_h).write_to(out)
        }),
        (Some(Some(j)), None) | (None, Some(Some(j))) => verdict.fail_with(Test::Spike, |out| j.why(q, per_h).write_to(out)),
        _ => {}
    }
}

/// The store with a batch's readings over it, for the neighbour test ([`SeriesHistory::nearby`]).
pub struct Nearby<'a> {
    lookup: &'a dyn SeriesLookup,
    batch: &'a [Reading],
    ours: RefCell<&'a mut Unstored>,
}

impl NearbyLookup for Nearby<'_> {
    /// The reading at `time` if there is one not flagged bad (the batch's replaces a stored
    /// one at the same millisecond), else the nearer of the neighbours within `within`, the
    /// earlier on a tie.
    fn value_near(&self, device: &DeviceId, quantity: Quantity, time: DateTime<Utc>, within: Duration) -> Option<f64> {
        let mut unstored = self.ours.borrow_mut();
        let ours = unstored.catch_up(self.batch, &(device.clone(), quantity));
        let ms = time.timestamp_millis();
        match ours.and_then(|points| points.get(ms)) {
            Some((value, false)) => return Some(value),
            Some((_, true)) => {}
            None => {
                let stored = self.lookup.at(device, time).ok()?;
                if let Some(r) = stored.iter().find(|r| r.quantity == quantity && r.flag != QualityFlag::Bad) {
                    return Some(r.value);
                }
            }
        }
        match neighbours(self.lookup, ours, device, quantity, ms, within.num_milliseconds()).ok()? {
            (Some((tb, vb)), Some((ta, va))) => Some(if ms - tb <= ta - ms { vb } else { va }),
            (Some((_, v)), None) | (None, Some((_, v))) => Some(v),
            (None, None) => None,
        }
    }
}

/// The nearest readings not flagged bad strictly before and after `time` within `within` (in
/// milliseconds): the store's, with the batch's readings (`ours`) over them. The batch holds a
/// millisecond it has a reading at: a stored one there is replaced in the same commit, so the
/// store is asked again past it.
fn neighbours(
    lookup: &dyn SeriesLookup,
    ours: Option<&Points>,
    device: &DeviceId,
    q: Quantity,
    t: i64,
    w: i64,
) -> Result<Neighbours, String> {
    let (before, after) = lookup.neighbours(device, q, t, w)?;
    let Some(points) = ours else { return Ok((before, after)) };
    let side = |stored: Option<(i64, f64)>, later: bool| {
        // Within nothing there is nothing strictly before or after.
        let nearest = if w < 1 {
            None
        } else if later {
            points.good_after(t, t.saturating_add(w))
        } else {
            points.good_before(t, t.saturating_sub(w))
        };
        let mut stored = stored;
        while let Some((at, _)) = stored {
            // The batch's own is at least as near: the store's can't win.
            if nearest.is_some_and(|(o, _)| o.abs_diff(t) <= at.abs_diff(t)) {
                stored = None;
            } else if points.get(at).is_some() {
                let (b, a) = lookup.neighbours(device, q, at, w - (at - t).abs())?;
                stored = if later { a } else { b };
                continue;
            }
            break;
        }
        Ok::<_, String>(stored.or(nearest))
    };
    Ok((side(before, false)?, side(after, true)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_batch_is_indexed_for_each_quantity_asked_about_as_a_whole_reading_would() {
        let [t, rh, batt] = ["air_temperature", "relative_humidity", "battery_voltage"].map(|n| Quantity::by_name(n).unwrap());
        let reading = |device: &str, q, ms: i64, value: f64| Reading {
            device: DeviceId::parse(device).unwrap(),
            quantity: q,
            value,
            time: DateTime::from_timestamp_millis(ms).unwrap(),
            flag: if value < 0.0 { QualityFlag::Bad } else { QualityFlag::Good },
            reason: Default::default(),
        };
        // Two devices, three quantities, out of order, a millisecond given twice.
        let mut batch = Vec::new();
        for (i, ms) in [50, 10, 60, 20, 70, 20, 30].into_iter().enumerate() {
            for (j, q) in [t, rh, batt].into_iter().enumerate() {
                let value = if (i + j) % 5 == 4 { -1.0 } else { (i * 10 + j) as f64 };
                batch.push(reading(["a", "b"][i % 2], q, ms, value));
            }
        }
        let whole = |upto: usize, key: &(DeviceId, Quantity)| -> Points {
            let mut points = Points::default();
            for r in batch[..upto].iter().filter(|r| r.device == key.0 && r.quantity == key.1) {
                points.insert(r.time.timestamp_millis(), r.value, r.flag == QualityFlag::Bad);
            }
            points
        };
        let key = |d: &str, q| (DeviceId::parse(d).unwrap(), q);
        let mut unstored = Unstored::default();
        let mut asked = Vec::new();
        // Asks as decoding goes on: the batch grows between them, quantities take turns.
        for (upto, d, q) in [(3, "a", t), (9, "b", rh), (12, "a", t), (15, "b", batt), (21, "a", rh), (21, "b", t)] {
            let k = key(d, q);
            let got = unstored.catch_up(&batch[..upto], &k).cloned().unwrap_or_default();
            assert_eq!(got, whole(upto, &k), "{d} {upto}");
            // Only quantities asked about are indexed.
            asked.push(q);
            assert!(unstored.series.keys().all(|(_, q)| asked.contains(q)), "{d} {upto}");
        }
        // A shorter batch (a new one) starts again.
        let k = key("a", rh);
        assert_eq!(unstored.catch_up(&batch[..6], &k).cloned().unwrap_or_default(), whole(6, &k));
        assert_eq!(unstored.indexed, vec![(rh, 6)]);
    }

    #[test]
    fn a_spike_is_explained_as_the_format_string_says() {
        let q = Quantity::by_name("air_temperature").unwrap();
        let at = |ms| DateTime::from_timestamp_millis(ms).unwrap();
        let cases = [
            (19.72, (at(1_764_705_625_924), 18.06), 0, 10.0),
            (0.0005, (at(1_764_705_626_000), -3.25), 125, 2.5),
            (1e300, (at(-62_167_219_200_001), f64::NAN), -7, 1e-7),
            (2.0005, (Utc.timestamp_opt(1_764_705_625, 924_500_000).unwrap(), 1e21), 1_000_000, f64::INFINITY),
        ];
        for (change, other, minutes, per_h) in cases {
            let jump = Jump { change, other, gap: Duration::minutes(minutes) };
            let unit = q.unit();
            let expected = format!(
                "changed by {change:.3} {unit} against {} {unit} at {} ({minutes} min apart); at most {per_h} {unit} per hour",
                other.1, other.0
            );
            assert_eq!(jump.why(q, per_h).to_string(), expected);
            // Written into a reason, as the spike test does.
            let mut reason = String::from("spike: ");
            jump.why(q, per_h).write_to(&mut reason).unwrap();
            assert_eq!(reason, format!("spike: {expected}"));
        }
    }
}
