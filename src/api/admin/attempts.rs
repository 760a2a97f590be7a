//! Every admin request is an audited attempt: written to the audit log before anything is
//! acted on, and again with its outcome — refusals (401, 404, 409, 422, 429) and failures
//! (500, a handler that panicked) included.
//!
//! The "before" entry is synced before the handler runs, so even a request that brings the
//! process down (a codec that crashes it) is on record. If the log cannot be written, a
//! request that would change something is refused (503) instead of acting unrecorded.
//! Requests refused before any token check that cost an attacker nothing (no token at all,
//! or over the failure limit) are recorded at most once per client, route and minute, with the count
//! of those left out, so a flood of them can't fill the disk. Tokens never appear: the actor
//! is the token's configured name, the target the request's path without its query.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AdminError, AdminState};
use crate::api::AppState;
use crate::audit::AuditEntry;

/// Who an attempt is recorded under before a token was accepted.
const NO_OPERATOR: &str = "-";
/// One record per client and kind of free refusal in this window.
const FREE_REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Clients whose free refusals are remembered; past this the memory starts over.
const MAX_TRACKED: usize = 10_000;

/// The error message of an admin answer, for the audit log (set by [`AdminError`]'s response).
#[derive(Debug, Clone)]
pub struct AuditNote(pub String);

/// A client address, an answer's status and a route.
type RefusalKey = (String, u16, String);

/// Free refusals per (client, status, route): when one was last recorded, and how many since were not.
#[derive(Default)]
pub struct FreeRefusals(Mutex<HashMap<RefusalKey, (Instant, u64)>>);

impl FreeRefusals {
    /// `Some(left out since the last record)` if this refusal is to be recorded.
    fn admit(&self, client: &str, status: StatusCode, action: &str) -> Option<u64> {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_TRACKED {
            seen.clear();
        }
        let now = Instant::now();
        let key = (client.to_owned(), status.as_u16(), action.to_owned());
        match seen.get_mut(&key) {
            Some((last, skipped)) if now.duration_since(*last) < FREE_REFUSAL_WINDOW => {
                *skipped += 1;
                None
            }
            Some((last, skipped)) => {
                let left_out = *skipped;
                (*last, *skipped) = (now, 0);
                Some(left_out)
            }
            None => {
                seen.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// Write an entry from async code (the write syncs to disk); `false` if it could not be written.
async fn record(state: &AppState, entry: AuditEntry) -> bool {
    let admin = state.admin.clone();
    tokio::task::spawn_blocking(move || match admin.audit.record(entry.clone()) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, entry = %serde_json::to_string(&entry).unwrap_or_default(), "audit log write failed");
            false
        }
    })
    .await
    .unwrap_or(false)
}

/// "ok" for a success, else the status and what the answer said.
fn outcome_of(response: &Response) -> String {
    let status = response.status();
    if status.is_success() {
        return "ok".to_owned();
    }
    match response.extensions().get::<AuditNote>() {
        Some(note) => format!("{}: {}", status.as_u16(), note.0),
        None => status.as_u16().to_string(),
    }
}

/// Authenticate, record the attempt, run the handler, record its outcome.
pub async fn audited(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    // Present when served with connect info (the gateway); absent in router-only tests.
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let client_text = client.map(|c| c.to_string()).unwrap_or_else(|| "unknown".to_owned());
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let method = request.method().clone();
    let action = format!("{method} {}", route.as_deref().unwrap_or("?"));
    let target = request.uri().path().to_owned();
    let operator = match state.admin.tokens.authenticate(client, request.headers()).await {
        Ok(operator) => operator,
        Err(e) => {
            let response = e.into_response();
            let status = response.status();
            // A wrong token counts against the client's limit, so each one is recorded; no
            // token at all and refusals over the limit are free to send, so they are sampled.
            let free = status == StatusCode::TOO_MANY_REQUESTS
                || (status == StatusCode::UNAUTHORIZED && !request.headers().contains_key(axum::http::header::AUTHORIZATION));
            let left_out = if free { state.admin.free_refusals.admit(&client_text, status, &action) } else { Some(0) };
            if let Some(left_out) = left_out {
                let mut entry = AuditEntry::new(NO_OPERATOR, &client_text, &action, &target).outcome(outcome_of(&response));
                if left_out > 0 {
                    entry = entry.detail(json!({ "same_refusals_not_recorded": left_out }));
                }
                record(&state, entry).await;
            }
            return response;
        }
    };
    let attempt = AdminState::entry(&operator, &action, &target).outcome("attempt");
    if !record(&state, attempt).await && method != Method::GET {
        let refused = AdminError::Unavailable("the audit log cannot be written; nothing was changed".into()).into_response();
        return refused;
    }
    request.extensions_mut().insert(operator.clone());
    let response = next.run(request).await;
    let entry = AdminState::entry(&operator, &action, &target).outcome(outcome_of(&response));
    record(&state, entry.detail(json!({ "status": response.status().as_u16() }))).await;
    response
}
