//! `/v1/admin/citizens`: the operator's side of citizen sensors — list the registrations,
//! approve one (its data becomes public), remove one with all its data.
//!
//! Citizen sensors are filed under the department [`crate::citizens::OWNER`]: a token needs
//! that owner (or `*`) to see them; to any other token they don't exist (404).

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::{blocking, AdminError, AdminState, Operator};
use crate::api::citizens::sync_registry;
use crate::api::{rfc3339, AppState};
use crate::citizens::OWNER;
use crate::model::DeviceId;

fn not_found() -> AdminError {
    AdminError::NotFound("no citizen sensor with this id".into())
}

fn check(op: &Operator) -> Result<(), AdminError> {
    if op.sees(OWNER) {
        Ok(())
    } else {
        Err(not_found())
    }
}

/// `GET /v1/admin/citizens`: every registration, approved or waiting, without token hashes.
pub async fn list(State(state): State<AppState>, Extension(op): Extension<Operator>) -> Result<Json<Value>, AdminError> {
    if !op.sees(OWNER) {
        return Ok(Json(json!({ "sensors": [] })));
    }
    blocking(move || {
        let mut out = Vec::new();
        for s in state.store.citizen_sensors()? {
            let last_seen = state.store.last_seen(&s.id)?.map(rfc3339);
            out.push(json!({
                "id": s.id, "name": s.name, "lat": s.lat, "lon": s.lon, "district": s.district,
                "approved": s.approved, "registered_at": rfc3339(s.registered_at), "profile": s.profile,
                "licence": s.licence, "last_seen": last_seen,
            }));
        }
        Ok(Json(json!({ "sensors": out })))
    })
    .await
}

/// `POST /v1/admin/citizens/{id}/approve`: publish the sensor's data from now on.
pub async fn approve(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    check(&op)?;
    blocking(move || {
        let id = DeviceId::parse(&id).map_err(|_| not_found())?;
        let citizens = state.citizens.clone();
        let _changes = citizens.changes.lock().unwrap_or_else(|p| p.into_inner());
        let mut sensor = state.store.citizen_sensor(&id)?.ok_or_else(not_found)?;
        sensor.approved = true;
        state.store.put_citizen_sensor(&sensor)?;
        sync_registry(&*state.store, &state.registry, citizens.settings.clone())?;
        state.admin.audit.record_or_log(AdminState::entry(&op, "citizen.approve", id.as_str()));
        Ok(Json(json!({ "id": id, "approved": true })))
    })
    .await
}

/// `DELETE /v1/admin/citizens/{id}`: remove the sensor and everything stored of it.
pub async fn remove(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    check(&op)?;
    blocking(move || {
        let id = DeviceId::parse(&id).map_err(|_| not_found())?;
        let citizens = state.citizens.clone();
        let _changes = citizens.changes.lock().unwrap_or_else(|p| p.into_inner());
        let removed = state.store.remove_citizen_sensor(&id)?.ok_or_else(not_found)?;
        sync_registry(&*state.store, &state.registry, citizens.settings.clone())?;
        let detail = json!({ "readings": removed.readings });
        state.admin.audit.record_or_log(AdminState::entry(&op, "citizen.remove", id.as_str()).detail(detail.clone()));
        Ok(Json(json!({ "removed": id, "readings": removed.readings })))
    })
    .await
}
