//! `POST /v1/citizens/sensors` (register) and `DELETE /v1/citizens/sensors/{id}` (remove with
//! all data). Registration takes JSON (answered with JSON) or the public page's form
//! (answered with a page showing the token), so it works without JavaScript.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::error::CitizenError;
use super::{auth, blocking, sync_registry};
use crate::api::page::{self, Lang};
use crate::api::AppState;
use crate::citizens::Registration;

/// Largest registration body; a real one is a few hundred bytes.
const MAX_REGISTRATION_BYTES: usize = 4096;

/// The page's form: every field is text (coordinates may use a decimal comma).
#[derive(Deserialize)]
struct RegistrationForm {
    name: String,
    lat: String,
    lon: String,
    #[serde(default)]
    district: Option<String>,
    #[serde(default)]
    lang: Option<String>,
}

fn number(field: &str, text: &str) -> Result<f64, CitizenError> {
    text.trim().replace(',', ".").parse::<f64>().map_err(|_| CitizenError::BadRequest {
        message: format!("{field}: expected a number in degrees, e.g. 48.137"),
        dead_letter: false,
    })
}

pub async fn register(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, CitizenError> {
    let citizens = state.citizens.clone();
    if !citizens.settings.enabled {
        return Err(CitizenError::Disabled);
    }
    if body.len() > MAX_REGISTRATION_BYTES {
        return Err(CitizenError::TooLarge(MAX_REGISTRATION_BYTES));
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let bad = |message: String| CitizenError::BadRequest { message, dead_letter: false };
    let (registration, lang) = if is_form {
        let form: RegistrationForm = serde_urlencoded::from_bytes(&body).map_err(|e| bad(format!("form: {e}")))?;
        let lang = Lang::parse(form.lang.as_deref());
        let registration = Registration {
            name: form.name,
            lat: number("lat", &form.lat)?,
            lon: number("lon", &form.lon)?,
            district: form.district,
            profile: None,
        };
        (registration, Some(lang))
    } else {
        let registration: Registration =
            serde_json::from_slice(&body).map_err(|e| bad(format!("body: expected {{\"name\", \"lat\", \"lon\"}}: {e}")))?;
        (registration, None)
    };
    let (store, registry, profiles) = (state.store.clone(), state.registry.clone(), state.registry.profiles());
    let (sensor, token) = blocking(move || {
        let _changes = citizens.changes.lock().unwrap_or_else(|p| p.into_inner());
        let pending = store.citizen_sensors()?.iter().filter(|s| !s.approved).count();
        if pending >= citizens.settings.max_pending {
            return Err(CitizenError::TooMany("too many registrations wait for approval; try again later".into()));
        }
        let (sensor, token) = registration
            .into_sensor(&citizens.settings, |p| profiles.get(p).is_some(), Utc::now())
            .map_err(|e| bad(e.to_string()))?;
        store.put_citizen_sensor(&sensor)?;
        sync_registry(&*store, &registry, citizens.settings.clone())?;
        tracing::info!(sensor = %sensor.id, "citizen sensor registered; waits for approval");
        Ok((sensor, token))
    })
    .await?;
    if let Some(lang) = lang {
        return Ok((StatusCode::CREATED, Html(page::registered(lang, &sensor, &token))).into_response());
    }
    let body = json!({
        "id": sensor.id,
        "token": token,
        "approved": false,
        "push_url": "/v1/citizens/push",
        "note": "keep the token: it is shown only now; data is public once an operator approves the sensor",
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, CitizenError> {
    let citizens = state.citizens.clone();
    if !citizens.settings.enabled {
        return Err(CitizenError::Disabled);
    }
    let (store, registry) = (state.store.clone(), state.registry.clone());
    blocking(move || {
        let sensor = auth::sensor(&*store, &headers)?;
        if sensor.id.as_str() != id {
            return Err(CitizenError::Unauthorized("the token is not this sensor's".into()));
        }
        let _changes = citizens.changes.lock().unwrap_or_else(|p| p.into_inner());
        let removed = store.remove_citizen_sensor(&sensor.id)?.unwrap_or_default();
        sync_registry(&*store, &registry, citizens.settings.clone())?;
        tracing::info!(sensor = %sensor.id, readings = removed.readings, "citizen sensor removed by its owner");
        Ok(Json(json!({ "removed": sensor.id, "readings": removed.readings })))
    })
    .await
}
