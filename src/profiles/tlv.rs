//! `tlv` layouts: type-tagged channels (Elsys, Milesight, SenseCAP style). A tag of one or more
//! bytes says what follows and how long it is; channels come in any order, any number of times.
//!
//! An unknown tag cannot be skipped (its length is unknown), so decoding stops there with a
//! warning and keeps what it read before: a firmware update that adds a channel costs the
//! readings after it, not the whole uplink. A channel that runs past the payload is an error.

use std::ops::Range;

use super::decode::field::{compile_fixed_field, FixedField};
use super::decode::types::{check_duplicate_quantities, DecodeError, Decoded, Issues};
use super::format::LayoutSpec;
use crate::model::Quantity;

/// Longest tag accepted; vendors use one to three bytes.
const MAX_TAG: usize = 4;

#[derive(Debug)]
pub(crate) struct TlvLayout {
    /// Position of the first channel.
    start: usize,
    /// Bytes at the end that are not channels (a checksum).
    trailer: usize,
    tag_len: usize,
    channels: Vec<Channel>,
}

#[derive(Debug)]
struct Channel {
    tag: [u8; MAX_TAG],
    /// The tag bytes as one integer: finding a channel is then an integer comparison per
    /// channel, not a slice comparison (which dominated decoding with many channels).
    key: u32,
    /// Bytes of value after the tag; `None`: the byte after the tag says.
    length: Option<usize>,
    /// `byte` counts from the first byte after the tag.
    fields: Vec<FixedField>,
}

impl TlvLayout {
    /// The shortest payload: an empty sequence of channels.
    pub fn min_len(&self) -> usize {
        self.start + self.trailer
    }

    pub fn quantities(&self) -> impl Iterator<Item = Quantity> + '_ {
        self.channels.iter().flat_map(|c| c.fields.iter().map(|f| f.quantity))
    }

    pub fn decode(&self, f_port: Option<u8>, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let malformed = |message: String| DecodeError::Malformed { f_port, message };
        let end = bytes.len().saturating_sub(self.trailer);
        let mut out = Decoded { values: Vec::with_capacity(8), ..Default::default() };
        let mut pos = self.start;
        while pos < end {
            let Some(tag) = bytes.get(pos..pos + self.tag_len).filter(|_| pos + self.tag_len <= end) else {
                return Err(malformed(format!("payload ends inside the channel tag at byte {pos}")));
            };
            let key = tag_key(tag);
            let Some(channel) = self.channels.iter().find(|c| c.key == key) else {
                out.warnings.push(format!(
                    "unknown channel {} at byte {pos}; the remaining {} byte(s) are skipped",
                    hex(tag),
                    end - pos
                ));
                break;
            };
            let mut from = pos + self.tag_len;
            let length = match channel.length {
                Some(n) => n,
                None => match bytes.get(from).filter(|_| from < end) {
                    Some(&n) => {
                        from += 1;
                        usize::from(n)
                    }
                    None => {
                        return Err(malformed(format!(
                            "payload ends before the length byte of channel {} at byte {pos}",
                            hex(tag)
                        )))
                    }
                },
            };
            let to = from + length;
            let Some(value) = bytes.get(from..to).filter(|_| to <= end) else {
                return Err(malformed(format!(
                    "channel {} at byte {pos} needs {length} byte(s) of value, only {} left",
                    hex(tag),
                    end.saturating_sub(from)
                )));
            };
            for f in &channel.fields {
                // Fixed lengths cover their fields (checked at load); a length byte may not.
                f.decode_into(value, from, &mut out).map_err(|()| {
                    malformed(format!(
                        "channel {} at byte {pos} has {length} byte(s) of value, fewer than its fields read",
                        hex(tag)
                    ))
                })?;
            }
            pos = to;
        }
        Ok(out)
    }

    pub fn compile(spec: &LayoutSpec, path: &str, span: Option<Range<usize>>, issues: &mut Issues) -> TlvLayout {
        let mut channels = Vec::with_capacity(spec.channels.len());
        let mut tag_len = None;
        if spec.channels.is_empty() {
            issues.push(span, format!("{path}.channels"), "a tlv layout needs at least one [[layouts.channels]] table");
        }
        for (c, spanned) in spec.channels.iter().enumerate() {
            let cpath = format!("{path}.channels[{c}]");
            let ch = spanned.get_ref();
            let tag_span = Some(ch.tag.span());
            let tag_bytes = ch.tag.get_ref().bytes();
            if tag_bytes.is_empty() || tag_bytes.len() > MAX_TAG {
                issues.push(tag_span.clone(), format!("{cpath}.tag"), format!("a tag has 1 to {MAX_TAG} bytes"));
                continue;
            }
            match tag_len {
                None => tag_len = Some(tag_bytes.len()),
                Some(n) if n != tag_bytes.len() => {
                    issues.push(
                        tag_span.clone(),
                        format!("{cpath}.tag"),
                        format!("every tag of a layout has the same length; the first has {n} byte(s)"),
                    );
                    continue;
                }
                Some(_) => {}
            }
            let mut tag = [0u8; MAX_TAG];
            tag[..tag_bytes.len()].copy_from_slice(&tag_bytes);
            if channels.iter().any(|other: &Channel| other.tag == tag) {
                issues.push(
                    tag_span,
                    format!("{cpath}.tag"),
                    format!("tag {} is already used by an earlier channel", hex(&tag_bytes)),
                );
                continue;
            }
            let mut fields = Vec::with_capacity(ch.fields.len());
            let mut end = 0;
            for (j, field) in ch.fields.iter().enumerate() {
                if let Some(f) = compile_fixed_field(field, &format!("{cpath}.fields[{j}]"), issues) {
                    end = end.max(f.end());
                    fields.push(f);
                }
            }
            check_duplicate_quantities(
                ch.fields.iter().map(|f| (f.get_ref().quantity, f.get_ref().when.is_some(), f.span())),
                &cpath,
                issues,
            );
            let length = if ch.length_byte {
                if ch.length.is_some() {
                    issues.push(
                        Some(spanned.span()),
                        format!("{cpath}.length"),
                        "give either `length` or `length_byte`, not both",
                    );
                }
                None
            } else {
                let length = ch.length.unwrap_or(end);
                if length < end {
                    issues.push(
                        Some(spanned.span()),
                        format!("{cpath}.length"),
                        format!("length {length} is shorter than the {end} bytes its fields read"),
                    );
                }
                if length == 0 || length > 255 {
                    issues.push(
                        Some(spanned.span()),
                        format!("{cpath}.length"),
                        "a channel's value has 1 to 255 bytes; give `length` for a channel without fields",
                    );
                }
                Some(length)
            };
            channels.push(Channel { tag, key: tag_key(&tag_bytes), length, fields });
        }
        TlvLayout { start: spec.start.unwrap_or(0), trailer: spec.trailer.unwrap_or(0), tag_len: tag_len.unwrap_or(1), channels }
    }
}

/// Big-endian integer of up to four tag bytes.
fn tag_key(tag: &[u8]) -> u32 {
    tag.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
}

/// `03 67`: how tags are written in warnings and errors.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use crate::profiles::{DecodeError, Profile};
    use std::path::Path;

    const HEAD: &str = "id = \"acme-t1\"\nvendor = \"Acme\"\nmodel = \"T1\"\nreference = \"Acme T1 manual\"\n";

    fn profile(body: &str) -> Result<Profile, String> {
        let text = format!("{HEAD}{body}\n[[examples]]\npayload_hex = \"\"\nreadings = []\n");
        Profile::from_toml(Path::new("acme-t1.toml"), &text)
            .map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))
    }

    const TLV: &str = r#"
[[layouts]]
kind = "tlv"
start = 1
trailer = 1
[[layouts.channels]]
tag = [0x03, 0x67]
[[layouts.channels.fields]]
quantity = "air_temperature"
byte = 0
type = "i16le"
scale = 0.1
[[layouts.channels]]
tag = [0x04, 0x68]
[[layouts.channels.fields]]
quantity = "relative_humidity"
byte = 0
type = "u8"
scale = 0.5
[[layouts.channels]]
tag = [0xFF, 0x01]
length = 3
"#;

    #[test]
    fn channels_in_any_order_and_repeated() {
        let p = profile(TLV).unwrap();
        let d = p
            .decode_bytes(
                Some(1),
                &[0xAA, 0x04, 0x68, 0x65, 0xFF, 0x01, 1, 2, 3, 0x03, 0x67, 0x34, 0x01, 0x03, 0x67, 0xFF, 0xFF, 0xCC],
            )
            .unwrap();
        let got: Vec<(&str, f64)> = d.values.iter().map(|v| (v.quantity.name(), v.value)).collect();
        assert_eq!(got, [("relative_humidity", 50.5), ("air_temperature", 30.8), ("air_temperature", -0.1)]);
        assert!(d.warnings.is_empty());
        // Only the header and the trailer: no channels, no readings.
        assert!(p.decode_bytes(Some(1), &[0xAA, 0xCC]).unwrap().values.is_empty());
        assert!(matches!(p.decode_bytes(Some(1), &[0xAA]), Err(DecodeError::TooShort { needed: 2, .. })));
    }

    #[test]
    fn unknown_tags_warn_and_truncation_fails() {
        let p = profile(TLV).unwrap();
        let d = p.decode_bytes(None, &[0, 0x04, 0x68, 0x65, 0x09, 0x73, 1, 2, 0]).unwrap();
        assert_eq!(d.values.len(), 1);
        assert_eq!(d.warnings, ["unknown channel 09 73 at byte 4; the remaining 4 byte(s) are skipped"]);
        let err = p.decode_bytes(None, &[0, 0x03, 0x67, 0x34, 0]).unwrap_err();
        assert_eq!(err.to_string(), "malformed payload: channel 03 67 at byte 1 needs 2 byte(s) of value, only 1 left");
        let err = p.decode_bytes(None, &[0, 0x03, 0]).unwrap_err();
        assert!(err.to_string().contains("inside the channel tag at byte 1"), "{err}");
    }

    #[test]
    fn a_length_byte_sizes_the_value() {
        let p = profile(&TLV.replace("tag = [0xFF, 0x01]\nlength = 3", "tag = [0xFF, 0x01]\nlength_byte = true\n[[layouts.channels.fields]]\nquantity = \"battery_level\"\nbyte = 1\ntype = \"u8\"")).unwrap();
        // A 3-byte value, then a temperature channel.
        let d = p.decode_bytes(None, &[0, 0xFF, 0x01, 3, 9, 80, 9, 0x03, 0x67, 0x34, 0x01, 0]).unwrap();
        let got: Vec<(&str, f64)> = d.values.iter().map(|v| (v.quantity.name(), v.value)).collect();
        assert_eq!(got, [("battery_level", 80.0), ("air_temperature", 30.8)]);
        let err = p.decode_bytes(None, &[0, 0xFF, 0x01, 1, 9, 0]).unwrap_err();
        assert!(err.to_string().contains("has 1 byte(s) of value, fewer than its fields read"), "{err}");
        let err = p.decode_bytes(None, &[0, 0xFF, 0x01, 0]).unwrap_err();
        assert!(err.to_string().contains("before the length byte"), "{err}");
        let err = p.decode_bytes(None, &[0, 0xFF, 0x01, 200, 1, 0]).unwrap_err();
        assert!(err.to_string().contains("needs 200 byte(s) of value, only 1 left"), "{err}");
    }

    #[test]
    fn bad_channels_are_load_errors() {
        let errors = profile(&TLV.replace("tag = [0xFF, 0x01]", "tag = [0xFF]")).unwrap_err();
        assert!(errors.contains("layouts[0].channels[2].tag: every tag of a layout has the same length"), "{errors}");
        let errors = profile(&TLV.replace("tag = [0xFF, 0x01]\nlength = 3", "tag = [0x03, 0x67]")).unwrap_err();
        assert!(errors.contains("already used"), "{errors}");
        let errors = profile(&TLV.replace("tag = [0xFF, 0x01]\nlength = 3", "tag = [0xFF, 0x01]")).unwrap_err();
        assert!(errors.contains("channels[2].length: a channel's value has 1 to 255 bytes"), "{errors}");
        let errors = profile(&TLV.replace("scale = 0.5", "scale = 0.5\n[[layouts.channels]]\ntag = [1, 2]\nlength = 1\n[[layouts.channels.fields]]\nquantity = \"air_pressure\"\nbyte = 0\ntype = \"u16be\"")).unwrap_err();
        assert!(errors.contains("length 1 is shorter than the 2 bytes"), "{errors}");
    }
}
