//! `POST /v1/admin/backup`: a consistent snapshot of the store while the gateway runs,
//! streamed back as a redb file (what `messnetz backup FILE` asks for when the gateway holds
//! the store). Only all-departments tokens may take one: it holds every department's data.
//!
//! The snapshot is written to a temporary file in the store's directory, opened, unlinked,
//! and then streamed from the open file, so nothing is left behind however the download ends.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::{blocking, AdminError, AdminState, Operator};
use crate::api::AppState;

pub async fn snapshot(State(state): State<AppState>, Extension(op): Extension<Operator>) -> Result<Response, AdminError> {
    if !op.sees_all() {
        return Err(AdminError::Forbidden("a backup holds every department's data: it needs an all-departments token".into()));
    }
    let dir = state.admin.settings.store.path.clone();
    let (file, snapshot) = blocking(move || {
        // A name of its own per request: two backups at once must not share a file.
        static TAKEN: AtomicU64 = AtomicU64::new(0);
        let tmp = dir.join(format!(".backup-{}-{}.redb", std::process::id(), TAKEN.fetch_add(1, Relaxed)));
        let taken = state.store.backup_to(&tmp).map_err(|e| AdminError::Internal(e.to_string()));
        let opened = taken.and_then(|snapshot| {
            let file = std::fs::File::open(&tmp).map_err(|e| AdminError::Internal(format!("{}: {e}", tmp.display())))?;
            Ok((file, snapshot))
        });
        let _ = std::fs::remove_file(&tmp);
        let (file, snapshot) = opened?;
        let detail = serde_json::json!({ "bytes": snapshot.bytes, "tables": snapshot.tables });
        state.admin.audit.record_or_log(AdminState::entry(&op, "backup", "").detail(detail));
        Ok((file, snapshot))
    })
    .await?;
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, snapshot.bytes.to_string()),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"messnetz-backup.redb\"".to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
