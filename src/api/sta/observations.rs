//! Observations, read page by page from the store without unbounded scans.
//!
//! A collection of observations is a list of series (datastreams); a page reads them in
//! order (series by series, each by time) in chunks, tests each reading against `$filter`,
//! and stops as soon as it has `$top` matches and one more (which tells that a next page
//! exists). Every reading read counts against the request's scan budget
//! ([`super::SCAN_LIMIT`]): when it runs out first, the page ends early (possibly empty) with
//! an `@iot.nextLink` that continues where the scan stopped. A `$skiptoken` names that place
//! (`<datastream id>:<ms>` or `<datastream id>:start`), so a next page never re-reads earlier
//! ones, and `$skip` costs reads only once.

use chrono::{DateTime, Duration, Utc};

use super::entities::{Catalog, Series};
use super::eval::{matches, time_bounds};
use super::filter::Expr;
use super::props::ReadingProps;
use crate::api::error::ApiError;
use crate::model::Reading;

/// Readings read from the store per call.
const CHUNK: usize = 1000;

/// Where a scan goes on: a series (by index) and the last time done in it (`None`: none yet).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resume {
    pub series: usize,
    pub after_ms: Option<i64>,
}

/// One page of observations.
pub struct Page {
    pub readings: Vec<(usize, Reading)>,
    /// Where the next page starts and how much of `$skip` is left; `None` at the end.
    pub next: Option<(Resume, usize)>,
}

/// What to read.
pub struct Request<'a> {
    pub filter: Option<&'a Expr>,
    pub skip: usize,
    pub top: usize,
    /// Newest first (only for a single series).
    pub descending: bool,
    pub resume: Option<Resume>,
}

/// The skiptoken of a resume point.
pub fn token(series: &[Series], r: Resume) -> String {
    match r.after_ms {
        Some(ms) => format!("{}:{ms}", series[r.series].id()),
        None => format!("{}:start", series[r.series].id()),
    }
}

/// The resume point of a skiptoken.
pub fn parse_token(series: &[Series], token: &str) -> Result<Resume, ApiError> {
    let bad = || ApiError::BadRequest(format!("$skiptoken: {token:?} is not a place in this collection; start again without it"));
    let (ds, at) = token.rsplit_once(':').ok_or_else(bad)?;
    let index = series.iter().position(|s| s.id() == ds).ok_or_else(bad)?;
    let after_ms = match at {
        "start" => None,
        ms => Some(ms.parse::<i64>().map_err(|_| bad())?),
    };
    Ok(Resume { series: index, after_ms })
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Read one page.
pub fn page(catalog: &Catalog, series: &[Series], req: &Request) -> Result<Page, ApiError> {
    let (lo, hi) = req.filter.map(time_bounds).unwrap_or((None, None));
    let (lo, hi) = (lo.unwrap_or(DateTime::<Utc>::MIN_UTC), hi.unwrap_or(DateTime::<Utc>::MAX_UTC));
    let mut skip = req.skip;
    let mut out: Vec<(usize, Reading)> = Vec::new();
    let want = req.top.saturating_add(1);
    let first = req.resume.map_or(0, |r| r.series);
    for (index, s) in series.iter().enumerate().skip(first) {
        let (mut from, mut to) = (lo, hi);
        let mut last: Option<i64> = None;
        if let Some(Resume { series: i, after_ms: Some(ms) }) = req.resume {
            if i == index {
                last = Some(ms);
                if req.descending {
                    to = to.min(time(ms));
                } else {
                    from = from.max(time(ms) + Duration::milliseconds(1));
                }
            }
        }
        loop {
            if from >= to {
                break;
            }
            let budget = catalog.budget.scan_left.get();
            if budget == 0 {
                return Ok(Page { readings: out, next: Some((Resume { series: index, after_ms: last }, skip)) });
            }
            let n = CHUNK.min(budget);
            let rows = if req.descending {
                catalog.store.readings_newest_first(&s.device.id, s.quantity, from, to, n)?
            } else {
                catalog.store.readings(&s.device.id, s.quantity, from, to, n)?
            };
            catalog.budget.scan_left.set(budget - rows.len());
            let full = rows.len() == n;
            for r in rows {
                let t = r.time;
                last = Some(t.timestamp_millis());
                let hit = match req.filter {
                    Some(f) => matches(f, &ReadingProps { series: s, reading: &r, catalog }, catalog.now),
                    None => true,
                };
                if hit {
                    if skip > 0 {
                        skip -= 1;
                    } else {
                        out.push((index, r));
                        if out.len() == want {
                            out.pop();
                            let resume = match out.last() {
                                Some((i, r)) => Resume { series: *i, after_ms: Some(r.time.timestamp_millis()) },
                                // `$top=0` keeps nothing (and gets no next link).
                                None => Resume { series: index, after_ms: Some(t.timestamp_millis()) },
                            };
                            return Ok(Page { readings: out, next: Some((resume, 0)) });
                        }
                    }
                }
            }
            if !full {
                break;
            }
            let Some(last) = last else { break };
            let t = time(last);
            if req.descending {
                to = t;
            } else {
                from = t + Duration::milliseconds(1);
            }
        }
    }
    Ok(Page { readings: out, next: None })
}

/// How many observations match, when the scan budget allows counting them all; `None` when it
/// does not (the response then has no `@iot.count`).
pub fn count(catalog: &Catalog, series: &[Series], filter: Option<&Expr>) -> Result<Option<usize>, ApiError> {
    let req = Request { filter, skip: 0, top: usize::MAX - 1, descending: false, resume: None };
    // Counting reuses the page scan; the readings it keeps are dropped as it goes.
    let (lo, hi) = filter.map(time_bounds).unwrap_or((None, None));
    let (lo, hi) = (lo.unwrap_or(DateTime::<Utc>::MIN_UTC), hi.unwrap_or(DateTime::<Utc>::MAX_UTC));
    let mut total = 0usize;
    for s in series {
        let mut from = lo;
        while from < hi {
            let budget = catalog.budget.scan_left.get();
            if budget == 0 {
                return Ok(None);
            }
            let n = CHUNK.min(budget);
            let rows = catalog.store.readings(&s.device.id, s.quantity, from, hi, n)?;
            catalog.budget.scan_left.set(budget - rows.len());
            let full = rows.len() == n;
            for r in &rows {
                if req.filter.is_none_or(|f| matches(f, &ReadingProps { series: s, reading: r, catalog }, catalog.now)) {
                    total += 1;
                }
            }
            match rows.last() {
                Some(r) if full => from = r.time + Duration::milliseconds(1),
                _ => break,
            }
        }
    }
    Ok(Some(total))
}
