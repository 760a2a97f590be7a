//! Dead letters in PostgreSQL: one by id, paging with a filter, and a replay's result committed with the letter's removal.
//!
//! A replay locks its letter's row (`FOR UPDATE`) first: a second replay of the same letter,
//! from this gateway or another, waits, then finds it gone and writes nothing.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::{db, write, PostgresStore};
use crate::store::batch::WriteBatch;
use crate::store::boundary::StoreError;
use crate::store::dead_letter::{DeadLetter, ReplayOutcome};

const COLUMNS: &str = "id, received_at, topic, format, device, reason, payload";

fn letter(row: &tokio_postgres::Row) -> DeadLetter {
    DeadLetter {
        id: row.get::<_, i64>(0) as u64,
        received_at: row.get::<_, DateTime<Utc>>(1),
        topic: row.get(2),
        format: row.get(3),
        device: row.get(4),
        reason: row.get(5),
        payload: row.get(6),
    }
}

pub(super) async fn one(client: &impl GenericClient, id: u64) -> Result<Option<DeadLetter>, StoreError> {
    let stmt = client.prepare_cached(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1")).await.map_err(db)?;
    Ok(client.query_opt(&stmt, &[&(id as i64)]).await.map_err(db)?.as_ref().map(letter))
}

/// Letters with an id above `after` that `keep` accepts (see [`crate::store::ReadStore::dead_letters_matching`]),
/// read in pages.
pub(super) async fn matching(
    client: &impl GenericClient,
    after: u64,
    limit: usize,
    max_scan: usize,
    keep: &mut dyn FnMut(&DeadLetter) -> bool,
) -> Result<(Vec<DeadLetter>, Option<u64>), StoreError> {
    const PAGE: i64 = 256;
    let stmt = client
        .prepare_cached(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id > $1 ORDER BY id LIMIT $2"))
        .await
        .map_err(db)?;
    let mut out = Vec::new();
    let mut last: Option<u64> = None;
    let mut cursor = after.min(i64::MAX as u64) as i64;
    let mut scanned = 0;
    loop {
        let page = client.query(&stmt, &[&cursor, &PAGE]).await.map_err(db)?;
        let full = page.len() as i64 == PAGE;
        for row in &page {
            if scanned >= max_scan || out.len() >= limit {
                // Stopped with this letter still to look at: there may be more.
                return Ok((out, last));
            }
            let l = letter(row);
            scanned += 1;
            last = Some(l.id);
            cursor = l.id as i64;
            if keep(&l) {
                out.push(l);
            }
        }
        if !full {
            return Ok((out, None));
        }
    }
}

impl PostgresStore {
    /// Commit what replaying letter `id` produced, with the letter's removal or new reason.
    pub(super) fn replay_in_one(&self, id: u64, mut batch: WriteBatch) -> Result<ReplayOutcome, StoreError> {
        self.with_write(|mut client| async move {
            let tx = client.transaction().await.map_err(db)?;
            let stmt =
                tx.prepare_cached(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1 FOR UPDATE")).await.map_err(db)?;
            let Some(old) = tx.query_opt(&stmt, &[&(id as i64)]).await.map_err(db)?.as_ref().map(letter) else {
                return Ok(ReplayOutcome::Gone);
            };
            let again = batch.dead_letters.pop();
            let (outcome, replacement) = match again {
                Some(l) => {
                    (ReplayOutcome::Failed { reason: l.reason.clone() }, Some((l.reason, l.device.or(old.device.clone()))))
                }
                None if batch.seen.is_empty() => {
                    let reason =
                        "replay: the message was taken without readings (a LoRaWAN duplicate, join or MAC-only frame)".to_owned();
                    (ReplayOutcome::Failed { reason: reason.clone() }, Some((reason, old.device.clone())))
                }
                None => {
                    let device = batch.seen.first().map(|(d, _)| d.to_string()).unwrap_or_default();
                    (ReplayOutcome::Stored { device, readings: batch.readings.len() }, None)
                }
            };
            write::write_in(&tx, &batch).await?;
            match replacement {
                Some((reason, device)) => {
                    tx.execute(
                        "UPDATE dead_letters SET reason = $2, device = $3 WHERE id = $1",
                        &[&(id as i64), &reason, &device],
                    )
                    .await
                    .map_err(db)?;
                }
                None => {
                    tx.execute("DELETE FROM dead_letters WHERE id = $1", &[&(id as i64)]).await.map_err(db)?;
                }
            }
            tx.commit().await.map_err(db)?;
            Ok(outcome)
        })
    }
}
