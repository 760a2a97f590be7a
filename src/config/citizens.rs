//! The `[citizens]` section: sensors that citizens register and push data from, and how their
//! readings are checked against the official stations.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::Quantity;

/// Citizen sensors (`[citizens]`): registration on the public page or by API, a per-sensor
/// token, approval by an operator before anything is public, and the HTTP push of the
/// sensor.community firmware. See docs/citizens.md.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CitizenSettings {
    /// Take registrations and pushes from citizens. Off by default: the registration form and
    /// the push endpoint are public, so an operator turns them on deliberately.
    pub enabled: bool,
    /// Largest push body, in bytes; a larger one is refused with 413 and not stored.
    pub max_body_bytes: usize,
    /// Most registrations waiting for approval at once; further ones are refused with 429
    /// until an operator approves or removes some (a bound against form spam).
    pub max_pending: usize,
    /// Licence citizens grant for their data when they register: `dl-by-de/2.0`,
    /// `dl-zero-de/2.0`, `cc-by/4.0` or `cc-zero`.
    pub licence: String,
    /// Count approved citizen sensors in the official district aggregates. Off by default:
    /// citizen sensors are uncalibrated and often sited in sun or shelter.
    pub in_district_aggregates: bool,
    /// Neighbour test: a citizen reading that differs by more than this (canonical unit) from
    /// each of its nearest official neighbours' readings of the same quantity at the same time
    /// is suspect (test `neighbours`). Quantities not listed are not compared.
    pub neighbour_max_delta: BTreeMap<Quantity, f64>,
    /// How many of the nearest official open devices a reading is compared with.
    pub neighbours: usize,
    /// Official devices farther away than this many kilometres are not neighbours.
    pub neighbour_max_km: f64,
    /// "The same time": an official reading counts if it is at most this many minutes before
    /// or after the citizen reading.
    pub neighbour_window_min: u64,
}

impl Default for CitizenSettings {
    fn default() -> Self {
        let q = |name: &str| Quantity::by_name(name);
        let deltas = [("air_temperature", 5.0), ("relative_humidity", 25.0), ("air_pressure", 5.0)];
        Self {
            enabled: false,
            max_body_bytes: 16 * 1024,
            max_pending: 1000,
            licence: "dl-by-de/2.0".into(),
            in_district_aggregates: false,
            neighbour_max_delta: deltas.into_iter().filter_map(|(n, d)| q(n).map(|q| (q, d))).collect(),
            neighbours: 2,
            neighbour_max_km: 10.0,
            neighbour_window_min: 30,
        }
    }
}

impl CitizenSettings {
    /// Every problem, as (key, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if crate::model::licence_uri(&self.licence).is_none() {
            out.push(("citizens.licence".into(), "expected dl-by-de/2.0, dl-zero-de/2.0, cc-by/4.0 or cc-zero".into()));
        }
        if self.max_body_bytes < 256 {
            out.push(("citizens.max_body_bytes".into(), "expected at least 256 bytes".into()));
        }
        for (q, d) in &self.neighbour_max_delta {
            if !d.is_finite() || *d <= 0.0 {
                out.push((format!("citizens.neighbour_max_delta.{q}"), "expected a positive number".into()));
            }
        }
        if !self.neighbour_max_km.is_finite() || self.neighbour_max_km <= 0.0 {
            out.push(("citizens.neighbour_max_km".into(), "expected a positive number of kilometres".into()));
        }
        out
    }
}
