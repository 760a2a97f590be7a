//! `messnetz check`: validate configuration, devices, profiles (their examples too) and the
//! LoRaWAN session keys without starting; exit 1 on any problem.

use std::process::ExitCode;

use super::outcome::{Failure, Outcome};
use crate::config::Settings;
use crate::sources::lorawan_keys::SessionKeys;

pub fn run(settings: &Settings) -> Outcome {
    let (profiles, devices) = crate::registry::load(settings).map_err(|errors| Failure::lines(1, errors))?;
    let mut failed = false;
    // Raw LoRaWAN session keys: the same checks as at start (file permissions, syntax).
    if let Err(errors) = SessionKeys::load(settings.lorawan.keys_file.as_deref(), std::env::vars()) {
        for e in errors {
            eprintln!("{e}");
        }
        failed = true;
    }
    for id in profiles.ids() {
        if let Some(p) = profiles.get(id) {
            for m in p.check_examples() {
                eprintln!("profile {id}: example {}: {}", m.example, m.message);
                failed = true;
            }
        }
    }
    if failed {
        return Ok(ExitCode::from(1));
    }
    println!("ok: configuration, {} profile(s) and {} device(s) are valid", profiles.len(), devices.len());
    Ok(ExitCode::SUCCESS)
}
