//! `/v1/admin/devices`: an operator's devices — list, show, create, update, open/internal.
//!
//! Every change goes to the devices file first (see [`super::devices_file`]): the new file
//! is checked whole, exactly as a load would check it, written atomically, and only then
//! swapped into the running registry. Ids are global (they are URL and store keys), so
//! creating a device with an id that is taken is refused whoever owns it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::devices_file::{self, DevicesFile};
use super::{blocking, AdminError, AdminState, Operator};
use crate::api::{rfc3339, AppState};
use crate::devices::{Device, DeviceRegistry, DevicesError, Visibility};
use crate::registry::Registry;

/// The one answer for a device that does not exist and one of another department.
fn not_found() -> AdminError {
    AdminError::NotFound("no device with this id".into())
}

/// The device with this id, if this operator may see it.
fn visible(registry: &DeviceRegistry, op: &Operator, id: &str) -> Result<Arc<Device>, AdminError> {
    registry.get(id).filter(|d| op.sees(&d.owner)).cloned().ok_or_else(not_found)
}

fn describe(state: &AppState, device: &Device) -> Result<Value, AdminError> {
    let mut value = serde_json::to_value(device).map_err(|e| AdminError::Internal(e.to_string()))?;
    let last_seen = state.store.last_seen(&device.id)?.map(rfc3339);
    if let Some(map) = value.as_object_mut() {
        map.insert("last_seen".into(), json!(last_seen));
    }
    Ok(value)
}

/// `GET /v1/admin/devices`: every device of the operator's departments, open and internal,
/// with every key of its entry and when it was last heard from.
pub async fn list(State(state): State<AppState>, Extension(op): Extension<Operator>) -> Result<Json<Value>, AdminError> {
    blocking(move || {
        let devices = state.registry.devices();
        let entries = devices.iter().filter(|d| op.sees(&d.owner)).map(|d| describe(&state, d)).collect::<Result<Vec<_>, _>>()?;
        Ok(Json(json!({ "devices": entries })))
    })
    .await
}

/// `GET /v1/admin/devices/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    blocking(move || {
        let device = visible(&state.registry.devices(), &op, &id)?;
        Ok(Json(describe(&state, &device)?))
    })
    .await
}

fn parse_device(body: &[u8]) -> Result<Device, AdminError> {
    let device: Device = serde_json::from_slice(body)
        .map_err(|e| AdminError::BadRequest(format!("body: expected a device entry as JSON: {e}")))?;
    crate::model::DeviceId::parse(device.id.as_str()).map_err(|e| AdminError::BadRequest(format!("id: {e}")))?;
    Ok(device)
}

fn check_owner(op: &Operator, device: &Device) -> Result<(), AdminError> {
    if op.sees(&device.owner) {
        Ok(())
    } else {
        Err(AdminError::BadRequest(format!("owner: {:?} is not one of your departments", device.owner)))
    }
}

/// `POST /v1/admin/devices`: add a device (JSON, the keys of a `[[device]]` entry).
pub async fn create(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), AdminError> {
    let device = parse_device(&body)?;
    check_owner(&op, &device)?;
    let json = blocking(move || change(&state, &op, "device.create", device, Expect::New)).await?;
    Ok((StatusCode::CREATED, json))
}

/// `PUT /v1/admin/devices/{id}`: replace a device's entry (JSON, all its keys). It may move
/// to another department only among the operator's own.
pub async fn update(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    visible(&state.registry.devices(), &op, &id)?;
    let device = parse_device(&body)?;
    if device.id.as_str() != id {
        return Err(AdminError::BadRequest(format!(
            "id: the body's id {:?} differs from the URL's; ids can't be changed",
            device.id.as_str()
        )));
    }
    check_owner(&op, &device)?;
    blocking(move || change(&state, &op, "device.update", device, Expect::Existing)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VisibilityChange {
    visibility: Visibility,
}

/// `PUT /v1/admin/devices/{id}/visibility` with `{"visibility": "open"|"internal"}`: publish
/// a device in the open API, or take it out.
pub async fn set_visibility(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    let current = visible(&state.registry.devices(), &op, &id)?;
    let change_to: VisibilityChange = serde_json::from_slice(&body)
        .map_err(|e| AdminError::BadRequest(format!("body: expected {{\"visibility\": \"open\" or \"internal\"}}: {e}")))?;
    let mut device = (*current).clone();
    device.visibility = change_to.visibility;
    blocking(move || change(&state, &op, "device.visibility", device, Expect::Existing)).await
}

#[derive(PartialEq)]
enum Expect {
    New,
    Existing,
}

/// Check the devices file with `device` added or updated, write it, swap it in, audit it.
fn change(state: &AppState, op: &Operator, action: &str, device: Device, expect: Expect) -> Result<Json<Value>, AdminError> {
    let admin = &state.admin;
    let _files = admin.files.lock().unwrap_or_else(|p| p.into_inner());
    let path = &admin.settings.devices.file;
    let profiles = state.registry.profiles();
    // The file as it is now: if it has problems (a hand edit in progress), don't build on it.
    let broken = |detail: String| {
        tracing::error!(problem = %crate::model::Escaped(&detail), "devices file can't be changed through the admin API");
        AdminError::Conflict(
            "the devices file has problems (see the gateway's log); it must be fixed before it can be changed here".into(),
        )
    };
    let mut file = DevicesFile::read(path).map_err(|e| broken(e.to_string()))?;
    let before = parse(admin, &file.text(), &profiles).map_err(|errors| broken(errors.join("; ")))?;
    let id = device.id.as_str().to_owned();
    let old = before.get(&id).cloned();
    match (&expect, &old) {
        (Expect::New, Some(_)) => return Err(AdminError::Conflict(format!("the id {id:?} is taken"))),
        (Expect::Existing, None) => return Err(not_found()),
        (Expect::Existing, Some(d)) if !op.sees(&d.owner) => return Err(not_found()),
        _ => {}
    }
    file.upsert(&device).map_err(|e| AdminError::Internal(e.to_string()))?;
    let text = file.text();
    let detail = json!({ "before": old.as_deref(), "after": &device });
    let after = match parse_checked(admin, &text, &profiles) {
        Ok(r) => r,
        Err(errors) => {
            let problems = shown_problems(&errors, &before, op, &id);
            admin.audit.record_or_log(
                AdminState::entry(op, action, &id)
                    .outcome("refused: the device has problems")
                    .detail(json!({ "problems": &problems, "after": &device })),
            );
            return Err(AdminError::Invalid { message: format!("device {id:?} has problems; nothing was changed"), problems });
        }
    };
    devices_file::write_atomically(path, &text).map_err(|e| AdminError::Internal(e.to_string()))?;
    swap_devices(&state.registry, after);
    admin.audit.record_or_log(AdminState::entry(op, action, &id).detail(detail));
    tracing::info!(device = %id, by = %op.name, action, "device changed through the admin API");
    let now = state.registry.devices();
    let changed = now.get(&id).ok_or_else(|| AdminError::Internal(format!("device {id} missing after the change")))?;
    Ok(Json(describe(state, changed)?))
}

/// The same checks as `registry::load`, on the file's new text.
fn parse(admin: &AdminState, text: &str, profiles: &crate::profiles::ProfileSet) -> Result<DeviceRegistry, Vec<String>> {
    parse_checked(admin, text, profiles).map_err(|errors| errors.iter().map(|e| e.to_string()).collect())
}

fn parse_checked(
    admin: &AdminState,
    text: &str,
    profiles: &crate::profiles::ProfileSet,
) -> Result<DeviceRegistry, Vec<DevicesError>> {
    DeviceRegistry::parse(&admin.settings.devices.file, text, |p| profiles.get(p).is_some())
        .map(|d| d.with_quality(Arc::new(admin.settings.quality.clone())))
}

/// The problems as the operator may see them: a DevEUI or network id shared with a device of
/// another department is said to be taken without naming that device (ids don't leak).
fn shown_problems(errors: &[DevicesError], before: &DeviceRegistry, op: &Operator, changed: &str) -> Vec<String> {
    let sees = |id: &str| id == changed || before.get(id).is_some_and(|d| op.sees(&d.owner));
    errors
        .iter()
        .map(|e| match e {
            DevicesError::Taken { id, field, value, other, other_field, .. } if !(sees(id) && sees(other)) => {
                let mine = if sees(id) { id } else { other };
                let (field, other_field) = if sees(id) { (field, other_field) } else { (other_field, field) };
                format!(
                    "device {mine:?}: {field}: {value} is already used by a device of another department (as its {other_field}); each device needs its own"
                )
            }
            _ => e.to_string(),
        })
        .collect()
}

fn swap_devices(registry: &Registry, devices: DeviceRegistry) {
    registry.replace_devices(devices);
}
