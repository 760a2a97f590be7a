//! The stored neighbours of late readings in PostgreSQL: a stretch of a series read in one round trip, kept in [`Spans`] until this gateway's next commit.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::db;
use crate::model::{DeviceId, QualityFlag, Quantity};
use crate::store::boundary::StoreError;
pub(super) use crate::store::spans::Spans;
use crate::store::spans::{window, Span};

/// Readings read from the asked time on at most, per miss: a round trip costs far more
/// than a row.
const PAGE: usize = 256;

/// Read the span around `time`: the nearest reading not flagged bad before it (within
/// `within`), and those from `time` on, up to [`PAGE`] of them (see [`window`]). One round
/// trip.
pub(super) async fn fetch(
    client: &impl GenericClient,
    device: &DeviceId,
    quantity: Quantity,
    time: i64,
    within: i64,
) -> Result<Span, StoreError> {
    let bad = i16::from(QualityFlag::Bad.to_byte());
    let stmt = client
        .prepare_cached(
            "(SELECT time, value FROM readings WHERE device = $1 AND quantity = $2 AND time >= $3 AND time < $4
              AND flag <> $5 ORDER BY time DESC LIMIT 1)
             UNION ALL
             (SELECT time, value FROM readings WHERE device = $1 AND quantity = $2 AND time >= $4 AND time <= $6
              AND flag <> $5 ORDER BY time LIMIT $7)",
        )
        .await
        .map_err(db)?;
    let (from, to) = window(time, within);
    let timestamp =
        |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt(format!("{ms} ms is no time")));
    let params = (timestamp(from)?, timestamp(time)?, timestamp(to)?);
    let rows = client
        .query(&stmt, &[&device.as_str(), &quantity.name(), &params.0, &params.1, &bad, &params.2, &(PAGE as i64)])
        .await
        .map_err(db)?;
    // Spans keep milliseconds, as readings are timed.
    let mut points: Vec<(i64, f64)> =
        rows.iter().map(|row| (row.get::<_, DateTime<Utc>>(0).timestamp_millis(), row.get(1))).collect();
    points.sort_by_key(|p| p.0);
    Ok(Span::of(time, (from, to), PAGE, points))
}
