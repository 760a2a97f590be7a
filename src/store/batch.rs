//! What one batch of messages produced, written by a store in one transaction; and how a dead-letter replay's batch settles the letter.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;

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
    /// Looked up for every reading: keyed by the gateway's own device ids, hashed with FxHash.
    pub districts: FxHashMap<DeviceId, String>,
    /// Line-protocol lines for InfluxDB, spooled in the same transaction (empty without `[influxdb]`).
    pub outbox: Lines,
    /// LoRaWAN frame counters (by DevAddr) moved forward by the batch's raw frames; stored in the
    /// same transaction, so a counter never runs ahead of (or behind) the readings it admitted.
    pub frame_counters: HashMap<u32, FrameCounter>,
    /// The stored state each of `frame_counters` was computed from (`None`: no counter was
    /// stored yet), as the batch read it. A store shared by several gateways writes a counter
    /// only if it is still in that state, and otherwise refuses the whole batch with
    /// [`super::StoreError::FrameCounterMoved`]; a counter without an entry here is written as it is.
    pub frame_counter_bases: HashMap<u32, Option<FrameCounter>>,
}

/// Lines of text joined by `\n` in one buffer, each written straight into it. InfluxDB line
/// protocol has no newline inside a line, so the spool stores a batch's lines as this one text,
/// and a line costs no allocation of its own on the ingest path.
///
/// With a hash of every line's point ([`Self::push_point`]) a store may keep the lines as
/// gzip members ([`crate::store::spooled`]): the InfluxDB writer sends those as they are and
/// still knows which lines share a point.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lines {
    text: String,
    /// Where each line ends in `text`.
    ends: Vec<usize>,
    points: Vec<u32>,
}

impl Lines {
    /// Append one line, written by `write` into the buffer (what it returns is passed on); it
    /// must not write a `\n`.
    pub fn push_with<R>(&mut self, write: impl FnOnce(&mut String) -> R) -> R {
        if !self.ends.is_empty() {
            self.text.push('\n');
        }
        let out = write(&mut self.text);
        self.ends.push(self.text.len());
        out
    }

    pub fn push(&mut self, line: &str) {
        self.push_with(|text| text.push_str(line));
    }

    /// How many lines.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.points.clear();
    }

    /// The hash of the last line's point (its series and time): given for every line, it lets
    /// a store pack them.
    pub fn push_point(&mut self, hash: u32) {
        self.points.push(hash);
    }

    /// The hashes of the lines' points, if every line has one.
    pub fn points(&self) -> Option<&[u32]> {
        (!self.is_empty() && self.points.len() == self.len()).then_some(self.points.as_slice())
    }

    /// The last line.
    pub fn last(&self) -> Option<&str> {
        (!self.is_empty()).then(|| self.joined(self.len() - 1..self.len()))
    }

    /// Lines `range` joined by `\n`, without a trailing one.
    pub fn joined(&self, range: std::ops::Range<usize>) -> &str {
        if range.is_empty() {
            return "";
        }
        let from = if range.start == 0 { 0 } else { self.ends[range.start - 1] + 1 };
        &self.text[from..self.ends[range.end - 1]]
    }

    /// The lines joined by `\n`, without a trailing one.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The lines, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.text.split('\n').take(self.len())
    }
}

impl<S: AsRef<str>> Extend<S> for Lines {
    fn extend<I: IntoIterator<Item = S>>(&mut self, lines: I) {
        for line in lines {
            self.push(line.as_ref());
        }
    }
}

impl<S: AsRef<str>> FromIterator<S> for Lines {
    fn from_iter<I: IntoIterator<Item = S>>(lines: I) -> Self {
        let mut out = Lines::default();
        out.extend(lines);
        out
    }
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

#[cfg(test)]
mod tests {
    use super::Lines;

    #[test]
    fn lines_are_joined_by_newlines_and_read_back_one_by_one() {
        let mut lines = Lines::default();
        assert!(lines.is_empty() && lines.iter().next().is_none());
        lines.push("a b=1 5");
        lines.push_with(|text| text.push_str("c d=2 6"));
        lines.push("");
        assert_eq!((lines.len(), lines.text()), (3, "a b=1 5\nc d=2 6\n"));
        assert_eq!(lines.iter().collect::<Vec<_>>(), vec!["a b=1 5", "c d=2 6", ""]);
        assert_eq!((lines.joined(0..2), lines.joined(1..3), lines.joined(2..2)), ("a b=1 5\nc d=2 6", "c d=2 6\n", ""));
        assert_eq!((lines.joined(2..3), lines.last()), ("", Some("")));
        assert_eq!(lines.push_with(|text| text.len()), 17, "what the writer returns is passed on");
        assert_eq!(lines.last(), Some(""));
        lines.clear();
        assert_eq!((lines.len(), lines.text(), lines.last()), (0, "", None));
        let collected: Lines = ["x", "y"].into_iter().collect();
        assert_eq!(collected.text(), "x\ny");
    }
}
