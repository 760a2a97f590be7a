//! The storage boundary's traits: what the ingest stage commits ([`CommitStore`]), what the API, quality and the catalogue read ([`ReadStore`]), the InfluxDB spool's table ([`Outbox`]), and the store's error.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::batch::WriteBatch;
use super::dead_letter::{DeadLetter, ReplayOutcome};
use super::spooled::Spooled;
use crate::aggregates::{Interval, Scope, Window};
use crate::citizens::CitizenSensor;
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
    /// The same range as [`ReadStore::readings`], newest first, at most `limit` (a
    /// newest-first page reads only what it returns).
    fn readings_newest_first(
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
    /// The oldest lines with their keys, oldest first: at most `limit`, and at least one
    /// if any waits.
    fn outbox_peek(&self, limit: usize) -> Result<Spooled, StoreError> {
        self.outbox_peek_except(limit, &[])
    }
    /// As [`Self::outbox_peek`], leaving out the lines keyed in `skip` (sorted ascending: lines
    /// sent and not removed yet). A store that cannot pass over them reads the oldest
    /// `limit + skip.len()` lines and filters them ([`Spooled::without`]).
    fn outbox_peek_except(&self, limit: usize, skip: &[u64]) -> Result<Spooled, StoreError>;
    /// Remove sent (or dead-lettered) lines. The removal may be made durable only by the
    /// store's next commit or its close: a crash before then sends those lines again, which
    /// InfluxDB takes as an overwrite of the same points.
    fn outbox_remove(&self, keys: &[u64]) -> Result<(), StoreError>;
    /// Delete the `n` oldest lines; returns how many were deleted.
    fn outbox_drop_oldest(&self, n: u64) -> Result<u64, StoreError>;
}

/// What removing a citizen sensor removed.
#[derive(Debug, Default, PartialEq)]
pub struct Removed {
    pub readings: u64,
}

/// Registered citizen sensors: kept, listed, approved and removed with everything stored of
/// them. Blocking calls.
pub trait CitizenStore: Send + Sync {
    /// Every registered citizen sensor, approved or not, ordered by id.
    fn citizen_sensors(&self) -> Result<Vec<CitizenSensor>, StoreError>;
    /// One citizen sensor by id.
    fn citizen_sensor(&self, id: &DeviceId) -> Result<Option<CitizenSensor>, StoreError>;
    /// Add or replace a citizen sensor's registration.
    fn put_citizen_sensor(&self, sensor: &CitizenSensor) -> Result<(), StoreError>;
    /// Remove a citizen sensor and everything stored of it (readings, device windows, last
    /// seen, its district entry) in one transaction; `None` if there is no such sensor.
    /// District windows it counted towards (only with `citizens.in_district_aggregates`)
    /// keep its share until `messnetz rollups rebuild`.
    fn remove_citizen_sensor(&self, id: &DeviceId) -> Result<Option<Removed>, StoreError>;
}

/// What a backup or restore found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Rows per table, in table order.
    pub tables: Vec<(String, u64)>,
    /// Size of the snapshot file in bytes.
    pub bytes: u64,
}

impl Snapshot {
    pub fn rows(&self, table: &str) -> u64 {
        self.tables.iter().find(|(t, _)| t == table).map(|(_, n)| *n).unwrap_or(0)
    }
}

/// Why a backup or restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} is not a messnetz store: {1}")]
    NotAStore(PathBuf, String),
    #[error("the store in {0} is open in another process: stop the gateway first")]
    InUse(PathBuf),
    #[error("{0}")]
    Unsupported(String),
}

/// An operator's upkeep of a store. Blocking calls.
pub trait AdminStore: Send + Sync {
    /// Delete these dead letters in one transaction; the ids of those that were there. Their
    /// ids are never given again.
    fn delete_dead_letters(&self, ids: &[u64]) -> Result<Vec<u64>, StoreError>;
    /// Write a consistent snapshot of the store to `dest` (replaced if it exists) while it
    /// keeps taking writes.
    fn backup_to(&self, dest: &Path) -> Result<Snapshot, BackupError>;
}

/// What the HTTP API holds: the reads, the citizen sensors' registrations and the operator's upkeep.
pub trait ApiStore: ReadStore + CitizenStore + AdminStore {}

impl<T: ReadStore + CitizenStore + AdminStore> ApiStore for T {}

/// A whole store: what the gateway's stages hold.
pub trait Store: CommitStore + ApiStore + Outbox + SeriesLookup {}

impl<T: CommitStore + ApiStore + Outbox + SeriesLookup> Store for T {}

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

/// A stored time in milliseconds as an instant; out of chrono's range is a corrupt store.
pub(crate) fn millis(t: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(t).ok_or_else(|| StoreError::Corrupt(format!("time {t} ms is out of range")))
}
