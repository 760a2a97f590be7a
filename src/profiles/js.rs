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
//! Limits: a time limit per call (QuickJS's interrupt handler; default 100 ms, as network
//! servers allow), a heap limit (default 8 MiB) and a stack limit. The script is evaluated once
//! at load, and each profile keeps its own runtime, so a call costs microseconds rather than the
//! milliseconds a fresh context would; after a call that throws or breaks a limit the runtime is
//! rebuilt, so a broken state never outlives the uplink that caused it.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rquickjs::context::EvalOptions;
use rquickjs::{Coerced, Context, Function, Runtime, Value};

use super::decode::{compile_pointer_fields, map_json, DecodeError, Decoded, Issues, JsonField};
use super::format::LayoutSpec;

const DEFAULT_TIMEOUT_MS: u64 = 100;
const MAX_TIMEOUT_MS: u64 = 1000;
const DEFAULT_MEMORY_KIB: usize = 8 * 1024;
/// Scripts larger than this are refused; The Things Stack allows 40 KB, real codecs are smaller.
const MAX_SCRIPT_BYTES: usize = 256 * 1024;
/// QuickJS stack limit: deep recursion becomes an exception, not a crash of the gateway.
const MAX_STACK_BYTES: usize = 256 * 1024;

/// Calls whatever entry point the script defines and returns its result as JSON text.
const ADAPTER: &str = r#"
function __messnetz_decode(bytes, fPort) {
  var result;
  if (typeof decodeUplink === "function") {
    result = decodeUplink({ bytes: bytes, fPort: fPort, variables: {} });
  } else if (typeof Decoder === "function") {
    result = { data: Decoder(bytes, fPort) };
  } else if (typeof Decode === "function") {
    result = { data: Decode(fPort, bytes, {}) };
  } else {
    throw new Error("the script defines none of decodeUplink(input), Decoder(bytes, port), Decode(fPort, bytes)");
  }
  return JSON.stringify(result === undefined ? null : result);
}
"#;

#[derive(Debug)]
pub(crate) struct JsLayout {
    pub fields: Vec<JsonField>,
    source: Arc<str>,
    timeout: Duration,
    memory_bytes: usize,
    engine: Mutex<Option<Engine>>,
}

struct Engine {
    // Field order matters: the context must be dropped before its runtime.
    context: Context,
    _runtime: Runtime,
    /// Deadline of the running call in nanoseconds since `epoch`; `u64::MAX` when idle.
    deadline: Arc<AtomicU64>,
    epoch: Instant,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

impl Engine {
    fn new(source: &str, timeout: Duration, memory_bytes: usize) -> Result<Engine, String> {
        let runtime = Runtime::new().map_err(|e| format!("cannot start the JavaScript engine: {e}"))?;
        runtime.set_memory_limit(memory_bytes);
        runtime.set_max_stack_size(MAX_STACK_BYTES);
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let epoch = Instant::now();
        let d = deadline.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || nanos_since(epoch) > d.load(Ordering::Relaxed))));
        let context = Context::full(&runtime).map_err(|e| format!("cannot create a JavaScript context: {e}"))?;
        let engine = Engine { context, _runtime: runtime, deadline, epoch };
        engine.arm(timeout);
        let loaded = engine.context.with(|ctx| {
            // Sloppy mode: repository codecs assign undeclared variables (`for (i = 0; ...)`).
            let mut options = EvalOptions::default();
            options.strict = false;
            ctx.eval_with_options::<(), _>(source, options).map_err(|e| describe(&ctx, e))?;
            ctx.eval::<(), _>(ADAPTER).map_err(|e| describe(&ctx, e))
        });
        engine.disarm();
        loaded.map(|()| engine)
    }

    fn arm(&self, timeout: Duration) {
        let at = nanos_since(self.epoch).saturating_add(timeout.as_nanos().min(u128::from(u64::MAX / 2)) as u64);
        self.deadline.store(at, Ordering::Relaxed);
    }

    fn disarm(&self) {
        self.deadline.store(u64::MAX, Ordering::Relaxed);
    }

    /// Runs the codec; `Ok` is the JSON text it returned.
    fn call(&self, bytes: &[u8], f_port: Option<u8>, timeout: Duration) -> Result<String, String> {
        self.arm(timeout);
        let result = self.context.with(|ctx| {
            let f: Function = ctx.globals().get("__messnetz_decode").map_err(|e| describe(&ctx, e))?;
            let port: Value = match f_port {
                Some(p) => Value::new_int(ctx.clone(), i32::from(p)),
                None => Value::new_undefined(ctx.clone()),
            };
            f.call::<_, String>((bytes.to_vec(), port)).map_err(|e| describe(&ctx, e))
        });
        self.disarm();
        result
    }
}

fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The message of a thrown exception (`InternalError: interrupted` after the time limit).
fn describe(ctx: &rquickjs::Ctx<'_>, e: rquickjs::Error) -> String {
    if e.is_exception() {
        let v = ctx.catch();
        match v.get::<Coerced<String>>() {
            Ok(Coerced(s)) if s.contains("interrupted") => "the script ran past its time limit".to_owned(),
            // QuickJS throws `null` when an allocation fails under the memory limit.
            Ok(Coerced(s)) if s == "null" => "the script ran out of memory (or threw null)".to_owned(),
            Ok(Coerced(s)) => s,
            Err(_) => "the script threw an exception".to_owned(),
        }
    } else {
        e.to_string()
    }
}

impl JsLayout {
    pub fn decode(&self, f_port: Option<u8>, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        // A panic elsewhere while holding the lock leaves nothing half-done here: the engine is
        // rebuilt after any failed call anyway.
        let mut guard = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(Engine::new(&self.source, self.timeout, self.memory_bytes).map_err(DecodeError::Codec)?);
        }
        let Some(engine) = guard.as_ref() else {
            return Err(DecodeError::Codec("the JavaScript engine is not available".to_owned()));
        };
        let text = match engine.call(bytes, f_port, self.timeout) {
            Ok(t) => t,
            Err(e) => {
                *guard = None;
                return Err(DecodeError::Codec(e));
            }
        };
        drop(guard);
        let result: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| DecodeError::Codec(format!("the script's result is not JSON: {e}")))?;
        let mut out = Decoded::default();
        if let Some(errors) = result.get("errors").and_then(|e| e.as_array()).filter(|e| !e.is_empty()) {
            let list: Vec<String> = errors.iter().map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned)).collect();
            return Err(DecodeError::Codec(list.join("; ")));
        }
        if let Some(warnings) = result.get("warnings").and_then(|w| w.as_array()) {
            out.warnings.extend(warnings.iter().map(|w| w.as_str().map_or_else(|| w.to_string(), str::to_owned)));
        }
        let Some(data) = result.get("data").filter(|d| d.is_object() || d.is_array()) else {
            return Err(DecodeError::Codec("the script returned no `data` object".to_owned()));
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
        // Evaluate now so that a syntax error is a load error with the profile's name on it.
        let engine = match Engine::new(&source, timeout, memory_bytes) {
            Ok(e) => e,
            Err(m) => {
                issues.push(span, format!("{path}.script"), m);
                return None;
            }
        };
        Some(JsLayout { fields, source: source.into(), timeout, memory_bytes, engine: Mutex::new(Some(engine)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(src: &str) -> Engine {
        Engine::new(src, Duration::from_millis(100), 8 << 20).unwrap()
    }

    #[test]
    fn entry_points_of_all_generations_are_called() {
        let t = Duration::from_millis(100);
        let e = engine("function decodeUplink(input) { return { data: { n: input.bytes[0], p: input.fPort } }; }");
        assert_eq!(e.call(&[7], Some(3), t).unwrap(), r#"{"data":{"n":7,"p":3}}"#);
        let e = engine("function Decoder(bytes, port) { return { n: bytes.length, p: port }; }");
        assert_eq!(e.call(&[1, 2], Some(9), t).unwrap(), r#"{"data":{"n":2,"p":9}}"#);
        let e = engine("function Decode(fPort, bytes) { return { p: fPort }; }");
        assert_eq!(e.call(&[], None, t).unwrap(), r#"{"data":{}}"#);
        let e = engine("var x = 1;");
        assert!(e.call(&[], None, t).unwrap_err().contains("defines none"));
    }

    #[test]
    fn limits_stop_hostile_scripts() {
        let t = Duration::from_millis(20);
        let started = Instant::now();
        let e = engine("function decodeUplink(input) { for (;;) {} }");
        assert_eq!(e.call(&[], None, t).unwrap_err(), "the script ran past its time limit");
        assert!(started.elapsed() < Duration::from_secs(2));
        let e = engine("function decodeUplink(input) { var a = []; for (;;) { a.push(new Array(1000).fill(1)); } }");
        let err = e.call(&[], None, Duration::from_millis(1000)).unwrap_err();
        assert!(err.contains("memory") || err.contains("time limit"), "{err}");
        let e = engine("function f(n) { return f(n + 1) + 1; } function decodeUplink(input) { return f(0); }");
        assert!(e.call(&[], None, t).is_err());
        // A script that never ends at load time is refused at load time.
        assert!(Engine::new("while (true) {}", Duration::from_millis(20), 8 << 20).unwrap_err().contains("time limit"));
        assert!(Engine::new("function (", t, 8 << 20).is_err());
    }

    #[test]
    fn sloppy_mode_and_modern_syntax_both_work() {
        // Undeclared loop variables (sloppy mode), arrow functions, template literals, let/const.
        let e = engine(
            "function decodeUplink(input) { for (i = 0; i < 1; i++) {} const f = (x) => `${x}`; let v = f(input.bytes[0]); return { data: { v: (21.456).toFixed(1), s: v } }; }",
        );
        assert_eq!(e.call(&[5], Some(1), Duration::from_millis(100)).unwrap(), r#"{"data":{"v":"21.5","s":"5"}}"#);
    }
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
    fn a_runaway_codec_fails_its_uplink_and_recovers() {
        let text = CODEC
            .replace("if (input.bytes.length < 2)", "if (input.bytes[0] === 255) { for (;;) {} }\n  if (input.bytes.length < 2)");
        let p = Profile::from_toml(Path::new("acme-t1.toml"), &text).unwrap();
        let err = p.decode_bytes(Some(1), &[0xFF, 0]).unwrap_err();
        assert_eq!(err, DecodeError::Codec("the script ran past its time limit".to_owned()));
        assert_eq!(p.decode_bytes(Some(1), &[0x00, 0xFA, 1]).unwrap().values.len(), 2);
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
