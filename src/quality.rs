//! Quality control: every reading gets a flag and, unless good, the reason.
//!
//! This first slice checks the physical range of each quantity and the measurement time;
//! flagged readings are stored like any other, never dropped.

use chrono::{DateTime, Duration, Utc};

use crate::model::{QualityFlag, Quantity};

/// How far in the future a measurement time may be before it is suspect (clock skew).
const MAX_FUTURE: Duration = Duration::minutes(10);

/// Flag one value. `now` is the reception time.
pub fn assess(quantity: Quantity, value: f64, time: DateTime<Utc>, now: DateTime<Utc>) -> (QualityFlag, String) {
    let def = quantity.def();
    if !value.is_finite() {
        return (QualityFlag::Bad, format!("value {value} is not a finite number"));
    }
    if value < def.min || value > def.max {
        return (
            QualityFlag::Bad,
            format!("range: {value} {} is outside the physical range {} to {} {}", def.unit, def.min, def.max, def.unit),
        );
    }
    if time > now + MAX_FUTURE {
        return (QualityFlag::Suspect, format!("time: measured at {time}, after its reception at {now}"));
    }
    (QualityFlag::Good, String::new())
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
}
