//! Durable storage: what a batch of messages produced (readings, dead letters, last-seen times), written atomically.

pub mod backup;
mod dead_letter;
mod device_windows;
mod embedded;
mod frame_counters;
pub mod influx;
mod line_protocol;
pub mod outbox;
pub mod retention;
mod rollups;
mod series_lookup;
mod tables;
mod window_journal;

pub use dead_letter::{DeadLetter, ReplayOutcome};
pub use device_windows::FlushSummary;
pub use embedded::{EmbeddedStore, StoreHealth};
pub use outbox::Spool;
pub use rollups::RebuildSummary;

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::model::{DeviceId, Reading};
use crate::sources::lorawan::FrameCounter;

/// The first and the last time of a series' data.
pub type Extent = (DateTime<Utc>, DateTime<Utc>);

/// Everything one batch of messages produced; written in one transaction, so after a crash
/// either all of it is on disk or none of it is (and the broker redelivers the messages).
#[derive(Debug, Default)]
pub struct WriteBatch {
    pub readings: Vec<Reading>,
    pub dead_letters: Vec<DeadLetter>,
    /// When each device was last heard from (reception time).
    pub seen: Vec<(DeviceId, DateTime<Utc>)>,
    /// District of each open device in the batch: their readings also count towards the
    /// district's rollups. Internal devices are absent, so they never shape public aggregates.
    pub districts: HashMap<DeviceId, String>,
    /// Line-protocol lines for InfluxDB, spooled in the same transaction (empty without `[influxdb]`).
    pub outbox: Vec<String>,
    /// LoRaWAN frame counters (by DevAddr) moved forward by the batch's raw frames; stored in the
    /// same transaction, so a counter never runs ahead of (or behind) the readings it admitted.
    pub frame_counters: HashMap<u32, FrameCounter>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
            && self.dead_letters.is_empty()
            && self.seen.is_empty()
            && self.districts.is_empty()
            && self.outbox.is_empty()
            && self.frame_counters.is_empty()
    }

    pub fn clear(&mut self) {
        self.readings.clear();
        self.dead_letters.clear();
        self.seen.clear();
        self.districts.clear();
        self.outbox.clear();
        self.frame_counters.clear();
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
    #[error("the store waits to be reopened after an I/O error: {0}")]
    Closed(String),
}

impl StoreError {
    /// An I/O error (a full disk, a failing device), or redb refusing work after one: the
    /// database must be closed and opened again before it takes writes.
    pub fn is_io(&self) -> bool {
        matches!(self, StoreError::Engine(redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed))
    }
}

pub(crate) fn engine<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Engine(e.into())
}
