//! The audit log: who changed what, when — one JSON object per line, appended and synced.
//!
//! Every admin API request is written here before it is acted on (outcome `attempt`) and
//! again with its outcome, refusals and failures included (`src/api/admin/attempts.rs`);
//! changes (devices, profiles, reloads, dead letter replays) and every replay from the CLI
//! also get an entry with their details. Each entry is synced before the answer goes out, so
//! the log is complete even if the gateway is killed right after. Tokens never appear in it:
//! the actor is the token's configured `name` (`-` before a token was accepted).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{SecondsFormat, Utc};
use serde::Serialize;

/// Why the audit log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit log {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot write the audit log {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// One change, as written to the log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// When it happened (RFC 3339, UTC); filled in by [`AuditLog::record`].
    pub time: String,
    /// Who did it: the admin token's `name`, `cli` for the command line, `-` for a request
    /// refused before a token was accepted.
    pub who: String,
    /// Where the request came from (client address), or `local` for the command line.
    pub client: String,
    /// What was done, e.g. `device.create`, `profile.upload`, `dead_letter.replay`, `reload`,
    /// or for the record of a request, its method and route (`PUT /v1/admin/profiles/{id}`).
    pub action: String,
    /// What it was done to (a device id, profile id, dead letter id); empty for `reload`.
    pub target: String,
    /// `ok`, `attempt` (written before acting), or why it was refused or failed.
    pub outcome: String,
    /// Details of the change, e.g. the device entry before and after.
    pub detail: serde_json::Value,
}

impl AuditEntry {
    pub fn new(who: &str, client: &str, action: &str, target: &str) -> Self {
        Self {
            time: String::new(),
            who: who.to_owned(),
            client: client.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: "ok".to_owned(),
            detail: serde_json::Value::Null,
        }
    }

    pub fn outcome(mut self, outcome: impl Into<String>) -> Self {
        self.outcome = outcome.into();
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// An append-only JSON-lines file. Writes block (they sync to disk): call from blocking code.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Open (or create, with its directory) the log for appending. Readable by its owner and
    /// group only: it names operators and their changes.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let err = |source| AuditError::Open { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o640);
        }
        let file = options.open(path).map_err(err)?;
        Ok(Self { path: path.to_owned(), file: Mutex::new(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one entry and sync it to disk.
    pub fn record(&self, mut entry: AuditEntry) -> Result<(), AuditError> {
        entry.time = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut line = serde_json::to_vec(&entry)
            .unwrap_or_else(|e| format!("{{\"error\":\"unserialisable audit entry: {e}\"}}").into_bytes());
        line.push(b'\n');
        let err = |source| AuditError::Write { path: self.path.clone(), source };
        // A poisoned lock only means another writer panicked mid-call; the file is still usable.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line).map_err(err)?;
        file.sync_data().map_err(err)
    }

    /// Record, and if the log cannot be written, say so in the gateway's log with the entry
    /// itself, so the change is at least traceable there.
    pub fn record_or_log(&self, entry: AuditEntry) {
        let copy = entry.clone();
        if let Err(e) = self.record(entry) {
            tracing::error!(error = %e, entry = %serde_json::to_string(&copy).unwrap_or_default(), "audit log write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.log");
        let log = AuditLog::open(&path).unwrap();
        log.record(AuditEntry::new("ops", "127.0.0.1", "device.create", "a").detail(serde_json::json!({"x": 1}))).unwrap();
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        log.record(AuditEntry::new("cli", "local", "dead_letter.replay", "7").outcome("failed: x")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["who"], "ops");
        assert_eq!(lines[0]["detail"]["x"], 1);
        assert_eq!(lines[1]["outcome"], "failed: x");
        assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
    }
}
