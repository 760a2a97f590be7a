//! A reading's verdict (the tests it failed and why) and the thresholds that hold for one device.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::Duration;
use smallvec::SmallVec;

use crate::config::{ProfileQuality, QualitySettings};
use crate::model::{QualityFlag, Quantity, Reason};

/// The quality tests, as named in reasons and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    Range,
    Spike,
    Stuck,
    Future,
    Age,
    Battery,
    /// A citizen sensor's reading far from its nearest official neighbours ([`super::neighbours`]).
    Neighbours,
}

impl Test {
    pub const ALL: [Test; 7] = [Test::Range, Test::Spike, Test::Stuck, Test::Future, Test::Age, Test::Battery, Test::Neighbours];

    pub fn as_str(self) -> &'static str {
        match self {
            Test::Range => "range",
            Test::Spike => "spike",
            Test::Stuck => "stuck",
            Test::Future => "future",
            Test::Age => "age",
            Test::Battery => "battery",
            Test::Neighbours => "neighbours",
        }
    }

    /// The flag a failure gives: only an impossible value is bad.
    pub fn flag(self) -> QualityFlag {
        match self {
            Test::Range => QualityFlag::Bad,
            _ => QualityFlag::Suspect,
        }
    }
}

/// What quality control concluded about one reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The worst flag of the failed tests; good when none failed.
    pub flag: QualityFlag,
    /// Every failed test, in the order the tests ran: held inline (up to one of each test), so
    /// a flagged reading allocates only its reason.
    pub failures: SmallVec<[Test; 7]>,
    /// The reason as it will be stored ([`Self::reason`]), written as each test fails into
    /// one buffer: a string per failure joined at the end allocated and copied each again
    /// (the join alone took 7 % of the gateway's samples in the harness's million, whose
    /// uplinks are nearly all flagged; BENCHMARKS.md). Starts as the uplink's shared
    /// explanation when the time test failed ([`Self::shared`]); copied only if more fail.
    reason: Reason,
}

impl Default for Verdict {
    /// No test failed yet.
    fn default() -> Self {
        Self::new()
    }
}

impl Verdict {
    pub(super) fn new() -> Self {
        Self { flag: QualityFlag::Good, failures: SmallVec::new(), reason: Reason::default() }
    }

    /// A verdict with one failed test whose whole reason, `test: why`, is `text`, shared with
    /// the other readings of the uplink: a clone of it counts, it does not copy.
    pub(super) fn shared(test: Test, text: Arc<str>) -> Self {
        let mut failures = SmallVec::new();
        failures.push(test);
        Self { flag: test.flag(), failures, reason: Reason::shared(text) }
    }

    /// Record a failed test with its explanation. `why` is written straight into the reason
    /// (a `format_args!` allocates nothing of its own).
    pub(super) fn fail(&mut self, test: Test, why: impl std::fmt::Display) {
        let _ = write!(self.begin(test), "{why}");
    }

    /// [`Self::fail`] with the explanation written by `write` straight into the reason
    /// (a `String`: no formatting machinery between).
    pub(super) fn fail_with(&mut self, test: Test, write: impl FnOnce(&mut String) -> std::fmt::Result) {
        let _ = write(self.begin(test));
    }

    /// [`Self::fail`] with an explanation already written out: copied without the formatting
    /// machinery (an uplink's low battery gives each of its readings the same words).
    pub(super) fn fail_text(&mut self, test: Test, why: &str) {
        self.begin(test).push_str(why);
    }

    /// The flag, the failure and the reason up to the explanation: the reason to write the
    /// explanation into.
    fn begin(&mut self, test: Test) -> &mut String {
        if test.flag().to_byte() > self.flag.to_byte() {
            self.flag = test.flag();
        }
        // Most reasons fit: the one string grows at most once or twice.
        let reason = self.reason.own_mut(REASON_ROOM);
        if !self.failures.is_empty() {
            reason.push_str("; ");
        }
        self.failures.push(test);
        reason.push_str(test.as_str());
        reason.push_str(": ");
        reason
    }

    pub fn failed(&self, test: Test) -> bool {
        self.failures.contains(&test)
    }

    /// The stored reason: each failure as `test: why`, joined by `; `; empty when good.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// [`Self::reason`], taken without a copy.
    pub fn into_reason(self) -> Reason {
        self.reason
    }
}

/// Bytes reserved for a reason at its first failure: a spike's reason is about 110 bytes, a
/// reading stored at its reception time about 126, both together one growth more.
const REASON_ROOM: usize = 128;

/// The thresholds that hold for one device: configuration, its profile's and its own overrides.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    pub settings: &'a QualitySettings,
    /// The `[quality]` table of the device's profile.
    pub profile: Option<&'a ProfileQuality>,
    /// The device's own `ranges`.
    pub device_ranges: Option<&'a BTreeMap<Quantity, [f64; 2]>>,
    /// The device's own `battery_low_v`.
    pub device_battery_low_v: Option<f64>,
}

impl<'a> Limits<'a> {
    /// The configured thresholds without any profile or device override.
    pub fn new(settings: &'a QualitySettings) -> Self {
        Self { settings, profile: None, device_ranges: None, device_battery_low_v: None }
    }

    /// The physical range of `q` for this device: the most specific setting wins.
    pub fn range(&self, q: Quantity) -> (f64, f64) {
        let specific = self
            .device_ranges
            .and_then(|r| r.get(&q))
            .or_else(|| self.profile.and_then(|p| p.ranges.get(&q)))
            .or_else(|| self.settings.ranges.get(&q));
        match specific {
            Some([min, max]) => (*min, *max),
            None => (q.def().min, q.def().max),
        }
    }

    pub fn battery_low_v(&self) -> f64 {
        self.device_battery_low_v.or_else(|| self.profile.and_then(|p| p.battery_low_v)).unwrap_or(self.settings.battery_low_v)
    }

    /// The largest plausible change of `q` per hour; `None` when `q` is not spike-tested.
    pub fn spike_per_h(&self, q: Quantity) -> Option<f64> {
        self.settings.spike.get(&q).copied().filter(|v| *v > 0.0)
    }

    pub fn stuck_after(&self, q: Quantity) -> Option<Duration> {
        let h = self.settings.stuck_after_h;
        (h > 0 && !self.settings.stuck_exempt.contains(&q)).then(|| Duration::hours(h.min(1_000_000) as i64))
    }
}
