//! The retention task: every `retention.interval_s`, deletes readings, rollups and dead
//! letters older than their configured age ([`crate::config::RetentionSettings`]).
//!
//! The work is done a chunk at a time ([`crate::store::embedded::retention`]): each chunk finds its
//! rows in a read transaction and deletes at most `chunk_rows` of them in one short write
//! transaction, then the task pauses `chunk_pause_ms`, so ingest's commits never wait behind
//! a long delete. Which readings go depends on the device's visibility now (a device made
//! internal takes the internal retention) and on the quantity.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RetentionSettings;
use crate::devices::Visibility;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::embedded::retention::{Chunk, SeriesCursor};
use crate::store::{EmbeddedStore, StoreError};

const DAY_MS: i64 = 86_400_000;

/// One chunk of a walk over a table of series, from a cursor.
type Step = Arc<dyn Fn(&EmbeddedStore, &SeriesCursor) -> Result<Chunk, StoreError> + Send + Sync>;

/// Run passes until `cancel` fires; the first a few seconds after the start.
pub async fn run(
    store: Arc<EmbeddedStore>,
    registry: Arc<Registry>,
    settings: RetentionSettings,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    if settings.interval_s == 0 || !keeps_less_than_everything(&settings) {
        return;
    }
    let mut wait = Duration::from_secs(settings.interval_s.min(5));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match pass(&store, &registry, &settings, &metrics, &cancel).await {
            Ok(Some(done)) => {
                metrics.retention.passes.fetch_add(1, Relaxed);
                metrics.retention.last_pass_unix_s.store(Utc::now().timestamp().max(0) as u64, Relaxed);
                if done.readings + done.dead_letters + done.rollups > 0 {
                    info!(
                        readings = done.readings,
                        dead_letters = done.dead_letters,
                        rollups = done.rollups,
                        "retention: old data deleted"
                    );
                }
            }
            Ok(None) => return, // cancelled
            Err(e) => warn!(error = %e, "retention pass failed; trying again at the next interval"),
        }
        wait = Duration::from_secs(settings.interval_s);
    }
}

/// Whether any retention is set at all.
fn keeps_less_than_everything(s: &RetentionSettings) -> bool {
    s.readings.open_days > 0
        || s.readings.internal_days > 0
        || s.readings.quantities.values().any(|d| *d > 0)
        || s.dead_letters_days > 0
        || s.rollups_days > 0
}

/// Rows one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PassSummary {
    pub readings: u64,
    pub rollups: u64,
    pub dead_letters: u64,
}

/// The cutoff (ms since the epoch) of each (device, quantity) series: rows before it go.
pub struct ReadingCutoffs {
    now_ms: i64,
    open_days: u32,
    internal_days: u32,
    quantities: HashMap<String, u32>,
    visibility: HashMap<String, Visibility>,
}

impl ReadingCutoffs {
    pub fn new(settings: &RetentionSettings, registry: &Registry, now_ms: i64) -> Self {
        let devices = registry.devices();
        Self {
            now_ms,
            open_days: settings.readings.open_days,
            internal_days: settings.readings.internal_days,
            quantities: settings.readings.quantities.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            visibility: devices.iter().map(|d| (d.id.to_string(), d.visibility)).collect(),
        }
    }

    /// `None`: the series is kept whole.
    pub fn of(&self, device: &str, quantity: &str) -> Option<i64> {
        let days = match self.quantities.get(quantity) {
            Some(days) => *days,
            None => match self.visibility.get(device) {
                Some(Visibility::Open) => self.open_days,
                // Internal devices, and devices no longer registered.
                _ => self.internal_days,
            },
        };
        (days > 0).then(|| self.now_ms - i64::from(days) * DAY_MS)
    }
}

/// One pass over the store, chunk by chunk; `None` if cancelled on the way.
pub async fn pass(
    store: &Arc<EmbeddedStore>,
    registry: &Registry,
    settings: &RetentionSettings,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> Result<Option<PassSummary>, StoreError> {
    let now_ms = Utc::now().timestamp_millis();
    let cutoffs = Arc::new(ReadingCutoffs::new(settings, registry, now_ms));
    let rows = settings.chunk_rows;
    let pause = Duration::from_millis(settings.chunk_pause_ms);
    let mut done = PassSummary::default();

    let walk = |step: Step| {
        let store = store.clone();
        async move {
            let mut cursor = SeriesCursor::default();
            let mut deleted = 0;
            loop {
                let (s, c, step) = (store.clone(), cursor.clone(), step.clone());
                let chunk = tokio::task::spawn_blocking(move || step(&s, &c))
                    .await
                    .map_err(|e| StoreError::Corrupt(format!("retention task: {e}")))??;
                deleted += chunk.deleted;
                match chunk.next {
                    Some(next) => cursor = next,
                    None => return Ok::<_, StoreError>(Some(deleted)),
                }
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    };

    if settings.readings.open_days > 0
        || settings.readings.internal_days > 0
        || settings.readings.quantities.values().any(|d| *d > 0)
    {
        let c = cutoffs.clone();
        let step: Step = Arc::new(move |s: &EmbeddedStore, cur: &SeriesCursor| s.expire_readings(cur, rows, &|d, q| c.of(d, q)));
        let Some(n) = walk(step).await? else { return Ok(None) };
        metrics.retention.readings_deleted.fetch_add(n, Relaxed);
        done.readings = n;
    }
    if settings.rollups_days > 0 {
        let cutoff = now_ms - i64::from(settings.rollups_days) * DAY_MS;
        let step: Step = Arc::new(move |s: &EmbeddedStore, cur: &SeriesCursor| s.expire_rollups(cur, rows, cutoff));
        let Some(n) = walk(step).await? else { return Ok(None) };
        let step: Step = Arc::new(move |s: &EmbeddedStore, cur: &SeriesCursor| s.expire_device_windows(cur, rows, cutoff));
        let Some(m) = walk(step).await? else { return Ok(None) };
        done.rollups = n + m;
    }
    if settings.dead_letters_days > 0 {
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(settings.dead_letters_days));
        loop {
            let s = store.clone();
            let n = tokio::task::spawn_blocking(move || s.expire_dead_letters(rows, cutoff))
                .await
                .map_err(|e| StoreError::Corrupt(format!("retention task: {e}")))??;
            metrics.retention.dead_letters_deleted.fetch_add(n, Relaxed);
            done.dead_letters += n;
            if n < rows as u64 {
                break;
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(None),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
    Ok(Some(done))
}
