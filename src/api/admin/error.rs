//! Admin API errors: 401 with `WWW-Authenticate: Bearer`, 429 with `Retry-After`, 4xx that
//! say what was wrong, and a 500 that hides its cause (logged).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::StoreError;

/// What an admin handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No token, or a wrong one.
    #[error("{0}")]
    Unauthorized(String),
    /// Too many wrong tokens from this client in the last minute.
    #[error("too many failed attempts; try again in {retry_after_s} s")]
    TooManyAttempts { retry_after_s: u64 },
    #[error("{0}")]
    BadRequest(String),
    /// Unknown, or belonging to another department: the same answer, so ids don't leak.
    #[error("{0}")]
    NotFound(String),
    /// Allowed only to all-departments tokens (a backup holds every department's data).
    #[error("{0}")]
    Forbidden(String),
    /// The change conflicts with the current state (a taken id, a broken devices file).
    #[error("{0}")]
    Conflict(String),
    /// The change was checked and refused; every problem is listed.
    #[error("{message}")]
    Invalid { message: String, problems: Vec<String> },
    /// The gateway can't do this now (the audit log can't be written).
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Internal(e.to_string())
    }
}

impl From<tokio::task::JoinError> for AdminError {
    fn from(e: tokio::task::JoinError) -> Self {
        AdminError::Internal(e.to_string())
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let retry_after = match &self {
            AdminError::TooManyAttempts { retry_after_s } => Some(*retry_after_s),
            _ => None,
        };
        let (status, body) = match self {
            AdminError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, serde_json::json!({ "error": message })),
            AdminError::TooManyAttempts { .. } => (StatusCode::TOO_MANY_REQUESTS, serde_json::json!({ "error": message })),
            AdminError::BadRequest(_) => (StatusCode::BAD_REQUEST, serde_json::json!({ "error": message })),
            AdminError::NotFound(_) => (StatusCode::NOT_FOUND, serde_json::json!({ "error": message })),
            AdminError::Forbidden(_) => (StatusCode::FORBIDDEN, serde_json::json!({ "error": message })),
            AdminError::Conflict(_) => (StatusCode::CONFLICT, serde_json::json!({ "error": message })),
            AdminError::Invalid { ref problems, .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, serde_json::json!({ "error": message, "problems": problems }))
            }
            AdminError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "error": message })),
            AdminError::Internal(cause) => {
                tracing::error!(cause = %crate::model::Escaped(&cause), "admin request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({ "error": "internal error; the cause is in the gateway's log" }),
                )
            }
        };
        // For the audit log: what the answer said (a 500's cause stays in the gateway's log).
        let note = super::attempts::AuditNote(body["error"].as_str().unwrap_or_default().to_owned());
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(note);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"messnetz-admin\""));
        }
        if let Some(s) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}
