//! Fields found by JSON pointer: `json` layouts, and the `data` a JavaScript codec returns.

use std::sync::Arc;

use super::field::{compile_scaling, reject_keys, Scaling};
use super::types::{check_duplicate_quantities, DecodeError, Decoded, DecodedValue, Issues};
use crate::model::Quantity;
use crate::profiles::format::LayoutSpec;

#[derive(Debug)]
pub(crate) struct JsonLayout {
    pub fields: Vec<JsonField>,
}

#[derive(Debug)]
pub(crate) struct JsonField {
    pub quantity: Quantity,
    pub pointer: Arc<str>,
    pub scaling: Scaling,
}

/// Maps JSON values to readings. `lenient`: numeric strings (`"21.50"`, as `toFixed` returns
/// them) count as numbers; JavaScript codecs produce them, JSON sensors should not.
pub(crate) fn map_json(
    fields: &[JsonField],
    value: &serde_json::Value,
    lenient: bool,
    out: &mut Decoded,
) -> Result<(), DecodeError> {
    for f in fields {
        let raw = match value.pointer(&f.pointer) {
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            Some(serde_json::Value::String(s)) if lenient => match s.trim().parse::<f64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    out.warnings.push(format!("{}: value at {} is the text {s:?}, not a number", f.quantity, f.pointer));
                    continue;
                }
            },
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
        // serde_json numbers are finite, but a huge number times a scale need not be, and a
        // codec's text "NaN" or "Infinity" parses as what it says.
        match raw.map(|r| f.scaling.apply(r)) {
            Some(v) if v.is_finite() => out.values.push(DecodedValue { quantity: f.quantity, value: v }),
            Some(v) => {
                out.warnings.push(format!("{}: value at {} is {v}, not a finite number", f.quantity, f.pointer));
                out.non_finite.push(DecodedValue { quantity: f.quantity, value: v });
            }
            None => out.warnings.push(format!("{}: value at {} is out of range", f.quantity, f.pointer)),
        }
    }
    Ok(())
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

/// Compiles fields found by JSON pointer (`json` layouts, and the `data` of `javascript` ones).
pub(crate) fn compile_pointer_fields(spec: &LayoutSpec, path: &str, issues: &mut Issues) -> Vec<JsonField> {
    let mut fields = Vec::with_capacity(spec.fields.len());
    if spec.fields.is_empty() {
        issues.push(Some(spec.kind.span()), format!("{path}.fields"), "a layout needs at least one [[layouts.fields]] table");
    }
    for (j, field) in spec.fields.iter().enumerate() {
        let fpath = format!("{path}.fields[{j}]");
        let span = Some(field.span());
        let f = field.get_ref();
        let binary_keys = ["byte", "type", "mask", "shift", "no_value", "when", "channel"];
        reject_keys(f, &binary_keys, span.clone(), &fpath, "to a field found by `pointer`", issues);
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
        // Pointer fields have no conditions, so any repeat is an error.
        spec.fields.iter().map(|f| (f.get_ref().quantity, false, f.span())),
        path,
        issues,
    );
    fields
}

pub(crate) fn compile_json(spec: &LayoutSpec, path: &str, issues: &mut Issues) -> JsonLayout {
    JsonLayout { fields: compile_pointer_fields(spec, path, issues) }
}

/// RFC 6901: empty (the whole document) or `/`-separated tokens where `~` is only `~0` or `~1`.
pub(super) fn check_pointer(p: &str) -> Result<(), String> {
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
