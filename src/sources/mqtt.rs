//! The MQTT connection: subscribes on every connect, hands messages to the ingest stage, reconnects with backoff.
//!
//! Messages are acknowledged by the ingest stage (manual acks), only after what they
//! produced is durably stored. The broker therefore never has more unacknowledged messages
//! out to us than its in-flight window (Mosquitto: `max_inflight_messages`, 20 by default;
//! MQTT 5: Receive Maximum), which is what bounds the ingest batches.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, SubscribeReasonCode, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::topic;
use crate::config::{MessageFormat, MqttSettings, SubscriptionSettings};
use crate::metrics::Metrics;

/// One message from the broker on its way to the store.
#[derive(Debug)]
pub struct Inbound {
    /// The publish as received; kept whole because acknowledging needs its packet id.
    pub publish: Publish,
    /// Format of the subscription it matched; `None` if it matched none (it is dead-lettered).
    pub format: Option<MessageFormat>,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
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
    /// (filter without `$share/...`, format), to find the format of an arriving message.
    routes: Vec<(String, MessageFormat)>,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

impl MqttSource {
    pub fn new(settings: &MqttSettings) -> Result<Self, MqttError> {
        let mut options = MqttOptions::new(settings.client_id.clone(), settings.host.clone(), settings.port);
        options
            .set_keep_alive(Duration::from_secs(settings.keep_alive_s.into()))
            .set_clean_session(settings.clean_session)
            .set_manual_acks(true)
            .set_max_packet_size(settings.max_packet_bytes, settings.max_packet_bytes)
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
        let routes = settings
            .subscriptions
            .iter()
            .map(|s| (topic::strip_share(&s.topic).unwrap_or(&s.topic).to_owned(), s.format))
            .collect();
        Ok(Self {
            client,
            eventloop,
            subscriptions: settings.subscriptions.clone(),
            routes,
            reconnect_min: Duration::from_millis(settings.reconnect_min_ms),
            reconnect_max: Duration::from_millis(settings.reconnect_max_ms),
        })
    }

    /// The handle the ingest stage acknowledges messages with.
    pub fn client(&self) -> AsyncClient {
        self.client.clone()
    }

    /// Read messages until `cancel` fires. A full `out` queue pauses reading, so the broker
    /// holds what the store can't take yet.
    pub async fn run(mut self, out: mpsc::Sender<Inbound>, metrics: Arc<Metrics>, cancel: CancellationToken) {
        let mut backoff = self.reconnect_min;
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    info!(session_present = ack.session_present, "connected to the MQTT broker");
                    Metrics::inc(&metrics.mqtt_connects, 1);
                    backoff = self.reconnect_min;
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
                        } else {
                            Metrics::inc(&metrics.mqtt_subscriptions, 1);
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    Metrics::inc(&metrics.messages_received, 1);
                    let format = self.format_of(&publish.topic);
                    let inbound = Inbound { publish, format, received_at: Utc::now() };
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        sent = out.send(inbound) => if sent.is_err() { break },
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT connection lost");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.reconnect_max);
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

    fn format_of(&self, name: &str) -> Option<MessageFormat> {
        self.routes.iter().find(|(filter, _)| topic::matches(filter, name)).map(|(_, f)| *f)
    }
}
