//! `messnetz admin ...`: operator API helpers.

use std::io::Read;
use std::process::ExitCode;

use clap::Subcommand;

use super::outcome::{Failure, Outcome};
use crate::api::admin::auth;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Read a token from stdin and print its argon2 hash for `[[admin.tokens]] hash`; with
    /// --generate, make a new random token and print both.
    HashToken {
        #[arg(long)]
        generate: bool,
    },
}

pub fn run(command: AdminCommand) -> Outcome {
    match command {
        AdminCommand::HashToken { generate } => hash_token(generate),
    }
}

fn hash_token(generate: bool) -> Outcome {
    let token = if generate {
        auth::generate_token()
    } else {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::new(2, format!("cannot read the token from stdin: {e}")))?;
        text.trim_end_matches(['\r', '\n']).to_owned()
    };
    let hash = auth::hash_token(&token).map_err(|e| Failure::new(2, e))?;
    if generate {
        println!("token: {token}");
        println!("hash:  {hash}");
        eprintln!("Give the token to its operator (it is not stored anywhere); put the hash in [[admin.tokens]].");
    } else {
        println!("{hash}");
    }
    Ok(ExitCode::SUCCESS)
}
