//! The HTTP API (axum): `router(state)` with the open read-only routes, health and metrics.

mod devices;
pub mod error;
mod health;
mod readings;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::devices::{Device, Visibility};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::EmbeddedStore;
use error::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<EmbeddedStore>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Most points in one `/v1/readings` response.
    pub max_points: usize,
}

/// All routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/v1/devices", get(devices::list))
        .route("/v1/devices/{id}/latest", get(devices::latest))
        .route("/v1/readings", get(readings::series))
        .with_state(state)
}

/// An open device by id; internal and unknown devices are both "not found", so the open API
/// does not reveal which internal ids exist.
fn open_device(state: &AppState, id: &str) -> Result<Arc<Device>, ApiError> {
    state
        .registry
        .devices()
        .get(id)
        .filter(|d| d.visibility == Visibility::Open)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no open device {id:?}")))
}

/// Times are RFC 3339 in UTC with a `Z`, with fractions only when there are any.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Values are computed in binary floating point (28.29 may come out as 28.290000000000003);
/// nine decimals are more than any sensor resolves, and print as the decimal the sensor meant.
fn round(v: f64) -> f64 {
    if v.is_finite() && v.abs() < 1e9 {
        (v * 1e9).round() / 1e9
    } else {
        v
    }
}
