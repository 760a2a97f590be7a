//! The MQTT connection: subscribes on every connect, hands messages to the ingest stage, reconnects with backoff.
//!
//! Messages are acknowledged by the ingest stage (manual acks), only after what they
//! produced is durably stored. The acknowledgements come back here and are written straight
//! to the connection, a whole batch with one flush: the client's request queue would take one
//! per turn of its event loop, slower than a flooding broker delivers (measured in
//! BENCHMARKS.md). What the broker may send ahead is its in-flight window (Mosquitto:
//! `max_inflight_messages`; MQTT 5: Receive Maximum), but that is not relied on: Mosquitto
//! 2.0.11 sends far past it once acknowledgements flow, so what bounds the messages held here
//! is the ingest queue, [`MAX_WAITING`] and TCP.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, PubAck, QoS, SubscribeReasonCode, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{Ack, AckError, Inbound, InputMetrics, Routes};
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

/// Acknowledgements handed over by ingest and not yet written (ingest holds the rest and tries
/// again); the task writes what is there at once, this many at most per flush.
const ACK_QUEUE: usize = 1 << 16;
const ACK_BATCH: usize = 4096;

/// How long writing acknowledgements to the broker may take before the connection counts as lost.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// One stored message's acknowledgement on its way back to the connection it came on.
#[derive(Debug, Clone, Copy)]
pub struct BrokerAck {
    /// Which connection since start the message came on (see [`MqttSource::run`]).
    connection: u64,
    pkid: u16,
}

/// Hands acknowledgements to the broker connection's task.
#[derive(Debug, Clone)]
pub struct AckSender(mpsc::Sender<BrokerAck>);

impl AckSender {
    pub(super) fn try_send(&self, ack: BrokerAck) -> Result<(), AckError> {
        self.0.try_send(ack).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => AckError::Busy,
            mpsc::error::TrySendError::Closed(_) => AckError::Gone,
        })
    }
}

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
    acks_tx: mpsc::Sender<BrokerAck>,
    acks: mpsc::Receiver<BrokerAck>,
    /// Counts connections made; a message's acknowledgement goes out only on its own one.
    connection: u64,
}

impl MqttSource {
    pub fn new(settings: &MqttSettings) -> Result<Self, MqttError> {
        let mut options = MqttOptions::new(settings.client_id.clone(), settings.host.clone(), settings.port);
        options
            .set_keep_alive(Duration::from_secs(settings.keep_alive_s.into()))
            .set_clean_session(settings.clean_session)
            .set_manual_acks(true)
            .set_max_packet_size(MQTT_MAX_PACKET_BYTES, settings.max_packet_bytes);
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
        // The client's request queue carries only the subscriptions (on every connect) and the
        // farewell; acknowledgements take their own way (see `AckSender`).
        let (client, eventloop) = AsyncClient::new(options, settings.subscriptions.len() + 8);
        let (acks_tx, acks) = mpsc::channel(ACK_QUEUE);
        Ok(Self {
            client,
            eventloop,
            subscriptions: settings.subscriptions.clone(),
            routes: Routes::new(&settings.subscriptions),
            reconnect_min: Duration::from_millis(settings.reconnect_min_ms),
            reconnect_max: Duration::from_millis(settings.reconnect_max_ms),
            max_payload: settings.max_packet_bytes,
            acks_tx,
            acks,
            connection: 0,
        })
    }

    /// The handle the ingest stage acknowledges messages with.
    pub fn acks(&self) -> AckSender {
        AckSender(self.acks_tx.clone())
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
        // unacknowledged comes again on the next. Beyond MAX_WAITING reading pauses after all
        // and TCP holds the broker back (its in-flight window may not: see the module's note).
        let mut waiting: VecDeque<Inbound> = VecDeque::new();
        let mut acks = Vec::with_capacity(ACK_BATCH);
        loop {
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = self.acks.recv_many(&mut acks, ACK_BATCH) => {
                    let written = self.write_acks(&acks).await;
                    acks.clear();
                    match written {
                        Ok(()) => continue,
                        Err(e) => {
                            self.eventloop.clean();
                            Err(e)
                        }
                    }
                }
                // Reading is paused (below), and for a keep-alive time ingest has neither taken a
                // message nor stored one (which sends acknowledgements): a ping keeps the broker
                // from ending the connection.
                _ = tokio::time::sleep(self.eventloop.mqtt_options.keep_alive()), if waiting.len() >= MAX_WAITING => {
                    match self.write(std::iter::once(Packet::PingReq)).await {
                        Ok(()) => continue,
                        Err(e) => {
                            self.eventloop.clean();
                            Err(e)
                        }
                    }
                }
                permit = out.reserve(), if !waiting.is_empty() => {
                    let Ok(permit) = permit else { break };
                    if let Some(inbound) = waiting.pop_front() {
                        permit.send(inbound);
                    }
                    continue;
                }
                event = self.eventloop.poll(), if waiting.len() < MAX_WAITING => event.map_err(|e| e.to_string()),
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    info!(session_present = ack.session_present, "connected to the MQTT broker");
                    // Acknowledgements of messages from the previous connection are dropped: the
                    // broker sends those messages again (a resumed session reuses their packet
                    // ids, which may by then name other messages), and they are stored again
                    // idempotently.
                    self.connection += 1;
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
                    // A message coming in shows the broker is there. The answer to our last ping
                    // may be queued behind many more messages than a keep-alive time takes to
                    // read; the client would count it missing and end a working connection.
                    self.eventloop.state.await_pingresp = false;
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
        // Best effort: what is stored by now is acknowledged, and the broker told we are
        // leaving; our session (and what is still unacknowledged) stays.
        while let Ok(ack) = self.acks.try_recv() {
            acks.push(ack);
        }
        let _ = self.write_acks(&acks).await;
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

    /// Write the acknowledgements of messages from the current connection, then flush once.
    /// Those from an earlier one are dropped (see the ConnAck above), as are all while no
    /// connection is up.
    async fn write_acks(&mut self, acks: &[BrokerAck]) -> Result<(), String> {
        let current = self.connection;
        self.write(acks.iter().filter(|a| a.connection == current).map(|a| Packet::PubAck(PubAck::new(a.pkid)))).await
    }

    /// Write packets straight to the connection, beside the client's event loop (which
    /// writes only its own pings and requests), with one flush; nothing while no connection is up.
    async fn write(&mut self, packets: impl Iterator<Item = Packet>) -> Result<(), String> {
        let Some(network) = self.eventloop.network.as_mut() else { return Ok(()) };
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            let mut any = false;
            for packet in packets {
                network.write(packet).await?;
                any = true;
            }
            if any {
                network.flush().await?;
            }
            Ok::<(), rumqttc::StateError>(())
        });
        match written.await {
            Ok(done) => done.map_err(|e| format!("cannot write to the broker: {e}")),
            Err(_) => Err(format!("the broker took no data for {} s", WRITE_TIMEOUT.as_secs())),
        }
    }

    fn inbound(&self, publish: rumqttc::Publish) -> Inbound {
        let ack = match publish.qos {
            QoS::AtMostOnce => Ack::None,
            _ => Ack::Broker(BrokerAck { connection: self.connection, pkid: publish.pkid }),
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
