//! What a command returns: its exit code, or a failure with the text to print and the exit code.

use std::fmt::Display;
use std::process::ExitCode;

/// A command that could not do its work: what to print on stderr, and the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{}", text.trim_end())]
pub struct Failure {
    pub code: u8,
    /// Printed as it is: each line ends with a newline.
    pub text: String,
}

impl Failure {
    /// One line.
    pub fn new(code: u8, line: impl Display) -> Self {
        Self { code, text: format!("{line}\n") }
    }

    /// A line per problem.
    pub fn lines(code: u8, lines: impl IntoIterator<Item = impl Display>) -> Self {
        Self { code, text: lines.into_iter().map(|l| format!("{l}\n")).collect() }
    }

    /// Print the text; the exit code.
    pub fn report(self) -> ExitCode {
        eprint!("{}", self.text);
        ExitCode::from(self.code)
    }
}

/// What a command returns: its exit code, or why it stopped.
pub type Outcome = Result<ExitCode, Failure>;
