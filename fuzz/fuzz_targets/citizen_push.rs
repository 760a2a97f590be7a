//! Fuzz target: any bytes as a citizen's push (sensor.community JSON) or a plain-JSON MQTT
//! message must give values or an error, never a panic; values are finite or kept to be flagged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use messnetz::config::MessageFormat;
use messnetz::sources;

fuzz_target!(|data: &[u8]| {
    if let Ok(push) = sources::sensor_community::parse(data) {
        // One value per quantity: a series holds one value per time.
        let mut seen: Vec<_> = push.values.iter().map(|v| v.quantity).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), push.values.len());
    }
    for format in [MessageFormat::SensorCommunity, MessageFormat::Json] {
        let _ = sources::parse_message(format, "citizens/c-0123456789ab/sensor-community", data);
        let _ = sources::mapped_values(format, data);
    }
});
