//! Vocabulary for the data model: definition URIs of quantities and names of UCUM units.

use crate::model::Quantity;

/// Quantities whose name is not in the CF standard-name table (see `model::QUANTITIES`).
pub const NOT_CF: &[&str] = &[
    "illuminance",
    "volume_mixing_ratio_of_tvoc_in_air",
    "lightning_strike_count",
    "heat_index",
    "sound_pressure_level",
    "probe_temperature",
    "battery_voltage",
    "battery_level",
];

/// The definition URI of a quantity: the CF standard name in the NERC vocabulary server, or
/// a messnetz URN for the few quantities CF does not name.
pub fn definition(q: Quantity) -> String {
    if NOT_CF.contains(&q.name()) {
        format!("urn:messnetz:quantity:{}", q.name())
    } else {
        format!("http://vocab.nerc.ac.uk/standard_name/{}/", q.name())
    }
}

/// The name of a UCUM unit code, for `unitOfMeasurement.name`.
pub fn unit_name(code: &str) -> &'static str {
    match code {
        "Cel" => "degree Celsius",
        "%" => "percent",
        "hPa" => "hectopascal",
        "m/s" => "metre per second",
        "deg" => "degree (angle)",
        "mm" => "millimetre",
        "mm/h" => "millimetre per hour",
        "W/m2" => "watt per square metre",
        "lx" => "lux",
        "1" => "one (dimensionless)",
        "ug/m3" => "microgram per cubic metre",
        "ppm" => "parts per million",
        "ppb" => "parts per billion",
        "dB" => "decibel",
        "V" => "volt",
        _ => "unit",
    }
}
