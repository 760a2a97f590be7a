//! `messnetz dead-letters ...`: list, show, replay, delete and purge dead letters while the gateway is
//! stopped (the store is single-process; while it runs, the admin API does the same). The
//! work is the [`crate::replay`] service's; here: the arguments, the output, the audit as `cli`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;

use super::outcome::{Failure, Outcome};
use crate::audit::{AuditEntry, AuditLog};
use crate::config::Settings;
use crate::devices::DeviceRegistry;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::replay::DeadLetterFilter;
use crate::replay::{describe, DeadLetters, Replayer, Selection};
use crate::sinks::influx::Spool;
use crate::sources::lorawan_keys::SessionKeys;
use crate::store::{ReplayOutcome, Store};

#[derive(Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters, oldest first: id, reception time, device, format, reason.
    List {
        /// Only this device's (as the device registry identifies the message now).
        #[arg(long)]
        device: Option<String>,
        /// Only those whose reason contains this text (any case).
        #[arg(long)]
        reason: Option<String>,
        /// Only those received before this time (RFC 3339, e.g. 2026-01-01T00:00:00Z).
        #[arg(long, value_parser = rfc3339)]
        received_before: Option<chrono::DateTime<chrono::Utc>>,
        /// Start after this id.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Most letters to list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print one dead letter as JSON, with its message.
    Show { id: u64 },
    /// Replay dead letters through the ingest path: the given ids, or all that match
    /// --device / --reason, or --all. A message that fails again stays, with the new reason.
    Replay {
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
        ids: Vec<u64>,
    },
    /// Delete dead letters for good (audited): the given ids.
    Delete {
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Delete every dead letter that matches --device / --reason / --received-before, or --all
    /// (audited, one transaction).
    Purge {
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        /// Only those received before this time (RFC 3339).
        #[arg(long, value_parser = rfc3339)]
        received_before: Option<chrono::DateTime<chrono::Utc>>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

fn rfc3339(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-01-01T00:00:00Z: {e}"))
}

/// The command line sees every department's letters.
fn everyone(_: Option<&crate::devices::Device>) -> bool {
    true
}

pub fn run(settings: &Settings, command: DeadLettersCommand) -> Outcome {
    let (profiles, devices) = crate::registry::load(settings).map_err(|errors| Failure::lines(1, errors))?;
    let store = crate::store::open(&settings.store).map_err(|e| match e {
        crate::store::OpenError::Embedded(_) => {
            Failure::new(1, format!("{e} (is the gateway still running? stop it first, or use the admin API)"))
        }
        crate::store::OpenError::Postgres { .. } => Failure::new(1, e.to_string()),
    })?;
    let registry = Arc::new(Registry::new(profiles, devices));
    // Citizens' sensors are in the store, not the devices file: their letters replay too.
    crate::api::citizens::sync_registry(&*store, &registry, Arc::new(settings.citizens.clone()))
        .map_err(|e| Failure::new(1, format!("store: citizen sensors: {e}")))?;
    let devices = registry.devices();
    match command {
        DeadLettersCommand::List { device, reason, received_before, after, limit } => {
            list(&*store, &devices, &DeadLetterFilter { device, reason, received_before }, after, limit)
        }
        DeadLettersCommand::Delete { ids } => delete(settings, &*store, &devices, &Selection::Ids(ids)),
        DeadLettersCommand::Purge { device, reason, received_before, all } => {
            let filter = DeadLetterFilter { device, reason, received_before };
            if filter.is_empty() && !all {
                return Err(Failure::new(2, "say which: --device, --reason, --received-before, or --all"));
            }
            delete(settings, &*store, &devices, &Selection::Matching(filter))
        }
        DeadLettersCommand::Show { id } => show(&*store, &devices, id),
        DeadLettersCommand::Replay { device, reason, all, ids } => {
            let filter = DeadLetterFilter { device, reason, received_before: None };
            if ids.is_empty() && filter.is_empty() && !all {
                return Err(Failure::new(2, "say which: dead letter ids, --device, --reason, or --all"));
            }
            let selection = if ids.is_empty() { Selection::Matching(filter) } else { Selection::Ids(ids) };
            replay(settings, store, registry, &devices, &selection)
        }
    }
}

/// A line per letter: id, reception time, device, format, reason; where to go on, on stderr.
fn list(store: &dyn Store, devices: &DeviceRegistry, filter: &DeadLetterFilter, after: u64, limit: usize) -> Outcome {
    let (found, next) = DeadLetters::new(store, devices)
        .list(filter, after, limit, usize::MAX, &everyone)
        .map_err(|e| Failure::new(1, format!("cannot read the dead letters: {e}")))?;
    for f in &found {
        let l = &f.letter;
        let device = f.device.as_ref().map(|d| d.id.to_string()).or(l.device.clone()).unwrap_or_else(|| "-".into());
        println!(
            "{}\t{}\t{}\t{}\t{}",
            l.id,
            l.received_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            device,
            l.format,
            l.reason
        );
    }
    if let Some(next) = next {
        eprintln!("more: --after {next}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Delete the selected letters in one transaction, audited as `cli`; prints each deleted id
/// (and `gone` for ids that were not there); exit 1 if any id asked for was not there.
fn delete(settings: &Settings, store: &dyn Store, devices: &DeviceRegistry, selection: &Selection) -> Outcome {
    let audit = AuditLog::open(&settings.admin.audit_log_path(&settings.store))
        .map_err(|e| Failure::new(1, format!("admin.audit_log: {e}")))?;
    let deleted = DeadLetters::new(store, devices).delete(selection, usize::MAX, &everyone).map_err(|e| Failure::new(1, e))?;
    for id in &deleted.ids {
        println!("{id}\tdeleted");
    }
    for id in &deleted.gone {
        println!("{id}\tgone\tno such dead letter");
    }
    let (action, target) = match selection {
        Selection::Ids(ids) if ids.len() == 1 => ("dead_letter.delete", ids[0].to_string()),
        _ => ("dead_letter.purge", String::new()),
    };
    audit.record_or_log(AuditEntry::new("cli", "local", action, &target).detail(serde_json::json!({ "deleted": deleted.ids })));
    eprintln!("{} dead letter(s) deleted", deleted.ids.len());
    Ok(if deleted.gone.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The letter as JSON, with its message as text when it is UTF-8.
fn show(store: &dyn Store, devices: &DeviceRegistry, id: u64) -> Outcome {
    let found = DeadLetters::new(store, devices)
        .get(id, &everyone)
        .map_err(|e| Failure::new(1, format!("cannot read the dead letters: {e}")))?
        .ok_or_else(|| Failure::new(1, format!("no dead letter {id}")))?;
    let l = found.letter;
    let mut v = serde_json::to_value(&l).unwrap_or_default();
    v["payload_text"] = serde_json::json!(std::str::from_utf8(&l.payload).ok());
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

/// Replay the selected letters through an ingest path of this process's own, a line each
/// (id, outcome, detail), each audited as `cli`; exit 1 if any was not stored.
fn replay(
    settings: &Settings,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    devices: &DeviceRegistry,
    selection: &Selection,
) -> Outcome {
    let picked = DeadLetters::new(&*store, devices).pick(selection, usize::MAX, &everyone).map_err(|e| Failure::new(1, e))?;
    let ingest = offline_ingest(settings, store, registry)?;
    let audit = AuditLog::open(&settings.admin.audit_log_path(&settings.store))
        .map_err(|e| Failure::new(1, format!("admin.audit_log: {e}")))?;
    let replayer = Replayer::new(ingest, &settings.mqtt.subscriptions);
    let mut failed = 0;
    for letter in picked.letters {
        let letter = match letter {
            Ok(l) => l,
            Err(id) => {
                println!("{id}\tgone\t{}", describe(&ReplayOutcome::Gone));
                failed += 1;
                continue;
            }
        };
        let outcome =
            replayer.replay(&letter).map_err(|e| Failure::new(1, format!("replay of {} failed in the store: {e}", letter.id)))?;
        let text = describe(&outcome);
        println!("{}\t{}\t{text}", letter.id, outcome.as_str());
        let stored = matches!(outcome, ReplayOutcome::Stored { .. });
        if !stored {
            failed += 1;
        }
        let entry = AuditEntry::new("cli", "local", "dead_letter.replay", &letter.id.to_string());
        let entry = if stored { entry } else { entry.outcome(outcome.as_str()) };
        audit.record_or_log(entry.detail(serde_json::json!({ "outcome": outcome.as_str(), "detail": text })));
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The ingest path without a broker: the session keys for raw LoRaWAN frames, and the
/// InfluxDB spool when `[influxdb]` is on (replayed readings are spooled like any others; the
/// gateway sends them).
fn offline_ingest(settings: &Settings, store: Arc<dyn Store>, registry: Arc<Registry>) -> Result<Ingest, Failure> {
    let lorawan =
        SessionKeys::load(settings.lorawan.keys_file.as_deref(), std::env::vars()).map_err(|errors| Failure::lines(1, errors))?;
    let metrics = Arc::new(Metrics::default());
    let spool = settings
        .influxdb
        .as_ref()
        .filter(|i| i.enabled)
        .map(|i| Arc::new(Spool::new(i, metrics.clone(), store.outbox_len().unwrap_or(0))));
    Ok(Ingest::offline(store, registry, metrics, spool, Arc::new(lorawan)))
}
