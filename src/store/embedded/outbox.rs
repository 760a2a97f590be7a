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
    let (Some(&lo), Some(&hi)) = (keys.iter().min(), keys.iter().max()) else { return Ok(()) };
    let mut table = tx.open_table(OUTBOX).map_err(engine)?;
    // One pass of a cursor over the range instead of one tree descent and leaf rewrite per
    // key: the keys a writer sent are a run from the front of the spool, so the range holds
    // only those (a key not in the list is kept, a listed one missing is no error).
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let contiguous = (hi - lo).checked_add(1) == Some(sorted.len() as u64);
    table.retain_in(lo..=hi, |k, _| !contiguous && sorted.binary_search(&k).is_err()).map_err(engine)?;
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

    #[test]
    fn remove_takes_exactly_the_listed_keys_in_any_order_with_repeats_and_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let lines: Vec<String> = (0..10).map(|i| format!("l{i}")).collect();
        store.write(&WriteBatch { outbox: lines, ..Default::default() }).unwrap();
        let keys: Vec<u64> = store.outbox_peek(10).unwrap().iter().map(|(k, _)| *k).collect();
        // Not a run: the key between them stays; a repeat and a missing key are no error.
        store.outbox_remove(&[keys[4], keys[2], keys[2], 9_999]).unwrap();
        let left =
            |store: &EmbeddedStore| -> Vec<Vec<u8>> { store.outbox_peek(20).unwrap().into_iter().map(|(_, l)| l).collect() };
        let expect: Vec<Vec<u8>> = [0, 1, 3, 5, 6, 7, 8, 9].iter().map(|i| format!("l{i}").into_bytes()).collect();
        assert_eq!(left(&store), expect);
        // A run with a repeat that makes the list as long as a wider run: only the listed go.
        store.outbox_remove(&[keys[5], keys[5], keys[6]]).unwrap();
        let expect: Vec<Vec<u8>> = [0, 1, 3, 7, 8, 9].iter().map(|i| format!("l{i}").into_bytes()).collect();
        assert_eq!(left(&store), expect);
        store.outbox_remove(&[keys[0], keys[1], keys[3]]).unwrap();
        store.outbox_remove(&[]).unwrap();
        let expect: Vec<Vec<u8>> = [7, 8, 9].iter().map(|i| format!("l{i}").into_bytes()).collect();
        assert_eq!(left(&store), expect);
    }
}
