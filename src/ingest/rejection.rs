//! Why the pipeline refused a message: one typed reason per way a message becomes a dead letter.
//!
//! The text ([`std::fmt::Display`]) is what the dead letter keeps and operators read; the
//! [`Rejection::kind`] is a short, fixed label for counting (a bounded metric label).

use crate::model::{DevEui, DeviceId};
use crate::profiles::DecodeError;
use crate::sources::lorawan::LorawanError;
use crate::sources::FormatError;

/// Why a message could not become readings.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// Larger than the input's size limit: only its first `kept` bytes were read.
    #[error("message of {size} bytes is over the size limit (mqtt.max_packet_bytes, or broker.max_packet_bytes for the embedded listener); the dead letter keeps its first {kept} bytes")]
    Oversized { size: usize, kept: usize },
    /// Its topic matches no subscription, so its format is unknown.
    #[error("the topic matches no configured subscription")]
    NoRoute,
    /// The network server's envelope did not parse.
    #[error("{0}")]
    Format(#[from] FormatError),
    /// A raw LoRaWAN frame failed (authentication, counter, keys, layout).
    #[error("{0}")]
    Lorawan(#[from] LorawanError),
    /// No device in the registry has the uplink's identifiers.
    #[error("unknown device: no registry entry for DevEUI {} or network id {:?}", .dev_eui.map(|e| e.to_string()).unwrap_or_else(|| "-".into()), .ns_device_id.as_deref().unwrap_or("-"))]
    UnknownDevice { dev_eui: Option<DevEui>, ns_device_id: Option<String> },
    /// The session keys of a raw frame name a device the registry does not have.
    #[error("DevAddr {dev_addr:08X}: device {device:?} of its session keys is not in the device registry")]
    UnknownSessionDevice { dev_addr: u32, device: String },
    /// The device's profile is not loaded.
    #[error("device {device}: profile {profile:?} is not loaded")]
    ProfileMissing { device: DeviceId, profile: String },
    /// The profile could not decode the payload.
    #[error("profile {profile}: {error}")]
    Decode { profile: String, error: DecodeError },
    /// The profile decoded, but to nothing usable.
    #[error("profile {profile}: {why}")]
    NoReadings { profile: String, why: String },
}

impl Rejection {
    /// A short fixed name of the reason, for metrics and filters.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::Oversized { .. } => "oversized",
            Rejection::NoRoute => "no_route",
            Rejection::Format(_) => "format",
            Rejection::Lorawan(_) => "lorawan",
            Rejection::UnknownDevice { .. } | Rejection::UnknownSessionDevice { .. } => "unknown_device",
            Rejection::ProfileMissing { .. } => "profile_missing",
            Rejection::Decode { .. } | Rejection::NoReadings { .. } => "decode",
        }
    }

    /// Every [`Rejection::kind`], for metrics that list each one.
    pub const KINDS: [&'static str; 7] =
        ["oversized", "no_route", "format", "lorawan", "unknown_device", "profile_missing", "decode"];
}
