//! `/v1/admin/dead-letters`: find, inspect and replay the messages that could not be read.
//!
//! A dead letter belongs to the department of its device — the device it named, or the one
//! its message names now (a device registered after the message came). Letters of no known
//! device are seen only by all-departments tokens. A replay goes through the ingest path
//! ([`crate::ingest::Ingest::replay`]) and lands exactly once.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{blocking, AdminError, AdminState, Operator};
use crate::api::{rfc3339, AppState};
use crate::devices::{Device, DeviceRegistry};
use crate::store::{DeadLetter, DeadLetterFilter, ReplayOutcome};

/// Most letters one list answer holds.
const MAX_LIMIT: usize = 1000;
/// Most letters one bulk replay takes; the answer says when more are left.
const MAX_REPLAY: usize = 10_000;
/// Most letters looked at to fill one page of a filtered list.
const MAX_SCAN: usize = 100_000;

fn not_found() -> AdminError {
    AdminError::NotFound("no dead letter with this id".into())
}

/// The letter's device, if the operator may see the letter; `Err` if not.
fn owned(letter: &DeadLetter, devices: &DeviceRegistry, op: &Operator) -> Result<Option<Arc<Device>>, ()> {
    let device = letter.device_in(devices);
    match &device {
        _ if op.sees_all() => Ok(device),
        Some(d) if op.sees(&d.owner) => Ok(device),
        _ => Err(()),
    }
}

fn summary(letter: &DeadLetter, device: Option<&Device>) -> Value {
    json!({
        "id": letter.id,
        "received_at": rfc3339(letter.received_at),
        "topic": letter.topic,
        "format": letter.format,
        "device": device.map(|d| d.id.as_str()).or(letter.device.as_deref()),
        "reason": letter.reason,
        "payload_bytes": letter.payload.len(),
    })
}

fn filter_from(query: &HashMap<String, String>) -> DeadLetterFilter {
    DeadLetterFilter {
        device: query.get("device").filter(|d| !d.is_empty()).cloned(),
        reason: query.get("reason").filter(|r| !r.is_empty()).cloned(),
    }
}

fn number(query: &HashMap<String, String>, key: &str, default: u64) -> Result<u64, AdminError> {
    match query.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| AdminError::BadRequest(format!("{key}: expected a whole number, got {v:?}"))),
    }
}

/// `GET /v1/admin/dead-letters?device=ID&reason=TEXT&after=ID&limit=N`: the operator's dead
/// letters, oldest first; `next` is the `after` of the next page.
pub async fn list(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AdminError> {
    let filter = filter_from(&query);
    let after = number(&query, "after", 0)?;
    let limit = (number(&query, "limit", 100)? as usize).clamp(1, MAX_LIMIT);
    blocking(move || {
        let devices = state.registry.devices();
        let mut shown = Vec::new();
        let (_, next) =
            state.store.dead_letters_matching(after, limit, MAX_SCAN, &mut |letter| match owned(letter, &devices, &op) {
                Ok(device) if filter.matches(letter, device.as_deref()) => {
                    shown.push(summary(letter, device.as_deref()));
                    true
                }
                _ => false,
            })?;
        Ok(Json(json!({ "dead_letters": shown, "next": next })))
    })
    .await
}

/// `GET /v1/admin/dead-letters/{id}`: one letter with its message (base64, and as text when
/// it is UTF-8).
pub async fn show(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let id = letter_id(&id)?;
    blocking(move || {
        let letter = state.store.dead_letter(id)?.ok_or_else(not_found)?;
        let device = owned(&letter, &state.registry.devices(), &op).map_err(|_| not_found())?;
        let mut body = summary(&letter, device.as_deref());
        body["payload"] = json!(base64::engine::general_purpose::STANDARD.encode(&letter.payload));
        body["payload_text"] = json!(std::str::from_utf8(&letter.payload).ok());
        Ok(Json(body))
    })
    .await
}

/// Ids are numbers; anything else names no letter (and gets the same 404 as a missing one).
fn letter_id(text: &str) -> Result<u64, AdminError> {
    text.parse().map_err(|_| not_found())
}

fn outcome_json(id: u64, outcome: &ReplayOutcome) -> Value {
    let mut v = json!({ "id": id, "outcome": outcome.as_str() });
    match outcome {
        ReplayOutcome::Stored { device, readings } => {
            v["device"] = json!(device);
            v["readings"] = json!(readings);
        }
        ReplayOutcome::Failed { reason } => v["reason"] = json!(reason),
        ReplayOutcome::Refused { why } => v["reason"] = json!(why),
        ReplayOutcome::Gone => {}
    }
    v
}

/// Replay one letter through the ingest path and audit it.
fn replay(state: &AppState, op: &Operator, letter: &DeadLetter) -> Result<ReplayOutcome, AdminError> {
    let outcome = match letter.message_format(&state.admin.settings.mqtt.subscriptions) {
        Err(why) => ReplayOutcome::Refused { why },
        Ok(format) => state.admin.ingest.replay(letter, format)?,
    };
    let entry = AdminState::entry(op, "dead_letter.replay", &letter.id.to_string());
    let entry = match &outcome {
        ReplayOutcome::Stored { .. } => entry,
        other => entry.outcome(other.as_str()),
    };
    state.admin.audit.record_or_log(entry.detail(outcome_json(letter.id, &outcome)));
    Ok(outcome)
}

/// `POST /v1/admin/dead-letters/{id}/replay`.
pub async fn replay_one(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let id = letter_id(&id)?;
    blocking(move || {
        let letter = state.store.dead_letter(id)?.ok_or_else(not_found)?;
        owned(&letter, &state.registry.devices(), &op).map_err(|_| not_found())?;
        match replay(&state, &op, &letter)? {
            // Replayed by someone else between reading it and committing: as if it never was.
            ReplayOutcome::Gone => Err(not_found()),
            outcome => Ok(Json(outcome_json(id, &outcome))),
        }
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default)]
    ids: Vec<u64>,
    device: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    all: bool,
}

/// `POST /v1/admin/dead-letters/replay` with `{"ids": [..]}`, `{"device": "ID", "reason":
/// "TEXT"}` (either or both) or `{"all": true}`: replay every matching letter of the
/// operator's departments, oldest first. Answers one result per letter.
pub async fn replay_many(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    let request: ReplayRequest = serde_json::from_slice(&body).map_err(|e| {
        AdminError::BadRequest(format!(
            "body: expected {{\"ids\": [...]}}, {{\"device\": ..., \"reason\": ...}} or {{\"all\": true}}: {e}"
        ))
    })?;
    let filter = DeadLetterFilter { device: request.device.clone(), reason: request.reason.clone() };
    if request.ids.is_empty() && filter.is_empty() && !request.all {
        return Err(AdminError::BadRequest("body: say which letters: ids, device, reason, or all = true".into()));
    }
    blocking(move || {
        let devices = state.registry.devices();
        // `Err(id)`: a requested id that is not there, or not the operator's: both "gone".
        let letters: Vec<Result<DeadLetter, u64>> = if request.ids.is_empty() {
            let (letters, _) = state.store.dead_letters_matching(0, MAX_REPLAY + 1, usize::MAX, &mut |letter| {
                owned(letter, &devices, &op).is_ok_and(|device| filter.matches(letter, device.as_deref()))
            })?;
            letters.into_iter().map(Ok).collect()
        } else {
            let mut found = Vec::new();
            for &id in request.ids.iter().take(MAX_REPLAY) {
                match state.store.dead_letter(id)? {
                    Some(l) if owned(&l, &devices, &op).is_ok() => found.push(Ok(l)),
                    _ => found.push(Err(id)),
                }
            }
            found
        };
        let more = letters.len() > MAX_REPLAY;
        let mut results = Vec::new();
        for letter in letters.iter().take(MAX_REPLAY) {
            results.push(match letter {
                Ok(letter) => outcome_json(letter.id, &replay(&state, &op, letter)?),
                Err(id) => outcome_json(*id, &ReplayOutcome::Gone),
            });
        }
        let stored = results.iter().filter(|r| r["outcome"] == "stored").count();
        Ok(Json(json!({ "replayed": results.len(), "stored": stored, "more": more, "results": results })))
    })
    .await
}
