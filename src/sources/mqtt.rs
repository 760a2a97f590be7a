//! The MQTT connection: subscribes on every connect, hands messages to the ingest stage, reconnects with backoff.
//!
//! Messages are acknowledged by the ingest stage (manual acks), only after what they
//! produced is durably stored. The broker therefore never has more unacknowledged messages
//! out to us than its in-flight window (Mosquitto: `max_inflight_messages`, 20 by default;
//! MQTT 5: Receive Maximum), which is what bounds the ingest batches.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{Ack, Inbound, InputMetrics, Routes};
use crate::config::{MqttSettings, SubscriptionSettings};
use crate::status::InputStatus;

/// The largest packet MQTT can frame (a remaining length of 268,435,455 bytes plus the fixed
/// header). The connection reads whatever the broker delivers: a message the client refused
/// would end the connection, come back on the next one and stop ingest for good. Messages over
/// `mqtt.max_packet_bytes` become dead letters in ingest instead.
const MQTT_MAX_PACKET_BYTES: usize = 268_435_455 + 5;

/// A connection that lasted this long was a good one: the next reconnect starts at the
/// shortest delay again.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// Most messages held beside a full ingest queue while the connection is read on (see
/// `run`); more than a broker's usual in-flight window (Mosquitto's default is 20, MQTT 5's
/// Receive Maximum at most 65,535 and usually far less).
const MAX_WAITING: usize = 1024;

/// The delay before the next reconnect: doubles with every failure up to the maximum, and
/// starts over only after a connection has lasted [`STABLE_CONNECTION`]. A broker that drops
/// us right after every ConnAck (or a message that breaks every connection) is retried ever
/// more slowly, never in a loop at the shortest delay.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    connected_at: Option<Instant>,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min, connected_at: None }
    }

    fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The connection failed at `now`: how long to wait before the next attempt.
    fn failed(&mut self, now: Instant) -> Duration {
        if self.connected_at.take().is_some_and(|t| now.duration_since(t) >= STABLE_CONNECTION) {
            self.next = self.min;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

/// Why the connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt.tls.{key}: cannot read {path}: {source}")]
    TlsFile { key: &'static str, path: String, source: std::io::Error },
}

/// The connection to the broker and what to subscribe to.
pub struct MqttSource {
    client: AsyncClient,
    eventloop: EventLoop,
    subscriptions: Vec<SubscriptionSettings>,
    routes: Routes,
    reconnect_min: Duration,
    reconnect_max: Duration,
    /// Message bodies larger than this are cut to their first bytes and dead-lettered.
    max_payload: usize,
}

impl MqttSource {
    pub fn new(settings: &MqttSettings) -> Result<Self, MqttError> {
        let mut options = MqttOptions::new(settings.client_id.clone(), settings.host.clone(), settings.port);
        options
            .set_keep_alive(Duration::from_secs(settings.keep_alive_s.into()))
            .set_clean_session(settings.clean_session)
            .set_manual_acks(true)
            .set_max_packet_size(MQTT_MAX_PACKET_BYTES, settings.max_packet_bytes)
            // Acks travel through this channel from the ingest task while this task may be
            // waiting for room in the ingest queue; a roomy channel keeps the two from waiting
            // on each other.
            .set_request_channel_capacity(1 << 16);
        if let (Some(user), password) = (&settings.username, &settings.password) {
            options.set_credentials(user.clone(), password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default());
        }
        if let Some(tls) = &settings.tls {
            let read = |key: &'static str, path: &std::path::Path| {
                std::fs::read(path).map_err(|source| MqttError::TlsFile { key, path: path.display().to_string(), source })
            };
            let ca = read("ca_file", &tls.ca_file)?;
            let client_auth = match (&tls.client_cert_file, &tls.client_key_file) {
                (Some(cert), Some(key)) => Some((read("client_cert_file", cert)?, read("client_key_file", key)?)),
                _ => None,
            };
            options.set_transport(Transport::tls(ca, client_auth, None));
        }
        let (client, eventloop) = AsyncClient::new(options, 1 << 16);
        Ok(Self {
            client,
            eventloop,
            subscriptions: settings.subscriptions.clone(),
            routes: Routes::new(&settings.subscriptions),
            reconnect_min: Duration::from_millis(settings.reconnect_min_ms),
            reconnect_max: Duration::from_millis(settings.reconnect_max_ms),
            max_payload: settings.max_packet_bytes,
        })
    }

    /// The handle the ingest stage acknowledges messages with.
    pub fn client(&self) -> AsyncClient {
        self.client.clone()
    }

    /// Read messages until `cancel` fires. While `out` is full, messages wait here in order
    /// (up to [`MAX_WAITING`]) and the connection stays alive; the broker holds the rest, as
    /// nothing is acknowledged before it is stored.
    pub async fn run(
        mut self,
        out: mpsc::Sender<Inbound>,
        metrics: Arc<InputMetrics>,
        status: Arc<InputStatus>,
        cancel: CancellationToken,
    ) {
        let mut backoff = Backoff::new(self.reconnect_min, self.reconnect_max);
        // Subscriptions confirmed on the current connection.
        let mut confirmed = 0;
        // Messages read while the queue was full, oldest first. The connection is read on
        // meanwhile: keep-alive pings and our acknowledgements must go on, or the broker (or
        // the client) ends a connection that is only waiting for a slow store, and everything
        // unacknowledged comes again on the next. Unacknowledged QoS 1 messages are bounded by
        // the broker's in-flight window; beyond MAX_WAITING reading pauses after all.
        let mut waiting: VecDeque<Inbound> = VecDeque::new();
        loop {
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                permit = out.reserve(), if !waiting.is_empty() => {
                    let Ok(permit) = permit else { break };
                    if let Some(inbound) = waiting.pop_front() {
                        permit.send(inbound);
                    }
                    continue;
                }
                event = self.eventloop.poll(), if waiting.len() < MAX_WAITING => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    info!(session_present = ack.session_present, "connected to the MQTT broker");
                    InputMetrics::inc(&metrics.mqtt_connects, 1);
                    backoff.connected(Instant::now());
                    confirmed = 0;
                    status.not_ready("connected to the broker, waiting for it to confirm the subscriptions".into());
                    // Subscribe on every connect: a broker that lost our session (restart
                    // without persistence, clean session) would otherwise send us nothing.
                    for sub in &self.subscriptions {
                        let qos = if sub.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                        if let Err(e) = self.client.try_subscribe(sub.topic.clone(), qos) {
                            error!(topic = %sub.topic, error = %e, "cannot queue subscribe request");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    for code in ack.return_codes {
                        if matches!(code, SubscribeReasonCode::Failure) {
                            error!(pkid = ack.pkid, "the broker refused a subscription (check its ACL)");
                            status.not_ready("the broker refused a subscription (check its ACL)".into());
                        } else {
                            InputMetrics::inc(&metrics.mqtt_subscriptions, 1);
                            confirmed += 1;
                            if confirmed == self.subscriptions.len() {
                                status.ready();
                            }
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    InputMetrics::inc(&metrics.messages_received, 1);
                    let inbound = self.inbound(publish);
                    if !waiting.is_empty() {
                        waiting.push_back(inbound);
                    } else {
                        match out.try_send(inbound) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(inbound)) => waiting.push_back(inbound),
                            Err(mpsc::error::TrySendError::Closed(_)) => break,
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let delay = backoff.failed(Instant::now());
                    status.not_ready(format!("MQTT connection to the broker lost: {e}; retrying"));
                    warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        // Best effort: tell the broker we are leaving; our session (and unacked messages) stays.
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(event) = self.eventloop.poll().await {
                if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }

    fn inbound(&self, publish: rumqttc::Publish) -> Inbound {
        let ack = match publish.qos {
            QoS::AtMostOnce => Ack::None,
            _ => Ack::Broker { pkid: publish.pkid },
        };
        let size = publish.payload.len();
        let mut payload = publish.payload;
        if size > self.max_payload {
            // Kept for the dead letter: enough to see what it was, not the whole body.
            payload.truncate(super::KEPT_OF_OVERSIZED);
        }
        let format = self.routes.format_of(&publish.topic);
        Inbound { topic: publish.topic, payload, size, format, received_at: Utc::now(), ack }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_while_connections_fail_at_once_and_starts_over_after_a_lasting_one() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut now = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..10 {
            // Connected, then dropped a moment later (a message that breaks every connection).
            b.connected(now);
            now += Duration::from_millis(50);
            let d = b.failed(now);
            delays.push(d.as_millis());
            now += d;
        }
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
        // Refused without ever connecting: still growing.
        assert_eq!(b.failed(now), Duration::from_secs(30));
        // A connection that lasted: the next failure is retried quickly again.
        b.connected(now);
        now += STABLE_CONNECTION;
        assert_eq!(b.failed(now), Duration::from_millis(200));
        assert_eq!(b.failed(now), Duration::from_millis(400));
    }
}
