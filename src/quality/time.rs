//! The time a reading is stored at: its measurement time when that is plausible, else the time the message was received.
//!
//! A device or network server whose clock is wrong can send any time: 9999-12-31 would
//! make a reading the device's newest for ever (every later one sorts before it), 0001-01-01
//! would stretch the catalogue's temporal coverage over two thousand years. Such a reading
//! keeps its value, is stored at its reception time instead, and is flagged suspect with the
//! time it claimed, so nothing is lost and nothing sorts where it can't belong.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rustc_hash::FxHashMap;

use super::verdict::{Test, Verdict};
use crate::config::QualitySettings;
use crate::model::DeviceId;

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

/// Devices whose last reception-time stamp is remembered at most; beyond, all are forgotten.
const RECEPTION_DEVICES: usize = 100_000;

/// The times one ingest stage gave readings stored at their reception time (the message had
/// no measurement time, or an implausible one), by device.
///
/// The store keys a reading by its series and millisecond, so two uplinks of one device
/// received within one millisecond (a burst replayed by a network server, a flood of a
/// clock set years ahead) would be stored as one reading: the second replacing the first
/// although both were acknowledged. Each such reading is stored a millisecond after the
/// device's previous one instead when its reception millisecond is taken.
#[derive(Default)]
pub struct ReceptionTimes {
    last: FxHashMap<DeviceId, i64>,
}

impl ReceptionTimes {
    /// [`reading_time`], with reception times of `device` kept a millisecond apart.
    pub fn reading_time(
        &mut self,
        device: &DeviceId,
        measured: Option<DateTime<Utc>>,
        received: DateTime<Utc>,
        settings: &QualitySettings,
    ) -> ReadingTime {
        let mut when = reading_time(measured, received, settings);
        if measured.is_some() && when.replaced.is_none() {
            return when;
        }
        let ms = received.timestamp_millis();
        let ms = match self.last.get(device.as_str()) {
            Some(&last) if last >= ms => last + 1,
            _ => ms,
        };
        if self.last.len() >= RECEPTION_DEVICES && !self.last.contains_key(device.as_str()) {
            self.last.clear();
        }
        self.last.insert(device.clone(), ms);
        when.time = DateTime::from_timestamp_millis(ms).unwrap_or(received);
        when
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

    #[test]
    fn readings_stored_at_reception_in_one_millisecond_are_kept_a_millisecond_apart() {
        let settings = QualitySettings::default();
        let mut times = ReceptionTimes::default();
        let (a, b) = (DeviceId::parse("a").unwrap(), DeviceId::parse("b").unwrap());
        let now = at("2026-11-30T06:00:00.000250Z");
        let ms = |t: DateTime<Utc>| t.timestamp_millis() - now.timestamp_millis();
        let far = Some(at("9999-12-31T23:59:59Z"));
        // Three future-stamped uplinks of a and one without a time, all in one millisecond.
        let stamped: Vec<i64> =
            [far, far, None, far].iter().map(|m| ms(times.reading_time(&a, *m, now, &settings).time)).collect();
        assert_eq!(stamped, vec![0, 1, 2, 3]);
        assert!(times.reading_time(&a, far, now, &settings).replaced.is_some(), "still flagged");
        // Another device has its own clock; a plausible time is kept as it is, even if equal.
        assert_eq!(ms(times.reading_time(&b, far, now, &settings).time), 0);
        assert_eq!(times.reading_time(&a, Some(now), now, &settings).time, now);
        // A later reception is taken as it is once it has passed the last one given.
        let later = now + Duration::milliseconds(10);
        assert_eq!(ms(times.reading_time(&a, None, later, &settings).time), 10);
    }
}
