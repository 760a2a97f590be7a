//! The declarative decoder: profile layouts compiled once at load time, then applied to payloads.
//!
//! Compiling resolves everything that does not depend on the payload (field widths, the
//! shortest acceptable payload, unit conversions, formulas, sentinel values, condition sets), so
//! that decoding a payload only reads bytes and does arithmetic: the one allocation is the
//! output `Vec` (plus a `String` per warning, which only unusual payloads produce). Every byte
//! access goes through `slice::get`, so no payload, however hostile, can make decoding panic,
//! and every loop over a payload advances by at least one byte, so none can make it loop.
//!
//! This module holds what every kind shares: results and errors, choosing a layout, compiling
//! the `[[layouts]]` of a file, and the `fixed` kind. [`field`] reads and scales values from
//! bytes, [`json`] finds them by JSON pointer; [`super::tlv`], [`super::flags`], [`super::lpp`]
//! and [`super::js`] hold the other kinds.

mod field;
mod json;
#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use toml::Spanned;

use super::flags::FlagsLayout;
use super::format::{LayoutKind, LayoutSpec};
use super::js::JsLayout;
use super::lpp::LppLayout;
use super::tlv::TlvLayout;
use crate::model::Quantity;
pub(crate) use field::{
    compile_condition, compile_fixed_field, compile_scaling, read_bits, reject_keys, ByteTest, FixedField, Scaling,
};
pub(crate) use json::{compile_json, compile_pointer_fields, map_json, JsonField, JsonLayout};

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

/// One decoded reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodedValue {
    pub quantity: Quantity,
    /// Value in `quantity.unit()`.
    pub value: f64,
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

/// All layouts of a profile, compiled.
#[derive(Debug)]
pub(crate) struct Layouts {
    binary: Vec<BinaryLayout>,
    json: Option<JsonLayout>,
    /// "fPorts 2, 3" — for the error when no layout matches; shared, not rebuilt per error.
    handled: Arc<str>,
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

    fn is_subset_of(&self, other: &ByteSet) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & !b == 0)
    }

    fn union(&mut self, other: &ByteSet) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
    }
}

/// A layout of any binary kind with what chooses it.
#[derive(Debug)]
struct BinaryLayout {
    /// `None`: every fPort, and uplinks without one.
    ports: Option<ByteSet>,
    /// The header test of `match`; `None` = always.
    select: Option<ByteTest>,
    /// Shortest and longest payload accepted.
    min: usize,
    max: usize,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Fixed(Vec<FixedField>),
    Tlv(TlvLayout),
    Flags(FlagsLayout),
    Lpp(LppLayout),
    Js(Box<JsLayout>),
    Ignore,
}

impl Layouts {
    /// Decodes a binary payload with the first layout that accepts `f_port` and whose `match`
    /// (if any) the payload satisfies.
    pub fn decode_bytes(&self, f_port: Option<u8>, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        if self.binary.is_empty() {
            return Err(DecodeError::NoBinaryLayout);
        }
        let mut port_known = false;
        let mut header_short: Option<usize> = None;
        for layout in &self.binary {
            let port_ok = match (&layout.ports, f_port) {
                (None, _) => true,
                (Some(set), Some(p)) => set.contains(p),
                (Some(_), None) => false,
            };
            if !port_ok {
                continue;
            }
            port_known = true;
            if let Some(test) = &layout.select {
                match test.matches(bytes) {
                    Some(true) => {}
                    Some(false) => continue,
                    None => {
                        header_short = Some(header_short.unwrap_or(0).max(test.byte + 1));
                        continue;
                    }
                }
            }
            return layout.decode(f_port, bytes);
        }
        match (port_known, header_short) {
            (false, _) => Err(DecodeError::NoLayoutForPort { f_port, handled: self.handled.clone() }),
            (true, Some(needed)) => Err(DecodeError::TooShort { f_port, needed, got: bytes.len() }),
            (true, None) => Err(DecodeError::NoLayoutMatches { f_port }),
        }
    }

    pub fn decode_json(&self, value: &serde_json::Value) -> Result<Decoded, DecodeError> {
        let layout = self.json.as_ref().ok_or(DecodeError::NoJsonLayout)?;
        let mut out = Decoded { values: Vec::with_capacity(layout.fields.len()), ..Default::default() };
        map_json(&layout.fields, value, false, &mut out)?;
        Ok(out)
    }

    /// Decodes an uplink: its payload bytes with the binary layouts; the network server's
    /// decoded object (`decoded`) with the `json` layout when the profile has no binary
    /// layout, or when none of them takes this uplink (its fPort, its header bytes).
    pub fn decode_uplink(&self, f_port: Option<u8>, bytes: &[u8], decoded: Option<&str>) -> Result<Decoded, DecodeError> {
        let binary = self.decode_bytes(f_port, bytes);
        if self.json.is_none() {
            return binary;
        }
        match (binary, decoded) {
            (
                Err(DecodeError::NoBinaryLayout | DecodeError::NoLayoutForPort { .. } | DecodeError::NoLayoutMatches { .. }),
                Some(text),
            ) => {
                let value: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| DecodeError::DecodedObject(e.to_string()))?;
                self.decode_json(&value)
            }
            (Err(DecodeError::NoBinaryLayout), None) => Err(DecodeError::NoDecodedObject),
            (result, _) => result,
        }
    }

    /// Whether any layout runs a JavaScript codec (which may take up to its time limit).
    pub fn runs_script(&self) -> bool {
        self.binary.iter().any(|l| matches!(l.body, Body::Js(_)))
    }

    /// The longest time limit of the JavaScript codecs among these layouts, if there are any.
    pub fn script_timeout(&self) -> Option<std::time::Duration> {
        self.binary
            .iter()
            .filter_map(|l| match &l.body {
                Body::Js(j) => Some(j.timeout()),
                _ => None,
            })
            .max()
    }

    /// The quantities these layouts can produce, each once, in order of first appearance.
    pub fn quantities(&self) -> Vec<Quantity> {
        let mut all: Vec<Quantity> = Vec::new();
        for l in &self.binary {
            match &l.body {
                Body::Fixed(fields) => all.extend(fields.iter().map(|f| f.quantity)),
                Body::Tlv(t) => all.extend(t.quantities()),
                Body::Flags(f) => all.extend(f.quantities()),
                Body::Lpp(l) => all.extend(l.quantities()),
                Body::Js(j) => all.extend(j.fields.iter().map(|f| f.quantity)),
                Body::Ignore => {}
            }
        }
        all.extend(self.json.iter().flat_map(|l| l.fields.iter().map(|f| f.quantity)));
        let mut out: Vec<Quantity> = Vec::new();
        for q in all {
            if !out.contains(&q) {
                out.push(q);
            }
        }
        out
    }
}

impl BinaryLayout {
    fn decode(&self, f_port: Option<u8>, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let too_short = || DecodeError::TooShort { f_port, needed: self.min, got: bytes.len() };
        if bytes.len() < self.min {
            return Err(too_short());
        }
        if bytes.len() > self.max {
            return Err(DecodeError::TooLong { f_port, max: self.max, got: bytes.len() });
        }
        match &self.body {
            Body::Fixed(fields) => {
                let mut out = Decoded { values: Vec::with_capacity(fields.len()), ..Default::default() };
                for f in fields {
                    f.decode_into(bytes, 0, &mut out).map_err(|()| too_short())?;
                }
                Ok(out)
            }
            Body::Tlv(t) => t.decode(f_port, bytes),
            Body::Flags(f) => f.decode(f_port, bytes),
            Body::Lpp(l) => l.decode(f_port, bytes),
            Body::Js(j) => j.decode(f_port, bytes),
            Body::Ignore => Ok(Decoded::default()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Compiling: format types → the structures above, collecting every problem.

pub(crate) struct Issues<'a> {
    pub list: &'a mut Vec<Issue>,
}

impl Issues<'_> {
    pub fn push(&mut self, span: Option<Range<usize>>, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(Issue { span, path: path.into(), message: message.into() });
    }
}

/// Compiles the `[[layouts]]` of a file; `dir` is the profile's directory (for script files).
/// Problems go to `issues`; the result is only meaningful when none were added.
pub(crate) fn compile_layouts(specs: &[Spanned<LayoutSpec>], dir: &Path, issues: &mut Vec<Issue>) -> Layouts {
    let mut issues = Issues { list: issues };
    let mut binary = Vec::new();
    let mut json: Option<JsonLayout> = None;
    // fPorts already claimed by earlier layouts without `match`, to find layouts that can never
    // be chosen.
    let mut covered = ByteSet::default();
    let mut catch_all_seen = false;

    if specs.is_empty() {
        issues.push(None, "layouts", "a profile needs at least one [[layouts]] table");
    }
    for (i, spec) in specs.iter().enumerate() {
        let path = format!("layouts[{i}]");
        let span = Some(spec.span());
        let spec = spec.get_ref();
        let kind = *spec.kind.get_ref();
        check_kind_keys(spec, kind, &path, span.clone(), &mut issues);
        if kind == LayoutKind::Json {
            let layout = compile_json(spec, &path, &mut issues);
            if json.is_some() {
                issues.push(span, path, "a profile can have only one layout of kind \"json\"");
            } else {
                json = Some(layout);
            }
            continue;
        }
        let Some(layout) = compile_binary(spec, kind, &path, dir, span.clone(), &mut issues) else { continue };
        if catch_all_seen || layout.ports.is_some_and(|p| p.is_subset_of(&covered)) {
            issues.push(span, path, "this layout is never used: earlier layouts already decode all its fPorts");
        }
        if layout.select.is_none() {
            match &layout.ports {
                Some(p) => covered.union(p),
                None => catch_all_seen = true,
            }
        }
        binary.push(layout);
    }
    let handled = describe_ports(&binary);
    Layouts { binary, json, handled: handled.into() }
}

/// Keys that belong to other kinds are refused, so that a profile says only what is used.
fn check_kind_keys(spec: &LayoutSpec, kind: LayoutKind, path: &str, span: Option<Range<usize>>, issues: &mut Issues) {
    use LayoutKind as K;
    let binary = kind != K::Json;
    let keys: [(&str, bool, bool); 12] = [
        ("fports", spec.fports.is_some(), binary),
        ("match", spec.select.is_some(), binary),
        ("min_length", spec.min_length.is_some(), binary),
        ("max_length", spec.max_length.is_some(), binary),
        ("start", spec.start.is_some(), matches!(kind, K::Tlv | K::Flags)),
        ("trailer", spec.trailer.is_some(), matches!(kind, K::Tlv | K::Lpp)),
        ("channels", !spec.channels.is_empty(), kind == K::Tlv),
        ("flags", spec.flags.is_some(), kind == K::Flags),
        ("groups", !spec.groups.is_empty(), kind == K::Flags),
        ("script", spec.script.is_some() || spec.script_file.is_some(), kind == K::Javascript),
        ("timeout_ms", spec.timeout_ms.is_some() || spec.memory_limit_kib.is_some(), kind == K::Javascript),
        ("fields", !spec.fields.is_empty(), matches!(kind, K::Fixed | K::Json | K::Lpp | K::Javascript)),
    ];
    for (key, present, allowed) in keys {
        if present && !allowed {
            issues.push(
                span.clone(),
                format!("{path}.{key}"),
                format!("`{key}` does not apply to layouts of kind {}", kind_name(kind)),
            );
        }
    }
}

pub(crate) fn kind_name(kind: LayoutKind) -> &'static str {
    match kind {
        LayoutKind::Fixed => "\"fixed\"",
        LayoutKind::Json => "\"json\"",
        LayoutKind::Tlv => "\"tlv\"",
        LayoutKind::Flags => "\"flags\"",
        LayoutKind::Lpp => "\"lpp\"",
        LayoutKind::Javascript => "\"javascript\"",
        LayoutKind::Ignore => "\"ignore\"",
    }
}

fn describe_ports(binary: &[BinaryLayout]) -> String {
    if binary.iter().any(|l| l.ports.is_none()) {
        return "every fPort".to_owned();
    }
    let mut all = ByteSet::default();
    for l in binary {
        if let Some(p) = &l.ports {
            all.union(p);
        }
    }
    let ports: Vec<String> = (0..=255u8).filter(|p| all.contains(*p)).map(|p| p.to_string()).collect();
    match ports.len() {
        0 => "no fPort".to_owned(),
        1 => format!("fPort {}", ports[0]),
        _ => format!("fPorts {}", ports.join(", ")),
    }
}

fn compile_binary(
    spec: &LayoutSpec,
    kind: LayoutKind,
    path: &str,
    dir: &Path,
    span: Option<Range<usize>>,
    issues: &mut Issues,
) -> Option<BinaryLayout> {
    let before = issues.list.len();
    let ports = match &spec.fports {
        None => None,
        Some(list) if list.is_empty() => {
            issues.push(span.clone(), format!("{path}.fports"), "fports is empty; omit it to decode every fPort");
            None
        }
        Some(list) => {
            let mut set = ByteSet::default();
            for &p in list {
                // 0 carries MAC commands only; 224 is the LoRaWAN test port, 225–255 are reserved.
                if !(1..=223).contains(&p) {
                    issues.push(
                        span.clone(),
                        format!("{path}.fports"),
                        format!("fPort {p} cannot carry application data; use 1 to 223"),
                    );
                }
                set.insert(p);
            }
            Some(set)
        }
    };
    let select = spec.select.as_ref().and_then(|c| compile_condition(c, &format!("{path}.match"), issues));
    // What the layout itself needs before any field: its header test.
    let mut end = select.map_or(0, |t| t.byte + 1);
    let body = match kind {
        LayoutKind::Fixed => {
            let mut fields = Vec::with_capacity(spec.fields.len());
            for (j, field) in spec.fields.iter().enumerate() {
                if let Some(f) = compile_fixed_field(field, &format!("{path}.fields[{j}]"), issues) {
                    end = end.max(f.end());
                    fields.push(f);
                }
            }
            if spec.fields.is_empty() {
                issues.push(span.clone(), format!("{path}.fields"), "a layout needs at least one [[layouts.fields]] table");
            }
            check_duplicate_quantities(
                spec.fields.iter().map(|f| (f.get_ref().quantity, f.get_ref().when.is_some(), f.span())),
                path,
                issues,
            );
            Body::Fixed(fields)
        }
        LayoutKind::Tlv => {
            let layout = TlvLayout::compile(spec, path, span.clone(), issues);
            end = end.max(layout.min_len());
            Body::Tlv(layout)
        }
        LayoutKind::Flags => {
            let layout = FlagsLayout::compile(spec, path, span.clone(), issues);
            end = end.max(layout.header_end());
            Body::Flags(layout)
        }
        LayoutKind::Lpp => Body::Lpp(LppLayout::compile(spec, path, issues)),
        LayoutKind::Javascript => match JsLayout::compile(spec, path, dir, span.clone(), issues) {
            Some(j) => Body::Js(Box::new(j)),
            None => Body::Ignore,
        },
        LayoutKind::Ignore => Body::Ignore,
        LayoutKind::Json => unreachable_json(),
    };
    let min = match spec.min_length {
        Some(min) if min < end => {
            issues.push(
                span.clone(),
                format!("{path}.min_length"),
                format!("min_length {min} is shorter than the {end} bytes the fields and conditions read"),
            );
            end
        }
        Some(min) => min,
        None => end,
    };
    let max = spec.max_length.unwrap_or(MAX_LORAWAN_PAYLOAD.max(min));
    if max < min {
        issues.push(
            span,
            format!("{path}.max_length"),
            format!("max_length {max} is shorter than the {min} bytes the layout needs"),
        );
    }
    (issues.list.len() == before).then_some(BinaryLayout { ports, select, min, max, body })
}

/// `compile_layouts` handles `json` before calling `compile_binary`; this keeps the match
/// exhaustive without a panic.
fn unreachable_json() -> Body {
    Body::Ignore
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
