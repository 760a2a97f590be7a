//! The typed settings of every component, with their defaults; each field's doc comment is its reference.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// All settings, one section per component.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub broker: BrokerSettings,
    pub mqtt: MqttSettings,
    pub ingest: IngestSettings,
    pub store: StoreSettings,
    pub api: ApiSettings,
    pub devices: DevicesSettings,
    pub profiles: ProfilesSettings,
    pub reload: ReloadSettings,
}

/// Reloading devices and profiles without a restart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadSettings {
    /// How often to look for changed device and profile files, in seconds; 0 turns it off.
    /// A changed set is loaded and checked whole; if anything is wrong the old one stays.
    pub interval_s: u64,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        Self { interval_s: 2 }
    }
}

/// The embedded MQTT broker, for running everything on one machine without a broker of your own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSettings {
    /// Start the embedded broker. Turn off when connecting to Mosquitto, EMQX, HiveMQ ...
    pub enabled: bool,
    /// Where the embedded broker listens (MQTT 3.1.1, no TLS: keep it on loopback).
    pub listen: SocketAddr,
    /// Unacknowledged QoS 1 messages the broker sends to one client before waiting for acks.
    pub max_inflight: u16,
    /// Size of one segment of the broker's in-memory log per topic filter, in bytes.
    /// A subscriber that falls further behind than `max_segment_size_bytes * max_segment_count`
    /// loses messages, so these bound the burst the embedded broker absorbs.
    pub max_segment_size_bytes: usize,
    /// Number of log segments kept per topic filter.
    pub max_segment_count: usize,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_inflight: 1000,
            max_segment_size_bytes: 100 * 1024 * 1024,
            max_segment_count: 10,
        }
    }
}

/// The MQTT connection the gateway reads uplinks from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSettings {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain, 8883 TLS by convention).
    pub port: u16,
    /// Client id. Keep it stable: the broker keeps the persistent session (and the messages
    /// queued while the gateway is down) under this id.
    pub client_id: String,
    /// Start with a clean session. Leave false so messages published while the gateway is
    /// down are delivered when it returns.
    pub clean_session: bool,
    /// MQTT keep-alive interval in seconds.
    pub keep_alive_s: u16,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Password, if the broker wants one. Never logged.
    pub password: Option<Secret>,
    /// TLS to the broker; absent means plain TCP.
    pub tls: Option<TlsSettings>,
    /// First delay before reconnecting after a lost connection, in milliseconds; doubles up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    /// Longest delay between reconnect attempts, in milliseconds.
    pub reconnect_max_ms: u64,
    /// Largest MQTT packet accepted, in bytes.
    pub max_packet_bytes: usize,
    /// What to subscribe to and how to read it.
    pub subscriptions: Vec<SubscriptionSettings>,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "messnetz".into(),
            clean_session: false,
            keep_alive_s: 30,
            username: None,
            password: None,
            tls: None,
            reconnect_min_ms: 200,
            reconnect_max_ms: 30_000,
            max_packet_bytes: 256 * 1024,
            subscriptions: vec![
                SubscriptionSettings {
                    topic: "v3/+/devices/+/up".into(),
                    format: MessageFormat::TtnV3,
                    qos: 1,
                },
                SubscriptionSettings {
                    topic: "application/+/device/+/event/up".into(),
                    format: MessageFormat::ChirpstackV4,
                    qos: 1,
                },
            ],
        }
    }
}

/// TLS settings of the broker connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the CA certificate(s) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate, for brokers that authenticate clients by certificate.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
}

/// One subscription: a topic filter and the format of the messages on it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSettings {
    /// MQTT topic filter; `$share/GROUP/filter` spreads messages over replicas.
    pub topic: String,
    /// Message format on this topic.
    pub format: MessageFormat,
    /// Subscription QoS: 1 (at least once, acknowledged after storage) or 0.
    #[serde(default = "default_qos")]
    pub qos: u8,
}

fn default_qos() -> u8 {
    1
}

/// The message formats the gateway reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MessageFormat {
    /// The Things Stack v3 uplink JSON.
    #[serde(rename = "ttn-v3")]
    TtnV3,
    /// ChirpStack v4 `event/up` JSON.
    #[serde(rename = "chirpstack-v4")]
    ChirpstackV4,
}

impl<'de> Deserialize<'de> for MessageFormat {
    // By hand, so that a wrong value is answered with the list of right ones.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "ttn-v3" => Ok(MessageFormat::TtnV3),
            "chirpstack-v4" => Ok(MessageFormat::ChirpstackV4),
            _ => Err(serde::de::Error::custom(format!("unknown format {s:?}; expected \"ttn-v3\" or \"chirpstack-v4\""))),
        }
    }
}

impl MessageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageFormat::TtnV3 => "ttn-v3",
            MessageFormat::ChirpstackV4 => "chirpstack-v4",
        }
    }
}

/// The stage between the broker and the store.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// Messages buffered between the MQTT connection and the store. When full, the gateway
    /// stops reading from the broker (which then holds the messages) instead of growing memory.
    pub queue_capacity: usize,
    /// Most messages committed to the store (and then acknowledged) in one transaction.
    /// Whatever is waiting is taken at once, so batches grow with load up to this size.
    pub max_batch: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self { queue_capacity: 4096, max_batch: 2000 }
    }
}

/// The embedded store.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// Directory of the embedded store; created if missing.
    pub path: PathBuf,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self { path: PathBuf::from("data") }
    }
}

/// The HTTP API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Most points one `/v1/readings` response returns; longer ranges are paged.
    pub max_points: usize,
    /// Seconds to wait for open requests at shutdown.
    pub shutdown_grace_s: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_points: 10_000,
            shutdown_grace_s: 5,
        }
    }
}

/// The device registry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesSettings {
    /// TOML file listing the devices (see the README's device reference).
    pub file: PathBuf,
}

impl Default for DevicesSettings {
    fn default() -> Self {
        Self { file: PathBuf::from("demo/devices.toml") }
    }
}

/// The sensor profiles.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfilesSettings {
    /// Directory of sensor profiles, one `*.toml` per sensor model.
    pub dir: PathBuf,
}

impl Default for ProfilesSettings {
    fn default() -> Self {
        Self { dir: PathBuf::from("sensor-profiles") }
    }
}

/// A secret string whose `Debug` output is redacted, so it never reaches a log.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}
