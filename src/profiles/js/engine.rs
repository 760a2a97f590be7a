//! One codec call in QuickJS: a fresh runtime and context, the script evaluated in it, the entry
//! point called, and its result converted to JSON with bounded depth and size.
//!
//! This runs inside the codec worker process (see [`super::worker`]), where a native builtin
//! that ignores the interrupt handler, or a crash, costs only that process. A fresh runtime
//! per call means nothing a script changes (globals, prototypes, the memory it holds) is
//! seen by the next call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rquickjs::context::EvalOptions;
use rquickjs::{Coerced, Context, Function, Object, Runtime, Type, Value};

/// QuickJS stack limit: deep recursion becomes an exception, not a crash.
const MAX_STACK_BYTES: usize = 256 * 1024;
/// How deeply the result may nest (`{data: {a: {b: 1}}}` is 3 levels).
pub(crate) const MAX_RESULT_DEPTH: usize = 32;
/// How many values (objects, arrays, numbers, strings, ...) the result may hold.
pub(crate) const MAX_RESULT_VALUES: usize = 10_000;
/// How many bytes of strings and keys the result may hold.
pub(crate) const MAX_RESULT_BYTES: usize = 1 << 20;

/// Evaluated before the script: what repository codecs may call that QuickJS lacks. `console`
/// (codecs log while they decode) is accepted and ignored: a worker has no log to write to.
const PRELUDE: &str = r#"
if (typeof console === "undefined") {
  globalThis.console = (function () {
    var quiet = function () {};
    return { log: quiet, info: quiet, warn: quiet, error: quiet, debug: quiet, trace: quiet };
  })();
}
"#;

/// Calls whatever entry point the script defines and returns its result; with `normalize`,
/// also the script's `normalizeUplink` on a copy of the decoded data, as `normalized`.
const ADAPTER: &str = r#"
(function (bytes, fPort, normalize) {
  var input = { bytes: bytes, fPort: fPort, recvTime: new Date(), variables: {} };
  var result;
  if (typeof decodeUplink === "function") {
    result = decodeUplink(input);
  } else if (typeof Decoder === "function") {
    result = { data: Decoder(bytes, fPort) };
  } else if (typeof Decode === "function") {
    result = { data: Decode(fPort, bytes, {}) };
  } else {
    throw new Error("the script defines none of decodeUplink(input), Decoder(bytes, port), Decode(fPort, bytes)");
  }
  if (!normalize) return result;
  if (typeof normalizeUplink !== "function") throw new Error("the script defines no normalizeUplink(input)");
  if (result === null || typeof result !== "object" || (result.errors && result.errors.length) || result.data === undefined) {
    return result;
  }
  var copy = result.data;
  try { copy = JSON.parse(JSON.stringify(result.data)); } catch (e) {}
  return { data: result.data, warnings: result.warnings, errors: result.errors, normalized: normalizeUplink({ data: copy }) };
})
"#;

/// What one call decodes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Input<'a> {
    pub bytes: &'a [u8],
    pub f_port: Option<u8>,
    /// Also run `normalizeUplink` (the device repository's normalized payload).
    pub normalize: bool,
}

/// The limits of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub timeout: Duration,
    pub memory_bytes: usize,
}

/// Evaluates `source` and, with `input` (payload, fPort), calls its entry point. `Ok` is the
/// result as JSON text (`null` for a load without input).
pub(crate) fn run(source: &str, input: Option<Input<'_>>, limits: Limits) -> Result<String, String> {
    let prepared = Prepared::new(source, limits)?;
    match input {
        Some(input) => prepared.call(input, limits.timeout),
        None => Ok("null".to_owned()),
    }
}

/// A fresh runtime with the script evaluated in it, ready for exactly one call: the worker
/// prepares the next call's engine while it waits for it.
pub(crate) struct Prepared {
    // Field order matters: the context must be dropped before its runtime.
    context: Context,
    _runtime: Runtime,
    /// Deadline of the running evaluation in nanoseconds since `epoch`.
    deadline: Arc<AtomicU64>,
    epoch: Instant,
    memory_bytes: usize,
}

impl Prepared {
    /// Evaluates the script in a fresh runtime within the time limit.
    pub(crate) fn new(source: &str, limits: Limits) -> Result<Prepared, String> {
        let runtime = Runtime::new().map_err(|e| format!("cannot start the JavaScript engine: {e}"))?;
        runtime.set_memory_limit(limits.memory_bytes);
        runtime.set_max_stack_size(MAX_STACK_BYTES);
        let epoch = Instant::now();
        let deadline = Arc::new(AtomicU64::new(nanos(limits.timeout)));
        let d = deadline.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || nanos(epoch.elapsed()) > d.load(Ordering::Relaxed))));
        let context = Context::full(&runtime).map_err(|e| format!("cannot create a JavaScript context: {e}"))?;
        context.with(|ctx| {
            // Sloppy mode: repository codecs assign undeclared variables (`for (i = 0; ...)`).
            ctx.eval::<(), _>(PRELUDE).map_err(|e| describe(&ctx, e))?;
            let mut options = EvalOptions::default();
            options.strict = false;
            ctx.eval_with_options::<(), _>(source, options).map_err(|e| describe(&ctx, e))
        })?;
        Ok(Prepared { context, _runtime: runtime, deadline, epoch, memory_bytes: limits.memory_bytes })
    }

    /// The heap limit it was prepared with.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Calls the script's entry point within `timeout` from now; the engine is used up.
    pub(crate) fn call(self, input: Input<'_>, timeout: Duration) -> Result<String, String> {
        self.deadline.store(nanos(self.epoch.elapsed() + timeout), Ordering::Relaxed);
        self.context.with(|ctx| {
            let adapter: Function = ctx.eval(ADAPTER).map_err(|e| describe(&ctx, e))?;
            let port: Value = match input.f_port {
                Some(p) => Value::new_int(ctx.clone(), i32::from(p)),
                None => Value::new_undefined(ctx.clone()),
            };
            let value: Value = adapter.call((input.bytes.to_vec(), port, input.normalize)).map_err(|e| describe(&ctx, e))?;
            let mut budget = Budget { values: 0, bytes: 0 };
            let json = to_json(&ctx, &value, 0, &mut budget)?.unwrap_or(serde_json::Value::Null);
            Ok(json.to_string())
        })
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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

struct Budget {
    values: usize,
    bytes: usize,
}

impl Budget {
    fn take(&mut self, bytes: usize) -> Result<(), String> {
        self.values += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.values > MAX_RESULT_VALUES {
            return Err(format!("the script's result holds more than {MAX_RESULT_VALUES} values"));
        }
        if self.bytes > MAX_RESULT_BYTES {
            return Err(format!("the script's result holds more than {MAX_RESULT_BYTES} bytes of text"));
        }
        Ok(())
    }
}

/// Converts a result the way `JSON.stringify` would (functions and `undefined` left out of
/// objects, `null` in arrays; non-finite numbers become the strings `NaN`, `Infinity`,
/// `-Infinity`), but iteratively bounded:
/// deeper than [`MAX_RESULT_DEPTH`] or larger than the budget is an error, never a crash.
fn to_json<'js>(
    ctx: &rquickjs::Ctx<'js>,
    v: &Value<'js>,
    depth: usize,
    budget: &mut Budget,
) -> Result<Option<serde_json::Value>, String> {
    use serde_json::Value as J;
    let err = |e: rquickjs::Error| describe(ctx, e);
    let out = match v.type_of() {
        Type::Uninitialized | Type::Undefined | Type::Symbol | Type::Function | Type::Constructor => return Ok(None),
        Type::Null => J::Null,
        Type::Bool => J::Bool(v.as_bool().unwrap_or(false)),
        Type::Int => J::from(v.as_int().unwrap_or(0)),
        // JSON has no NaN or infinity: they travel as the text JavaScript prints for them,
        // which the JSON pointer mapping reads back as the non-finite number (a bad reading).
        Type::Float => match v.as_float().unwrap_or(f64::NAN) {
            f if f.is_nan() => J::String("NaN".into()),
            f if f.is_infinite() => J::String(if f > 0.0 { "Infinity" } else { "-Infinity" }.into()),
            f => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        },
        Type::String | Type::BigInt => {
            let Coerced(s) = v.get::<Coerced<String>>().map_err(err)?;
            budget.take(s.len())?;
            return Ok(Some(J::String(s)));
        }
        Type::Array | Type::Object | Type::Exception | Type::Promise => {
            if depth >= MAX_RESULT_DEPTH {
                return Err(format!("the script's result is nested deeper than {MAX_RESULT_DEPTH} levels"));
            }
            let object: &Object = v.as_object().ok_or("the script's result holds an unreadable object")?;
            if v.type_of() == Type::Array {
                // `length` can be up to 2^32 - 1 with nothing stored: read it as a number.
                let len: f64 = object.get::<_, f64>("length").map_err(err)?;
                if !(0.0..=MAX_RESULT_VALUES as f64).contains(&len) {
                    return Err(format!("the script's result holds an array of {len} elements"));
                }
                let mut items = Vec::with_capacity(len as usize);
                for i in 0..len as u32 {
                    budget.take(0)?;
                    let item: Value = object.get(i).map_err(err)?;
                    items.push(to_json(ctx, &item, depth + 1, budget)?.unwrap_or(J::Null));
                }
                J::Array(items)
            } else {
                let mut map = serde_json::Map::new();
                for key in object.keys::<String>() {
                    let key = key.map_err(err)?;
                    budget.take(key.len())?;
                    let item: Value = object.get(key.as_str()).map_err(err)?;
                    if let Some(j) = to_json(ctx, &item, depth + 1, budget)? {
                        map.insert(key, j);
                    }
                }
                J::Object(map)
            }
        }
        Type::Module | Type::Unknown => return Ok(None),
    };
    budget.take(0)?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits { timeout: Duration::from_millis(100), memory_bytes: 8 << 20 };

    fn call(src: &str, bytes: &[u8], port: Option<u8>) -> Result<String, String> {
        run(src, Some(Input { bytes, f_port: port, normalize: false }), L)
    }

    #[test]
    fn entry_points_of_all_generations_are_called() {
        let src = "function decodeUplink(input) { return { data: { n: input.bytes[0], p: input.fPort } }; }";
        assert_eq!(call(src, &[7], Some(3)).unwrap(), r#"{"data":{"n":7,"p":3}}"#);
        let src = "function Decoder(bytes, port) { return { n: bytes.length, p: port }; }";
        assert_eq!(call(src, &[1, 2], Some(9)).unwrap(), r#"{"data":{"n":2,"p":9}}"#);
        assert_eq!(call("function Decode(fPort, bytes) { return { p: fPort }; }", &[], None).unwrap(), r#"{"data":{}}"#);
        assert!(call("var x = 1;", &[], None).unwrap_err().contains("defines none"));
    }

    #[test]
    fn interruptible_hostile_scripts_fail_their_call() {
        let t = Limits { timeout: Duration::from_millis(20), ..L };
        let started = Instant::now();
        let e =
            run("function decodeUplink(input) { for (;;) {} }", Some(Input { bytes: &[], f_port: None, normalize: false }), t);
        assert_eq!(e.unwrap_err(), "the script ran past its time limit");
        assert!(started.elapsed() < Duration::from_secs(2));
        // Not here: a script that exhausts its heap can crash the engine (a segmentation fault
        // while it builds the error), which is one reason codecs run in a worker process;
        // tests/hostile_codecs.rs runs that case against the real worker.
        assert!(call("function f(n) { return f(n + 1) + 1; } function decodeUplink(input) { return f(0); }", &[], None).is_err());
        assert!(run("while (true) {}", None, t).unwrap_err().contains("time limit"));
        assert!(run("function (", None, t).is_err());
    }

    #[test]
    fn results_are_converted_with_bounded_depth_and_size() {
        let deep = "function decodeUplink() { var o = {}; for (var i = 0; i < 50000; i++) o = { a: o }; return { data: o }; }";
        assert!(call(deep, &[], None).unwrap_err().contains("nested deeper than 32"));
        let deep = "function decodeUplink() { var o = []; for (var i = 0; i < 50000; i++) o = [o]; return { data: { x: o } }; }";
        assert!(call(deep, &[], None).unwrap_err().contains("nested deeper than 32"));
        let sparse = "function decodeUplink() { var x = []; x.length = 4294967295; return { data: { x: x } }; }";
        assert!(call(sparse, &[], None).unwrap_err().contains("array of 4294967295"));
        let wide = "function decodeUplink() { var o = {}; for (var i = 0; i < 20000; i++) o['k' + i] = i; return { data: o }; }";
        assert!(call(wide, &[], None).unwrap_err().contains("more than 10000 values"));
        let odd = "function decodeUplink() { return { data: { f: function () {}, u: undefined, n: NaN, a: [undefined, 1.5], s: 'x' } }; }";
        assert_eq!(call(odd, &[], None).unwrap(), r#"{"data":{"a":[null,1.5],"n":"NaN","s":"x"}}"#);
        let inf = "function decodeUplink() { return { data: { p: Infinity, m: -Infinity, z: -0 } }; }";
        assert_eq!(call(inf, &[], None).unwrap(), r#"{"data":{"m":"-Infinity","p":"Infinity","z":-0.0}}"#);
    }

    #[test]
    fn every_call_starts_from_a_clean_state() {
        let src = "var n = 0; function decodeUplink() { n++; globalThis.decodeUplink = function () { return { data: { n: -1 } }; }; Array.prototype.x = 1; return { data: { n: n, x: [].x } }; }";
        for _ in 0..3 {
            assert_eq!(call(src, &[], None).unwrap(), r#"{"data":{"n":1,"x":1}}"#);
        }
    }

    #[test]
    fn sloppy_mode_and_modern_syntax_both_work() {
        let src = "function decodeUplink(input) { for (i = 0; i < 1; i++) {} const f = (x) => `${x}`; let v = f(input.bytes[0]); return { data: { v: (21.456).toFixed(1), s: v } }; }";
        assert_eq!(call(src, &[5], Some(1)).unwrap(), r#"{"data":{"s":"5","v":"21.5"}}"#);
    }

    #[test]
    fn normalize_recv_time_and_console_as_repository_codecs_use_them() {
        let src = "console.log('loaded'); function decodeUplink(input) { console.warn('x'); return { data: { t: input.bytes[0], ok: input.recvTime instanceof Date && input.recvTime.getTime() > 0 } }; }\n\
                   function normalizeUplink(input) { input.data.t = -1; return { data: [{ air: { temperature: input.data.t } }], warnings: ['n'] }; }";
        let normalized = run(src, Some(Input { bytes: &[7], f_port: Some(1), normalize: true }), L).unwrap();
        // normalizeUplink gets a copy: what it changes is not in the decoded data.
        assert_eq!(
            normalized,
            r#"{"data":{"ok":true,"t":7},"normalized":{"data":[{"air":{"temperature":-1}}],"warnings":["n"]}}"#
        );
        assert_eq!(call(src, &[7], Some(1)).unwrap(), r#"{"data":{"ok":true,"t":7}}"#);
        let no_normalize = "function decodeUplink(input) { return { data: {} }; }";
        let e = run(no_normalize, Some(Input { bytes: &[], f_port: None, normalize: true }), L).unwrap_err();
        assert!(e.contains("no normalizeUplink"), "{e}");
        // Errors from decodeUplink are returned as they are, without calling normalizeUplink.
        let failing = "function decodeUplink() { return { errors: ['bad'] }; } function normalizeUplink() { throw 'never'; }";
        assert_eq!(run(failing, Some(Input { bytes: &[], f_port: None, normalize: true }), L).unwrap(), r#"{"errors":["bad"]}"#);
    }

    /// Prints what a call costs (run with `--nocapture`, in release for real numbers; with
    /// `MESSNETZ_CODEC_WORKER` naming a messnetz binary, also through a worker process).
    #[test]
    fn cost_of_a_call() {
        let src = "function decodeUplink(input) { var b = input.bytes; var t = (b[2] << 8 | b[3]); if (t & 0x8000) t -= 0x10000; return { data: { battery: ((b[0] << 8 | b[1]) & 0x3FFF) / 1000, temperature: (t / 100).toFixed(2) } }; }";
        let n = 300;
        let per_call = |f: &dyn Fn()| {
            let started = Instant::now();
            for _ in 0..n {
                f();
            }
            started.elapsed() / n
        };
        let context = per_call(&|| {
            let rt = Runtime::new().unwrap();
            rt.set_memory_limit(L.memory_bytes);
            drop(Context::full(&rt).unwrap());
        });
        let in_process = per_call(&|| {
            call(src, &[0xCB, 0xF6, 0x0B, 0x0D], Some(2)).unwrap();
        });
        let key = super::super::protocol::script_key(src);
        super::super::pool::run(&key, src, Some(Input { bytes: &[0xCB], f_port: Some(2), normalize: false }), L).unwrap();
        let pooled = per_call(&|| {
            super::super::pool::run(
                &key,
                src,
                Some(Input { bytes: &[0xCB, 0xF6, 0x0B, 0x0D], f_port: Some(2), normalize: false }),
                L,
            )
            .unwrap();
        });
        // Uplinks spaced apart, as a sensor network sends them: the worker has the next
        // engine ready (in process, there is no worker to prepare it).
        let mut spaced = Duration::ZERO;
        for _ in 0..n {
            std::thread::sleep(Duration::from_millis(2));
            let started = Instant::now();
            super::super::pool::run(
                &key,
                src,
                Some(Input { bytes: &[0xCB, 0xF6, 0x0B, 0x0D], f_port: Some(2), normalize: false }),
                L,
            )
            .unwrap();
            spaced += started.elapsed();
        }
        eprintln!(
            "codec call: runtime + context {context:?}, whole call in process {in_process:?}, through pool::run back to back {pooled:?}, 2 ms apart {:?} (worker: {:?})",
            spaced / n,
            std::env::var_os(super::super::pool::WORKER_ENV)
        );
    }
}
