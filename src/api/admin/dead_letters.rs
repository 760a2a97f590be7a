//! `/v1/admin/dead-letters`: find, inspect, replay and delete the messages that could not be read.
//!
//! A dead letter belongs to the department of its device — the device it named, or the one
//! its message names now (a device registered after the message came). Letters of no known
//! device are seen only by all-departments tokens. The work is the replay service's
//! ([`crate::replay`], shared with `messnetz dead-letters`): a replay goes through the ingest
//! path and lands exactly once. Here: the token's scope, the answers, the audit.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{blocking, AdminError, AdminState, Operator};
use crate::api::{rfc3339, AppState};
use crate::devices::Device;
use crate::replay::DeadLetterFilter;
use crate::replay::{DeadLetters, Selection};
use crate::store::{DeadLetter, ReplayOutcome};

/// Most letters one list answer holds.
const MAX_LIMIT: usize = 1000;
/// Most letters one bulk replay takes; the answer says when more are left.
const MAX_REPLAY: usize = 10_000;
/// Most letters looked at to fill one page of a filtered list.
const MAX_SCAN: usize = 100_000;

fn not_found() -> AdminError {
    AdminError::NotFound("no dead letter with this id".into())
}

/// May the operator see a letter of this device? Letters of no known device: only
/// all-departments tokens.
fn visible_to(op: &Operator) -> impl Fn(Option<&Device>) -> bool + '_ {
    move |device| op.sees_all() || device.is_some_and(|d| op.sees(&d.owner))
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

fn filter_from(query: &HashMap<String, String>) -> Result<DeadLetterFilter, AdminError> {
    Ok(DeadLetterFilter {
        device: query.get("device").filter(|d| !d.is_empty()).cloned(),
        reason: query.get("reason").filter(|r| !r.is_empty()).cloned(),
        received_before: query.get("received_before").map(|t| time(t)).transpose()?,
    })
}

fn time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, AdminError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|_| AdminError::BadRequest(format!("received_before: expected an RFC 3339 time, got {text:?}")))
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
    let filter = filter_from(&query)?;
    let after = number(&query, "after", 0)?;
    let limit = (number(&query, "limit", 100)? as usize).clamp(1, MAX_LIMIT);
    blocking(move || {
        let devices = state.registry.devices();
        let (found, next) = DeadLetters::new(&*state.store, &devices).list(&filter, after, limit, MAX_SCAN, &visible_to(&op))?;
        let shown: Vec<Value> = found.iter().map(|f| summary(&f.letter, f.device.as_deref())).collect();
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
        let devices = state.registry.devices();
        let found = DeadLetters::new(&*state.store, &devices).get(id, &visible_to(&op))?.ok_or_else(not_found)?;
        let (letter, device) = (found.letter, found.device);
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
    let outcome = state.admin.replayer.replay(letter)?;
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
        let devices = state.registry.devices();
        let found = DeadLetters::new(&*state.store, &devices).get(id, &visible_to(&op))?.ok_or_else(not_found)?;
        match replay(&state, &op, &found.letter)? {
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
    /// RFC 3339: only letters received before this time.
    received_before: Option<String>,
    #[serde(default)]
    all: bool,
}

impl ReplayRequest {
    /// Which letters the request names: ids, a filter, or all. Names none: 400.
    fn parse(body: &[u8]) -> Result<Selection, AdminError> {
        let request: ReplayRequest = serde_json::from_slice(body).map_err(|e| {
            AdminError::BadRequest(format!(
                "body: expected {{\"ids\": [...]}}, {{\"device\": ..., \"reason\": ..., \"received_before\": ...}} or {{\"all\": true}}: {e}"
            ))
        })?;
        let filter = DeadLetterFilter {
            device: request.device,
            reason: request.reason,
            received_before: request.received_before.as_deref().map(time).transpose()?,
        };
        if request.ids.is_empty() && filter.is_empty() && !request.all {
            return Err(AdminError::BadRequest(
                "body: say which letters: ids, device, reason, received_before, or all = true".into(),
            ));
        }
        Ok(if request.ids.is_empty() { Selection::Matching(filter) } else { Selection::Ids(request.ids) })
    }
}

/// `POST /v1/admin/dead-letters/replay` with `{"ids": [..]}`, `{"device": "ID", "reason":
/// "TEXT"}` (either or both) or `{"all": true}`: replay every matching letter of the
/// operator's departments, oldest first. Answers one result per letter.
pub async fn replay_many(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    let selection = ReplayRequest::parse(&body)?;
    blocking(move || {
        let devices = state.registry.devices();
        // `Err(id)`: a requested id that is not there, or not the operator's: both "gone".
        let picked = DeadLetters::new(&*state.store, &devices)
            .pick(&selection, MAX_REPLAY, &visible_to(&op))
            .map_err(|e| AdminError::from(e.into_store()))?;
        let more = picked.more;
        let mut results = Vec::new();
        for letter in &picked.letters {
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

/// `DELETE /v1/admin/dead-letters/{id}`: delete one letter for good (audited as
/// `dead_letter.delete`, with the letter's reason and topic). Not there, or not the
/// operator's: 404.
pub async fn delete_one(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let id = letter_id(&id)?;
    blocking(move || {
        let devices = state.registry.devices();
        let letters = DeadLetters::new(&*state.store, &devices);
        let found = letters.get(id, &visible_to(&op))?.ok_or_else(not_found)?;
        let summary = summary(&found.letter, found.device.as_deref());
        let deleted =
            letters.delete(&Selection::Ids(vec![id]), 1, &visible_to(&op)).map_err(|e| AdminError::from(e.into_store()))?;
        if deleted.ids.is_empty() {
            return Err(not_found()); // deleted or replayed meanwhile
        }
        state.admin.audit.record_or_log(AdminState::entry(&op, "dead_letter.delete", &id.to_string()).detail(summary));
        Ok(Json(json!({ "id": id, "deleted": true })))
    })
    .await
}

/// `POST /v1/admin/dead-letters/purge` with `{"ids": [..]}`, a filter (`device`, `reason`,
/// `received_before`, any of them) or `{"all": true}`: delete the matching letters of the
/// operator's departments, at most 10,000 per request (`more` says whether others are left),
/// in one transaction, audited as `dead_letter.purge` with the selection and the ids.
pub async fn purge(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    let selection = ReplayRequest::parse(&body)?;
    let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    blocking(move || {
        let devices = state.registry.devices();
        let deleted = DeadLetters::new(&*state.store, &devices)
            .delete(&selection, MAX_REPLAY, &visible_to(&op))
            .map_err(|e| AdminError::from(e.into_store()))?;
        let body = json!({ "deleted": deleted.ids.len(), "ids": deleted.ids, "gone": deleted.gone, "more": deleted.more });
        state.admin.audit.record_or_log(
            AdminState::entry(&op, "dead_letter.purge", "").detail(json!({ "selection": asked, "deleted": body["ids"] })),
        );
        Ok(Json(body))
    })
    .await
}
