//! Reading the readings: a device's latest values, a series' range and last-seen times (the spike test's neighbours are in [`super::neighbours`]).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::db;
use crate::model::{DeviceId, QualityFlag, Quantity, Reading};
use crate::store::boundary::{millis, StoreError};

fn reading(device: &DeviceId, quantity: Quantity, row: &tokio_postgres::Row, first: usize) -> Reading {
    Reading {
        device: device.clone(),
        quantity,
        time: row.get(first),
        value: row.get(first + 1),
        flag: QualityFlag::from_byte(row.get::<_, i16>(first + 2) as u8),
        reason: row.get::<_, String>(first + 3).into(),
    }
}

/// The newest reading of each quantity of a device, in the quantities' order: one index
/// probe per quantity (newest partition first), whatever the length of the series.
pub(super) async fn latest(client: &impl GenericClient, device: &DeviceId) -> Result<Vec<Reading>, StoreError> {
    let names: Vec<&str> = Quantity::all().map(|q| q.name()).collect();
    let stmt = client
        .prepare_cached(
            "SELECT q.name, r.time, r.value, r.flag, r.reason
             FROM unnest($2::text[]) WITH ORDINALITY AS q(name, n)
             CROSS JOIN LATERAL (SELECT time, value, flag, reason FROM readings
                                 WHERE device = $1 AND quantity = q.name ORDER BY time DESC LIMIT 1) r
             ORDER BY q.n",
        )
        .await
        .map_err(db)?;
    let rows = client.query(&stmt, &[&device.as_str(), &names]).await.map_err(db)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: &str = row.get(0);
        if let Some(q) = Quantity::by_name(name) {
            out.push(reading(device, q, row, 1));
        }
    }
    Ok(out)
}

/// Readings of one series with `from <= time < to`, oldest first, at most `limit`.
pub(super) async fn range(
    client: &impl GenericClient,
    device: &DeviceId,
    quantity: Quantity,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Reading>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT time, value, flag, reason FROM readings
             WHERE device = $1 AND quantity = $2 AND time >= $3 AND time < $4 ORDER BY time LIMIT $5",
        )
        .await
        .map_err(db)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client.query(&stmt, &[&device.as_str(), &quantity.name(), &from, &to, &limit]).await.map_err(db)?;
    Ok(rows.iter().map(|row| reading(device, quantity, row, 0)).collect())
}

/// The same range as [`range`], newest first, at most `limit`.
pub(super) async fn range_newest_first(
    client: &impl GenericClient,
    device: &DeviceId,
    quantity: Quantity,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Reading>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT time, value, flag, reason FROM readings
             WHERE device = $1 AND quantity = $2 AND time >= $3 AND time < $4 ORDER BY time DESC LIMIT $5",
        )
        .await
        .map_err(db)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client.query(&stmt, &[&device.as_str(), &quantity.name(), &from, &to, &limit]).await.map_err(db)?;
    Ok(rows.iter().map(|row| reading(device, quantity, row, 0)).collect())
}

pub(super) async fn last_seen(client: &impl GenericClient, device: &DeviceId) -> Result<Option<DateTime<Utc>>, StoreError> {
    let stmt = client.prepare_cached("SELECT at FROM last_seen WHERE device = $1").await.map_err(db)?;
    Ok(client.query_opt(&stmt, &[&device.as_str()]).await.map_err(db)?.map(|row| row.get(0)))
}

/// The readings of `device` at `time`, of every quantity.
pub(super) async fn at(client: &impl GenericClient, device: &DeviceId, time: DateTime<Utc>) -> Result<Vec<Reading>, StoreError> {
    let stmt = client
        .prepare_cached("SELECT quantity, time, value, flag, reason FROM readings WHERE device = $1 AND time = $2")
        .await
        .map_err(db)?;
    let rows = client.query(&stmt, &[&device.as_str(), &time]).await.map_err(db)?;
    Ok(rows.iter().filter_map(|row| Some(reading(device, Quantity::by_name(row.get(0))?, row, 1))).collect())
}

/// Milliseconds looked at per round trip of [`free_from`].
const FREE_PAGE: i64 = 4096;

/// The first millisecond at or after `from` (a whole millisecond) at which `device` has no
/// reading of any quantity; one round trip per [`FREE_PAGE`] milliseconds all taken.
pub(super) async fn free_from(
    client: &impl GenericClient,
    device: &DeviceId,
    from: DateTime<Utc>,
) -> Result<DateTime<Utc>, StoreError> {
    let names: Vec<&str> = Quantity::all().map(|q| q.name()).collect();
    let stmt = client
        .prepare_cached(
            "SELECT DISTINCT time FROM readings WHERE device = $1 AND quantity = ANY($2) AND time >= $3 AND time < $4",
        )
        .await
        .map_err(db)?;
    let mut t = from.timestamp_millis();
    loop {
        let (start, end) = (millis(t)?, millis(t + FREE_PAGE)?);
        let rows = client.query(&stmt, &[&device.as_str(), &names, &start, &end]).await.map_err(db)?;
        let taken: std::collections::HashSet<i64> = rows
            .iter()
            .map(|row| row.get::<_, DateTime<Utc>>(0))
            .filter(|time| time.timestamp_subsec_micros() % 1000 == 0)
            .map(|time| time.timestamp_millis())
            .collect();
        if let Some(free) = (t..t + FREE_PAGE).find(|ms| !taken.contains(ms)) {
            return millis(free);
        }
        t += FREE_PAGE;
    }
}
