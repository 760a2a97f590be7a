//! Sources: the MQTT connection and one parser per message format, each turning a message into an [`Uplink`].

pub mod chirpstack;
pub mod lorawan;
pub mod lorawan_keys;
pub mod mqtt;
pub mod topic;
pub mod ttn;

use chrono::{DateTime, Utc};

use crate::config::MessageFormat;
use crate::model::DevEui;

/// What every format is reduced to: who sent it, the application payload, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Uplink {
    /// DevEUI, when the format carries one.
    pub dev_eui: Option<DevEui>,
    /// The network server's own device id (TTN `device_id`, ChirpStack `deviceName`).
    pub ns_device_id: Option<String>,
    /// LoRaWAN FPort; `None` when the format has none.
    pub f_port: Option<u8>,
    /// LoRaWAN frame counter, when known (TTN omits it on a device's first uplink).
    pub f_cnt: Option<u32>,
    /// The decrypted application payload (FRMPayload).
    pub payload: Vec<u8>,
    /// Time of measurement as the network saw it; `None` when the message has no time.
    pub time: Option<DateTime<Utc>>,
}

/// Why a message could not be read in its format.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not valid {format} JSON: {source}")]
    Json { format: &'static str, source: serde_json::Error },
    #[error("field {field}: {why}")]
    Field { field: &'static str, why: String },
    #[error("the uplink carries no application payload ({field} is missing or empty)")]
    NoPayload { field: &'static str },
    #[error("raw LoRaWAN frames are opened with session keys and frame counters (sources::lorawan::process), not parsed alone")]
    NeedsSession,
}

/// Parse a message in the given format.
pub fn parse(format: MessageFormat, payload: &[u8]) -> Result<Uplink, FormatError> {
    match format {
        MessageFormat::TtnV3 => ttn::parse(payload),
        MessageFormat::ChirpstackV4 => chirpstack::parse(payload),
        MessageFormat::Lorawan => Err(FormatError::NeedsSession),
    }
}

pub(crate) fn decode_base64(field: &'static str, text: &str) -> Result<Vec<u8>, FormatError> {
    use base64::Engine;
    if text.is_empty() {
        return Err(FormatError::NoPayload { field });
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| FormatError::Field { field, why: format!("not valid base64: {e}") })
}

pub(crate) fn parse_time(field: &'static str, text: &str) -> Result<DateTime<Utc>, FormatError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| FormatError::Field { field, why: format!("not an RFC 3339 time ({e}): {text:?}") })
}
