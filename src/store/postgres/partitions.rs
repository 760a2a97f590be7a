//! Monthly partitions of the readings: created ahead of time (and on demand for older or later data), dropped whole past the retention.
//!
//! Plain declarative partitioning, nothing beyond PostgreSQL 15. A partition is created by
//! whichever gateway needs it first, under an advisory lock, in a short transaction of its
//! own before the batch's: `CREATE TABLE IF NOT EXISTS` alone is not safe against a second
//! gateway doing the same at the same moment. There is no default partition, so a month is
//! never stuck behind rows another partition would have to take over.

use std::collections::BTreeSet;
use std::sync::Mutex;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use deadpool_postgres::Object;

/// Advisory lock key of partition changes.
const LOCK: i64 = 0x6d65_7373_6e65_7470 >> 8;

/// Months created ahead of the current one.
pub(super) const AHEAD: i32 = 2;

/// A month as `year * 12 + month0`.
pub(super) type Month = i32;

pub(super) fn month_of(t: DateTime<Utc>) -> Month {
    t.year() * 12 + t.month0() as i32
}

fn start_of(month: Month) -> Option<DateTime<Utc>> {
    Utc.with_ymd_and_hms(month.div_euclid(12), month.rem_euclid(12) as u32 + 1, 1, 0, 0, 0).single()
}

fn name(month: Month) -> String {
    format!("readings_p{:04}{:02}", month.div_euclid(12), month.rem_euclid(12) + 1)
}

/// The months known to have a partition (this gateway's view; another may drop one, which a
/// failed insert then clears).
#[derive(Default)]
pub(super) struct Partitions {
    known: Mutex<BTreeSet<Month>>,
}

impl Partitions {
    fn known(&self) -> std::sync::MutexGuard<'_, BTreeSet<Month>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget what is known (after an insert found a partition missing).
    pub(super) fn forget(&self) {
        self.known().clear();
    }

    /// Make sure every month of `months` has its partition.
    pub(super) async fn ensure(&self, client: &mut Object, months: &BTreeSet<Month>) -> Result<(), tokio_postgres::Error> {
        let missing: Vec<Month> = {
            let known = self.known();
            months.iter().filter(|m| !known.contains(m)).copied().collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
        for month in &missing {
            let (Some(from), Some(to)) = (start_of(*month), start_of(month + 1)) else { continue };
            // Names and bounds are computed here, not taken from input: safe to format in.
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF readings FOR VALUES FROM ('{}') TO ('{}')",
                name(*month),
                from.to_rfc3339(),
                to.to_rfc3339()
            ))
            .await?;
        }
        tx.commit().await?;
        self.known().extend(missing);
        Ok(())
    }

    /// Create the partitions from last month to [`AHEAD`] months ahead and drop those wholly
    /// older than `retention_days` (0 keeps all); returns the partitions dropped.
    pub(super) async fn maintain(&self, client: &mut Object, retention_days: u64) -> Result<Vec<String>, tokio_postgres::Error> {
        let now = month_of(Utc::now());
        self.ensure(client, &(now - 1..=now + AHEAD).collect()).await?;
        if retention_days == 0 {
            return Ok(Vec::new());
        }
        let cutoff = Utc::now() - chrono::Duration::days(retention_days.min(1_000_000) as i64);
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
        let rows = tx
            .query(
                "SELECT c.relname FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
                 WHERE p.relname = 'readings' AND c.relname ~ '^readings_p[0-9]{6}$'",
                &[],
            )
            .await?;
        let mut dropped = Vec::new();
        for row in rows {
            let relname: String = row.get(0);
            let digits = &relname["readings_p".len()..];
            let (Ok(year), Ok(month)) = (digits[..4].parse::<i32>(), digits[4..].parse::<i32>()) else { continue };
            let m = year * 12 + month - 1;
            // The whole month is older than the cutoff when the next one starts before it.
            if start_of(m + 1).is_some_and(|end| end <= cutoff) {
                tx.batch_execute(&format!("DROP TABLE IF EXISTS {relname}")).await?;
                self.known().remove(&m);
                dropped.push(relname);
            }
        }
        tx.commit().await?;
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_names() {
        let t = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let m = month_of(t);
        assert_eq!(name(m), "readings_p202612");
        assert_eq!(start_of(m + 1), Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).single());
        assert_eq!(name(month_of(Utc.timestamp_millis_opt(1000).unwrap())), "readings_p197001");
    }
}
