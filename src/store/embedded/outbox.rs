//! The embedded store's outbox table: the InfluxDB spool, filled in the same commit as the readings and drained in order by the InfluxDB writer.
//!
//! Because the outbox rows are written in the same redb transaction as the readings they
//! copy, "stored in the embedded store" and "spooled for InfluxDB" are one event: the ingest
//! stage's acknowledge-after-commit already means "acknowledged only when in InfluxDB or in
//! the spool", and a crash can never leave a reading stored but forgotten by InfluxDB.
//! Keys are increasing sequence numbers, so the writer replays the spool in arrival order.

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::tables::OUTBOX;
use crate::store::boundary::{engine, StoreError};

/// Append lines to the outbox inside the caller's transaction (the one storing the readings).
pub(super) fn append(tx: &WriteTransaction, lines: &[String]) -> Result<(), StoreError> {
    let mut table = tx.open_table(OUTBOX).map_err(engine)?;
    // Only the InfluxDB writer removes rows, and only rows it has read, so the next key is
    // always above every row still present: order is preserved even after the table empties.
    let first = table.last().map_err(engine)?.map(|(k, _)| k.value() + 1).unwrap_or(1);
    for (key, line) in (first..).zip(lines) {
        table.insert(key, line.as_bytes()).map_err(engine)?;
    }
    Ok(())
}

/// Lines waiting in the spool.
pub(super) fn len(db: &Database) -> Result<u64, StoreError> {
    let tx = db.begin_read().map_err(engine)?;
    tx.open_table(OUTBOX).map_err(engine)?.len().map_err(engine)
}

/// The oldest `limit` spooled lines with their keys, oldest first.
pub(super) fn peek(db: &Database, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    // `EmbeddedStore::open` creates the table, so it is never missing here.
    let tx = db.begin_read().map_err(engine)?;
    let table = tx.open_table(OUTBOX).map_err(engine)?;
    let mut out = Vec::with_capacity(limit.min(65_536));
    for entry in table.range(0u64..).map_err(engine)?.take(limit) {
        let (k, v) = entry.map_err(engine)?;
        out.push((k.value(), v.value().to_vec()));
    }
    Ok(out)
}

/// Remove sent (or dead-lettered) lines inside the caller's transaction.
pub(super) fn remove(tx: &WriteTransaction, keys: &[u64]) -> Result<(), StoreError> {
    let mut table = tx.open_table(OUTBOX).map_err(engine)?;
    for k in keys {
        table.remove(*k).map_err(engine)?;
    }
    Ok(())
}

/// Delete the `n` oldest lines inside the caller's transaction; returns how many went.
pub(super) fn drop_oldest(tx: &WriteTransaction, n: u64) -> Result<u64, StoreError> {
    let mut table = tx.open_table(OUTBOX).map_err(engine)?;
    let mut dropped = 0;
    while dropped < n && table.pop_first().map_err(engine)?.is_some() {
        dropped += 1;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use crate::store::{CommitStore, EmbeddedStore, Outbox, WriteBatch};

    #[test]
    fn outbox_keeps_order_and_survives_reopen_and_emptying() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let batch = WriteBatch { outbox: vec!["a".into(), "b".into(), "c".into()], ..Default::default() };
            store.write(&batch).unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.outbox_len().unwrap(), 3);
        let first = store.outbox_peek(2).unwrap();
        assert_eq!(first.iter().map(|(_, l)| l.as_slice()).collect::<Vec<_>>(), vec![b"a".as_slice(), b"b"]);
        store.outbox_remove(&first.iter().map(|(k, _)| *k).collect::<Vec<_>>()).unwrap();
        let rest = store.outbox_peek(10).unwrap();
        assert_eq!(rest.len(), 1);
        store.outbox_remove(&[rest[0].0]).unwrap();
        store.write(&WriteBatch { outbox: vec!["d".into(), "e".into()], ..Default::default() }).unwrap();
        assert_eq!(store.outbox_drop_oldest(1).unwrap(), 1);
        let left = store.outbox_peek(10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1, b"e");
    }
}
