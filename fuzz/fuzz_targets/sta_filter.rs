//! Fuzz target: any text as a SensorThings `$filter` or `$orderby` item parses to an
//! expression or to an error with its position, never a panic or a stack overflow; a parsed
//! filter evaluates against an observation-like entity without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use messnetz::api::sta::eval::{json_path, matches, Properties, Val};
use messnetz::api::sta::filter::{parse_filter, parse_order_item};

struct Entity(serde_json::Value);

impl Properties for Entity {
    fn get(&self, path: &[String]) -> Val {
        json_path(&self.0, path)
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let entity = Entity(serde_json::json!({
        "@iot.id": "demo-lht65:air_temperature:1764061200000",
        "phenomenonTime": "2026-11-25T09:00:00Z",
        "result": 21.5,
        "resultQuality": { "flag": "good" },
        "name": "Rathausplatz",
        "properties": { "district": "Altstadt" },
    }));
    let now = chrono::DateTime::from_timestamp(1_764_061_200, 0).unwrap();
    match parse_filter(text) {
        Ok(expr) => {
            let _ = matches(&expr, &entity, now);
        }
        Err(e) => assert!(e.position >= 1 && e.position <= text.chars().count() + 1, "{e}"),
    }
    let _ = parse_order_item(text);
});
