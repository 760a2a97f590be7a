//! Derived quantities: dew point and heat index from the air temperature and relative humidity of one uplink.
//!
//! - Dew point: the Magnus formula over water with the coefficients of Sonntag (1990),
//!   a = 17.62, b = 243.12 °C; within ±0.35 °C for -45 °C … 60 °C.
//! - Heat index: the U.S. National Weather Service procedure: Steadman's simple formula,
//!   and where its result is 80 °F or more, the Rothfusz regression with the NWS
//!   adjustments for very dry and very humid air. Computed in °F as published, returned in °C.

use crate::model::{DecodedValue, Quantity};

/// Append dew point and heat index to one uplink's values when it has both air temperature
/// and relative humidity (the same measurement, so the same time).
pub fn add_derived(values: &mut Vec<DecodedValue>) {
    const AIR_TEMPERATURE: Quantity = Quantity::named("air_temperature");
    const RELATIVE_HUMIDITY: Quantity = Quantity::named("relative_humidity");
    const DEW_POINT: Quantity = Quantity::named("dew_point_temperature");
    const HEAT_INDEX: Quantity = Quantity::named("heat_index");
    let find = |q: Quantity| values.iter().find(|v| v.quantity == q).map(|v| v.value);
    let (Some(t), Some(rh)) = (find(AIR_TEMPERATURE), find(RELATIVE_HUMIDITY)) else { return };
    let derived = [(DEW_POINT, dew_point(t, rh)), (HEAT_INDEX, heat_index(t, rh))];
    for (quantity, value) in derived {
        if let Some(value) = value {
            if !values.iter().any(|v| v.quantity == quantity) {
                // Hundredths of a degree: the resolution of the inputs, not of the formula.
                let value = (value * 100.0).round() / 100.0;
                values.push(DecodedValue { quantity, value });
            }
        }
    }
}

/// Dew point in °C from air temperature (°C) and relative humidity (%). `None` when
/// humidity is not above 0 % (the logarithm has no value there).
pub fn dew_point(t_c: f64, rh: f64) -> Option<f64> {
    const A: f64 = 17.62;
    const B: f64 = 243.12;
    if !(rh > 0.0 && rh <= 100.0 && t_c.is_finite()) {
        return None;
    }
    let gamma = (rh / 100.0).ln() + A * t_c / (B + t_c);
    Some(B * gamma / (A - gamma))
}

/// Heat index in °C from air temperature (°C) and relative humidity (%).
pub fn heat_index(t_c: f64, rh: f64) -> Option<f64> {
    if !(0.0..=100.0).contains(&rh) || !t_c.is_finite() {
        return None;
    }
    let t = t_c * 9.0 / 5.0 + 32.0;
    let simple = 0.5 * (t + 61.0 + (t - 68.0) * 1.2 + rh * 0.094);
    let hi = if (simple + t) / 2.0 < 80.0 {
        simple
    } else {
        let mut hi = -42.379 + 2.049_015_23 * t + 10.143_331_27 * rh
            - 0.224_755_41 * t * rh
            - 0.006_837_83 * t * t
            - 0.054_817_17 * rh * rh
            + 0.001_228_74 * t * t * rh
            + 0.000_852_82 * t * rh * rh
            - 0.000_001_99 * t * t * rh * rh;
        if rh < 13.0 && (80.0..=112.0).contains(&t) {
            hi -= (13.0 - rh) / 4.0 * ((17.0 - (t - 95.0).abs()) / 17.0).sqrt();
        } else if rh > 85.0 && (80.0..=87.0).contains(&t) {
            hi += (rh - 85.0) / 10.0 * ((87.0 - t) / 5.0);
        }
        hi
    };
    Some((hi - 32.0) * 5.0 / 9.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn dew_point_matches_reference_values() {
        // At saturation the dew point is the temperature itself.
        assert!(close(dew_point(20.0, 100.0).unwrap(), 20.0, 1e-9));
        // Reference values from psychrometric tables: 20 °C / 50 % → 9.3 °C; 30 °C / 70 % → 23.9 °C.
        assert!(close(dew_point(20.0, 50.0).unwrap(), 9.3, 0.1), "{:?}", dew_point(20.0, 50.0));
        assert!(close(dew_point(30.0, 70.0).unwrap(), 23.9, 0.15), "{:?}", dew_point(30.0, 70.0));
        assert!(close(dew_point(-10.0, 80.0).unwrap(), -12.9, 0.2), "{:?}", dew_point(-10.0, 80.0));
        assert_eq!(dew_point(20.0, 0.0), None);
    }

    #[test]
    fn heat_index_matches_the_nws_table() {
        // NWS heat index chart: 90 °F and 70 % → 106 °F; 100 °F and 40 % → 109 °F; 80 °F and 40 % → 80 °F.
        let f = |t_f: f64, rh: f64| heat_index((t_f - 32.0) * 5.0 / 9.0, rh).unwrap() * 9.0 / 5.0 + 32.0;
        assert!(close(f(90.0, 70.0), 106.0, 1.0), "{}", f(90.0, 70.0));
        assert!(close(f(100.0, 40.0), 109.0, 1.0), "{}", f(100.0, 40.0));
        assert!(close(f(80.0, 40.0), 80.0, 1.0), "{}", f(80.0, 40.0));
        // In cool air the simple formula applies and stays near the temperature.
        assert!(close(heat_index(15.0, 50.0).unwrap(), 14.3, 0.5), "{:?}", heat_index(15.0, 50.0));
    }
}
