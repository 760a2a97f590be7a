//! The ingest stage: parse, identify the device, decode with its profile, flag, store in batches, then acknowledge.
//!
//! Whatever is waiting in the queue is taken as one batch (up to `ingest.max_batch`) and
//! written in one durable transaction; only then are its messages acknowledged to the broker,
//! in arrival order. A message that can't become readings becomes a dead letter in the same
//! transaction, so every acknowledged message is either stored or dead-lettered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::AsyncClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::devices::DeviceRegistry;
use crate::metrics::Metrics;
use crate::model::{QualityFlag, Reading};
use crate::profiles::ProfileSet;
use crate::quality;
use crate::registry::Registry;
use crate::sources::mqtt::Inbound;
use crate::store::{DeadLetter, EmbeddedStore, WriteBatch};

/// Everything the ingest stage needs, passed in by the app.
pub struct Ingest {
    pub store: Arc<EmbeddedStore>,
    /// Devices and profiles; a snapshot is taken per batch, so a reload never splits one.
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Acknowledges messages to the broker once stored.
    pub client: AsyncClient,
    pub max_batch: usize,
}

impl Ingest {
    /// Run until the input closes (the source stopped), committing what is left first.
    /// `cancel` only cuts short the retries of a failing store at shutdown.
    pub async fn run(self, mut input: mpsc::Receiver<Inbound>, cancel: CancellationToken) {
        let mut messages = Vec::with_capacity(self.max_batch);
        let mut batch = WriteBatch::default();
        while let Some(first) = input.recv().await {
            messages.push(first);
            while messages.len() < self.max_batch {
                match input.try_recv() {
                    Ok(m) => messages.push(m),
                    Err(_) => break,
                }
            }
            let (devices, profiles) = (self.registry.devices(), self.registry.profiles());
            for m in &messages {
                self.process(m, &devices, &profiles, &mut batch);
            }
            let stored;
            (batch, stored) = self.commit(batch, &cancel).await;
            if !stored {
                // Shutting down with a failing store: leave the messages unacknowledged so
                // the broker delivers them again.
                return;
            }
            for m in messages.drain(..) {
                if let Err(e) = self.client.ack(&m.publish).await {
                    warn!(error = %e, "cannot acknowledge; the broker will redeliver (writes are idempotent)");
                    break;
                }
                Metrics::inc(&self.metrics.messages_acked, 1);
            }
            messages.clear();
            batch.clear();
        }
    }

    /// Write the batch, retrying with backoff until it is stored or shutdown is requested.
    async fn commit(&self, batch: WriteBatch, cancel: &CancellationToken) -> (WriteBatch, bool) {
        let mut batch = batch;
        let mut backoff = Duration::from_millis(100);
        loop {
            let store = self.store.clone();
            let started = Instant::now();
            let (returned, result) = match tokio::task::spawn_blocking(move || {
                let r = store.write(&batch);
                (batch, r)
            })
            .await
            {
                Ok(pair) => pair,
                Err(e) => {
                    error!(error = %e, "store task failed");
                    return (WriteBatch::default(), false);
                }
            };
            batch = returned;
            match result {
                Ok(_) => {
                    self.metrics.observe_store_latency(started.elapsed());
                    Metrics::inc(&self.metrics.readings_stored, batch.readings.len() as u64);
                    Metrics::inc(&self.metrics.dead_letters, batch.dead_letters.len() as u64);
                    return (batch, true);
                }
                Err(e) => {
                    Metrics::inc(&self.metrics.store_errors, 1);
                    error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "store commit failed");
                    tokio::select! {
                        _ = cancel.cancelled() => return (batch, false),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Turn one message into readings, or into a dead letter.
    fn process(&self, m: &Inbound, devices: &DeviceRegistry, profiles: &ProfileSet, batch: &mut WriteBatch) {
        let mut device_name = None;
        let result = (|| {
            let format = m.format.ok_or("the topic matches no configured subscription".to_owned())?;
            let uplink = crate::sources::parse(format, &m.publish.payload).map_err(|e| e.to_string())?;
            let device = devices
                .find(uplink.dev_eui, uplink.ns_device_id.as_deref())
                .ok_or_else(|| {
                    format!(
                        "unknown device: no registry entry for DevEUI {} or network id {:?}",
                        uplink.dev_eui.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
                        uplink.ns_device_id.as_deref().unwrap_or("-")
                    )
                })?;
            device_name = Some(device.id.to_string());
            let profile = profiles
                .get(&device.profile)
                .ok_or_else(|| format!("device {}: profile {:?} is not loaded", device.id, device.profile))?;
            let decoded = profile
                .decode_bytes(uplink.f_port, &uplink.payload)
                .map_err(|e| format!("profile {}: {e}", device.profile))?;
            if !decoded.warnings.is_empty() {
                debug!(device = %device.id, warnings = ?decoded.warnings, "decoded with warnings");
            }
            let time = uplink.time.unwrap_or(m.received_at);
            for v in decoded.values {
                let (flag, reason) = quality::assess(v.quantity, v.value, time, m.received_at);
                if flag != QualityFlag::Good {
                    Metrics::inc(&self.metrics.readings_flagged, 1);
                }
                batch.readings.push(Reading { device: device.id.clone(), quantity: v.quantity, value: v.value, time, flag, reason });
            }
            batch.seen.push((device.id.clone(), m.received_at));
            Ok::<(), String>(())
        })();
        match result {
            Ok(()) => Metrics::inc(&self.metrics.messages_decoded, 1),
            Err(reason) => {
                Metrics::inc(&self.metrics.messages_failed, 1);
                warn!(topic = %m.publish.topic, device = device_name.as_deref().unwrap_or("-"), %reason, "message dead-lettered");
                batch.dead_letters.push(DeadLetter {
                    id: 0,
                    received_at: m.received_at,
                    topic: m.publish.topic.clone(),
                    format: m.format.map(|f| f.as_str()).unwrap_or("-").to_owned(),
                    device: device_name,
                    reason,
                    payload: m.publish.payload.to_vec(),
                });
            }
        }
    }
}
