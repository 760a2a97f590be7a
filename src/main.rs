//! The `messnetz` command line: parse the arguments, start tracing for the gateway, and hand
//! the command to [`messnetz::cli`].

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use messnetz::cli::{self, Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
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
