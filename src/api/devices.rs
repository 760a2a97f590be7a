//! `/v1/devices` (the open catalogue) and `/v1/devices/{id}/latest` (newest value per quantity).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::{error::ApiError, licence_link, open_device, rfc3339, round, AppState};

#[derive(Serialize)]
struct CatalogueEntry<'a> {
    id: &'a str,
    name: &'a str,
    profile: &'a str,
    lat: f64,
    lon: f64,
    height_m: Option<f64>,
    district: &'a str,
    owner: &'a str,
    /// `official`, or `citizen` for a sensor a citizen registered.
    source: &'static str,
    licence: &'a str,
    installed: Option<String>,
    last_seen: Option<String>,
    /// Not heard from for longer than its expected interval (or never).
    stale: bool,
}

/// Every open device with its metadata and when it was last heard from; a licence `Link`
/// for each licence among them.
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let devices = state.registry.devices();
    let licences = super::open_licences(&devices);
    let store = state.store.clone();
    let body = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let mut entries = Vec::new();
        let now = chrono::Utc::now();
        for d in devices.iter().filter(|d| d.visibility == crate::devices::Visibility::Open) {
            let seen = store.last_seen(&d.id)?;
            let stale = devices.is_stale(d, seen, now);
            let last_seen = seen.map(rfc3339);
            entries.push(CatalogueEntry {
                id: d.id.as_str(),
                name: &d.name,
                profile: &d.profile,
                lat: d.lat,
                lon: d.lon,
                height_m: d.height_m,
                district: &d.district,
                owner: &d.owner,
                source: d.source.as_str(),
                licence: &d.licence,
                installed: d.installed.map(|i| i.to_string()),
                last_seen,
                stale,
            });
        }
        Ok(json!({ "devices": entries }))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let mut response = Json(body).into_response();
    for l in &licences {
        licence_link(&mut response, l);
    }
    Ok(response)
}

/// The newest reading of each quantity of one open device.
pub async fn latest(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let device = open_device(&state, &id)?;
    let store = state.store.clone();
    let id = device.id.clone();
    let readings =
        tokio::task::spawn_blocking(move || store.latest(&id)).await.map_err(|e| ApiError::Internal(e.to_string()))??;
    let readings: Vec<Value> = readings
        .iter()
        .map(|r| {
            json!({
                "quantity": r.quantity.name(),
                "value": round(r.value),
                "unit": r.quantity.unit(),
                "time": rfc3339(r.time),
                "quality": r.flag.as_str(),
            })
        })
        .collect();
    let mut body = json!({ "device": device.id, "licence": device.licence, "readings": readings });
    // Citizen data says so; official devices keep the documented answer unchanged.
    if device.source == crate::devices::Source::Citizen {
        body["source"] = json!(device.source.as_str());
    }
    let mut response = Json(body).into_response();
    licence_link(&mut response, &device.licence);
    Ok(response)
}
