//! `messnetz profiles ...`: list the loaded profiles, check their examples, and import
//! profiles from The Things Network's device repository.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::outcome::{Failure, Outcome};
use crate::config::Settings;
use crate::profiles::ProfileSet;

#[derive(Subcommand)]
pub enum ProfilesCommand {
    /// List the ids of the loaded profiles.
    List,
    /// Check every profile's examples (or one profile's).
    Test { id: Option<String> },
    /// Write a profile per device model of The Things Network's device repository (a checkout
    /// of TheThingsNetwork/lorawan-devices, or one vendor/<vendor> folder of it) into the
    /// profiles directory, running the vendor's codec, and print a report. Profiles written or
    /// edited by hand are left alone.
    ImportTtn {
        /// The checkout, or one vendor folder.
        path: PathBuf,
        /// Write here instead of `profiles.dir`.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A TOML file of per-profile mapping choices (docs/profiles.md, "Importing vendor codecs").
        #[arg(long)]
        overrides: Option<PathBuf>,
    },
}

pub fn run(settings: &Settings, command: ProfilesCommand) -> Outcome {
    if let ProfilesCommand::ImportTtn { path, dir, overrides } = command {
        // The profiles already there need not load: the import may be what mends them.
        return import_ttn(&path, dir.as_deref().unwrap_or(&settings.profiles.dir), overrides.as_deref());
    }
    let set = load(settings)?;
    match command {
        ProfilesCommand::List => {
            for id in set.ids() {
                println!("{id}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ProfilesCommand::Test { id } => test(&set, id.as_deref()),
        ProfilesCommand::ImportTtn { .. } => unreachable!("handled above"),
    }
}

/// Imports, prints the report; exit 1 only when the import could not run at all.
fn import_ttn(path: &std::path::Path, dir: &std::path::Path, overrides: Option<&std::path::Path>) -> Outcome {
    use crate::profiles::ttn;
    let overrides: ttn::mapping::Overrides = match overrides {
        None => ttn::mapping::Overrides::default(),
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| Failure::new(1, format!("{}: {e}", file.display())))?;
            toml::from_str(&text).map_err(|e| Failure::new(1, format!("{}: {}", file.display(), e.to_string().trim())))?
        }
    };
    let report = ttn::import(&ttn::ImportOptions { source: path, profiles_dir: dir, overrides: &overrides })
        .map_err(|e| Failure::new(1, e))?;
    // A closed pipe (`| head`) ends the output, not the process with a panic.
    let _ = write!(std::io::stdout().lock(), "{report}");
    Ok(ExitCode::SUCCESS)
}

/// The profiles of `profiles.dir`; exit 1 with every problem if any does not load.
pub(super) fn load(settings: &Settings) -> Result<ProfileSet, Failure> {
    ProfileSet::load_dir(&settings.profiles.dir).map_err(|errors| Failure::lines(1, errors))
}

/// The profile called `id`, or exit 1 saying where the ids are.
pub(super) fn named<'a>(set: &'a ProfileSet, id: &str) -> Result<&'a std::sync::Arc<crate::profiles::Profile>, Failure> {
    set.get(id).ok_or_else(|| Failure::new(1, format!("no profile {id:?}; `messnetz profiles list` shows the ids")))
}

/// Check the examples of one profile or all; `FAIL` lines and exit 1 for any mismatch.
fn test(set: &ProfileSet, id: Option<&str>) -> Outcome {
    let ids: Vec<&str> = match id {
        Some(id) => vec![named(set, id).map(|_| id)?],
        None => set.ids(),
    };
    let mut failures = 0;
    for id in ids {
        let Some(profile) = set.get(id) else { continue };
        let mismatches = profile.check_examples();
        if mismatches.is_empty() {
            println!("ok   {id}");
        } else {
            println!("FAIL {id}");
            for m in &mismatches {
                println!("     example {}: {}", m.example, m.message);
            }
            failures += 1;
        }
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
