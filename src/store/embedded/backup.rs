//! Backup and restore of the embedded store.
//!
//! A backup is a consistent snapshot taken while the gateway runs: one read transaction
//! (redb's readers see the state of one commit and never block the writer) is copied table by
//! table into a new database file, which is a store of its own. Only the process that has the
//! store open can do this (redb locks the file), so the running gateway takes the backup for
//! the command line (`POST /v1/admin/backup`); a stopped gateway's store is backed up directly.
//!
//! A restore checks the snapshot and puts it in place of the store's file while the gateway
//! is stopped, keeping the file it replaces beside it.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::tables::{
    CITIZEN_SENSORS, DEAD_LETTERS, DEAD_LETTER_DIGESTS, DEAD_LETTER_SEQ, DEVICE_DISTRICT, DEVICE_WINDOWS, EXTENTS,
    FRAME_COUNTERS, LAST_SEEN, OUTBOX, READINGS, READINGS_BY_NAME, READINGS_BY_SERIES, ROLLUPS, SERIES, SERIES_NAMES,
    WINDOW_JOURNAL,
};
use super::{readings, EmbeddedStore};
use crate::store::boundary::{engine, BackupError, Snapshot, StoreError};

/// The store's file in its directory.
pub const FILE_NAME: &str = "messnetz.redb";

/// Rows copied per write transaction of the snapshot, so its memory stays bounded.
const ROWS_PER_COMMIT: u64 = 100_000;

/// Whether a store failed to open because another process (a running gateway) holds it.
pub fn is_in_use(e: &StoreError) -> bool {
    matches!(e, StoreError::Engine(redb::Error::DatabaseAlreadyOpen))
}

/// Copy one table of the read transaction into the snapshot; its row count.
fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &redb::ReadTransaction,
    to: &Database,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let source = match from.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(engine(e)),
    };
    let mut rows = 0;
    let mut entries = source.iter().map_err(engine)?.peekable();
    loop {
        let tx = to.begin_write().map_err(engine)?;
        {
            let mut target = tx.open_table(def).map_err(engine)?;
            for entry in entries.by_ref().take(ROWS_PER_COMMIT as usize) {
                let (k, v) = entry.map_err(engine)?;
                target.insert(k.value(), v.value()).map_err(engine)?;
                rows += 1;
            }
        }
        tx.commit().map_err(engine)?;
        if entries.peek().is_none() {
            return Ok(rows);
        }
    }
}

/// Copy every table of `from` into the new database `to`, or fail on a table this version
/// does not know (a backup must not leave anything out).
fn copy_all(from: &redb::ReadTransaction, to: &Database) -> Result<Vec<(String, u64)>, StoreError> {
    let known = [
        READINGS.name(),
        READINGS_BY_SERIES.name(),
        READINGS_BY_NAME.name(),
        EXTENTS.name(),
        SERIES.name(),
        SERIES_NAMES.name(),
        LAST_SEEN.name(),
        DEAD_LETTERS.name(),
        DEAD_LETTER_SEQ.name(),
        DEAD_LETTER_DIGESTS.name(),
        DEVICE_WINDOWS.name(),
        ROLLUPS.name(),
        DEVICE_DISTRICT.name(),
        WINDOW_JOURNAL.name(),
        FRAME_COUNTERS.name(),
        OUTBOX.name(),
        CITIZEN_SENSORS.name(),
    ];
    for table in from.list_tables().map_err(engine)? {
        if !known.contains(&table.name()) {
            return Err(StoreError::Corrupt(format!("table {:?} is unknown to this version's backup", table.name())));
        }
    }
    // Readings are counted as "readings" whichever table holds them (a snapshot of a store
    // from before rows per uplink or series numbers has an older one; opening it as a store
    // moves them), a row per uplink counted by its readings.
    copy(from, to, READINGS)?;
    let rows = match from.open_table(READINGS) {
        Ok(t) => readings::count(&t)?,
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(engine(e)),
    };
    let readings = rows + copy(from, to, READINGS_BY_SERIES)? + copy(from, to, READINGS_BY_NAME)?;
    Ok(vec![
        ("readings".to_owned(), readings),
        (EXTENTS.name().to_owned(), copy(from, to, EXTENTS)?),
        (SERIES.name().to_owned(), copy(from, to, SERIES)?),
        (SERIES_NAMES.name().to_owned(), copy(from, to, SERIES_NAMES)?),
        (LAST_SEEN.name().to_owned(), copy(from, to, LAST_SEEN)?),
        (DEAD_LETTERS.name().to_owned(), copy(from, to, DEAD_LETTERS)?),
        (DEAD_LETTER_SEQ.name().to_owned(), copy(from, to, DEAD_LETTER_SEQ)?),
        (DEAD_LETTER_DIGESTS.name().to_owned(), copy(from, to, DEAD_LETTER_DIGESTS)?),
        (DEVICE_WINDOWS.name().to_owned(), copy(from, to, DEVICE_WINDOWS)?),
        (ROLLUPS.name().to_owned(), copy(from, to, ROLLUPS)?),
        (DEVICE_DISTRICT.name().to_owned(), copy(from, to, DEVICE_DISTRICT)?),
        (WINDOW_JOURNAL.name().to_owned(), copy(from, to, WINDOW_JOURNAL)?),
        (FRAME_COUNTERS.name().to_owned(), copy(from, to, FRAME_COUNTERS)?),
        (OUTBOX.name().to_owned(), copy(from, to, OUTBOX)?),
        (CITIZEN_SENSORS.name().to_owned(), copy(from, to, CITIZEN_SENSORS)?),
    ])
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.to_owned(), source }
}

impl EmbeddedStore {
    /// Write a consistent snapshot of the store to `dest` (replaced if it exists): written
    /// beside it under a temporary name, synced, then renamed into place.
    pub(super) fn snapshot_to(&self, dest: &Path) -> Result<Snapshot, BackupError> {
        let tmp = dest.with_extension("partial");
        let _ = std::fs::remove_file(&tmp);
        let tables = {
            let snapshot = Database::builder().create(&tmp).map_err(|e| BackupError::Store(engine(e)))?;
            let copied = self.with_db(|db| {
                let tx = db.begin_read().map_err(engine)?;
                copy_all(&tx, &snapshot)
            });
            match copied {
                Ok(t) => t,
                Err(e) => {
                    drop(snapshot);
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
            }
        };
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, dest).map_err(io(dest))?;
        let bytes = std::fs::metadata(dest).map_err(io(dest))?.len();
        Ok(Snapshot { tables, bytes })
    }
}

/// Check that `file` is a messnetz store snapshot: a redb file with the readings table and
/// no table this version does not know. Its row counts.
pub fn inspect(file: &Path) -> Result<Snapshot, BackupError> {
    let not_a_store = |why: String| BackupError::NotAStore(file.to_owned(), why);
    if !file.is_file() {
        return Err(not_a_store("no such file".into()));
    }
    let db = Database::open(file).map_err(|e| not_a_store(e.to_string()))?;
    let tx = db.begin_read().map_err(|e| not_a_store(e.to_string()))?;
    let names: Vec<String> = tx.list_tables().map_err(|e| not_a_store(e.to_string()))?.map(|t| t.name().to_owned()).collect();
    if !names.iter().any(|n| [READINGS.name(), READINGS_BY_SERIES.name(), READINGS_BY_NAME.name()].contains(&n.as_str())) {
        return Err(not_a_store("it has no readings table".into()));
    }
    // Counting by copying into memory would be wasteful: count the tables this version knows.
    let scratch = Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .map_err(|e| BackupError::Store(engine(e)))?;
    let tables = copy_all(&tx, &scratch).map_err(|e| not_a_store(e.to_string()))?;
    let bytes = std::fs::metadata(file).map_err(io(file))?.len();
    Ok(Snapshot { tables, bytes })
}

/// Put the snapshot `file` in place of the store in `dir` (the gateway stopped). The store's
/// current file is kept as `messnetz.redb.before-restore`. Returns the snapshot's row counts.
pub fn restore(file: &Path, dir: &Path) -> Result<Snapshot, BackupError> {
    let snapshot = inspect(file)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let live = dir.join(FILE_NAME);
    if live.exists() {
        // Refuse while a gateway holds the store: it would go on writing to the old file.
        match Database::open(&live) {
            Ok(db) => drop(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(BackupError::InUse(dir.to_owned())),
            Err(_) => {} // a broken store is what a restore is for
        }
    }
    let incoming = dir.join(format!("{FILE_NAME}.restoring"));
    std::fs::copy(file, &incoming).map_err(io(&incoming))?;
    std::fs::File::open(&incoming).and_then(|f| f.sync_all()).map_err(io(&incoming))?;
    if live.exists() {
        let kept = dir.join(format!("{FILE_NAME}.before-restore"));
        std::fs::rename(&live, &kept).map_err(io(&kept))?;
    }
    std::fs::rename(&incoming, &live).map_err(io(&live))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceId, QualityFlag, Quantity, Reading};
    use crate::store::{AdminStore, CommitStore, WriteBatch};

    fn batch(from: i64, n: i64) -> WriteBatch {
        let readings = (from..from + n)
            .map(|i| Reading {
                device: DeviceId::parse("a").unwrap(),
                quantity: Quantity::by_name("air_temperature").unwrap(),
                value: i as f64,
                time: chrono::DateTime::from_timestamp(1_700_000_000 + i * 60, 0).unwrap(),
                flag: QualityFlag::Good,
                reason: Default::default(),
            })
            .collect();
        WriteBatch { readings, ..Default::default() }
    }

    #[test]
    fn a_snapshot_has_every_table_and_restores_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("data")).unwrap();
        store.write(&batch(0, 500)).unwrap();
        let file = dir.path().join("backup.redb");
        let taken = store.backup_to(&file).unwrap();
        assert_eq!(taken.rows("readings"), 500);
        // Written after the snapshot: not in it.
        store.write(&batch(500, 10)).unwrap();
        assert_eq!(inspect(&file).unwrap().tables, taken.tables);

        // Every table the live store has is in the snapshot.
        let db = Database::open(&file).unwrap();
        let in_snapshot: Vec<String> = db.begin_read().unwrap().list_tables().unwrap().map(|t| t.name().to_owned()).collect();
        drop(db);
        let live: Vec<String> = store
            .with_db(|db| {
                Ok(db.begin_read().map_err(engine)?.list_tables().map_err(engine)?.map(|t| t.name().to_owned()).collect())
            })
            .unwrap();
        for t in &live {
            assert!(in_snapshot.contains(t), "{t} missing from the snapshot: {in_snapshot:?}");
        }

        // Restoring while the store is open is refused; after closing, it takes.
        assert!(matches!(restore(&file, &dir.path().join("data")), Err(BackupError::InUse(_))));
        drop(store);
        restore(&file, &dir.path().join("data")).unwrap();
        assert!(dir.path().join("data/messnetz.redb.before-restore").exists());
        let back = EmbeddedStore::open(&dir.path().join("data")).unwrap();
        assert_eq!(back.count_readings().unwrap(), 500);
    }

    #[test]
    fn a_file_that_is_no_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.redb");
        std::fs::write(&junk, b"not a database").unwrap();
        assert!(matches!(inspect(&junk), Err(BackupError::NotAStore(..))));
        assert!(matches!(restore(&dir.path().join("missing"), dir.path()), Err(BackupError::NotAStore(..))));
        assert!(!dir.path().join(FILE_NAME).exists());
    }
}
