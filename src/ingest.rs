//! The ingest stage: parse, identify the device, decode with its profile, flag, store in batches, then acknowledge.
//!
//! Whatever is waiting in the queue is taken as one batch (up to `ingest.max_batch`) and
//! written in one durable transaction; only then are its messages acknowledged to the broker,
//! in arrival order. A message that can't become readings becomes a dead letter in the same
//! transaction, so every acknowledged message is either stored or dead-lettered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::devices::DeviceRegistry;
use crate::metrics::Metrics;
use crate::model::{QualityFlag, Reading};
use crate::profiles::ProfileSet;
use crate::quality;
use crate::registry::Registry;
use crate::sources::{Ack, AckError, Acknowledger, Inbound};
use crate::store::{DeadLetter, EmbeddedStore, WriteBatch};

/// Everything the ingest stage needs, passed in by the app. Cloned for dead-letter replays,
/// which take the same path (see [`Ingest::replay`]).
#[derive(Clone)]
pub struct Ingest {
    pub store: Arc<EmbeddedStore>,
    /// Devices and profiles; a snapshot is taken per batch, so a reload never splits one.
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Acknowledges messages to where they came from once stored.
    pub acks: Acknowledger,
    pub max_batch: usize,
    /// The InfluxDB spool, when `[influxdb]` is on: readings are spooled in the same commit.
    pub spool: Option<Arc<crate::store::Spool>>,
    /// ABP session keys for raw LoRaWAN frames (`format = "lorawan"`); empty without any.
    pub lorawan: Arc<crate::sources::lorawan_keys::SessionKeys>,
}

impl Ingest {
    /// Run until the input closes (the source stopped), committing what is left first.
    /// `cancel` only cuts short the retries of a failing store at shutdown.
    pub async fn run(self, mut input: mpsc::Receiver<Inbound>, cancel: CancellationToken) {
        let mut messages = Vec::with_capacity(self.max_batch);
        let mut batch = WriteBatch::default();
        // Stored messages whose acknowledgement is not yet handed over.
        let mut unacked: VecDeque<Ack> = VecDeque::new();
        // The series history of the spike and stuck tests lives as long as the stage.
        let mut qc = quality::QualityControl::new(self.registry.devices().quality().max_series);
        loop {
            self.hand_over_acks(&mut unacked);
            let first = if unacked.is_empty() {
                input.recv().await
            } else {
                // Acks are waiting for room in the client's request queue, which empties as
                // the source task polls the connection: look again soon.
                tokio::select! {
                    m = input.recv() => m,
                    _ = tokio::time::sleep(Duration::from_millis(2)) => continue,
                }
            };
            let Some(first) = first else { break };
            messages.push(first);
            while messages.len() < self.max_batch {
                match input.try_recv() {
                    Ok(m) => messages.push(m),
                    Err(_) => break,
                }
            }
            let (devices, profiles) = (self.registry.devices(), self.registry.profiles());
            let mut decode_all = |batch: &mut WriteBatch| {
                for m in &messages {
                    self.process(m, &devices, &profiles, batch, &mut qc);
                }
            };
            // A JavaScript codec may run up to its time limit: keep it off the async workers.
            if profiles.iter().any(|p| p.runs_script()) {
                tokio::task::block_in_place(|| decode_all(&mut batch));
            } else {
                decode_all(&mut batch);
            }
            if let Some(spool) = &self.spool {
                // A full spool (policy backpressure) holds the batch: nothing is acknowledged
                // and the broker keeps the messages until InfluxDB catches up.
                if !spool.wait_for_room(&cancel).await {
                    return;
                }
            }
            self.metrics.observe_batch(messages.len());
            let stored;
            (batch, stored) = self.commit(batch, &cancel).await;
            if !stored {
                // Shutting down with a failing store: leave the messages unacknowledged so
                // the broker delivers them again.
                return;
            }
            if let Some(spool) = &self.spool {
                spool.appended(batch.outbox.len());
            }
            // Only the acknowledgement waits (counted for QoS 0 too); topic and payload are dropped here.
            unacked.extend(messages.drain(..).map(|m| m.ack));
            batch.clear();
        }
        // The input closed (shutdown): hand over what can still go out.
        self.hand_over_acks(&mut unacked);
    }

    /// Hand acknowledgements over in arrival order, without waiting: the broker connection's
    /// task, which drains the client's queue by polling the connection, may itself be
    /// waiting for room in the ingest queue, and waiting here too would stop both.
    fn hand_over_acks(&self, unacked: &mut VecDeque<Ack>) {
        while let Some(ack) = unacked.front() {
            match self.acks.try_ack(ack) {
                Ok(()) => Metrics::inc(&self.metrics.messages_acked, 1),
                Err(AckError::Busy) => return,
                // The connection is gone (a publisher left, shutdown): the sender delivers the
                // message again, and writes are idempotent.
                Err(AckError::Gone) => debug!("cannot acknowledge: the connection is gone; the sender delivers again"),
            }
            unacked.pop_front();
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
                    self.metrics.dead_lettered(batch.dead_letters.iter().map(|l| l.reason.as_str()));
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
    fn process(
        &self,
        m: &Inbound,
        devices: &DeviceRegistry,
        profiles: &ProfileSet,
        batch: &mut WriteBatch,
        qc: &mut quality::QualityControl,
    ) {
        let mut device_name = None;
        // Set for a message that is acknowledged without producing readings (a raw LoRaWAN
        // join, downlink, MAC-only frame or duplicate): neither decoded nor dead-lettered.
        let mut skipped = false;
        let result = (|| {
            if m.payload.len() < m.size {
                return Err(format!(
                    "message of {} bytes is over the size limit (mqtt.max_packet_bytes, or broker.max_packet_bytes for the embedded listener); the dead letter keeps its first {} bytes",
                    m.size,
                    m.payload.len()
                ));
            }
            let format = m.format.ok_or("the topic matches no configured subscription".to_owned())?;
            let uplink = if format == crate::config::MessageFormat::Lorawan {
                match self.open_lorawan(m, devices, batch, &mut device_name)? {
                    Some(uplink) => uplink,
                    None => {
                        skipped = true;
                        return Ok(());
                    }
                }
            } else {
                crate::sources::parse(format, &m.payload).map_err(|e| e.to_string())?
            };
            let device = devices.find(uplink.dev_eui, uplink.ns_device_id.as_deref()).ok_or_else(|| {
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
                .decode_uplink(uplink.f_port, &uplink.payload, uplink.decoded.as_deref())
                .map_err(|e| format!("profile {}: {e}", device.profile))?;
            if !decoded.warnings.is_empty() {
                debug!(device = %device.id, warnings = ?decoded.warnings, "decoded with warnings");
            }
            // An implausible measurement time gives way to the reception time (flagged below).
            let when = quality::reading_time(uplink.time, m.received_at, devices.quality());
            let time = when.time;
            // Non-finite values are kept, to be stored flagged bad by the range test.
            let mut values = decoded.into_values().map_err(|e| format!("profile {}: {e}", device.profile))?;
            crate::aggregates::derived::add_derived(&mut values);
            let first = batch.readings.len();
            let limits = quality::Limits {
                settings: devices.quality(),
                profile: Some(profile.quality()),
                device_ranges: Some(&device.ranges),
                device_battery_low_v: device.battery_low_v,
            };
            let battery = quality::battery_low(values.iter().map(|v| (v.quantity, v.value)), &limits);
            for v in values {
                let mut verdict =
                    qc.assess(&*self.store, &limits, &device.id, v.quantity, v.value, time, m.received_at, battery.as_deref());
                when.flag(&mut verdict);
                if verdict.flag != QualityFlag::Good {
                    Metrics::inc(&self.metrics.readings_flagged, 1);
                }
                self.metrics.quality.count(&verdict);
                let (flag, reason) = (verdict.flag, verdict.reason());
                batch.readings.push(Reading {
                    device: device.id.clone(),
                    quantity: v.quantity,
                    value: v.value,
                    time,
                    flag,
                    reason,
                });
            }
            if let Some(spool) = &self.spool {
                spool.encode(&batch.readings[first..], device, &mut batch.outbox);
            }
            batch.seen.push((device.id.clone(), m.received_at));
            if device.visibility == crate::devices::Visibility::Open {
                batch.districts.insert(device.id.clone(), device.district.clone());
            }
            Ok::<(), String>(())
        })();
        match result {
            Ok(()) if skipped => {}
            Ok(()) => Metrics::inc(&self.metrics.messages_decoded, 1),
            Err(reason) => {
                Metrics::inc(&self.metrics.messages_failed, 1);
                warn!(topic = %crate::model::Escaped(&m.topic), device = %crate::model::Escaped(device_name.as_deref().unwrap_or("-")), reason = %crate::model::Escaped(&reason), "message dead-lettered");
                batch.dead_letters.push(DeadLetter {
                    id: 0,
                    received_at: m.received_at,
                    topic: m.topic.clone(),
                    format: m.format.map(|f| f.as_str()).unwrap_or("-").to_owned(),
                    device: device_name,
                    reason,
                    payload: m.payload.to_vec(),
                });
            }
        }
    }
}

impl Ingest {
    /// Authenticate, counter-check and decrypt a raw LoRaWAN frame. `Ok(None)`: acknowledged
    /// without readings. The frame counter moves on in `batch` (so a second copy in the same
    /// batch is caught) and is stored in the batch's transaction.
    fn open_lorawan(
        &self,
        m: &Inbound,
        devices: &DeviceRegistry,
        batch: &mut WriteBatch,
        device_name: &mut Option<String>,
    ) -> Result<Option<crate::sources::Uplink>, String> {
        use crate::sources::lorawan::{self, LorawanError, Opened, Outcome};
        let outcome = lorawan::process(&m.payload, &self.lorawan, m.received_at.timestamp_millis(), |dev_addr| {
            match batch.frame_counters.get(&dev_addr) {
                Some(c) => Ok(Some(c.clone())),
                None => self.store.frame_counter(dev_addr).map_err(|e| e.to_string()),
            }
        });
        let (dev_addr, device, counter, opened, time) = match outcome {
            Ok(Outcome::Ignored(kind)) => {
                Metrics::inc(&self.metrics.lorawan_ignored, 1);
                debug!(topic = %crate::model::Escaped(&m.topic), kind, "raw LoRaWAN frame ignored");
                return Ok(None);
            }
            Ok(Outcome::Frame { dev_addr, device, counter, opened, time }) => (dev_addr, device, counter, opened, time),
            Err(e) => {
                match e {
                    LorawanError::Mic { .. } => Metrics::inc(&self.metrics.lorawan_mic_failures, 1),
                    LorawanError::Replay { .. } => Metrics::inc(&self.metrics.lorawan_replays, 1),
                    _ => {}
                }
                return Err(e.to_string());
            }
        };
        *device_name = Some(device.clone());
        let (f_cnt, f_port, payload) = match opened {
            Opened::Duplicate { .. } => {
                Metrics::inc(&self.metrics.lorawan_duplicates, 1);
                return Ok(None);
            }
            Opened::MacOnly { .. } => {
                batch.frame_counters.insert(dev_addr, counter);
                Metrics::inc(&self.metrics.lorawan_ignored, 1);
                return Ok(None);
            }
            Opened::Data { f_cnt, f_port, payload } => (f_cnt, f_port, payload),
        };
        // Authentic and new: the counter moves on even if decoding fails below, so the same
        // frame can't be slipped in again later.
        batch.frame_counters.insert(dev_addr, counter);
        let found = crate::model::DevEui::parse(&device)
            .ok()
            .and_then(|eui| devices.find(Some(eui), None))
            .or_else(|| devices.get(&device));
        let found = found.ok_or_else(|| {
            format!("DevAddr {dev_addr:08X}: device {device:?} of its session keys is not in the device registry")
        })?;
        Ok(Some(crate::sources::Uplink {
            dev_eui: found.dev_eui,
            ns_device_id: Some(found.ns_device_id.clone().unwrap_or_else(|| found.id.to_string())),
            f_port: Some(f_port),
            f_cnt: Some(f_cnt),
            payload,
            time,
            decoded: None,
        }))
    }
}

impl Ingest {
    /// A stage without a broker connection, for replaying dead letters while the gateway is
    /// stopped (`messnetz dead-letters replay`): a replay acknowledges nothing.
    pub fn offline(
        store: Arc<EmbeddedStore>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        spool: Option<Arc<crate::store::Spool>>,
        lorawan: Arc<crate::sources::lorawan_keys::SessionKeys>,
    ) -> Self {
        Self { store, registry, metrics, acks: Acknowledger::new(None), max_batch: 1, spool, lorawan }
    }

    /// Run a dead letter through the same path as a message from the broker (find the device,
    /// decode, derive, flag, spool), as if it had arrived when it did, and commit the result
    /// in one transaction with the letter's removal ([`EmbeddedStore::commit_replay`]): it
    /// lands exactly once. A message that fails again stays a dead letter with the new reason.
    /// Blocks (decoding, a store commit): call from blocking code.
    pub fn replay(
        &self,
        letter: &DeadLetter,
        format: crate::config::MessageFormat,
    ) -> Result<crate::store::ReplayOutcome, crate::store::StoreError> {
        let (devices, profiles) = (self.registry.devices(), self.registry.profiles());
        let inbound = Inbound {
            topic: letter.topic.clone(),
            payload: letter.payload.clone().into(),
            size: letter.payload.len(),
            format: Some(format),
            received_at: letter.received_at,
            ack: Ack::None,
        };
        // The spike and stuck tests start without in-memory history here; what they need of
        // a series' past they read from the store.
        let mut qc = quality::QualityControl::new(devices.quality().max_series);
        let mut batch = WriteBatch::default();
        self.process(&inbound, &devices, &profiles, &mut batch, &mut qc);
        let spooled = batch.outbox.len();
        let outcome = self.store.commit_replay(letter.id, batch)?;
        if let crate::store::ReplayOutcome::Stored { readings, .. } = &outcome {
            Metrics::inc(&self.metrics.readings_stored, *readings as u64);
            if let Some(spool) = &self.spool {
                // The lines were spooled in the replay's commit.
                spool.appended(spooled);
            }
        }
        Ok(outcome)
    }
}
