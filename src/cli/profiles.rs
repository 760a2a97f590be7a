//! `messnetz profiles ...`: list the loaded profiles and check their examples.

use std::process::ExitCode;

use clap::Subcommand;

use super::{Failure, Outcome};
use crate::config::Settings;
use crate::profiles::ProfileSet;

#[derive(Subcommand)]
pub enum ProfilesCommand {
    /// List the ids of the loaded profiles.
    List,
    /// Check every profile's examples (or one profile's).
    Test { id: Option<String> },
}

pub fn run(settings: &Settings, command: ProfilesCommand) -> Outcome {
    let set = load(settings)?;
    match command {
        ProfilesCommand::List => {
            for id in set.ids() {
                println!("{id}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ProfilesCommand::Test { id } => test(&set, id.as_deref()),
    }
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
