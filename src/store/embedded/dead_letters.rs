//! The embedded store's dead letters: keeping and paging them, and replacing or removing one for a replay inside the caller's transaction.

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::tables::{DEAD_LETTERS, DEAD_LETTER_SEQ};
use crate::store::boundary::{engine, StoreError};
use crate::store::dead_letter::DeadLetter;

/// The first of `n` new dead letter ids: above every id given before, even one whose letter
/// a replay has removed since (an id names one message for good: in the audit log, and for
/// a repeated replay request), and above the newest stored (stores from before the sequence).
pub(super) fn allocate_ids(tx: &WriteTransaction, newest_stored: Option<u64>, n: usize) -> Result<u64, StoreError> {
    let mut seq = tx.open_table(DEAD_LETTER_SEQ).map_err(engine)?;
    let given = seq.get("last").map_err(engine)?.map(|v| v.value()).unwrap_or(0);
    let first = given.max(newest_stored.unwrap_or(0)) + 1;
    seq.insert("last", first + n as u64 - 1).map_err(engine)?;
    Ok(first)
}

fn decode(bytes: &[u8]) -> Result<DeadLetter, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("dead letter: {e}")))
}

fn find(table: &impl ReadableTable<u64, &'static [u8]>, id: u64) -> Result<Option<DeadLetter>, StoreError> {
    table.get(id).map_err(engine)?.map(|v| decode(v.value())).transpose()
}

/// One dead letter by id.
pub(super) fn get(db: &Database, id: u64) -> Result<Option<DeadLetter>, StoreError> {
    let tx = db.begin_read().map_err(engine)?;
    find(&tx.open_table(DEAD_LETTERS).map_err(engine)?, id)
}

/// One dead letter by id, inside a write transaction (a replay's).
pub(super) fn get_in(tx: &WriteTransaction, id: u64) -> Result<Option<DeadLetter>, StoreError> {
    find(&tx.open_table(DEAD_LETTERS).map_err(engine)?, id)
}

/// Dead letters with an id above `after` that `keep` accepts, oldest first, at most
/// `limit`, looking at no more than `max_scan` letters. The second value is where to go on
/// from (`after` of the next page) when there may be more.
pub(super) fn scan(
    db: &Database,
    after: u64,
    limit: usize,
    max_scan: usize,
    keep: &mut dyn FnMut(&DeadLetter) -> bool,
) -> Result<(Vec<DeadLetter>, Option<u64>), StoreError> {
    let tx = db.begin_read().map_err(engine)?;
    let table = tx.open_table(DEAD_LETTERS).map_err(engine)?;
    let mut out = Vec::new();
    let mut last = None;
    let mut range = table.range(after.saturating_add(1)..).map_err(engine)?;
    for _ in 0..max_scan {
        if out.len() >= limit {
            break;
        }
        let Some(entry) = range.next() else { return Ok((out, None)) };
        let (k, v) = entry.map_err(engine)?;
        last = Some(k.value());
        let letter = decode(v.value())?;
        if keep(&letter) {
            out.push(letter);
        }
    }
    let more = range.next().is_some();
    Ok((out, if more { last } else { None }))
}

/// Put `letter` in place of letter `id`, or remove it (`None`), inside the caller's transaction.
pub(super) fn replace(tx: &WriteTransaction, id: u64, letter: Option<&DeadLetter>) -> Result<(), StoreError> {
    let mut table = tx.open_table(DEAD_LETTERS).map_err(engine)?;
    match letter {
        Some(letter) => {
            let json = serde_json::to_vec(letter).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            table.insert(id, json.as_slice()).map_err(engine)?;
        }
        None => {
            table.remove(id).map_err(engine)?;
        }
    }
    Ok(())
}

/// Delete these letters inside the caller's transaction; the ids of those that were there.
pub(super) fn delete(tx: &WriteTransaction, ids: &[u64]) -> Result<Vec<u64>, StoreError> {
    let mut table = tx.open_table(DEAD_LETTERS).map_err(engine)?;
    let mut deleted = Vec::new();
    for &id in ids {
        if table.remove(id).map_err(engine)?.is_some() {
            deleted.push(id);
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceId, QualityFlag, Quantity, Reading};
    use crate::store::{CommitStore, EmbeddedStore, ReadStore, ReplayOutcome, WriteBatch};
    use chrono::DateTime;

    fn letter(reason: &str, device: Option<&str>) -> DeadLetter {
        DeadLetter {
            id: 0,
            received_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            topic: "v3/app/devices/x/up".into(),
            format: "ttn-v3".into(),
            device: device.map(str::to_owned),
            reason: reason.into(),
            payload: b"{}".to_vec(),
        }
    }

    fn produced(device: &str, n: usize) -> WriteBatch {
        let id = DeviceId::parse(device).unwrap();
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut batch = WriteBatch::default();
        for (i, q) in Quantity::all().take(n).enumerate() {
            batch.readings.push(Reading {
                device: id.clone(),
                quantity: q,
                value: i as f64,
                time: t,
                flag: QualityFlag::Good,
                reason: String::new(),
            });
        }
        batch.seen.push((id, t));
        batch
    }

    #[test]
    fn a_replay_lands_once_and_removes_the_letter_in_the_same_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let ids = store.write(&WriteBatch { dead_letters: vec![letter("unknown device", None)], ..Default::default() }).unwrap();
        let outcome = store.commit_replay(ids[0], produced("a", 3)).unwrap();
        assert_eq!(outcome, ReplayOutcome::Stored { device: "a".into(), readings: 3 });
        assert_eq!(store.count_readings().unwrap(), 3);
        assert!(store.dead_letter(ids[0]).unwrap().is_none());
        // Again (a repeated request, a second operator): nothing is written.
        assert_eq!(store.commit_replay(ids[0], produced("b", 2)).unwrap(), ReplayOutcome::Gone);
        assert_eq!(store.count_readings().unwrap(), 3);
    }

    #[test]
    fn ids_of_replayed_letters_are_never_given_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let ids =
            store.write(&WriteBatch { dead_letters: vec![letter("a", None), letter("b", None)], ..Default::default() }).unwrap();
        assert_eq!(
            store.commit_replay(ids[1], produced("a", 1)).unwrap(),
            ReplayOutcome::Stored { device: "a".into(), readings: 1 }
        );
        let next = store.write(&WriteBatch { dead_letters: vec![letter("c", None)], ..Default::default() }).unwrap();
        assert_eq!(next, vec![3]);
        assert_eq!(store.commit_replay(ids[1], produced("a", 1)).unwrap(), ReplayOutcome::Gone);
    }

    #[test]
    fn a_replay_that_fails_again_keeps_the_letter_with_the_new_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let ids = store
            .write(&WriteBatch {
                dead_letters: vec![letter("unknown device", None), letter("other", None)],
                ..Default::default()
            })
            .unwrap();
        let failed = WriteBatch { dead_letters: vec![letter("profile p: too short", Some("a"))], ..Default::default() };
        let outcome = store.commit_replay(ids[0], failed).unwrap();
        assert_eq!(outcome, ReplayOutcome::Failed { reason: "profile p: too short".into() });
        let kept = store.dead_letter(ids[0]).unwrap().unwrap();
        assert_eq!((kept.id, kept.reason.as_str(), kept.device.as_deref()), (ids[0], "profile p: too short", Some("a")));
        assert_eq!(kept.received_at, letter("", None).received_at);
        // No new letter was added.
        assert_eq!(store.dead_letters(0, 10).unwrap().len(), 2);
    }

    #[test]
    fn letters_are_found_by_reason_and_paged() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let letters: Vec<DeadLetter> =
            (0..5).map(|i| letter(if i % 2 == 0 { "Unknown device" } else { "profile" }, None)).collect();
        store.write(&WriteBatch { dead_letters: letters, ..Default::default() }).unwrap();
        let mut unknown = |l: &DeadLetter| l.reason.to_lowercase().contains("unknown");
        let (page, next) = store.dead_letters_matching(0, 2, 1000, &mut unknown).unwrap();
        assert_eq!(page.iter().map(|l| l.id).collect::<Vec<_>>(), vec![1, 3]);
        let (rest, end) = store.dead_letters_matching(next.unwrap(), 2, 1000, &mut unknown).unwrap();
        assert_eq!((rest.iter().map(|l| l.id).collect::<Vec<_>>(), end), (vec![5], None));
    }
}
