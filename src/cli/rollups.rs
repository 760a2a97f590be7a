//! `messnetz rollups rebuild`: recompute the rollups of a time range from the stored readings
//! (while the gateway is stopped: the store is single-process).

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;

use super::outcome::{Failure, Outcome};
use crate::config::Settings;
use crate::devices::Visibility;
use crate::store::EmbeddedStore;

#[derive(Subcommand)]
pub enum RollupsCommand {
    /// Recompute the rollups of a time range (widened to whole UTC days) from the stored readings.
    Rebuild {
        /// Start (RFC 3339); default: the beginning of time.
        #[arg(long)]
        from: Option<String>,
        /// End, exclusive (RFC 3339); default: the end of time.
        #[arg(long)]
        to: Option<String>,
    },
}

pub fn run(settings: &Settings, command: RollupsCommand) -> Outcome {
    match command {
        RollupsCommand::Rebuild { from, to } => rebuild(settings, from.as_deref(), to.as_deref()),
    }
}

/// `--name` as a time, or `default` without it; a bad one is a usage problem (exit 2).
fn time(name: &str, value: Option<&str>, default: DateTime<Utc>) -> Result<DateTime<Utc>, Failure> {
    match value {
        None => Ok(default),
        Some(v) => DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| Failure::new(2, format!("--{name}: expected an RFC 3339 time such as 2026-11-25T00:00:00Z ({e})"))),
    }
}

fn rebuild(settings: &Settings, from: Option<&str>, to: Option<&str>) -> Outcome {
    let from = time("from", from, DateTime::<Utc>::MIN_UTC)?;
    let to = time("to", to, DateTime::<Utc>::MAX_UTC)?;
    let (_, devices) = crate::registry::load(settings).map_err(|errors| Failure::lines(1, errors))?;
    if settings.store.backend == crate::config::StoreBackend::Postgres {
        return Err(Failure::new(
            2,
            "store.backend = \"postgres\": rollup windows are journalled with the readings and folded by the gateways there; nothing to rebuild",
        ));
    }
    let store = EmbeddedStore::open(&settings.store.path)
        .map_err(|e| Failure::new(1, format!("store.path: {e} (is the gateway still running? stop it first)")))?;
    let district_of = |id: &str| devices.get(id).filter(|d| d.visibility == Visibility::Open).map(|d| d.district.clone());
    match store.rebuild_rollups(from, to, &district_of) {
        Ok(summary) => {
            println!(
                "rebuilt the rollups from {} readings ({} device windows, {} district windows)",
                summary.readings, summary.device_windows, summary.district_windows
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(Failure::new(1, format!("rebuild failed: {e}"))),
    }
}
