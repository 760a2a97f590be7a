//! The TOML file format of a sensor profile, as serde types; `docs/profiles.md` is the guide to it.
//!
//! These types only describe what a file may say. Everything that needs more than one key to
//! check (does the unit fit the quantity, does the field fit the type, which keys belong to
//! which layout kind) is validated when the profile is compiled for decoding (`decode.rs`),
//! where it is reported with the line of the offending table.
//!
//! Extension points: a new way of laying out a payload is a new [`LayoutKind`] whose keys are
//! added to [`LayoutSpec`]; a new way of producing one value is a new source key on
//! [`FieldSpec`] next to `byte`/`type` and `pointer`. `deny_unknown_fields` everywhere makes a
//! typo a load error instead of a silently ignored key.

use serde::Deserialize;
use toml::Spanned;

use super::units::Unit;
use crate::model::Quantity;

/// One profile file: `sensor-profiles/<id>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// Lower-case `vendor-model` (for example `dragino-lht65`); must equal the file name
    /// without `.toml`. Devices in the registry refer to their profile by this id.
    pub id: Spanned<String>,
    /// Manufacturer, as printed on the device (for example `Dragino`).
    pub vendor: String,
    /// Model name, as printed on the device (for example `LHT65`).
    pub model: String,
    /// The vendor document this profile follows, named so that it can be found again without a
    /// link (links rot): title, version or date, and section. For example
    /// `Dragino LHT65 LoRaWAN Temperature & Humidity Sensor User Manual, section "Uplink Payload"`.
    pub reference: String,
    /// How payloads are laid out; at least one. Binary layouts are chosen by fPort, in file
    /// order; at most one layout may be of kind `json`.
    #[serde(default)]
    pub layouts: Vec<Spanned<LayoutSpec>>,
    /// Payloads with the readings they must decode to (or the error they must fail with).
    /// Checked when the profile is loaded and by the test suite; at least one is required.
    #[serde(default)]
    pub examples: Vec<Spanned<ExampleSpec>>,
    /// Quality control for this model: `[quality]` with `ranges` (its measuring range per
    /// quantity, `[min, max]` in the canonical unit) and `battery_low_v`. Optional.
    #[serde(default)]
    pub quality: crate::config::ProfileQuality,
}

/// How one kind of payload is laid out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutSpec {
    /// `fixed`: fields at fixed byte positions. `tlv`: type-tagged channels. `flags`: groups of
    /// values present when a bit of a flags field is set. `lpp`: Cayenne LPP. `javascript`: a
    /// vendor-style codec script. `ignore`: a known frame that carries no readings.
    /// `json`: a JSON document whose values are found by JSON pointer.
    pub kind: Spanned<LayoutKind>,
    /// Binary kinds only. The LoRaWAN fPorts (1 to 223) this layout decodes. Without it the
    /// layout decodes every fPort, including uplinks whose fPort is not known.
    pub fports: Option<Vec<u8>>,
    /// Binary kinds only. Choose this layout only when a payload byte has a given value, for
    /// example a protocol version or frame type in the first byte:
    /// `match = { byte = 0, equals = 2 }`. Same keys as a field's `when`.
    #[serde(rename = "match")]
    pub select: Option<Spanned<Condition>>,
    /// Binary kinds only. The shortest payload, in bytes, that this layout accepts; shorter
    /// payloads are rejected with an error. For `fixed` it defaults to (and must be at least) the
    /// end of the last byte that a field or condition reads; set it when the frame has trailing
    /// reserved bytes.
    pub min_length: Option<usize>,
    /// Binary kinds only. The longest payload, in bytes, that this layout accepts; longer ones
    /// are an error. Default 242, the largest LoRaWAN application payload.
    pub max_length: Option<usize>,
    /// `tlv` and `flags` only. Position of the first channel (or of the first group), counted
    /// from 0. `tlv` default 0; `flags` default: right after the flags field.
    pub start: Option<usize>,
    /// `tlv` and `lpp` only. Bytes at the end of the payload that are not channels, such as a
    /// checksum. Default 0.
    pub trailer: Option<usize>,
    /// `tlv` only. The channels that may appear, in any order and any number of times.
    #[serde(default)]
    pub channels: Vec<Spanned<ChannelSpec>>,
    /// `flags` only. Where the bitmask is: `flags = { byte = 3, type = "u16be" }`.
    pub flags: Option<Spanned<FlagsSpec>>,
    /// `flags` only. One group per bit; present groups follow each other in bit order,
    /// lowest bit first.
    #[serde(default)]
    pub groups: Vec<Spanned<GroupSpec>>,
    /// `javascript` only. File name of the codec script, relative to the profile's directory.
    pub script_file: Option<String>,
    /// `javascript` only. The codec script itself, instead of `script_file`.
    pub script: Option<String>,
    /// `javascript` only. Time limit per uplink in milliseconds; default 100 (as network
    /// servers allow), at most 1000.
    pub timeout_ms: Option<u64>,
    /// `javascript` only. Memory limit of the script's heap in kibibytes; default 8192.
    pub memory_limit_kib: Option<usize>,
    /// `javascript` only. `true`: after `decodeUplink`, call the script's
    /// `normalizeUplink({data})` and find the fields' `pointer`s in its `data` (the device
    /// repository's normalized payload: `/air/temperature`, `/wind/speed`, ...) instead of in
    /// the decoded `data`. When the normalized data is a list of measurements, the first is
    /// used (and a warning says how many there were). Default `false`.
    pub normalize: Option<bool>,
    /// The values this layout produces, in output order. For `fixed`: read with `byte`/`type`.
    /// For `json` and `javascript`: found with `pointer` in the document (for `javascript`, in
    /// the codec's `data`). For `lpp`: mapped by `channel`.
    #[serde(default)]
    pub fields: Vec<Spanned<FieldSpec>>,
}

/// The kinds of layout this version decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    /// Binary payload, fields at fixed byte positions.
    Fixed,
    /// JSON payload, fields found by JSON pointer (RFC 6901).
    Json,
    /// Binary payload of tagged channels: a tag says what follows and how long it is.
    Tlv,
    /// Binary payload whose bitmask says which groups of values follow.
    Flags,
    /// Cayenne Low Power Payload: channel, type, value, repeated.
    Lpp,
    /// A JavaScript codec with the `decodeUplink(input)` contract, run in a sandbox.
    Javascript,
    /// A frame that is recognised but carries no readings (version or configuration reports).
    Ignore,
}

/// `[[layouts.channels]]` of a `tlv` layout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    /// The tag bytes that introduce the channel: one byte (`tag = 0x01`) or several
    /// (`tag = [0x03, 0x67]`). Every channel of a layout has a tag of the same length.
    pub tag: Spanned<TagSpec>,
    /// Bytes of value after the tag. Defaults to the end of the last byte the fields read.
    pub length: Option<usize>,
    /// The byte after the tag gives the length of the value that follows it (for channels
    /// whose size varies, such as settings reports). Instead of `length`.
    #[serde(default)]
    pub length_byte: bool,
    /// The values of the channel; `byte` counts from the first byte after the tag. A channel
    /// without fields is skipped (known, but not a reading).
    #[serde(default)]
    pub fields: Vec<Spanned<FieldSpec>>,
}

/// One tag byte or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TagSpec {
    /// `tag = 0x01`: a one-byte tag (Elsys).
    One(u8),
    /// `tag = [0x03, 0x67]`: a tag of several bytes (Milesight channel and type).
    Many(Vec<u8>),
}

impl TagSpec {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            TagSpec::One(b) => vec![*b],
            TagSpec::Many(v) => v.clone(),
        }
    }
}

/// `flags = { byte = 3, type = "u16be" }`: where the bitmask of a `flags` layout is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagsSpec {
    /// Position of the bitmask, counted from 0.
    pub byte: usize,
    /// An unsigned integer type: `u8`, `u16be`, `u16le`, `u24be`, `u32be`, ...
    #[serde(rename = "type")]
    pub ty: FieldType,
}

/// `[[layouts.groups]]` of a `flags` layout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// The bit of the flags that says the group is present, 0 = least significant.
    pub bit: u32,
    /// Length of the group in bytes. Defaults to the end of the last byte the fields read.
    pub length: Option<usize>,
    /// The values of the group; `byte` counts from the group's first byte.
    #[serde(default)]
    pub fields: Vec<Spanned<FieldSpec>>,
}

/// One value of a layout: where it comes from and how it becomes a reading.
///
/// The decoded value is `raw * scale + offset`, in `unit`, then converted to the canonical unit
/// of `quantity`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Canonical quantity name (see `model::QUANTITIES`), for example `air_temperature`.
    pub quantity: Quantity,
    /// UCUM code of the unit of `raw * scale + offset`, for example `mV`; converted to the
    /// canonical unit of the quantity. Defaults to the canonical unit.
    pub unit: Option<Spanned<Unit>>,
    /// Multiplier applied to the raw value (`0.01` for "divide by 100"). Default 1.
    pub scale: Option<f64>,
    /// Added after `scale`, in `unit`. Default 0.
    pub offset: Option<f64>,
    /// `fixed` only. Position of the first byte of the value, counted from 0.
    pub byte: Option<usize>,
    /// `fixed` only. How the bytes at `byte` are read: `u8`, `i8`, `u16be`, `u16le`, `i16be`,
    /// `i16le`, `u24be`, `u24le`, `i24be`, `i24le`, `u32be`, `u32le`, `i32be`, `i32le`,
    /// `f32be`, `f32le`, `bcd8`, `bcd16be`, `bcd24be`, `bcd32be`. `be` is big-endian (most
    /// significant byte first), `i` is two's complement, `bcd` is two decimal digits per byte.
    #[serde(rename = "type")]
    pub ty: Option<Spanned<FieldType>>,
    /// `fixed` only, unsigned types only. Bits to keep of the raw integer (a bitfield), applied
    /// before `shift`. For example `0x3FFF` keeps the low 14 bits of a `u16be`.
    pub mask: Option<u64>,
    /// `fixed` only, unsigned types only. Right shift applied after `mask`, in bits.
    pub shift: Option<u32>,
    /// `fixed` only. Raw values (after `mask`/`shift`, before `scale`) that mean "no reading":
    /// the field is skipped without error or warning. For signed types write either the signed
    /// value or the bit pattern (`0x8000` and `-32768` are the same `i16be`); for `f32` types
    /// write the 32-bit pattern (`0x7FC00000`).
    pub no_value: Option<Vec<i64>>,
    /// `fixed` only. Emit this field only when a byte of the payload has a given value.
    pub when: Option<Spanned<Condition>>,
    /// `json` and `javascript` only. JSON pointer (RFC 6901) to a number, for example
    /// `/temperature` or `/sensors/0/value`. A missing value is a warning; a value that is not a
    /// number is an error (for `javascript`, numeric strings such as `"21.50"` are accepted).
    pub pointer: Option<String>,
    /// `lpp` only. The Cayenne LPP channel this field maps; the value is the one LPP defines for
    /// the channel's type (for example degrees Celsius for type 0x67), before `scale`/`formula`.
    pub channel: Option<u8>,
    /// Instead of `scale` and `offset`: an expression of the raw value `x`, for example
    /// `175 * x / 65535 - 45`. Numbers, `x`, `+ - * /`, parentheses and unary minus; evaluated
    /// left to right with the usual precedence, in double precision.
    pub formula: Option<Spanned<String>>,
}

/// How the bytes of a `fixed` field are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    U8,
    I8,
    U16be,
    U16le,
    I16be,
    I16le,
    U24be,
    U24le,
    I24be,
    I24le,
    U32be,
    U32le,
    I32be,
    I32le,
    F32be,
    F32le,
    /// Binary-coded decimal: each byte holds two decimal digits (`0x42` is 42).
    Bcd8,
    Bcd16be,
    Bcd24be,
    Bcd32be,
}

impl FieldType {
    /// Width in bytes.
    pub fn width(self) -> usize {
        use FieldType::*;
        match self {
            U8 | I8 | Bcd8 => 1,
            U16be | U16le | I16be | I16le | Bcd16be => 2,
            U24be | U24le | I24be | I24le | Bcd24be => 3,
            U32be | U32le | I32be | I32le | F32be | F32le | Bcd32be => 4,
        }
    }

    pub fn bits(self) -> u32 {
        self.width() as u32 * 8
    }

    pub fn is_signed(self) -> bool {
        use FieldType::*;
        matches!(self, I8 | I16be | I16le | I24be | I24le | I32be | I32le)
    }

    pub fn is_float(self) -> bool {
        matches!(self, FieldType::F32be | FieldType::F32le)
    }

    pub fn is_big_endian(self) -> bool {
        use FieldType::*;
        matches!(self, U16be | I16be | U24be | I24be | U32be | I32be | F32be | Bcd16be | Bcd24be | Bcd32be)
    }

    pub fn is_bcd(self) -> bool {
        use FieldType::*;
        matches!(self, Bcd8 | Bcd16be | Bcd24be | Bcd32be)
    }
}

/// `when = { byte = 6, equals = 1 }`: a test of one payload byte. Exactly one of `equals`
/// and `in` is given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Position of the byte to test, counted from 0.
    pub byte: usize,
    /// Bits of the byte to test, applied before comparing (`mask = 0x80` tests the top bit).
    /// Default `0xFF`.
    pub mask: Option<u8>,
    /// The field is emitted when the (masked) byte equals this value.
    pub equals: Option<u8>,
    /// The field is emitted when the (masked) byte is one of these values.
    #[serde(rename = "in")]
    pub any_of: Option<Vec<u8>>,
}

/// A worked example: a payload and what it must decode to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleSpec {
    /// What the example shows; printed when it fails.
    pub description: Option<String>,
    /// The fPort the payload arrived on; omit for "unknown".
    pub fport: Option<u8>,
    /// Binary payload as hex digits (either case; spaces allowed), for `fixed` layouts.
    pub payload_hex: Option<String>,
    /// JSON payload as text, for the `json` layout.
    pub payload_json: Option<String>,
    /// The readings the payload must decode to: all of them and no others, in canonical units.
    /// Values match within 1e-6 relative or 1e-9 absolute.
    #[serde(default)]
    pub readings: Vec<ExpectedReading>,
    /// Instead of `readings`: decoding must fail with an error whose message contains this text.
    pub error: Option<String>,
    /// Texts that must each appear in one of the decoder's warnings (an unknown channel, a
    /// missing JSON value). Without it, warnings are not checked.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One expected reading of an example.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedReading {
    /// Canonical quantity name.
    pub quantity: Quantity,
    /// Value in the canonical unit of the quantity.
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_parses() {
        let text = r#"
            id = "acme-t1"
            vendor = "Acme"
            model = "T1"
            reference = "Acme T1 manual, section Payload"
            [[layouts]]
            kind = "fixed"
            fports = [1]
            [[layouts.fields]]
            quantity = "air_temperature"
            type = "i16be"
            byte = 0
            scale = 0.1
            when = { byte = 2, in = [1, 2] }
            [[examples]]
            fport = 1
            payload_hex = "00FA01"
            readings = [{ quantity = "air_temperature", value = 25 }]
        "#;
        let file: ProfileFile = toml::from_str(text).unwrap();
        assert_eq!(file.id.get_ref(), "acme-t1");
        let layout = file.layouts[0].get_ref();
        assert_eq!(*layout.kind.get_ref(), LayoutKind::Fixed);
        let field = layout.fields[0].get_ref();
        assert_eq!(field.ty.as_ref().map(|t| *t.get_ref()), Some(FieldType::I16be));
        assert_eq!(field.when.as_ref().unwrap().get_ref().any_of.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(file.examples[0].get_ref().readings[0].value, 25.0);
    }

    #[test]
    fn types_know_their_shape() {
        assert_eq!(FieldType::I24le.width(), 3);
        assert_eq!(FieldType::U32be.bits(), 32);
        assert!(FieldType::I8.is_signed() && !FieldType::U8.is_signed());
        assert!(!FieldType::F32be.is_signed() && FieldType::F32be.is_float());
        assert!(FieldType::U16be.is_big_endian() && !FieldType::U16le.is_big_endian());
    }

    #[test]
    fn unknown_keys_and_types_are_refused() {
        let base = "id = \"a-b\"\nvendor = \"A\"\nmodel = \"B\"\nreference = \"r\"\n";
        assert!(toml::from_str::<ProfileFile>(&format!("{base}colour = 1\n")).is_err());
        let bad_type =
            format!("{base}[[layouts]]\nkind = \"fixed\"\n[[layouts.fields]]\nquantity = \"air_temperature\"\ntype = \"u12\"\n");
        let err = toml::from_str::<ProfileFile>(&bad_type).unwrap_err();
        assert!(err.message().contains("u12"), "{err}");
        assert!(err.span().is_some());
    }
}
