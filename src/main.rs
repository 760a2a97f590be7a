//! The `messnetz` command line: parse the arguments, start tracing for the gateway, and hand
//! the command to [`messnetz::cli`].

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use messnetz::cli::{self, Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let Cli { config, command } = Cli::parse();
    let command = command.unwrap_or(Command::Run);
    // The gateway logs to stderr (RUST_LOG, default `info`); the other commands print their
    // answers and nothing else.
    if matches!(command, Command::Run) {
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    cli::dispatch(config.as_deref(), command)
}
