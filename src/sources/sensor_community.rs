//! The sensor.community (formerly luftdaten.info) firmware's JSON: `esp8266id`,
//! `software_version` and `sensordatavalues`, a list of `value_type`/`value` pairs, mapped to
//! canonical quantities through [`VALUE_TYPES`].
//!
//! The firmware's "custom API" option POSTs this body to any HTTP server (the citizens' push,
//! `POST /v1/citizens/push`); the same JSON also arrives over MQTT with
//! `format = "sensor-community"`. Values come as text (`"12.30"`) or as numbers.

use serde::Deserialize;

use super::FormatError;
use crate::model::{DecodedValue, Quantity};

/// How one `value_type` becomes a reading: its quantity and the factor to the canonical unit.
#[derive(Debug, Clone, Copy)]
pub struct ValueType {
    pub name: &'static str,
    pub quantity: Quantity,
    pub scale: f64,
}

const PM1: &str = "mass_concentration_of_pm1_ambient_aerosol_particles_in_air";
const PM25: &str = "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air";
const PM10: &str = "mass_concentration_of_pm10_ambient_aerosol_particles_in_air";

/// A quantity named here that is not in the quantity table fails the build.
const fn vt(name: &'static str, quantity: &'static str, scale: f64) -> ValueType {
    ValueType { name, quantity: Quantity::named(quantity), scale }
}

/// The value types that become readings (docs/citizens.md lists them). Pressures come in Pa
/// and are kept in hPa; particle masses in µg/m³; temperatures in °C; humidity in %.
pub const VALUE_TYPES: &[ValueType] = &[
    // Nova Fitness SDS011 / SDS021: P1 is PM10, P2 is PM2.5.
    vt("SDS_P1", PM10, 1.0),
    vt("SDS_P2", PM25, 1.0),
    // Plantower PMS series, Honeywell HPM, Sensirion SPS30, Tera NextPM.
    vt("PMS_P0", PM1, 1.0),
    vt("PMS_P1", PM10, 1.0),
    vt("PMS_P2", PM25, 1.0),
    vt("HPM_P1", PM10, 1.0),
    vt("HPM_P2", PM25, 1.0),
    vt("SPS30_P0", PM1, 1.0),
    vt("SPS30_P1", PM10, 1.0),
    vt("SPS30_P2", PM25, 1.0),
    vt("NPM_P0", PM1, 1.0),
    vt("NPM_P1", PM10, 1.0),
    vt("NPM_P2", PM25, 1.0),
    // Bosch BME280 / BMP280 / BMP180.
    vt("BME280_temperature", "air_temperature", 1.0),
    vt("BME280_humidity", "relative_humidity", 1.0),
    vt("BME280_pressure", "air_pressure", 0.01),
    vt("BMP280_temperature", "air_temperature", 1.0),
    vt("BMP280_pressure", "air_pressure", 0.01),
    vt("BMP_temperature", "air_temperature", 1.0),
    vt("BMP_pressure", "air_pressure", 0.01),
    // DHT22 (no prefix), HTU21D, Sensirion SHT3x and SCD30.
    vt("temperature", "air_temperature", 1.0),
    vt("humidity", "relative_humidity", 1.0),
    vt("HTU21D_temperature", "air_temperature", 1.0),
    vt("HTU21D_humidity", "relative_humidity", 1.0),
    vt("SHT3X_temperature", "air_temperature", 1.0),
    vt("SHT3X_humidity", "relative_humidity", 1.0),
    vt("SCD30_temperature", "air_temperature", 1.0),
    vt("SCD30_humidity", "relative_humidity", 1.0),
    vt("SCD30_co2_ppm", "mole_fraction_of_carbon_dioxide_in_air", 1.0),
    // Maxim DS18B20: a probe, placed wherever its owner put it.
    vt("DS18B20_temperature", "probe_temperature", 1.0),
    // DNMS noise meter: the equivalent continuous level.
    vt("DNMS_noise_LAeq", "sound_pressure_level", 1.0),
];

/// Value types that are about the device or the measurement, not the air: accepted and left
/// out (counts, timings, Wi-Fi signal, GPS position, particle numbers without a quantity here).
pub const IGNORED: &[&str] = &[
    "samples",
    "min_micro",
    "max_micro",
    "interval",
    "signal",
    "GPS_lat",
    "GPS_lon",
    "GPS_height",
    "GPS_timestamp",
    "SPS30_P4",
    "SPS30_N05",
    "SPS30_N1",
    "SPS30_N25",
    "SPS30_N4",
    "SPS30_N10",
    "SPS30_TS",
    "NPM_N1",
    "NPM_N10",
    "NPM_N25",
    "DNMS_noise_LA_min",
    "DNMS_noise_LA_max",
];

/// One push as the firmware sends it.
#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default)]
    esp8266id: Option<serde_json::Value>,
    #[serde(default)]
    software_version: Option<String>,
    sensordatavalues: Vec<Pair>,
}

#[derive(Debug, Deserialize)]
struct Pair {
    value_type: String,
    value: serde_json::Value,
}

/// A parsed push: who sent it and its values in canonical quantities.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    /// The chip id the firmware names itself by (text or number in the JSON).
    pub esp8266id: Option<String>,
    pub software_version: Option<String>,
    pub values: Vec<DecodedValue>,
}

/// Most pairs in one push; the firmware sends at most a few dozen.
const MAX_PAIRS: usize = 256;

/// Parse a push body. A value type that is neither in [`VALUE_TYPES`] nor in [`IGNORED`] fails
/// the whole message (it becomes a dead letter naming it), as does a value that is no number.
pub fn parse(payload: &[u8]) -> Result<Push, FormatError> {
    let body: Body = super::json(payload).map_err(|source| FormatError::Json { format: "sensor-community", source })?;
    if body.sensordatavalues.len() > MAX_PAIRS {
        return Err(FormatError::Field {
            field: "sensordatavalues",
            why: format!("{} pairs; at most {MAX_PAIRS}", body.sensordatavalues.len()),
        });
    }
    let mut values = Vec::with_capacity(body.sensordatavalues.len());
    let mut unknown = Vec::new();
    for pair in &body.sensordatavalues {
        let Some(vt) = VALUE_TYPES.iter().find(|v| v.name == pair.value_type) else {
            if !IGNORED.contains(&pair.value_type.as_str()) {
                let name: String = pair.value_type.chars().take(64).collect();
                unknown.push(crate::model::Escaped(&name).to_string());
            }
            continue;
        };
        let raw = match &pair.value {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        let Some(raw) = raw else {
            return Err(FormatError::Field { field: "sensordatavalues", why: format!("value of {} is not a number", vt.name) });
        };
        values.push(DecodedValue { quantity: vt.quantity, value: raw * vt.scale });
    }
    if !unknown.is_empty() {
        return Err(FormatError::Field {
            field: "sensordatavalues",
            why: format!("unknown value_type {}; docs/citizens.md lists the known ones", unknown.join(", ")),
        });
    }
    // Two sensors measuring one quantity (a BME280 and a DHT22 both give a temperature):
    // the first listed is kept, as a series holds one value per time.
    let mut seen = Vec::new();
    values.retain(|v| {
        let new = !seen.contains(&v.quantity);
        seen.push(v.quantity);
        new
    });
    let esp8266id = body.esp8266id.map(|v| match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    });
    Ok(Push { esp8266id, software_version: body.software_version, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> Quantity {
        Quantity::by_name(name).unwrap()
    }

    #[test]
    fn a_firmware_push_maps_to_quantities() {
        let body = br#"{"esp8266id":"13463610","software_version":"NRZ-2020-133","sensordatavalues":[
            {"value_type":"SDS_P1","value":"12.30"},{"value_type":"SDS_P2","value":"7.10"},
            {"value_type":"BME280_temperature","value":"28.29"},{"value_type":"BME280_humidity","value":"41.5"},
            {"value_type":"BME280_pressure","value":"101325.00"},{"value_type":"samples","value":"871234"},
            {"value_type":"signal","value":"-71"}]}"#;
        let p = parse(body).unwrap();
        assert_eq!(p.esp8266id.as_deref(), Some("13463610"));
        let got: Vec<(Quantity, f64)> = p.values.iter().map(|v| (v.quantity, v.value)).collect();
        assert_eq!(got[0], (q(PM10), 12.3));
        assert_eq!(got[1], (q(PM25), 7.1));
        assert_eq!(got[2], (q("air_temperature"), 28.29));
        assert!((got[4].1 - 1013.25).abs() < 1e-9, "Pa become hPa: {got:?}");
        assert_eq!(got.len(), 5, "samples and signal are not readings");
    }

    #[test]
    fn an_unknown_value_type_is_named() {
        let e = parse(br#"{"sensordatavalues":[{"value_type":"FOO_x","value":"1"}]}"#).unwrap_err();
        assert!(e.to_string().contains("unknown value_type FOO_x"), "{e}");
    }

    #[test]
    fn hostile_bodies_are_errors_not_panics() {
        for body in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"sensordatavalues\":5}",
            b"{\"sensordatavalues\":[{\"value_type\":\"SDS_P1\",\"value\":{}}]}",
            b"{\"sensordatavalues\":[{\"value_type\":\"SDS_P1\",\"value\":\"twelve\"}]}",
        ] {
            assert!(parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
        let many = format!("{{\"sensordatavalues\":[{}]}}", vec!["{\"value_type\":\"samples\",\"value\":1}"; 300].join(","));
        assert!(parse(many.as_bytes()).is_err());
    }

    #[test]
    fn no_mapped_value_type_is_also_ignored() {
        // That every mapped quantity exists is checked when compiling (`Quantity::named`).
        for v in VALUE_TYPES {
            assert!(!IGNORED.contains(&v.name), "{}", v.name);
        }
    }
}
