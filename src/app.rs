//! Wires the pipeline from validated settings and owns shutdown: sources and the API stop on the signal, ingest drains.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::api::{router, AppState};
use crate::config::Settings;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::registry::{self, Registry};
use crate::sources::mqtt::MqttSource;
use crate::sources::{listener, Acknowledger, Routes};
use crate::status::InputStatus;
use crate::store::Backend;

/// Run the gateway until `cancel` fires.
pub async fn run(settings: Settings, cancel: CancellationToken) -> anyhow::Result<()> {
    let (profiles, devices) = registry::load(&settings).map_err(|errors| anyhow::anyhow!(errors.join("\n")))?;
    info!(profiles = profiles.len(), devices = devices.len(), "registry loaded");
    // The embedded file, or PostgreSQL (connected and migrated; the error names store.url
    // without its password).
    let store_settings = settings.store.clone();
    let backend = tokio::task::spawn_blocking(move || crate::store::open_backend(&store_settings)).await??;
    let store = backend.store();
    // Raw LoRaWAN session keys: a bad or too-readable keys file stops the start.
    let lorawan_keys = crate::sources::lorawan_keys::SessionKeys::load(settings.lorawan.keys_file.as_deref(), std::env::vars())
        .map_err(|errors| anyhow::anyhow!(errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")))?;
    let listener = TcpListener::bind(settings.api.listen)
        .await
        .with_context(|| format!("api.listen: cannot listen on {}", settings.api.listen))?;
    // Messages come from the embedded listener (the zero-setup default) or from a broker.
    let embedded = match settings.broker.enabled {
        true => Some(listener::bind(&settings.broker).await?),
        false => None,
    };
    let metrics = Arc::new(Metrics::default());
    let registry = Arc::new(Registry::new(profiles, devices));
    let source = match embedded {
        Some(_) => None,
        None => {
            info!(host = %settings.mqtt.host, port = settings.mqtt.port, client_id = %settings.mqtt.client_id, "connecting to the MQTT broker");
            Some(MqttSource::new(&settings.mqtt)?)
        }
    };

    // InfluxDB: a spool filled by ingest, drained by a writer that outlives ingest at shutdown.
    let influx = match settings.influxdb.as_ref().filter(|i| i.enabled) {
        Some(i) => Some(crate::sinks::influx::start(i, store.clone(), metrics.clone()).context("influxdb")?),
        None => None,
    };
    let spool = influx.as_ref().map(|(spool, _)| spool.clone());
    let writer_stop = CancellationToken::new();
    let writer = influx.map(|(_, writer)| tokio::spawn(writer.run(writer_stop.clone())));

    let tracker = TaskTracker::new();
    let input = Arc::new(InputStatus::default());
    let (tx, rx) = mpsc::channel(settings.ingest.queue_capacity);
    // Citizens' pushes take the same queue as MQTT messages; their sensors join the registry.
    let citizens = Arc::new(crate::api::citizens::CitizenState::new(settings.citizens.clone(), Some(tx.clone())));
    crate::api::citizens::sync_registry(&*store, &registry, citizens.settings.clone()).context("store: citizen sensors")?;
    metrics.watch_queue(&tx);
    let ingest = Ingest {
        store: store.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        acks: Acknowledger::new(source.as_ref().map(MqttSource::acks)),
        max_batch: settings.ingest.max_batch,
        gather: std::time::Duration::from_millis(settings.ingest.gather_ms),
        quiet: std::time::Duration::from_millis(settings.ingest.gather_quiet_ms),
        spool,
        lorawan: Arc::new(lorawan_keys),
    };
    // Dead-letter replays from the admin API take the same path as the broker's messages.
    let admin =
        crate::api::admin::AdminState::new(&settings, crate::replay::Replayer::new(ingest.clone(), &settings.mqtt.subscriptions))
            .context("admin.audit_log")?;
    tracker.spawn(ingest.run(rx, cancel.clone()));
    // Device windows: flushed from their journal until ingest has stopped, then drained.
    let flusher_stop = CancellationToken::new();
    let embedded_store = match &backend {
        Backend::Embedded(e) => Some(e.clone()),
        Backend::Postgres(_) => None,
    };
    let flusher = embedded_store.clone().map(|e| {
        tokio::spawn(crate::store::embedded::rollups::flush::run(
            e,
            Duration::from_millis(settings.store.window_flush_ms),
            flusher_stop.clone(),
        ))
    });
    match (source, embedded) {
        (Some(source), _) => {
            tracker.spawn(source.run(tx, metrics.input.clone(), input.clone(), cancel.clone()));
        }
        (None, Some(tcp)) => {
            let routes = Routes::new(&settings.mqtt.subscriptions);
            tracker.spawn(listener::run(
                tcp,
                settings.broker.clone(),
                routes,
                tx,
                metrics.input.clone(),
                input.clone(),
                cancel.clone(),
            ));
        }
        (None, None) => unreachable!("either the listener or a broker connection is set up above"),
    }

    // Retention of the embedded store: old readings, rollups and dead letters deleted in small
    // chunks beside ingest (PostgreSQL drops whole partitions itself, store.retention_days).
    if let Some(embedded) = embedded_store.clone() {
        tracker.spawn(crate::retention::run(
            embedded,
            registry.clone(),
            settings.retention.clone(),
            metrics.clone(),
            cancel.clone(),
        ));
    }
    if settings.reload.interval_s > 0 {
        let interval = Duration::from_secs(settings.reload.interval_s);
        tracker.spawn(registry::watch(registry.clone(), settings.clone(), interval, cancel.clone()));
        // Other replicas change the citizen sensors of a shared store.
        if matches!(backend, Backend::Postgres(_)) {
            tracker.spawn(crate::api::citizens::follow(
                store.clone(),
                registry.clone(),
                citizens.clone(),
                interval,
                cancel.clone(),
            ));
        }
    }
    let state = AppState {
        input,
        store: store.clone(),
        registry,
        metrics,
        max_points: settings.api.max_points,
        open_data: Arc::new(settings.open_data.clone()),
        admin: Arc::new(admin),
        citizens,
        page: Arc::new(settings.page.clone()),
    };
    info!(addr = %listener.local_addr()?, "HTTP API listening");
    // Timeouts, a connection limit within the descriptor budget, the client's address per request.
    let limits = crate::api::serve::limits(&settings.api);
    tracker.spawn(crate::api::serve::serve(listener, router(state), limits, cancel.clone()));
    tracker.close();

    cancel.cancelled().await;
    info!("shutting down: the MQTT input and the API stop, ingest commits what it holds");
    let deadline = Duration::from_secs(settings.api.shutdown_grace_s + 5);
    if tokio::time::timeout(deadline, tracker.wait()).await.is_err() {
        warn!(after_s = deadline.as_secs(), "shutdown deadline passed; unacknowledged messages will be redelivered");
    }
    flusher_stop.cancel();
    if let (Some(flusher), Some(e)) = (flusher, embedded_store) {
        let _ = flusher.await;
        crate::store::embedded::rollups::flush::drain(e).await;
    }
    // Ingest has committed its last batch: the writer sends what it can, the rest stays spooled.
    writer_stop.cancel();
    if let (Some(writer), Some(i)) = (writer, settings.influxdb.as_ref()) {
        let flush = Duration::from_millis(i.shutdown_flush_ms + 1000);
        if tokio::time::timeout(flush, writer).await.is_err() {
            warn!("InfluxDB writer did not stop in time; its spool is kept for the next start");
        }
    }
    Ok(())
}
