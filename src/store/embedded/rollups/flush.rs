//! The device-window flusher: stores journaled device rollup windows at a fixed interval, and once more at shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::FlushSummary;
use crate::store::boundary::StoreError;

/// What the flusher drives: a store that keeps device windows in a journal until flushed.
pub trait FlushWindows: Send + Sync + 'static {
    /// Store the journaled windows (some, or all of them).
    fn flush_windows(&self) -> Result<FlushSummary, StoreError>;
}

/// Flush every `every` until `cancel` fires. A failed flush is retried at the next tick:
/// the journal keeps the windows, and queries fold them from the readings meanwhile.
pub async fn run(store: Arc<impl FlushWindows>, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break,
        }
        flush(store.clone(), "retrying at the next tick").await;
    }
}

/// Flush the whole journal (at shutdown, after ingest's last commit).
pub async fn drain(store: Arc<impl FlushWindows>) {
    flush(store, "the journal is kept for the next start").await;
}

async fn flush(store: Arc<impl FlushWindows>, on_failure: &str) {
    match tokio::task::spawn_blocking(move || store.flush_windows()).await {
        Ok(Ok(done)) if done.batches > 0 => {
            debug!(batches = done.batches, windows = done.windows, readings = done.readings, "device windows flushed")
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "device window flush failed; {on_failure}"),
        Err(e) => warn!(error = %e, "device window flush task failed; {on_failure}"),
    }
}
