//! Units a profile may declare (UCUM codes) and the linear conversion of a value to the canonical unit of its quantity.
//!
//! Conversions are resolved once, when a profile is loaded; decoding then only evaluates
//! `(x + pre) * mul / div + post`. Factors are kept as a multiplier *and* a divisor rather than
//! one float so that the common cases (mV → V is `/1000`, km/h → m/s is `*5/18`) round exactly
//! like the vendor's own arithmetic: `3062 / 1000` is the double nearest 3.062, whereas
//! `3062 * 0.001` is not, and readings such as `3.0620000000000003` would leak into the API.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// The units known to profiles, by UCUM code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Celsius,
    Fahrenheit,
    Kelvin,
    Percent,
    PartsPerMillion,
    PartsPerBillion,
    One,
    HectoPascal,
    Pascal,
    KiloPascal,
    Millibar,
    MetrePerSecond,
    KilometrePerHour,
    Knot,
    Degree,
    Millimetre,
    WattPerSquareMetre,
    Lux,
    MicrogramPerCubicMetre,
    MilligramPerCubicMetre,
    Volt,
    Millivolt,
    Decibel,
    MillimetrePerHour,
}

/// What a unit measures; only units of the same dimension convert into each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Temperature,
    /// Dimensionless ratios (`%`, `ppm`, `ppb`, `1`): UCUM treats them as one dimension, and a
    /// CO2 sensor reporting `%` (volume percent) legitimately converts to `ppm`.
    Ratio,
    Pressure,
    Speed,
    Angle,
    Length,
    Irradiance,
    Illuminance,
    MassConcentration,
    Voltage,
    /// Logarithmic: no linear conversion to anything else exists.
    SoundLevel,
    PrecipitationRate,
}

/// `(x + pre) * mul / div + post`, resolved at load time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conversion {
    pub pre: f64,
    pub mul: f64,
    pub div: f64,
    pub post: f64,
}

/// Why a unit could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnitError {
    #[error("unknown unit {code:?}{hint}; known UCUM codes: {known}", hint = hint(code), known = known_codes())]
    Unknown { code: String },
    #[error("unit {from} ({from_dim:?}) cannot be converted to {to} ({to_dim:?})", from_dim = from.dimension(), to_dim = to.dimension())]
    Incompatible { from: Unit, to: Unit },
}

const ALL: &[Unit] = &[
    Unit::Celsius,
    Unit::Fahrenheit,
    Unit::Kelvin,
    Unit::Percent,
    Unit::PartsPerMillion,
    Unit::PartsPerBillion,
    Unit::One,
    Unit::HectoPascal,
    Unit::Pascal,
    Unit::KiloPascal,
    Unit::Millibar,
    Unit::MetrePerSecond,
    Unit::KilometrePerHour,
    Unit::Knot,
    Unit::Degree,
    Unit::Millimetre,
    Unit::WattPerSquareMetre,
    Unit::Lux,
    Unit::MicrogramPerCubicMetre,
    Unit::MilligramPerCubicMetre,
    Unit::Volt,
    Unit::Millivolt,
    Unit::Decibel,
    Unit::MillimetrePerHour,
];

impl Unit {
    /// Every known unit, in the order of the reference documentation.
    pub fn all() -> &'static [Unit] {
        ALL
    }

    /// Parses a UCUM code exactly (UCUM is case-sensitive: `Pa` and `PA` differ).
    pub fn parse(code: &str) -> Result<Unit, UnitError> {
        ALL.iter().copied().find(|u| u.code() == code).ok_or_else(|| UnitError::Unknown { code: code.to_owned() })
    }

    /// The UCUM code.
    pub fn code(self) -> &'static str {
        match self {
            Unit::Celsius => "Cel",
            Unit::Fahrenheit => "[degF]",
            Unit::Kelvin => "K",
            Unit::Percent => "%",
            Unit::PartsPerMillion => "ppm",
            Unit::PartsPerBillion => "ppb",
            Unit::One => "1",
            Unit::HectoPascal => "hPa",
            Unit::Pascal => "Pa",
            Unit::KiloPascal => "kPa",
            Unit::Millibar => "mbar",
            Unit::MetrePerSecond => "m/s",
            Unit::KilometrePerHour => "km/h",
            Unit::Knot => "[kn_i]",
            Unit::Degree => "deg",
            Unit::Millimetre => "mm",
            Unit::WattPerSquareMetre => "W/m2",
            Unit::Lux => "lx",
            Unit::MicrogramPerCubicMetre => "ug/m3",
            Unit::MilligramPerCubicMetre => "mg/m3",
            Unit::Volt => "V",
            Unit::Millivolt => "mV",
            Unit::Decibel => "dB",
            Unit::MillimetrePerHour => "mm/h",
        }
    }

    pub fn dimension(self) -> Dimension {
        use Dimension as D;
        match self {
            Unit::Celsius | Unit::Fahrenheit | Unit::Kelvin => D::Temperature,
            Unit::Percent | Unit::PartsPerMillion | Unit::PartsPerBillion | Unit::One => D::Ratio,
            Unit::HectoPascal | Unit::Pascal | Unit::KiloPascal | Unit::Millibar => D::Pressure,
            Unit::MetrePerSecond | Unit::KilometrePerHour | Unit::Knot => D::Speed,
            Unit::Degree => D::Angle,
            Unit::Millimetre => D::Length,
            Unit::WattPerSquareMetre => D::Irradiance,
            Unit::Lux => D::Illuminance,
            Unit::MicrogramPerCubicMetre | Unit::MilligramPerCubicMetre => D::MassConcentration,
            Unit::Volt | Unit::Millivolt => D::Voltage,
            Unit::Decibel => D::SoundLevel,
            Unit::MillimetrePerHour => D::PrecipitationRate,
        }
    }

    /// The conversion of this unit to the reference unit of its dimension, as
    /// `(pre, mul, div)`: `reference = (x + pre) * mul / div`.
    fn to_reference(self) -> (f64, f64, f64) {
        match self {
            // Temperature reference: Cel.
            Unit::Celsius => (0.0, 1.0, 1.0),
            Unit::Fahrenheit => (-32.0, 5.0, 9.0),
            Unit::Kelvin => (-273.15, 1.0, 1.0),
            // Ratio reference: 1.
            Unit::One => (0.0, 1.0, 1.0),
            Unit::Percent => (0.0, 1.0, 100.0),
            Unit::PartsPerMillion => (0.0, 1.0, 1e6),
            Unit::PartsPerBillion => (0.0, 1.0, 1e9),
            // Pressure reference: hPa (1 mbar is exactly 1 hPa).
            Unit::HectoPascal | Unit::Millibar => (0.0, 1.0, 1.0),
            Unit::Pascal => (0.0, 1.0, 100.0),
            Unit::KiloPascal => (0.0, 10.0, 1.0),
            // Speed reference: m/s; the international knot is 1852 m per hour.
            Unit::MetrePerSecond => (0.0, 1.0, 1.0),
            Unit::KilometrePerHour => (0.0, 1000.0, 3600.0),
            Unit::Knot => (0.0, 1852.0, 3600.0),
            // Mass concentration reference: ug/m3.
            Unit::MicrogramPerCubicMetre => (0.0, 1.0, 1.0),
            Unit::MilligramPerCubicMetre => (0.0, 1000.0, 1.0),
            // Voltage reference: V.
            Unit::Volt => (0.0, 1.0, 1.0),
            Unit::Millivolt => (0.0, 1.0, 1000.0),
            // Alone in their dimension.
            Unit::Degree | Unit::Millimetre | Unit::WattPerSquareMetre | Unit::Lux | Unit::Decibel | Unit::MillimetrePerHour => {
                (0.0, 1.0, 1.0)
            }
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Unit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Unit::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Conversion {
    pub const IDENTITY: Conversion = Conversion { pre: 0.0, mul: 1.0, div: 1.0, post: 0.0 };

    /// The conversion from `from` to `to`; an error when they measure different things.
    pub fn between(from: Unit, to: Unit) -> Result<Conversion, UnitError> {
        if from.dimension() != to.dimension() {
            return Err(UnitError::Incompatible { from, to });
        }
        if from == to {
            return Ok(Conversion::IDENTITY);
        }
        // x → reference: (x + pre_f) * mul_f / div_f; reference → to: y * div_t / mul_t - pre_t.
        let (pre_f, mul_f, div_f) = from.to_reference();
        let (pre_t, mul_t, div_t) = to.to_reference();
        let (mul, div) = reduce(mul_f * div_t, div_f * mul_t);
        Ok(Conversion { pre: pre_f, mul, div, post: -pre_t })
    }

    pub fn apply(&self, x: f64) -> f64 {
        (x + self.pre) * self.mul / self.div + self.post
    }

    pub fn is_identity(&self) -> bool {
        *self == Conversion::IDENTITY
    }
}

/// Cancels common factors of two integral floats (1e6/1e9 becomes 1/1000), so that the
/// product `x * mul` stays exact for the raw integers sensors send.
fn reduce(mul: f64, div: f64) -> (f64, f64) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: beyond this integers are not exact.
    let integral = |v: f64| v.fract() == 0.0 && v > 0.0 && v < EXACT;
    if !(integral(mul) && integral(div)) {
        return (mul, div);
    }
    let (mut a, mut b) = (mul as u64, div as u64);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    let g = a as f64;
    (mul / g, div / g)
}

fn known_codes() -> String {
    ALL.iter().map(|u| u.code()).collect::<Vec<_>>().join(", ")
}

/// Points at the UCUM code when someone writes the everyday spelling.
fn hint(code: &str) -> String {
    let suggestion = match code {
        "°C" | "C" | "degC" | "celsius" | "Celsius" => Some("Cel"),
        "°F" | "F" | "degF" | "fahrenheit" => Some("[degF]"),
        "kn" | "kt" | "knot" | "knots" => Some("[kn_i]"),
        "°" | "degree" | "degrees" => Some("deg"),
        "µg/m3" | "µg/m³" | "ug/m³" => Some("ug/m3"),
        "W/m²" | "W/m^2" => Some("W/m2"),
        "m/s²" | "mps" => Some("m/s"),
        "" => None,
        other => ALL.iter().map(|u| u.code()).find(|c| c.eq_ignore_ascii_case(other)),
    };
    match suggestion {
        Some(s) => format!(" (did you mean {s:?}?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Quantity;

    fn convert(from: &str, to: &str, x: f64) -> f64 {
        Conversion::between(Unit::parse(from).unwrap(), Unit::parse(to).unwrap()).unwrap().apply(x)
    }

    #[test]
    fn every_canonical_unit_of_the_model_is_known() {
        for q in Quantity::all() {
            assert!(Unit::parse(q.unit()).is_ok(), "{q}: {}", q.unit());
        }
    }

    #[test]
    fn codes_round_trip() {
        for &u in Unit::all() {
            assert_eq!(Unit::parse(u.code()), Ok(u));
            assert!(Conversion::between(u, u).unwrap().is_identity());
        }
    }

    #[test]
    fn temperatures_convert_exactly_at_fixed_points() {
        assert_eq!(convert("[degF]", "Cel", 212.0), 100.0);
        assert_eq!(convert("[degF]", "Cel", 32.0), 0.0);
        assert_eq!(convert("[degF]", "Cel", -40.0), -40.0);
        assert_eq!(convert("K", "Cel", 273.15), 0.0);
        assert_eq!(convert("Cel", "[degF]", 100.0), 212.0);
        assert!((convert("K", "[degF]", 373.15) - 212.0).abs() < 1e-9);
    }

    #[test]
    fn factors_round_like_division() {
        assert_eq!(convert("mV", "V", 3062.0), 3.062);
        assert_eq!(convert("Pa", "hPa", 101325.0), 1013.25);
        assert_eq!(convert("kPa", "hPa", 101.3), 1013.0);
        assert_eq!(convert("mbar", "hPa", 1000.5), 1000.5);
        assert_eq!(convert("km/h", "m/s", 36.0), 10.0);
        assert!((convert("[kn_i]", "m/s", 1.0) - 0.514_444_444_444).abs() < 1e-9);
        assert_eq!(convert("ppb", "ppm", 400.0), 0.4);
        assert_eq!(convert("%", "ppm", 0.04), 400.0);
        assert_eq!(convert("1", "%", 0.25), 25.0);
        assert_eq!(convert("mg/m3", "ug/m3", 0.04), 40.0);
    }

    #[test]
    fn other_dimensions_are_refused() {
        let err = Conversion::between(Unit::Millivolt, Unit::Celsius).unwrap_err();
        assert_eq!(err, UnitError::Incompatible { from: Unit::Millivolt, to: Unit::Celsius });
        assert!(err.to_string().contains("mV"), "{err}");
        assert!(Conversion::between(Unit::Decibel, Unit::Percent).is_err());
        assert!(Conversion::between(Unit::Millimetre, Unit::MillimetrePerHour).is_err());
    }

    #[test]
    fn unknown_codes_get_a_hint() {
        let msg = Unit::parse("°C").unwrap_err().to_string();
        assert!(msg.contains("did you mean \"Cel\""), "{msg}");
        let msg = Unit::parse("HPA").unwrap_err().to_string();
        assert!(msg.contains("did you mean \"hPa\""), "{msg}");
        let msg = Unit::parse("furlong").unwrap_err().to_string();
        assert!(!msg.contains("did you mean") && msg.contains("[degF]"), "{msg}");
    }
}
