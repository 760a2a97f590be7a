//! Which keys of a codec's output become which quantities, in which unit: two documented
//! tables (also in `docs/profiles.md`, "Importing vendor codecs") and per-profile overrides.
//!
//! - [`NORMALIZED`]: the device repository's normalized payload (`normalizeUplink`), whose
//!   keys and units the repository fixes (`air.temperature` in °C, `air.pressure` in hPa, ...):
//!   an exact table.
//! - [`PATTERNS`]: the keys of `decodeUplink`, named by each vendor as it likes
//!   (`TempC_SHT`, `humidity`, `Bat_V`): matched by the words of the key's path, with the unit
//!   read from the key where it names one (`_mV`, `_ppm`, `TempF`) and a conventional default
//!   only where the quantity has one (°C, %, ppm, hPa, m/s, degrees, lx, µg/m³).
//!
//! A key that matches nothing, that is ambiguous (a `battery` without a unit, a `tvoc` that may
//! be ppb or an index), that is a statistic or setting (`min_`, `max_`, `alarm`, `threshold`),
//! or whose example values fall outside the quantity's plausible range in the assumed unit is
//! left unmapped and listed in the report with why: never guessed.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::model::Quantity;
use crate::profiles::units::{Conversion, Unit};

/// The normalized payload: dotted key → (quantity, the unit the repository's schema fixes).
/// Keys of the schema not listed here (`soil.depth`, `soil.ec`, `soil.pH`, `air.location`,
/// `water.*`, `action.*`, `position.*`, `metering.*`, `time`) have no climate quantity here
/// and are reported unmapped.
pub const NORMALIZED: &[(&str, &str, &str)] = &[
    ("air.temperature", "air_temperature", "Cel"),
    ("air.relativeHumidity", "relative_humidity", "%"),
    ("air.pressure", "air_pressure", "hPa"),
    ("air.co2", "mole_fraction_of_carbon_dioxide_in_air", "ppm"),
    ("air.lightIntensity", "illuminance", "lx"),
    ("air.pm1", "mass_concentration_of_pm1_ambient_aerosol_particles_in_air", "ug/m3"),
    ("air.pm25", "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air", "ug/m3"),
    ("air.pm10", "mass_concentration_of_pm10_ambient_aerosol_particles_in_air", "ug/m3"),
    ("wind.speed", "wind_speed", "m/s"),
    ("wind.direction", "wind_from_direction", "deg"),
    ("soil.moisture", "volume_fraction_of_condensed_water_in_soil", "%"),
    ("soil.temperature", "soil_temperature", "Cel"),
    ("battery", "battery_voltage", "V"),
];

/// One rule of the `decodeUplink` table, tried in order; the first that matches decides.
pub struct Pattern {
    /// What the rule matches, as documented.
    pub describe: &'static str,
    /// The quantity, or `Err(why)` for keys recognised as something that is not a reading.
    pub decide: fn(&Words) -> Decision,
}

/// A rule's verdict on a key: `None` does not apply; `Some(Ok((quantity, unit)))`;
/// `Some(Err(why))` for a key recognised as something that is not a reading.
pub type Decision = Option<Result<(&'static str, Unit), String>>;

/// The words of a key's path: `/env/TempC_SHT` → `env`, `temp`, `c`, `sht`; and the unit
/// the codec states beside the value, if it does (`{value: 95.96, unit: "kPa"}`).
pub struct Words {
    pub words: Vec<String>,
    pub unit_beside: Option<Unit>,
}

impl Words {
    pub fn of(pointer: &str) -> Words {
        let mut words = Vec::new();
        for segment in pointer.split('/').filter(|s| !s.is_empty() && !s.chars().all(|c| c.is_ascii_digit())) {
            let segment = segment.replace("~1", "/").replace("~0", "~");
            for part in segment.split(|c: char| !c.is_ascii_alphanumeric()).filter(|p| !p.is_empty()) {
                // A unit written in its own case (`mV`, `hPa`, `dBA`) is one word.
                if unit_word(&part.to_ascii_lowercase()).is_some() {
                    words.push(part.to_ascii_lowercase());
                    continue;
                }
                // camelCase and PascalCase: a capital after a small letter starts a word.
                let mut word = String::new();
                let mut prev_lower = false;
                for c in part.chars() {
                    if c.is_ascii_uppercase() && prev_lower && !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
                    word.push(c.to_ascii_lowercase());
                }
                if !word.is_empty() {
                    words.push(word);
                }
            }
        }
        Words { words, unit_beside: None }
    }

    /// Whether a word is one of `any`, also with trailing digits (`temperature1`, `hum2`).
    pub fn has(&self, any: &[&str]) -> bool {
        self.words.iter().any(|w| any.contains(&w.as_str()) || any.contains(&w.trim_end_matches(|c: char| c.is_ascii_digit())))
    }

    /// The words joined by `_`: `pm2_5`, `pm1_0`.
    fn joined(&self) -> String {
        self.words.join("_")
    }

    /// The unit the key names, else the one stated beside its value, if any.
    fn unit(&self) -> Option<Unit> {
        // The last unit word wins: `temp_c` and `TempC_SHT` alike.
        self.words.iter().rev().find_map(|w| unit_word(w)).or(self.unit_beside)
    }
}

/// A unit as codecs print it beside a value (`"°C"`, `"kPa"`, `"m⋅s⁻¹"`); `None` for any
/// other text.
pub fn unit_text(text: &str) -> Option<Unit> {
    Some(match text.trim() {
        "°C" | "℃" | "degC" | "Cel" | "C" => Unit::Celsius,
        "°F" | "℉" | "degF" | "F" => Unit::Fahrenheit,
        "K" => Unit::Kelvin,
        "%" | "%RH" | "% RH" | "%rH" => Unit::Percent,
        "ppm" => Unit::PartsPerMillion,
        "ppb" => Unit::PartsPerBillion,
        "hPa" | "mbar" | "mBar" => Unit::HectoPascal,
        "Pa" => Unit::Pascal,
        "kPa" => Unit::KiloPascal,
        "V" => Unit::Volt,
        "mV" => Unit::Millivolt,
        "mm" => Unit::Millimetre,
        "mm/h" | "mm⋅h⁻¹" | "mm h-1" => Unit::MillimetrePerHour,
        "m/s" | "m⋅s⁻¹" | "m·s⁻¹" | "m s-1" | "m s⁻¹" => Unit::MetrePerSecond,
        "km/h" | "kph" => Unit::KilometrePerHour,
        "°" | "deg" | "degrees" => Unit::Degree,
        "W/m2" | "W/m²" | "W⋅m⁻²" | "W·m⁻²" | "W m-2" => Unit::WattPerSquareMetre,
        "lx" | "lux" | "Lux" => Unit::Lux,
        "µg/m³" | "μg/m³" | "ug/m3" | "µg/m3" | "μg/m3" | "µg⋅m⁻³" => Unit::MicrogramPerCubicMetre,
        "mg/m³" | "mg/m3" => Unit::MilligramPerCubicMetre,
        "dB" | "dBA" | "dB(A)" => Unit::Decibel,
        _ => return None,
    })
}

fn unit_word(w: &str) -> Option<Unit> {
    Some(match w {
        "c" | "degc" | "celsius" | "cel" => Unit::Celsius,
        "f" | "degf" | "fahrenheit" => Unit::Fahrenheit,
        "k" | "kelvin" => Unit::Kelvin,
        "v" | "volt" | "volts" | "voltage" => Unit::Volt,
        "mv" | "millivolt" | "millivolts" => Unit::Millivolt,
        "pct" | "percent" | "perc" | "percentage" => Unit::Percent,
        "ppm" => Unit::PartsPerMillion,
        "ppb" => Unit::PartsPerBillion,
        "hpa" => Unit::HectoPascal,
        "pa" => Unit::Pascal,
        "kpa" => Unit::KiloPascal,
        "mbar" => Unit::Millibar,
        "ms" | "mps" => Unit::MetrePerSecond,
        "kmh" | "kph" => Unit::KilometrePerHour,
        "kn" | "kt" | "knots" => Unit::Knot,
        "lux" | "lx" => Unit::Lux,
        "ug" | "ugm3" => Unit::MicrogramPerCubicMetre,
        "mg" | "mgm3" => Unit::MilligramPerCubicMetre,
        "mm" => Unit::Millimetre,
        "mmh" => Unit::MillimetrePerHour,
        "wm2" => Unit::WattPerSquareMetre,
        "db" | "dba" => Unit::Decibel,
        "deg" | "degree" | "degrees" => Unit::Degree,
        _ => return None,
    })
}

/// Words that make a key a statistic, a setting or a state rather than a reading.
const NOT_A_READING: &[&str] = &[
    "min",
    "max",
    "minimum",
    "maximum",
    "delta",
    "alarm",
    "alarms",
    "alert",
    "alerts",
    "threshold",
    "limit",
    "setpoint",
    "offset",
    "target",
    "diff",
    "change",
    "changed",
    "changes",
    "event",
    "trigger",
    "triggered",
    "calibration",
    "interval",
    "period",
    "config",
    "enable",
    "enabled",
    "status",
    "state",
    "flag",
    "flags",
    "mode",
];

/// The unit the key names if it is of `dimension_of`'s kind, else `default`; a unit word
/// of another dimension (a `_mV` on a temperature) makes the key unmappable.
fn unit_or(w: &Words, default: Unit) -> Result<Unit, String> {
    match w.unit() {
        None => Ok(default),
        Some(u) if u.dimension() == default.dimension() => Ok(u),
        Some(u) => {
            Err(format!("the key (or the unit beside its value) names the unit {u}, which does not measure what {default} does"))
        }
    }
}

fn found(quantity: &'static str, unit: Result<Unit, String>) -> Decision {
    Some(unit.map(|u| (quantity, u)))
}

/// The `decodeUplink` key table, in the order it is tried.
pub const PATTERNS: &[Pattern] = &[
    Pattern {
        describe: "min, max, delta, alarm, threshold, limit, setpoint, offset, target, interval, status, mode ... → not a reading",
        decide: |w| w.has(NOT_A_READING).then(|| Err("a statistic, setting or state, not a reading".to_owned())),
    },
    Pattern {
        describe: "dew, dewpoint → dew_point_temperature (°C unless the key says F or K)",
        decide: |w| (w.has(&["dew", "dewpoint"])).then(|| unit_or(w, Unit::Celsius).map(|u| ("dew_point_temperature", u))),
    },
    Pattern {
        describe: "heat + index → heat_index (°C unless the key says F or K)",
        decide: |w| (w.has(&["heat"]) && w.has(&["index"])).then(|| unit_or(w, Unit::Celsius).map(|u| ("heat_index", u))),
    },
    Pattern {
        describe: "temperature, temp (+ soil → soil_temperature; + ext, external, probe, ds18b20 → probe_temperature; + internal, cpu, board, device, chip, mcu → not mapped; + water → not mapped) → air_temperature (°C unless the key says F or K)",
        decide: |w| {
            if !w.has(&["temperature", "temp", "tempc", "tempf", "airtemp", "airtemperature"]) {
                return None;
            }
            let unit = if w.has(&["tempf"]) { Ok(Unit::Fahrenheit) } else { unit_or(w, Unit::Celsius) };
            if w.has(&["internal", "int", "cpu", "board", "device", "chip", "mcu", "core", "system", "sys", "module"]) {
                return Some(Err("the device's own temperature, not the air's".to_owned()));
            }
            if w.has(&["water", "liquid", "pipe", "surface", "object", "ir"]) {
                return Some(Err("the temperature of a medium other than air or soil".to_owned()));
            }
            if w.has(&["soil", "ground"]) {
                return found("soil_temperature", unit);
            }
            if w.has(&["ext", "external", "probe", "ds18b20", "ds", "ds18", "pt100", "pt1000", "ntc"]) {
                return found("probe_temperature", unit);
            }
            found("air_temperature", unit)
        },
    },
    Pattern {
        describe: "soil + moisture, humidity, water, vwc; or vwc → volume_fraction_of_condensed_water_in_soil (%)",
        decide: |w| {
            let soil = (w.has(&["soil", "ground"]) && w.has(&["moisture", "humidity", "hum", "water", "vwc", "wc"])) || w.has(&["vwc"]);
            soil.then(|| unit_or(w, Unit::Percent).map(|u| ("volume_fraction_of_condensed_water_in_soil", u)))
        },
    },
    Pattern {
        describe: "humidity, hum, humi, rh, relhum → relative_humidity (%)",
        decide: |w| {
            (w.has(&["humidity", "hum", "humi", "rh", "relhum", "relativehumidity"]) && !w.has(&["absolute", "abs"]))
                .then(|| unit_or(w, Unit::Percent).map(|u| ("relative_humidity", u)))
        },
    },
    Pattern {
        describe: "pressure, press, baro, barometer, barometric → air_pressure (hPa unless the key says Pa, kPa or mbar)",
        decide: |w| {
            if !w.has(&["pressure", "press", "baro", "barometer", "barometric", "airpressure"]) {
                return None;
            }
            if w.has(&["water", "pipe", "tire", "tyre", "differential", "diff", "vapor", "vapour"]) {
                return Some(Err("a pressure other than the air's".to_owned()));
            }
            found("air_pressure", unit_or(w, Unit::HectoPascal))
        },
    },
    Pattern {
        describe: "co2 → mole_fraction_of_carbon_dioxide_in_air (ppm unless the key says %)",
        decide: |w| w.words.iter().any(|x| x.starts_with("co2")).then(|| found("mole_fraction_of_carbon_dioxide_in_air", unit_or(w, Unit::PartsPerMillion)))?,
    },
    Pattern {
        describe: "pm2_5, pm25, pm2p5 / pm10 / pm1, pm1_0 (not counts) → mass concentration of PM2.5 / PM10 / PM1 (µg/m³ unless the key says mg)",
        decide: |w| {
            let j = w.joined();
            let q = if j.contains("pm2_5") || j.contains("pm25") || j.contains("pm2p5") {
                "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air"
            } else if j.contains("pm1_0") || j.contains("pm1p0") || (w.has(&["pm1"]) && !j.contains("pm10")) {
                "mass_concentration_of_pm1_ambient_aerosol_particles_in_air"
            } else if j.contains("pm10") {
                "mass_concentration_of_pm10_ambient_aerosol_particles_in_air"
            } else {
                return None;
            };
            if w.has(&["count", "number", "nc", "particles", "pcs"]) {
                return Some(Err("a particle count, not a mass concentration".to_owned()));
            }
            found(q, unit_or(w, Unit::MicrogramPerCubicMetre))
        },
    },
    Pattern {
        describe: "tvoc, voc with ppb or ppm in the key → volume_mixing_ratio_of_tvoc_in_air (without a unit: not mapped, it may be an index or µg/m³)",
        decide: |w| {
            if !w.has(&["tvoc", "voc"]) {
                return None;
            }
            match w.unit() {
                Some(u @ (Unit::PartsPerBillion | Unit::PartsPerMillion)) => found("volume_mixing_ratio_of_tvoc_in_air", Ok(u)),
                _ => Some(Err("TVOC without ppb or ppm in the key: it may be an index or a mass concentration".to_owned())),
            }
        },
    },
    Pattern {
        describe: "lux, illuminance, illumination, light + lux/lx → illuminance (lx)",
        decide: |w| {
            let lux = w.has(&["lux", "illuminance", "illumination", "lightintensity"]) || (w.has(&["light"]) && w.unit() == Some(Unit::Lux));
            lux.then(|| found("illuminance", unit_or(w, Unit::Lux)))?
        },
    },
    Pattern {
        describe: "uvi, uvindex, uv + index → ultraviolet_index",
        decide: |w| (w.has(&["uvi", "uvindex"]) || (w.has(&["uv"]) && w.has(&["index"]))).then_some(Ok(("ultraviolet_index", Unit::One))),
    },
    Pattern {
        describe: "solar, radiation, irradiance, irradiation → surface_downwelling_shortwave_flux_in_air (W/m²)",
        decide: |w| {
            w.has(&["solar", "radiation", "irradiance", "irradiation", "pyranometer"])
                .then(|| found("surface_downwelling_shortwave_flux_in_air", unit_or(w, Unit::WattPerSquareMetre)))?
        },
    },
    Pattern {
        describe: "wind + gust → wind_speed_of_gust; wind + dir, direction, heading → wind_from_direction (°); wind + north / east → northward_wind / eastward_wind; wind + speed, spd, velocity, or wind alone → wind_speed (m/s unless the key says km/h or kn)",
        decide: |w| {
            if !w.has(&["wind", "windspeed", "winddirection", "gust"]) {
                return None;
            }
            if w.has(&["dir", "direction", "heading", "winddirection"]) {
                return found("wind_from_direction", unit_or(w, Unit::Degree));
            }
            if w.has(&["north", "northward"]) {
                return found("northward_wind", unit_or(w, Unit::MetrePerSecond));
            }
            if w.has(&["east", "eastward"]) {
                return found("eastward_wind", unit_or(w, Unit::MetrePerSecond));
            }
            if w.has(&["gust"]) {
                return found("wind_speed_of_gust", unit_or(w, Unit::MetrePerSecond));
            }
            found("wind_speed", unit_or(w, Unit::MetrePerSecond))
        },
    },
    Pattern {
        describe: "rain, rainfall, precipitation + rate, intensity or mm/h → rainfall_rate; + mm → precipitation_amount (without a unit: not mapped)",
        decide: |w| {
            if !w.has(&["rain", "rainfall", "precipitation", "precip"]) {
                return None;
            }
            if w.has(&["rate", "intensity"]) || w.unit() == Some(Unit::MillimetrePerHour) {
                return found("rainfall_rate", unit_or(w, Unit::MillimetrePerHour));
            }
            match w.unit() {
                Some(Unit::Millimetre) => found("precipitation_amount", Ok(Unit::Millimetre)),
                _ => Some(Err("rain without mm or a rate in the key: it may be a tip count".to_owned())),
            }
        },
    },
    Pattern {
        describe: "bat, batt, battery, vbat + a voltage unit (v, volt, mv) → battery_voltage; + pct, percent, level, soc → battery_level (%); without a unit: not mapped",
        decide: |w| {
            if !w.has(&["bat", "batt", "battery", "vbat", "batv", "vbatt", "battv", "batvolt", "batteryvoltage"]) {
                return None;
            }
            if w.has(&["vbat", "batv", "vbatt", "battv", "batvolt", "batteryvoltage"]) && w.unit().is_none() {
                return found("battery_voltage", Ok(Unit::Volt));
            }
            match w.unit() {
                Some(u @ (Unit::Volt | Unit::Millivolt)) => found("battery_voltage", Ok(u)),
                Some(Unit::Percent) => found("battery_level", Ok(Unit::Percent)),
                None if w.has(&["level", "soc", "capacity", "remaining"]) => found("battery_level", Ok(Unit::Percent)),
                _ => Some(Err("a battery value without a unit (volts or percent?)".to_owned())),
            }
        },
    },
    Pattern {
        describe: "noise, sound, laeq, leq, spl → sound_pressure_level (dB)",
        decide: |w| {
            w.has(&["noise", "sound", "laeq", "leq", "spl", "lafmax"]).then(|| found("sound_pressure_level", unit_or(w, Unit::Decibel)))?
        },
    },
    Pattern {
        describe: "lightning, strike + count, strikes → lightning_strike_count (distances not mapped)",
        decide: |w| {
            if !w.has(&["lightning", "strike", "strikes"]) {
                return None;
            }
            if w.has(&["distance", "dist", "km"]) {
                return Some(Err("a lightning distance, which has no quantity".to_owned()));
            }
            w.has(&["count", "strikes", "number"]).then_some(Ok(("lightning_strike_count", Unit::One)))
        },
    },
];

/// A key mapped to a quantity: one `[[layouts.fields]]` of the generated profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub pointer: String,
    pub quantity: Quantity,
    pub unit: Unit,
    pub scale: Option<f64>,
    /// Why: the table row or override that chose it, for the report.
    pub rule: String,
}

impl Mapped {
    /// A value of the codec's output in the quantity's canonical unit.
    pub fn canonical(&self, raw: f64) -> f64 {
        let to = Unit::parse(self.quantity.unit()).unwrap_or(self.unit);
        let v = raw * self.scale.unwrap_or(1.0);
        Conversion::between(self.unit, to).map_or(v, |c| c.apply(v))
    }
}

/// A key that is not mapped, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmapped {
    pub pointer: String,
    pub reason: String,
}

/// Per-profile choices that replace the tables: `[profiles.<id>]` of the overrides file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// By profile id.
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileOverrides>,
}

/// The overrides of one generated profile.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileOverrides {
    /// `false`: map `decodeUplink`'s keys even though the codec has `normalizeUplink`.
    pub normalize: Option<bool>,
    /// By JSON pointer into the mapped output (`/TempC_SHT`, or `/air/temperature` when
    /// normalized): a field, or `"ignore"` to leave the key out without listing it unmapped.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyOverride>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum KeyOverride {
    /// `"ignore"`.
    Ignore(IgnoreWord),
    Field(FieldOverride),
}

/// `{ quantity = "...", unit = "...", scale = ... }`: what a key is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldOverride {
    pub quantity: Quantity,
    /// UCUM code of the key's values; default the quantity's canonical unit.
    pub unit: Option<Unit>,
    /// Multiplier applied before the unit conversion.
    pub scale: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub enum IgnoreWord {
    #[serde(rename = "ignore")]
    Ignore,
}

/// The numeric keys of example outputs.
#[derive(Debug, Default)]
pub struct Keys {
    /// Pointer → the values seen (numeric strings, as `toFixed` makes them, count as numbers).
    pub values: BTreeMap<String, Vec<f64>>,
    /// Pointer → the unit the codec states beside the value: a `unit` text next to a `value`
    /// key (`{displayName, value, unit}`), when it is one [`unit_text`] knows.
    pub units: BTreeMap<String, Unit>,
}

/// The numeric leaves of example outputs. Keys holding only text or booleans are states, not
/// readings, and are not listed.
pub fn numeric_keys<'a>(outputs: impl IntoIterator<Item = &'a Value>) -> Keys {
    let mut keys = Keys::default();
    for v in outputs {
        collect(v, &mut String::new(), &mut keys, 0);
    }
    keys
}

fn collect(v: &Value, path: &mut String, keys: &mut Keys, depth: usize) {
    if depth > 16 {
        return;
    }
    let len = path.len();
    match v {
        Value::Object(map) => {
            if let (Some(unit), true) = (map.get("unit").and_then(Value::as_str).and_then(unit_text), map.contains_key("value")) {
                keys.units.insert(format!("{path}/value"), unit);
            }
            for (k, item) in map {
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                collect(item, path, keys, depth + 1);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate().take(64) {
                path.push_str(&format!("/{i}"));
                collect(item, path, keys, depth + 1);
                path.truncate(len);
            }
        }
        _ => {
            if let Some(x) = number(v) {
                keys.values.entry(path.clone()).or_default().push(x);
            }
        }
    }
}

/// A JSON number, or a string holding one.
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

/// Maps the keys found in the examples (`keys`, from [`numeric_keys`]); `normalized` says which
/// table applies. Returns the fields (each quantity once) and the keys left unmapped.
pub fn map_keys(keys: &Keys, normalized: bool, overrides: Option<&ProfileOverrides>) -> (Vec<Mapped>, Vec<Unmapped>) {
    let mut candidates: Vec<(Mapped, bool)> = Vec::new();
    let mut unmapped = Vec::new();
    for (pointer, values) in &keys.values {
        let overridden = overrides.and_then(|o| o.keys.get(pointer));
        let chosen = match overridden {
            Some(KeyOverride::Ignore(_)) => continue,
            Some(KeyOverride::Field(FieldOverride { quantity, unit, scale })) => {
                let unit = unit.unwrap_or_else(|| Unit::parse(quantity.unit()).unwrap_or(Unit::One));
                match Unit::parse(quantity.unit())
                    .map_err(|e| e.to_string())
                    .and_then(|to| Conversion::between(unit, to).map_err(|e| e.to_string()))
                {
                    Ok(_) => Ok(Mapped {
                        pointer: pointer.clone(),
                        quantity: *quantity,
                        unit,
                        scale: *scale,
                        rule: "override".to_owned(),
                    }),
                    Err(e) => Err(format!("the override does not fit: {e}")),
                }
            }
            None => table_choice(pointer, keys.units.get(pointer).copied(), normalized).and_then(|(q, unit, rule)| {
                let quantity = Quantity::by_name(q).ok_or_else(|| format!("unknown quantity {q}"))?;
                let m = Mapped { pointer: pointer.clone(), quantity, unit, scale: None, rule };
                plausible(&m, values)?;
                Ok(m)
            }),
        };
        match chosen {
            Ok(m) => candidates.push((m, overridden.is_some())),
            Err(reason) => unmapped.push(Unmapped { pointer: pointer.clone(), reason }),
        }
    }
    // Each quantity once: an override first, else the key of fewest words (`temperature`
    // before `temperature_sht_2`), else the first in pointer order; the others are listed.
    let rank = |(m, overridden): &(Mapped, bool)| (!*overridden, Words::of(&m.pointer).words.len());
    let mut fields: Vec<Mapped> = Vec::new();
    for (i, candidate) in candidates.iter().enumerate() {
        let m = &candidate.0;
        let best = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.0.quantity == m.quantity)
            .min_by_key(|(j, c)| (rank(c), *j))
            .map(|(j, _)| j);
        if best == Some(i) {
            fields.push(m.clone());
        } else if let Some(j) = best {
            unmapped.push(Unmapped {
                pointer: m.pointer.clone(),
                reason: format!("also {} like {}: give an override to choose", m.quantity, candidates[j].0.pointer),
            });
        }
    }
    unmapped.sort_by(|a, b| a.pointer.cmp(&b.pointer));
    (fields, unmapped)
}

/// What the tables say of one key: `(quantity, unit, rule)`, or why it is not mapped.
fn table_choice(pointer: &str, unit_beside: Option<Unit>, normalized: bool) -> Result<(&'static str, Unit, String), String> {
    if normalized {
        let dotted = pointer.trim_start_matches('/').replace('/', ".");
        return NORMALIZED
            .iter()
            .find(|(key, _, _)| *key == dotted)
            .map(|(key, q, u)| (*q, Unit::parse(u).unwrap_or(Unit::One), format!("normalized {key}")))
            .ok_or_else(|| "no climate quantity for this key of the normalized payload".to_owned());
    }
    let words = Words { unit_beside, ..Words::of(pointer) };
    for (i, p) in PATTERNS.iter().enumerate() {
        if let Some(decision) = (p.decide)(&words) {
            return decision.map(|(q, u)| (q, u, format!("pattern {}", i + 1)));
        }
    }
    Err("no pattern of the key table matches".to_owned())
}

/// Every example value, converted, lies in the quantity's plausible range: a unit assumed
/// wrongly (Pa read as hPa, mV as V) shows here rather than in stored readings.
fn plausible(m: &Mapped, values: &[f64]) -> Result<(), String> {
    let def = m.quantity.def();
    for &raw in values {
        let v = m.canonical(raw);
        if !(def.min..=def.max).contains(&v) {
            return Err(format!(
                "an example value {raw} read as {} is {v} {}, outside the plausible range {} to {} of {}: check the unit",
                m.unit,
                m.quantity.unit(),
                def.min,
                def.max,
                m.quantity
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decide(key: &str) -> Result<(String, String), String> {
        table_choice(key, None, false).map(|(q, u, _)| (q.to_owned(), u.code().to_owned()))
    }

    fn ok(q: &str, u: &str) -> Result<(String, String), String> {
        Ok((q.to_owned(), u.to_owned()))
    }

    #[test]
    fn vendor_key_names_map_by_their_words() {
        assert_eq!(decide("/TempC_SHT"), ok("air_temperature", "Cel"));
        assert_eq!(decide("/temperatureF"), ok("air_temperature", "[degF]"));
        assert_eq!(decide("/env/temperature"), ok("air_temperature", "Cel"));
        assert_eq!(decide("/TempC_DS"), ok("probe_temperature", "Cel"));
        assert_eq!(decide("/soilTemperature"), ok("soil_temperature", "Cel"));
        assert_eq!(decide("/Hum_SHT"), ok("relative_humidity", "%"));
        assert_eq!(decide("/soil_moisture"), ok("volume_fraction_of_condensed_water_in_soil", "%"));
        assert_eq!(decide("/CO2_ppm"), ok("mole_fraction_of_carbon_dioxide_in_air", "ppm"));
        assert_eq!(decide("/pressure_pa"), ok("air_pressure", "Pa"));
        assert_eq!(decide("/pm2_5"), ok("mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air", "ug/m3"));
        assert_eq!(decide("/PM10"), ok("mass_concentration_of_pm10_ambient_aerosol_particles_in_air", "ug/m3"));
        assert_eq!(decide("/pm1_0"), ok("mass_concentration_of_pm1_ambient_aerosol_particles_in_air", "ug/m3"));
        assert_eq!(decide("/windSpeed_kmh"), ok("wind_speed", "km/h"));
        assert_eq!(decide("/wind_direction"), ok("wind_from_direction", "deg"));
        assert_eq!(decide("/Bat_V"), ok("battery_voltage", "V"));
        assert_eq!(decide("/battery_mV"), ok("battery_voltage", "mV"));
        assert_eq!(decide("/BatV"), ok("battery_voltage", "V"));
        assert_eq!(decide("/battery_level"), ok("battery_level", "%"));
        assert_eq!(decide("/TVOC_ppb"), ok("volume_mixing_ratio_of_tvoc_in_air", "ppb"));
        assert_eq!(decide("/rain_mm"), ok("precipitation_amount", "mm"));
        for unmapped in
            ["/battery", "/tvoc", "/max_temp", "/temp_alarm", "/cpu_temperature", "/rain", "/rssi", "/pm25_count", "/temp_mV"]
        {
            assert!(decide(unmapped).is_err(), "{unmapped}: {:?}", decide(unmapped));
        }
    }

    #[test]
    fn a_unit_stated_beside_the_value_is_used() {
        let out = json!({
            "atmospheric_pressure": {"displayName": "Atmospheric pressure", "unit": "kPa", "value": 95.96},
            "precipitation": {"unit": "mm", "value": 0},
            "north_wind_speed": {"unit": "m⋅s⁻¹", "value": 0.08},
            "air_temperature": {"unit": "furlongs", "value": 21.5},
            "humidity": {"unit": "°C", "value": 30.0}
        });
        let keys = numeric_keys([&out]);
        let (fields, unmapped) = map_keys(&keys, false, None);
        let got: Vec<(&str, &str, &str)> =
            fields.iter().map(|f| (f.pointer.as_str(), f.quantity.name(), f.unit.code())).collect();
        assert_eq!(
            got,
            [
                ("/air_temperature/value", "air_temperature", "Cel"),
                ("/atmospheric_pressure/value", "air_pressure", "kPa"),
                ("/north_wind_speed/value", "northward_wind", "m/s"),
                ("/precipitation/value", "precipitation_amount", "mm"),
            ]
        );
        assert!((fields[1].canonical(95.96) - 959.6).abs() < 1e-9);
        assert_eq!(unmapped.len(), 1, "{unmapped:?}");
        assert!(unmapped[0].reason.contains("names the unit Cel"), "{unmapped:?}");
    }

    #[test]
    fn normalized_keys_map_by_the_table() {
        let keys = numeric_keys([
            &json!({"air": {"temperature": 21.5, "location": "indoor", "pressure": 1013}, "soil": {"ec": 1.2}, "battery": 3.1}),
        ]);
        let (fields, unmapped) = map_keys(&keys, true, None);
        let got: Vec<(&str, &str)> = fields.iter().map(|f| (f.pointer.as_str(), f.quantity.name())).collect();
        assert_eq!(
            got,
            [("/air/pressure", "air_pressure"), ("/air/temperature", "air_temperature"), ("/battery", "battery_voltage")]
        );
        assert_eq!(unmapped.len(), 1);
        assert_eq!(unmapped[0].pointer, "/soil/ec");
    }

    #[test]
    fn implausible_values_duplicates_and_overrides() {
        // 101325 read as hPa is not an air pressure: the key really is in Pa.
        let keys = numeric_keys([
            &json!({"pressure": 101325, "temperature": "21.5", "air_temp_2": 20, "battery": 3.3, "tempChanged": 1}),
        ]);
        let (fields, unmapped) = map_keys(&keys, false, None);
        // Of two temperatures the plainer name wins; a change flag is no temperature.
        assert_eq!(fields.iter().map(|f| f.pointer.as_str()).collect::<Vec<_>>(), ["/temperature"]);
        let reasons: Vec<String> = unmapped.iter().map(|u| format!("{} {}", u.pointer, u.reason)).collect();
        assert!(reasons[0].starts_with("/air_temp_2 also air_temperature like /temperature"), "{reasons:?}");
        assert!(reasons[1].starts_with("/battery a battery value without a unit"), "{reasons:?}");
        assert!(reasons[2].contains("outside the plausible range"), "{reasons:?}");
        assert!(reasons[3].starts_with("/tempChanged a statistic, setting or state"), "{reasons:?}");
        let overrides: Overrides = toml::from_str(
            "[profiles.acme-t1.keys]\n\"/pressure\" = { quantity = \"air_pressure\", unit = \"Pa\" }\n\"/air_temp_2\" = \"ignore\"\n\"/tempChanged\" = \"ignore\"\n\"/battery\" = { quantity = \"battery_voltage\" }\n",
        )
        .unwrap();
        let (fields, unmapped) = map_keys(&keys, false, overrides.profiles.get("acme-t1"));
        let got: Vec<(&str, &str)> = fields.iter().map(|f| (f.pointer.as_str(), f.unit.code())).collect();
        assert_eq!(got, [("/battery", "V"), ("/pressure", "Pa"), ("/temperature", "Cel")]);
        assert!(unmapped.is_empty(), "{unmapped:?}");
        assert_eq!(fields[1].canonical(101325.0), 1013.25);
    }
}
