//! The device-window flusher: stores journaled device rollup windows at a fixed interval, and once more at shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::store::{EmbeddedStore, FlushSummary, FLUSH_BATCHES};

/// Flush every `every` until `cancel` fires; then flush what is left (ingest has stopped by
/// the time the caller awaits this, see `app.rs`). A failed flush is retried at the next
/// tick: the journal keeps the windows, and queries fold them from the readings meanwhile.
pub async fn run(store: Arc<EmbeddedStore>, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break,
        }
        // Steps of at most FLUSH_BATCHES rows, each its own transaction, so ingest's
        // commits interleave with a long backlog's flush.
        loop {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.flush_windows(FLUSH_BATCHES)).await {
                Ok(Ok(FlushSummary { batches: 0, .. })) => break,
                Ok(Ok(done)) => {
                    debug!(batches = done.batches, windows = done.windows, "device windows flushed");
                    if done.batches < FLUSH_BATCHES {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "device window flush failed; retrying at the next tick");
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "device window flush task failed");
                    break;
                }
            }
        }
    }
}

/// Flush the whole journal (at shutdown, after ingest's last commit).
pub async fn drain(store: Arc<EmbeddedStore>) {
    match tokio::task::spawn_blocking(move || store.flush_all()).await {
        Ok(Ok(done)) => debug!(batches = done.batches, windows = done.windows, "device windows flushed at shutdown"),
        Ok(Err(e)) => warn!(error = %e, "device window flush at shutdown failed; the journal is kept for the next start"),
        Err(e) => warn!(error = %e, "device window flush task failed"),
    }
}
