//! One series' readings in the batch being decoded, by millisecond, where late readings find their neighbours: a few runs in time order, a tree once more would be needed.
//!
//! A burst comes as one stream a device sends in order or as a few interleaved ones (two
//! connections publishing halves of a backlog, a gateway replaying beside live traffic): each
//! stream is a run its readings are appended to, and a neighbour is a binary search in each.
//! Readings in any other order (more runs than [`MAX_RUNS`]) go into a `BTreeMap`, which
//! costs an allocation-heavy insert per reading but never degrades.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

/// Runs kept before the points move into a tree.
const MAX_RUNS: usize = 4;

/// One point: millisecond, value, flagged bad.
type Point = (i64, f64, bool);

/// A series' points by millisecond; a later point at a millisecond replaces the earlier one.
#[derive(Debug, Clone)]
pub(super) enum Points {
    /// Each run in time order, none empty, no millisecond in two of them.
    Runs(Vec<Vec<Point>>),
    /// All the points, once they came in more than [`MAX_RUNS`] runs.
    Tree(BTreeMap<i64, (f64, bool)>),
}

impl Default for Points {
    fn default() -> Self {
        Points::Runs(Vec::new())
    }
}

impl Points {
    pub fn insert(&mut self, ms: i64, value: f64, bad: bool) {
        let runs = match self {
            Points::Tree(tree) => {
                tree.insert(ms, (value, bad));
                return;
            }
            Points::Runs(runs) => runs,
        };
        // The run this point extends: of those ending before it, the one ending latest, so a
        // stream stays in its own run.
        let mut fit: Option<(usize, i64)> = None;
        for (i, run) in runs.iter_mut().enumerate() {
            let Some(&(last, ..)) = run.last() else { continue };
            if last < ms {
                if fit.is_none_or(|(_, end)| end < last) {
                    fit = Some((i, last));
                }
            } else if let Some(at) = position(run, ms) {
                run[at] = (ms, value, bad);
                return;
            }
        }
        match fit {
            Some((i, _)) => runs[i].push((ms, value, bad)),
            None if runs.len() < MAX_RUNS => runs.push(vec![(ms, value, bad)]),
            None => {
                let mut tree: BTreeMap<i64, (f64, bool)> = runs.drain(..).flatten().map(|(t, v, b)| (t, (v, b))).collect();
                tree.insert(ms, (value, bad));
                *self = Points::Tree(tree);
            }
        }
    }

    /// The point at `ms`: (value, flagged bad).
    pub fn get(&self, ms: i64) -> Option<(f64, bool)> {
        match self {
            Points::Tree(tree) => tree.get(&ms).copied(),
            Points::Runs(runs) => runs.iter().find_map(|run| position(run, ms).map(|at| (run[at].1, run[at].2))),
        }
    }

    /// The nearest point not flagged bad strictly before `ms` and at or after `first`, as
    /// (millisecond, value).
    pub fn good_before(&self, ms: i64, first: i64) -> Option<(i64, f64)> {
        match self {
            Points::Tree(tree) => {
                tree.range(..ms).rev().take_while(|(&t, _)| t >= first).find(|(_, &(_, bad))| !bad).map(|(&t, &(v, _))| (t, v))
            }
            Points::Runs(runs) => runs
                .iter()
                .filter_map(|run| {
                    let end = split(run, ms, false);
                    run[..end].iter().rev().take_while(|p| p.0 >= first).find(|p| !p.2).map(|p| (p.0, p.1))
                })
                .max_by_key(|p| p.0),
        }
    }

    /// The nearest point not flagged bad strictly after `ms` and at or before `last`, as
    /// (millisecond, value).
    pub fn good_after(&self, ms: i64, last: i64) -> Option<(i64, f64)> {
        match self {
            Points::Tree(tree) => tree
                .range((Excluded(ms), Unbounded))
                .take_while(|(&t, _)| t <= last)
                .find(|(_, &(_, bad))| !bad)
                .map(|(&t, &(v, _))| (t, v)),
            Points::Runs(runs) => runs
                .iter()
                .filter_map(|run| {
                    let start = split(run, ms, true);
                    run[start..].iter().take_while(|p| p.0 <= last).find(|p| !p.2).map(|p| (p.0, p.1))
                })
                .min_by_key(|p| p.0),
        }
    }

    /// Every point in time order.
    #[cfg(test)]
    fn all(&self) -> Vec<Point> {
        match self {
            Points::Tree(tree) => tree.iter().map(|(&t, &(v, b))| (t, v, b)).collect(),
            Points::Runs(runs) => {
                let mut all: Vec<Point> = runs.iter().flatten().copied().collect();
                all.sort_by_key(|p| p.0);
                all
            }
        }
    }
}

/// How many points of `run` come before `ms` (strictly, or also at it with `at_too`). A run
/// is usually all before or all after a late reading (its own stream, the other one): both
/// ends are looked at before a binary search.
fn split(run: &[Point], ms: i64, at_too: bool) -> usize {
    let before = |t: i64| t < ms || (at_too && t == ms);
    match (run.first(), run.last()) {
        (_, Some(&(last, ..))) if before(last) => run.len(),
        (Some(&(first, ..)), _) if !before(first) => 0,
        _ => run.partition_point(|p| before(p.0)),
    }
}

/// Where the point at `ms` is in `run`, if it has one.
fn position(run: &[Point], ms: i64) -> Option<usize> {
    let at = split(run, ms, false);
    run.get(at).is_some_and(|p| p.0 == ms).then_some(at)
}

/// The same points, however they are kept.
#[cfg(test)]
impl PartialEq for Points {
    fn eq(&self, other: &Self) -> bool {
        self.all() == other.all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the points must answer: a plain map, asked the plain way.
    fn check(points: &Points, model: &BTreeMap<i64, (f64, bool)>, label: &str) {
        let all: Vec<Point> = model.iter().map(|(&t, &(v, b))| (t, v, b)).collect();
        assert_eq!(points.all(), all, "{label}");
        let (lo, hi) = (model.keys().next().copied().unwrap_or(0) - 3, model.keys().last().copied().unwrap_or(0) + 3);
        for ms in lo..=hi {
            assert_eq!(points.get(ms), model.get(&ms).copied(), "{label}: at {ms}");
            for w in [1, 2, 5, 1_000] {
                let before =
                    model.range(..ms).rev().take_while(|(&t, _)| t >= ms - w).find(|(_, v)| !v.1).map(|(&t, v)| (t, v.0));
                let after = model.range(ms + 1..).take_while(|(&t, _)| t <= ms + w).find(|(_, v)| !v.1).map(|(&t, v)| (t, v.0));
                assert_eq!(points.good_before(ms, ms - w), before, "{label}: before {ms} within {w}");
                assert_eq!(points.good_after(ms, ms + w), after, "{label}: after {ms} within {w}");
            }
        }
    }

    #[test]
    fn points_answer_as_a_map_would_in_streams_and_in_any_order() {
        // A small generator, so every run of the test sees the same orders.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let orders: Vec<(&str, Vec<i64>)> = vec![
            ("one stream", (0..40).collect()),
            ("two streams interleaved", (0..20).flat_map(|i| [100 + i, i]).collect()),
            ("four streams", (0..10).flat_map(|i| [i, 100 + i, 200 + i, 300 + i]).collect()),
            ("five streams: a tree", (0..10).flat_map(|i| [i, 100 + i, 200 + i, 300 + i, 400 + i]).collect()),
            ("backwards", (0..30).rev().collect()),
            ("random with repeats", (0..60).map(|_| next(40) as i64).collect()),
            ("two streams, each repeating itself", (0..20).flat_map(|i| [50 + i / 2, i / 2]).collect()),
        ];
        for (label, order) in orders {
            let (mut points, mut model) = (Points::default(), BTreeMap::new());
            for (n, ms) in order.into_iter().enumerate() {
                // Every seventh point is flagged bad; a repeat may change the flag.
                let (value, bad) = (n as f64, next(7) == 0);
                points.insert(ms, value, bad);
                model.insert(ms, (value, bad));
                check(&points, &model, &format!("{label}, after {} points", n + 1));
            }
        }
    }

    /// How many runs hold the points; `None` once they are a tree.
    fn runs(points: &Points) -> Option<usize> {
        match points {
            Points::Runs(runs) => Some(runs.len()),
            Points::Tree(_) => None,
        }
    }

    #[test]
    fn streams_keep_their_runs_and_more_make_a_tree() {
        let mut points = Points::default();
        for i in 0..10 {
            points.insert(1_000 + i, 1.0, false);
            points.insert(i, 2.0, false);
        }
        assert_eq!(runs(&points), Some(2));
        // A repeat replaces in its run.
        points.insert(5, 3.0, true);
        assert_eq!((runs(&points), points.get(5)), (Some(2), Some((3.0, true))));
        // A point after a run's end extends it; one before every run's end starts a run.
        points.insert(500, 0.0, false);
        assert_eq!(runs(&points), Some(2));
        for start in [-100, -300] {
            points.insert(start, 0.0, false);
        }
        assert_eq!(runs(&points), Some(4), "as many runs as streams, up to four");
        points.insert(-400, 0.0, false);
        assert!(matches!(&points, Points::Tree(t) if t.len() == 24), "{points:?}");
    }
}
