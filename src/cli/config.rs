//! `messnetz config ...`: configuration helpers.

use std::process::ExitCode;

use clap::Subcommand;

use super::outcome::Outcome;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the documented default configuration.
    Default,
}

pub fn run(command: ConfigCommand) -> Outcome {
    match command {
        ConfigCommand::Default => {
            print!("{}", crate::config::DEFAULT_TOML);
            Ok(ExitCode::SUCCESS)
        }
    }
}
