//! The declarative decoder: profile layouts compiled once at load time, then applied to payloads.
//!
//! Compiling resolves everything that does not depend on the payload (field widths, the
//! shortest acceptable payload, unit conversions, sentinel values, condition sets), so that
//! decoding a payload only reads bytes and does arithmetic: the one allocation is the output
//! `Vec` (plus a `String` per warning, which only unusual payloads produce). Every byte access
//! goes through `slice::get`, so no payload, however hostile, can make decoding panic.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use toml::Spanned;

use super::format::{Condition, FieldSpec, FieldType, LayoutKind, LayoutSpec};
use super::units::{Conversion, Unit};
use crate::model::Quantity;

/// What a payload decoded to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    /// The readings, in the order of the layout's fields.
    pub values: Vec<DecodedValue>,
    /// Things an operator may want to know that did not stop decoding (a JSON value missing,
    /// a float that was not finite). Empty for ordinary payloads.
    pub warnings: Vec<String>,
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
    #[error("no layout for {port}; this profile decodes {handled}", port = PortName(*f_port))]
    NoLayoutForPort { f_port: Option<u8>, handled: Arc<str> },
    #[error("this profile has no binary layout; it decodes JSON payloads only")]
    NoBinaryLayout,
    #[error("this profile has no JSON layout; it decodes binary payloads only")]
    NoJsonLayout,
    #[error("JSON value at {pointer} ({quantity}) is {found}, expected a number")]
    JsonNotNumber { pointer: Arc<str>, quantity: Quantity, found: &'static str },
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
    fixed: Vec<FixedLayout>,
    json: Option<JsonLayout>,
    /// "fPorts 2, 3" — for the error when no layout matches; shared, not rebuilt per error.
    handled: Arc<str>,
}

/// A set of byte values (fPorts, condition values) as a 256-bit bitmap: no allocation, O(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn contains(&self, b: u8) -> bool {
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

#[derive(Debug)]
struct FixedLayout {
    /// `None`: every fPort, and uplinks without one.
    ports: Option<ByteSet>,
    /// Shortest payload accepted: `min_length` or the end of the last byte read.
    needed: usize,
    fields: Vec<FixedField>,
}

#[derive(Debug)]
struct FixedField {
    quantity: Quantity,
    ty: FieldType,
    byte: usize,
    /// All ones of the type's width when the profile gives no mask.
    mask: u64,
    shift: u32,
    /// Normalised at load time: signed values for signed types, bit patterns for floats.
    no_value: Vec<i64>,
    when: Option<ByteTest>,
    scaling: Scaling,
}

#[derive(Debug, Clone, Copy)]
struct ByteTest {
    byte: usize,
    mask: u8,
    values: ByteSet,
}

/// `conversion((raw * mul / div) + add)`: the profile's scale and offset, then the unit.
/// A scale of `1/n` is kept as a division by `n` so that `2829 / 100` gives the double nearest
/// 28.29, as the vendor's own decoder does, rather than `2829 * 0.01 = 28.290000000000003`.
#[derive(Debug, Clone, Copy)]
struct Scaling {
    mul: f64,
    div: f64,
    add: f64,
    conversion: Conversion,
}

impl Scaling {
    fn apply(&self, raw: f64) -> f64 {
        self.conversion.apply(raw * self.mul / self.div + self.add)
    }
}

#[derive(Debug)]
struct JsonLayout {
    fields: Vec<JsonField>,
}

#[derive(Debug)]
struct JsonField {
    quantity: Quantity,
    pointer: Arc<str>,
    scaling: Scaling,
}

impl Layouts {
    /// Decodes a binary payload with the first layout that accepts `f_port`.
    pub fn decode_bytes(&self, f_port: Option<u8>, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        if self.fixed.is_empty() {
            return Err(DecodeError::NoBinaryLayout);
        }
        let layout = self
            .fixed
            .iter()
            .find(|l| match (&l.ports, f_port) {
                (None, _) => true,
                (Some(set), Some(p)) => set.contains(p),
                (Some(_), None) => false,
            })
            .ok_or_else(|| DecodeError::NoLayoutForPort { f_port, handled: self.handled.clone() })?;
        layout.decode(f_port, bytes)
    }

    pub fn decode_json(&self, value: &serde_json::Value) -> Result<Decoded, DecodeError> {
        let layout = self.json.as_ref().ok_or(DecodeError::NoJsonLayout)?;
        let mut out = Decoded { values: Vec::with_capacity(layout.fields.len()), warnings: Vec::new() };
        for f in &layout.fields {
            let raw = match value.pointer(&f.pointer) {
                Some(serde_json::Value::Number(n)) => n.as_f64(),
                None => {
                    out.warnings.push(format!("{}: no value at JSON pointer {}", f.quantity, f.pointer));
                    continue;
                }
                Some(serde_json::Value::Null) => {
                    out.warnings.push(format!("{}: JSON value at {} is null", f.quantity, f.pointer));
                    continue;
                }
                Some(other) => {
                    return Err(DecodeError::JsonNotNumber {
                        pointer: f.pointer.clone(),
                        quantity: f.quantity,
                        found: json_type(other),
                    })
                }
            };
            // serde_json numbers are finite, but a huge number times a scale need not be.
            match raw.map(|r| f.scaling.apply(r)) {
                Some(v) if v.is_finite() => out.values.push(DecodedValue { quantity: f.quantity, value: v }),
                _ => out.warnings.push(format!("{}: value at {} is out of range", f.quantity, f.pointer)),
            }
        }
        Ok(out)
    }

    /// The quantities these layouts can produce, each once, in order of first appearance.
    pub fn quantities(&self) -> Vec<Quantity> {
        let fixed = self.fixed.iter().flat_map(|l| l.fields.iter().map(|f| f.quantity));
        let json = self.json.iter().flat_map(|l| l.fields.iter().map(|f| f.quantity));
        let mut out: Vec<Quantity> = Vec::new();
        for q in fixed.chain(json) {
            if !out.contains(&q) {
                out.push(q);
            }
        }
        out
    }
}

impl FixedLayout {
    fn decode(&self, f_port: Option<u8>, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let too_short = || DecodeError::TooShort { f_port, needed: self.needed, got: bytes.len() };
        if bytes.len() < self.needed {
            return Err(too_short());
        }
        let mut out = Decoded { values: Vec::with_capacity(self.fields.len()), warnings: Vec::new() };
        for f in &self.fields {
            if let Some(test) = &f.when {
                let b = *bytes.get(test.byte).ok_or_else(too_short)?;
                if !test.values.contains(b & test.mask) {
                    continue;
                }
            }
            let Some(bits) = read_bits(f.ty, bytes, f.byte) else {
                return Err(too_short());
            };
            let raw = if f.ty.is_float() {
                if f.no_value.contains(&(bits as i64)) {
                    continue;
                }
                f64::from(f32::from_bits(bits as u32))
            } else if f.ty.is_signed() {
                let unused = 64 - f.ty.bits();
                let signed = ((bits << unused) as i64) >> unused;
                if f.no_value.contains(&signed) {
                    continue;
                }
                signed as f64
            } else {
                let v = (bits & f.mask) >> f.shift;
                if f.no_value.contains(&(v as i64)) {
                    continue;
                }
                v as f64
            };
            let value = f.scaling.apply(raw);
            if value.is_finite() {
                out.values.push(DecodedValue { quantity: f.quantity, value });
            } else {
                // Only floats get here (NaN or infinity on the wire): not a reading, but worth
                // telling the operator because the sensor did not use a documented sentinel.
                out.warnings.push(format!("{}: value at byte {} is not a finite number", f.quantity, f.byte));
            }
        }
        Ok(out)
    }
}

/// The unsigned integer of `ty`'s width at `at`, or `None` when the payload ends first.
fn read_bits(ty: FieldType, bytes: &[u8], at: usize) -> Option<u64> {
    let end = at.checked_add(ty.width())?;
    let slice = bytes.get(at..end)?;
    let fold_be = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
    Some(if ty.is_big_endian() || ty.width() == 1 {
        slice.iter().fold(0, fold_be)
    } else {
        slice.iter().rev().fold(0, fold_be)
    })
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// Compiling: format types → the structures above, collecting every problem.

struct Issues<'a> {
    list: &'a mut Vec<Issue>,
}

impl Issues<'_> {
    fn push(&mut self, span: Option<Range<usize>>, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(Issue { span, path: path.into(), message: message.into() });
    }
}

/// Compiles the `[[layouts]]` of a file. Problems go to `issues`; the result is only meaningful
/// when none were added.
pub(crate) fn compile_layouts(specs: &[Spanned<LayoutSpec>], issues: &mut Vec<Issue>) -> Layouts {
    let mut issues = Issues { list: issues };
    let mut fixed = Vec::new();
    let mut json: Option<JsonLayout> = None;
    // fPorts already claimed by earlier layouts, to find layouts that can never be chosen.
    let mut covered = ByteSet::default();
    let mut catch_all_seen = false;

    if specs.is_empty() {
        issues.push(None, "layouts", "a profile needs at least one [[layouts]] table");
    }
    for (i, spec) in specs.iter().enumerate() {
        let path = format!("layouts[{i}]");
        let span = Some(spec.span());
        let spec = spec.get_ref();
        match *spec.kind.get_ref() {
            LayoutKind::Fixed => {
                let Some(layout) = compile_fixed(spec, &path, span.clone(), &mut issues) else { continue };
                if catch_all_seen || layout.ports.is_some_and(|p| p.is_subset_of(&covered)) {
                    issues.push(span, path, "this layout is never used: earlier layouts already decode all its fPorts");
                }
                match &layout.ports {
                    Some(p) => covered.union(p),
                    None => catch_all_seen = true,
                }
                fixed.push(layout);
            }
            LayoutKind::Json => {
                let layout = compile_json(spec, &path, &mut issues);
                if json.is_some() {
                    issues.push(span, path, "a profile can have only one layout of kind \"json\"");
                } else {
                    json = Some(layout);
                }
            }
        }
    }
    let handled = describe_ports(&fixed);
    Layouts { fixed, json, handled: handled.into() }
}

fn describe_ports(fixed: &[FixedLayout]) -> String {
    if fixed.iter().any(|l| l.ports.is_none()) {
        return "every fPort".to_owned();
    }
    let mut all = ByteSet::default();
    for l in fixed {
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

fn compile_fixed(spec: &LayoutSpec, path: &str, span: Option<Range<usize>>, issues: &mut Issues) -> Option<FixedLayout> {
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
                    issues.push(span.clone(), format!("{path}.fports"), format!("fPort {p} cannot carry application data; use 1 to 223"));
                }
                set.insert(p);
            }
            Some(set)
        }
    };
    let mut fields = Vec::with_capacity(spec.fields.len());
    let mut end = 0usize;
    for (j, field) in spec.fields.iter().enumerate() {
        let fpath = format!("{path}.fields[{j}]");
        if let Some(f) = compile_fixed_field(field, &fpath, issues) {
            end = end.max(f.byte + f.ty.width());
            if let Some(t) = &f.when {
                end = end.max(t.byte + 1);
            }
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
    let needed = match spec.min_length {
        Some(min) if min < end => {
            issues.push(
                span,
                format!("{path}.min_length"),
                format!("min_length {min} is shorter than the {end} bytes the fields and conditions read"),
            );
            end
        }
        Some(min) => min,
        None => end,
    };
    (issues.list.len() == before).then_some(FixedLayout { ports, needed, fields })
}

/// The same quantity twice in one layout would give two readings for one (device, quantity,
/// time); allowed only when conditions can make them exclusive.
fn check_duplicate_quantities(
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

fn compile_fixed_field(field: &Spanned<FieldSpec>, path: &str, issues: &mut Issues) -> Option<FixedField> {
    let span = Some(field.span());
    let f = field.get_ref();
    let before = issues.list.len();
    if f.pointer.is_some() {
        issues.push(span.clone(), format!("{path}.pointer"), "`pointer` belongs to layouts of kind \"json\"; a \"fixed\" field is read with `byte` and `type`");
    }
    let Some(ty) = f.ty.as_ref().map(|t| *t.get_ref()) else {
        issues.push(span, format!("{path}.type"), "missing `type` (u8, i16be, f32le, ...)");
        return None;
    };
    let Some(byte) = f.byte else {
        issues.push(span, format!("{path}.byte"), "missing `byte`, the position of the value's first byte");
        return None;
    };
    // A position this large cannot be a real payload and would overflow `byte + len` below.
    if byte > 65_535 {
        issues.push(span.clone(), format!("{path}.byte"), format!("byte {byte} is beyond any LoRaWAN payload"));
    }
    let bits = ty.bits();
    let full = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    if (f.mask.is_some() || f.shift.is_some()) && (ty.is_signed() || ty.is_float()) {
        issues.push(span.clone(), format!("{path}.mask"), format!("mask and shift apply to unsigned types only, not {ty:?}"));
    }
    let mask = f.mask.unwrap_or(full);
    if mask == 0 || mask & !full != 0 {
        issues.push(span.clone(), format!("{path}.mask"), format!("mask {mask:#X} must be non-zero and fit in {bits} bits"));
    }
    let shift = f.shift.unwrap_or(0);
    if shift >= bits {
        issues.push(span.clone(), format!("{path}.shift"), format!("shift {shift} must be less than {bits}"));
    }
    let no_value = normalise_no_value(f.no_value.as_deref().unwrap_or(&[]), ty, mask.checked_shr(shift).unwrap_or(0))
        .map_err(|m| issues.push(span.clone(), format!("{path}.no_value"), m))
        .unwrap_or_default();
    let when = f.when.as_ref().and_then(|w| compile_condition(w, path, issues));
    let scaling = compile_scaling(f, path, span, issues)?;
    if issues.list.len() != before {
        return None;
    }
    Some(FixedField { quantity: f.quantity, ty, byte, mask, shift, no_value, when, scaling })
}

/// Brings sentinels into the form the decoder compares: the signed value for signed types
/// (so `0x8000` and `-32768` both work for `i16be`), the bit pattern for floats.
fn normalise_no_value(values: &[i64], ty: FieldType, max_unsigned: u64) -> Result<Vec<i64>, String> {
    let bits = ty.bits();
    let span = 1i64 << bits;
    values
        .iter()
        .map(|&v| {
            if ty.is_signed() {
                let half = span / 2;
                match v {
                    v if (-half..half).contains(&v) => Ok(v),
                    v if (half..span).contains(&v) => Ok(v - span),
                    _ => Err(format!("no_value {v} does not fit {ty:?}")),
                }
            } else if ty.is_float() {
                if (0..span).contains(&v) {
                    Ok(v)
                } else {
                    Err(format!("no_value {v} is not a 32-bit pattern; write the float's bits, e.g. 0x7FC00000"))
                }
            } else if v >= 0 && (v as u64) <= max_unsigned {
                Ok(v)
            } else {
                Err(format!("no_value {v} can never occur: {ty:?} after mask and shift ranges 0 to {max_unsigned}"))
            }
        })
        .collect()
}

fn compile_condition(when: &Spanned<Condition>, path: &str, issues: &mut Issues) -> Option<ByteTest> {
    let span = Some(when.span());
    let c = when.get_ref();
    let path = format!("{path}.when");
    let mask = c.mask.unwrap_or(0xFF);
    let mut values = ByteSet::default();
    match (c.equals, &c.any_of) {
        (Some(v), None) => values.insert(v),
        (None, Some(list)) if !list.is_empty() => list.iter().for_each(|&v| values.insert(v)),
        (None, Some(_)) => {
            issues.push(span, path, "`in` is empty, so the field would never be emitted");
            return None;
        }
        _ => {
            issues.push(span, path, "give exactly one of `equals` and `in`");
            return None;
        }
    }
    if c.byte > 65_535 {
        issues.push(span, path, format!("byte {} is beyond any LoRaWAN payload", c.byte));
        return None;
    }
    // A value with bits outside the mask can never match: almost certainly a mistake.
    if (0..=255u8).any(|v| values.contains(v) && v & !mask != 0) {
        issues.push(span, path, format!("a value has bits outside mask {mask:#04X}, so it can never match"));
        return None;
    }
    Some(ByteTest { byte: c.byte, mask, values })
}

fn compile_scaling(f: &FieldSpec, path: &str, span: Option<Range<usize>>, issues: &mut Issues) -> Option<Scaling> {
    let scale = f.scale.unwrap_or(1.0);
    let add = f.offset.unwrap_or(0.0);
    let mut ok = true;
    if !scale.is_finite() || scale == 0.0 {
        issues.push(span.clone(), format!("{path}.scale"), format!("scale must be a finite non-zero number, got {scale}"));
        ok = false;
    }
    if !add.is_finite() {
        issues.push(span.clone(), format!("{path}.offset"), format!("offset must be a finite number, got {add}"));
        ok = false;
    }
    let canonical = match Unit::parse(f.quantity.unit()) {
        Ok(u) => u,
        Err(e) => {
            // model.rs and units.rs disagree: a programming error, but reported, not panicked.
            issues.push(span, format!("{path}.quantity"), e.to_string());
            return None;
        }
    };
    let conversion = match &f.unit {
        None => Conversion::IDENTITY,
        Some(u) => match Conversion::between(*u.get_ref(), canonical) {
            Ok(c) => c,
            Err(e) => {
                issues.push(Some(u.span()), format!("{path}.unit"), format!("{e}, the canonical unit of {}", f.quantity));
                return None;
            }
        },
    };
    let (mul, div) = as_division(scale);
    ok.then_some(Scaling { mul, div, add, conversion })
}

/// `0.01` becomes `/100`: see [`Scaling`].
fn as_division(scale: f64) -> (f64, f64) {
    let n = (1.0 / scale).round();
    if n.abs() >= 2.0 && n.abs() < 1e15 && 1.0 / n == scale {
        (1.0, n)
    } else {
        (scale, 1.0)
    }
}

fn compile_json(spec: &LayoutSpec, path: &str, issues: &mut Issues) -> JsonLayout {
    let mut fields = Vec::with_capacity(spec.fields.len());
    if spec.fports.is_some() || spec.min_length.is_some() {
        issues.push(
            Some(spec.kind.span()),
            path,
            "`fports` and `min_length` belong to layouts of kind \"fixed\"",
        );
    }
    if spec.fields.is_empty() {
        issues.push(Some(spec.kind.span()), format!("{path}.fields"), "a layout needs at least one [[layouts.fields]] table");
    }
    for (j, field) in spec.fields.iter().enumerate() {
        let fpath = format!("{path}.fields[{j}]");
        let span = Some(field.span());
        let f = field.get_ref();
        let fixed_keys = [
            ("byte", f.byte.is_some()),
            ("type", f.ty.is_some()),
            ("mask", f.mask.is_some()),
            ("shift", f.shift.is_some()),
            ("no_value", f.no_value.is_some()),
            ("when", f.when.is_some()),
        ];
        for (key, present) in fixed_keys {
            if present {
                issues.push(span.clone(), format!("{fpath}.{key}"), format!("`{key}` belongs to layouts of kind \"fixed\""));
            }
        }
        let scaling = compile_scaling(f, &fpath, span.clone(), issues);
        let Some(pointer) = &f.pointer else {
            issues.push(span, format!("{fpath}.pointer"), "missing `pointer`, e.g. \"/temperature\"");
            continue;
        };
        if let Err(m) = check_pointer(pointer) {
            issues.push(span, format!("{fpath}.pointer"), m);
            continue;
        }
        if let Some(scaling) = scaling {
            fields.push(JsonField { quantity: f.quantity, pointer: pointer.as_str().into(), scaling });
        }
    }
    check_duplicate_quantities(
        // JSON fields have no conditions, so any repeat is an error.
        spec.fields.iter().map(|f| (f.get_ref().quantity, false, f.span())),
        path,
        issues,
    );
    JsonLayout { fields }
}

/// RFC 6901: empty (the whole document) or `/`-separated tokens where `~` is only `~0` or `~1`.
fn check_pointer(p: &str) -> Result<(), String> {
    if !p.is_empty() && !p.starts_with('/') {
        return Err(format!("JSON pointer {p:?} must start with '/', e.g. \"/{p}\""));
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!("JSON pointer {p:?}: '~' must be followed by 0 ('~') or 1 ('/')"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::format::ProfileFile;

    const HEAD: &str = "id = \"test-device\"\nvendor = \"Test\"\nmodel = \"Device\"\nreference = \"none\"\n";

    /// Compiles `[[layouts]]` text; panics with the issues if there are any.
    fn layouts(body: &str) -> Layouts {
        let (l, issues) = try_layouts(body);
        assert!(issues.is_empty(), "{issues:#?}");
        l
    }

    fn try_layouts(body: &str) -> (Layouts, Vec<Issue>) {
        let file: ProfileFile = toml::from_str(&format!("{HEAD}{body}")).unwrap();
        let mut issues = Vec::new();
        let l = compile_layouts(&file.layouts, &mut issues);
        (l, issues)
    }

    fn one_field(ty: &str, extra: &str) -> Layouts {
        layouts(&format!(
            "[[layouts]]\nkind = \"fixed\"\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 0\ntype = \"{ty}\"\n{extra}\n"
        ))
    }

    fn value(l: &Layouts, bytes: &[u8]) -> Option<f64> {
        let d = l.decode_bytes(None, bytes).unwrap();
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        d.values.first().map(|v| v.value)
    }

    #[test]
    fn every_type_reads_its_bytes() {
        let cases: &[(&str, &[u8], f64)] = &[
            ("u8", &[0xFF], 255.0),
            ("i8", &[0xFF], -1.0),
            ("i8", &[0x80], -128.0),
            ("i8", &[0x7F], 127.0),
            ("u16be", &[0x12, 0x34], 4660.0),
            ("u16le", &[0x34, 0x12], 4660.0),
            ("i16be", &[0x80, 0x00], -32768.0),
            ("i16le", &[0x00, 0x80], -32768.0),
            ("i16be", &[0x7F, 0xFF], 32767.0),
            ("i16be", &[0xFF, 0x3F], -193.0),
            ("u24be", &[0xFF, 0xFF, 0xFE], 16_777_214.0),
            ("u24le", &[0x01, 0x02, 0x03], 197_121.0),
            ("i24be", &[0x80, 0x00, 0x00], -8_388_608.0),
            ("i24le", &[0xFF, 0xFF, 0xFF], -1.0),
            ("i24be", &[0x7F, 0xFF, 0xFF], 8_388_607.0),
            ("u32be", &[0xFF, 0xFF, 0xFF, 0xFF], 4_294_967_295.0),
            ("u32le", &[0x78, 0x56, 0x34, 0x12], 305_419_896.0),
            ("i32be", &[0x80, 0, 0, 0], -2_147_483_648.0),
            ("i32le", &[0xFE, 0xFF, 0xFF, 0xFF], -2.0),
            ("f32be", &[0x41, 0xC8, 0x00, 0x00], 25.0),
            ("f32le", &[0x00, 0x00, 0xC8, 0xC1], -25.0),
        ];
        for (ty, bytes, expected) in cases {
            assert_eq!(value(&one_field(ty, ""), bytes), Some(*expected), "{ty} {bytes:02X?}");
        }
    }

    #[test]
    fn fields_read_at_their_byte() {
        let l = layouts(
            "[[layouts]]\nkind = \"fixed\"\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 3\ntype = \"u16le\"\n",
        );
        assert_eq!(value(&l, &[9, 9, 9, 0x01, 0x02]), Some(513.0));
    }

    #[test]
    fn mask_and_shift_extract_bitfields() {
        // Dragino battery: low 14 bits of a u16be, the top two are status.
        let l = one_field("u16be", "mask = 0x3FFF");
        assert_eq!(value(&l, &[0xCB, 0xF6]), Some(3062.0));
        let l = one_field("u16be", "mask = 0xC000\nshift = 14");
        assert_eq!(value(&l, &[0xCB, 0xF6]), Some(3.0));
        let l = one_field("u8", "shift = 4");
        assert_eq!(value(&l, &[0xA5]), Some(10.0));
    }

    #[test]
    fn scale_offset_and_unit_apply_in_order() {
        let l = one_field("i16be", "scale = 0.01");
        assert_eq!(value(&l, &[0x0B, 0x0D]), Some(28.29));
        let l = one_field("u8", "scale = 0.5\noffset = -40");
        assert_eq!(value(&l, &[100]), Some(10.0));
        let l = one_field("u16be", "unit = \"[degF]\"\nscale = 0.1");
        assert_eq!(value(&l, &[0x08, 0x48]), Some(100.0)); // 2120 * 0.1 = 212 °F
        let l = layouts("[[layouts]]\nkind = \"fixed\"\n[[layouts.fields]]\nquantity = \"battery_voltage\"\nbyte = 0\ntype = \"u16be\"\nunit = \"mV\"\n");
        assert_eq!(value(&l, &[0x0B, 0xF6]), Some(3.062));
    }

    #[test]
    fn no_value_skips_quietly() {
        let l = one_field("i16be", "no_value = [0x7FFF, 0x8000]");
        assert_eq!(value(&l, &[0x7F, 0xFF]), None);
        assert_eq!(value(&l, &[0x80, 0x00]), None);
        assert_eq!(value(&l, &[0x7F, 0xFE]), Some(32766.0));
        let l = one_field("i16be", "no_value = [-1]");
        assert_eq!(value(&l, &[0xFF, 0xFF]), None);
        let l = one_field("u16be", "mask = 0x3FFF\nno_value = [0x3FFF]");
        assert_eq!(value(&l, &[0xFF, 0xFF]), None);
        let l = one_field("f32be", "no_value = [0x7FC00000]");
        assert_eq!(value(&l, &[0x7F, 0xC0, 0, 0]), None);
    }

    #[test]
    fn non_finite_floats_are_a_warning() {
        let l = one_field("f32be", "");
        let d = l.decode_bytes(Some(1), &[0x7F, 0x80, 0, 0]).unwrap();
        assert!(d.values.is_empty());
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    }

    #[test]
    fn conditions_select_fields() {
        let l = one_field("u8", "when = { byte = 1, equals = 1 }");
        assert_eq!(value(&l, &[5, 1]), Some(5.0));
        assert_eq!(value(&l, &[5, 2]), None);
        let l = one_field("u8", "when = { byte = 1, in = [2, 3] }");
        assert_eq!(value(&l, &[5, 3]), Some(5.0));
        assert_eq!(value(&l, &[5, 1]), None);
        let l = one_field("u8", "when = { byte = 1, mask = 0x80, equals = 0x80 }");
        assert_eq!(value(&l, &[5, 0x81]), Some(5.0));
        assert_eq!(value(&l, &[5, 0x7F]), None);
        // The condition byte counts towards the needed length.
        assert!(matches!(l.decode_bytes(None, &[5]), Err(DecodeError::TooShort { needed: 2, got: 1, .. })));
    }

    #[test]
    fn truncated_payloads_are_errors() {
        let l = layouts(
            "[[layouts]]\nkind = \"fixed\"\nfports = [2]\nmin_length = 11\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 2\ntype = \"i16be\"\n",
        );
        let err = l.decode_bytes(Some(2), &[0; 5]).unwrap_err();
        assert_eq!(err, DecodeError::TooShort { f_port: Some(2), needed: 11, got: 5 });
        assert_eq!(err.to_string(), "payload too short on fPort 2: needs 11 bytes, got 5");
        assert!(l.decode_bytes(Some(2), &[]).is_err());
        assert!(l.decode_bytes(Some(2), &[0; 11]).is_ok());
    }

    #[test]
    fn layouts_are_chosen_by_fport() {
        let l = layouts(
            "[[layouts]]\nkind = \"fixed\"\nfports = [2]\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 0\ntype = \"u8\"\n\
             [[layouts]]\nkind = \"fixed\"\nfports = [3, 4]\n[[layouts.fields]]\nquantity = \"relative_humidity\"\nbyte = 0\ntype = \"u8\"\n",
        );
        assert_eq!(l.decode_bytes(Some(2), &[7]).unwrap().values[0].quantity.name(), "air_temperature");
        assert_eq!(l.decode_bytes(Some(4), &[7]).unwrap().values[0].quantity.name(), "relative_humidity");
        let err = l.decode_bytes(Some(9), &[7]).unwrap_err();
        assert_eq!(err.to_string(), "no layout for fPort 9; this profile decodes fPorts 2, 3, 4");
        let err = l.decode_bytes(None, &[7]).unwrap_err();
        assert!(err.to_string().contains("without an fPort"), "{err}");
        assert_eq!(l.decode_json(&serde_json::json!({})).unwrap_err(), DecodeError::NoJsonLayout);
        assert_eq!(l.quantities().len(), 2);
    }

    #[test]
    fn json_layouts_follow_pointers() {
        let l = layouts(
            "[[layouts]]\nkind = \"json\"\n\
             [[layouts.fields]]\nquantity = \"air_temperature\"\npointer = \"/t\"\nunit = \"[degF]\"\n\
             [[layouts.fields]]\nquantity = \"air_pressure\"\npointer = \"/p/0\"\nunit = \"Pa\"\n\
             [[layouts.fields]]\nquantity = \"relative_humidity\"\npointer = \"/h\"\nscale = 0.1\n",
        );
        let d = l.decode_json(&serde_json::json!({"t": 212, "p": [101325], "h": 455})).unwrap();
        let got: Vec<f64> = d.values.iter().map(|v| v.value).collect();
        assert_eq!(got, vec![100.0, 1013.25, 45.5]);
        let d = l.decode_json(&serde_json::json!({"t": 32, "h": null})).unwrap();
        assert_eq!(d.values.len(), 1);
        assert_eq!(d.warnings.len(), 2, "{:?}", d.warnings);
        let err = l.decode_json(&serde_json::json!({"t": "21.5"})).unwrap_err();
        assert_eq!(err.to_string(), "JSON value at /t (air_temperature) is a string, expected a number");
        assert_eq!(l.decode_bytes(Some(1), &[1]).unwrap_err(), DecodeError::NoBinaryLayout);
    }

    #[test]
    fn compile_reports_every_problem() {
        let (_, issues) = try_layouts(
            "[[layouts]]\nkind = \"fixed\"\nfports = [0]\nmin_length = 1\n\
             [[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 0\ntype = \"i16be\"\nmask = 0xFF\nunit = \"mV\"\n\
             [[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 2\ntype = \"u8\"\nno_value = [256]\npointer = \"/x\"\n\
             [[layouts.fields]]\nquantity = \"relative_humidity\"\nbyte = 3\ntype = \"u8\"\nwhen = { byte = 0 }\nscale = 0\n",
        );
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for expected in [
            "layouts[0].fports",
            "layouts[0].fields[0].mask",
            "layouts[0].fields[0].unit",
            "layouts[0].fields[1].pointer",
            "layouts[0].fields[1].no_value",
            "layouts[0].fields[2].when",
            "layouts[0].fields[2].scale",
            "layouts[0].fields[1].quantity",
        ] {
            assert!(paths.contains(&expected), "{expected} missing from {issues:#?}");
        }
        assert!(issues.iter().all(|i| i.span.is_some()), "{issues:#?}");
    }

    #[test]
    fn kind_specific_keys_and_unreachable_layouts_are_refused() {
        let (_, issues) = try_layouts(
            "[[layouts]]\nkind = \"json\"\nfports = [1]\n[[layouts.fields]]\nquantity = \"air_temperature\"\npointer = \"t\"\nbyte = 1\n",
        );
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["layouts[0]", "layouts[0].fields[0].byte", "layouts[0].fields[0].pointer"], "{issues:#?}");
        let (_, issues) = try_layouts(
            "[[layouts]]\nkind = \"fixed\"\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 0\ntype = \"u8\"\n\
             [[layouts]]\nkind = \"fixed\"\nfports = [5]\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 0\ntype = \"u8\"\n",
        );
        assert_eq!(issues.len(), 1, "{issues:#?}");
        assert!(issues[0].message.contains("never used"));
    }

    #[test]
    fn sentinels_normalise_per_type() {
        assert_eq!(normalise_no_value(&[0x8000, -1], FieldType::I16be, 0), Ok(vec![-32768, -1]));
        assert!(normalise_no_value(&[0x10000], FieldType::I16be, 0).is_err());
        assert!(normalise_no_value(&[0x4000], FieldType::U16be, 0x3FFF).is_err());
        assert_eq!(normalise_no_value(&[0xFFFF_FFFF], FieldType::F32le, 0), Ok(vec![0xFFFF_FFFF]));
    }

    #[test]
    fn reciprocal_scales_divide() {
        assert_eq!(as_division(0.01), (1.0, 100.0));
        assert_eq!(as_division(0.1), (1.0, 10.0));
        assert_eq!(as_division(-0.5), (1.0, -2.0));
        assert_eq!(as_division(0.3), (0.3, 1.0));
        assert_eq!(as_division(10.0), (10.0, 1.0));
    }

    #[test]
    fn pointers_are_checked() {
        assert!(check_pointer("").is_ok());
        assert!(check_pointer("/a~0b/c~1d/0").is_ok());
        assert!(check_pointer("a").is_err());
        assert!(check_pointer("/a~2").is_err());
        assert!(check_pointer("/a~").is_err());
    }
}
