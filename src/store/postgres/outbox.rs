//! The InfluxDB spool as a table, filled in the readings' transaction and drained in order by the InfluxDB writer.
//!
//! With several gateways on one database each one's writer drains the same table: a line
//! may be sent twice when two writers read it before either removes it. InfluxDB keeps one
//! point per series and time, so a line sent twice is stored once.

use super::{db, PostgresStore};
use crate::store::boundary::{Outbox, StoreError};
use crate::store::Spooled;

impl Outbox for PostgresStore {
    fn outbox_len(&self) -> Result<u64, StoreError> {
        self.with_client(|client| async move {
            let row = client.query_one("SELECT count(*) FROM outbox", &[]).await.map_err(db)?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    /// Read and filtered: ids are taken before their transactions commit, so one below a
    /// line in flight can still appear, and no bound on ids would be safe.
    fn outbox_peek_except(&self, limit: usize, skip: &[u64]) -> Result<Spooled, StoreError> {
        let wanted = limit;
        let limit = i64::try_from(limit.saturating_add(skip.len())).unwrap_or(i64::MAX);
        self.with_client(|client| async move {
            let stmt = client.prepare_cached("SELECT id, line FROM outbox ORDER BY id LIMIT $1").await.map_err(db)?;
            let rows = client.query(&stmt, &[&limit]).await.map_err(db)?;
            let mut out = Spooled::default();
            for r in &rows {
                out.push(r.get::<_, i64>(0) as u64, r.get(1));
            }
            Ok(out.without(skip, wanted))
        })
    }

    fn outbox_remove(&self, keys: &[u64]) -> Result<(), StoreError> {
        let keys: Vec<i64> = keys.iter().map(|k| *k as i64).collect();
        self.with_client(|client| async move {
            let stmt = client.prepare_cached("DELETE FROM outbox WHERE id = ANY($1)").await.map_err(db)?;
            client.execute(&stmt, &[&keys]).await.map_err(db)?;
            Ok(())
        })
    }

    fn outbox_drop_oldest(&self, n: u64) -> Result<u64, StoreError> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.with_client(|client| async move {
            let stmt = client
                .prepare_cached("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT $1)")
                .await
                .map_err(db)?;
            client.execute(&stmt, &[&n]).await.map_err(db)
        })
    }
}
