//! API errors: a 4xx says what was wrong with the request; a 500 hides the cause, which is logged.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::StoreError;

/// What a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// The `Accept` header names no representation the route has; the message lists them.
    #[error("{0}")]
    NotAcceptable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::NotAcceptable(m) => (StatusCode::NOT_ACCEPTABLE, m),
            ApiError::Internal(cause) => {
                tracing::error!(cause = %crate::model::Escaped(&cause), "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error; the cause is in the gateway's log".to_owned())
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}
