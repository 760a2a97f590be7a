//! Durable storage: what a batch of messages produced (readings, dead letters, last-seen times), written atomically.

mod dead_letter;
mod embedded;

pub use dead_letter::DeadLetter;
pub use embedded::EmbeddedStore;

use chrono::{DateTime, Utc};

use crate::model::{DeviceId, Reading};

/// Everything one batch of messages produced; written in one transaction, so after a crash
/// either all of it is on disk or none of it is (and the broker redelivers the messages).
#[derive(Debug, Default)]
pub struct WriteBatch {
    pub readings: Vec<Reading>,
    pub dead_letters: Vec<DeadLetter>,
    /// When each device was last heard from (reception time).
    pub seen: Vec<(DeviceId, DateTime<Utc>)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty() && self.dead_letters.is_empty() && self.seen.is_empty()
    }

    pub fn clear(&mut self) {
        self.readings.clear();
        self.dead_letters.clear();
        self.seen.clear();
    }
}

/// Why the store failed. The cause is logged; API clients see a generic error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store directory {path}: {source}")]
    Directory { path: String, source: std::io::Error },
    #[error("storage engine: {0}")]
    Engine(#[from] redb::Error),
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
}

pub(crate) fn engine<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Engine(e.into())
}
