//! What the citizens' routes answer when something is wrong; a 5xx hides its cause, which is logged.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::StoreError;

/// Errors of `/v1/citizens/`.
#[derive(Debug, thiserror::Error)]
pub enum CitizenError {
    /// `citizens.enabled` is off: the routes answer as if they did not exist.
    #[error("citizen sensors are not enabled on this gateway")]
    Disabled,
    #[error("{0}")]
    Unauthorized(String),
    #[error("body of more than {0} bytes")]
    TooLarge(usize),
    /// The body is no valid push; `dead_letter`: it was stored as a dead letter.
    #[error("{message}")]
    BadRequest { message: String, dead_letter: bool },
    /// Valid JSON that can't become readings (an unknown value type); kept as a dead letter.
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    TooMany(String),
    /// Ingest did not take or commit the message in time (shutdown, a failing store).
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for CitizenError {
    fn from(e: StoreError) -> Self {
        CitizenError::Internal(e.to_string())
    }
}

impl IntoResponse for CitizenError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, body) = match self {
            CitizenError::Disabled => (StatusCode::NOT_FOUND, serde_json::json!({ "error": message })),
            CitizenError::Unauthorized(_) => {
                let body = Json(serde_json::json!({ "error": message }));
                return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer, Basic realm=\"messnetz\"")], body)
                    .into_response();
            }
            CitizenError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, serde_json::json!({ "error": message })),
            CitizenError::BadRequest { dead_letter, .. } => {
                (StatusCode::BAD_REQUEST, serde_json::json!({ "error": message, "dead_letter": dead_letter }))
            }
            CitizenError::Unprocessable(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, serde_json::json!({ "error": message, "dead_letter": true }))
            }
            CitizenError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, serde_json::json!({ "error": message })),
            CitizenError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "error": message })),
            CitizenError::Internal(cause) => {
                tracing::error!(cause = %crate::model::Escaped(&cause), "citizen request failed");
                let body = serde_json::json!({ "error": "internal error; the cause is in the gateway's log" });
                (StatusCode::INTERNAL_SERVER_ERROR, body)
            }
        };
        (status, Json(body)).into_response()
    }
}
