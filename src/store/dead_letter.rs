//! Dead letters: messages that could not be read or decoded, kept whole with the reason; paging through them and committing what a replay produced.
//!
//! Which device and format a letter has now, and which letters a replay takes, is the replay
//! service's business ([`crate::replay`]); the store only keeps the letters.
//!
//! A replay runs the stored message through the ingest path again
//! ([`crate::ingest::Ingest::replay`]) and commits with [`EmbeddedStore::commit_replay`]: the
//! letter is removed in the same transaction as the readings it produced, so a replay lands
//! exactly once, even if it is repeated, run twice at the same time, or cut short by a crash.
//! A message that fails again stays a dead letter, under its id, with the new reason.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::tables::{DEAD_LETTERS, DEAD_LETTER_SEQ};
use super::{engine, EmbeddedStore, StoreError, WriteBatch};

/// A message the gateway could not turn into readings. Kept with its raw bytes so it can be
/// inspected and replayed once the cause (a profile, a device entry) is fixed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Sequence number assigned by the store; 0 until stored.
    #[serde(default)]
    pub id: u64,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
    /// MQTT topic it arrived on.
    pub topic: String,
    /// Message format of the subscription (`ttn-v3`, ...).
    pub format: String,
    /// The device, when it could be identified.
    pub device: Option<String>,
    /// What went wrong, for an operator.
    pub reason: String,
    /// The message exactly as received.
    #[serde(with = "base64_bytes")]
    pub payload: Vec<u8>,
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// What replaying one dead letter came to.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayOutcome {
    /// Decoded and stored; the dead letter is gone.
    Stored { device: String, readings: usize },
    /// Failed again; the dead letter stays, with this reason.
    Failed { reason: String },
    /// Not something the ingest path can take (an InfluxDB rejection, an unknown format);
    /// the dead letter is left as it was.
    Refused { why: String },
    /// No such dead letter (any more): it was replayed already, or never existed.
    Gone,
}

impl ReplayOutcome {
    /// Short name for output and the audit log.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReplayOutcome::Stored { .. } => "stored",
            ReplayOutcome::Failed { .. } => "failed",
            ReplayOutcome::Refused { .. } => "refused",
            ReplayOutcome::Gone => "gone",
        }
    }
}

impl EmbeddedStore {
    /// One dead letter by id.
    pub fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let table = tx.open_table(DEAD_LETTERS).map_err(engine)?;
            match table.get(id).map_err(engine)? {
                Some(v) => Ok(Some(decode(v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Dead letters with an id above `after` that `keep` accepts, oldest first, at most
    /// `limit`, looking at no more than `max_scan` letters. The second value is where to go
    /// on from (`after` of the next page) when there may be more.
    pub fn dead_letters_matching(
        &self,
        after: u64,
        limit: usize,
        max_scan: usize,
        keep: &mut dyn FnMut(&DeadLetter) -> bool,
    ) -> Result<(Vec<DeadLetter>, Option<u64>), StoreError> {
        self.with_db(|db| {
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
        })
    }

    /// Commit what replaying dead letter `id` produced (`batch`, from the ingest path) in
    /// one transaction: readings → the letter is removed; a new dead letter → it replaces the
    /// old one under the same id (new reason); nothing at all → the letter stays, saying so.
    /// If the letter is gone (replayed meanwhile), nothing is written: [`ReplayOutcome::Gone`].
    pub fn commit_replay(&self, id: u64, mut batch: WriteBatch) -> Result<ReplayOutcome, StoreError> {
        let outcome = self.with_write(|db| {
            let tx = db.begin_write().map_err(engine)?;
            let old = {
                let table = tx.open_table(DEAD_LETTERS).map_err(engine)?;
                let old = table.get(id).map_err(engine)?.map(|v| decode(v.value())).transpose()?;
                old
            };
            let Some(old) = old else {
                tx.abort().map_err(engine)?;
                return Ok((ReplayOutcome::Gone, false));
            };
            let again = batch.dead_letters.pop();
            // The letter keeps its id and reception time; device and reason are the new ones.
            let keep = |reason: String, device: Option<String>| DeadLetter {
                reason,
                device: device.or(old.device.clone()),
                ..old.clone()
            };
            let (outcome, replacement) = match again {
                Some(letter) => {
                    (ReplayOutcome::Failed { reason: letter.reason.clone() }, Some(keep(letter.reason, letter.device)))
                }
                None if batch.seen.is_empty() => {
                    let reason =
                        "replay: the message was taken without readings (a LoRaWAN duplicate, join or MAC-only frame)".to_owned();
                    (ReplayOutcome::Failed { reason: reason.clone() }, Some(keep(reason, None)))
                }
                None => {
                    let device = batch.seen.first().map(|(d, _)| d.to_string()).unwrap_or_default();
                    (ReplayOutcome::Stored { device, readings: batch.readings.len() }, None)
                }
            };
            self.write_in(&tx, &batch)?;
            {
                let mut table = tx.open_table(DEAD_LETTERS).map_err(engine)?;
                match replacement {
                    Some(letter) => {
                        let json = serde_json::to_vec(&letter).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        table.insert(id, json.as_slice()).map_err(engine)?;
                    }
                    None => {
                        table.remove(id).map_err(engine)?;
                    }
                }
            }
            tx.commit().map_err(engine)?;
            Ok((outcome, true))
        })?;
        self.districts_committed(&batch);
        Ok(outcome)
    }
}

impl EmbeddedStore {
    /// Delete these dead letters in one transaction; the ids of those that were there. Their
    /// ids are never given again (see [`allocate_ids`]).
    pub fn delete_dead_letters(&self, ids: &[u64]) -> Result<Vec<u64>, StoreError> {
        self.with_write(|db| {
            let tx = db.begin_write().map_err(engine)?;
            let mut deleted = Vec::new();
            {
                let mut table = tx.open_table(DEAD_LETTERS).map_err(engine)?;
                for &id in ids {
                    if table.remove(id).map_err(engine)?.is_some() {
                        deleted.push(id);
                    }
                }
            }
            if deleted.is_empty() {
                tx.abort().map_err(engine)?;
                return Ok((deleted, false));
            }
            tx.commit().map_err(engine)?;
            Ok((deleted, true))
        })
    }
}

/// The first of `n` new dead letter ids: above every id given before, even one whose letter
/// a replay has removed since (an id names one message for good: in the audit log, and for
/// a repeated replay request), and above the newest stored (stores from before the sequence).
pub(super) fn allocate_ids(tx: &redb::WriteTransaction, newest_stored: Option<u64>, n: usize) -> Result<u64, StoreError> {
    let mut seq = tx.open_table(DEAD_LETTER_SEQ).map_err(engine)?;
    let given = seq.get("last").map_err(engine)?.map(|v| v.value()).unwrap_or(0);
    let first = given.max(newest_stored.unwrap_or(0)) + 1;
    seq.insert("last", first + n as u64 - 1).map_err(engine)?;
    Ok(first)
}

fn decode(bytes: &[u8]) -> Result<DeadLetter, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("dead letter: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceId, QualityFlag, Quantity, Reading};

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
    fn deleted_letters_are_gone_and_their_ids_stay_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let ids = store
            .write(&WriteBatch {
                dead_letters: vec![letter("a", None), letter("b", None), letter("c", None)],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(store.delete_dead_letters(&[ids[0], ids[2], 99]).unwrap(), vec![ids[0], ids[2]]);
        assert_eq!(store.delete_dead_letters(&[ids[0]]).unwrap(), Vec::<u64>::new(), "a second delete finds nothing");
        assert_eq!(store.dead_letters(0, 10).unwrap().iter().map(|l| l.id).collect::<Vec<_>>(), vec![ids[1]]);
        let next = store.write(&WriteBatch { dead_letters: vec![letter("d", None)], ..Default::default() }).unwrap();
        assert_eq!(next, vec![4]);
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
