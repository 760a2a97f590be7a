//! The embedded MQTT broker (rumqttd) of the zero-setup default: one process, no broker to install.
//!
//! The gateway talks to it over loopback exactly as it talks to Mosquitto, so the embedded
//! default and production run the same code path. rumqttd keeps messages in an in-memory
//! log per topic filter and drops what a subscriber has not read once the log is full, so
//! its segments are sized to absorb bursts; it has no persistence (queued messages and
//! sessions end with the process). For production, use a broker of your own.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::{error, info};

use crate::config::BrokerSettings;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker.listen: nothing accepted connections on {0} within 10 s (is the port taken?)")]
    NotListening(SocketAddr),
    #[error("broker.listen: {0} is already in use by another program")]
    PortInUse(SocketAddr),
}

/// Start the broker on its own threads and wait until it accepts connections.
pub fn start(settings: &BrokerSettings) -> Result<(), BrokerError> {
    // rumqttd does not report a failed bind to its caller, so check the port first.
    if std::net::TcpListener::bind(settings.listen).is_err() {
        return Err(BrokerError::PortInUse(settings.listen));
    }
    let server = ServerSettings {
        name: "messnetz-embedded".into(),
        listen: settings.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 1024 * 1024,
            max_inflight_count: settings.max_inflight.into(),
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            max_segment_size: settings.max_segment_size_bytes,
            max_segment_count: settings.max_segment_count,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Default::default()
    };
    let listen = settings.listen;
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(|_| BrokerError::NotListening(listen))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
            info!(%listen, "embedded MQTT broker listening");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotListening(listen))
}
