//! Quality control: each test with a series built to trip it and one built not to, through the
//! library against a real store (embedded and PostgreSQL), and end to end through the gateway's API and metrics.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use messnetz::config::CitizenSettings;
use messnetz::model::{DeviceId, QualityFlag, Quantity, Reading};
use messnetz::quality::{
    battery_low, neighbours, Limits, ProfileQuality, QualityControl, QualitySettings, ReadingTime, Test, Verdict,
};
use messnetz::store::{Store, WriteBatch};

fn q(name: &str) -> Quantity {
    Quantity::by_name(name).unwrap()
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z").unwrap().with_timezone(&Utc)
}

/// One device's series checked as ingest checks them, each reading stored after its verdict
/// (as ingest commits it), received one minute after it was measured.
struct Bench {
    _store: TestStore,
    store: Arc<dyn Store>,
    qc: QualityControl,
    settings: QualitySettings,
    device: DeviceId,
}

impl Bench {
    fn new(settings: QualitySettings) -> Self {
        let test_store = TestStore::new();
        let store = test_store.open();
        let qc = QualityControl::new(settings.max_series);
        Self { _store: test_store, store, qc, settings, device: DeviceId::parse("qc-test").unwrap() }
    }

    /// Check and store one reading measured `minute` minutes after the start.
    fn feed_at(&mut self, quantity: &str, minute: i64, value: f64, received: DateTime<Utc>) -> Verdict {
        let limits = Limits::new(&self.settings);
        let time = t0() + Duration::minutes(minute);
        let v = self.qc.assess(
            &ReadingTime::measured_at(time),
            &*self.store,
            &[],
            &limits,
            &self.device,
            q(quantity),
            value,
            received,
            None,
        );
        let reading =
            Reading { device: self.device.clone(), quantity: q(quantity), value, time, flag: v.flag, reason: v.reason().into() };
        self.store.write(&WriteBatch { readings: vec![reading], ..Default::default() }).unwrap();
        v
    }

    fn feed(&mut self, quantity: &str, minute: i64, value: f64) -> Verdict {
        self.feed_at(quantity, minute, value, t0() + Duration::minutes(minute + 1))
    }

    /// Feed a series of (minute, value) and return the tests each reading failed.
    fn series(&mut self, quantity: &str, points: &[(i64, f64)]) -> Vec<Vec<Test>> {
        points.iter().map(|&(m, v)| self.feed(quantity, m, v).failures.to_vec()).collect()
    }
}

fn clean(n: usize) -> Vec<Vec<Test>> {
    vec![Vec::new(); n]
}

both_backends! {
fn range_flags_impossible_values_bad_and_overrides_narrow_it() {
    let mut b = Bench::new(QualitySettings::default());
    let v = b.feed("air_temperature", 0, 85.0);
    assert_eq!(v.flag, QualityFlag::Bad);
    assert!(v.reason().starts_with("range: 85 Cel is outside the physical range -60 to 60 Cel"), "{}", v.reason());
    assert_eq!(b.feed("air_temperature", 10, f64::NAN).flag, QualityFlag::Bad);
    assert_eq!(b.series("relative_humidity", &[(0, 99.0), (10, 100.0)]), clean(2));
    assert_eq!(b.series("wind_from_direction", &[(0, 0.0), (10, 360.0)]), clean(2));

    // The same 55 °C: plausible by default, bad for a profile or device that can't measure it.
    let settings = QualitySettings::default();
    let t = q("air_temperature");
    let time = t0();
    let profile = ProfileQuality { ranges: [(t, [-40.0, 85.0])].into(), battery_low_v: None };
    let device: BTreeMap<Quantity, [f64; 2]> = [(t, [-30.0, 50.0])].into();
    let verdict = |limits: &Limits| {
        let mut qc = QualityControl::new(10);
        qc.assess(&ReadingTime::measured_at(time), &*b.store, &[], limits, &DeviceId::parse("other").unwrap(), t, 55.0, time, None).flag
    };
    let mut limits = Limits::new(&settings);
    assert_eq!(verdict(&limits), QualityFlag::Good);
    limits.profile = Some(&profile);
    assert_eq!(verdict(&limits), QualityFlag::Good);
    limits.device_ranges = Some(&device);
    assert_eq!(verdict(&limits), QualityFlag::Bad);
}
}

both_backends! {
fn spike_flags_a_jump_against_the_previous_reading_but_not_a_steady_change() {
    let mut b = Bench::new(QualitySettings::default());
    // 10 °C/h allowed: a jump of 14 °C in 10 minutes trips it; the reading after the outlier
    // is compared with the last good one, so it is not flagged too.
    let got = b.series("air_temperature", &[(0, 20.0), (10, 20.5), (20, 34.5), (30, 21.0), (40, 21.2)]);
    assert_eq!(got, vec![vec![], vec![], vec![Test::Spike], vec![], vec![]]);
    let v = b.feed("air_temperature", 50, 5.0);
    assert_eq!(v.flag, QualityFlag::Suspect, "a spike is suspect, not bad: a real front can trip it");
    assert!(v.reason().starts_with("spike: changed by 16.200 Cel"), "{}", v.reason());

    // Warming by 1.5 °C every 10 minutes (9 °C/h), and noise of a few tenths seconds apart.
    let mut b = Bench::new(QualitySettings::default());
    let steady: Vec<(i64, f64)> = (0..12).map(|i| (i * 10, 10.0 + 1.5 * i as f64)).collect();
    assert_eq!(b.series("air_temperature", &steady), clean(12));
    let noisy = [(200, 30.0), (201, 30.4), (202, 29.9), (203, 30.3)];
    assert_eq!(b.series("air_temperature", &noisy), clean(4), "the minimum window allows noise");
    // Quantities without a limit are not spike-tested.
    assert_eq!(b.series("wind_speed", &[(0, 0.0), (1, 30.0), (2, 0.0)]), clean(3));
}
}

both_backends! {
fn stuck_flags_a_value_unchanged_for_a_day_but_not_a_varying_or_exempt_one() {
    let mut b = Bench::new(QualitySettings::default());
    let flat: Vec<(i64, f64)> = (0..30).map(|h| (h * 60, 12.3)).collect();
    let got = b.series("air_temperature", &flat);
    // Unchanged since hour 0: from hour 24 on, stuck.
    assert!(got[..24].iter().all(Vec::is_empty), "{got:?}");
    assert!(got[24..].iter().all(|t| t == &vec![Test::Stuck]), "{got:?}");
    let since = |h: i64| t0() + Duration::hours(h);
    let v = b.feed("air_temperature", 30 * 60 - 30, 12.3);
    assert_eq!(v.reason(), format!("stuck: 12.3 Cel unchanged since {} (29.5 h)", since(0)));
    // Equal within a rounding error is still the run; the reason names the value received.
    let v = b.feed("air_temperature", 30 * 60 - 20, 12.300000000004);
    assert_eq!(v.reason(), format!("stuck: 12.300000000004 Cel unchanged since {} (29.7 h)", since(0)));
    let v = b.feed("air_temperature", 30 * 60 - 10, 12.3);
    assert_eq!(v.reason(), format!("stuck: 12.3 Cel unchanged since {} (29.8 h)", since(0)));
    // The same words a few minutes on: the duration is written anew.
    let v = b.feed("air_temperature", 30 * 60 - 6, 12.3);
    assert_eq!(v.reason(), format!("stuck: 12.3 Cel unchanged since {} (29.9 h)", since(0)));
    // It moves again: no longer stuck.
    assert_eq!(b.series("air_temperature", &[(30 * 60, 12.4)]), clean(1));
    // Back to the first value: a new run, stuck from its own start.
    assert_eq!(b.series("air_temperature", &[(31 * 60, 12.3), (40 * 60, 12.3)]), clean(2));
    let v = b.feed("air_temperature", 55 * 60 + 6, 12.3);
    assert_eq!(v.reason(), format!("stuck: 12.3 Cel unchanged since {} (24.1 h)", since(31)));

    let mut b = Bench::new(QualitySettings::default());
    let varying: Vec<(i64, f64)> = (0..30).map(|h| (h * 60, 12.3 + (h % 2) as f64 * 0.1)).collect();
    assert_eq!(b.series("air_temperature", &varying), clean(30));
    let dry: Vec<(i64, f64)> = (0..30).map(|h| (h * 60, 0.0)).collect();
    assert_eq!(b.series("precipitation_amount", &dry), clean(30), "no rain for a day is weather, not a fault");
}
}

both_backends! {
fn time_sanity_flags_future_times_and_optionally_old_ones() {
    let mut b = Bench::new(QualitySettings::default());
    let now = t0();
    assert_eq!(b.feed_at("air_temperature", 60, 20.0, now).failures[0], Test::Future);
    assert_eq!(b.feed_at("air_temperature", 5, 20.0, now).flag, QualityFlag::Good, "5 min of clock skew is allowed");
    // Age is off by default: a backfill of last year's data is not suspect.
    assert_eq!(b.feed_at("air_temperature", -365 * 24 * 60, 20.0, now).flag, QualityFlag::Good);

    let mut b = Bench::new(QualitySettings { max_age_h: 48, ..Default::default() });
    let v = b.feed_at("air_temperature", -72 * 60, 20.0, now);
    assert_eq!((v.flag, v.failures[0]), (QualityFlag::Suspect, Test::Age), "{v:?}");
    assert_eq!(b.feed_at("air_temperature", -24 * 60, 20.5, now).flag, QualityFlag::Good);

    // One reception time and the settings changed between two readings (a reload): each
    // reading is tested against the settings it is given.
    let strict = QualitySettings { max_future_min: 1, ..Default::default() };
    let lenient = QualitySettings { max_future_min: 120, max_age_h: 1, ..Default::default() };
    let test_store = TestStore::new();
    let store = test_store.open();
    let mut qc = QualityControl::new(10);
    let mut assess = |settings: &QualitySettings, device: &str, minutes: i64| {
        let (d, time) = (DeviceId::parse(device).unwrap(), now + chrono::Duration::minutes(minutes));
        let limits = Limits::new(settings);
        qc.assess(&ReadingTime::measured_at(time), &*store, &[], &limits, &d, q("air_temperature"), 20.0, now, None).failures.to_vec()
    };
    assert_eq!(assess(&strict, "clock-1", 30), [Test::Future]);
    assert_eq!(assess(&lenient, "clock-2", 30), []);
    assert_eq!(assess(&lenient, "clock-3", -90), [Test::Age]);
    assert_eq!(assess(&strict, "clock-4", -90), []);
    assert_eq!(assess(&strict, "clock-5", 2), [Test::Future]);
}
}

both_backends! {
fn times_given_at_reception_are_not_tested_as_measurement_times() {
    // With no minutes of clock skew allowed, a device's uplinks received in one millisecond
    // are stored at that millisecond and the next ones (times that run ahead of the clock at
    // a device's burst): the gateway's own times, neither in the future nor measured.
    let settings = QualitySettings { max_future_min: 0, ..Default::default() };
    let limits = Limits::new(&settings);
    let test_store = TestStore::new();
    let store = test_store.open();
    let mut qc = QualityControl::new(10);
    let (d, t, now) = (DeviceId::parse("qc-burst").unwrap(), q("air_temperature"), t0());
    let mut verdicts = |measured: Option<DateTime<Utc>>| {
        let when = qc.reading_time(&*store, &d, measured, now, &settings);
        assert!(!when.measured && when.time >= now, "{when:?}");
        let v = qc.assess(&when, &*store, &[], &limits, &d, t, 20.0, now, None);
        (when.time, v.flag, v.failures.to_vec(), v.reason().to_string())
    };
    for i in 0..3 {
        let (time, flag, failures, reason) = verdicts(None);
        assert_eq!((time - now, flag, failures, reason), (Duration::milliseconds(i), QualityFlag::Good, vec![], String::new()));
    }
    // A measurement time in the future is stored at the next of them and flagged once, for
    // the time it claimed.
    let (time, flag, failures, reason) = verdicts(Some(now + Duration::minutes(3)));
    assert_eq!((time - now, flag, failures), (Duration::milliseconds(3), QualityFlag::Suspect, vec![Test::Future]));
    assert!(reason.starts_with("future: measurement time ") && reason.matches("future").count() == 1, "{reason}");
}
}

both_backends! {
fn a_low_battery_makes_the_uplinks_other_readings_suspect() {
    let settings = QualitySettings::default();
    let limits = Limits::new(&settings);
    let (v, t, pct) = (q("battery_voltage"), q("air_temperature"), q("battery_level"));
    let why = battery_low([(v, 2.3), (t, 20.0)], &limits).expect("2.3 V is below 2.5 V");
    assert!(why.contains("2.3 V"), "{why}");
    assert_eq!(battery_low([(v, 3.0), (t, 20.0)], &limits), None);
    assert!(battery_low([(pct, 5.0)], &limits).is_some());
    assert_eq!(battery_low([(pct, 50.0)], &limits), None);
    // A device with a 3.6 V lithium cell sets its own threshold.
    let own = Limits { device_battery_low_v: Some(3.3), ..limits };
    assert!(battery_low([(v, 3.0)], &own).is_some());

    let test_store = TestStore::new();
    let store = test_store.open();
    let mut qc = QualityControl::new(10);
    let d = DeviceId::parse("qc-battery").unwrap();
    let temp = qc.assess(&ReadingTime::measured_at(t0()), &*store, &[], &limits, &d, t, 20.0, t0(), Some(why.as_str()));
    assert_eq!((temp.flag, temp.failures[0]), (QualityFlag::Suspect, Test::Battery));
    let volts = qc.assess(&ReadingTime::measured_at(t0()), &*store, &[], &limits, &d, v, 2.3, t0(), Some(why.as_str()));
    assert_eq!(volts.flag, QualityFlag::Good, "the battery reading itself is a correct measurement");
}
}

both_backends! {
fn late_readings_are_judged_by_their_stored_neighbours_not_by_newer_ones() {
    let mut b = Bench::new(QualitySettings::default());
    assert_eq!(b.series("air_temperature", &[(0, 20.0), (10, 20.5), (20, 21.0), (120, 30.0)]), clean(4));
    // Late but fitting between its neighbours: good, although far from the newest (30 °C).
    assert_eq!(b.series("air_temperature", &[(15, 20.8)]), clean(1));
    // Late and standing apart from both neighbours: a spike.
    assert_eq!(b.series("air_temperature", &[(5, 35.0)]), vec![vec![Test::Spike]]);
    // Late and equal to its neighbour for long: not stuck-tested (its run is unknown).
    let mut b = Bench::new(QualitySettings::default());
    let flat: Vec<(i64, f64)> = (0..30).map(|h| (h * 60, 12.3)).collect();
    b.series("air_temperature", &flat);
    assert_eq!(b.series("air_temperature", &[(28 * 60 + 30, 12.3)]), clean(1));
    // A late step change stays close to one neighbour: not a spike.
    let mut b = Bench::new(QualitySettings::default());
    b.series("air_temperature", &[(0, 20.0), (20, 28.0)]);
    assert_eq!(b.series("air_temperature", &[(10, 27.5)]), clean(1));
}
}

/// `input` cut into batches of `size` and judged as ingest judges it: each item by `judge`
/// with its batch's earlier readings over a fresh store, each batch stored after its last
/// verdict. `judge` gives the reading to store, its verdict in flag and reason.
fn judged_in_batches<T: Copy>(
    input: &[T],
    size: usize,
    max_series: usize,
    mut judge: impl FnMut(&mut QualityControl, &dyn Store, &[Reading], T) -> Reading,
) -> Vec<Reading> {
    let test_store = TestStore::new();
    let store = test_store.open();
    let mut qc = QualityControl::new(max_series);
    let mut out = Vec::new();
    for chunk in input.chunks(size) {
        qc.new_batch();
        let mut batch = Vec::new();
        for &item in chunk {
            let reading = judge(&mut qc, &*store, &batch, item);
            batch.push(reading);
        }
        out.extend(batch.iter().cloned());
        store.write(&WriteBatch { readings: batch, ..Default::default() }).unwrap();
    }
    out
}

both_backends! {
fn a_late_burst_gets_the_same_verdicts_however_it_is_cut_into_batches() {
    // As two publishers replaying one series' halves at once bring it: every reading of the
    // earlier half arrives late (after the later half's first), a saw-tooth of 0.5 Cel a
    // minute falling back every 30 minutes (a spike each time, in both halves).
    let saw = |i: i64| 20.0 + (i % 30) as f64 * 0.5;
    let mut input: Vec<(i64, f64)> = Vec::new();
    for i in 0..120 {
        input.push((1000 + i, saw(i)));
        input.push((i, saw(i)));
    }
    // A late outlier; late readings at minutes stored (or batched) already, one of them an
    // impossible value (bad: no neighbour for those after it), one twice in a row.
    input.extend([(40, 45.0), (41, 85.0), (42, 30.5), (50, 23.0), (50, 24.0), (43, 26.5), (44, 27.0)]);
    let settings = QualitySettings::default();
    let limits = Limits::new(&settings);
    let (d, t) = (DeviceId::parse("qc-late-batches").unwrap(), q("air_temperature"));
    let received = t0() + Duration::minutes(2000);
    let verdicts = |size: usize| {
        let judged = judged_in_batches(&input, size, settings.max_series, |qc, store, batch, (minute, value)| {
            let time = t0() + Duration::minutes(minute);
            let v = qc.assess(&ReadingTime::measured_at(time), store, batch, &limits, &d, t, value, received, None);
            Reading { device: d.clone(), quantity: t, value, time, flag: v.flag, reason: v.reason().into() }
        });
        judged.into_iter().map(|r| ((r.time - t0()).num_minutes(), r.flag, r.reason)).collect::<Vec<_>>()
    };
    let one_by_one = verdicts(1);
    for size in [2, 7, 50, input.len()] {
        assert_eq!(verdicts(size), one_by_one, "batches of {size}");
    }
    let spikes = |late: bool| -> Vec<i64> {
        let flagged = one_by_one.iter().filter(|(m, _, why)| (*m < 1000) == late && why.contains("spike:"));
        flagged.map(|(m, _, _)| *m).collect()
    };
    // The late half: each fall of the saw-tooth, the outlier, the reading after it (against
    // the outlier and its later neighbour; the bad one between counts for neither), both
    // readings of minute 50.
    assert_eq!(spikes(true), vec![30, 60, 90, 40, 42, 50, 50]);
    // The later half, in time order: each fall and the readings until the values are back
    // near the last accepted one (22 minutes at 0.5 Cel a minute).
    assert_eq!(spikes(false).len(), 3 * 22);
}
}

both_backends! {
fn a_citizen_reading_gets_the_same_neighbour_verdict_however_its_batch_is_cut() {
    // An official station alternating 20 and 30 Cel minute by minute, a citizen sensor 1 km
    // away reading 22 Cel at each minute, the station's reading first: 8 degrees from the
    // station's 30 is suspect, 2 from its 20 is not. Then the station's minute 10 sent again
    // as 30 (it replaces the 20), its minute 20 sent again impossible (bad: replaces the 20 and
    // never counts, so the nearer neighbour counts, minute 19's 30 on the tie with 21's 20),
    // the citizen's reading at both again.
    let (station, citizen) = (DeviceId::parse("qc-station").unwrap(), DeviceId::parse("qc-citizen").unwrap());
    let stations = [(station.clone(), 52.52, 13.40)];
    let here = (52.529, 13.40);
    let mut input: Vec<(&DeviceId, i64, f64)> = Vec::new();
    for m in 0..60 {
        input.push((&station, m, 20.0 + (m % 2) as f64 * 10.0));
        input.push((&citizen, m, 22.0));
    }
    input.extend([(&station, 10, 30.0), (&citizen, 10, 22.0), (&station, 20, 150.0), (&citizen, 20, 22.0)]);
    let settings = QualitySettings::default();
    let citizens = CitizenSettings::default();
    let limits = Limits::new(&settings);
    let t = q("air_temperature");
    let received = t0() + Duration::minutes(2000);
    let verdicts = |size: usize| {
        let judged = judged_in_batches(&input, size, settings.max_series, |qc, store, batch, (d, minute, value)| {
            let time = t0() + Duration::minutes(minute);
            let mut v = qc.assess(&ReadingTime::measured_at(time), store, batch, &limits, d, t, value, received, None);
            if d == &citizen {
                let nearby = qc.nearby(store, batch);
                let stations = stations.iter().map(|(id, lat, lon)| (id, *lat, *lon));
                neighbours::check(&nearby, stations, here, t, value, time, &citizens, &mut v);
            }
            Reading { device: d.clone(), quantity: t, value, time, flag: v.flag, reason: v.reason().into() }
        });
        let minute = |r: &Reading| (r.time - t0()).num_minutes();
        judged.into_iter().map(|r| (r.device.to_string(), minute(&r), r.flag, r.reason)).collect::<Vec<_>>()
    };
    let one_by_one = verdicts(1);
    for size in [2, 3, 7, 50, input.len()] {
        assert_eq!(verdicts(size), one_by_one, "batches of {size}");
    }
    let suspect: Vec<i64> = one_by_one
        .iter()
        .filter(|(d, _, flag, why)| *d == "qc-citizen" && *flag == QualityFlag::Suspect && why.contains("neighbours:"))
        .map(|(_, m, _, _)| *m)
        .collect();
    let mut expected: Vec<i64> = (0..60).filter(|m| m % 2 == 1).collect();
    expected.extend([10, 20]);
    assert_eq!(suspect, expected);
}
}

both_backends! {
fn late_readings_between_two_commits_get_the_neighbours_asking_the_store_each_time_gives() {
    let test_store = TestStore::new();
    let store = test_store.open();
    let (d, t) = (DeviceId::parse("qc-late-burst").unwrap(), q("air_temperature"));
    let at = |s: i64| t0() + Duration::seconds(s);
    // Every 7 minutes for about 40 hours, every fifth one bad; five hours without; then
    // every minute for three hours (more than one read's worth ahead of a late reading).
    let mut stored: Vec<(DateTime<Utc>, f64, QualityFlag)> = (0..340)
        .map(|i| (at(i * 420), 10.0 + (i % 13) as f64, if i % 5 == 0 { QualityFlag::Bad } else { QualityFlag::Good }))
        .collect();
    stored.extend((0..180).map(|i| (at(340 * 420 + 5 * 3600 + i * 60), 30.0 + (i % 7) as f64, QualityFlag::Good)));
    let reading = |(time, value, flag): (DateTime<Utc>, f64, QualityFlag)| Reading {
        device: d.clone(),
        quantity: t,
        value,
        time,
        flag,
        reason: if flag == QualityFlag::Bad { "range: test".into() } else { Default::default() },
    };
    store.write(&WriteBatch { readings: stored.iter().copied().map(reading).collect(), ..Default::default() }).unwrap();
    let within = Duration::hours(3);
    let ms = |(time, value): (DateTime<Utc>, f64)| (time.timestamp_millis(), value);
    let direct = |stored: &[(DateTime<Utc>, f64, QualityFlag)], time: DateTime<Utc>| {
        let good: Vec<(DateTime<Utc>, f64)> =
            stored.iter().filter(|r| r.2 != QualityFlag::Bad).map(|r| (r.0, r.1)).collect();
        let before = good.iter().rev().find(|p| p.0 < time && p.0 >= time - within).copied();
        let after = good.iter().find(|p| p.0 > time && p.0 <= time + within).copied();
        (before.map(ms), after.map(ms))
    };
    // The store answers in milliseconds, as readings are timed.
    let ask = |time: DateTime<Utc>| store.neighbours(&d, t, time.timestamp_millis(), within.num_milliseconds()).unwrap();
    // A burst of late readings in time order, as out-of-order input brings them, some at a
    // stored reading's own time; no commit in between.
    let mut asked = 0;
    for s in (-4 * 3600..340 * 420 + 9 * 3600).step_by(199) {
        let time = at(s - s % 420 * (s % 2));
        assert_eq!(ask(time), direct(&stored, time), "late reading at {time}");
        asked += 1;
    }
    assert!(asked > 900);
    // A reading committed between two questions is in the second answer.
    let time = at(3 * 60);
    assert_eq!(ask(time), (None, Some(ms((at(420), 11.0)))));
    let new = (at(5 * 60), 99.0, QualityFlag::Good);
    store.write(&WriteBatch { readings: vec![reading(new)], ..Default::default() }).unwrap();
    stored.push(new);
    stored.sort_by_key(|r| r.0);
    assert_eq!(ask(time), (None, Some(ms((at(300), 99.0)))));
    assert_eq!(ask(at(7 * 60)), direct(&stored, at(7 * 60)));
    // Commits that add readings, replace stored ones with other values, and flag stored ones
    // bad (which takes them out of the answers), each followed by questions around them: the
    // answers follow every commit. Hundreds of commits into one stretch also outgrow what
    // one kept stretch holds.
    for k in 0..400i64 {
        let base = (k * 7919) % (340 * 420);
        let time = match k % 4 {
            0 => at(base - base % 420), // a stored reading's own time
            _ => at(base + 13),
        };
        let flag = if k % 3 == 0 { QualityFlag::Bad } else { QualityFlag::Good };
        let new = (time, 50.0 + k as f64, flag);
        store.write(&WriteBatch { readings: vec![reading(new)], ..Default::default() }).unwrap();
        stored.retain(|r| r.0 != time);
        stored.push(new);
        stored.sort_by_key(|r| r.0);
        for s in [-421, -1, 0, 1, 420, 3 * 3600] {
            let asked = time + Duration::seconds(s);
            assert_eq!(ask(asked), direct(&stored, asked), "at {asked} after commit {k}");
        }
    }
}
}

both_backends! {
fn history_is_seeded_from_the_store_after_a_restart() {
    let mut b = Bench::new(QualitySettings::default());
    b.series("air_temperature", &[(0, 20.0), (10, 20.3)]);
    // A new stage (a restart) knows the stored series: the first jump is caught.
    b.qc = QualityControl::new(b.settings.max_series);
    assert_eq!(b.series("air_temperature", &[(20, 33.0)]), vec![vec![Test::Spike]]);
    b.qc = QualityControl::new(b.settings.max_series);
    assert_eq!(b.series("air_temperature", &[(30, 20.6)]), clean(1), "a stored spike is no reference");
}
}

both_backends! {
fn the_history_is_bounded() {
    let settings = QualitySettings { max_series: 10, ..Default::default() };
    let test_store = TestStore::new();
    let store = test_store.open();
    let mut qc = QualityControl::new(settings.max_series);
    let limits = Limits::new(&settings);
    for i in 0..100 {
        let d = DeviceId::parse(&format!("d{i}")).unwrap();
        qc.assess(&ReadingTime::measured_at(t0()), &*store, &[], &limits, &d, q("air_temperature"), 20.0, t0(), None);
        assert!(qc.series_held() <= 10, "{} series held", qc.series_held());
    }
}
}

// ---- End to end: flags in the readings API, counters and staleness in the metrics ----

use common::*;

fn lht65(battery_mv: u16, temp: f64, hum: f64) -> String {
    let t = (temp * 100.0).round() as i16 as u16;
    let h = (hum * 10.0).round() as u16;
    format!("{battery_mv:04X}{t:04X}{h:04X}017FFF7FFF")
}

both_backends! {
#[tokio::test]
async fn flags_reach_the_readings_api_and_the_metrics_and_silent_devices_are_stale() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("quality");
    let gw = Gateway::start(broker.port, dir.path(), &topics).await;
    let now = Utc::now();
    let at = |min_ago: i64| (now - Duration::minutes(min_ago)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let up = |f: u32, payload: String, time: String| {
        (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", f, &payload, &time))
    };
    // 20 °C, 20.4 °C, a jump to 34 °C, 85 °C (impossible), then a low battery.
    let messages = vec![
        up(1, lht65(3000, 20.0, 50.0), at(40)),
        up(2, lht65(3000, 20.4, 50.0), at(30)),
        up(3, lht65(3000, 34.0, 50.0), at(20)),
        up(4, lht65(3000, 85.0, 50.0), at(10)),
        up(5, lht65(2300, 20.6, 50.0), at(1)),
    ];
    publish_all(broker.port, &format!("{}-pub", topics.prefix), messages).await;
    // Decoded, and committed (acknowledged only after the commit): then the API serves them.
    wait_for("5 messages decoded and stored", StdDuration::from_secs(20), || async {
        (gw.metric("messnetz_messages_decoded_total").await == 5.0 && gw.metric("messnetz_messages_acked_total").await == 5.0)
            .then_some(())
    })
    .await;

    let from = (now - Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let url = gw.url(&format!("/v1/readings?device=demo-lht65&quantity=air_temperature&from={from}"));
    let page: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let points = page["readings"].as_array().unwrap();
    let flags: Vec<&str> = points.iter().map(|p| p["quality"].as_str().unwrap()).collect();
    assert_eq!(flags, vec!["good", "good", "suspect", "bad", "suspect"], "{page}");
    assert!(points[0].get("reason").is_none(), "{page}");
    assert!(points[2]["reason"].as_str().unwrap().starts_with("spike: "), "{page}");
    assert!(points[3]["reason"].as_str().unwrap().starts_with("range: "), "{page}");
    assert!(points[4]["reason"].as_str().unwrap().starts_with("battery: "), "{page}");

    let text = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    let labelled = |series: &str| text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok());
    // Temperature and the dew point derived from it.
    assert!(labelled("messnetz_quality_failures_total{test=\"spike\",flag=\"suspect\"}").unwrap() >= 1.0, "{text}");
    assert!(labelled("messnetz_quality_failures_total{test=\"range\",flag=\"bad\"}").unwrap() >= 1.0, "{text}");
    assert!(labelled("messnetz_quality_failures_total{test=\"battery\",flag=\"suspect\"}").unwrap() >= 3.0, "{text}");
    assert!(metric(&text, "messnetz_readings_flagged_total").unwrap() >= 5.0, "{text}");
    // demo-lht65 just reported; demo-lht65-park and demo-lht65-depot never did.
    assert_eq!(metric(&text, "messnetz_devices_stale"), Some(2.0), "{text}");
    let catalogue: serde_json::Value = reqwest::get(gw.url("/v1/devices")).await.unwrap().json().await.unwrap();
    let stale: Vec<(&str, bool)> = catalogue["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap(), d["stale"].as_bool().unwrap()))
        .collect();
    assert_eq!(stale, vec![("demo-lht65", false), ("demo-lht65-park", true)], "{catalogue}");
}
}

#[test]
fn profiles_carry_their_own_ranges_and_battery_threshold() {
    use messnetz::profiles::Profile;
    let base = std::fs::read_to_string(format!("{MANIFEST_DIR}/sensor-profiles/dragino-lht65.toml")).unwrap();
    let file = std::path::Path::new("sensor-profiles/dragino-lht65.toml");
    let text = format!("{base}\n[quality]\nranges = {{ air_temperature = [-40, 85] }}\nbattery_low_v = 2.6\n");
    let profile = Profile::from_toml(file, &text).unwrap();
    assert_eq!(profile.quality().ranges[&q("air_temperature")], [-40.0, 85.0]);
    assert_eq!(profile.quality().battery_low_v, Some(2.6));
    assert_eq!(Profile::from_toml(file, &base).unwrap().quality(), &ProfileQuality::default());
    let text = format!("{base}\n[quality]\nranges = {{ air_temperature = [85, -40] }}\n");
    let errors = Profile::from_toml(file, &text).unwrap_err();
    assert!(errors.iter().any(|e| e.to_string().contains("quality.ranges.air_temperature")), "{errors:?}");
}
