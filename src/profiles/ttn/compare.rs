//! Whether a codec's result is the one its vendor's example states, and if not, the first
//! difference, named by JSON pointer (`/data/temperature: expected 21.5, got 21.4`).
//!
//! Numbers are equal within 1e-9 (relative or absolute): the same arithmetic in another engine
//! may differ in the last bit. A `null` and a missing key are the same (JavaScript's
//! `undefined` is dropped from a result). An example's `warnings` are compared only when it
//! lists some; an empty list and none are the same.

use serde_json::Value;

/// Compares a codec's result (`actual`: its result, or what it threw / which limit it broke)
/// with an example's expected output (`{data, warnings, errors}`). `None`: they agree.
pub fn compare_output(expected: &Value, actual: Result<&Value, &str>) -> Option<String> {
    let list = |v: &Value, key: &str| v.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
    let want_errors = list(expected, "errors");
    match actual {
        Err(message) => match want_errors.first().and_then(Value::as_str) {
            Some(first) if message.contains(first) => None,
            _ if !want_errors.is_empty() => {
                Some(format!("expected errors {}, the script failed: {message}", short(&Value::Array(want_errors))))
            }
            _ => Some(format!("the script failed: {message}")),
        },
        Ok(actual) => {
            let got_errors = list(actual, "errors");
            if !want_errors.is_empty() || !got_errors.is_empty() {
                if got_errors.is_empty() {
                    return Some(format!(
                        "expected errors {}, got data {}",
                        short(&Value::Array(want_errors)),
                        short(actual.get("data").unwrap_or(&Value::Null))
                    ));
                }
                return first_difference("/errors", &Value::Array(want_errors), &Value::Array(got_errors));
            }
            if let Some(d) = first_difference(
                "/data",
                expected.get("data").unwrap_or(&Value::Null),
                actual.get("data").unwrap_or(&Value::Null),
            ) {
                return Some(d);
            }
            let want_warnings = list(expected, "warnings");
            if want_warnings.is_empty() {
                return None;
            }
            first_difference("/warnings", &Value::Array(want_warnings), &Value::Array(list(actual, "warnings")))
        }
    }
}

/// The first place where `actual` differs from `expected`, under `path`.
pub fn first_difference(path: &str, expected: &Value, actual: &Value) -> Option<String> {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap_or(f64::NAN), b.as_f64().unwrap_or(f64::NAN));
            let diff = (a - b).abs();
            (!(diff <= 1e-9 || diff <= 1e-9 * a.abs())).then(|| format!("{path}: expected {a}, got {b}"))
        }
        (Value::Object(want), Value::Object(got)) => {
            for (key, w) in want {
                let here = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                match got.get(key) {
                    None if w.is_null() => {}
                    None => return Some(format!("{here}: expected {}, missing", short(w))),
                    Some(g) => {
                        if let Some(d) = first_difference(&here, w, g) {
                            return Some(d);
                        }
                    }
                }
            }
            got.iter()
                .find(|(key, g)| !want.contains_key(*key) && !g.is_null())
                .map(|(key, g)| format!("{path}/{key}: not expected, got {}", short(g)))
        }
        (Value::Array(want), Value::Array(got)) => {
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                if let Some(d) = first_difference(&format!("{path}/{i}"), w, g) {
                    return Some(d);
                }
            }
            (want.len() != got.len()).then(|| format!("{path}: expected {} items, got {}", want.len(), got.len()))
        }
        (w, g) if w == g => None,
        (w, g) => Some(format!("{path}: expected {}, got {}", short(w), short(g))),
    }
}

/// A value as JSON, cut to 80 characters.
fn short(v: &Value) -> String {
    let mut text = v.to_string();
    if let Some((cut, _)) = text.char_indices().nth(80) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_agree_or_name_their_first_difference() {
        let want = json!({"data": {"t": 21.5, "mode": "CO2", "n": null, "list": [1, 2]}});
        assert_eq!(
            compare_output(&want, Ok(&json!({"data": {"t": 21.500000000001, "mode": "CO2", "list": [1, 2]}, "warnings": []}))),
            None
        );
        assert_eq!(
            compare_output(&want, Ok(&json!({"data": {"t": 21.4, "mode": "CO2", "list": [1, 2]}}))).unwrap(),
            "/data/t: expected 21.5, got 21.4"
        );
        assert_eq!(
            compare_output(&want, Ok(&json!({"data": {"t": 21.5, "mode": "CO2", "list": [1, 2], "x": 1}}))).unwrap(),
            "/data/x: not expected, got 1"
        );
        assert_eq!(
            compare_output(&want, Ok(&json!({"data": {"t": "21.5", "mode": "CO2", "list": [1]}}))).unwrap(),
            "/data/list: expected 2 items, got 1"
        );
        assert_eq!(compare_output(&want, Err("boom")).unwrap(), "the script failed: boom");
        let errors = json!({"errors": ["unknown FPort"]});
        assert_eq!(compare_output(&errors, Ok(&json!({"errors": ["unknown FPort"]}))), None);
        assert_eq!(compare_output(&errors, Err("Error: unknown FPort 42")), None);
        assert!(compare_output(&errors, Ok(&json!({"data": {}}))).unwrap().starts_with("expected errors"));
        let warned = json!({"data": {}, "warnings": ["low battery"]});
        assert_eq!(compare_output(&warned, Ok(&json!({"data": {}}))).unwrap(), "/warnings: expected 1 items, got 0");
    }
}
