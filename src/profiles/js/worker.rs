//! The codec worker: the process (`messnetz codec-worker`, hidden) that runs JavaScript codecs
//! for the gateway, so that a codec the engine cannot interrupt, or one that crashes the
//! engine, costs a process the gateway kills and replaces rather than the gateway itself.
//!
//! It reads requests from stdin and answers on stdout ([`super::protocol`]), one at a time,
//! and ends when stdin closes. It keeps recently used scripts by content key, and runs each
//! call in a fresh runtime ([`super::engine`]), prepared (the script evaluated) while it
//! waits for the call. Before each call it sets its CPU-time limit a
//! little beyond the call's own, so a runaway call ends even if the gateway is gone (an idle
//! worker ends when the gateway's end of its stdin closes); it holds a bounded address space
//! and writes no core files.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter};
use std::time::Duration;

use super::engine::{self, Input, Limits, Prepared};
use super::protocol::{read_frame, write_frame, Request, Response, ScriptKey, HELLO};

/// Set in a worker's environment: a program started as a worker never starts workers itself.
pub(crate) const PARENT_ENV: &str = "MESSNETZ_CODEC_WORKER_PARENT";
/// Scripts a worker keeps; beyond this it forgets them all and asks again.
const MAX_SCRIPTS: usize = 64;
/// The worker's address space: the largest codec heap (256 MiB) and room for the engine.
const ADDRESS_SPACE_BYTES: u64 = 1 << 30;

/// Serves requests until stdin closes; the exit code is 0 then, 1 after an I/O error.
pub fn serve() -> u8 {
    limit_process();
    let mut input = BufReader::new(io::stdin().lock());
    let mut output = BufWriter::new(io::stdout().lock());
    let mut scripts: HashMap<ScriptKey, String> = HashMap::new();
    let mut spare: Option<(ScriptKey, Prepared)> = None;
    if let Err(e) = write_frame(&mut output, &Response::Ok(HELLO.to_owned())) {
        eprintln!("codec worker: cannot greet: {e}");
        return 1;
    }
    loop {
        let request: Request = match read_frame(&mut input) {
            Ok(Some(r)) => r,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("codec worker: cannot read a request: {e}");
                return 1;
            }
        };
        if let Some(source) = request.source {
            if scripts.len() >= MAX_SCRIPTS {
                scripts.clear();
            }
            scripts.insert(request.key, source);
        }
        let limits = Limits { timeout: Duration::from_millis(request.timeout_ms), memory_bytes: request.memory_bytes };
        let response = match scripts.get(&request.key) {
            None => Response::NeedSource,
            Some(source) => {
                limit_cpu(limits.timeout);
                let result = match &request.input {
                    None => engine::run(source, None, limits),
                    Some((bytes, port)) => {
                        let prepared = match spare.take() {
                            Some((key, p)) if key == request.key && p.memory_bytes() == limits.memory_bytes => Ok(p),
                            _ => Prepared::new(source, limits),
                        };
                        let input = Input { bytes, f_port: *port, normalize: request.normalize };
                        prepared.and_then(|p| p.call(input, limits.timeout))
                    }
                };
                match result {
                    Ok(json) => Response::Ok(json),
                    Err(e) => Response::Err(e),
                }
            }
        };
        if let Err(e) = write_frame(&mut output, &response) {
            eprintln!("codec worker: cannot answer: {e}");
            return 1;
        }
        // Uplinks of one device come one after another: while waiting for the next request,
        // prepare a fresh engine for the script just called (a failure shows at that call).
        if let (Some(_), Some(source)) = (&request.input, scripts.get(&request.key)) {
            limit_cpu(limits.timeout);
            spare = Prepared::new(source, limits).ok().map(|p| (request.key, p));
        }
    }
}

#[cfg(unix)]
fn limit_process() {
    use nix::sys::resource::{setrlimit, Resource};
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    let _ = setrlimit(Resource::RLIMIT_AS, ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES);
}

#[cfg(not(unix))]
fn limit_process() {}

/// Sets the soft CPU-time limit to what this process used so far, plus twice the call's limit
/// and a second (the limit counts whole seconds); past it the kernel ends the process.
#[cfg(unix)]
fn limit_cpu(timeout: Duration) {
    use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else { return };
    let used = (usage.user_time().tv_sec() + usage.system_time().tv_sec()).max(0) as u64 + 1;
    let soft = used + (2 * timeout).as_secs() + 1;
    let Ok((_, hard)) = getrlimit(Resource::RLIMIT_CPU) else { return };
    let _ = setrlimit(Resource::RLIMIT_CPU, soft.min(hard), hard);
}

#[cfg(not(unix))]
fn limit_cpu(_timeout: Duration) {}
