//! `/healthz` (the process answers), `/readyz` (it takes messages: each check and why it fails) and `/metrics` (Prometheus text).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::AppState;

/// Liveness: the process answers, as `{"status": "ok", "version", "uptime_s"}`. Says nothing
/// about whether messages are stored: see `/readyz`.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let uptime_s = state.metrics.uptime_s();
    let body = serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION"), "uptime_s": uptime_s });
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// One readiness check: whether it passes and, when not, what fails and since when.
#[derive(Debug, Serialize)]
struct Check {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// When the failure began (RFC 3339), where that is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
}

impl Check {
    fn ok() -> Self {
        Self { ok: true, error: None, since: None }
    }

    fn failing(error: String, since: Option<chrono::DateTime<chrono::Utc>>) -> Self {
        Self { ok: false, error: Some(error), since: since.map(super::rfc3339) }
    }
}

#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    checks: BTreeMap<&'static str, Check>,
}

/// Readiness: 200 when every check passes, else 503; the body names each check either way.
/// Checks read state the pipeline keeps in memory, so this answers at once even when the
/// store is stuck. A new check is one more entry in `checks`.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut checks = BTreeMap::new();
    checks.insert("store", store_check(&state));
    if let Some(spool) = spool_check(&state) {
        checks.insert("influxdb_spool", spool);
    }
    checks.insert("mqtt", input_check(&state));
    let ready = checks.values().all(|c| c.ok);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(Readiness { ready, checks })).into_response()
}

/// The broker connection is up with every subscription confirmed, or the embedded listener
/// is bound.
fn input_check(state: &AppState) -> Check {
    let input = state.input.get();
    match input.ready {
        true => Check::ok(),
        false => Check::failing(input.problem, Some(input.since)),
    }
}

/// The last write transaction committed (a full disk or an I/O error makes it fail until a
/// commit succeeds again, the store reopening itself if it must).
fn store_check(state: &AppState) -> Check {
    let health = state.store.health();
    match health.error {
        None => Check::ok(),
        Some(error) => Check::failing(format!("store commits fail; messages are not acknowledged: {error}"), health.since),
    }
}

/// With InfluxDB and policy `backpressure`: the spool is below its limit (else ingest holds
/// messages back until InfluxDB catches up). `None` when nothing is ever held.
fn spool_check(state: &AppState) -> Option<Check> {
    let influx = &state.metrics.influx;
    spool_check_of(influx.spool_readings.load(Relaxed), influx.spool_hold_limit.load(Relaxed))
}

fn spool_check_of(spooled: u64, limit: u64) -> Option<Check> {
    if limit == 0 {
        return None;
    }
    Some(if spooled < limit {
        Check::ok()
    } else {
        Check::failing(
            format!("the InfluxDB spool holds {spooled} readings, its limit is {limit}: messages wait unacknowledged until InfluxDB takes more"),
            None,
        )
    })
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.metrics.render();
    // Computed at scrape time from the last-seen times, so it needs no timer of its own.
    let devices = state.registry.devices();
    let store = state.store.clone();
    let stale = tokio::task::spawn_blocking(move || {
        let now = chrono::Utc::now();
        let mut stale = 0u64;
        for d in devices.iter() {
            match store.last_seen(&d.id) {
                Ok(seen) => stale += u64::from(devices.is_stale(d, seen, now)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read last-seen times for messnetz_devices_stale");
                    return None;
                }
            }
        }
        Some(stale)
    })
    .await
    .ok()
    .flatten();
    let input = state.input.get();
    let name = "messnetz_mqtt_connected";
    text.push_str(&format!(
        "# HELP {name} 1 while the input takes messages: connected to the broker with every subscription confirmed (or the embedded listener bound), else 0.\n# TYPE {name} gauge\n{name} {}\n",
        u8::from(input.ready)
    ));
    let health = state.store.health();
    let name = "messnetz_store_writable";
    text.push_str(&format!(
        "# HELP {name} 1 when the last store write transaction committed, 0 while they fail (full disk, I/O error).\n# TYPE {name} gauge\n{name} {}\n",
        u8::from(health.writable)
    ));
    let name = "messnetz_store_reopens_total";
    text.push_str(&format!(
        "# HELP {name} Times the store was closed and opened again after an I/O error.\n# TYPE {name} counter\n{name} {}\n",
        health.reopens
    ));
    let name = "messnetz_rollup_windows_pending";
    text.push_str(&format!(
        "# HELP {name} Device hours of rollup windows journaled and not yet flushed into the stored windows (queries fold them from the readings).\n# TYPE {name} gauge\n{name} {}\n",
        state.store.pending_windows()
    ));
    if let Some(stale) = stale {
        let name = "messnetz_devices_stale";
        text.push_str(&format!(
            "# HELP {name} Devices (open and internal) not heard from for longer than their expected interval, or never.\n# TYPE {name} gauge\n{name} {stale}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spool_fails_readiness_only_where_it_holds_messages() {
        assert!(spool_check_of(5_000, 0).is_none(), "no InfluxDB, or drop-oldest: nothing is held");
        assert!(spool_check_of(999, 1_000).is_some_and(|c| c.ok));
        let full = spool_check_of(1_000, 1_000).unwrap();
        assert!(!full.ok);
        assert!(full.error.as_deref().is_some_and(|e| e.contains("1000 readings") && e.contains("limit is 1000")), "{full:?}");
        let body = serde_json::to_value(Readiness { ready: false, checks: [("influxdb_spool", full)].into() }).unwrap();
        assert_eq!(body["checks"]["influxdb_spool"]["ok"], false);
        assert!(body["checks"]["influxdb_spool"].get("since").is_none(), "absent, not null (the OpenAPI schema)");
    }
}
