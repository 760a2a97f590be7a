//! The `messnetz` command line: the arguments ([`Cli`]), and one module per command group,
//! each command a function that prints its answer and returns the process's exit code.
//!
//! - [`run`]: the gateway itself (the default command);
//! - [`check`]: validate configuration, devices, profiles and session keys;
//! - [`config`]: print the documented default configuration;
//! - [`profiles`]: list profiles and check their examples;
//! - [`decode`]: decode one payload with a profile;
//! - [`rollups`]: rebuild rollups from the stored readings;
//! - [`dead_letters`]: list, show and replay dead letters (the [`crate::replay`] service);
//! - [`admin`]: operator token hashes;
//! - [`backup`]: back the store up (also while the gateway runs) and restore it.
//!
//! Exit codes: 0 done, 1 a problem with the data or files (printed on stderr), 2 a usage
//! problem (a bad argument, an unreadable configuration).

pub mod admin;
pub mod backup;
pub mod check;
pub mod config;
pub mod dead_letters;
pub mod decode;
mod outcome;
pub mod profiles;
pub mod rollups;
pub mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;

pub use outcome::{Failure, Outcome};

#[derive(Parser)]
#[command(name = "messnetz", version, about = "Gateway for a city's weather and climate sensor network")]
pub struct Cli {
    /// TOML configuration file (defaults apply without one; MESSNETZ__SECTION__KEY overrides).
    #[arg(long, short, global = true, env = "MESSNETZ_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log filter of the gateway: a level (`error`, `warn`, `info`, `debug`, `trace`) or
    /// directives such as `info,messnetz::sources=debug`. Overrides RUST_LOG; default `info`.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format of the gateway on stderr: `text` (default), or `json`, one object per line
    /// for journald or a log shipper.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How the gateway writes its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    Text,
    /// One JSON object per line: time, level, target, message and fields.
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate configuration, devices and profiles without starting; non-zero exit on any problem.
    Check,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// Sensor profile tools.
    Profiles {
        #[command(subcommand)]
        command: profiles::ProfilesCommand,
    },
    /// Rollup maintenance (run while the gateway is stopped: the store is single-process).
    Rollups {
        #[command(subcommand)]
        command: rollups::RollupsCommand,
    },
    /// Dead letters: list, show, replay, delete and purge them (run while the gateway is
    /// stopped: the store is single-process; while it runs, use the admin API).
    DeadLetters {
        #[command(subcommand)]
        command: dead_letters::DeadLettersCommand,
    },
    /// Write a consistent snapshot of the store to FILE. While the gateway runs, it takes the
    /// snapshot through its admin API (token in MESSNETZ_ADMIN_TOKEN or --token-file).
    Backup {
        file: PathBuf,
        /// Base URL of the running gateway's API (default: from api.listen).
        #[arg(long)]
        url: Option<String>,
        /// File whose first line is an all-departments admin token.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Put a backup in place of the store (stop the gateway first); the replaced store file
    /// is kept as messnetz.redb.before-restore.
    Restore { file: PathBuf },
    /// Operator API helpers.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Decode one payload with a profile and print the readings as JSON.
    Decode {
        /// Profile id, e.g. dragino-lht65.
        #[arg(long)]
        profile: String,
        /// LoRaWAN FPort of the uplink.
        #[arg(long)]
        fport: Option<u8>,
        /// The payload in hex.
        #[arg(long)]
        hex: String,
    },
    /// Serve JavaScript codec calls on stdin/stdout for a running gateway (started by it).
    #[command(hide = true)]
    CodecWorker,
}

/// Run a command. The configuration is loaded only for the commands that need it.
pub fn dispatch(config: Option<&Path>, command: Command) -> ExitCode {
    let outcome = match command {
        Command::CodecWorker => Ok(ExitCode::from(crate::profiles::js::worker::serve())),
        Command::Config { command } => config::run(command),
        Command::Admin { command } => admin::run(command),
        Command::Run => load(config).map(run::gateway),
        Command::Check => load(config).and_then(|s| check::run(&s)),
        Command::Profiles { command } => load(config).and_then(|s| profiles::run(&s, command)),
        Command::Rollups { command } => load(config).and_then(|s| rollups::run(&s, command)),
        Command::DeadLetters { command } => load(config).and_then(|s| dead_letters::run(&s, command)),
        Command::Backup { file, url, token_file } => {
            load(config).and_then(|s| backup::backup(&s, &file, url.as_deref(), token_file.as_deref()))
        }
        Command::Restore { file } => load(config).and_then(|s| backup::restore(&s, &file)),
        Command::Decode { profile, fport, hex } => load(config).and_then(|s| decode::run(&s, &profile, fport, &hex)),
    };
    outcome.unwrap_or_else(Failure::report)
}

/// The configuration; a problem with it is a usage problem (exit code 2).
pub fn load(file: Option<&Path>) -> Result<Settings, Failure> {
    // The errors' text ends with a newline.
    crate::config::load(file).map_err(|e| Failure { code: 2, text: e.to_string() })
}
