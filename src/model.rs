//! The data model every stage shares: devices, quantities with their canonical units, readings and quality flags.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The registry's id of a device (for example `demo-lht65`); stable across network servers.
/// Shared, not copied: every reading of an uplink and every series the quality tests keep
/// holds its device's id, and a clone is a count, not an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(std::sync::Arc<str>);

impl DeviceId {
    /// Device ids go into URLs, store keys and Prometheus labels, so they are kept to a safe alphabet.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 128 {
            return Err(format!("device id must be 1 to 128 characters, got {}", s.len()));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
            return Err(format!("device id {s:?} contains {c:?}; allowed are A-Z a-z 0-9 - _ ."));
        }
        Ok(Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by device look a device up by its text without a count taken and dropped
/// (hashes and order are the text's, as derived).
impl std::borrow::Borrow<str> for DeviceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A LoRaWAN DevEUI: 8 bytes, written as 16 hex digits in either case on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevEui(pub [u8; 8]);

impl DevEui {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.len() != 16 || !s.is_ascii() {
            return Err(format!("DevEUI must be 16 hex digits, got {:?}", s));
        }
        let mut out = [0u8; 8];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| format!("DevEUI {s:?} is not hexadecimal"))?;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for DevEui {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for DevEui {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DevEui::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for DevEui {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a quantity is, in which unit messnetz keeps it, and which values are physically possible.
#[derive(Debug)]
pub struct QuantityDef {
    /// Canonical name: the CF standard name where one exists.
    pub name: &'static str,
    /// UCUM code of the canonical unit.
    pub unit: &'static str,
    /// Lowest physically plausible value, in the canonical unit.
    pub min: f64,
    /// Highest physically plausible value, in the canonical unit.
    pub max: f64,
}

/// The quantities messnetz knows. Names follow the CF standard-name table where it has one;
/// units are UCUM codes. Ranges are the default physical-range test of quality control.
pub const QUANTITIES: &[QuantityDef] = &[
    QuantityDef { name: "air_temperature", unit: "Cel", min: -60.0, max: 60.0 },
    QuantityDef { name: "relative_humidity", unit: "%", min: 0.0, max: 100.0 },
    QuantityDef { name: "air_pressure", unit: "hPa", min: 500.0, max: 1100.0 },
    QuantityDef { name: "wind_speed", unit: "m/s", min: 0.0, max: 75.0 },
    QuantityDef { name: "wind_speed_of_gust", unit: "m/s", min: 0.0, max: 100.0 },
    QuantityDef { name: "wind_from_direction", unit: "deg", min: 0.0, max: 360.0 },
    QuantityDef { name: "precipitation_amount", unit: "mm", min: 0.0, max: 500.0 },
    QuantityDef { name: "rainfall_rate", unit: "mm/h", min: 0.0, max: 500.0 },
    QuantityDef { name: "surface_downwelling_shortwave_flux_in_air", unit: "W/m2", min: 0.0, max: 1500.0 },
    QuantityDef { name: "illuminance", unit: "lx", min: 0.0, max: 200000.0 },
    QuantityDef { name: "ultraviolet_index", unit: "1", min: 0.0, max: 20.0 },
    QuantityDef { name: "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air", unit: "ug/m3", min: 0.0, max: 2000.0 },
    QuantityDef { name: "mass_concentration_of_pm10_ambient_aerosol_particles_in_air", unit: "ug/m3", min: 0.0, max: 2000.0 },
    QuantityDef { name: "mass_concentration_of_pm1_ambient_aerosol_particles_in_air", unit: "ug/m3", min: 0.0, max: 2000.0 },
    QuantityDef { name: "mass_concentration_of_formaldehyde_in_air", unit: "ug/m3", min: 0.0, max: 5000.0 },
    QuantityDef { name: "water_vapor_partial_pressure_in_air", unit: "hPa", min: 0.0, max: 100.0 },
    QuantityDef { name: "northward_wind", unit: "m/s", min: -75.0, max: 75.0 },
    QuantityDef { name: "eastward_wind", unit: "m/s", min: -75.0, max: 75.0 },
    // Not in CF: lightning strikes counted by the sensor during its measurement interval.
    QuantityDef { name: "lightning_strike_count", unit: "1", min: 0.0, max: 100000.0 },
    QuantityDef { name: "mole_fraction_of_carbon_dioxide_in_air", unit: "ppm", min: 0.0, max: 10000.0 },
    QuantityDef { name: "mass_concentration_of_nitrogen_dioxide_in_air", unit: "ug/m3", min: 0.0, max: 2000.0 },
    QuantityDef { name: "mass_concentration_of_ozone_in_air", unit: "ug/m3", min: 0.0, max: 1000.0 },
    QuantityDef { name: "volume_mixing_ratio_of_tvoc_in_air", unit: "ppb", min: 0.0, max: 60000.0 },
    QuantityDef { name: "soil_temperature", unit: "Cel", min: -40.0, max: 80.0 },
    QuantityDef { name: "volume_fraction_of_condensed_water_in_soil", unit: "%", min: 0.0, max: 100.0 },
    QuantityDef { name: "dew_point_temperature", unit: "Cel", min: -80.0, max: 60.0 },
    // Not in CF: the apparent temperature of the U.S. National Weather Service, derived.
    QuantityDef { name: "heat_index", unit: "Cel", min: -80.0, max: 90.0 },
    QuantityDef { name: "sound_pressure_level", unit: "dB", min: 0.0, max: 150.0 },
    // Not in CF: temperature measured by an external probe whose medium the operator chooses.
    QuantityDef { name: "probe_temperature", unit: "Cel", min: -55.0, max: 125.0 },
    // Not in CF: device health.
    QuantityDef { name: "battery_voltage", unit: "V", min: 0.0, max: 15.0 },
    QuantityDef { name: "battery_level", unit: "%", min: 0.0, max: 100.0 },
];

/// A canonical quantity: a cheap handle into [`QUANTITIES`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quantity(u16);

impl Quantity {
    pub fn by_name(name: &str) -> Option<Self> {
        QUANTITIES.iter().position(|q| q.name == name).map(|i| Quantity(i as u16))
    }

    /// The quantity `name`, looked up when the program is compiled (for a `const`): code that
    /// needs a known quantity for every uplink does not search the table each time, and a
    /// name not in [`QUANTITIES`] fails the build.
    pub const fn named(name: &str) -> Self {
        let mut i = 0;
        while i < QUANTITIES.len() {
            let (a, b) = (QUANTITIES[i].name.as_bytes(), name.as_bytes());
            if a.len() == b.len() {
                let mut k = 0;
                while k < a.len() && a[k] == b[k] {
                    k += 1;
                }
                if k == a.len() {
                    return Quantity(i as u16);
                }
            }
            i += 1;
        }
        panic!("not a quantity of the table")
    }

    pub fn def(self) -> &'static QuantityDef {
        &QUANTITIES[self.0 as usize]
    }

    pub fn name(self) -> &'static str {
        self.def().name
    }

    /// UCUM code of the canonical unit.
    pub fn unit(self) -> &'static str {
        self.def().unit
    }

    /// Its place in [`QUANTITIES`] (and in [`Quantity::all`]).
    pub fn index(self) -> usize {
        self.0 as usize
    }

    pub fn all() -> impl Iterator<Item = Quantity> {
        (0..QUANTITIES.len()).map(|i| Quantity(i as u16))
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Quantity::by_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown quantity {s:?}; known: {}", known_quantities())))
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

fn known_quantities() -> String {
    QUANTITIES.iter().map(|q| q.name).collect::<Vec<_>>().join(", ")
}

/// The verdict of quality control on one reading. Bad readings are kept, never dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QualityFlag {
    Good,
    Suspect,
    Bad,
}

impl QualityFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            QualityFlag::Good => "good",
            QualityFlag::Suspect => "suspect",
            QualityFlag::Bad => "bad",
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            QualityFlag::Good => 0,
            QualityFlag::Suspect => 1,
            QualityFlag::Bad => 2,
        }
    }

    pub fn from_byte(b: u8) -> Self {
        match b {
            0 => QualityFlag::Good,
            1 => QualityFlag::Suspect,
            _ => QualityFlag::Bad,
        }
    }
}

/// One decoded value of an uplink, before it becomes a [`Reading`] (a profile decodes it; derived
/// quantities are added to it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodedValue {
    pub quantity: Quantity,
    /// Value in `quantity.unit()`.
    pub value: f64,
}

/// One measured value: device, quantity, value in the canonical unit, time of measurement, quality.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device: DeviceId,
    pub quantity: Quantity,
    /// Value in `quantity.unit()`.
    pub value: f64,
    /// Time of measurement (UTC).
    pub time: DateTime<Utc>,
    pub flag: QualityFlag,
    /// Why the flag is not `good`; empty when it is.
    pub reason: Reason,
}

/// A reading's reason: its own text, or text shared with the other readings of its uplink.
/// A reading stored at its reception time gets its uplink's explanation (some 130 bytes),
/// and each of an uplink's six readings holding a copy cost an allocation, a copy and a free
/// each, in a burst whose uplinks are nearly all of that kind (BENCHMARKS.md, "One
/// explanation an uplink"). Compared, shown and stored as its text.
#[derive(Clone, Default)]
pub struct Reason(ReasonText);

#[derive(Clone)]
enum ReasonText {
    Own(String),
    Shared(std::sync::Arc<str>),
}

impl Default for ReasonText {
    fn default() -> Self {
        ReasonText::Own(String::new())
    }
}

impl Reason {
    /// Text an uplink's readings share: cloning the reason counts, it does not copy.
    pub fn shared(text: std::sync::Arc<str>) -> Self {
        Self(ReasonText::Shared(text))
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            ReasonText::Own(s) => s,
            ReasonText::Shared(s) => s,
        }
    }

    /// The text to append to, with room for `room` more bytes if it is empty: shared text
    /// is first copied into a string of this reason's own (as `Cow::to_mut` does).
    pub(crate) fn own_mut(&mut self, room: usize) -> &mut String {
        if let ReasonText::Shared(text) = &self.0 {
            let mut own = String::with_capacity(text.len() + room);
            own.push_str(text);
            self.0 = ReasonText::Own(own);
        }
        match &mut self.0 {
            ReasonText::Own(own) => {
                if own.capacity() == 0 {
                    own.reserve(room);
                }
                own
            }
            ReasonText::Shared(_) => unreachable!("made its own above"),
        }
    }
}

impl std::ops::Deref for Reason {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for Reason {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl From<String> for Reason {
    fn from(s: String) -> Self {
        Self(ReasonText::Own(s))
    }
}

impl From<&str> for Reason {
    fn from(s: &str) -> Self {
        Self(ReasonText::Own(s.to_owned()))
    }
}

impl From<Reason> for String {
    fn from(r: Reason) -> Self {
        match r.0 {
            ReasonText::Own(s) => s,
            ReasonText::Shared(s) => s.to_string(),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Text from the network (topics, device ids, decoder errors) as it may go into the log:
/// control characters (newline, NUL, ESC ...), bidirectional overrides and backslashes are
/// written as escapes (`\n`, `\u{1b}`, `\\`), so a message can't forge log lines or drive
/// a terminal. Other characters, umlauts included, stay as they are.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for c in self.0.chars() {
            let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}');
            if c == '\\' {
                f.write_str("\\\\")?;
            } else if c.is_control() || bidi {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// The licence codes a device file or `open_data.district_licence` may name: open licences
/// of the DCAT-AP.de licence vocabulary (http://dcat-ap.de/def/licenses/CODE).
pub const LICENCE_CODES: [&str; 5] = ["dl-by-de/2.0", "dl-zero-de/2.0", "cc-by/4.0", "cc-by-sa/4.0", "cc-zero"];

/// The DCAT-AP.de URI of a licence code used in device files and settings; `None` for a code
/// outside the vocabulary, which `check` and loading refuse.
pub fn licence_uri(code: &str) -> Option<&'static str> {
    match code {
        "dl-by-de/2.0" => Some("http://dcat-ap.de/def/licenses/dl-by-de/2.0"),
        "dl-zero-de/2.0" => Some("http://dcat-ap.de/def/licenses/dl-zero-de/2.0"),
        "cc-by/4.0" => Some("http://dcat-ap.de/def/licenses/cc-by/4.0"),
        "cc-by-sa/4.0" => Some("http://dcat-ap.de/def/licenses/cc-by-sa/4.0"),
        "cc-zero" => Some("http://dcat-ap.de/def/licenses/cc-zero"),
        _ => None,
    }
}

/// Why a licence code is refused, naming the codes that are accepted.
pub fn licence_problem(code: &str) -> Option<String> {
    licence_uri(code).is_none().then(|| {
        format!(
            "{code:?} is not in the DCAT-AP.de licence vocabulary (http://dcat-ap.de/def/licenses/); expected one of {}",
            LICENCE_CODES.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_names_are_unique_and_round_trip() {
        for q in Quantity::all() {
            assert_eq!(Quantity::by_name(q.name()), Some(q));
            assert!(q.def().min < q.def().max, "{q}");
        }
        assert_eq!(Quantity::by_name("air_temp"), None);
        for q in QUANTITIES {
            assert_eq!(Some(Quantity::named(q.name)), Quantity::by_name(q.name));
        }
    }

    #[test]
    fn dev_eui_parses_either_case_and_prints_upper() {
        let eui = DevEui::parse("a840410000000001").unwrap();
        assert_eq!(eui, DevEui::parse("A840410000000001").unwrap());
        assert_eq!(eui.to_string(), "A840410000000001");
        assert!(DevEui::parse("A84041000000000").is_err());
        assert!(DevEui::parse("G840410000000001").is_err());
        assert!(DevEui::parse("é840410000000001").is_err());
        assert!(DevEui::parse("éé840410000001").is_err());
    }

    #[test]
    fn device_ids_refuse_unsafe_characters() {
        assert!(DeviceId::parse("demo-lht65").is_ok());
        assert!(DeviceId::parse("a/b").is_err());
        assert!(DeviceId::parse("").is_err());
        assert!(DeviceId::parse("a b").is_err());
    }

    #[test]
    fn escaped_text_has_no_control_characters_and_keeps_umlauts() {
        let shown = Escaped("a/b\n2026-01-01T00:00:00Z  INFO forged\u{1b}[31m\0\\ü\u{202E}").to_string();
        assert_eq!(shown, "a/b\\n2026-01-01T00:00:00Z  INFO forged\\u{1b}[31m\\u{0}\\\\ü\\u{202e}");
        assert!(!shown.chars().any(|c| c.is_control()));
    }
}
