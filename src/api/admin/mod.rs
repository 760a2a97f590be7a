//! The operator API under `/v1/admin/`: devices, profiles, dead letters and reload, behind
//! bearer tokens scoped to departments.
//!
//! - [`auth`]: tokens (argon2 hashes in the config), their scopes, the brute-force limit;
//! - [`devices`]: list, create, update, open/internal — the devices file stays the source of
//!   truth: a change is checked whole, written atomically, then swapped in;
//! - [`profiles`]: list, test, upload (checked, examples run, then written);
//! - [`dead_letters`]: list, show, replay through the ingest path, delete and purge;
//! - [`backup`]: a consistent snapshot of the store, streamed to the caller.
//!
//! A missing or wrong token is a 401; a device (or dead letter) of another department
//! answers exactly like an unknown one, 404, so ids don't leak across departments. Every
//! change is written to the audit log ([`crate::audit`]) with the token's name, and every
//! request, refused or not, is recorded before it is acted on and with its outcome
//! ([`attempts`]).

mod attempts;
pub mod auth;
mod backup;
mod citizens;
mod dead_letters;
mod devices;
pub mod devices_file;
pub mod error;
mod profiles;

use std::sync::Mutex;

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::Router;

use super::AppState;
use crate::audit::{AuditEntry, AuditLog};
use crate::config::Settings;
use crate::replay::Replayer;
pub use auth::{Operator, Scope};
pub use error::AdminError;

/// What the admin routes share, beside the open API's state.
pub struct AdminState {
    pub tokens: auth::Tokens,
    pub audit: AuditLog,
    /// Where the devices file and profiles are, and what reloading reads.
    pub settings: Settings,
    /// The ingest path, for replays (the same code the broker's messages go through).
    pub replayer: Replayer,
    /// Serialises changes to the devices file and the profiles directory: each is a
    /// read-check-write-swap that must not interleave with another.
    pub files: Mutex<()>,
    /// Refusals that cost a client nothing, recorded at most once a minute per client.
    pub free_refusals: attempts::FreeRefusals,
}

impl AdminState {
    /// Opens the audit log: a gateway that can't record changes doesn't start.
    pub fn new(settings: &Settings, replayer: Replayer) -> Result<Self, crate::audit::AuditError> {
        let audit = AuditLog::open(&settings.admin.audit_log_path(&settings.store))?;
        Ok(Self {
            tokens: auth::Tokens::new(&settings.admin),
            audit,
            settings: settings.clone(),
            replayer,
            files: Mutex::new(()),
            free_refusals: attempts::FreeRefusals::default(),
        })
    }

    /// An audit entry for this operator.
    pub(crate) fn entry(op: &Operator, action: &str, target: &str) -> AuditEntry {
        AuditEntry::new(&op.name, &op.client, action, target)
    }
}

/// The admin routes, each behind the token check.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/admin/devices", get(devices::list).post(devices::create))
        .route("/v1/admin/devices/{id}", get(devices::show).put(devices::update))
        .route("/v1/admin/devices/{id}/visibility", put(devices::set_visibility))
        .route("/v1/admin/profiles", get(profiles::list))
        .route("/v1/admin/profiles/{id}", get(profiles::show).put(profiles::upload))
        .route("/v1/admin/profiles/{id}/test", post(profiles::test))
        .route("/v1/admin/dead-letters", get(dead_letters::list))
        .route("/v1/admin/dead-letters/replay", post(dead_letters::replay_many))
        .route("/v1/admin/dead-letters/purge", post(dead_letters::purge))
        .route("/v1/admin/dead-letters/{id}", get(dead_letters::show).delete(dead_letters::delete_one))
        .route("/v1/admin/dead-letters/{id}/replay", post(dead_letters::replay_one))
        .route("/v1/admin/reload", post(reload))
        .route("/v1/admin/citizens", get(citizens::list))
        .route("/v1/admin/citizens/{id}/approve", post(citizens::approve))
        .route("/v1/admin/citizens/{id}", axum::routing::delete(citizens::remove))
        .route("/v1/admin/backup", post(backup::snapshot))
        // Authenticates, and audits every attempt before acting and again with its outcome;
        // the handler finds the [`Operator`] in the request's extensions.
        .route_layer(axum::middleware::from_fn_with_state(state, attempts::audited))
}

/// Run blocking work (file and store I/O, decoding, the audit log's sync) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f).await?
}

/// `POST /v1/admin/reload`: read the devices file and profiles again, as the file watcher
/// does; a set with problems is refused and the running one stays.
async fn reload(
    State(state): State<AppState>,
    axum::Extension(op): axum::Extension<Operator>,
) -> Result<axum::Json<serde_json::Value>, AdminError> {
    let admin = state.admin.clone();
    let registry = state.registry.clone();
    blocking(move || {
        let _files = admin.files.lock().unwrap_or_else(|p| p.into_inner());
        match crate::registry::load(&admin.settings) {
            Ok((profiles, devices)) => {
                let body = serde_json::json!({ "profiles": profiles.len(), "devices": devices.len() });
                registry.replace(profiles, devices);
                admin.audit.record_or_log(AdminState::entry(&op, "reload", "").detail(body.clone()));
                Ok(axum::Json(body))
            }
            Err(problems) => {
                for p in &problems {
                    tracing::error!(problem = %crate::model::Escaped(p), "reload refused; the previous devices and profiles stay in use");
                }
                admin.audit.record_or_log(
                    AdminState::entry(&op, "reload", "").outcome(format!("refused: {} problem(s)", problems.len())),
                );
                // The problems name other departments' devices: only an all-departments token sees them.
                let problems = if op.sees_all() { problems } else { vec!["details are in the gateway's log".to_owned()] };
                Err(AdminError::Invalid {
                    message: "reload refused; the running devices and profiles stay in use".into(),
                    problems,
                })
            }
        }
    })
    .await
}
