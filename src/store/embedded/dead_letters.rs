//! The embedded store's dead letters: keeping them (once per message), paging them, and replacing or removing one for a replay inside the caller's transaction.

use redb::{Database, ReadableDatabase, ReadableTable, Table, WriteTransaction};

use super::tables::{DEAD_LETTERS, DEAD_LETTER_DIGESTS, DEAD_LETTER_SEQ};
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

/// Keep the batch's letters inside the caller's transaction; returns each one's id, in order.
/// A letter whose message is kept already (the same format, topic and bytes: delivered
/// again) gets the kept letter's id and is not stored a second time.
pub(super) fn append(tx: &WriteTransaction, letters: &[DeadLetter]) -> Result<Vec<u64>, StoreError> {
    if letters.is_empty() {
        return Ok(Vec::new());
    }
    let mut table = tx.open_table(DEAD_LETTERS).map_err(engine)?;
    let mut digests = tx.open_table(DEAD_LETTER_DIGESTS).map_err(engine)?;
    let newest = table.last().map_err(engine)?.map(|(k, _)| k.value());
    let mut ids = Vec::with_capacity(letters.len());
    for letter in letters {
        let digest = letter.digest();
        if let Some(id) = kept(&table, &digests, &digest, letter)? {
            ids.push(id);
            continue;
        }
        // Replays remove letters, the newest too: ids come from a sequence, never reused.
        let id = allocate_ids(tx, newest, 1)?;
        let stored = DeadLetter { id, ..letter.clone() };
        let json = serde_json::to_vec(&stored).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        table.insert(id, json.as_slice()).map_err(engine)?;
        digests.insert(digest.as_slice(), id).map_err(engine)?;
        ids.push(id);
    }
    Ok(ids)
}

/// The id of the kept letter of `letter`'s message, if there is one.
fn kept(
    table: &impl ReadableTable<u64, &'static [u8]>,
    digests: &impl ReadableTable<&'static [u8], u64>,
    digest: &[u8; 32],
    letter: &DeadLetter,
) -> Result<Option<u64>, StoreError> {
    let Some(id) = digests.get(digest.as_slice()).map_err(engine)?.map(|v| v.value()) else { return Ok(None) };
    Ok(find(table, id)?
        .filter(|k| k.format == letter.format && k.topic == letter.topic && k.payload == letter.payload)
        .map(|_| id))
}

/// Forget the digest of `letter` (id `id`), unless it names another letter.
fn unindex(digests: &mut Table<&'static [u8], u64>, id: u64, letter: &DeadLetter) -> Result<(), StoreError> {
    let digest = letter.digest();
    let points_here = digests.get(digest.as_slice()).map_err(engine)?.is_some_and(|v| v.value() == id);
    if points_here {
        digests.remove(digest.as_slice()).map_err(engine)?;
    }
    Ok(())
}

/// Index every kept letter by its digest (a store from before the index: its first start of
/// this version); the oldest letter of a message wins. Returns how many were indexed.
pub(super) fn index_all(tx: &WriteTransaction) -> Result<u64, StoreError> {
    let table = tx.open_table(DEAD_LETTERS).map_err(engine)?;
    let mut digests = tx.open_table(DEAD_LETTER_DIGESTS).map_err(engine)?;
    let mut n = 0;
    for entry in table.iter().map_err(engine)? {
        let (k, v) = entry.map_err(engine)?;
        let digest = decode(v.value())?.digest();
        if digests.get(digest.as_slice()).map_err(engine)?.is_none() {
            digests.insert(digest.as_slice(), k.value()).map_err(engine)?;
            n += 1;
        }
    }
    Ok(n)
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
/// The digest index follows: a removed letter's message may become a letter again.
pub(super) fn replace(tx: &WriteTransaction, id: u64, letter: Option<&DeadLetter>) -> Result<(), StoreError> {
    let mut table = tx.open_table(DEAD_LETTERS).map_err(engine)?;
    let mut digests = tx.open_table(DEAD_LETTER_DIGESTS).map_err(engine)?;
    let old = match letter {
        Some(letter) => {
            let json = serde_json::to_vec(letter).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let old = table.insert(id, json.as_slice()).map_err(engine)?.map(|v| decode(v.value())).transpose()?;
            let digest = letter.digest();
            if old.as_ref().map(DeadLetter::digest) != Some(digest) {
                if let Some(old) = &old {
                    unindex(&mut digests, id, old)?;
                }
                if digests.get(digest.as_slice()).map_err(engine)?.is_none() {
                    digests.insert(digest.as_slice(), id).map_err(engine)?;
                }
            }
            return Ok(());
        }
        None => table.remove(id).map_err(engine)?.map(|v| decode(v.value())).transpose()?,
    };
    if let Some(old) = old {
        unindex(&mut digests, id, &old)?;
    }
    Ok(())
}

/// Delete these letters inside the caller's transaction; the ids of those that were there.
pub(super) fn delete(tx: &WriteTransaction, ids: &[u64]) -> Result<Vec<u64>, StoreError> {
    let mut table = tx.open_table(DEAD_LETTERS).map_err(engine)?;
    let mut digests = tx.open_table(DEAD_LETTER_DIGESTS).map_err(engine)?;
    let mut deleted = Vec::new();
    for &id in ids {
        let removed = table.remove(id).map_err(engine)?.map(|v| decode(v.value())).transpose()?;
        if let Some(old) = removed {
            unindex(&mut digests, id, &old)?;
            deleted.push(id);
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceId, QualityFlag, Quantity, Reading};
    use crate::store::{AdminStore, CommitStore, EmbeddedStore, ReadStore, ReplayOutcome, WriteBatch};
    use chrono::DateTime;

    /// A letter of a message of its own (each call a different payload).
    fn letter(reason: &str, device: Option<&str>) -> DeadLetter {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        DeadLetter {
            id: 0,
            received_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            topic: "v3/app/devices/x/up".into(),
            format: "ttn-v3".into(),
            device: device.map(str::to_owned),
            reason: reason.into(),
            payload: format!("{{\"n\": {n}}}").into_bytes(),
        }
    }

    /// The same message arriving again a minute later (the broker delivers it once more).
    fn again(l: &DeadLetter) -> DeadLetter {
        DeadLetter { received_at: l.received_at + chrono::Duration::minutes(1), ..l.clone() }
    }

    fn count(store: &EmbeddedStore) -> usize {
        store.dead_letters(0, 1000).unwrap().len()
    }

    #[test]
    fn a_message_delivered_again_is_one_letter_under_its_first_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let (a, b) = (letter("not JSON", None), letter("not JSON", None));
        let ids = store.write(&WriteBatch { dead_letters: vec![a.clone(), b.clone()], ..Default::default() }).unwrap();
        assert_eq!(ids, vec![1, 2]);
        // Again after a crash, in a batch with a new message; and twice in one batch.
        let ids = store
            .write(&WriteBatch { dead_letters: vec![again(&b), letter("new", None), again(&a)], ..Default::default() })
            .unwrap();
        assert_eq!(ids, vec![2, 3, 1]);
        let c = letter("twice", None);
        let ids = store.write(&WriteBatch { dead_letters: vec![c.clone(), again(&c)], ..Default::default() }).unwrap();
        assert_eq!(ids, vec![4, 4]);
        assert_eq!(count(&store), 4);
        // The kept letter is the first one, as received then.
        assert_eq!(store.dead_letter(1).unwrap().unwrap(), DeadLetter { id: 1, ..a.clone() });
        // Reopened: still known.
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.write(&WriteBatch { dead_letters: vec![again(&a)], ..Default::default() }).unwrap(), vec![1]);
        assert_eq!(count(&store), 4);
    }

    #[test]
    fn another_topic_format_or_payload_is_another_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let a = letter("bad", None);
        let variants = vec![
            a.clone(),
            DeadLetter { topic: format!("{}x", a.topic), ..a.clone() },
            DeadLetter { format: "chirpstack-v4".into(), ..a.clone() },
            DeadLetter { payload: [a.payload.as_slice(), b" "].concat(), ..a.clone() },
            // Lengths are part of the digest: the same bytes split differently between topic
            // and format are another message.
            DeadLetter { format: "ttn-v3v".into(), topic: "3/app/devices/x/up".into(), ..a.clone() },
        ];
        let ids = store.write(&WriteBatch { dead_letters: variants, ..Default::default() }).unwrap();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
        // The same message under another reason (a changed configuration) is still the same.
        let ids =
            store.write(&WriteBatch { dead_letters: vec![DeadLetter { reason: "other".into(), ..a }], ..Default::default() });
        assert_eq!(ids.unwrap(), vec![1]);
    }

    #[test]
    fn a_message_whose_letter_was_replayed_or_deleted_is_a_new_letter_and_one_that_failed_again_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let a = letter("unknown device", None);
        let first = store.write(&WriteBatch { dead_letters: vec![a.clone()], ..Default::default() }).unwrap()[0];
        // A replay that fails again keeps the letter: a redelivery still finds it.
        let failed = WriteBatch { dead_letters: vec![letter("still unknown", None)], ..Default::default() };
        assert!(matches!(store.commit_replay(first, failed).unwrap(), ReplayOutcome::Failed { .. }));
        assert_eq!(store.write(&WriteBatch { dead_letters: vec![again(&a)], ..Default::default() }).unwrap(), vec![first]);
        // Replayed: the message is readings now; arriving again it is a new letter.
        assert!(matches!(store.commit_replay(first, produced("a", 1)).unwrap(), ReplayOutcome::Stored { .. }));
        let second = store.write(&WriteBatch { dead_letters: vec![again(&a)], ..Default::default() }).unwrap()[0];
        assert!(second > first);
        assert_eq!(count(&store), 1);
        // Deleted by an operator: the same.
        assert_eq!(store.delete_dead_letters(&[second]).unwrap(), vec![second]);
        let third = store.write(&WriteBatch { dead_letters: vec![again(&a)], ..Default::default() }).unwrap()[0];
        assert!(third > second);
        assert_eq!(store.write(&WriteBatch { dead_letters: vec![again(&a)], ..Default::default() }).unwrap(), vec![third]);
        assert_eq!(count(&store), 1);
    }

    #[test]
    fn a_store_from_before_the_digest_index_indexes_its_letters_at_the_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (letter("a", None), letter("b", None));
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            // Stored twice by an older version, which kept no index.
            store.write(&WriteBatch { dead_letters: vec![a.clone(), b.clone()], ..Default::default() }).unwrap();
        }
        {
            let db = redb::Database::open(dir.path().join("messnetz.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            assert!(tx.delete_table(DEAD_LETTER_DIGESTS).unwrap());
            tx.commit().unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let ids = store.write(&WriteBatch { dead_letters: vec![again(&b), again(&a)], ..Default::default() }).unwrap();
        assert_eq!(ids, vec![2, 1]);
        assert_eq!(count(&store), 2);
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
                reason: Default::default(),
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
