//! The ingest stage: batches messages, runs each through the [pipeline](super::pipeline), commits the batch durably, then acknowledges.
//!
//! Whatever is waiting in the queue is taken as one batch (up to `ingest.max_batch`; when
//! more than one message was waiting, with what arrives while messages keep coming, within
//! `ingest.gather_ms`) and written in one durable transaction; only then are its messages
//! acknowledged to the broker, in arrival order. A message that can't become readings
//! becomes a dead letter in the same transaction, so every acknowledged message is either
//! stored or dead-lettered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use chrono::{DateTime, Utc};

use crate::devices::{Device, DeviceRegistry};
use crate::metrics::Metrics;
use crate::profiles::ProfileSet;
use crate::quality;
use crate::registry::Registry;
use crate::sinks::influx::Spool;
use crate::sources::{Ack, AckError, Acknowledger, Inbound};
use crate::store::{DeadLetter, Store, StoreError, WriteBatch};

use super::pipeline::{Message, Outcome, Pipeline, Tally};

/// How a batch's commit ended.
enum Committed {
    Stored,
    /// Shutdown was requested while the store failed.
    Stopped,
    /// Refused because a frame counter moved on in another gateway: decode the batch again.
    Decode,
}

/// Everything the ingest stage needs, passed in by the app. Cloned for dead-letter replays,
/// which take the same path (see [`Ingest::replay`]).
#[derive(Clone)]
pub struct Ingest {
    pub store: Arc<dyn Store>,
    /// Devices and profiles; a snapshot is taken per batch, so a reload never splits one.
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Acknowledges messages to where they came from once stored.
    pub acks: Acknowledger,
    pub max_batch: usize,
    /// How long a batch that found more than one message waiting gathers more at most
    /// (`ingest.gather_ms`).
    pub gather: Duration,
    /// How long without a message ends the gathering early (`ingest.gather_quiet_ms`).
    pub quiet: Duration,
    /// The InfluxDB spool, when `[influxdb]` is on: readings are spooled in the same commit.
    pub spool: Option<Arc<Spool>>,
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
                // Acks are waiting for room in the broker connection's acknowledgement queue,
                // which its task empties: look again soon.
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
            if messages.len() > 1 && !self.gather.is_zero() {
                // Busy: what arrives meanwhile shares the commit's fixed cost.
                self.gather_more(&mut input, &mut messages).await;
            }
            let (devices, profiles) = (self.registry.devices(), self.registry.profiles());
            loop {
                // What this decoding finds counts only if its batch is stored.
                let tally = Tally::default();
                let pipeline = self.pipeline(&devices, &profiles, &tally);
                qc.new_batch();
                let mut decode_all = |batch: &mut WriteBatch| {
                    for m in &messages {
                        self.collect(&pipeline, m, &mut qc, batch);
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
                let done;
                (batch, done) = self.commit(batch, &cancel).await;
                match done {
                    Committed::Stored => {
                        tally.count_into(&self.metrics);
                        break;
                    }
                    // Shutting down with a failing store: leave the messages unacknowledged so
                    // the broker delivers them again.
                    Committed::Stopped => return,
                    // Another gateway sharing the store took a copy of one of the batch's
                    // LoRaWAN frames first: nothing was written; decoded again against the
                    // stored counters, the copy is a duplicate.
                    Committed::Decode => batch.clear(),
                }
            }
            self.metrics.observe_batch(messages.len());
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

    /// Take what arrives while messages keep coming, up to `max_batch`: until none has come
    /// for `quiet`, at most for `gather` in all. Under a flood the batch grows for the whole
    /// `gather`; a broker that sends no more until it has acknowledgements (its in-flight
    /// window) falls quiet, and the batch is committed after `quiet`, not after `gather`.
    async fn gather_more(&self, input: &mut mpsc::Receiver<Inbound>, messages: &mut Vec<Inbound>) {
        let end = tokio::time::sleep(self.gather);
        // A quiet time past `gather` never fires first: `end` is polled before it.
        let quiet = tokio::time::sleep(self.quiet);
        tokio::pin!(end, quiet);
        while messages.len() < self.max_batch {
            tokio::select! {
                biased;
                _ = &mut end => break,
                taken = input.recv_many(messages, self.max_batch - messages.len()) => {
                    // The input closed: seen by the next `recv`.
                    if taken == 0 {
                        break;
                    }
                    quiet.as_mut().reset(tokio::time::Instant::now() + self.quiet);
                }
                _ = &mut quiet => break,
            }
        }
    }

    /// Hand acknowledgements over in arrival order, without waiting: the broker connection's
    /// task, which drains the acknowledgement queue, may itself be waiting for room in the
    /// ingest queue, and waiting here too would stop both.
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
    async fn commit(&self, batch: WriteBatch, cancel: &CancellationToken) -> (WriteBatch, Committed) {
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
                    return (WriteBatch::default(), Committed::Stopped);
                }
            };
            batch = returned;
            match result {
                Ok(_) => {
                    self.metrics.observe_store_latency(started.elapsed());
                    Metrics::inc(&self.metrics.readings_stored, batch.readings.len() as u64);
                    self.metrics.dead_lettered(batch.dead_letters.iter().map(|l| l.reason.as_str()));
                    return (batch, Committed::Stored);
                }
                Err(e @ StoreError::FrameCounterMoved { .. }) => {
                    debug!(error = %e, "decoding the batch again");
                    return (batch, Committed::Decode);
                }
                Err(e) => {
                    Metrics::inc(&self.metrics.store_errors, 1);
                    error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "store commit failed");
                    tokio::select! {
                        _ = cancel.cancelled() => return (batch, Committed::Stopped),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Run one message through the pipeline and add what it gave to the batch: its readings
    /// (and their InfluxDB lines, the device's last-seen time and district), or a dead letter.
    fn collect(&self, pipeline: &Pipeline, m: &Inbound, qc: &mut quality::QualityControl, batch: &mut WriteBatch) {
        let message =
            Message { topic: &m.topic, payload: &m.payload, size: m.size, format: m.format, received_at: m.received_at };
        let first = batch.readings.len();
        let counters = &batch.frame_counters;
        let bases = &mut batch.frame_counter_bases;
        let store = &self.store;
        let counter_of = |dev_addr| match counters.get(&dev_addr) {
            Some(c) => Ok(Some(c.clone())),
            None => {
                let stored = store.frame_counter(dev_addr).map_err(|e| e.to_string())?;
                // What the new state is computed from: a shared store writes it only over this.
                bases.insert(dev_addr, stored.clone());
                Ok(stored)
            }
        };
        let (outcome, counter) = pipeline.process(&message, qc, counter_of, &mut batch.readings);
        if let Some((dev_addr, counter)) = counter {
            batch.frame_counters.insert(dev_addr, counter);
        }
        if let Ack::Reply(reply) = &m.ack {
            reply.decoded(match &outcome {
                Outcome::Rejected { rejection, .. } => Err(rejection.to_string()),
                _ => Ok(()),
            });
        }
        match outcome {
            Outcome::Readings { device } => {
                readings_taken(batch, first, &device, m.received_at, pipeline.devices, self.spool.as_deref())
            }
            Outcome::Skipped => {}
            Outcome::Rejected { rejection, device } => batch.dead_letters.push(DeadLetter {
                id: 0,
                received_at: m.received_at,
                topic: m.topic.clone(),
                format: m.format.map(|f| f.as_str()).unwrap_or("-").to_owned(),
                device,
                reason: rejection.to_string(),
                payload: m.payload.to_vec(),
            }),
        }
    }

    /// The pipeline over one snapshot of the registry.
    fn pipeline<'a>(&'a self, devices: &'a DeviceRegistry, profiles: &'a ProfileSet, tally: &'a Tally) -> Pipeline<'a> {
        Pipeline { devices, profiles, lorawan: &self.lorawan, history: &*self.store, tally }
    }
}

impl Ingest {
    /// A stage without a broker connection, for replaying dead letters while the gateway is
    /// stopped (`messnetz dead-letters replay`): a replay acknowledges nothing.
    pub fn offline(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        spool: Option<Arc<Spool>>,
        lorawan: Arc<crate::sources::lorawan_keys::SessionKeys>,
    ) -> Self {
        Self {
            store,
            registry,
            metrics,
            acks: Acknowledger::new(None),
            max_batch: 1,
            gather: Duration::ZERO,
            quiet: Duration::ZERO,
            spool,
            lorawan,
        }
    }

    /// Run a dead letter through the same path as a message from the broker (find the device,
    /// decode, derive, flag, spool), as if it had arrived when it did, and commit the result
    /// in one transaction with the letter's removal ([`crate::store::CommitStore::commit_replay`]): it
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
        let tally = Tally::default();
        self.collect(&self.pipeline(&devices, &profiles, &tally), &inbound, &mut qc, &mut batch);
        let spooled = batch.outbox.len();
        let outcome = self.store.commit_replay(letter.id, batch)?;
        tally.count_into(&self.metrics);
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

/// What the readings of one message, from `first` on in `batch.readings`, bring to the batch
/// besides themselves: their InfluxDB lines (with a spool), the device's last-seen time, and
/// for an open device its district, so they count towards the district's rollups.
pub fn readings_taken(
    batch: &mut WriteBatch,
    first: usize,
    device: &Arc<Device>,
    received_at: DateTime<Utc>,
    devices: &DeviceRegistry,
    spool: Option<&Spool>,
) {
    if let Some(spool) = spool {
        spool.encode(&batch.readings[first..], device, &mut batch.outbox);
    }
    batch.seen.push((device.id.clone(), received_at));
    if devices.counts_in_district(device) && !batch.districts.contains_key(&device.id) {
        batch.districts.insert(device.id.clone(), device.district.clone());
    }
}
