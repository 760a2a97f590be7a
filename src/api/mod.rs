//! The HTTP API (axum): `router(state)` with the open read-only routes, health and metrics.
//!
//! Open routes show only devices marked open; an internal device answers exactly like an
//! unknown one. Open responses carry their licence, an ETag and Cache-Control, answer CORS
//! and are compressed by `Accept-Encoding` (`web.rs`); the operator API gets none of that.

pub mod admin;
mod aggregates;
mod cache;
mod catalog;
pub mod citizens;
mod devices;
pub mod error;
mod geo;
mod health;
pub mod page;
mod readings;
pub mod serve;
pub mod sta;
mod web;

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::config::OpenDataSettings;
use crate::devices::{Device, Visibility};
use crate::metrics::Metrics;
use crate::model::licence_uri;
use crate::registry::Registry;
use crate::store::ApiStore;
use error::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Whether the message input (broker connection or embedded listener) takes messages.
    pub input: Arc<crate::status::InputStatus>,
    pub store: Arc<dyn ApiStore>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Most points in one `/v1/readings` or `/v1/aggregates` response.
    pub max_points: usize,
    /// Publisher, licences and base URL for the catalogue.
    pub open_data: Arc<OpenDataSettings>,
    /// Tokens, audit log and the replay path of the operator API (`/v1/admin/`).
    pub admin: Arc<admin::AdminState>,
    /// Citizen sensors: settings and the ingest queue their pushes go through.
    pub citizens: Arc<citizens::CitizenState>,
    /// The public page at `/`.
    pub page: Arc<crate::config::PageSettings>,
}

/// The OpenAPI document of these routes.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// All routes.
pub fn router(state: AppState) -> Router {
    let open = Router::new()
        .route("/v1/devices", get(devices::list))
        .route("/v1/devices/{id}/latest", get(devices::latest))
        .route("/v1/readings", get(readings::series))
        .route("/v1/aggregates", get(aggregates::aggregates))
        .route("/v1/latest", get(geo::latest))
        .route("/v1/catalog", get(catalog::catalog))
        .route("/openapi.json", get(openapi))
        .merge(sta::router())
        // Inside the ETag: each encoding of a body is its own representation with its own tag.
        .layer(web::compression())
        .layer(axum::middleware::from_fn(cache::etag))
        .layer(axum::middleware::from_fn_with_state(state.clone(), web::licence));
    let ops = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .layer(web::compression());
    let public = Router::new().merge(open).merge(ops).layer(web::cors(&state.open_data.cors_origins));
    Router::new()
        .merge(admin::router(state.clone()))
        .merge(citizens::router())
        .merge(page::router().layer(web::compression()))
        .merge(public)
        .with_state(state)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

/// `Link: <licence>; rel="license"` (RFC 8288), so even a CSV download says its licence.
/// Called once per licence when an answer mixes devices of several.
fn licence_link(response: &mut Response, licence: &str) {
    let target = licence_uri(licence).unwrap_or(licence);
    if let Ok(v) = HeaderValue::from_str(&format!("<{target}>; rel=\"license\"")) {
        response.headers_mut().append(header::LINK, v);
    }
}

/// The distinct licences of the open devices, in a fixed order.
fn open_licences(devices: &crate::devices::DeviceRegistry) -> std::collections::BTreeSet<String> {
    devices.iter().filter(|d| d.visibility == Visibility::Open).map(|d| d.licence.clone()).collect()
}

/// `Content-Disposition: attachment` with a file name, so a CSV link saves as a named file.
fn download_as(response: &mut Response, file_name: &str) {
    let safe: String =
        file_name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
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

/// A time query parameter; the 400 names the parameter and shows the expected form.
fn parse_time(name: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(v).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        ApiError::BadRequest(format!("{name}: expected an RFC 3339 time such as 2026-11-25T10:00:00Z, got {v:?} ({e})"))
    })
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
