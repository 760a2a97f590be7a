//! Sources: where messages come in (a broker connection, the embedded listener) and one parser per message format, each turning a message into an [`Uplink`].
//!
//! Both inputs hand the ingest stage an [`Inbound`] that carries its own [`Ack`]: ingest
//! acknowledges through [`Acknowledger`] once the message's batch is durable, without knowing
//! which input it came from.

pub mod chirpstack;
pub mod json;
pub mod listener;
pub mod lorawan;
pub mod lorawan_keys;
pub mod mqtt;
pub mod reply;
pub mod sensor_community;
pub mod ttn;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::config::{topic, MessageFormat, SubscriptionSettings};
use crate::model::DevEui;

/// A JSON message's bytes as `T`. Text that is UTF-8 (all but hostile input) is checked once
/// and parsed as a `str`; bytes that are not are parsed as bytes, so serde_json's error says
/// where they fail. (Parsed as bytes, every string in the message is checked on its own.)
pub(crate) fn json<'a, T: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<T, serde_json::Error> {
    match std::str::from_utf8(payload) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(payload),
    }
}

/// An optional string field of a JSON message, borrowed from the message unless it holds an
/// escape. `#[serde(borrow)]` borrows a `Cow<str>` only when the field is the `Cow` itself: inside
/// an `Option` it copies every string into an allocation of its own.
pub(crate) fn borrowed_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<std::borrow::Cow<'de, str>>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);
    Ok(<Option<Borrowed<'de>> as serde::Deserialize>::deserialize(d)?.map(|b| b.0))
}

/// One message on its way to the store, from whichever input took it.
#[derive(Debug)]
pub struct Inbound {
    /// The MQTT topic it was published to.
    pub topic: String,
    /// The message body (shared with the receive buffer, not copied). For a message over the
    /// size limit only its first bytes, see `size`.
    pub payload: Bytes,
    /// Size of the message body as published, in bytes (larger than `payload.len()` when the
    /// body was over the limit and cut: such a message becomes a dead letter).
    pub size: usize,
    /// Format of the subscription it matched; `None` if it matched none (it is dead-lettered).
    pub format: Option<MessageFormat>,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
    /// How to tell the sender it is stored.
    pub ack: Ack,
}

/// Bytes of an oversized message body kept in its dead letter.
pub const KEPT_OF_OVERSIZED: usize = 4096;

/// What acknowledging one message takes; sent only after the message's batch is durable.
#[derive(Debug)]
pub enum Ack {
    /// Nothing to acknowledge: QoS 0, or a dead letter's replay.
    None,
    /// A message from the broker connection ([`mqtt`]): a PUBACK on the connection it came on.
    Broker(mqtt::BrokerAck),
    /// A message from a publisher of the embedded listener ([`listener`]): its connection
    /// sends the PUBACK (QoS 1) or PUBREC (QoS 2).
    Listener(listener::AckHandle),
    /// A message pushed over HTTP (the citizens' push): its request waits for this answer
    /// and responds 2xx only once it has come.
    Reply(reply::ReplyHandle),
}

/// Why an acknowledgement could not be handed over now.
#[derive(Debug, PartialEq)]
pub enum AckError {
    /// The broker connection's acknowledgement queue is full: try again once it has drained.
    Busy,
    /// The connection is gone; the sender delivers the message again, and writes are idempotent.
    Gone,
}

/// Sends acknowledgements to where each message came from.
#[derive(Clone)]
pub struct Acknowledger {
    /// The broker connection's acknowledgement queue, when the gateway reads from a broker.
    broker: Option<mqtt::AckSender>,
}

impl Acknowledger {
    pub fn new(broker: Option<mqtt::AckSender>) -> Self {
        Self { broker }
    }

    /// Hand over one acknowledgement without waiting.
    pub fn try_ack(&self, ack: &Ack) -> Result<(), AckError> {
        match ack {
            Ack::None => Ok(()),
            Ack::Broker(ack) => match &self.broker {
                Some(broker) => broker.try_send(*ack),
                None => Err(AckError::Gone),
            },
            Ack::Listener(handle) => handle.send(),
            Ack::Reply(handle) => handle.send(),
        }
    }
}

/// The inputs' counters, shared by both inputs through an `Arc` and rendered into `/metrics`
/// with the gateway's other counters (`metrics::Metrics` holds them); updates are lock-free.
#[derive(Debug, Default)]
pub struct InputMetrics {
    /// Messages taken from the broker (or from a publisher of the embedded listener).
    pub messages_received: AtomicU64,
    /// Connections (re)established to the broker.
    pub mqtt_connects: AtomicU64,
    /// Subscriptions the broker confirmed (SUBACK), counted again on every reconnect.
    pub mqtt_subscriptions: AtomicU64,
}

impl InputMetrics {
    pub fn inc(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Relaxed);
    }
}

/// The configured subscriptions as (filter without `$share/...`, format), to find the format of
/// an arriving message by its topic.
#[derive(Debug, Clone)]
pub struct Routes(Vec<(String, MessageFormat)>);

impl Routes {
    pub fn new(subscriptions: &[SubscriptionSettings]) -> Self {
        Self(subscriptions.iter().map(|s| (topic::strip_share(&s.topic).unwrap_or(&s.topic).to_owned(), s.format)).collect())
    }

    /// The format of the first subscription whose filter matches `name`.
    pub fn format_of(&self, name: &str) -> Option<MessageFormat> {
        self.0.iter().find(|(filter, _)| topic::matches(filter, name)).map(|(_, f)| *f)
    }
}

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
    /// What the network server's payload formatter or codec made of the payload (TTN
    /// `uplink_message.decoded_payload`, ChirpStack `object`), for profiles with a `json`
    /// layout, as JSON text, parsed only by a profile that reads it; `None` when none ran (the
    /// field is absent) or it gave `null`.
    pub decoded: Option<String>,
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
    #[error("this format names its device by the topic (sources::parse_message)")]
    NeedsTopic,
    #[error("raw LoRaWAN frames are opened with session keys and frame counters (sources::lorawan::process), not parsed alone")]
    NeedsSession,
}

/// Parse a message in the given format.
pub fn parse(format: MessageFormat, payload: &[u8]) -> Result<Uplink, FormatError> {
    match format {
        MessageFormat::TtnV3 => ttn::parse(payload),
        MessageFormat::ChirpstackV4 => chirpstack::parse(payload),
        MessageFormat::Lorawan => Err(FormatError::NeedsSession),
        MessageFormat::Json | MessageFormat::SensorCommunity => Err(FormatError::NeedsTopic),
    }
}

/// Parse a message in the given format, with the topic it came on: the `json` and
/// `sensor-community` formats name their device by the topic ([`json::device_of_topic`]).
pub fn parse_message(format: MessageFormat, topic: &str, payload: &[u8]) -> Result<Uplink, FormatError> {
    match format {
        MessageFormat::Json | MessageFormat::SensorCommunity => {
            let device = json::device_of_topic(topic)
                .ok_or(FormatError::Field { field: "topic", why: "no topic level names the device".into() })?;
            if format == MessageFormat::Json {
                return json::parse(device, payload);
            }
            // Checked here so that a bad body fails before the device is looked up; the
            // values are read again by [`mapped_values`].
            sensor_community::parse(payload)?;
            Ok(Uplink {
                dev_eui: None,
                ns_device_id: Some(device.to_owned()),
                f_port: None,
                f_cnt: None,
                payload: Vec::new(),
                time: None,
                decoded: None,
            })
        }
        other => parse(other, payload),
    }
}

/// The values of a format that names its quantities itself (`sensor-community`, through its
/// table of value types), so no profile decodes it; `None` for every other format.
pub fn mapped_values(format: MessageFormat, payload: &[u8]) -> Option<Result<Vec<crate::model::DecodedValue>, FormatError>> {
    (format == MessageFormat::SensorCommunity).then(|| sensor_community::parse(payload).map(|p| p.values))
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
