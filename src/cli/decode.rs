//! `messnetz decode`: decode one payload with a profile and print the readings as JSON.

use std::process::ExitCode;

use super::outcome::{Failure, Outcome};
use super::profiles;
use crate::config::Settings;

pub fn run(settings: &Settings, profile: &str, fport: Option<u8>, hex: &str) -> Outcome {
    let set = profiles::load(settings)?;
    let p = profiles::named(&set, profile)?;
    let bytes = crate::profiles::parse_hex(hex).map_err(|why| Failure::new(2, format!("--hex: {why}")))?;
    let decoded = p.decode_bytes(fport, &bytes).map_err(|e| Failure::new(1, format!("cannot decode: {e}")))?;
    let readings: Vec<_> = decoded
        .values
        .iter()
        .map(|v| serde_json::json!({"quantity": v.quantity.name(), "value": v.value, "unit": v.quantity.unit()}))
        .collect();
    let out = serde_json::json!({"readings": readings, "warnings": decoded.warnings});
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}
