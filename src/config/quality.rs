//! The `[quality]` section: thresholds of every quality test, with their defaults, and the
//! per-profile and per-device overrides of the physical range and the battery threshold.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::model::Quantity;

/// Thresholds of quality control and staleness (`[quality]`). Every value here is a default
/// for all devices; ranges and the battery threshold can be overridden per profile and per
/// device, the expected interval per device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualitySettings {
    /// A measurement time more than this many minutes after the message's reception is
    /// suspect (test `future`): the clock of the device or network server runs ahead. The
    /// reading is stored at its reception time instead, so that it can't stay the device's
    /// latest value (a time before 2000-01-01 is treated alike, test `age`).
    pub max_future_min: u64,
    /// A measurement time more than this many hours before the message's reception is suspect
    /// (test `age`); the time is kept. 0 turns the test off, the default: backfills from a
    /// network server and replayed dead letters legitimately carry old times.
    pub max_age_h: u64,
    /// Physical range per quantity as `[min, max]` in the canonical unit, replacing the
    /// built-in range (see the quantity table in docs/profiles.md). Profiles and devices can narrow it
    /// further. Outside the range a reading is bad (test `range`).
    pub ranges: BTreeMap<Quantity, [f64; 2]>,
    /// Spike test: the largest plausible change per hour of a quantity, in its canonical unit.
    /// A reading that changes faster against its neighbour in time is suspect (test `spike`).
    /// Keys given here are merged over the built-in table (docs/configuration.md); 0 turns the test off for a
    /// quantity; quantities in neither are not spike-tested.
    #[serde(deserialize_with = "merge_spike")]
    pub spike: BTreeMap<Quantity, f64>,
    /// The spike test allows at least the change of this many minutes, so that readings a
    /// few seconds apart may still differ by sensor noise and resolution.
    pub spike_min_window_min: u64,
    /// Stuck-sensor test: a value unchanged for this many hours is suspect (test `stuck`);
    /// 0 turns the test off.
    pub stuck_after_h: u64,
    /// Quantities that legitimately keep one value for long (no rain, no lightning, a
    /// battery that holds its voltage): never stuck-tested. Replaces the default list.
    pub stuck_exempt: Vec<Quantity>,
    /// A `battery_voltage` below this many volts makes the other readings of the same uplink
    /// suspect (test `battery`): sensors drift and fail as their battery runs out. 0 turns
    /// the test off. Batteries differ: profiles and devices can set their own.
    pub battery_low_v: f64,
    /// Like `battery_low_v`, for a `battery_level` below this many percent; 0 turns it off.
    pub battery_low_percent: f64,
    /// A device not heard from for longer than this many seconds is stale (`/v1/devices`,
    /// `messnetz_devices_stale`); devices can set their own `expected_interval_s`. Leave room
    /// for an uplink or two lost on the radio.
    pub expected_interval_s: u64,
    /// Most series (device and quantity) whose recent history the spike and stuck tests keep
    /// in memory; beyond it the least recently used are forgotten (and read again from the
    /// store when they next report). About 100 bytes each.
    pub max_series: usize,
}

/// The built-in spike limits, per hour: a front or a shower moves temperature and humidity
/// fast, but not this fast; pressure moves by a few hPa per hour only in a storm.
pub const DEFAULT_SPIKE_PER_H: &[(&str, f64)] = &[
    ("air_temperature", 10.0),
    ("dew_point_temperature", 10.0),
    ("relative_humidity", 50.0),
    ("air_pressure", 5.0),
    ("soil_temperature", 5.0),
];

/// Quantities that are not stuck-tested unless `stuck_exempt` says otherwise.
pub const DEFAULT_STUCK_EXEMPT: &[&str] =
    &["precipitation_amount", "rainfall_rate", "lightning_strike_count", "battery_voltage", "battery_level"];

fn quantities<'a>(names: &'a [&'a str]) -> impl Iterator<Item = Quantity> + 'a {
    names.iter().filter_map(|n| Quantity::by_name(n))
}

fn default_spike() -> BTreeMap<Quantity, f64> {
    DEFAULT_SPIKE_PER_H.iter().filter_map(|(n, v)| Some((Quantity::by_name(n)?, *v))).collect()
}

fn merge_spike<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Quantity, f64>, D::Error> {
    // Setting one quantity must not silently drop the limits of all the others.
    let mut map = default_spike();
    map.extend(BTreeMap::<Quantity, f64>::deserialize(d)?);
    Ok(map)
}

impl Default for QualitySettings {
    fn default() -> Self {
        Self {
            max_future_min: 10,
            max_age_h: 0,
            ranges: BTreeMap::new(),
            spike: default_spike(),
            spike_min_window_min: 15,
            stuck_after_h: 24,
            stuck_exempt: quantities(DEFAULT_STUCK_EXEMPT).collect(),
            battery_low_v: 2.5,
            battery_low_percent: 10.0,
            expected_interval_s: 3600,
            max_series: 100_000,
        }
    }
}

impl QualitySettings {
    /// Checks serde can't express, as (key, message) pairs relative to `quality.`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        out.extend(range_problems(&self.ranges).into_iter().map(|(q, m)| (format!("ranges.{q}"), m)));
        for (q, v) in &self.spike {
            if !v.is_finite() || *v < 0.0 {
                out.push((format!("spike.{q}"), format!("expected a change per hour of 0 or more, got {v}")));
            }
        }
        if self.spike_min_window_min == 0 {
            out.push(("spike_min_window_min".into(), "expected at least 1 minute".into()));
        }
        for (key, v) in [("battery_low_v", self.battery_low_v), ("battery_low_percent", self.battery_low_percent)] {
            if !v.is_finite() || v < 0.0 {
                out.push((key.into(), format!("expected 0 (off) or more, got {v}")));
            }
        }
        if self.battery_low_percent > 100.0 {
            out.push(("battery_low_percent".into(), "expected at most 100".into()));
        }
        if self.expected_interval_s == 0 {
            out.push(("expected_interval_s".into(), "expected at least 1 second".into()));
        }
        if self.max_series == 0 {
            out.push(("max_series".into(), "expected at least 1".into()));
        }
        out
    }
}

/// Problems of a table of `[min, max]` ranges, as (quantity, message) pairs.
pub fn range_problems(ranges: &BTreeMap<Quantity, [f64; 2]>) -> Vec<(Quantity, String)> {
    ranges
        .iter()
        .filter(|(_, [min, max])| !(min.is_finite() && max.is_finite() && min < max))
        .map(|(q, [min, max])| (*q, format!("expected [min, max] with min below max, got [{min}, {max}]")))
        .collect()
}

/// The `[quality]` table of a sensor profile: what holds for every device of the model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileQuality {
    /// Physical range per quantity, `[min, max]` in the canonical unit, for this model (its
    /// measuring range): replaces the configured or built-in range; devices can override it.
    #[serde(default)]
    pub ranges: BTreeMap<Quantity, [f64; 2]>,
    /// The battery threshold of this model, in volts, instead of `quality.battery_low_v`.
    #[serde(default)]
    pub battery_low_v: Option<f64>,
}
