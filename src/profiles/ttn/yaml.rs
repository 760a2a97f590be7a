//! The device repository's YAML files read into JSON values, within bounds: a file size, a
//! nesting depth, and a count of values that includes what aliases expand to, so that a
//! hostile file (huge, deeply nested, or a "billion laughs" of aliases) is an error in the
//! import report, never an exhausted machine.
//!
//! Scalars follow YAML 1.2's core schema as the repository uses it: `0x0D` and `0o17` are
//! integers (codec examples write payload bytes in hex), `true`/`false`, `null`/`~`; quoted
//! scalars are always strings. Mapping keys become strings.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Largest YAML file read, in bytes; the repository's largest codec files are a few tens of KiB.
pub const MAX_YAML_BYTES: u64 = 1 << 20;
/// Most values (scalars, lists, mappings) one document may hold, aliases expanded.
const MAX_VALUES: usize = 200_000;
/// Deepest nesting of lists and mappings.
const MAX_DEPTH: usize = 64;

/// Reads a text file of at most `limit` bytes; a larger one is an error, not read.
pub fn read_bounded(path: &Path, limit: u64) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    let read = file.take(limit + 1).read_to_string(&mut text).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if read as u64 > limit {
        return Err(format!("{} is larger than {limit} bytes", path.display()));
    }
    Ok(text)
}

/// Reads a YAML file of at most [`MAX_YAML_BYTES`] (its first document).
pub fn read_file(path: &Path) -> Result<Value, String> {
    let text = read_bounded(path, MAX_YAML_BYTES)?;
    parse(&text)
}

/// Parses the first document of `text`; an empty document is `null`.
pub fn parse(text: &str) -> Result<Value, String> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| format!("not valid YAML: {e}"))?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.document.unwrap_or(Value::Null))
}

#[derive(Default)]
struct Builder {
    /// Open lists and mappings, innermost last, with their anchor id (0: none) and, for a
    /// mapping, the key waiting for its value.
    stack: Vec<(Value, usize, Option<String>)>,
    anchors: HashMap<usize, Value>,
    document: Option<Value>,
    values: usize,
    error: Option<String>,
}

impl Builder {
    fn fail(&mut self, message: String) {
        if self.error.is_none() {
            self.error = Some(message);
        }
    }

    /// Counts `n` more values; false (with the error set) past the budget.
    fn take(&mut self, n: usize) -> bool {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_VALUES {
            self.fail(format!("the document holds more than {MAX_VALUES} values (aliases counted as what they repeat)"));
            return false;
        }
        true
    }

    fn insert(&mut self, value: Value, anchor: usize, mark: Marker) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        let Some((parent, _, key)) = self.stack.last_mut() else {
            if self.document.is_none() {
                self.document = Some(value);
            }
            return;
        };
        match parent {
            Value::Array(items) => items.push(value),
            Value::Object(map) => match key.take() {
                None => {
                    let text = match value {
                        Value::String(s) => s,
                        Value::Null => "null".to_owned(),
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) => n.to_string(),
                        Value::Array(_) | Value::Object(_) => {
                            self.fail(format!("line {}: a list or mapping as a mapping key is not supported", mark.line()));
                            return;
                        }
                    };
                    *key = Some(text);
                }
                Some(k) => {
                    map.insert(k, value);
                }
            },
            _ => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() || self.document.is_some() {
            return;
        }
        match event {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(format!("line {}: nested deeper than {MAX_DEPTH} levels", mark.line()));
                    return;
                }
                if !self.take(1) {
                    return;
                }
                let empty =
                    if matches!(event, Event::SequenceStart(..)) { Value::Array(Vec::new()) } else { Value::Object(Map::new()) };
                self.stack.push((empty, anchor, None));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((value, anchor, _)) = self.stack.pop() {
                    self.insert(value, anchor, mark);
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                if !self.take(1) {
                    return;
                }
                let value = if style == TScalarStyle::Plain { plain_scalar(text) } else { Value::String(text) };
                self.insert(value, anchor, mark);
            }
            Event::Alias(id) => {
                let Some(value) = self.anchors.get(&id).cloned() else {
                    self.fail(format!("line {}: an alias to an unknown anchor", mark.line()));
                    return;
                };
                if !self.take(count(&value)) {
                    return;
                }
                self.insert(value, 0, mark);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

/// How many values `v` holds, itself included.
fn count(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(count).sum::<usize>(),
        Value::Object(map) => 1 + map.values().map(count).sum::<usize>(),
        _ => 1,
    }
}

/// A plain (unquoted) scalar by the core schema.
fn plain_scalar(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(&text)),
    };
    let radix = [("0x", 16), ("0X", 16), ("0o", 8), ("0O", 8)]
        .iter()
        .find_map(|(prefix, radix)| digits.strip_prefix(prefix).map(|d| (d, *radix)));
    if let Some((d, radix)) = radix {
        if let Ok(n) = i64::from_str_radix(d, radix) {
            return Value::from(if negative { -n } else { n });
        }
        return Value::String(text);
    }
    if let Ok(n) = text.parse::<i64>() {
        return Value::from(n);
    }
    let looks_numeric = digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'));
    if looks_numeric {
        if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codec_files_read_as_the_repository_writes_them() {
        let text = "uplinkDecoder:\n  fileName: t1.js\n  examples:\n    - description: Temp\n      input:\n        fPort: 2\n        bytes: [0x0D, 0x7, 255, -0x1]\n      output:\n        data: { 'Bat_V': 3.335, \"mode\": CO2, on: true, none: ~, e: 1e3, v: '1.0' }\n";
        let v = parse(text).unwrap();
        let ex = &v["uplinkDecoder"]["examples"][0];
        assert_eq!(ex["input"]["bytes"], json!([13, 7, 255, -1]));
        assert_eq!(
            ex["output"]["data"],
            json!({"Bat_V": 3.335, "mode": "CO2", "on": true, "none": null, "e": 1000.0, "v": "1.0"})
        );
        assert_eq!(parse("").unwrap(), Value::Null);
        assert_eq!(parse("a: &x [1, 2]\nb: *x\n").unwrap(), json!({"a": [1, 2], "b": [1, 2]}));
        assert_eq!(parse("12: x\n.5: .inf\n").unwrap(), json!({"12": "x", "0.5": ".inf"}));
    }

    #[test]
    fn hostile_documents_are_errors() {
        assert!(parse("a: [1, 2\nb: }").unwrap_err().contains("not valid YAML"));
        let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            laughs.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        assert!(parse(&laughs).unwrap_err().contains("more than 200000 values"));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = parse(&deep).unwrap_err();
        assert!(e.contains("nested deeper than 64") || e.contains("recursion limit"), "{e}");
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(&deep).unwrap_err().contains("nested deeper than 64"));
        assert!(parse("a: *nowhere\n").is_err());
    }
}
