//! The neighbour test of citizen sensors: a reading that differs from each of its nearest
//! official stations' readings of the same quantity at the same time by more than
//! `citizens.neighbour_max_delta` is suspect (test `neighbours`).
//!
//! Official stations are calibrated and sited by the book; a citizen's sensor on a sunny
//! balcony or in a car park is not. The test only marks the reading; it is kept.

use chrono::{DateTime, Duration, Utc};

use super::{Test, Verdict};
use crate::config::CitizenSettings;
use crate::model::{DeviceId, Quantity};

/// What the test reads of the official stations; the store implements it.
pub trait NearbyLookup {
    /// The reading of `device`'s `quantity` not flagged bad that is nearest to `time`, at
    /// most `within` away; `None` if there is none (or it cannot be read).
    fn value_near(&self, device: &DeviceId, quantity: Quantity, time: DateTime<Utc>, within: Duration) -> Option<f64>;
}

/// Great-circle distance in kilometres (haversine; plenty for neighbours within a city).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (a.0.to_radians(), a.1.to_radians(), b.0.to_radians(), b.1.to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2) + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// Compare one citizen reading at position `here` with the nearest `stations` (official
/// devices as id, latitude, longitude) that have a reading of the quantity at that time; records a failure in `verdict` when it is farther
/// than the allowed difference from every one of them.
#[allow(clippy::too_many_arguments)]
pub fn check<'a>(
    lookup: &dyn NearbyLookup,
    stations: impl Iterator<Item = (&'a DeviceId, f64, f64)>,
    here: (f64, f64),
    quantity: Quantity,
    value: f64,
    time: DateTime<Utc>,
    settings: &CitizenSettings,
    verdict: &mut Verdict,
) {
    let Some(&max_delta) = settings.neighbour_max_delta.get(&quantity) else { return };
    if !value.is_finite() || settings.neighbours == 0 {
        return;
    }
    let mut near: Vec<(f64, &DeviceId)> = stations
        .map(|(id, lat, lon)| (distance_km(here, (lat, lon)), id))
        .filter(|(d, _)| *d <= settings.neighbour_max_km)
        .collect();
    near.sort_by(|a, b| a.0.total_cmp(&b.0));
    let within = Duration::minutes(settings.neighbour_window_min.min(i64::MAX as u64 / 60_000) as i64);
    let mut found = Vec::new();
    for (km, station) in near {
        if let Some(v) = lookup.value_near(station, quantity, time, within) {
            found.push((station, km, v));
            if found.len() == settings.neighbours {
                break;
            }
        }
    }
    if found.is_empty() || found.iter().any(|(_, _, v)| (value - v).abs() <= max_delta) {
        return;
    }
    let unit = quantity.unit();
    let list: Vec<String> = found.iter().map(|(id, km, v)| format!("{id} {v} {unit} at {km:.1} km")).collect();
    verdict.fail(
        Test::Neighbours,
        format!(
            "{value} {unit} differs by more than {max_delta} {unit} from its nearest official stations ({})",
            list.join(", ")
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QualityFlag;

    struct Fixed(Vec<(&'static str, f64)>);

    impl NearbyLookup for Fixed {
        fn value_near(&self, device: &DeviceId, _: Quantity, _: DateTime<Utc>, _: Duration) -> Option<f64> {
            self.0.iter().find(|(d, _)| *d == device.as_str()).map(|(_, v)| *v)
        }
    }

    fn run(lookup: &Fixed, value: f64) -> Verdict {
        let ids: Vec<DeviceId> = ["near", "mid", "far", "silent"].iter().map(|s| DeviceId::parse(s).unwrap()).collect();
        let stations =
            vec![(&ids[0], 48.1375, 11.5756), (&ids[1], 48.1480, 11.5890), (&ids[2], 49.5, 11.0), (&ids[3], 48.1376, 11.5755)];
        let mut verdict = Verdict::new();
        let q = Quantity::by_name("air_temperature").unwrap();
        check(lookup, stations.into_iter(), (48.1374, 11.5755), q, value, Utc::now(), &CitizenSettings::default(), &mut verdict);
        verdict
    }

    #[test]
    fn eight_degrees_above_both_neighbours_is_suspect() {
        let lookup = Fixed(vec![("near", 20.0), ("mid", 20.5), ("far", 28.0)]);
        let v = run(&lookup, 28.4);
        assert_eq!(v.flag, QualityFlag::Suspect);
        assert!(v.reason().starts_with("neighbours: 28.4 Cel differs"), "{}", v.reason());
        assert!(v.reason().contains("near 20 Cel") && v.reason().contains("mid 20.5 Cel"), "{}", v.reason());
        assert!(!v.reason().contains("far"), "a station 150 km away is no neighbour: {}", v.reason());
    }

    #[test]
    fn close_to_one_neighbour_is_good() {
        let lookup = Fixed(vec![("near", 20.0), ("mid", 26.0)]);
        assert_eq!(run(&lookup, 28.0).flag, QualityFlag::Good);
        assert_eq!(run(&lookup, 24.9).flag, QualityFlag::Good);
    }

    #[test]
    fn without_neighbour_readings_nothing_is_said() {
        assert_eq!(run(&Fixed(vec![]), 45.0).flag, QualityFlag::Good);
    }

    #[test]
    fn distances_are_in_kilometres() {
        let d = distance_km((48.13743, 11.57549), (48.14820, 11.58940));
        assert!((d - 1.58).abs() < 0.05, "{d}");
    }
}
