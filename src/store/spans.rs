//! Stretches of a series kept until the store's next commit, from which late readings' stored neighbours (the spike test's [`SeriesLookup::neighbours`]) are answered without reading the store for each one.
//!
//! Out-of-order input makes many late readings of one series in one batch, each asking for
//! its nearest stored readings before and after it. Asked one by one, that is a read
//! transaction (in PostgreSQL a round trip) per reading. Instead, a miss reads the nearest
//! reading before the asked time and up to a page of readings from it on, up to [`AHEAD`]
//! past the window ([`window`]): a [`Span`] in which every stored reading not flagged bad is
//! known, from which the following late readings of the series are answered without asking
//! again. The answers are the same as asking each time, as long as nothing is written in
//! between: every commit of the store forgets all spans ([`Spans::forget`]), and a span read
//! before a commit is not kept after it. What another gateway commits to a shared store
//! meanwhile is seen at this gateway's next commit, as a lookup racing that commit would or
//! would not see it anyway.
//!
//! [`SeriesLookup::neighbours`]: crate::quality::SeriesLookup::neighbours

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

use crate::model::{DeviceId, Quantity};
use crate::store::boundary::StoreError;

/// How far past the asked window a miss reads (when fewer than a page are there).
pub(crate) const AHEAD: Duration = Duration::days(1);

/// Series kept at most; beyond, all are forgotten (they live one batch anyway).
const MAX_SPANS: usize = 4096;

/// Spans kept per series, the newest replacing the oldest: a series may get two streams of
/// late readings at once (a device sending live while its backlog is replayed; readings of a
/// wrong clock stored at reception behind its last accepted time), and with one span each
/// stream's read evicted the other's, so nearly every reading missed.
const SPANS_PER_SERIES: usize = 4;

/// The nearest stored reading before and after a time, as (time, value).
pub(crate) type Pair = (Option<(DateTime<Utc>, f64)>, Option<(DateTime<Utc>, f64)>);

/// A stretch `[lo, hi]` of one series in which every stored reading not flagged bad is in
/// `points` (oldest first).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Span {
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
    points: Vec<(DateTime<Utc>, f64)>,
}

impl Span {
    /// The neighbours of `time` within `within`, if the span knows them.
    pub fn answer(&self, time: DateTime<Utc>, within: Duration) -> Option<Pair> {
        if time < self.lo || time > self.hi {
            return None;
        }
        // Every point in [lo, time) and in (time, hi] is known.
        let first_after = self.points.partition_point(|(t, _)| *t <= time);
        let first_at = self.points.partition_point(|(t, _)| *t < time);
        let before = match first_at.checked_sub(1).map(|i| self.points[i]) {
            Some(p) => (p.0 >= time - within).then_some(p),
            None if self.lo <= time - within => None,
            None => return None,
        };
        let after = match self.points.get(first_after) {
            Some(&p) => (p.0 <= time + within).then_some(p),
            None if self.hi >= time + within => None,
            None => return None,
        };
        Some((before, after))
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
    spans: HashMap<(DeviceId, Quantity), Vec<Span>>,
}

impl Spans {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The neighbours of `time` in the series: from a kept span if one knows them, else from
    /// the span `read` reads around `time` (see [`window`]), which is then kept unless the
    /// store committed meanwhile.
    pub fn neighbours(
        &self,
        device: &DeviceId,
        quantity: Quantity,
        time: DateTime<Utc>,
        within: Duration,
        read: impl FnOnce() -> Result<Span, StoreError>,
    ) -> Result<Pair, StoreError> {
        if let Some(pair) = self.answer(device, quantity, time, within) {
            return Ok(pair);
        }
        let generation = self.generation();
        let span = read()?;
        let pair = span.answer(time, within).ok_or_else(|| {
            StoreError::Corrupt(format!("the stretch of {device} {} read around {time} does not cover it", quantity.name()))
        })?;
        self.keep(generation, device, quantity, span);
        Ok(pair)
    }

    /// The answer from a kept span, if one knows it.
    fn answer(&self, device: &DeviceId, quantity: Quantity, time: DateTime<Utc>, within: Duration) -> Option<Pair> {
        self.lock().spans.get(&(device.clone(), quantity))?.iter().rev().find_map(|s| s.answer(time, within))
    }

    /// The generation to pass to [`Self::keep`] for a span read from now on.
    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keep a span read under `generation`, unless a commit came in between.
    fn keep(&self, generation: u64, device: &DeviceId, quantity: Quantity, span: Span) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.spans.len() >= MAX_SPANS {
            inner.spans.clear();
        }
        let kept = inner.spans.entry((device.clone(), quantity)).or_default();
        if kept.len() >= SPANS_PER_SERIES {
            kept.remove(0);
        }
        kept.push(span);
    }

    /// Forget every span: the store has (or may have) committed readings.
    pub fn forget(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.spans.clear();
    }
}

/// The stretch `[from, to]` a miss around `time` reads: the nearest reading not flagged bad
/// in `[from, time)`, and up to a page of those in `[time, to]`, oldest first.
pub(crate) fn window(time: DateTime<Utc>, within: Duration) -> (DateTime<Utc>, DateTime<Utc>) {
    (time - within, time + within + AHEAD)
}

impl Span {
    /// What a read of [`window`] around `time` returned (`points`, oldest first; at most
    /// `page` from `time` on) knows. A page holds two at least: the first may be at `time`.
    pub(crate) fn of(
        time: DateTime<Utc>,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        page: usize,
        points: Vec<(DateTime<Utc>, f64)>,
    ) -> Span {
        let lo = match points.first() {
            Some(p) if p.0 < time => p.0,
            _ => from,
        };
        let ahead = points.iter().filter(|p| p.0 >= time).count();
        // A full page knows everything up to its last point only.
        let hi = if ahead >= page { points.last().map(|p| p.0).unwrap_or(to) } else { to };
        Span { lo, hi, points }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_735_689_600 + s, 0).unwrap()
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
        let (from, to) = window(time, within);
        let mut points: Vec<_> = all.iter().rev().find(|p| p.0 < time && p.0 >= from).copied().into_iter().collect();
        points.extend(all.iter().filter(|p| p.0 >= time && p.0 <= to).take(page).copied());
        Span::of(time, (from, to), page, points)
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
                span.answer(fetch_at, within),
                Some(direct(&all, fetch_at, within)),
                "at the fetched time {fetch_at}, pages of {page}"
            );
            for s in (-20_000..130_000).step_by(97) {
                if let Some(pair) = span.answer(at(s), within) {
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
        let span = Span { lo: at(0), hi: at(100_000), points: vec![] };
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
    fn two_streams_of_late_readings_in_one_series_keep_a_span_each() {
        let spans = Spans::default();
        let (d, q) = (DeviceId::parse("dev-1").unwrap(), Quantity::by_name("air_temperature").unwrap());
        let within = Duration::hours(3);
        let old = Span { lo: at(0), hi: at(20_000), points: vec![(at(100), 1.0)] };
        let live = Span { lo: at(500_000), hi: at(520_000), points: vec![(at(500_000), 2.0)] };
        let g = spans.generation();
        spans.keep(g, &d, q, old);
        spans.keep(g, &d, q, live);
        assert_eq!(spans.answer(&d, q, at(200), within), Some((Some((at(100), 1.0)), None)));
        assert_eq!(spans.answer(&d, q, at(500_010), within), Some((Some((at(500_000), 2.0)), None)));
        // A few more streams: the oldest span goes first.
        for k in 1..=SPANS_PER_SERIES as i64 {
            spans.keep(g, &d, q, Span { lo: at(k * 1_000_000), hi: at(k * 1_000_000 + 50_000), points: vec![] });
        }
        assert_eq!(spans.answer(&d, q, at(200), within), None);
        assert_eq!(spans.answer(&d, q, at(1_020_000), within), Some((None, None)));
    }
}
