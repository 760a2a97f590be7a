//! `lpp` layouts: Cayenne Low Power Payload, decoded by a built-in table of its data types.
//!
//! An LPP payload is a sequence of `channel, type, value` records; the type fixes the value's
//! size, sign and resolution. Types with an obvious quantity (temperature, humidity, barometer,
//! illuminance) become readings without any configuration; a profile maps other channels (an
//! analog input that is really a battery voltage) with fields that name a `channel`, and such a
//! mapping replaces the default for that channel. Multi-axis types (accelerometer, gyrometer,
//! GPS) are skipped. An unknown type stops decoding with a warning, keeping what came before.

use super::decode::field::{compile_scaling, reject_keys, Scaling};
use super::decode::types::{check_duplicate_quantities, DecodeError, Decoded, DecodedValue, Issues};
use super::format::LayoutSpec;
use super::tlv::hex;
use crate::model::Quantity;

/// One LPP data type: its id, value size, how to read it, and the quantity it defaults to.
struct LppType {
    id: u8,
    name: &'static str,
    size: usize,
    signed: bool,
    /// The value is `raw / divisor`, in the unit of `default` (or of the mapping's `unit`).
    divisor: f64,
    default: Option<&'static str>,
}

/// The types of the Cayenne LPP specification (IPSO object id − 3200).
const TYPES: &[LppType] = &[
    LppType { id: 0x00, name: "digital input", size: 1, signed: false, divisor: 1.0, default: None },
    LppType { id: 0x01, name: "digital output", size: 1, signed: false, divisor: 1.0, default: None },
    LppType { id: 0x02, name: "analog input", size: 2, signed: true, divisor: 100.0, default: None },
    LppType { id: 0x03, name: "analog output", size: 2, signed: true, divisor: 100.0, default: None },
    LppType { id: 0x65, name: "illuminance", size: 2, signed: false, divisor: 1.0, default: Some("illuminance") },
    LppType { id: 0x66, name: "presence", size: 1, signed: false, divisor: 1.0, default: None },
    LppType { id: 0x67, name: "temperature", size: 2, signed: true, divisor: 10.0, default: Some("air_temperature") },
    LppType { id: 0x68, name: "humidity", size: 1, signed: false, divisor: 2.0, default: Some("relative_humidity") },
    LppType { id: 0x71, name: "accelerometer", size: 6, signed: true, divisor: 1000.0, default: None },
    LppType { id: 0x73, name: "barometer", size: 2, signed: false, divisor: 10.0, default: Some("air_pressure") },
    LppType { id: 0x86, name: "gyrometer", size: 6, signed: true, divisor: 100.0, default: None },
    LppType { id: 0x88, name: "GPS location", size: 9, signed: true, divisor: 1.0, default: None },
];

#[derive(Debug)]
pub(crate) struct LppLayout {
    /// Bytes at the end that are not records.
    trailer: usize,
    /// Indexed by LPP type id: its table entry and default quantity.
    defaults: Vec<Option<Quantity>>,
    mapped: Vec<Mapped>,
}

#[derive(Debug)]
struct Mapped {
    channel: u8,
    quantity: Quantity,
    scaling: Scaling,
}

fn lpp_type(id: u8) -> Option<&'static LppType> {
    TYPES.iter().find(|t| t.id == id)
}

impl LppLayout {
    pub fn quantities(&self) -> impl Iterator<Item = Quantity> + '_ {
        self.defaults.iter().flatten().copied().chain(self.mapped.iter().map(|m| m.quantity))
    }

    pub fn decode(&self, f_port: Option<u8>, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let end = bytes.len().saturating_sub(self.trailer);
        let mut out = Decoded { values: Vec::with_capacity(8), ..Default::default() };
        let mut pos = 0;
        while pos < end {
            let (Some(&channel), Some(&type_id)) = (bytes.get(pos), bytes.get(pos + 1).filter(|_| pos + 1 < end)) else {
                return Err(DecodeError::Malformed {
                    f_port,
                    message: format!("payload ends inside the LPP record header at byte {pos}"),
                });
            };
            let Some(ty) = lpp_type(type_id) else {
                out.warnings.push(format!(
                    "unknown LPP type {} on channel {channel} at byte {pos}; the remaining {} byte(s) are skipped",
                    hex(&[type_id]),
                    end - pos
                ));
                break;
            };
            let from = pos + 2;
            let to = from + ty.size;
            let Some(value) = bytes.get(from..to).filter(|_| to <= end) else {
                return Err(DecodeError::Malformed {
                    f_port,
                    message: format!(
                        "LPP {} on channel {channel} at byte {pos} needs {} byte(s), only {} left",
                        ty.name,
                        ty.size,
                        end.saturating_sub(from)
                    ),
                });
            };
            pos = to;
            if ty.size > 2 {
                continue; // multi-axis values have no single quantity
            }
            let raw = value.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            let raw = if ty.signed && ty.size == 2 { f64::from(raw as u16 as i16) } else { raw as f64 };
            let v = raw / ty.divisor;
            let mut any = false;
            for m in self.mapped.iter().filter(|m| m.channel == channel) {
                any = true;
                let value = m.scaling.apply(v);
                if value.is_finite() {
                    out.values.push(DecodedValue { quantity: m.quantity, value });
                } else {
                    out.warnings.push(format!("{}: channel {channel} is {value}, not a finite number", m.quantity));
                    out.non_finite.push(DecodedValue { quantity: m.quantity, value });
                }
            }
            if !any {
                if let Some(q) = self.defaults.get(usize::from(type_id)).copied().flatten() {
                    out.values.push(DecodedValue { quantity: q, value: v });
                }
            }
        }
        Ok(out)
    }

    pub fn compile(spec: &LayoutSpec, path: &str, issues: &mut Issues) -> LppLayout {
        let mut defaults = vec![None; 256];
        for t in TYPES {
            if let Some(name) = t.default {
                // The table names quantities of the model; a missing one is reported, not panicked.
                match Quantity::by_name(name) {
                    Some(q) => defaults[usize::from(t.id)] = Some(q),
                    None => issues.push(None, path, format!("built-in LPP type {} needs quantity {name}", t.name)),
                }
            }
        }
        let mut mapped = Vec::with_capacity(spec.fields.len());
        for (j, field) in spec.fields.iter().enumerate() {
            let fpath = format!("{path}.fields[{j}]");
            let span = Some(field.span());
            let f = field.get_ref();
            let foreign = ["byte", "type", "mask", "shift", "no_value", "when", "pointer"];
            reject_keys(f, &foreign, span.clone(), &fpath, "to an LPP field; give `channel`", issues);
            let Some(channel) = f.channel else {
                issues.push(span, format!("{fpath}.channel"), "missing `channel`, the LPP channel this field maps");
                continue;
            };
            if mapped.iter().any(|m: &Mapped| m.channel == channel) {
                issues.push(span.clone(), format!("{fpath}.channel"), format!("channel {channel} is already mapped"));
            }
            if let Some(scaling) = compile_scaling(f, &fpath, span, issues) {
                mapped.push(Mapped { channel, quantity: f.quantity, scaling });
            }
        }
        check_duplicate_quantities(spec.fields.iter().map(|f| (f.get_ref().quantity, false, f.span())), path, issues);
        LppLayout { trailer: spec.trailer.unwrap_or(0), defaults, mapped }
    }
}

#[cfg(test)]
mod tests {
    use crate::profiles::Profile;
    use std::path::Path;

    fn profile(fields: &str) -> Profile {
        let text = format!(
            "id = \"acme-t1\"\nvendor = \"Acme\"\nmodel = \"T1\"\nreference = \"r\"\n[[layouts]]\nkind = \"lpp\"\n{fields}\n[[examples]]\npayload_hex = \"\"\nreadings = []\n"
        );
        Profile::from_toml(Path::new("acme-t1.toml"), &text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn defaults_and_mapped_channels() {
        let p = profile("[[layouts.fields]]\nquantity = \"soil_temperature\"\nchannel = 2\n[[layouts.fields]]\nquantity = \"battery_voltage\"\nchannel = 9\n");
        // ch1 temperature (default), ch2 temperature (mapped), ch3 lux, ch9 analog 3.3 V, ch4 digital in.
        let bytes = [1, 0x67, 0x00, 0xFA, 2, 0x67, 0xFF, 0xF6, 3, 0x65, 0x01, 0x00, 9, 0x02, 0x01, 0x4A, 4, 0x00, 1];
        let d = p.decode_bytes(Some(1), &bytes).unwrap();
        let got: Vec<(&str, f64)> = d.values.iter().map(|v| (v.quantity.name(), v.value)).collect();
        assert_eq!(
            got,
            [("air_temperature", 25.0), ("soil_temperature", -1.0), ("illuminance", 256.0), ("battery_voltage", 3.3)]
        );
    }

    #[test]
    fn unknown_types_warn_and_truncation_fails() {
        let p = profile("");
        let d = p.decode_bytes(None, &[1, 0x67, 0, 10, 2, 0xEE, 1, 2]).unwrap();
        assert_eq!(d.values.len(), 1);
        assert_eq!(d.warnings, ["unknown LPP type EE on channel 2 at byte 4; the remaining 4 byte(s) are skipped"]);
        assert!(p.decode_bytes(None, &[1]).unwrap_err().to_string().contains("header at byte 0"));
        assert!(p
            .decode_bytes(None, &[1, 0x88, 0, 0])
            .unwrap_err()
            .to_string()
            .contains("GPS location on channel 1 at byte 0 needs 9"));
    }
}
