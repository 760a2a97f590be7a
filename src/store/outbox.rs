//! The InfluxDB spool: an outbox table in the embedded store, filled in the same commit as the readings and drained in order by the InfluxDB writer.
//!
//! Because the outbox rows are written in the same redb transaction as the readings they
//! copy, "stored in the embedded store" and "spooled for InfluxDB" are one event: the ingest
//! stage's acknowledge-after-commit already means "acknowledged only when in InfluxDB or in
//! the spool", and a crash can never leave a reading stored but forgotten by InfluxDB.
//! Keys are increasing sequence numbers, so the writer replays the spool in arrival order.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::tables::OUTBOX;
use super::{engine, EmbeddedStore, StoreError};
use crate::config::{InfluxSettings, SpoolFullPolicy};
use crate::devices::Device;
use crate::metrics::Metrics;
use crate::model::Reading;

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

impl EmbeddedStore {
    /// Readings waiting in the InfluxDB spool.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            tx.open_table(OUTBOX).map_err(engine)?.len().map_err(engine)
        })
    }

    /// The oldest `limit` spooled lines with their keys, oldest first.
    pub fn outbox_peek(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        // `EmbeddedStore::open` creates the table, so it is never missing here.
        self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let table = tx.open_table(OUTBOX).map_err(engine)?;
            let mut out = Vec::with_capacity(limit.min(65_536));
            for entry in table.range(0u64..).map_err(engine)?.take(limit) {
                let (k, v) = entry.map_err(engine)?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// Remove sent (or dead-lettered) lines, durably.
    pub fn outbox_remove(&self, keys: &[u64]) -> Result<(), StoreError> {
        self.with_write(|db| {
            let tx = db.begin_write().map_err(engine)?;
            {
                let mut table = tx.open_table(OUTBOX).map_err(engine)?;
                for k in keys {
                    table.remove(*k).map_err(engine)?;
                }
            }
            tx.commit().map_err(engine)?;
            Ok(((), true))
        })
    }

    /// Delete the `n` oldest spooled lines; returns how many were deleted.
    pub fn outbox_drop_oldest(&self, n: u64) -> Result<u64, StoreError> {
        self.with_write(|db| {
            let tx = db.begin_write().map_err(engine)?;
            let mut dropped = 0;
            {
                let mut table = tx.open_table(OUTBOX).map_err(engine)?;
                while dropped < n && table.pop_first().map_err(engine)?.is_some() {
                    dropped += 1;
                }
            }
            tx.commit().map_err(engine)?;
            Ok((dropped, true))
        })
    }
}

/// The ingest stage's handle on the spool: encodes readings into outbox lines, holds
/// batches back while the spool is full (policy `backpressure`), and wakes the writer.
pub struct Spool {
    max_readings: u64,
    pub(crate) policy: SpoolFullPolicy,
    metrics: Arc<Metrics>,
    /// Signalled after a commit added lines, so the writer need not poll.
    pub(crate) appended: Notify,
    /// Signalled after the writer removed lines, so held-back ingest can go on.
    room: Notify,
}

impl Spool {
    /// `len` is the number of lines already spooled (left from the previous run).
    pub fn new(settings: &InfluxSettings, metrics: Arc<Metrics>, len: u64) -> Self {
        metrics.influx.spool_readings.store(len, Relaxed);
        metrics.influx.spool_age.resync(len);
        let hold = if settings.spool_full == SpoolFullPolicy::Backpressure { settings.spool_max_readings } else { 0 };
        metrics.influx.spool_hold_limit.store(hold, Relaxed);
        Self {
            max_readings: settings.spool_max_readings,
            policy: settings.spool_full,
            metrics,
            appended: Notify::new(),
            room: Notify::new(),
        }
    }

    /// Readings waiting to be sent (kept up to date by the ingest stage and the writer).
    pub fn len(&self) -> u64 {
        self.metrics.influx.spool_readings.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn max_readings(&self) -> u64 {
        self.max_readings
    }

    /// Add one line per reading of `device` to `out` (the batch's outbox lines). Line protocol
    /// has no NaN or infinity: such readings (stored flagged bad) stay in the embedded store.
    pub fn encode(&self, readings: &[Reading], device: &Device, out: &mut Vec<String>) {
        for r in readings.iter().filter(|r| r.value.is_finite()) {
            let mut line = String::with_capacity(160);
            super::line_protocol::write_line(r, device, &mut line);
            out.push(line);
        }
    }

    /// With policy `backpressure`, wait until the spool is below its limit, so the batch in
    /// hand is neither committed nor acknowledged while InfluxDB is away and the spool full:
    /// the broker keeps the messages. The limit can be passed by at most one batch.
    /// Returns `false` if `cancel` fired while waiting.
    pub async fn wait_for_room(&self, cancel: &CancellationToken) -> bool {
        if self.policy != SpoolFullPolicy::Backpressure || self.len() < self.max_readings {
            return true;
        }
        Metrics::inc(&self.metrics.influx.spool_full_waits, 1);
        tracing::warn!(limit = self.max_readings, "InfluxDB spool full: holding messages unacknowledged until it drains");
        while self.len() >= self.max_readings {
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = self.room.notified() => {}
                // `notify_waiters` keeps no permit; re-check now and then.
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        true
    }

    /// A commit added `n` lines.
    pub fn appended(&self, n: usize) {
        if n > 0 {
            self.metrics.influx.spool_readings.fetch_add(n as u64, Relaxed);
            self.metrics.influx.spool_age.appended(n as u64);
            self.appended.notify_one();
        }
    }

    /// The writer removed `n` lines (sent, dead-lettered or dropped).
    pub(crate) fn removed(&self, n: u64) {
        let _ = self.metrics.influx.spool_readings.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
        self.metrics.influx.spool_age.removed(n);
        self.room.notify_waiters();
    }

    /// Set the count from the table itself.
    pub(crate) fn resync(&self, len: u64) {
        self.metrics.influx.spool_readings.store(len, Relaxed);
        self.metrics.influx.spool_age.resync(len);
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WriteBatch;

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
