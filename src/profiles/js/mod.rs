//! `javascript` layouts: a vendor-style codec script run in a QuickJS sandbox, for formats a
//! declarative layout cannot express.
//!
//! The contract is the one network servers use (LoRa Alliance TS013): `decodeUplink(input)`
//! with `input.bytes` (array of numbers) and `input.fPort`, returning `{data, warnings, errors}`;
//! non-empty `errors` fail the uplink. Older scripts that only define `Decoder(bytes, port)`
//! (The Things Network v2) or `Decode(fPort, bytes)` (ChirpStack v3) are called the same way.
//! Scripts run in sloppy mode with ES2020, as repository codecs expect. The profile's fields map
//! keys of `data` to quantities with JSON pointers; numeric strings (from `toFixed`) count as
//! numbers.
//!
//! Limits: a time limit per call (default 100 ms, as network servers allow), a heap limit
//! (default 8 MiB), a stack limit, and a bound on the result's depth and size. Codecs run in a
//! worker process ([`worker`], the hidden `messnetz codec-worker`), each call in a fresh
//! runtime, so no call sees what an earlier one changed; the gateway kills a worker that
//! overruns twice its call's time limit, whatever the script runs ([`pool`]), and a worker that
//! crashes fails only the uplink it was decoding.
//!
//! - [`engine`]: one call in QuickJS, and the bounded conversion of its result;
//! - [`protocol`]: the frames between the gateway and a worker;
//! - [`worker`]: the worker process's loop and its process limits;
//! - [`pool`]: the gateway's warm workers, deadlines, kills and replacements.

mod engine;
mod pool;
mod protocol;
pub mod worker;

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use super::decode::json::{compile_pointer_fields, map_json, JsonField};
use super::decode::types::{DecodeError, Decoded, Issues};
use super::format::LayoutSpec;
use engine::{Input, Limits};
pub use pool::{set_worker_program, WORKER_ENV};
use protocol::ScriptKey;

const DEFAULT_TIMEOUT_MS: u64 = 100;
const MAX_TIMEOUT_MS: u64 = 1000;
const DEFAULT_MEMORY_KIB: usize = 8 * 1024;
/// Scripts larger than this are refused; The Things Stack allows 40 KB, real codecs are smaller.
const MAX_SCRIPT_BYTES: usize = 256 * 1024;

/// Longest error or warning text kept from a script (it becomes a dead letter's reason).
const MAX_MESSAGE_CHARS: usize = 500;
/// Most warnings kept from one call.
const MAX_WARNINGS: usize = 20;

/// Shortens a script's message to [`MAX_MESSAGE_CHARS`].
fn clip(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_MESSAGE_CHARS) {
        text.truncate(cut);
        text.push_str("… (shortened)");
    }
    text
}

#[derive(Debug)]
pub(crate) struct JsLayout {
    pub fields: Vec<JsonField>,
    source: String,
    key: ScriptKey,
    limits: Limits,
    /// Map the output of `normalizeUplink` instead of `decodeUplink`'s `data`.
    normalize: bool,
}

impl JsLayout {
    /// The time limit of one call.
    pub fn timeout(&self) -> Duration {
        self.limits.timeout
    }

    pub fn decode(&self, f_port: Option<u8>, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let input = Input { bytes, f_port, normalize: self.normalize };
        let text = pool::run(&self.key, &self.source, Some(input), self.limits).map_err(|e| DecodeError::Codec(clip(e)))?;
        let result: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| DecodeError::Codec(format!("the script's result is not JSON: {e}")))?;
        let mut out = Decoded::default();
        let data = checked_data(&result, "", &mut out)?;
        let data = if self.normalize {
            let Some(normalized) = result.get("normalized") else {
                return Err(DecodeError::Codec("normalizeUplink returned nothing".to_owned()));
            };
            match checked_data(normalized, "normalizeUplink: ", &mut out)? {
                serde_json::Value::Array(measurements) => {
                    if measurements.len() > 1 {
                        out.warnings
                            .push(format!("normalizeUplink returned {} measurements; the first is used", measurements.len()));
                    }
                    measurements
                        .first()
                        .ok_or_else(|| DecodeError::Codec("normalizeUplink returned no measurement".to_owned()))?
                }
                object => object,
            }
        } else {
            data
        };
        out.values.reserve(self.fields.len());
        map_json(&self.fields, data, true, &mut out)?;
        Ok(out)
    }

    pub fn compile(
        spec: &LayoutSpec,
        path: &str,
        dir: &Path,
        span: Option<Range<usize>>,
        issues: &mut Issues,
    ) -> Option<JsLayout> {
        let fields = compile_pointer_fields(spec, path, issues);
        let source = match (&spec.script, &spec.script_file) {
            (Some(s), None) => s.clone(),
            (None, Some(file)) => {
                // Scripts live beside the profiles; no path may leave that directory.
                if file.contains("..") || Path::new(file).is_absolute() {
                    issues.push(span, format!("{path}.script_file"), "give a file name in the profile's directory");
                    return None;
                }
                match std::fs::read_to_string(dir.join(file)) {
                    Ok(s) => s,
                    Err(e) => {
                        issues.push(
                            span,
                            format!("{path}.script_file"),
                            format!("cannot read {}: {e}", dir.join(file).display()),
                        );
                        return None;
                    }
                }
            }
            _ => {
                issues.push(span, format!("{path}.script"), "give exactly one of `script` and `script_file`");
                return None;
            }
        };
        if source.len() > MAX_SCRIPT_BYTES {
            issues.push(
                span,
                format!("{path}.script"),
                format!("the script has {} bytes; at most {MAX_SCRIPT_BYTES}", source.len()),
            );
            return None;
        }
        let timeout_ms = spec.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            issues.push(span.clone(), format!("{path}.timeout_ms"), format!("timeout_ms must be 1 to {MAX_TIMEOUT_MS}"));
        }
        let memory_kib = spec.memory_limit_kib.unwrap_or(DEFAULT_MEMORY_KIB);
        if !(256..=262_144).contains(&memory_kib) {
            issues.push(span.clone(), format!("{path}.memory_limit_kib"), "memory_limit_kib must be 256 to 262144");
        }
        let timeout = Duration::from_millis(timeout_ms.clamp(1, MAX_TIMEOUT_MS));
        let memory_bytes = memory_kib.clamp(256, 262_144) * 1024;
        let limits = Limits { timeout, memory_bytes };
        let key = protocol::script_key(&source);
        // Evaluate now so that a syntax error is a load error with the profile's name on it.
        if let Err(m) = pool::run(&key, &source, None, limits) {
            issues.push(span, format!("{path}.script"), m);
            return None;
        }
        Some(JsLayout { fields, source, key, limits, normalize: spec.normalize.unwrap_or(false) })
    }
}

/// The `data` of a codec's result (`{data, warnings, errors}`), after its `errors` (which fail
/// the uplink, their texts after `prefix`) and with its warnings added to `out`.
fn checked_data<'a>(
    result: &'a serde_json::Value,
    prefix: &str,
    out: &mut Decoded,
) -> Result<&'a serde_json::Value, DecodeError> {
    if let Some(errors) = result.get("errors").and_then(|e| e.as_array()).filter(|e| !e.is_empty()) {
        let list: Vec<String> = errors.iter().map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned)).collect();
        return Err(DecodeError::Codec(clip(format!("{prefix}{}", list.join("; ")))));
    }
    if let Some(warnings) = result.get("warnings").and_then(|w| w.as_array()) {
        let room = MAX_WARNINGS.saturating_sub(out.warnings.len());
        out.warnings.extend(
            warnings
                .iter()
                .take(room)
                .map(|w| clip(format!("{prefix}{}", w.as_str().map_or_else(|| w.to_string(), str::to_owned)))),
        );
    }
    result
        .get("data")
        .filter(|d| d.is_object() || d.is_array())
        .ok_or_else(|| DecodeError::Codec(format!("{prefix}the script returned no `data` object")))
}

/// One call of a codec script as it is, for tools that compare its whole result with the
/// vendor's (the device-repository import): the result of `decodeUplink` as JSON, with
/// `normalized` holding that of `normalizeUplink` when `normalize` is set. Runs in a codec
/// worker with the default limits; `Err` is what the script threw or which limit it broke.
pub fn run_codec(source: &str, f_port: Option<u8>, bytes: &[u8], normalize: bool) -> Result<serde_json::Value, String> {
    if source.len() > MAX_SCRIPT_BYTES {
        return Err(format!("the script has {} bytes; at most {MAX_SCRIPT_BYTES}", source.len()));
    }
    let limits = default_limits();
    let key = protocol::script_key(source);
    let text = pool::run(&key, source, Some(Input { bytes, f_port, normalize }), limits).map_err(clip)?;
    serde_json::from_str(&text).map_err(|e| format!("the script's result is not JSON: {e}"))
}

/// Evaluates a codec script without calling it: `Err` for a syntax error or a throw at load.
pub fn check_codec(source: &str) -> Result<(), String> {
    if source.len() > MAX_SCRIPT_BYTES {
        return Err(format!("the script has {} bytes; at most {MAX_SCRIPT_BYTES}", source.len()));
    }
    pool::run(&protocol::script_key(source), source, None, default_limits()).map(drop).map_err(clip)
}

/// The largest script a profile may run, in bytes.
pub const MAX_SCRIPT_SIZE: usize = MAX_SCRIPT_BYTES;

fn default_limits() -> Limits {
    Limits { timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS), memory_bytes: DEFAULT_MEMORY_KIB * 1024 }
}

#[cfg(test)]
mod profile_tests {
    use crate::profiles::{DecodeError, Profile};
    use std::path::Path;

    const CODEC: &str = r#"
id = "acme-t1"
vendor = "Acme"
model = "T1"
reference = "Acme T1 codec"

[[layouts]]
kind = "javascript"
fports = [1]
timeout_ms = 50
script = '''
function decodeUplink(input) {
  if (input.bytes.length < 2) return { errors: ["too short"] };
  var t = ((input.bytes[0] << 8) | input.bytes[1]) / 10;
  var warnings = input.bytes.length > 2 ? ["trailing bytes"] : [];
  return { data: { env: { temperature: t.toFixed(1), humidity: input.bytes[2] } }, warnings: warnings };
}
'''

[[layouts.fields]]
quantity = "air_temperature"
pointer = "/env/temperature"

[[layouts.fields]]
quantity = "relative_humidity"
pointer = "/env/humidity"

[[examples]]
fport = 1
payload_hex = "00FA 30"
readings = [{ quantity = "air_temperature", value = 25 }, { quantity = "relative_humidity", value = 48 }]
warnings = ["trailing bytes"]

[[examples]]
fport = 1
payload_hex = "00"
error = "codec: too short"
"#;

    #[test]
    fn a_codec_profile_decodes_and_maps_keys() {
        let p = Profile::from_toml(Path::new("acme-t1.toml"), CODEC).unwrap();
        assert!(p.runs_script());
        assert_eq!(p.check_examples(), vec![]);
        let d = p.decode_bytes(Some(1), &[0x00, 0xFA]).unwrap();
        assert_eq!(d.values.len(), 1);
        assert_eq!(d.warnings, ["relative_humidity: no value at JSON pointer /env/humidity"]);
        assert!(matches!(p.decode_bytes(Some(2), &[0]), Err(DecodeError::NoLayoutForPort { .. })));
    }

    #[test]
    fn a_normalizing_codec_maps_the_normalized_payload() {
        let text = r#"
id = "acme-n1"
vendor = "Acme"
model = "N1"
reference = "Acme N1 codec"

[[layouts]]
kind = "javascript"
normalize = true
script = '''
function decodeUplink(input) {
  if (input.bytes[0] === 0) return { errors: ["empty"] };
  return { data: { t: input.bytes[0] / 2 }, warnings: ["from decode"] };
}
function normalizeUplink(input) {
  if (input.data.t > 100) return { errors: ["too hot"] };
  var m = { air: { temperature: input.data.t } };
  return { data: input.data.t > 50 ? [m, { air: { temperature: 0 } }] : m };
}
'''

[[layouts.fields]]
quantity = "air_temperature"
pointer = "/air/temperature"

[[examples]]
fport = 1
payload_hex = "2B"
readings = [{ quantity = "air_temperature", value = 21.5 }]
warnings = ["from decode"]
"#;
        let p = Profile::from_toml(Path::new("acme-n1.toml"), text).unwrap();
        assert_eq!(p.check_examples(), vec![]);
        let d = p.decode_bytes(Some(1), &[0x7A]).unwrap();
        assert_eq!(d.values[0].value, 61.0);
        assert!(d.warnings.iter().any(|w| w == "normalizeUplink returned 2 measurements; the first is used"), "{:?}", d.warnings);
        assert_eq!(p.decode_bytes(Some(1), &[0xFA]).unwrap_err(), DecodeError::Codec("normalizeUplink: too hot".to_owned()));
        assert_eq!(p.decode_bytes(Some(1), &[0]).unwrap_err(), DecodeError::Codec("empty".to_owned()));
        // Without `normalize`, the same pointer looks into decodeUplink's data and finds nothing.
        let p = Profile::from_toml(Path::new("acme-n1.toml"), &text.replace("normalize = true\n", "")).unwrap();
        let mismatches = p.check_examples();
        assert!(mismatches[0].message.contains("not decoded"), "{mismatches:?}");
    }

    #[test]
    fn a_runaway_codec_fails_its_uplink_and_recovers() {
        let text = CODEC
            .replace("if (input.bytes.length < 2)", "if (input.bytes[0] === 255) { for (;;) {} }\n  if (input.bytes.length < 2)");
        let p = Profile::from_toml(Path::new("acme-t1.toml"), &text).unwrap();
        let err = p.decode_bytes(Some(1), &[0xFF, 0]).unwrap_err();
        assert_eq!(err, DecodeError::Codec("the script ran past its time limit".to_owned()));
        assert_eq!(p.decode_bytes(Some(1), &[0x00, 0xFA, 1]).unwrap().values.len(), 2);
    }

    #[test]
    fn long_script_messages_are_shortened() {
        let text = CODEC.replace(
            "if (input.bytes.length < 2)",
            "if (input.bytes[0] === 255) return { errors: ['x'.repeat(100000)] };\n  if (input.bytes[0] === 254) throw 'y'.repeat(100000);\n  if (input.bytes.length < 2)",
        );
        let p = Profile::from_toml(Path::new("acme-t1.toml"), &text).unwrap();
        for first in [0xFF, 0xFE] {
            let DecodeError::Codec(message) = p.decode_bytes(Some(1), &[first, 0]).unwrap_err() else { panic!() };
            assert!(message.len() < 600 && message.ends_with("(shortened)"), "{}", message.len());
        }
    }

    #[test]
    fn script_problems_are_load_errors() {
        let errors = Profile::from_toml(
            Path::new("acme-t1.toml"),
            &CODEC.replace("function decodeUplink(input) {", "function decodeUplink(input {"),
        )
        .unwrap_err();
        assert!(errors[0].to_string().contains("layouts[0].script: SyntaxError"), "{}", errors[0]);
        let text = CODEC.replace("script = '''", "script_file = \"../secret.js\"\nx = '''");
        assert!(Profile::from_toml(Path::new("acme-t1.toml"), &text).is_err());
        let text = CODEC.replace("timeout_ms = 50", "timeout_ms = 5000");
        let errors = Profile::from_toml(Path::new("acme-t1.toml"), &text).unwrap_err();
        assert!(errors[0].to_string().contains("timeout_ms must be 1 to 1000"), "{}", errors[0]);
    }
}
