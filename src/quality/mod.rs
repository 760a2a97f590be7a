//! Quality control: every reading gets a flag (good, suspect, bad) and, unless good, the reasons.
//!
//! The tests, each named by the label it carries in `/metrics` and in the reason text:
//!
//! | test | flag | fails when |
//! | --- | --- | --- |
//! | `range` | bad | the value is not a finite number or lies outside the physical range of its quantity (built-in, `[quality.ranges]`, the profile's `[quality]`, the device's `ranges`; the most specific wins) |
//! | `spike` | suspect | the value changes faster than `[quality.spike]` allows against its neighbour in time |
//! | `stuck` | suspect | the value has not changed for `stuck_after_h` |
//! | `future` | suspect | the measurement time is more than `max_future_min` after reception: the reading is stored at its reception time ([`reading_time`]) |
//! | `age` | suspect | the measurement time is before 2000-01-01 (stored at its reception time, [`reading_time`]), or more than `max_age_h` before reception (off by default; the time is kept) |
//! | `battery` | suspect | the same uplink reports a battery below `battery_low_v` or `battery_low_percent` |
//!
//! Only a range failure makes a reading bad (and so keeps it out of the aggregates): the other
//! tests flag what a human should look at, and a real front can trip a spike test. Flagged
//! readings are stored like any other, never dropped. The spike and stuck tests need the
//! series' recent history, kept per series in a bounded [`SeriesHistory`].
//!
//! The thresholds are the `[quality]` section of the configuration ([`QualitySettings`], with
//! the per-profile [`ProfileQuality`]); they live in `config` and are re-exported here.

pub mod neighbours;
mod points;
mod series;
mod time;
mod verdict;

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use chrono::{DateTime, Duration, Utc};

use crate::model::{QualityFlag, Quantity};

pub use crate::config::{range_problems, ProfileQuality, QualitySettings, DEFAULT_SPIKE_PER_H, DEFAULT_STUCK_EXEMPT};
pub use series::{Nearby, Neighbours, SeriesHistory, SeriesLookup};
pub use time::{earliest_plausible, reading_time, ReadingTime, ReceptionTimes, EARLIEST_PLAUSIBLE};
pub use verdict::{Limits, Test, Verdict};

/// Why the readings of one uplink are suspect because of its battery, if they are: a
/// `battery_voltage` or `battery_level` below its threshold among `values`.
pub fn battery_low(values: impl IntoIterator<Item = (Quantity, f64)>, limits: &Limits) -> Option<String> {
    let (volts, percent) = (limits.battery_low_v(), limits.settings.battery_low_percent);
    for (q, v) in values {
        match q.name() {
            "battery_voltage" if volts > 0.0 && v < volts => {
                return Some(format!("battery at {v} V, below {volts} V"));
            }
            "battery_level" if percent > 0.0 && v < percent => {
                return Some(format!("battery at {v} %, below {percent} %"));
            }
            _ => {}
        }
    }
    None
}

/// The measurement times a reception time lets pass the `future` and `age` tests: worked out
/// once for an uplink's readings (date arithmetic was a tenth of these tests' cost when it
/// was done for each reading).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plausible {
    now: DateTime<Utc>,
    max_future_min: u64,
    max_age_h: u64,
    /// The latest time that is not in the future.
    latest: DateTime<Utc>,
    /// The earliest time that is not too old, if `max_age_h` is set.
    earliest: Option<DateTime<Utc>>,
}

impl Plausible {
    /// For readings received at `now`.
    pub fn new(now: DateTime<Utc>, limits: &Limits) -> Self {
        let (max_future_min, max_age_h) = (limits.settings.max_future_min, limits.settings.max_age_h);
        let latest = now + Duration::minutes(max_future_min.min(1_000_000) as i64);
        let earliest = (max_age_h > 0).then(|| now - Duration::hours(max_age_h.min(1_000_000) as i64));
        Plausible { now, max_future_min, max_age_h, latest, earliest }
    }

    /// Whether `self` is what [`Self::new`] would give for `now` and `limits`.
    fn fits(&self, now: DateTime<Utc>, limits: &Limits) -> bool {
        let s = &limits.settings;
        self.now == now && self.max_future_min == s.max_future_min && self.max_age_h == s.max_age_h
    }
}

/// The tests that need nothing but the reading itself: range, and time (`measured`: the
/// measurement time it is stored at; `None` when it is stored at its reception time, which
/// is neither in the future nor old; `plausible`: for its reception time).
pub fn check_reading(
    q: Quantity,
    value: f64,
    measured: Option<DateTime<Utc>>,
    plausible: &Plausible,
    limits: &Limits,
    verdict: &mut Verdict,
) {
    let unit = q.unit();
    if !value.is_finite() {
        verdict.fail(Test::Range, format_args!("value {value} is not a finite number"));
    } else {
        let (min, max) = limits.range(q);
        if value < min || value > max {
            verdict.fail(Test::Range, format_args!("{value} {unit} is outside the physical range {min} to {max} {unit}"));
        }
    }
    let Some(time) = measured else { return };
    let now = plausible.now;
    if time > plausible.latest {
        verdict.fail(Test::Future, format_args!("measured at {time}, after its reception at {now}"));
    }
    if plausible.earliest.is_some_and(|earliest| time < earliest) {
        let h = plausible.max_age_h;
        verdict.fail(Test::Age, format_args!("measured at {time}, more than {h} h before its reception at {now}"));
    }
}

/// Flag one value with the stateless tests and the configured defaults only (no history, no
/// overrides). `now` is the reception time.
pub fn assess(quantity: Quantity, value: f64, time: DateTime<Utc>, now: DateTime<Utc>) -> (QualityFlag, String) {
    let settings = QualitySettings::default();
    let mut verdict = Verdict::new();
    let limits = Limits::new(&settings);
    check_reading(quantity, value, Some(time), &Plausible::new(now, &limits), &limits, &mut verdict);
    (verdict.flag, verdict.into_reason().into())
}

/// Runs every test on the readings of the ingest stage, keeping the history the spike and
/// stuck tests need. One per ingest stage; not shared.
pub struct QualityControl {
    history: SeriesHistory,
    reception: ReceptionTimes,
    /// For the reception time of the readings assessed last (an uplink's).
    plausible: Option<Plausible>,
}

impl QualityControl {
    /// `max_series` bounds the history kept in memory (`quality.max_series`).
    pub fn new(max_series: usize) -> Self {
        Self { history: SeriesHistory::new(max_series), reception: ReceptionTimes::default(), plausible: None }
    }

    /// Flag one reading of `device` stored at `when` (its uplink's [`ReadingTime`]: the time
    /// test came first and chose the time the others test), going on from
    /// [`ReadingTime::verdict`]. `battery` is the
    /// uplink's [`battery_low`] finding; `lookup` (the store) seeds a series' history and
    /// answers for late readings, with `batch` (the readings accepted before this one since
    /// [`Self::new_batch`], stored with it) over it.
    #[allow(clippy::too_many_arguments)]
    pub fn assess(
        &mut self,
        when: &ReadingTime,
        lookup: &dyn SeriesLookup,
        batch: &[crate::model::Reading],
        limits: &Limits,
        device: &crate::model::DeviceId,
        q: Quantity,
        value: f64,
        now: DateTime<Utc>,
        battery: Option<&str>,
    ) -> Verdict {
        let (mut verdict, time) = (when.verdict(), when.time);
        let plausible = match self.plausible {
            Some(p) if p.fits(now, limits) => p,
            _ => *self.plausible.insert(Plausible::new(now, limits)),
        };
        check_reading(q, value, when.measured.then_some(time), &plausible, limits, &mut verdict);
        if value.is_finite() {
            self.history.check(lookup, batch, limits, device, q, value, time, &mut verdict);
        }
        if let Some(why) = battery {
            if !matches!(q.name(), "battery_voltage" | "battery_level") {
                verdict.fail_text(Test::Battery, why);
            }
        }
        verdict
    }

    /// A new batch begins: what [`Self::assess`] was given as its batch is stored now (or
    /// is decoded again).
    pub fn new_batch(&mut self) {
        self.history.new_batch();
    }

    /// The official stations' readings for the neighbour test: stored, or in `batch` (as
    /// given to [`Self::assess`]).
    pub fn nearby<'a>(&'a mut self, lookup: &'a dyn SeriesLookup, batch: &'a [crate::model::Reading]) -> Nearby<'a> {
        self.history.nearby(lookup, batch)
    }

    /// The time to store an uplink's readings at ([`ReceptionTimes::reading_time`]).
    pub fn reading_time(
        &mut self,
        lookup: &dyn SeriesLookup,
        device: &crate::model::DeviceId,
        measured: Option<DateTime<Utc>>,
        received: DateTime<Utc>,
        settings: &QualitySettings,
    ) -> ReadingTime {
        self.reception.reading_time(lookup, device, measured, received, settings)
    }

    /// Series whose history is held in memory.
    pub fn series_held(&self) -> usize {
        self.history.len()
    }
}

/// Counts behind `/metrics`: readings per flag, and failures per test (a reading that fails
/// two tests counts once per flag and once for each test).
#[derive(Default)]
pub struct QualityMetrics {
    by_flag: [AtomicU64; 3],
    by_test: [AtomicU64; Test::ALL.len()],
}

impl QualityMetrics {
    pub fn count(&self, verdict: &Verdict) {
        self.by_flag[verdict.flag.to_byte() as usize].fetch_add(1, Relaxed);
        for test in &verdict.failures {
            if let Some(i) = Test::ALL.iter().position(|t| t == test) {
                self.by_test[i].fetch_add(1, Relaxed);
            }
        }
    }

    /// Add these counts to `total`.
    pub fn add_to(&self, total: &QualityMetrics) {
        for (own, sum) in self.by_flag.iter().zip(&total.by_flag).chain(self.by_test.iter().zip(&total.by_test)) {
            sum.fetch_add(own.load(Relaxed), Relaxed);
        }
    }

    /// Append the Prometheus text of these counters.
    pub fn render(&self, out: &mut String) {
        let name = "messnetz_readings_quality_total";
        let _ = writeln!(out, "# HELP {name} Readings by the quality flag they were stored with.\n# TYPE {name} counter");
        for flag in [QualityFlag::Good, QualityFlag::Suspect, QualityFlag::Bad] {
            let _ = writeln!(out, "{name}{{flag=\"{}\"}} {}", flag.as_str(), self.by_flag[flag.to_byte() as usize].load(Relaxed));
        }
        let name = "messnetz_quality_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Quality tests failed, by test and the flag it gives; one reading can fail several.\n# TYPE {name} counter"
        );
        for (test, count) in Test::ALL.iter().zip(&self.by_test) {
            let _ =
                writeln!(out, "{name}{{test=\"{}\",flag=\"{}\"}} {}", test.as_str(), test.flag().as_str(), count.load(Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_and_time_are_checked() {
        let t = Quantity::by_name("air_temperature").unwrap();
        let now = Utc::now();
        assert_eq!(assess(t, 21.5, now, now).0, QualityFlag::Good);
        let (flag, reason) = assess(t, 85.0, now, now);
        assert_eq!(flag, QualityFlag::Bad);
        assert!(reason.contains("-60 to 60 Cel"), "{reason}");
        assert_eq!(assess(t, f64::NAN, now, now).0, QualityFlag::Bad);
        assert_eq!(assess(t, 20.0, now + Duration::hours(1), now).0, QualityFlag::Suspect);
        assert_eq!(assess(t, 20.0, now + Duration::minutes(5), now).0, QualityFlag::Good);
    }

    #[test]
    fn the_most_specific_range_wins() {
        let t = Quantity::by_name("air_temperature").unwrap();
        let mut settings = QualitySettings::default();
        settings.ranges.insert(t, [-40.0, 50.0]);
        let profile = ProfileQuality { ranges: [(t, [-30.0, 45.0])].into(), battery_low_v: Some(3.0) };
        let device = [(t, [-20.0, 40.0])].into();
        let mut limits = Limits::new(&settings);
        assert_eq!(limits.range(t), (-40.0, 50.0));
        limits.profile = Some(&profile);
        assert_eq!((limits.range(t), limits.battery_low_v()), ((-30.0, 45.0), 3.0));
        limits.device_ranges = Some(&device);
        assert_eq!(limits.range(t), (-20.0, 40.0));
        let rh = Quantity::by_name("relative_humidity").unwrap();
        assert_eq!(limits.range(rh), (0.0, 100.0));
    }

    #[test]
    fn metrics_count_flags_and_tests() {
        let m = QualityMetrics::default();
        let mut v = Verdict::new();
        v.fail(Test::Spike, "x");
        v.fail_text(Test::Battery, "y");
        assert_eq!((v.flag, v.reason()), (QualityFlag::Suspect, "spike: x; battery: y"));
        let mut w = Verdict::new();
        w.fail_text(Test::Future, "z");
        w.fail(Test::Range, format_args!("{}", 1));
        assert_eq!(
            (w.flag, w.reason(), w.failures.as_slice()),
            (QualityFlag::Bad, "future: z; range: 1", &[Test::Future, Test::Range][..])
        );
        m.count(&v);
        m.count(&Verdict::new());
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("messnetz_readings_quality_total{flag=\"suspect\"} 1\n"), "{out}");
        assert!(out.contains("messnetz_readings_quality_total{flag=\"good\"} 1\n"), "{out}");
        assert!(out.contains("messnetz_quality_failures_total{test=\"spike\",flag=\"suspect\"} 1\n"), "{out}");
        assert!(out.contains("messnetz_quality_failures_total{test=\"range\",flag=\"bad\"} 0\n"), "{out}");
    }
}
