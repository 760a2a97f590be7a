//! The `messnetz` command line: parse the arguments, start tracing for the gateway, and hand
//! the command to [`messnetz::cli`].

// One unsafe call, allowed where it is made: `bound_malloc_arenas`. The library forbids unsafe code.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use messnetz::cli::{self, Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    bound_malloc_arenas();
    let Cli { config, log_level, log_format, command } = Cli::parse();
    let command = command.unwrap_or(Command::Run);
    // The gateway logs to stderr (--log-level, else RUST_LOG, else `info`); the other commands
    // print their answers and nothing else.
    if matches!(command, Command::Run) {
        let filter = match log_level.as_deref() {
            Some(directives) => match EnvFilter::try_new(directives) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("--log-level: {e}; expected a level (error, warn, info, debug, trace) or directives such as info,messnetz=debug");
                    return ExitCode::from(2);
                }
            },
            None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        };
        let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        match log_format {
            LogFormat::Json => logs.json().with_current_span(false).init(),
            LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        }
    }
    cli::dispatch(config.as_deref(), command)
}

/// Give glibc's allocator two arenas unless `MALLOC_ARENA_MAX` says otherwise. By default each
/// thread that meets contention gets an arena of its own (up to eight per core) and their
/// freed memory is rarely given back: with InfluxDB on, a burst of a million uplinks peaked at
/// 234-244 MB with 32 MB of store cache, 184-190 MB with two arenas at the same rate
/// (BENCHMARKS.md, "two malloc arenas by default").
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn bound_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first in `main`, before any other thread exists; `mallopt` only sets
        // one of the allocator's parameters and returns 0 when it refuses, which changes nothing.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_malloc_arenas() {}
