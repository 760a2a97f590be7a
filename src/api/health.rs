//! `/healthz` (the process answers) and `/metrics` (Prometheus text).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

pub async fn healthz() -> &'static str {
    "ok\n"
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
