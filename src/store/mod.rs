//! The storage boundary: what the ingest stage commits ([`CommitStore`]), what the API, quality and the catalogue read ([`ReadStore`]), and the InfluxDB spool's table ([`Outbox`]).
//!
//! A batch of messages produces readings, dead letters, last-seen times, district
//! memberships, spooled InfluxDB lines and LoRaWAN frame counters ([`WriteBatch`]); a store
//! writes all of it in one transaction, so an acknowledged message is stored or
//! dead-lettered, never half of either. [`embedded`] is the default implementation (redb);
//! a second backend implements the same traits, and nothing above this module changes.

mod dead_letter;
pub mod embedded;
mod open;
pub mod postgres;

pub use dead_letter::{DeadLetter, ReplayOutcome};
pub use embedded::EmbeddedStore;
pub use open::{open, open_backend, Backend, OpenError};
pub use postgres::PostgresStore;

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::aggregates::{Interval, Scope, Window};
use crate::model::{DeviceId, Quantity, Reading};
use crate::quality::SeriesLookup;
use crate::sources::lorawan::FrameCounter;

/// The first and the last time of a series' data.
pub type Extent = (DateTime<Utc>, DateTime<Utc>);

/// Whether the store takes writes, for readiness and `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreHealth {
    /// `false` from a failed write transaction (a full disk, an I/O error, a store that could
    /// not be reopened yet) until the next one commits.
    pub writable: bool,
    /// The latest error of the failing run.
    pub error: Option<String>,
    /// When the failing run began.
    pub since: Option<DateTime<Utc>>,
    /// Reopens after an I/O error since the start.
    pub reopens: u64,
}

/// What the ingest stage and the replay service commit. Blocking calls: run them off the
/// async workers.
pub trait CommitStore: Send + Sync {
    /// Write the batch in one durable transaction; returns the ids given to its dead letters.
    fn write(&self, batch: &WriteBatch) -> Result<Vec<u64>, StoreError>;
    /// Commit what replaying dead letter `id` produced, in one transaction with the letter's
    /// removal (readings) or its new reason (failed again); [`ReplayOutcome::Gone`] when the
    /// letter is not there any more, and then nothing is written.
    fn commit_replay(&self, id: u64, batch: WriteBatch) -> Result<ReplayOutcome, StoreError>;
    /// The stored frame-counter state of a LoRaWAN DevAddr.
    fn frame_counter(&self, dev_addr: u32) -> Result<Option<FrameCounter>, StoreError>;
}

/// What the API, the catalogue and the replay service read. Blocking calls.
pub trait ReadStore: Send + Sync {
    fn health(&self) -> StoreHealth;
    /// The newest reading of each quantity of `device`.
    fn latest(&self, device: &DeviceId) -> Result<Vec<Reading>, StoreError>;
    /// Readings of one series with `from <= time < to`, oldest first, at most `limit`.
    fn readings(
        &self,
        device: &DeviceId,
        quantity: Quantity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Reading>, StoreError>;
    /// When `device` was last heard from (reception time).
    fn last_seen(&self, device: &DeviceId) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// One dead letter by id.
    fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError>;
    /// Dead letters with an id above `after` that `keep` accepts, oldest first, at most
    /// `limit`, looking at no more than `max_scan`; and the `after` of the next page when
    /// there may be more.
    fn dead_letters_matching(
        &self,
        after: u64,
        limit: usize,
        max_scan: usize,
        keep: &mut dyn FnMut(&DeadLetter) -> bool,
    ) -> Result<(Vec<DeadLetter>, Option<u64>), StoreError>;
    /// The rollup windows of a series in `[from, to)`, oldest first.
    fn rollups(
        &self,
        scope: &Scope,
        quantity: Quantity,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, Window)>, StoreError>;
    /// The first and last time of a series' data.
    fn extent(&self, scope: &Scope, quantity: Quantity) -> Result<Option<Extent>, StoreError>;
    /// Device windows committed but not yet stored by a flush (readiness).
    fn pending_windows(&self) -> usize;
}

/// The InfluxDB spool's table: lines appended in the readings' commit ([`WriteBatch::outbox`]),
/// read and removed in order by the InfluxDB writer. Blocking calls.
pub trait Outbox: Send + Sync {
    /// Lines waiting.
    fn outbox_len(&self) -> Result<u64, StoreError>;
    /// The oldest `limit` lines with their keys, oldest first.
    fn outbox_peek(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Remove sent (or dead-lettered) lines, durably.
    fn outbox_remove(&self, keys: &[u64]) -> Result<(), StoreError>;
    /// Delete the `n` oldest lines; returns how many were deleted.
    fn outbox_drop_oldest(&self, n: u64) -> Result<u64, StoreError>;
}

/// A whole store: what the gateway's stages hold.
pub trait Store: CommitStore + ReadStore + Outbox + SeriesLookup {}

impl<T: CommitStore + ReadStore + Outbox + SeriesLookup> Store for T {}

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
    /// The stored state each of `frame_counters` was computed from (`None`: no counter was
    /// stored yet), as the batch read it. A store shared by several gateways writes a counter
    /// only if it is still in that state, and otherwise refuses the whole batch with
    /// [`StoreError::FrameCounterMoved`]; a counter without an entry here is written as it is.
    pub frame_counter_bases: HashMap<u32, Option<FrameCounter>>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
            && self.dead_letters.is_empty()
            && self.seen.is_empty()
            && self.districts.is_empty()
            && self.outbox.is_empty()
            && self.frame_counters.is_empty()
            && self.frame_counter_bases.is_empty()
    }

    pub fn clear(&mut self) {
        self.readings.clear();
        self.dead_letters.clear();
        self.seen.clear();
        self.districts.clear();
        self.outbox.clear();
        self.frame_counters.clear();
        self.frame_counter_bases.clear();
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
    /// A shared store (PostgreSQL) failed or could not be reached; the text never holds the password.
    #[error("PostgreSQL: {0}")]
    Database(String),
    /// Another gateway stored a newer state of this DevAddr's frame counter after the batch
    /// read it (two replicas got copies of one frame): nothing of the batch was written. Run
    /// the batch's messages through the pipeline again: the copy is then seen as a duplicate.
    #[error("the frame counter of DevAddr {dev_addr:08X} moved on in another gateway; the batch is decoded again")]
    FrameCounterMoved { dev_addr: u32 },
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
