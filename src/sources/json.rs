//! Plain JSON over MQTT (`format = "json"`): one flat object of name → number, as ESPHome,
//! Tasmota and home-made sensors publish. The device is named by the topic (its next-to-last
//! level, e.g. `tele/balkon-3/SENSOR`), and its profile's `json` layout reads the names.
//!
//! Nested objects (Tasmota's `{"BME280": {"Temperature": 21.5}}`) are passed on as they are:
//! a profile reaches into them with a JSON pointer (`/BME280/Temperature`).

use chrono::{DateTime, Utc};

use super::{FormatError, Uplink};

/// Parse a plain JSON message; `device` is the name the topic gives the device.
pub fn parse(device: &str, payload: &[u8]) -> Result<Uplink, FormatError> {
    let value: serde_json::Value = super::json(payload).map_err(|source| FormatError::Json { format: "json", source })?;
    let Some(object) = value.as_object() else {
        return Err(FormatError::Field { field: "(message)", why: "expected a JSON object of name → number".into() });
    };
    // A time only if it says its zone (Tasmota's `Time` is local time without one: the
    // reception time is better than a guess).
    let time = ["time", "Time", "timestamp"]
        .iter()
        .find_map(|k| object.get(*k).and_then(|v| v.as_str()))
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    Ok(Uplink {
        dev_eui: None,
        ns_device_id: Some(device.to_owned()),
        f_port: None,
        f_cnt: None,
        payload: Vec::new(),
        time,
        decoded: Some(String::from_utf8_lossy(payload).into_owned()),
    })
}

/// The device a topic names for the `json` and `sensor-community` formats: its next-to-last
/// level (`tele/balkon-3/SENSOR` → `balkon-3`), or its only level.
pub fn device_of_topic(topic: &str) -> Option<&str> {
    let levels: Vec<&str> = topic.split('/').collect();
    let level = if levels.len() >= 2 { levels[levels.len() - 2] } else { levels[0] };
    (!level.is_empty()).then_some(level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_object_becomes_decoded_json() {
        let u = parse("balkon-3", br#"{"temperature": 21.5, "humidity": 48, "time": "2026-11-25T10:00:00Z"}"#).unwrap();
        assert_eq!(u.ns_device_id.as_deref(), Some("balkon-3"));
        assert_eq!(u.time.map(|t| t.to_rfc3339()), Some("2026-11-25T10:00:00+00:00".into()));
        assert!(u.decoded.unwrap().contains("21.5"));
    }

    #[test]
    fn not_an_object_is_refused() {
        assert!(parse("x", b"[1,2]").is_err());
        assert!(parse("x", b"21.5").is_err());
        assert!(parse("x", b"{").is_err());
    }

    #[test]
    fn the_topic_names_the_device() {
        assert_eq!(device_of_topic("tele/balkon-3/SENSOR"), Some("balkon-3"));
        assert_eq!(device_of_topic("citizens/c-1/sensor-community"), Some("c-1"));
        assert_eq!(device_of_topic("solo"), Some("solo"));
        assert_eq!(device_of_topic("a//b"), None);
    }
}
