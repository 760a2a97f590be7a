//! What every layout kind shares: the decoded result, the decode error, and the problem list
//! that compiling fills. The layout kinds ([`super::field`], [`super::json`], `tlv`, `flags`,
//! `lpp`, `js`) and the dispatcher in [`super`] all take these from here.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

pub use crate::model::DecodedValue;
use crate::model::Quantity;

/// The largest LoRaWAN application payload (FRMPayload at the fastest data rates), the default
/// `max_length` of binary layouts.
pub const MAX_LORAWAN_PAYLOAD: usize = 242;

/// What a payload decoded to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    /// The readings, in the order of the layout's fields.
    pub values: Vec<DecodedValue>,
    /// Things an operator may want to know that did not stop decoding (a JSON value missing,
    /// a float that was not finite, an unknown channel). Empty for ordinary payloads.
    pub warnings: Vec<String>,
    /// Values that came out NaN or infinite (a float sent as NaN, a formula dividing by zero,
    /// a codec's `"Infinity"`), each also named in `warnings`. Kept apart from `values`, which
    /// are always finite: ingest stores them as readings flagged bad, so that a message never
    /// loses a value without a trace.
    pub non_finite: Vec<DecodedValue>,
}

impl Decoded {
    /// Every value for storing: the finite ones, then the non-finite ones (which quality
    /// control flags bad). An error, naming the warnings, when decoding found nothing but
    /// warnings: a message that yields no reading and had problems must not pass unnoticed.
    /// No values and no warnings (an `ignore` layout, only "no value" sentinels) is fine.
    pub fn into_values(self) -> Result<Vec<DecodedValue>, String> {
        if self.values.is_empty() && self.non_finite.is_empty() && !self.warnings.is_empty() {
            return Err(format!("decoded to no readings: {}", self.warnings.join("; ")));
        }
        let mut values = self.values;
        values.extend(self.non_finite);
        Ok(values)
    }
}

/// Why a payload could not be decoded. The messages are written for an operator looking at a
/// dead-lettered uplink; the caller adds the device and profile id.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload too short{on}: needs {needed} bytes, got {got}", on = OnPort(*f_port))]
    TooShort { f_port: Option<u8>, needed: usize, got: usize },
    #[error("payload too long{on}: at most {max} bytes, got {got}", on = OnPort(*f_port))]
    TooLong { f_port: Option<u8>, max: usize, got: usize },
    #[error("no layout for {port}; this profile decodes {handled}", port = PortName(*f_port))]
    NoLayoutForPort { f_port: Option<u8>, handled: Arc<str> },
    #[error("no layout for {port} matches this payload (its header bytes select none of them)", port = PortName(*f_port))]
    NoLayoutMatches { f_port: Option<u8> },
    #[error("this profile has no binary layout; it decodes JSON payloads only")]
    NoBinaryLayout,
    #[error("this profile has no JSON layout; it decodes binary payloads only")]
    NoJsonLayout,
    /// A JSON-only profile, and the uplink has no output of a network-server decoder.
    #[error("this profile decodes JSON only, and the uplink carries no decoded object (TTN uplink_message.decoded_payload, ChirpStack object): give the device a payload formatter (TTN) or codec (ChirpStack) on the network server, or a profile with a binary layout")]
    NoDecodedObject,
    /// The network server's decoded object is not JSON this gateway can read (a number out
    /// of range, nesting deeper than 128).
    #[error("the uplink's decoded object (TTN decoded_payload, ChirpStack object) cannot be read: {0}")]
    DecodedObject(String),
    #[error("JSON value at {pointer} ({quantity}) is {found}, expected a number")]
    JsonNotNumber { pointer: Arc<str>, quantity: Quantity, found: &'static str },
    /// The payload's own structure is broken: a channel or group that ends past the payload.
    #[error("malformed payload{on}: {message}", on = OnPort(*f_port))]
    Malformed { f_port: Option<u8>, message: String },
    /// A JavaScript codec failed: it returned `errors`, threw, or broke a limit.
    #[error("codec: {0}")]
    Codec(String),
}

struct OnPort(Option<u8>);

impl fmt::Display for OnPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, " on fPort {p}"),
            None => Ok(()),
        }
    }
}

struct PortName(Option<u8>);

impl fmt::Display for PortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, "fPort {p}"),
            None => f.write_str("uplinks without an fPort"),
        }
    }
}

/// A problem found while compiling a profile: where (byte span in the file, key path) and what.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Issue {
    pub span: Option<Range<usize>>,
    pub path: String,
    pub message: String,
}

/// A set of byte values (fPorts, condition values) as a 256-bit bitmap: no allocation, O(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ByteSet([u64; 4]);

impl ByteSet {
    pub fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    pub fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    pub fn is_subset_of(&self, other: &ByteSet) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & !b == 0)
    }

    pub fn union(&mut self, other: &ByteSet) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
    }
}

pub(crate) struct Issues<'a> {
    pub list: &'a mut Vec<Issue>,
}

impl Issues<'_> {
    pub fn push(&mut self, span: Option<Range<usize>>, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(Issue { span, path: path.into(), message: message.into() });
    }
}

/// The same quantity twice in one layout would give two readings for one (device, quantity,
/// time); allowed only when conditions can make them exclusive.
pub(crate) fn check_duplicate_quantities(
    fields: impl Iterator<Item = (Quantity, bool, Range<usize>)>,
    path: &str,
    issues: &mut Issues,
) {
    let fields: Vec<_> = fields.collect();
    for (j, (q, conditional, span)) in fields.iter().enumerate() {
        if let Some(first) = fields[..j].iter().position(|(q0, c0, _)| q0 == q && !(*c0 && *conditional)) {
            issues.push(
                Some(span.clone()),
                format!("{path}.fields[{j}].quantity"),
                format!("{q} is already produced by fields[{first}]; give both a `when` condition if they are exclusive"),
            );
        }
    }
}
