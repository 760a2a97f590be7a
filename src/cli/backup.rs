//! `messnetz backup FILE` and `messnetz restore FILE`.
//!
//! A backup is a consistent snapshot of the store ([`crate::store::embedded::backup`]). While the
//! gateway runs it holds the store's file, so the command asks it for the snapshot over the
//! operator API (`POST /v1/admin/backup`, with an all-departments token from
//! `MESSNETZ_ADMIN_TOKEN` or `--token-file`); with the gateway stopped it reads the store
//! itself. A restore needs the gateway stopped: it checks the snapshot and puts it in place
//! of the store, keeping the replaced file as `messnetz.redb.before-restore`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::outcome::{Failure, Outcome};
use crate::audit::{AuditEntry, AuditLog};
use crate::config::Settings;
use crate::store::embedded::backup;
use crate::store::EmbeddedStore;
use crate::store::{AdminStore, Snapshot};

/// `messnetz backup FILE`.
pub fn backup(settings: &Settings, file: &Path, url: Option<&str>, token_file: Option<&Path>) -> Outcome {
    let dir = &settings.store.path;
    if !dir.join(backup::FILE_NAME).exists() {
        return Err(Failure::new(1, format!("store.path: no store in {}", dir.display())));
    }
    let snapshot = match EmbeddedStore::open(dir) {
        Ok(store) => {
            let snapshot = store.backup_to(file).map_err(|e| Failure::new(1, format!("backup failed: {e}")))?;
            audit(settings, "backup", &snapshot);
            snapshot
        }
        // The gateway holds the store: it takes the snapshot.
        Err(e) if backup::is_in_use(&e) => {
            let url = url.map(str::to_owned).unwrap_or_else(|| api_url(settings.api.listen));
            let token = token(token_file)?;
            download(&url, &token, file)?
        }
        Err(e) => return Err(Failure::new(1, format!("store.path: {e}"))),
    };
    print(&format!("backup written to {}", file.display()), &snapshot);
    Ok(ExitCode::SUCCESS)
}

/// `messnetz restore FILE`.
pub fn restore(settings: &Settings, file: &Path) -> Outcome {
    let snapshot = backup::restore(file, &settings.store.path).map_err(|e| Failure::new(1, format!("restore refused: {e}")))?;
    audit(settings, "restore", &snapshot);
    print(
        &format!(
            "restored {} into {} (the previous store file is kept as {}.before-restore)",
            file.display(),
            settings.store.path.display(),
            backup::FILE_NAME
        ),
        &snapshot,
    );
    Ok(ExitCode::SUCCESS)
}

fn print(headline: &str, snapshot: &Snapshot) {
    println!("{headline}: {} bytes", snapshot.bytes);
    for (table, rows) in &snapshot.tables {
        println!("{table}\t{rows}");
    }
}

fn audit(settings: &Settings, action: &str, snapshot: &Snapshot) {
    if let Ok(log) = AuditLog::open(&settings.admin.audit_log_path(&settings.store)) {
        log.record_or_log(
            AuditEntry::new("cli", "local", action, "")
                .detail(serde_json::json!({ "bytes": snapshot.bytes, "tables": snapshot.tables })),
        );
    }
}

/// The API's address as a URL on this machine (an unspecified address means loopback).
fn api_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

fn token(file: Option<&Path>) -> Result<String, Failure> {
    let text = match file {
        Some(f) => std::fs::read_to_string(f).map_err(|e| Failure::new(2, format!("--token-file {}: {e}", f.display())))?,
        None => std::env::var("MESSNETZ_ADMIN_TOKEN").map_err(|_| {
            Failure::new(
                2,
                "the gateway is running and holds the store: the backup is taken through its admin API, which needs an all-departments token in MESSNETZ_ADMIN_TOKEN or --token-file",
            )
        })?,
    };
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// Fetch the snapshot from the running gateway into `file` (via a temporary file beside it),
/// then check it.
fn download(url: &str, token: &str, file: &Path) -> Result<Snapshot, Failure> {
    let partial: PathBuf = file.with_extension("partial");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(1, format!("cannot start the HTTP client: {e}")))?;
    let endpoint = format!("{}/v1/admin/backup", url.trim_end_matches('/'));
    runtime.block_on(async {
        let fail = |e: String| Failure::new(1, format!("backup through {endpoint} failed: {e}"));
        let mut response =
            reqwest::Client::new().post(&endpoint).bearer_auth(token).send().await.map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(fail(format!("HTTP {status}: {}", body.trim())));
        }
        let mut out = std::fs::File::create(&partial).map_err(|e| fail(format!("{}: {e}", partial.display())))?;
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
            out.write_all(&chunk).map_err(|e| fail(format!("{}: {e}", partial.display())))?;
        }
        out.sync_all().map_err(|e| fail(format!("{}: {e}", partial.display())))?;
        Ok(())
    })?;
    let snapshot = backup::inspect(&partial).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        Failure::new(1, format!("the downloaded backup does not check out: {e}"))
    })?;
    std::fs::rename(&partial, file).map_err(|e| Failure::new(1, format!("{}: {e}", file.display())))?;
    Ok(snapshot)
}
