//! The time a reading is stored at: its measurement time when that is plausible, else the time the message was received.
//!
//! A device or network server whose clock is wrong can send any time: 9999-12-31 would
//! make a reading the device's newest for ever (every later one sorts before it), 0001-01-01
//! would stretch the catalogue's temporal coverage over two thousand years. Such a reading
//! keeps its value, is stored at its reception time instead, and is flagged suspect with the
//! time it claimed, so nothing is lost and nothing sorts where it can't belong.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::series::SeriesLookup;
use super::verdict::{Test, Verdict};
use crate::config::QualitySettings;
use crate::model::DeviceId;
use crate::text::{Stamp, Style};

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
    /// Whether `time` is the message's measurement time; otherwise it is the reception time
    /// (or the device's next free millisecond after it), the gateway's own clock, which the
    /// `future` and `age` tests of [`super::check_reading`] have nothing to say about.
    pub measured: bool,
    /// The test, and the reason as stored (`test: why`), when the measurement time was
    /// replaced by the reception time: shared by the uplink's readings.
    pub replaced: Option<(Test, Arc<str>)>,
    /// (from, to): the device's readings at `time` were stored at their reception time by
    /// this stage and move aside to `to`, to be written again there before this uplink's
    /// readings take their place ([`ReceptionTimes`]).
    pub moved_aside: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl ReadingTime {
    /// A measurement time kept as it is.
    pub fn measured_at(time: DateTime<Utc>) -> Self {
        ReadingTime { time, measured: true, replaced: None, moved_aside: None }
    }

    /// A reading's verdict as the time test leaves it: with the replacement, if any (it makes
    /// the reading suspect). The first test: it chose the time the others test. An uplink's
    /// readings share this start (the text itself, not copies of it, until a reading fails
    /// more tests), and its row stores the words once however many of them fail more tests
    /// (see the embedded store's readings rows).
    #[inline]
    pub fn verdict(&self) -> Verdict {
        match &self.replaced {
            Some((test, text)) => Verdict::shared(*test, text.clone()),
            None => Verdict::new(),
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
    // Stores key a reading by its millisecond: a finer time (The Things Stack sends
    // nanoseconds) is cut to it here, so every store keeps the same time.
    let Some(measured) = measured.map(|t| DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)) else {
        return ReadingTime { time: received, measured: false, replaced: None, moved_aside: None };
    };
    let ahead = Duration::minutes(settings.max_future_min.min(1_000_000) as i64);
    let stamp = |t: DateTime<Utc>| Stamp(t, Style::Rfc3339);
    let replaced = if measured > received + ahead {
        let minutes = (measured - received).num_minutes();
        Some((
            Test::Future,
            format!(
                "{}: measurement time {} is {minutes} min after its reception (more than {} min); stored at the reception time",
                Test::Future.as_str(),
                stamp(measured),
                settings.max_future_min
            )
            .into(),
        ))
    } else if measured < earliest_plausible() {
        Some((
            Test::Age,
            format!(
                "{}: measurement time {} is before {EARLIEST_PLAUSIBLE}; stored at the reception time",
                Test::Age.as_str(),
                stamp(measured)
            )
            .into(),
        ))
    } else {
        None
    };
    match replaced {
        Some(why) => ReadingTime { time: received, measured: false, replaced: Some(why), moved_aside: None },
        None => ReadingTime { time: measured, measured: true, replaced: None, moved_aside: None },
    }
}

/// Devices whose times are remembered at most; beyond, all are forgotten.
const RECEPTION_DEVICES: usize = 100_000;

/// Measurement times ahead of their reception, and runs of milliseconds given at reception,
/// remembered per device at most, each (one device sending more than about a hundred
/// uplinks a second with a clock a little ahead fills the first).
const KEPT_PER_DEVICE: usize = 65_536;

/// What one ingest stage knows of a device's milliseconds.
#[derive(Default)]
struct Taken {
    /// The last millisecond given to a reading stored at its reception time.
    last: Option<i64>,
    /// The device's newest stored reading when the stage first needed to know: up to there a
    /// millisecond may be taken by a reading the stage did not write (an earlier run, a replay,
    /// another gateway), so the store is asked.
    stored_until: Option<i64>,
    /// Milliseconds of readings kept at a measurement time not before their reception:
    /// reception times still to come step over them.
    ahead: BTreeSet<i64>,
    /// Milliseconds given to readings at their reception time in the last
    /// [`STAMPS_KEPT_MS`], as runs: start -> last.
    stamps: BTreeMap<i64, i64>,
}

/// How far back the milliseconds given at reception are remembered: a measured reading
/// arriving later at one of them moves that reading aside.
const STAMPS_KEPT_MS: i64 = 600_000;

impl Taken {
    /// Note `ms` as given at reception.
    fn stamped(&mut self, ms: i64) {
        self.last = Some(ms);
        if let Some((_, end)) = self.stamps.range_mut(..ms).next_back() {
            if *end + 1 == ms {
                *end = ms;
                return;
            }
        }
        if self.stamps.len() < KEPT_PER_DEVICE {
            self.stamps.insert(ms, ms);
        }
    }

    /// Whether `ms` was given at reception; it is forgotten as such.
    fn take_stamp(&mut self, ms: i64) -> bool {
        let Some((&start, &end)) = self.stamps.range(..=ms).next_back() else { return false };
        if end < ms {
            return false;
        }
        self.stamps.remove(&start);
        if start < ms {
            self.stamps.insert(start, ms - 1);
        }
        if ms < end {
            self.stamps.insert(ms + 1, end);
        }
        true
    }

    /// Forget what reception times still to come can't meet.
    fn prune(&mut self, received_ms: i64) {
        if self.ahead.first().is_some_and(|&t| t < received_ms) {
            self.ahead = self.ahead.split_off(&received_ms);
        }
        let keep = received_ms.saturating_sub(STAMPS_KEPT_MS);
        while let Some(entry) = self.stamps.first_entry() {
            if *entry.get() >= keep {
                break;
            }
            entry.remove();
        }
    }

    /// The next millisecond for a reading of `device` stored at its reception time.
    fn stamp(&mut self, lookup: &dyn SeriesLookup, device: &DeviceId, received_ms: i64) -> i64 {
        let mut ms = self.last.map_or(received_ms, |last| last.saturating_add(1).max(received_ms));
        loop {
            for &t in self.ahead.range(ms..) {
                if t != ms {
                    break;
                }
                ms += 1;
            }
            if self.stored_until.is_none_or(|until| ms > until) {
                break;
            }
            let Some(from) = DateTime::from_timestamp_millis(ms) else { break };
            match lookup.free_from(device, from) {
                Ok(free) if free.timestamp_millis() > ms => ms = free.timestamp_millis(),
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(device = %device, error = %e, "cannot check the store for a reading at the reception time");
                    break;
                }
            }
        }
        self.stamped(ms);
        ms
    }
}

/// The times one ingest stage gave readings stored at their reception time (the message had
/// no measurement time, or an implausible one), by device.
///
/// The store keys a reading by its series and millisecond, so a reading stored at its
/// reception millisecond would replace another of the device stored there, although both
/// were acknowledged: another uplink received in the same millisecond (a burst replayed by
/// a network server), an uplink whose plausible measurement time is that millisecond, or,
/// after a restart, a reading an earlier run stored there. Such a reading is stored at the
/// next millisecond free of all of them instead. Above a thousand uplinks a second of one
/// device these times run ahead of the clock, and measurement times just ahead of it are
/// stepped over as well; a measured reading arriving later at a millisecond given at
/// reception in the last ten minutes moves that reading aside ([`ReadingTime::moved_aside`]).
/// Not covered: such a millisecond given by an earlier run (remembered in memory only).
#[derive(Default)]
pub struct ReceptionTimes {
    devices: FxHashMap<DeviceId, Taken>,
}

impl ReceptionTimes {
    /// [`reading_time`], with readings stored at their reception time moved to a millisecond
    /// no other reading of `device` has (`lookup`: the store, asked for milliseconds this
    /// stage did not give).
    pub fn reading_time(
        &mut self,
        lookup: &dyn SeriesLookup,
        device: &DeviceId,
        measured: Option<DateTime<Utc>>,
        received: DateTime<Utc>,
        settings: &QualitySettings,
    ) -> ReadingTime {
        let mut when = reading_time(measured, received, settings);
        let received_ms = received.timestamp_millis();
        let at_measurement = measured.is_some() && when.replaced.is_none();
        if at_measurement && when.time.timestamp_millis() < received_ms && !self.devices.contains_key(device.as_str()) {
            return when;
        }
        if self.devices.len() >= RECEPTION_DEVICES && !self.devices.contains_key(device.as_str()) {
            self.devices.clear();
        }
        let taken = self.devices.entry(device.clone()).or_insert_with(|| Taken {
            stored_until: match lookup.latest(device) {
                Ok(latest) => latest.iter().map(|r| r.time.timestamp_millis()).max(),
                Err(e) => {
                    tracing::warn!(device = %device, error = %e, "cannot read the device's newest reading; its reception times are not checked against the store");
                    None
                }
            },
            ..Taken::default()
        });
        taken.prune(received_ms);
        if at_measurement {
            let ms = when.time.timestamp_millis();
            if taken.take_stamp(ms) {
                let to = taken.stamp(lookup, device, received_ms);
                when.moved_aside = DateTime::from_timestamp_millis(to).map(|to| (when.time, to));
            }
            if ms >= received_ms && taken.ahead.len() < KEPT_PER_DEVICE {
                taken.ahead.insert(ms);
            }
            return when;
        }
        let ms = taken.stamp(lookup, device, received_ms);
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
    fn an_uplinks_readings_share_its_explanation_until_one_fails_more() {
        let settings = QualitySettings::default();
        let now = at("2026-11-30T06:00:00Z");
        let when = reading_time(Some(at("2026-12-09T06:00:00Z")), now, &settings);
        let (a, b) = (when.verdict(), when.verdict());
        assert_eq!(a.reason().as_ptr(), b.reason().as_ptr(), "one text, not a copy a reading");
        let mut jumped = when.verdict();
        jumped.fail(Test::Spike, "up 9 °C");
        assert_eq!(jumped.reason(), format!("{}; spike: up 9 °C", a.reason()));
        assert_eq!(jumped.failures.as_slice(), [Test::Future, Test::Spike]);
        assert_ne!(jumped.reason().as_ptr(), a.reason().as_ptr());
        // The others keep the words as they were.
        assert!(a.reason().ends_with("stored at the reception time"), "{}", a.reason());
        assert_eq!(a.into_reason(), when.verdict().into_reason());
    }

    #[test]
    fn implausible_times_are_replaced_by_the_reception_time_and_say_so() {
        let settings = QualitySettings::default();
        let now = at("2026-11-30T06:00:00Z");
        let far = reading_time(Some(at("9999-12-31T23:59:59Z")), now, &settings);
        assert_eq!(far.time, now);
        let (test, why) = far.replaced.clone().unwrap();
        assert_eq!(test, Test::Future);
        assert!(why.starts_with("future: measurement time 9999-12-31T23:59:59Z is "), "{why}");
        assert!(why.ends_with("stored at the reception time"), "{why}");
        let verdict = far.verdict();
        assert_eq!(verdict.flag, QualityFlag::Suspect);
        assert_eq!(verdict.failures.as_slice(), [Test::Future]);
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
            assert_eq!(
                reading_time(Some(at(t)), now, &settings),
                ReadingTime { time: at(t), measured: true, replaced: None, moved_aside: None },
                "{t}"
            );
        }
        let unmeasured = reading_time(None, now, &settings);
        assert_eq!((unmeasured.time, unmeasured.measured), (now, false));
        // 11 minutes ahead is beyond the default 10.
        assert!(reading_time(Some(at("2026-11-30T06:11:00Z")), now, &settings).replaced.is_some());
        let lenient = QualitySettings { max_future_min: 60, ..Default::default() };
        assert!(reading_time(Some(at("2026-11-30T06:11:00Z")), now, &lenient).replaced.is_none());
    }

    /// Readings already stored, by device: the milliseconds taken.
    #[derive(Default)]
    struct Stored(Vec<(DeviceId, i64)>);

    impl SeriesLookup for Stored {
        fn latest(&self, device: &DeviceId) -> Result<Vec<crate::model::Reading>, String> {
            let newest = self.0.iter().filter(|(d, _)| d == device).map(|(_, t)| *t).max();
            Ok(newest
                .map(|t| crate::model::Reading {
                    device: device.clone(),
                    quantity: crate::model::Quantity::by_name("air_temperature").unwrap(),
                    value: 1.0,
                    time: DateTime::from_timestamp_millis(t).unwrap(),
                    flag: QualityFlag::Good,
                    reason: Default::default(),
                })
                .into_iter()
                .collect())
        }

        fn neighbours(
            &self,
            _: &DeviceId,
            _: crate::model::Quantity,
            _: i64,
            _: i64,
        ) -> Result<crate::quality::Neighbours, String> {
            Ok((None, None))
        }

        fn free_from(&self, device: &DeviceId, from: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
            let mut t = from.timestamp_millis();
            while self.0.contains(&(device.clone(), t)) {
                t += 1;
            }
            Ok(DateTime::from_timestamp_millis(t).unwrap())
        }

        fn at(&self, _: &DeviceId, _: DateTime<Utc>) -> Result<Vec<crate::model::Reading>, String> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn readings_stored_at_reception_in_one_millisecond_are_kept_a_millisecond_apart() {
        let settings = QualitySettings::default();
        let mut times = ReceptionTimes::default();
        let store = Stored::default();
        let (a, b) = (DeviceId::parse("a").unwrap(), DeviceId::parse("b").unwrap());
        let now = at("2026-11-30T06:00:00.000250Z");
        let ms = |t: DateTime<Utc>| t.timestamp_millis() - now.timestamp_millis();
        let far = Some(at("9999-12-31T23:59:59Z"));
        // Three future-stamped uplinks of a and one without a time, all in one millisecond.
        let stamped: Vec<i64> =
            [far, far, None, far].iter().map(|m| ms(times.reading_time(&store, &a, *m, now, &settings).time)).collect();
        assert_eq!(stamped, vec![0, 1, 2, 3]);
        assert!(times.reading_time(&store, &a, far, now, &settings).replaced.is_some(), "still flagged");
        // Another device has its own milliseconds; a plausible time is kept
        assert_eq!(ms(times.reading_time(&store, &b, far, now, &settings).time), 0);
        // (to its millisecond; a reading given that millisecond at reception moves aside).
        let kept = times.reading_time(&store, &a, Some(now), now, &settings);
        assert_eq!((kept.time.timestamp_millis(), kept.moved_aside.is_some()), (now.timestamp_millis(), true));
        // A later reception is taken as it is once it has passed the last one given.
        let later = now + Duration::milliseconds(10);
        assert_eq!(ms(times.reading_time(&store, &a, None, later, &settings).time), 10);
    }

    #[test]
    fn reception_times_step_over_measurement_times_ahead_and_readings_already_stored() {
        let settings = QualitySettings::default();
        let now = at("2026-11-30T06:00:00Z");
        let ms = |t: DateTime<Utc>| t.timestamp_millis() - now.timestamp_millis();
        let a = DeviceId::parse("a").unwrap();
        let far = Some(at("2099-01-01T00:00:00Z"));
        // Measured 1, 2 and 4 ms after their reception (plausible: kept), then three uplinks
        // stored at their reception, all received at `now`.
        let mut times = ReceptionTimes::default();
        let store = Stored::default();
        for k in [1, 2, 4] {
            let t = now + Duration::milliseconds(k);
            assert_eq!(times.reading_time(&store, &a, Some(t), now, &settings).time, t);
        }
        let stamped: Vec<i64> = (0..3).map(|_| ms(times.reading_time(&store, &a, far, now, &settings).time)).collect();
        assert_eq!(stamped, vec![0, 3, 5]);
        // Measurement times before the reception can't meet reception times still to come:
        // nothing is remembered of them.
        let mut times = ReceptionTimes::default();
        assert_eq!(
            times.reading_time(&store, &a, Some(now - Duration::seconds(5)), now, &settings).time.timestamp_millis() + 5000,
            now.timestamp_millis()
        );
        assert!(times.devices.is_empty());
        // After a restart the milliseconds taken are known only to the store.
        let base = now.timestamp_millis();
        let store = Stored((0..3).chain(4..6).map(|k| (a.clone(), base + k)).collect());
        let mut times = ReceptionTimes::default();
        let stamped: Vec<i64> = (0..3).map(|_| ms(times.reading_time(&store, &a, None, now, &settings).time)).collect();
        assert_eq!(stamped, vec![3, 6, 7]);
        // A reception long before the newest stored reading (a dead letter replayed) keeps its
        // own millisecond when it is free.
        let mut times = ReceptionTimes::default();
        let old = now - Duration::days(1);
        assert_eq!(times.reading_time(&store, &a, None, old, &settings).time, old);
    }

    #[test]
    fn a_measurement_time_given_before_at_reception_moves_that_reading_aside() {
        let settings = QualitySettings::default();
        let now = at("2026-11-30T06:00:00Z");
        let a = DeviceId::parse("a").unwrap();
        let store = Stored::default();
        let mut times = ReceptionTimes::default();
        // Five uplinks without a time in one millisecond: now + 0..5 ms.
        for _ in 0..5 {
            times.reading_time(&store, &a, None, now, &settings);
        }
        // Then one measured at now + 2 ms (a sub-millisecond part is cut): it keeps its time,
        // and the reading stored there moves to the next free millisecond.
        let measured = now + Duration::milliseconds(2) + Duration::microseconds(300);
        let when = times.reading_time(&store, &a, Some(measured), now, &settings);
        let two = now + Duration::milliseconds(2);
        assert_eq!((when.time, when.moved_aside), (two, Some((two, now + Duration::milliseconds(5)))));
        // Delivered again, it replaces itself: nothing moves.
        assert_eq!(times.reading_time(&store, &a, Some(measured), now, &settings).moved_aside, None);
        // The next reception time steps past both.
        assert_eq!(times.reading_time(&store, &a, None, now, &settings).time, now + Duration::milliseconds(6));
        // A measured time no reception time was given keeps its place without moving anything.
        let free = now + Duration::milliseconds(50);
        assert_eq!(times.reading_time(&store, &a, Some(free), now, &settings).moved_aside, None);
    }
}
