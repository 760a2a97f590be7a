//! `/v1/admin/profiles`: list the sensor profiles, test one (loaded or uploaded) against its
//! own examples, and upload one.
//!
//! An upload is written to `profiles.dir/<id>.toml` only if it parses, its examples decode
//! as they claim, and the whole set (with every device) then loads; otherwise the old file
//! is put back. Profiles are shared by departments: replacing one that devices of other
//! departments use needs an all-departments token.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::devices_file::write_atomically;
use super::{blocking, AdminError, AdminState, Operator};
use crate::api::AppState;
use crate::profiles::{ExampleMismatch, Profile};

fn not_found() -> AdminError {
    AdminError::NotFound("no profile with this id".into())
}

/// Profile ids name files: the device id alphabet, and no leading dot (hidden files are skipped).
fn file_of(state: &AppState, id: &str) -> Result<std::path::PathBuf, AdminError> {
    crate::model::DeviceId::parse(id)
        .map_err(|e| AdminError::BadRequest(format!("id: {}", e.replace("device id", "profile id"))))?;
    if id.starts_with('.') {
        return Err(AdminError::BadRequest("id: a profile id can't start with a dot".into()));
    }
    Ok(state.admin.settings.profiles.dir.join(format!("{id}.toml")))
}

fn mismatches_json(mismatches: &[ExampleMismatch]) -> Vec<Value> {
    mismatches.iter().map(|m| json!({ "example": m.example, "message": m.message })).collect()
}

fn summary(state: &AppState, op: &Operator, p: &Profile) -> Value {
    let devices = state.registry.devices();
    let used_by = devices.iter().filter(|d| d.profile == p.id() && op.sees(&d.owner)).count();
    json!({
        "id": p.id(),
        "vendor": p.vendor(),
        "model": p.model(),
        "reference": p.reference(),
        "quantities": p.quantities().iter().map(|q| q.name()).collect::<Vec<_>>(),
        "runs_script": p.runs_script(),
        "your_devices": used_by,
    })
}

/// `GET /v1/admin/profiles`: every loaded profile, with how many of the operator's devices use it.
pub async fn list(State(state): State<AppState>, Extension(op): Extension<Operator>) -> Json<Value> {
    let profiles = state.registry.profiles();
    let all: Vec<Value> = profiles.iter().map(|p| summary(&state, &op, p)).collect();
    Json(json!({ "profiles": all }))
}

/// `GET /v1/admin/profiles/{id}`: one profile and its file's text.
pub async fn show(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let profile = state.registry.profiles().get(&id).cloned().ok_or_else(not_found)?;
    let path = file_of(&state, &id)?;
    let text =
        blocking(move || std::fs::read_to_string(&path).map_err(|e| AdminError::Internal(format!("{}: {e}", path.display()))))
            .await?;
    let mut body = summary(&state, &op, &profile);
    body["toml"] = json!(text);
    Ok(Json(body))
}

/// `POST /v1/admin/profiles/{id}/test`: run a profile's examples — the loaded one with an
/// empty body, or the profile file in the body (TOML), which is not saved. The answer is a
/// 200 either way: `ok`, and the problems or mismatching examples.
pub async fn test(
    State(state): State<AppState>,
    Extension(_op): Extension<Operator>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    let path = file_of(&state, &id)?;
    blocking(move || {
        let profile = if body.iter().all(u8::is_ascii_whitespace) {
            state.registry.profiles().get(&id).cloned().ok_or_else(not_found)?
        } else {
            let text = std::str::from_utf8(&body)
                .map_err(|_| AdminError::BadRequest("body: expected a profile file (TOML, UTF-8)".into()))?;
            match Profile::from_toml(&path, text) {
                Ok(p) => std::sync::Arc::new(p),
                Err(errors) => {
                    let problems: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                    return Ok(Json(json!({ "id": id, "ok": false, "problems": problems, "mismatches": [] })));
                }
            }
        };
        let mismatches = profile.check_examples();
        Ok(Json(json!({ "id": id, "ok": mismatches.is_empty(), "problems": [], "mismatches": mismatches_json(&mismatches) })))
    })
    .await
}

/// `PUT /v1/admin/profiles/{id}`: add or replace a profile (the TOML file in the body).
pub async fn upload(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    let path = file_of(&state, &id)?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| AdminError::BadRequest("body: expected a profile file (TOML, UTF-8)".into()))?;
    blocking(move || {
        let admin = &state.admin;
        let refuse = |message: String, problems: Vec<String>| {
            admin.audit.record_or_log(
                AdminState::entry(&op, "profile.upload", &id)
                    .outcome(format!("refused: {message}"))
                    .detail(json!({ "problems": &problems })),
            );
            AdminError::Invalid { message, problems }
        };
        let profile = Profile::from_toml(&path, &text).map_err(|errors| {
            refuse(format!("profile {id:?} has problems; nothing was changed"), errors.iter().map(|e| e.to_string()).collect())
        })?;
        let mismatches = profile.check_examples();
        if !mismatches.is_empty() {
            return Err(refuse(
                format!("profile {id:?}: examples do not decode as stated; nothing was changed"),
                mismatches.iter().map(|m| m.to_string()).collect(),
            ));
        }
        let _files = admin.files.lock().unwrap_or_else(|p| p.into_inner());
        let devices = state.registry.devices();
        if !op.sees_all() && devices.iter().any(|d| d.profile == id && !op.sees(&d.owner)) {
            return Err(AdminError::Conflict(format!(
                "profile {id:?} is also used by other departments' devices; replacing it needs a token for all departments"
            )));
        }
        let old = std::fs::read_to_string(&path).ok();
        write_atomically(&path, &text).map_err(|e| AdminError::Internal(e.to_string()))?;
        match crate::registry::load(&admin.settings) {
            Ok((profiles, devices)) => state.registry.replace(profiles, devices),
            Err(problems) => {
                // Put the previous state back: the running set stays, and so do the files.
                let restored = match &old {
                    Some(old) => write_atomically(&path, old).map_err(|e| e.to_string()),
                    None => std::fs::remove_file(&path).map_err(|e| e.to_string()),
                };
                if let Err(e) = restored {
                    tracing::error!(file = %path.display(), error = %e, "cannot restore the profile file after a refused upload");
                }
                for p in &problems {
                    tracing::error!(problem = %crate::model::Escaped(p), "profile upload refused: the set would not load");
                }
                let shown = if op.sees_all() { problems } else { vec!["details are in the gateway's log".to_owned()] };
                return Err(refuse(
                    format!("with profile {id:?} the devices and profiles would not load; nothing was changed"),
                    shown,
                ));
            }
        }
        admin.audit.record_or_log(AdminState::entry(&op, "profile.upload", &id).detail(json!({ "created": old.is_none() })));
        tracing::info!(profile = %id, by = %op.name, "profile uploaded through the admin API");
        let loaded = state
            .registry
            .profiles()
            .get(&id)
            .cloned()
            .ok_or_else(|| AdminError::Internal(format!("profile {id} missing after upload")))?;
        Ok(Json(summary(&state, &op, &loaded)))
    })
    .await
}
