//! `flags` layouts: a bitmask says which groups of values follow (Decentlab style). Present
//! groups come one after another in bit order, lowest bit first, each with a known length.
//!
//! A set bit whose group the profile does not describe stops decoding with a warning (the
//! length of that group, and so the position of every later one, is unknown); readings of the
//! groups before it are kept. A group that runs past the payload is an error.

use std::ops::Range;

use super::decode::field::{compile_fixed_field, read_bits, FixedField};
use super::decode::types::{check_duplicate_quantities, DecodeError, Decoded, Issues};
use super::format::{FieldType, LayoutSpec};
use crate::model::Quantity;

#[derive(Debug)]
pub(crate) struct FlagsLayout {
    flags_byte: usize,
    flags_ty: FieldType,
    /// Position of the first group.
    start: usize,
    /// Indexed by bit; `None` = the profile does not describe that bit's group.
    groups: Vec<Option<Group>>,
}

#[derive(Debug)]
struct Group {
    length: usize,
    /// `byte` counts from the group's first byte.
    fields: Vec<FixedField>,
}

impl FlagsLayout {
    /// The shortest payload: the flags themselves and whatever precedes the first group.
    pub fn header_end(&self) -> usize {
        (self.flags_byte + self.flags_ty.width()).max(self.start)
    }

    pub fn quantities(&self) -> impl Iterator<Item = Quantity> + '_ {
        self.groups.iter().flatten().flat_map(|g| g.fields.iter().map(|f| f.quantity))
    }

    pub fn decode(&self, f_port: Option<u8>, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let Some(flags) = read_bits(self.flags_ty, bytes, self.flags_byte) else {
            return Err(DecodeError::TooShort { f_port, needed: self.header_end(), got: bytes.len() });
        };
        let mut out = Decoded { values: Vec::with_capacity(16), ..Default::default() };
        let mut pos = self.start;
        for bit in 0..self.flags_ty.bits() {
            if flags & (1 << bit) == 0 {
                continue;
            }
            let Some(group) = self.groups.get(bit as usize).and_then(Option::as_ref) else {
                out.warnings.push(format!(
                    "flag bit {bit} is set but this profile does not describe its group; the remaining {} byte(s) are skipped",
                    bytes.len().saturating_sub(pos)
                ));
                break;
            };
            let Some(slice) = bytes.get(pos..pos + group.length) else {
                return Err(DecodeError::Malformed {
                    f_port,
                    message: format!(
                        "the group of flag bit {bit} at byte {pos} needs {} byte(s), only {} left",
                        group.length,
                        bytes.len().saturating_sub(pos)
                    ),
                });
            };
            for f in &group.fields {
                f.decode_into(slice, pos, &mut out).map_err(|()| DecodeError::Malformed {
                    f_port,
                    message: format!("the group of flag bit {bit} is shorter than its fields"),
                })?;
            }
            pos += group.length;
        }
        Ok(out)
    }

    pub fn compile(spec: &LayoutSpec, path: &str, span: Option<Range<usize>>, issues: &mut Issues) -> FlagsLayout {
        let (flags_byte, flags_ty) = match &spec.flags {
            Some(f) => {
                let fl = f.get_ref();
                if fl.ty.is_signed() || fl.ty.is_float() || fl.ty.is_bcd() {
                    issues.push(
                        Some(f.span()),
                        format!("{path}.flags.type"),
                        format!("flags are an unsigned integer, not {:?}", fl.ty),
                    );
                }
                if fl.byte > 65_535 {
                    issues.push(Some(f.span()), format!("{path}.flags.byte"), "byte is beyond any LoRaWAN payload");
                }
                (fl.byte.min(65_535), fl.ty)
            }
            None => {
                issues.push(
                    span.clone(),
                    format!("{path}.flags"),
                    "a flags layout needs `flags = { byte = N, type = \"u16be\" }`",
                );
                (0, FieldType::U8)
            }
        };
        let mut groups: Vec<Option<Group>> = (0..flags_ty.bits()).map(|_| None).collect();
        if spec.groups.is_empty() {
            issues.push(span, format!("{path}.groups"), "a flags layout needs at least one [[layouts.groups]] table");
        }
        let mut all_fields = Vec::new();
        for (g, spanned) in spec.groups.iter().enumerate() {
            let gpath = format!("{path}.groups[{g}]");
            let gs = spanned.get_ref();
            let gspan = Some(spanned.span());
            let mut fields = Vec::with_capacity(gs.fields.len());
            let mut end = 0;
            for (j, field) in gs.fields.iter().enumerate() {
                if let Some(f) = compile_fixed_field(field, &format!("{gpath}.fields[{j}]"), issues) {
                    end = end.max(f.end());
                    fields.push(f);
                }
                all_fields.push(field);
            }
            let length = gs.length.unwrap_or(end);
            if length < end || length == 0 {
                issues.push(
                    gspan.clone(),
                    format!("{gpath}.length"),
                    format!("length {length} must be at least 1 and cover the {end} bytes its fields read"),
                );
            }
            match groups.get_mut(gs.bit as usize) {
                None => issues.push(
                    gspan,
                    format!("{gpath}.bit"),
                    format!("bit {} does not exist in a {:?} flags field", gs.bit, flags_ty),
                ),
                Some(Some(_)) => issues.push(gspan, format!("{gpath}.bit"), format!("bit {} already has a group", gs.bit)),
                Some(slot) => *slot = Some(Group { length, fields }),
            }
        }
        // A quantity twice across groups would give two readings of it from one uplink.
        check_duplicate_quantities(
            all_fields.iter().map(|f| (f.get_ref().quantity, f.get_ref().when.is_some(), f.span())),
            &format!("{path}.groups[*]"),
            issues,
        );
        let start = spec.start.unwrap_or(flags_byte + flags_ty.width());
        FlagsLayout { flags_byte, flags_ty, start, groups }
    }
}

#[cfg(test)]
mod tests {
    use crate::profiles::{DecodeError, Profile};
    use std::path::Path;

    const HEAD: &str = "id = \"acme-t1\"\nvendor = \"Acme\"\nmodel = \"T1\"\nreference = \"Acme T1 manual\"\n";

    const FLAGS: &str = r#"
[[layouts]]
kind = "flags"
match = { byte = 0, equals = 2 }
flags = { byte = 1, type = "u8" }
[[layouts.groups]]
bit = 0
[[layouts.groups.fields]]
quantity = "air_temperature"
byte = 0
type = "u16be"
formula = "(x - 32768) / 10"
[[layouts.groups]]
bit = 2
length = 3
[[layouts.groups.fields]]
quantity = "battery_voltage"
byte = 1
type = "u16be"
unit = "mV"
"#;

    fn profile(body: &str) -> Result<Profile, String> {
        let text = format!("{HEAD}{body}\n[[examples]]\npayload_hex = \"0200\"\nreadings = []\n");
        Profile::from_toml(Path::new("acme-t1.toml"), &text)
            .map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))
    }

    #[test]
    fn groups_follow_in_bit_order() {
        let p = profile(FLAGS).unwrap();
        let d = p.decode_bytes(Some(1), &[2, 0b101, 0x80, 0x0A, 0xEE, 0x0B, 0xB8]).unwrap();
        let got: Vec<(&str, f64)> = d.values.iter().map(|v| (v.quantity.name(), v.value)).collect();
        assert_eq!(got, [("air_temperature", 1.0), ("battery_voltage", 3.0)]);
        let d = p.decode_bytes(Some(1), &[2, 0b100, 0xEE, 0x0B, 0xB8]).unwrap();
        assert_eq!(d.values.len(), 1);
        assert!(p.decode_bytes(Some(1), &[2, 0]).unwrap().values.is_empty());
    }

    #[test]
    fn unknown_bits_warn_and_short_groups_fail() {
        let p = profile(FLAGS).unwrap();
        let d = p.decode_bytes(None, &[2, 0b011, 0x80, 0x0A, 9, 9]).unwrap();
        assert_eq!(d.values.len(), 1);
        assert_eq!(
            d.warnings,
            ["flag bit 1 is set but this profile does not describe its group; the remaining 2 byte(s) are skipped"]
        );
        let err = p.decode_bytes(None, &[2, 0b001, 0x80]).unwrap_err();
        assert_eq!(err.to_string(), "malformed payload: the group of flag bit 0 at byte 2 needs 2 byte(s), only 1 left");
        assert_eq!(p.decode_bytes(None, &[3, 1, 0x80, 0x0A]).unwrap_err(), DecodeError::NoLayoutMatches { f_port: None });
        assert!(matches!(p.decode_bytes(None, &[2]), Err(DecodeError::TooShort { needed: 2, got: 1, .. })));
    }

    #[test]
    fn bad_groups_are_load_errors() {
        let errors = profile(&FLAGS.replace("bit = 2", "bit = 8")).unwrap_err();
        assert!(errors.contains("bit 8 does not exist"), "{errors}");
        let errors = profile(&FLAGS.replace("bit = 2", "bit = 0")).unwrap_err();
        assert!(errors.contains("already has a group"), "{errors}");
        let errors = profile(&FLAGS.replace("type = \"u8\" }", "type = \"i16be\" }")).unwrap_err();
        assert!(errors.contains("flags are an unsigned integer"), "{errors}");
        let errors = profile(&FLAGS.replace("quantity = \"battery_voltage\"", "quantity = \"air_temperature\"")).unwrap_err();
        assert!(errors.contains("already produced"), "{errors}");
    }
}
