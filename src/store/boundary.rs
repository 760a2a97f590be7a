//! The storage boundary's traits: what the ingest stage commits ([`CommitStore`]), what the API, quality and the catalogue read ([`ReadStore`]), the InfluxDB spool's table ([`Outbox`]), and the store's error.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::batch::WriteBatch;
use super::dead_letter::{DeadLetter, ReplayOutcome};
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

/// Lines read from the spool, oldest first, each with its key: one buffer of the lines joined
/// by `\n`, so reading a request's worth costs no allocation per line and a run of them is
/// one slice of it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Spooled {
    text: Vec<u8>,
    /// Each line's key and the offset just past its end in `text`.
    lines: Vec<(u64, usize)>,
}

impl Spooled {
    /// Add a line (without a `\n`) under its key.
    pub fn push(&mut self, key: u64, line: &[u8]) {
        self.push_joined(key, line);
    }

    /// Add `lines`, a run of lines joined by `\n`, keyed `first` onwards: one copy for all.
    pub fn push_joined(&mut self, first: u64, lines: &[u8]) {
        if !self.lines.is_empty() {
            self.text.push(b'\n');
        }
        let start = self.text.len();
        self.text.extend_from_slice(lines);
        let ends = memchr::memchr_iter(b'\n', lines).map(|i| start + i).chain(std::iter::once(self.text.len()));
        self.lines.extend((first..).zip(ends));
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The `i`th line's key.
    pub fn key(&self, i: usize) -> u64 {
        self.lines[i].0
    }

    /// Where the `i`th line starts in `text`.
    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.lines[i - 1].1 + 1
        }
    }

    /// The `i`th line.
    pub fn line(&self, i: usize) -> &[u8] {
        &self.text[self.start(i)..self.lines[i].1]
    }

    /// The lines in `range` joined by `\n` (empty for an empty range).
    pub fn joined(&self, range: std::ops::Range<usize>) -> &[u8] {
        if range.is_empty() {
            return &[];
        }
        &self.text[self.start(range.start)..self.lines[range.end - 1].1]
    }

    /// The keys of the lines in `range`.
    pub fn keys(&self, range: std::ops::Range<usize>) -> Vec<u64> {
        self.lines[range].iter().map(|(k, _)| *k).collect()
    }

    /// Every line with its key, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        (0..self.len()).map(|i| (self.key(i), self.line(i)))
    }

    /// The first `limit` of these lines whose keys are not in `skip` (sorted ascending).
    pub fn without(&self, skip: &[u64], limit: usize) -> Spooled {
        let mut out = Spooled::default();
        for (key, line) in self.iter().filter(|(key, _)| skip.binary_search(key).is_err()).take(limit) {
            out.push(key, line);
        }
        out
    }
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

#[cfg(test)]
mod tests {
    use super::Spooled;

    #[test]
    fn spooled_lines_keep_their_keys_and_runs_of_them_are_one_slice() {
        let mut s = Spooled::default();
        assert!(s.is_empty());
        s.push_joined(7, b"a x=1 1\nb x=2 2");
        s.push(12, b"c x=3 3");
        s.push_joined(13, b"d x=4 4");
        assert_eq!(s.len(), 4);
        assert_eq!(s.keys(0..4), vec![7, 8, 12, 13]);
        assert_eq!(s.line(0), b"a x=1 1");
        assert_eq!(s.line(1), b"b x=2 2");
        assert_eq!(s.line(3), b"d x=4 4");
        assert_eq!(s.joined(1..3), b"b x=2 2\nc x=3 3");
        assert_eq!(s.joined(0..4), b"a x=1 1\nb x=2 2\nc x=3 3\nd x=4 4");
        assert_eq!(s.joined(2..2), b"");
        assert_eq!(s.iter().map(|(k, _)| k).collect::<Vec<_>>(), vec![7, 8, 12, 13]);
    }

    #[test]
    fn lines_without_the_ones_in_flight_keep_their_keys_up_to_the_limit() {
        let mut s = Spooled::default();
        s.push_joined(1, b"a\nb\nc\nd");
        s.push_joined(9, b"e\nf");
        let lines = |s: &Spooled| s.iter().map(|(k, l)| (k, String::from_utf8(l.to_vec()).unwrap())).collect::<Vec<_>>();
        let all = lines(&s);
        assert_eq!(lines(&s.without(&[], 10)), all);
        // The batch in flight is the head: what follows it, as many as the limit allows.
        assert_eq!(lines(&s.without(&[1, 2], 3)), all[2..5]);
        // Keys skipped anywhere.
        let rest = s.without(&[2, 4, 10], 10);
        assert_eq!(lines(&rest), vec![all[0].clone(), all[2].clone(), all[4].clone()]);
        assert_eq!(rest.joined(0..3), b"a\nc\ne");
        assert!(s.without(&[1, 2, 3, 4, 9, 10], 10).is_empty());
        assert!(s.without(&[], 0).is_empty());
    }
}
