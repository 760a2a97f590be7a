//! The recent history of each series (device and quantity) that the spike and stuck tests
//! compare a new reading with: bounded in memory, seeded from the store.
//!
//! A reading newer than everything seen of its series is compared with the last accepted
//! value (spike) and the run of equal values (stuck), and moves the history on. A late
//! reading (at or before the newest one seen: out of order, or redelivered after a restart)
//! is compared with its stored neighbours before and after it instead, and leaves the
//! history alone: a newer reading is no reason to flag an older one.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};

use super::verdict::{Limits, Test, Verdict};
use crate::model::{DeviceId, QualityFlag, Quantity, Reading};

/// How far before and after a late reading its stored neighbours are looked for.
const LATE_NEIGHBOUR_WINDOW: Duration = Duration::hours(3);

/// Where the history of a series comes from when memory does not have it: the store, which
/// implements this trait (so quality never imports the store).
pub trait SeriesLookup {
    /// The newest stored reading of every quantity of `device`.
    fn latest(&self, device: &DeviceId) -> Result<Vec<Reading>, String>;
    /// The nearest stored readings strictly before and strictly after `time` within
    /// `within`, skipping bad ones, as (time, value).
    #[allow(clippy::type_complexity)]
    fn neighbours(
        &self,
        device: &DeviceId,
        q: Quantity,
        time: DateTime<Utc>,
        within: Duration,
    ) -> Result<(Option<(DateTime<Utc>, f64)>, Option<(DateTime<Utc>, f64)>), String>;
    /// The first millisecond at or after `from` at which `device` has no stored reading of
    /// any quantity.
    fn free_from(&self, device: &DeviceId, from: DateTime<Utc>) -> Result<DateTime<Utc>, String>;
    /// The stored readings of `device` at `time`, of every quantity.
    fn at(&self, device: &DeviceId, time: DateTime<Utc>) -> Result<Vec<Reading>, String>;
}

/// What is remembered of one series.
#[derive(Debug, Clone)]
struct SeriesState {
    /// Time and value of the newest reading seen, whatever its flag.
    last: (DateTime<Utc>, f64),
    /// Since when the value has been `last.1` (start of the current run of equal values).
    unchanged_since: DateTime<Utc>,
    /// The newest reading that passed the range and spike tests: what the next one is compared
    /// with, so that one outlier does not also flag the good reading after it.
    reference: Option<(DateTime<Utc>, f64)>,
    /// When it was last used, for forgetting the least recently used series.
    used: u64,
    /// The stuck test's reason without its duration ("88.6 % unchanged since …") and the
    /// value's bits it names, written once per run of equal values: a stuck sensor's every
    /// reading gets the same words.
    stuck_words: Option<(u64, String)>,
}

/// The history of the series seen recently, at most `cap` of them.
pub struct SeriesHistory {
    series: HashMap<(DeviceId, Quantity), SeriesState>,
    cap: usize,
    clock: u64,
}

impl SeriesHistory {
    pub fn new(cap: usize) -> Self {
        Self { series: HashMap::new(), cap: cap.max(1), clock: 0 }
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Run the spike and stuck tests on one finite value whose range and time tests are in
    /// `verdict` already, and remember it.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &mut self,
        lookup: &dyn SeriesLookup,
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
        let Some(state) = self.series.get_mut(&key) else {
            // The first reading of the series: nothing to compare with yet.
            let reference = in_range.then_some((time, value));
            let state =
                SeriesState { last: (time, value), unchanged_since: time, reference, used: self.clock, stuck_words: None };
            self.insert(key, state);
            return;
        };
        state.used = self.clock;
        if time <= state.last.0 {
            if in_range {
                late_spike(lookup, limits, device, q, value, time, verdict);
            }
            return;
        }
        let mut spiked = false;
        if let (Some(per_h), Some(reference), true) = (limits.spike_per_h(q), state.reference, in_range) {
            if let Some(j) = jump(limits, per_h, reference, (time, value)) {
                verdict.fail(Test::Spike, j.why(q, per_h));
                spiked = true;
            }
        }
        if same(value, state.last.1) {
            if let Some(after) = limits.stuck_after(q) {
                if time - state.unchanged_since >= after {
                    let hours = (time - state.unchanged_since).num_minutes() as f64 / 60.0;
                    // `same` allows a rounding error: the words name this reading's value.
                    let bits = value.to_bits();
                    let words = match &mut state.stuck_words {
                        Some((named, words)) if *named == bits => words,
                        slot => {
                            let words = format!("{value} {} unchanged since {}", q.unit(), state.unchanged_since);
                            &mut slot.insert((bits, words)).1
                        }
                    };
                    let mut why = String::with_capacity(words.len() + 12);
                    why.push_str(words);
                    let _ = write!(why, " ({hours:.1} h)");
                    verdict.fail(Test::Stuck, why);
                }
            }
        } else {
            state.unchanged_since = time;
            state.stuck_words = None;
        }
        state.last = (time, value);
        if in_range && !spiked {
            state.reference = Some((time, value));
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
            let state = SeriesState {
                last: (r.time, r.value),
                unchanged_since: r.time,
                reference: usable.then_some((r.time, r.value)),
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

/// Whether `(time, value)` is a spike against `other`, and by how much.
fn jump(limits: &Limits, per_h: f64, other: (DateTime<Utc>, f64), (time, value): (DateTime<Utc>, f64)) -> Option<Jump> {
    let gap = (time - other.0).abs();
    let window = gap.max(Duration::minutes(limits.settings.spike_min_window_min.min(1_000_000) as i64));
    let allowed = per_h * window.num_milliseconds() as f64 / 3_600_000.0;
    let change = (value - other.1).abs();
    (change > allowed).then_some(Jump { change, other, gap })
}

impl Jump {
    /// The reason text (written only for a reading that is flagged).
    fn why(&self, q: Quantity, per_h: f64) -> String {
        let unit = q.unit();
        format!(
            "changed by {:.3} {unit} against {} {unit} at {} ({} min apart); at most {per_h} {unit} per hour",
            self.change,
            self.other.1,
            self.other.0,
            self.gap.num_minutes()
        )
    }
}

/// A late reading is a spike only if it jumps against every stored neighbour it has: a single
/// outlier stands apart from both sides, while a step change stays close to one of them.
fn late_spike(
    lookup: &dyn SeriesLookup,
    limits: &Limits,
    device: &DeviceId,
    q: Quantity,
    value: f64,
    time: DateTime<Utc>,
    verdict: &mut Verdict,
) {
    let Some(per_h) = limits.spike_per_h(q) else { return };
    let (before, after) = match lookup.neighbours(device, q, time, LATE_NEIGHBOUR_WINDOW) {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(device = %device, error = %e, "no neighbours for the spike test of a late reading");
            return;
        }
    };
    // Per side: no neighbour, a neighbour it stays close to, or a jump against it.
    let side = |n: Option<(DateTime<Utc>, f64)>| n.map(|n| jump(limits, per_h, n, (time, value)));
    // Against every neighbour it has (and it has one), or it is no spike. Nothing is allocated
    // unless the reading is flagged: late readings are common in a burst.
    let why = match (side(before), side(after)) {
        (Some(Some(a)), Some(Some(b))) => format!("{}, and {}", a.why(q, per_h), b.why(q, per_h)),
        (Some(Some(j)), None) | (None, Some(Some(j))) => j.why(q, per_h),
        _ => return,
    };
    verdict.fail(Test::Spike, why);
}
