//! `/v1/citizens/`: citizens register sensors, push their measurements and delete them again.
//!
//! - [`sensors`]: `POST /v1/citizens/sensors` (JSON, or the page's form) registers a sensor
//!   and answers its token once; `DELETE /v1/citizens/sensors/{id}` with the token removes
//!   the sensor and all its data.
//! - [`push`]: `POST /v1/citizens/push`, the sensor.community firmware's custom API: answered
//!   2xx only once the readings are durably stored.
//!
//! Operators approve sensors through `/v1/admin/citizens` ([`crate::api::admin`]); until then
//! a sensor's data is stored but not public.

mod auth;
pub mod error;
mod push;
mod sensors;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{delete, post};
use axum::Router;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::AppState;
use crate::citizens::CitizenSensor;
use crate::config::CitizenSettings;
use crate::registry::Registry;
use crate::sources::Inbound;
use crate::store::{ApiStore, StoreError};
pub use error::CitizenError;

/// What the citizens' routes share.
#[derive(Default)]
pub struct CitizenState {
    pub settings: Arc<CitizenSettings>,
    /// The ingest stage's queue, which pushes go through like MQTT messages; `None` where no
    /// ingest runs (then a push answers 503).
    pub input: Option<mpsc::Sender<Inbound>>,
    /// Serialises registrations, approvals and deletions: each is a store change followed by
    /// a registry swap, which must not interleave.
    pub changes: std::sync::Mutex<()>,
}

impl CitizenState {
    pub fn new(settings: CitizenSettings, input: Option<mpsc::Sender<Inbound>>) -> Self {
        Self { settings: Arc::new(settings), input, changes: Default::default() }
    }
}

/// The routes under `/v1/citizens/`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/citizens/sensors", post(sensors::register))
        .route("/v1/citizens/sensors/{id}", delete(sensors::remove))
        .route("/v1/citizens/push", post(push::push))
}

/// Put the stored citizen sensors into the running registry (after any change to them, and
/// at start). Blocks (a store read).
pub fn sync_registry(store: &dyn ApiStore, registry: &Registry, settings: Arc<CitizenSettings>) -> Result<(), StoreError> {
    let devices = store.citizen_sensors()?.iter().map(|s| s.device()).collect();
    registry.set_citizens(devices, settings);
    Ok(())
}

/// Keep the registry's citizen sensors in step with a store other gateways change too
/// (PostgreSQL replicas): every `every`, read the stored sensors and swap them in when they
/// differ from the last set seen. A sensor registered, approved or deleted through another
/// replica is known here within `every`.
pub async fn follow(
    store: Arc<dyn ApiStore>,
    registry: Arc<Registry>,
    citizens: Arc<CitizenState>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut last: Option<Vec<CitizenSensor>> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let (store, registry, citizens, seen) = (store.clone(), registry.clone(), citizens.clone(), last.take());
        let looked = tokio::task::spawn_blocking(move || {
            // Under the lock of local changes, so an older read never replaces a newer swap.
            let _changing = citizens.changes.lock().unwrap_or_else(|e| e.into_inner());
            let sensors = store.citizen_sensors()?;
            if seen.as_ref() != Some(&sensors) {
                registry.set_citizens(sensors.iter().map(|s| s.device()).collect(), citizens.settings.clone());
            }
            Ok::<_, StoreError>(sensors)
        })
        .await;
        match looked {
            Ok(Ok(sensors)) => last = Some(sensors),
            Ok(Err(e)) => warn!(error = %e, "citizen sensors not read; trying again"),
            Err(e) => warn!(error = %e, "citizen sensors task failed; trying again"),
        }
    }
}

/// Run blocking work (store reads and writes) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, CitizenError> + Send + 'static) -> Result<T, CitizenError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| CitizenError::Internal(e.to_string()))?
}
