//! What one batch of messages produced, written by a store in one transaction; and how a dead-letter replay's batch settles the letter.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::dead_letter::{DeadLetter, ReplayOutcome};
use crate::model::{DeviceId, Reading};
use crate::sources::lorawan::FrameCounter;

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
    /// [`super::StoreError::FrameCounterMoved`]; a counter without an entry here is written as it is.
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

impl WriteBatch {
    /// What replaying `old` came to, given what the ingest path produced for it (this batch):
    /// readings → stored, and the letter goes; a new dead letter (taken out of the batch) →
    /// failed, and the letter stays under its id and reception time with the new device and
    /// reason; nothing at all → failed, saying so. The second value is the letter to keep.
    /// Every store commits the result in one transaction with the batch.
    pub fn settle_replay(&mut self, old: &DeadLetter) -> (ReplayOutcome, Option<DeadLetter>) {
        let keep =
            |reason: String, device: Option<String>| DeadLetter { reason, device: device.or(old.device.clone()), ..old.clone() };
        match self.dead_letters.pop() {
            Some(letter) => (ReplayOutcome::Failed { reason: letter.reason.clone() }, Some(keep(letter.reason, letter.device))),
            None if self.seen.is_empty() => {
                let reason =
                    "replay: the message was taken without readings (a LoRaWAN duplicate, join or MAC-only frame)".to_owned();
                (ReplayOutcome::Failed { reason: reason.clone() }, Some(keep(reason, None)))
            }
            None => {
                let device = self.seen.first().map(|(d, _)| d.to_string()).unwrap_or_default();
                (ReplayOutcome::Stored { device, readings: self.readings.len() }, None)
            }
        }
    }
}
