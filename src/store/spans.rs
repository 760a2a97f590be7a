//! Stretches of a series kept until the store's next commit, from which late readings' stored neighbours (the spike test's [`SeriesLookup::neighbours`]) are answered without reading the store for each one.
//!
//! Out-of-order input makes many late readings of one series in one batch, each asking for
//! its nearest stored readings before and after it. Asked one by one, that is a read
//! transaction (in PostgreSQL a round trip) per reading. Instead, a miss reads the nearest
//! reading before the asked time and up to a page of readings from it on, up to [`AHEAD`]
//! past the window ([`window`]): a [`Span`] in which every stored reading not flagged bad is
//! known, from which the following late readings of the series are answered without asking
//! again. The answers are the same as asking each time, as long as the spans follow what is
//! written: a commit whose readings the store knows exactly (the embedded store's ingest)
//! writes them into the spans that cover them ([`Spans::committed`]); any other commit that
//! may touch readings forgets all spans ([`Spans::forget`]); and a span read before a commit
//! is not kept after it. What another gateway commits to a shared store meanwhile is seen at
//! this gateway's next commit (the PostgreSQL store forgets at each), as a lookup racing that
//! commit would or would not see it anyway.
//!
//! [`SeriesLookup::neighbours`]: crate::quality::SeriesLookup::neighbours

use std::sync::Mutex;

use chrono::Duration;
use rustc_hash::FxHashMap;

use crate::model::{DeviceId, QualityFlag, Quantity, Reading};
use crate::quality::Neighbours;
use crate::store::boundary::StoreError;

/// How far past the asked window a miss reads (when fewer than a page are there).
pub(crate) const AHEAD: Duration = Duration::days(1);

/// Spans kept at most; beyond, all are forgotten. Each holds at most twice its page of
/// points ([`Span::of`]): with the embedded store's pages of 64, about 17 MB at most.
const MAX_SPANS: usize = 8192;

/// Spans kept per series, the newest replacing the oldest: a series may get two streams of
/// late readings at once (a device sending live while its backlog is replayed; readings of a
/// wrong clock stored at reception behind its last accepted time), and with one span each
/// stream's read evicted the other's, so nearly every reading missed.
const SPANS_PER_SERIES: usize = 4;

/// A stretch `[lo, hi]` of one series in which every stored reading not flagged bad is in
/// `points` (oldest first). Times are milliseconds, as readings are timed: chrono's comparisons
/// and date arithmetic cost more than the rest of an answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Span {
    lo: i64,
    hi: i64,
    points: Vec<(i64, f64)>,
    /// Points held at most: a span that committed readings would grow beyond is dropped.
    cap: usize,
}

impl Span {
    /// The neighbours of `time` within `within` (both in milliseconds), if the span knows them.
    fn answer(&self, time: i64, within: i64) -> Option<Neighbours> {
        if time < self.lo || time > self.hi {
            return None;
        }
        // Every point in [lo, time) and in (time, hi] is known. Points are in time order, one
        // a time: the first after `time` is the first at or after it, or the one past that.
        let first_at = self.points.partition_point(|(t, _)| *t < time);
        let first_after = first_at + usize::from(self.points.get(first_at).is_some_and(|p| p.0 == time));
        let before = match first_at.checked_sub(1).map(|i| self.points[i]) {
            Some(p) => (p.0 >= time.saturating_sub(within)).then_some(p),
            None if self.lo <= time.saturating_sub(within) => None,
            None => return None,
        };
        let after = match self.points.get(first_after) {
            Some(&p) => (p.0 <= time.saturating_add(within)).then_some(p),
            None if self.hi >= time.saturating_add(within) => None,
            None => return None,
        };
        Some((before, after))
    }

    /// Take a committed reading at `time` into the span if it covers `time`: a reading not
    /// flagged bad is added (or replaces the point there); a bad one removes the point there.
    /// False if the span would grow beyond its cap and must be dropped.
    fn take(&mut self, time: i64, value: f64, bad: bool) -> bool {
        if time < self.lo || time > self.hi {
            return true;
        }
        let at = self.points.partition_point(|(t, _)| *t < time);
        let there = self.points.get(at).is_some_and(|p| p.0 == time);
        match (there, bad) {
            (true, false) => self.points[at].1 = value,
            (true, true) => {
                self.points.remove(at);
            }
            (false, false) => self.points.insert(at, (time, value)),
            (false, true) => {}
        }
        self.points.len() <= self.cap
    }
}

/// The spans read since this gateway's last commit.
#[derive(Default)]
pub(crate) struct Spans {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Moves on at every commit: a span read under an older one is not kept.
    generation: u64,
    /// By device, then by quantity (a device has a handful): a committed reading's series is
    /// found without hashing its quantity or taking a count of its device id.
    spans: FxHashMap<DeviceId, Vec<(Quantity, Vec<Span>)>>,
    /// Spans in `spans`, all series together.
    count: usize,
}

impl Spans {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The neighbours of `time` in the series within `within` (in milliseconds): from a kept
    /// span if one knows them, else from the span `read` reads around `time` (see [`window`]),
    /// which is then kept unless the store committed meanwhile.
    pub fn neighbours(
        &self,
        device: &DeviceId,
        quantity: Quantity,
        time: i64,
        within: i64,
        read: impl FnOnce() -> Result<Span, StoreError>,
    ) -> Result<Neighbours, StoreError> {
        if let Some(pair) = self.answer_ms(device, quantity, time, within) {
            return Ok(pair);
        }
        let generation = self.generation();
        let span = read()?;
        let pair = span.answer(time, within).ok_or_else(|| {
            StoreError::Corrupt(format!("the stretch of {device} {} read around {time} ms does not cover it", quantity.name()))
        })?;
        self.keep(generation, device, quantity, span);
        Ok(pair)
    }

    /// The answer from a kept span, if one knows it.
    fn answer_ms(&self, device: &DeviceId, quantity: Quantity, time: i64, within: i64) -> Option<Neighbours> {
        let inner = self.lock();
        let (_, kept) = inner.spans.get(device.as_str())?.iter().find(|(q, _)| *q == quantity)?;
        kept.iter().rev().find_map(|s| s.answer(time, within))
    }

    /// The generation to pass to [`Self::keep`] for a span read from now on.
    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keep a span read under `generation`, unless a commit came in between.
    fn keep(&self, generation: u64, device: &DeviceId, quantity: Quantity, span: Span) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.generation != generation {
            return;
        }
        if inner.count >= MAX_SPANS {
            inner.spans.clear();
            inner.count = 0;
        }
        let series = inner.spans.entry(device.clone()).or_default();
        let at = match series.iter().position(|(q, _)| *q == quantity) {
            Some(at) => at,
            None => {
                series.push((quantity, Vec::new()));
                series.len() - 1
            }
        };
        let kept = &mut series[at].1;
        if kept.len() >= SPANS_PER_SERIES {
            kept.remove(0);
        } else {
            inner.count += 1;
        }
        kept.push(span);
    }

    /// Forget every span: the store has (or may have) committed readings it can't name.
    pub fn forget(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.spans.clear();
        inner.count = 0;
    }

    /// The store has committed exactly these readings (and removed none): each goes into the
    /// spans of its series that cover its time, so they stay as a read would return them now.
    /// Call after the commit, before the next commit that touches readings.
    pub fn committed(&self, readings: &[Reading]) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.generation += 1;
        if inner.spans.is_empty() {
            return;
        }
        let bad = QualityFlag::Bad;
        for r in readings {
            let Some(series) = inner.spans.get_mut(r.device.as_str()) else {
                continue;
            };
            let Some((_, kept)) = series.iter_mut().find(|(q, _)| *q == r.quantity) else {
                continue;
            };
            let before = kept.len();
            let time = r.time.timestamp_millis();
            kept.retain_mut(|s| s.take(time, r.value, r.flag == bad));
            inner.count -= before - kept.len();
        }
    }
}

/// The stretch `[from, to]` a miss around `time` reads: the nearest reading not flagged bad
/// in `[from, time)`, and up to a page of those in `[time, to]`, oldest first.
pub(crate) fn window(time: i64, within: i64) -> (i64, i64) {
    (time.saturating_sub(within), time.saturating_add(within).saturating_add(AHEAD.num_milliseconds()))
}

impl Span {
    /// What a read of [`window`] around `time` returned (`points`, oldest first; at most
    /// `page` from `time` on) knows, all in milliseconds. A page holds two at least: the first
    /// may be at `time`.
    pub(crate) fn of(time: i64, (from, to): (i64, i64), page: usize, points: Vec<(i64, f64)>) -> Span {
        let lo = match points.first() {
            Some(p) if p.0 < time => p.0,
            _ => from,
        };
        let ahead = points.iter().filter(|p| p.0 >= time).count();
        // A full page knows everything up to its last point only.
        let hi = if ahead >= page { points.last().map(|p| p.0).unwrap_or(to) } else { to };
        Span { lo, hi, points, cap: 2 * page.max(1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    /// The nearest stored reading before and after a time, as (time, value).
    type Pair = (Option<(DateTime<Utc>, f64)>, Option<(DateTime<Utc>, f64)>);

    /// A pair of neighbours in milliseconds as times (a span's times came from readings' times,
    /// so each is one).
    fn in_time((before, after): Neighbours) -> Pair {
        let time = |p: Option<(i64, f64)>| p.and_then(|(ms, v)| Some((DateTime::from_timestamp_millis(ms)?, v)));
        (time(before), time(after))
    }

    impl Spans {
        /// The answer from a kept span in times, as the tests below compare it.
        fn answer(&self, device: &DeviceId, quantity: Quantity, time: DateTime<Utc>, within: Duration) -> Option<Pair> {
            self.answer_ms(device, quantity, time.timestamp_millis(), within.num_milliseconds()).map(in_time)
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_735_689_600 + s, 0).unwrap()
    }

    /// [`at`] in milliseconds, as spans keep times.
    fn ms(s: i64) -> i64 {
        at(s).timestamp_millis()
    }

    /// What asking the store directly gives: the nearest point strictly before and strictly
    /// after `time` within `within`.
    fn direct(all: &[(DateTime<Utc>, f64)], time: DateTime<Utc>, within: Duration) -> Pair {
        let before = all.iter().rev().find(|p| p.0 < time && p.0 >= time - within).copied();
        let after = all.iter().find(|p| p.0 > time && p.0 <= time + within).copied();
        (before, after)
    }

    /// What a read around `time` with pages of `page` would return from `all`.
    fn fetched(all: &[(DateTime<Utc>, f64)], time: DateTime<Utc>, within: Duration, page: usize) -> Span {
        let (from, to) = window(time.timestamp_millis(), within.num_milliseconds());
        let (from, to) = (DateTime::from_timestamp_millis(from).unwrap(), DateTime::from_timestamp_millis(to).unwrap());
        let mut points: Vec<_> = all.iter().rev().find(|p| p.0 < time && p.0 >= from).copied().into_iter().collect();
        points.extend(all.iter().filter(|p| p.0 >= time && p.0 <= to).take(page).copied());
        let points = points.into_iter().map(|(t, v)| (t.timestamp_millis(), v)).collect();
        Span::of(time.timestamp_millis(), (from.timestamp_millis(), to.timestamp_millis()), page, points)
    }

    #[test]
    fn a_span_answers_as_the_store_would_wherever_it_answers() {
        let within = Duration::hours(3);
        // Readings every 7 s for a while, a gap of five hours, then every 60 s; and a
        // dense run longer than one page.
        let mut all: Vec<(DateTime<Utc>, f64)> = (0..400).map(|i| (at(i * 7), i as f64)).collect();
        all.extend((0..300).map(|i| (at(2800 + 5 * 3600 + i * 60), 1000.0 + i as f64)));
        all.extend((0..600).map(|i| (at(100_000 + i), 5000.0 + i as f64)));
        let mut answered = 0;
        for (fetch_at, page) in [at(-10_000), at(0), at(3), at(1500), at(2800 + 3600), at(99_000), at(100_050)]
            .into_iter()
            .flat_map(|t| [(t, 2), (t, 64), (t, 256)])
        {
            let span = fetched(&all, fetch_at, within, page);
            assert_eq!(
                span.answer(fetch_at.timestamp_millis(), within.num_milliseconds()).map(in_time),
                Some(direct(&all, fetch_at, within)),
                "at the fetched time {fetch_at}, pages of {page}"
            );
            for s in (-20_000..130_000).step_by(97) {
                if let Some(pair) = span.answer(ms(s), within.num_milliseconds()).map(in_time) {
                    answered += 1;
                    assert_eq!(
                        pair,
                        direct(&all, at(s), within),
                        "at {} from a span fetched at {fetch_at}, pages of {page}",
                        at(s)
                    );
                }
            }
        }
        assert!(answered > 500, "spans answer later readings too: {answered}");
    }

    #[test]
    fn a_span_read_before_a_commit_is_not_kept() {
        let spans = Spans::default();
        let (d, q) = (DeviceId::parse("dev-1").unwrap(), Quantity::by_name("air_temperature").unwrap());
        let span = Span { lo: ms(0), hi: ms(100_000), points: vec![], cap: 64 };
        let old = spans.generation();
        spans.forget();
        spans.keep(old, &d, q, span.clone());
        assert_eq!(spans.answer(&d, q, at(50_000), Duration::hours(3)), None);
        spans.keep(spans.generation(), &d, q, span);
        assert_eq!(spans.answer(&d, q, at(50_000), Duration::hours(3)), Some((None, None)));
        spans.forget();
        assert_eq!(spans.answer(&d, q, at(50_000), Duration::hours(3)), None);
    }

    #[test]
    fn committed_readings_go_into_the_spans_that_cover_them_and_a_span_past_its_cap_goes() {
        let spans = Spans::default();
        let (d, q) = (DeviceId::parse("dev-1").unwrap(), Quantity::by_name("air_temperature").unwrap());
        let within = Duration::seconds(1000);
        let r = |s: i64, value: f64, flag: QualityFlag| Reading {
            device: d.clone(),
            quantity: q,
            value,
            time: at(s),
            flag,
            reason: Default::default(),
        };
        let g = spans.generation();
        let span = Span { lo: ms(0), hi: ms(10_000), points: vec![(ms(100), 1.0)], cap: 3 };
        spans.keep(g, &d, q, span.clone());
        spans.committed(&[r(200, 2.0, QualityFlag::Good), r(20_000, 9.0, QualityFlag::Good)]);
        assert_eq!(spans.answer(&d, q, at(150), within), Some((Some((at(100), 1.0)), Some((at(200), 2.0)))));
        assert_eq!(spans.answer(&d, q, at(15_000), within), None, "outside the span: still unknown");
        spans.keep(g, &d, q, Span { lo: ms(0), hi: ms(30_000), ..span });
        assert_eq!(spans.answer(&d, q, at(15_000), within), None, "read before the commit: not kept");
        // A replaced value, then the reading flagged bad: out of the answers.
        spans.committed(&[r(200, 3.0, QualityFlag::Suspect)]);
        assert_eq!(spans.answer(&d, q, at(150), within), Some((Some((at(100), 1.0)), Some((at(200), 3.0)))));
        spans.committed(&[r(200, 3.0, QualityFlag::Bad), r(300, 4.0, QualityFlag::Bad)]);
        assert_eq!(spans.answer(&d, q, at(150), within), Some((Some((at(100), 1.0)), None)));
        // Beyond three points the span goes, and with it the count of spans kept.
        spans.committed(&[r(400, 5.0, QualityFlag::Good), r(500, 6.0, QualityFlag::Good)]);
        assert_eq!(spans.answer(&d, q, at(450), within), Some((Some((at(400), 5.0)), Some((at(500), 6.0)))));
        spans.committed(&[r(600, 7.0, QualityFlag::Good)]);
        assert_eq!(spans.answer(&d, q, at(150), within), None);
        assert_eq!(spans.lock().count, 0);
    }

    #[test]
    fn two_streams_of_late_readings_in_one_series_keep_a_span_each() {
        let spans = Spans::default();
        let (d, q) = (DeviceId::parse("dev-1").unwrap(), Quantity::by_name("air_temperature").unwrap());
        let within = Duration::hours(3);
        let old = Span { lo: ms(0), hi: ms(20_000), points: vec![(ms(100), 1.0)], cap: 64 };
        let live = Span { lo: ms(500_000), hi: ms(520_000), points: vec![(ms(500_000), 2.0)], cap: 64 };
        let g = spans.generation();
        spans.keep(g, &d, q, old);
        spans.keep(g, &d, q, live);
        assert_eq!(spans.answer(&d, q, at(200), within), Some((Some((at(100), 1.0)), None)));
        assert_eq!(spans.answer(&d, q, at(500_010), within), Some((Some((at(500_000), 2.0)), None)));
        // A few more streams: the oldest span goes first.
        for k in 1..=SPANS_PER_SERIES as i64 {
            spans.keep(g, &d, q, Span { lo: ms(k * 1_000_000), hi: ms(k * 1_000_000 + 50_000), points: vec![], cap: 64 });
        }
        assert_eq!(spans.answer(&d, q, at(200), within), None);
        assert_eq!(spans.answer(&d, q, at(1_020_000), within), Some((None, None)));
    }
}
