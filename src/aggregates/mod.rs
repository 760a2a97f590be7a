//! Rollups: count, mean, min, max and last per device (and per district) and quantity, in 10 min, 1 h and 1 d windows.
//!
//! District rollups are updated in the same transaction as the readings they summarise, so
//! they are exactly as durable as the readings: a batch is first folded in memory (many
//! readings of one window become one update), then merged into the stored windows. Device
//! windows are journaled in that transaction and stored by a deferred flush (see
//! `store::device_windows`). Readings flagged bad are counted as excluded and left out of
//! the statistics.

pub mod derived;

use rustc_hash::FxHashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{QualityFlag, Reading};

/// The window lengths messnetz keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Interval {
    #[serde(rename = "10m")]
    TenMinutes,
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "1d")]
    Day,
}

impl Interval {
    pub const ALL: [Interval; 3] = [Interval::TenMinutes, Interval::Hour, Interval::Day];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "10m" => Some(Interval::TenMinutes),
            "1h" => Some(Interval::Hour),
            "1d" => Some(Interval::Day),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::TenMinutes => "10m",
            Interval::Hour => "1h",
            Interval::Day => "1d",
        }
    }

    /// Length in milliseconds. Days are UTC days.
    pub fn millis(self) -> i64 {
        match self {
            Interval::TenMinutes => 600_000,
            Interval::Hour => 3_600_000,
            Interval::Day => 86_400_000,
        }
    }

    /// Stable code used in store keys.
    pub fn code(self) -> u8 {
        match self {
            Interval::TenMinutes => 0,
            Interval::Hour => 1,
            Interval::Day => 2,
        }
    }

    /// Start (ms since the epoch) of the window that holds `t_ms`.
    pub fn window_start(self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.millis()) * self.millis()
    }
}

/// Whose readings a rollup summarises.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Device(String),
    District(String),
}

impl Scope {
    /// The store key: `d:` or `z:` and the name, so both kinds sort apart in one table.
    pub fn key(&self) -> String {
        match self {
            Scope::Device(d) => format!("d:{d}"),
            Scope::District(z) => format!("z:{z}"),
        }
    }
}

/// A window as stored: count, excluded, sum, min, max, last, last time (ms).
pub type WindowTuple = (u64, u64, f64, f64, f64, f64, i64);

/// The statistics of one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Readings in the statistics.
    pub count: u64,
    /// Readings flagged bad, left out of the statistics.
    pub excluded: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The value with the latest measurement time, and that time (ms).
    pub last: f64,
    pub last_time: i64,
}

impl Window {
    pub const EMPTY: Window = Window {
        count: 0,
        excluded: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        last: f64::NAN,
        last_time: i64::MIN,
    };

    pub fn add(&mut self, value: f64, time_ms: i64, flag: QualityFlag) {
        if flag == QualityFlag::Bad {
            self.excluded += 1;
            return;
        }
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        // Ties (same time) keep the larger value, so merging is order-independent.
        if time_ms > self.last_time || (time_ms == self.last_time && value > self.last) {
            self.last = value;
            self.last_time = time_ms;
        }
    }

    pub fn merge(&mut self, other: &Window) {
        self.count += other.count;
        self.excluded += other.excluded;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.count > 0 && (other.last_time > self.last_time || (other.last_time == self.last_time && other.last > self.last))
        {
            self.last = other.last;
            self.last_time = other.last_time;
        }
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    pub fn as_tuple(&self) -> WindowTuple {
        (self.count, self.excluded, self.sum, self.min, self.max, self.last, self.last_time)
    }

    pub fn from_tuple((count, excluded, sum, min, max, last, last_time): WindowTuple) -> Self {
        Window { count, excluded, sum, min, max, last, last_time }
    }
}

/// A window within one district: quantity, interval code, window start (ms).
pub type DistrictWindow = (crate::model::Quantity, u8, i64);

/// A batch's readings folded into per-window deltas, ready to merge into the store.
#[derive(Debug, Default)]
pub struct RollupDelta {
    /// By district name, then quantity and ten-minute window start: a reading costs one
    /// lookup of its district (no allocation once the district is there) and one small-key
    /// update, hashed with FxHash (the keys are the gateway's own, not a client's). Hours and
    /// days are merged from these in [`RollupDelta::windows`], as the store merges them when
    /// it recomputes a window.
    ten_minutes: FxHashMap<String, FxHashMap<(crate::model::Quantity, i64), Window>>,
}

impl RollupDelta {
    /// Add one new reading of an open device to its district's windows. (Device windows are
    /// journaled and flushed; see `store::device_windows`.)
    pub fn add(&mut self, reading: &Reading, district: Option<&str>) {
        if let Some(z) = district {
            self.add_to_district(z, reading.quantity, reading.time.timestamp_millis(), reading.value, reading.flag);
        }
    }

    pub fn add_to_district(
        &mut self,
        district: &str,
        quantity: crate::model::Quantity,
        t_ms: i64,
        value: f64,
        flag: QualityFlag,
    ) {
        let windows = match self.ten_minutes.get_mut(district) {
            Some(w) => w,
            None => self.ten_minutes.entry(district.to_owned()).or_default(),
        };
        let key = (quantity, Interval::TenMinutes.window_start(t_ms));
        windows.entry(key).or_insert(Window::EMPTY).add(value, t_ms, flag);
    }

    pub fn is_empty(&self) -> bool {
        self.ten_minutes.is_empty()
    }

    /// Every window the delta touches, by district: its ten-minute windows and the hours and
    /// days merged from them.
    pub fn windows(&self) -> impl Iterator<Item = (&str, FxHashMap<DistrictWindow, Window>)> {
        self.ten_minutes.iter().map(|(district, tens)| {
            let mut all = FxHashMap::with_capacity_and_hasher(3 * tens.len(), Default::default());
            for (&(quantity, start), w) in tens {
                all.insert((quantity, Interval::TenMinutes.code(), start), *w);
                for interval in [Interval::Hour, Interval::Day] {
                    let key = (quantity, interval.code(), interval.window_start(start));
                    all.entry(key).or_insert(Window::EMPTY).merge(w);
                }
            }
            (district.as_str(), all)
        })
    }

    /// Number of district windows the delta touches.
    pub fn len(&self) -> usize {
        self.windows().map(|(_, w)| w.len()).sum()
    }
}

/// One window as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub start: DateTime<Utc>,
    pub count: u64,
    pub excluded: u64,
    pub mean: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub last: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_start_on_their_boundaries_also_before_1970() {
        assert_eq!(Interval::TenMinutes.window_start(1_199_999), 600_000);
        assert_eq!(Interval::Hour.window_start(3_600_000), 3_600_000);
        assert_eq!(Interval::Day.window_start(-1), -86_400_000);
    }

    #[test]
    fn bad_readings_are_excluded_and_counted() {
        let mut w = Window::EMPTY;
        w.add(2.0, 10, QualityFlag::Good);
        w.add(100.0, 20, QualityFlag::Bad);
        w.add(4.0, 5, QualityFlag::Suspect);
        assert_eq!((w.count, w.excluded), (2, 1));
        assert_eq!(w.mean(), Some(3.0));
        assert_eq!((w.min, w.max), (2.0, 4.0));
        assert_eq!((w.last, w.last_time), (2.0, 10), "last is by measurement time, not arrival");
    }

    #[test]
    fn merging_equals_adding_in_any_order() {
        let values = [(1.0, 30), (7.0, 10), (-3.0, 20), (7.5, 40), (0.0, 40)];
        let mut all = Window::EMPTY;
        for (v, t) in values {
            all.add(v, t, QualityFlag::Good);
        }
        let (mut a, mut b) = (Window::EMPTY, Window::EMPTY);
        for (i, (v, t)) in values.iter().enumerate().rev() {
            if i % 2 == 0 {
                a.add(*v, *t, QualityFlag::Good)
            } else {
                b.add(*v, *t, QualityFlag::Good)
            }
        }
        b.merge(&a);
        assert_eq!(all, b);
        assert_eq!(all.last, 7.5);
        let mut empty = Window::EMPTY;
        empty.merge(&Window::EMPTY);
        assert_eq!(empty.mean(), None);
    }

    #[test]
    fn a_deltas_hours_and_days_hold_every_reading_of_their_ten_minute_windows() {
        let t = crate::model::Quantity::named("air_temperature");
        let rh = crate::model::Quantity::named("relative_humidity");
        let day = 20_000 * Interval::Day.millis();
        // Two ten-minute windows of one hour, another hour of the day, and the next day.
        let readings = [
            (t, day + 60_000, 4.0, QualityFlag::Good),
            (t, day + 540_000, 6.0, QualityFlag::Suspect),
            (t, day + 600_000, 8.0, QualityFlag::Good),
            (t, day + 610_000, 99.0, QualityFlag::Bad),
            (t, day + 7_200_000, 2.0, QualityFlag::Good),
            (t, day + Interval::Day.millis(), 1.0, QualityFlag::Good),
            (rh, day + 60_000, 50.0, QualityFlag::Good),
        ];
        let mut delta = RollupDelta::default();
        for (q, ms, v, f) in readings {
            delta.add_to_district("Altstadt", q, ms, v, f);
        }
        delta.add_to_district("Au", t, day, 3.0, QualityFlag::Good);
        // What adding each reading to each of its windows gives.
        let mut want: FxHashMap<(&str, DistrictWindow), Window> = FxHashMap::default();
        for (z, (q, ms, v, f)) in readings.iter().map(|r| ("Altstadt", *r)).chain([("Au", (t, day, 3.0, QualityFlag::Good))]) {
            for interval in Interval::ALL {
                want.entry((z, (q, interval.code(), interval.window_start(ms)))).or_insert(Window::EMPTY).add(v, ms, f);
            }
        }
        let got: FxHashMap<(&str, DistrictWindow), Window> =
            delta.windows().flat_map(|(z, windows)| windows.into_iter().map(move |(k, w)| ((z, k), w))).collect();
        assert_eq!(got, want);
        assert_eq!(delta.len(), want.len());
        let hour = got[&("Altstadt", (t, Interval::Hour.code(), day))];
        assert_eq!((hour.count, hour.excluded, hour.sum, hour.last, hour.last_time), (3, 1, 18.0, 8.0, day + 600_000));
    }
}
