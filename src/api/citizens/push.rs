//! `POST /v1/citizens/push`: the sensor.community firmware's custom-API push.
//!
//! The firmware POSTs one JSON body per sensor (`esp8266id`, `software_version`,
//! `sensordatavalues`) with the headers `X-Sensor` (`esp8266-<chip id>`) and `X-Pin` (which
//! sensor port). The body goes through the ingest stage like an MQTT message, on the topic
//! `citizens/<sensor id>/sensor-community`; the answer waits for its commit:
//!
//! - 200: stored; 400: not JSON of this shape (kept as a dead letter); 422: a value type
//!   without a mapping, or anything else ingest refused (kept as a dead letter, naming why); 401: no or a wrong token;
//!   413: body over `citizens.max_body_bytes` (not stored); 503: not committed in time.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};
use tracing::debug;

use super::error::CitizenError;
use super::{auth, blocking};
use crate::api::AppState;
use crate::config::MessageFormat;
use crate::sources::reply::ReplyHandle;
use crate::sources::{sensor_community, Ack, FormatError, Inbound};

/// How long a push waits for room in the ingest queue and then for its commit.
const ENQUEUE_WAIT: Duration = Duration::from_secs(5);
const COMMIT_WAIT: Duration = Duration::from_secs(30);

pub async fn push(State(state): State<AppState>, request: Request) -> Result<Json<Value>, CitizenError> {
    let citizens = state.citizens.clone();
    if !citizens.settings.enabled {
        return Err(CitizenError::Disabled);
    }
    let Some(input) = citizens.input.clone() else {
        return Err(CitizenError::Unavailable("this gateway takes no pushes (no ingest stage runs)".into()));
    };
    let (parts, body) = request.into_parts();
    // Who it is first: an unknown client's body is not read.
    let store = state.store.clone();
    let headers = parts.headers.clone();
    let registry = state.registry.clone();
    let changes = citizens.clone();
    let sensor = blocking(move || {
        let sensor = auth::sensor(&*store, &headers)?;
        // Registered through another replica sharing the store, moments ago: known here now.
        if registry.devices().get(sensor.id.as_str()).is_none() {
            let _changing = changes.changes.lock().unwrap_or_else(|e| e.into_inner());
            super::sync_registry(&*store, &registry, changes.settings.clone())?;
        }
        Ok(sensor)
    })
    .await?;
    let limit = citizens.settings.max_body_bytes;
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(CitizenError::TooLarge(limit));
    }
    let body = axum::body::to_bytes(Body::new(body), limit).await.map_err(|_| CitizenError::TooLarge(limit))?;
    debug!(
        sensor = %sensor.id,
        x_sensor = %crate::model::Escaped(parts.headers.get("x-sensor").and_then(|v| v.to_str().ok()).unwrap_or("-")),
        x_pin = %crate::model::Escaped(parts.headers.get("x-pin").and_then(|v| v.to_str().ok()).unwrap_or("-")),
        bytes = body.len(),
        "citizen push"
    );
    // The verdict the answer gives; ingest reads the body again and stores it (or its dead letter).
    let verdict = sensor_community::parse(&body);
    let (reply, committed) = ReplyHandle::new();
    let inbound = Inbound {
        topic: format!("citizens/{}/sensor-community", sensor.id),
        size: body.len(),
        payload: body,
        format: Some(MessageFormat::SensorCommunity),
        received_at: Utc::now(),
        ack: Ack::Reply(reply),
    };
    input
        .send_timeout(inbound, ENQUEUE_WAIT)
        .await
        .map_err(|_| CitizenError::Unavailable("the gateway is busy or stopping; send again later".into()))?;
    let outcome = match tokio::time::timeout(COMMIT_WAIT, committed).await {
        Ok(Ok(outcome)) => outcome,
        _ => return Err(CitizenError::Unavailable("not stored in time; send again later".into())),
    };
    match (verdict, outcome) {
        // Readable, but ingest kept it as a dead letter (the answer says why): not stored.
        (Ok(_), Err(why)) => Err(CitizenError::Unprocessable(why)),
        (Ok(push), Ok(())) => Ok(Json(json!({
            "sensor": sensor.id,
            "stored": push.values.len(),
            "public": sensor.approved,
        }))),
        (Err(e @ FormatError::Json { .. }), _) => Err(CitizenError::BadRequest { message: e.to_string(), dead_letter: true }),
        (Err(e), _) => Err(CitizenError::Unprocessable(e.to_string())),
    }
}
