//! Device and district rollup windows, kept in the `rollups` table by the transaction that stores the readings.
//!
//! Why stored, not computed from the readings at query time: a district's year of day
//! windows covers every reading of its devices in that year (tens of millions at a
//! 10-minute cadence for a city), far beyond what one API answer may take; a stored window
//! is one index row. The upkeep is folded per batch first (many readings of one window make
//! one row update), then merged into the stored rows by `INSERT … ON CONFLICT DO UPDATE`,
//! whose merge reads the row as committed by then: batches of several gateways that touch
//! the same window add up, whatever their order. Only new readings are added; a reading
//! stored again with another value or flag (a corrected replay) makes its windows be
//! recomputed from the readings, with the window row locked first so that a concurrent
//! batch's addition lands after the recompute, not inside it. The merge follows
//! [`Window::merge`]; the windows of a batch are folded with [`Window::add`] in the batch's
//! order, as the embedded store folds its district windows.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use deadpool_postgres::{GenericClient, Transaction};

use super::db;
use crate::aggregates::{Interval, Scope, Window};
use crate::model::{QualityFlag, Quantity};
use crate::store::boundary::StoreError;

/// A window row's key: scope key (`d:…` / `z:…`), quantity, interval code, start (ms).
pub(super) type Key = (String, &'static str, i16, i64);

/// The windows of one batch's new readings, folded; sorted, so rows are locked in one order.
#[derive(Default)]
pub(super) struct Delta {
    pub windows: BTreeMap<Key, Window>,
}

impl Delta {
    /// Add one new reading to its device's windows and, for an open device, its district's.
    pub fn add(&mut self, device: &str, district: Option<&str>, quantity: Quantity, t_ms: i64, value: f64, flag: QualityFlag) {
        let scopes = std::iter::once(Scope::Device(device.to_owned())).chain(district.map(|z| Scope::District(z.to_owned())));
        for scope in scopes {
            let key = scope.key();
            for interval in Interval::ALL {
                let k = (key.clone(), quantity.name(), i16::from(interval.code()), interval.window_start(t_ms));
                self.windows.entry(k).or_insert(Window::EMPTY).add(value, t_ms, flag);
            }
        }
    }
}

/// The keys of every window that holds a reading of `device` (and `district`) at `t_ms`.
pub(super) fn keys_of(device: &str, district: Option<&str>, quantity: Quantity, t_ms: i64, out: &mut BTreeMap<Key, ()>) {
    let scopes = std::iter::once(Scope::Device(device.to_owned())).chain(district.map(|z| Scope::District(z.to_owned())));
    for scope in scopes {
        let key = scope.key();
        for interval in Interval::ALL {
            out.insert((key.clone(), quantity.name(), i16::from(interval.code()), interval.window_start(t_ms)), ());
        }
    }
}

pub(super) fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_millis_opt(ms).single().ok_or_else(|| StoreError::Corrupt(format!("time {ms} ms is out of range")))
}

/// Merge the delta into the stored windows (one statement).
pub(super) async fn apply(tx: &Transaction<'_>, delta: &Delta) -> Result<(), StoreError> {
    if delta.windows.is_empty() {
        return Ok(());
    }
    let n = delta.windows.len();
    let (mut scopes, mut quantities, mut intervals, mut starts) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut counts, mut excluded, mut sums, mut mins, mut maxs, mut lasts, mut last_times) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((scope, q, interval, start), w) in &delta.windows {
        scopes.push(scope.as_str());
        quantities.push(*q);
        intervals.push(*interval);
        starts.push(time(*start)?);
        counts.push(w.count as i64);
        excluded.push(w.excluded as i64);
        sums.push(w.sum);
        mins.push(w.min);
        maxs.push(w.max);
        lasts.push(w.last);
        last_times.push(w.last_time);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO rollups AS r (scope, quantity, interval, start, count, excluded, sum, min, max, last, last_time)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::timestamptz[], $5::int8[], $6::int8[],
                                  $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::int8[])
             ON CONFLICT (scope, quantity, interval, start) DO UPDATE SET
                 count = r.count + EXCLUDED.count,
                 excluded = r.excluded + EXCLUDED.excluded,
                 sum = r.sum + EXCLUDED.sum,
                 min = LEAST(r.min, EXCLUDED.min),
                 max = GREATEST(r.max, EXCLUDED.max),
                 last = CASE WHEN EXCLUDED.count > 0 AND (EXCLUDED.last_time > r.last_time
                             OR (EXCLUDED.last_time = r.last_time AND EXCLUDED.last > r.last))
                        THEN EXCLUDED.last ELSE r.last END,
                 last_time = CASE WHEN EXCLUDED.count > 0 AND (EXCLUDED.last_time > r.last_time
                             OR (EXCLUDED.last_time = r.last_time AND EXCLUDED.last > r.last))
                        THEN EXCLUDED.last_time ELSE r.last_time END",
        )
        .await
        .map_err(db)?;
    tx.execute(&stmt, &[&scopes, &quantities, &intervals, &starts, &counts, &excluded, &sums, &mins, &maxs, &lasts, &last_times])
        .await
        .map_err(db)?;
    Ok(())
}

/// Recompute windows from the stored readings, each with its row locked first.
pub(super) async fn recompute(tx: &Transaction<'_>, keys: &BTreeMap<Key, ()>) -> Result<(), StoreError> {
    for (scope, quantity, interval, start) in keys.keys() {
        let Some(length) = Interval::ALL.iter().find(|i| i16::from(i.code()) == *interval).map(|i| i.millis()) else {
            continue;
        };
        let (from, to) = (time(*start)?, time(start + length)?);
        let e = Window::EMPTY;
        let lock = tx
            .prepare_cached(
                "INSERT INTO rollups (scope, quantity, interval, start, count, excluded, sum, min, max, last, last_time)
                 VALUES ($1, $2, $3, $4, 0, 0, 0, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(db)?;
        tx.execute(&lock, &[scope, quantity, interval, &from, &e.min, &e.max, &e.last, &e.last_time]).await.map_err(db)?;
        let lock = tx
            .prepare_cached(
                "SELECT 1 FROM rollups WHERE scope = $1 AND quantity = $2 AND interval = $3 AND start = $4 FOR UPDATE",
            )
            .await
            .map_err(db)?;
        tx.execute(&lock, &[scope, quantity, interval, &from]).await.map_err(db)?;
        // A statement of its own, so it sees every batch committed before the lock was had.
        let sql = if scope.starts_with("d:") {
            "SELECT value, flag, time FROM readings WHERE device = $1 AND quantity = $2 AND time >= $3 AND time < $4 ORDER BY time"
        } else {
            "SELECT value, flag, time FROM readings WHERE district = $1 AND quantity = $2 AND time >= $3 AND time < $4 ORDER BY time"
        };
        let read = tx.prepare_cached(sql).await.map_err(db)?;
        let mut w = Window::EMPTY;
        for row in tx.query(&read, &[&&scope[2..], quantity, &from, &to]).await.map_err(db)? {
            let t: DateTime<Utc> = row.get(2);
            w.add(row.get(0), t.timestamp_millis(), QualityFlag::from_byte(row.get::<_, i16>(1) as u8));
        }
        let write = tx
            .prepare_cached(
                "UPDATE rollups SET count = $5, excluded = $6, sum = $7, min = $8, max = $9, last = $10, last_time = $11
                 WHERE scope = $1 AND quantity = $2 AND interval = $3 AND start = $4",
            )
            .await
            .map_err(db)?;
        tx.execute(
            &write,
            &[
                scope,
                quantity,
                interval,
                &from,
                &(w.count as i64),
                &(w.excluded as i64),
                &w.sum,
                &w.min,
                &w.max,
                &w.last,
                &w.last_time,
            ],
        )
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Stored windows of a scope with `from <= start < to`, oldest first.
pub(super) async fn query(
    client: &impl GenericClient,
    scope: &Scope,
    quantity: Quantity,
    interval: Interval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, Window)>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT start, count, excluded, sum, min, max, last, last_time FROM rollups
             WHERE scope = $1 AND quantity = $2 AND interval = $3 AND start >= $4 AND start < $5 ORDER BY start",
        )
        .await
        .map_err(db)?;
    let rows =
        client.query(&stmt, &[&scope.key(), &quantity.name(), &i16::from(interval.code()), &from, &to]).await.map_err(db)?;
    Ok(rows
        .iter()
        .map(|row| {
            let w = Window {
                count: row.get::<_, i64>(1) as u64,
                excluded: row.get::<_, i64>(2) as u64,
                sum: row.get(3),
                min: row.get(4),
                max: row.get(5),
                last: row.get(6),
                last_time: row.get(7),
            };
            (row.get(0), w)
        })
        .collect())
}

/// First and last time of a series' data: a device's readings, a district's day windows.
pub(super) async fn extent(
    client: &impl GenericClient,
    scope: &Scope,
    quantity: Quantity,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, StoreError> {
    let row = match scope {
        Scope::Device(device) => {
            let stmt = client
                .prepare_cached("SELECT min(time), max(time) FROM readings WHERE device = $1 AND quantity = $2")
                .await
                .map_err(db)?;
            client.query_one(&stmt, &[&device.as_str(), &quantity.name()]).await.map_err(db)?
        }
        Scope::District(_) => {
            let stmt = client
                .prepare_cached("SELECT min(start), max(start) FROM rollups WHERE scope = $1 AND quantity = $2 AND interval = $3")
                .await
                .map_err(db)?;
            client.query_one(&stmt, &[&scope.key(), &quantity.name(), &i16::from(Interval::Day.code())]).await.map_err(db)?
        }
    };
    let (first, last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (row.get(0), row.get(1));
    Ok(first.zip(last))
}
