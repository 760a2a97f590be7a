//! The gateway's side of the codec workers: a few warm worker processes shared by every
//! profile, a call with a hard deadline, and a worker killed and replaced when it overruns it
//! or dies.
//!
//! A call waits for its answer at most twice its time limit (at least [`MIN_KILL_AFTER`]);
//! then the worker is killed, and the call fails. Some native builtins of the engine (regular
//! expressions, `Array.prototype.join` over a huge `length`) never look at the engine's
//! interrupt handler, so this is the limit that holds whatever a script runs.

use std::io;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::engine::{Input, Limits};
use super::protocol::{read_frame, write_frame, Request, Response, ScriptKey, HELLO};
use super::worker::PARENT_ENV;

/// Workers running calls at once; more callers wait for one (every call is bounded).
const MAX_WORKERS: usize = 4;
/// Idle workers kept warm.
const MAX_IDLE: usize = 2;
/// The shortest wait before a worker is killed, for very small time limits: starting a fresh
/// runtime and passing the answer back take a few milliseconds on a loaded machine.
pub(crate) const MIN_KILL_AFTER: Duration = Duration::from_millis(50);
/// How long a new worker may take to start and greet.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The environment variable naming the program to run as `<program> codec-worker`.
pub const WORKER_ENV: &str = "MESSNETZ_CODEC_WORKER";

/// How long a call with this time limit may take before its worker is killed.
pub(crate) fn kill_after(timeout: Duration) -> Duration {
    (2 * timeout).max(MIN_KILL_AFTER)
}

static PROGRAM: OnceLock<Option<PathBuf>> = OnceLock::new();
static POOL: Pool = Pool { idle: Mutex::new(Vec::new()), busy: Mutex::new(0), freed: Condvar::new() };

/// Names the program that serves `codec-worker` (the messnetz binary) for programs that are
/// not that binary themselves, such as benchmarks. Has no effect after the first codec call.
pub fn set_worker_program(path: PathBuf) {
    let _ = PROGRAM.set(Some(path));
}

/// The worker program: [`set_worker_program`], else `MESSNETZ_CODEC_WORKER`, else this
/// executable (`None` in the library's unit tests, which run codecs in their own process).
fn program() -> &'static Option<PathBuf> {
    PROGRAM.get_or_init(|| {
        if let Some(p) = std::env::var_os(WORKER_ENV).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        if cfg!(test) {
            return None;
        }
        // /proc/self/exe still runs this binary after a package upgrade replaced its file.
        let proc_exe = PathBuf::from("/proc/self/exe");
        if proc_exe.exists() {
            return Some(proc_exe);
        }
        std::env::current_exe().ok()
    })
}

/// Runs one call: evaluates the script (`key` is [`super::protocol::script_key`] of `source`)
/// and, given `input`, calls its entry point. `Ok` is the result as JSON text.
pub(crate) fn run(key: &ScriptKey, source: &str, input: Option<Input<'_>>, limits: Limits) -> Result<String, String> {
    let Some(program) = program() else {
        return super::engine::run(source, input, limits);
    };
    if std::env::var_os(PARENT_ENV).is_some() {
        // A program started as a worker that is not one (see `Worker::spawn`) must not start
        // workers of its own.
        return Err("codecs cannot run inside a codec worker".to_owned());
    }
    let mut slot = POOL.checkout();
    let spawn = || Worker::spawn(program).map_err(|e| format!("cannot start the codec worker {}: {e}", program.display()));
    let (mut worker, reused) = match slot.worker.take() {
        Some(w) => (w, true),
        None => (spawn()?, false),
    };
    let mut request = Request {
        key: *key,
        source: None,
        input: input.map(|i| (i.bytes.to_vec(), i.f_port)),
        normalize: input.is_some_and(|i| i.normalize),
        timeout_ms: u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX),
        memory_bytes: limits.memory_bytes,
    };
    let mut answer = worker.call(&request, limits.timeout);
    if reused && matches!(answer, Err(Failure::Died(_))) {
        // The verdict on a call comes from a fresh worker: one that was reused may have been
        // ended from outside (a script that crashes workers fails again on the new one).
        worker = spawn()?;
        answer = worker.call(&request, limits.timeout);
    }
    if matches!(answer, Ok(Response::NeedSource)) {
        request.source = Some(source.to_owned());
        answer = worker.call(&request, limits.timeout);
    }
    match answer {
        Ok(Response::Ok(json)) => {
            slot.worker = Some(worker);
            Ok(json)
        }
        Ok(Response::Err(e)) => {
            slot.worker = Some(worker);
            Err(e)
        }
        Ok(Response::NeedSource) => Err("the codec worker did not take the script".to_owned()),
        Err(Failure::Died(e) | Failure::TimedOut(e)) => Err(e),
    }
}

struct Pool {
    idle: Mutex<Vec<Worker>>,
    busy: Mutex<usize>,
    freed: Condvar,
}

/// A place among the [`MAX_WORKERS`]; a worker left in it when dropped goes back to the pool.
struct Slot {
    worker: Option<Worker>,
}

impl Pool {
    fn checkout(&'static self) -> Slot {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy >= MAX_WORKERS {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy += 1;
        drop(busy);
        Slot { worker: self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            let mut idle = POOL.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(w);
            }
        }
        let mut busy = POOL.busy.lock().unwrap_or_else(|p| p.into_inner());
        *busy -= 1;
        POOL.freed.notify_one();
    }
}

/// Why a call to a worker failed; the worker is gone either way.
enum Failure {
    /// The worker ended before it answered: the request could not be sent, or it died during
    /// the call. A worker that was reused may have died of something else than this call (killed
    /// from outside while idle, or as the call was sent), so the call deserves a fresh worker.
    Died(String),
    /// The call overran its deadline and the worker was killed: the script's own doing.
    TimedOut(String),
}

/// One worker process; killed when dropped.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<io::Result<Option<Response>>>,
}

impl Worker {
    fn spawn(program: &PathBuf) -> io::Result<Worker> {
        let mut child = Command::new(program)
            .arg("codec-worker")
            // Scripts cannot read the environment, but the worker needs none of the gateway's.
            .env_clear()
            .env(PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (Some(stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("no pipes to the codec worker"));
        };
        let (tx, answers) = mpsc::sync_channel(1);
        // Reads the answers, so that the caller can wait for one with a deadline; ends with
        // the worker's stdout.
        std::thread::Builder::new().name("codec-worker-reader".into()).spawn(move || loop {
            let frame = read_frame::<Response>(&mut stdout);
            let end = !matches!(frame, Ok(Some(_)));
            if tx.send(frame).is_err() || end {
                return;
            }
        })?;
        let mut worker = Worker { child, stdin, answers };
        match worker.answers.recv_timeout(START_TIMEOUT) {
            Ok(Ok(Some(Response::Ok(hello)))) if hello == HELLO => Ok(worker),
            _ => Err(io::Error::other(format!(
                "it did not greet ({}); is it a messnetz binary? Name one with {WORKER_ENV}",
                worker.end()
            ))),
        }
    }

    /// Sends a request and waits for its answer; `Err` means the worker is gone (killed after
    /// overrunning the deadline, or dead by itself) and must not be used again.
    fn call(&mut self, request: &Request, timeout: Duration) -> Result<Response, Failure> {
        let started = Instant::now();
        if let Err(e) = write_frame(&mut self.stdin, request) {
            return Err(Failure::Died(self.died(&format!("cannot send it the script: {e}"))));
        }
        let wait = kill_after(timeout);
        match self.answers.recv_timeout(wait.saturating_sub(started.elapsed())) {
            Ok(Ok(Some(answer))) => Ok(answer),
            Ok(Ok(None)) | Err(RecvTimeoutError::Disconnected) => Err(Failure::Died(self.died("it stopped"))),
            Ok(Err(e)) => Err(Failure::Died(self.died(&format!("its answer was unreadable: {e}")))),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                tracing::warn!(
                    limit_ms = timeout.as_millis() as u64,
                    "a codec overran twice its time limit in code the engine cannot interrupt; its worker was killed"
                );
                Err(Failure::TimedOut(format!(
                    "the script ran past its time limit of {} ms (stopped after {} ms)",
                    timeout.as_millis(),
                    started.elapsed().as_millis()
                )))
            }
        }
    }

    /// Describes a worker that ended during a call (killing it first if it has not).
    fn died(&mut self, what: &str) -> String {
        let status = self.end();
        tracing::warn!(%status, what, "a codec worker ended during a call; the next call starts a new one");
        format!("the codec worker crashed running the script ({what}; {status}); the next call gets a new worker")
    }

    /// Kills the worker if it still runs, and says how it ended.
    fn end(&mut self) -> String {
        let _ = self.child.kill();
        self.child.wait().map(|s| describe_exit(&s)).unwrap_or_else(|e| e.to_string())
    }
}

fn describe_exit(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                libc::SIGABRT => " (abort: stack overflow or out of memory)",
                libc::SIGSEGV => " (segmentation fault)",
                libc::SIGKILL => " (killed)",
                libc::SIGXCPU => " (CPU time limit)",
                _ => "",
            };
            return format!("signal {signal}{name}");
        }
    }
    status.to_string()
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
