//! The time a reading is stored at: its measurement time when that is plausible, else the time the message was received.
//!
//! A device or network server whose clock is wrong can send any time: 9999-12-31 would
//! make a reading the device's newest for ever (every later one sorts before it), 0001-01-01
//! would stretch the catalogue's temporal coverage over two thousand years. Such a reading
//! keeps its value, is stored at its reception time instead, and is flagged suspect with the
//! time it claimed, so nothing is lost and nothing sorts where it can't belong.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::verdict::{Test, Verdict};
use crate::config::QualitySettings;

/// No sensor of a city network measured anything before this day: an earlier time is a clock
/// that was never set or fell back to an epoch (1970, 2000 for some RTCs count from it, 0001).
pub const EARLIEST_PLAUSIBLE: NaiveDate = match NaiveDate::from_ymd_opt(2000, 1, 1) {
    Some(d) => d,
    None => panic!("a valid date"),
};

/// The earliest plausible measurement time, as a UTC instant.
pub fn earliest_plausible() -> DateTime<Utc> {
    EARLIEST_PLAUSIBLE.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// When a reading is stored, and why not at its measurement time if it isn't.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadingTime {
    /// The time to store the reading at.
    pub time: DateTime<Utc>,
    /// The test and explanation when the measurement time was replaced by the reception time.
    pub replaced: Option<(Test, String)>,
}

impl ReadingTime {
    /// Add the replacement, if any, to a reading's verdict (it makes the reading suspect).
    pub fn flag(&self, verdict: &mut Verdict) {
        if let Some((test, why)) = &self.replaced {
            verdict.fail(*test, why.clone());
        }
    }
}

/// Choose the time of an uplink's readings from its measurement time (`None`: the message
/// has none) and its reception time:
///
/// - more than `max_future_min` after reception: the reception time, test `future`;
/// - before [`EARLIEST_PLAUSIBLE`]: the reception time, test `age`;
/// - otherwise the measurement time (an old but possible time, a backfill, stays, and is
///   flagged by the `age` test only if `max_age_h` is set).
pub fn reading_time(measured: Option<DateTime<Utc>>, received: DateTime<Utc>, settings: &QualitySettings) -> ReadingTime {
    let Some(measured) = measured else {
        return ReadingTime { time: received, replaced: None };
    };
    let ahead = Duration::minutes(settings.max_future_min.min(1_000_000) as i64);
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let replaced = if measured > received + ahead {
        let minutes = (measured - received).num_minutes();
        Some((
            Test::Future,
            format!(
                "measurement time {} is {minutes} min after its reception (more than {} min); stored at the reception time",
                stamp(measured),
                settings.max_future_min
            ),
        ))
    } else if measured < earliest_plausible() {
        Some((
            Test::Age,
            format!("measurement time {} is before {EARLIEST_PLAUSIBLE}; stored at the reception time", stamp(measured)),
        ))
    } else {
        None
    };
    match replaced {
        Some(why) => ReadingTime { time: received, replaced: Some(why) },
        None => ReadingTime { time: measured, replaced: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QualityFlag;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn implausible_times_are_replaced_by_the_reception_time_and_say_so() {
        let settings = QualitySettings::default();
        let now = at("2026-11-30T06:00:00Z");
        let far = reading_time(Some(at("9999-12-31T23:59:59Z")), now, &settings);
        assert_eq!(far.time, now);
        let (test, why) = far.replaced.clone().unwrap();
        assert_eq!(test, Test::Future);
        assert!(why.starts_with("measurement time 9999-12-31T23:59:59Z is "), "{why}");
        assert!(why.ends_with("stored at the reception time"), "{why}");
        let mut verdict = Verdict::new();
        far.flag(&mut verdict);
        assert_eq!(verdict.flag, QualityFlag::Suspect);
        assert!(verdict.reason().starts_with("future: measurement time 9999-12-31"), "{}", verdict.reason());

        for old in ["0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1999-12-31T23:59:59Z"] {
            let r = reading_time(Some(at(old)), now, &settings);
            assert_eq!(r.time, now, "{old}");
            let (test, why) = r.replaced.unwrap();
            assert_eq!(test, Test::Age);
            assert!(why.contains("before 2000-01-01"), "{why}");
        }
    }

    #[test]
    fn plausible_times_are_kept() {
        let settings = QualitySettings::default();
        let now = at("2026-11-30T06:00:00Z");
        for t in ["2026-11-30T06:09:59Z", "2026-11-30T05:00:00Z", "2000-01-01T00:00:00Z", "2015-06-01T12:00:00Z"] {
            assert_eq!(reading_time(Some(at(t)), now, &settings), ReadingTime { time: at(t), replaced: None }, "{t}");
        }
        assert_eq!(reading_time(None, now, &settings).time, now);
        // 11 minutes ahead is beyond the default 10.
        assert!(reading_time(Some(at("2026-11-30T06:11:00Z")), now, &settings).replaced.is_some());
        let lenient = QualitySettings { max_future_min: 60, ..Default::default() };
        assert!(reading_time(Some(at("2026-11-30T06:11:00Z")), now, &lenient).replaced.is_none());
    }
}
