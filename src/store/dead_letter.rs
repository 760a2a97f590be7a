//! Dead letters: messages that could not be read or decoded, kept whole with the reason.

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
