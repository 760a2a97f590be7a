//! Dead letters: messages that could not be turned into readings, kept whole with the reason, and what replaying one came to.
//!
//! Which device and format a letter has now, and which letters a replay takes, is the replay
//! service's business ([`crate::replay`]); a store keeps the letters and commits a replay's
//! result ([`super::Commit::commit_replay`]) in one transaction with the letter's removal, so
//! a replay lands exactly once, even if it is repeated, run twice at the same time, or cut
//! short by a crash. A message that fails again stays a dead letter, under its id, with the
//! new reason.
//!
//! One message is one letter: a message that arrives again while its letter is kept (the
//! broker delivers it once more because the gateway died after the commit and before the
//! acknowledgement, or a second replica subscribed to the same topic) is not stored twice.
//! "Again" means the same format, topic and bytes ([`DeadLetter::digest`]); the reception time
//! and the reason do not count. Once its letter was replayed or deleted, a message that
//! arrives again is a new letter.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

impl DeadLetter {
    /// What makes two letters the same message: SHA-256 over the format, the topic and the
    /// payload, each of the first two preceded by its length in bytes (8 bytes, big-endian),
    /// so no two different triples run together into the same input. PostgreSQL computes the
    /// same digest for letters stored before it was kept (migration 3).
    pub fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [self.format.as_bytes(), self.topic.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(&self.payload);
        let mut out = [0u8; 32];
        out.copy_from_slice(&h.finalize());
        out
    }
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
