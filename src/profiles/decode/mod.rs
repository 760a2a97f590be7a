//! The declarative decoder: profile layouts compiled once at load time, then applied to payloads.
//!
//! Compiling resolves everything that does not depend on the payload (field widths, the
//! shortest acceptable payload, unit conversions, formulas, sentinel values, condition sets), so
//! that decoding a payload only reads bytes and does arithmetic: the one allocation is the
//! output `Vec` (plus a `String` per warning, which only unusual payloads produce). Every byte
//! access goes through `slice::get`, so no payload, however hostile, can make decoding panic,
//! and every loop over a payload advances by at least one byte, so none can make it loop.
//!
//! This module chooses a layout, compiles the `[[layouts]]` of a file, and holds the `fixed`
//! kind. `types` holds what every kind shares (results, errors, the problem list), [`field`]
//! reads and scales values from bytes, [`json`] finds them by JSON pointer; [`super::tlv`],
//! [`super::flags`], [`super::lpp`] and [`super::js`] hold the other kinds. The kinds import
//! from those three files, never from this one, so the arrows run one way.

pub(crate) mod field;
pub(crate) mod json;
#[cfg(test)]
mod tests;
pub(crate) mod types;

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
use field::{compile_condition, compile_fixed_field, ByteTest, FixedField};
use json::{compile_json, map_json, JsonLayout};
pub(crate) use types::{check_duplicate_quantities, ByteSet, Issue, Issues};
pub use types::{DecodeError, Decoded, DecodedValue, MAX_LORAWAN_PAYLOAD};

/// All layouts of a profile, compiled.
#[derive(Debug)]
pub(crate) struct Layouts {
    binary: Vec<BinaryLayout>,
    json: Option<JsonLayout>,
    /// "fPorts 2, 3" — for the error when no layout matches; shared, not rebuilt per error.
    handled: Arc<str>,
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
                // Two more: an uplink with air temperature and humidity gains dew point and heat index.
                let mut out = Decoded { values: Vec::with_capacity(fields.len() + 2), ..Default::default() };
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
    let keys: [(&str, bool, bool); 13] = [
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
        ("normalize", spec.normalize.is_some(), kind == K::Javascript),
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
