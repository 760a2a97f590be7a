//! The pure ingest pipeline: one message (format, topic, bytes, reception time) → flagged readings of one device, or a typed rejection.
//!
//! It reads a snapshot of the devices and profiles, the LoRaWAN session keys, the frame
//! counters and the history of each series through what its caller hands it, and writes
//! nothing: no runtime, broker or store here. The [stage](super::stage) batches the outcomes,
//! commits them and acknowledges the messages.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::debug;

use super::rejection::Rejection;
use crate::config::MessageFormat;
use crate::devices::{Device, DeviceRegistry, Source};
use crate::metrics::Metrics;
use crate::model::{DevEui, Escaped, QualityFlag, Reading};
use crate::profiles::ProfileSet;
use crate::quality::{self, QualityControl, QualityMetrics, SeriesLookup};
use crate::sources::lorawan::{self, FrameCounter, LorawanError, Opened};
use crate::sources::lorawan_keys::SessionKeys;
use crate::sources::Uplink;

/// One message as the pipeline sees it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub topic: &'a str,
    /// The bytes read; fewer than `size` when the message was over the input's size limit.
    pub payload: &'a [u8],
    /// The message's whole size.
    pub size: usize,
    /// The format of the topic's subscription; `None` when no subscription matches.
    pub format: Option<MessageFormat>,
    pub received_at: DateTime<Utc>,
}

/// What became of one message. Readings go to the end of the caller's vector.
#[derive(Debug)]
pub enum Outcome {
    /// The readings appended for this device.
    Readings { device: Arc<Device> },
    /// Nothing to store, nothing wrong: a raw LoRaWAN join, MAC-only frame or duplicate.
    Skipped,
    /// A dead letter; `device` names the device when it was found.
    Rejected { rejection: Rejection, device: Option<String> },
}

/// A raw frame's counter after it: the caller keeps it with the batch's readings, so a
/// counter never runs ahead of (or behind) what it admitted.
pub type CounterUpdate = Option<(u32, FrameCounter)>;

/// What the pipeline reads. Borrowed for one batch, so a registry reload never splits one.
pub struct Pipeline<'a> {
    pub devices: &'a DeviceRegistry,
    pub profiles: &'a ProfileSet,
    /// ABP session keys for raw LoRaWAN frames; empty without any.
    pub lorawan: &'a SessionKeys,
    /// Stored history of a series, for the spike and stuck tests when memory has none, and
    /// the official stations' readings near a citizen sensor, for the neighbour test.
    pub history: &'a (dyn SeriesLookup + Sync),
    /// What the pipeline made of the messages, for the metrics once they are stored.
    pub tally: &'a Tally,
}

/// What the pipeline made of a batch's messages (decoded, failed, flagged, LoRaWAN frames
/// ignored, refused or repeated, quality by flag and test), added to [`Metrics`] by the
/// stage once the batch is stored: a batch decoded again because another gateway stored one
/// of its frames first, or left unstored at shutdown for the broker to deliver again, counts
/// once, as what was stored.
#[derive(Default)]
pub struct Tally {
    decoded: AtomicU64,
    failed: AtomicU64,
    flagged: AtomicU64,
    moved_aside: AtomicU64,
    lorawan_ignored: AtomicU64,
    lorawan_mic_failures: AtomicU64,
    lorawan_replays: AtomicU64,
    lorawan_duplicates: AtomicU64,
    quality: QualityMetrics,
}

impl Tally {
    /// Add the counts to `metrics`: the batch is stored.
    pub fn count_into(&self, metrics: &Metrics) {
        let pairs = [
            (&self.decoded, &metrics.messages_decoded),
            (&self.failed, &metrics.messages_failed),
            (&self.flagged, &metrics.readings_flagged),
            (&self.moved_aside, &metrics.readings_moved_aside),
            (&self.lorawan_ignored, &metrics.lorawan_ignored),
            (&self.lorawan_mic_failures, &metrics.lorawan_mic_failures),
            (&self.lorawan_replays, &metrics.lorawan_replays),
            (&self.lorawan_duplicates, &metrics.lorawan_duplicates),
        ];
        for (own, total) in pairs {
            Metrics::inc(total, own.load(Relaxed));
        }
        self.quality.add_to(&metrics.quality);
    }
}

impl Pipeline<'_> {
    /// Turn one message into readings (appended to `out`) or a rejection. `counter_of` gives
    /// a DevAddr's frame counter as it stands before this message (the batch's own updates
    /// first, then the store); the returned update is the counter after it.
    pub fn process(
        &self,
        m: &Message,
        qc: &mut QualityControl,
        counter_of: impl FnOnce(u32) -> Result<Option<FrameCounter>, String>,
        out: &mut Vec<Reading>,
    ) -> (Outcome, CounterUpdate) {
        let mut device_name = None;
        let mut counter = None;
        let result = self.readings(m, qc, counter_of, out, &mut device_name, &mut counter);
        let outcome = match result {
            Ok(Some(device)) => {
                Metrics::inc(&self.tally.decoded, 1);
                Outcome::Readings { device }
            }
            Ok(None) => Outcome::Skipped,
            Err(rejection) => {
                Metrics::inc(&self.tally.failed, 1);
                tracing::warn!(topic = %Escaped(m.topic), device = %Escaped(device_name.as_deref().unwrap_or("-")), reason = %Escaped(&rejection.to_string()), "message dead-lettered");
                Outcome::Rejected { rejection, device: device_name }
            }
        };
        (outcome, counter)
    }

    fn readings(
        &self,
        m: &Message,
        qc: &mut QualityControl,
        counter_of: impl FnOnce(u32) -> Result<Option<FrameCounter>, String>,
        out: &mut Vec<Reading>,
        device_name: &mut Option<String>,
        counter: &mut CounterUpdate,
    ) -> Result<Option<Arc<Device>>, Rejection> {
        if m.payload.len() < m.size {
            return Err(Rejection::Oversized { size: m.size, kept: m.payload.len() });
        }
        let format = m.format.ok_or(Rejection::NoRoute)?;
        let uplink = if format == MessageFormat::Lorawan {
            match self.open_lorawan(m, counter_of, device_name, counter)? {
                Some(uplink) => uplink,
                None => return Ok(None),
            }
        } else {
            crate::sources::parse_message(format, m.topic, m.payload)?
        };
        let device = self
            .devices
            .find(uplink.dev_eui, uplink.ns_device_id.as_deref())
            .ok_or_else(|| Rejection::UnknownDevice { dev_eui: uplink.dev_eui, ns_device_id: uplink.ns_device_id.clone() })?;
        *device_name = Some(device.id.to_string());
        // A format that names its quantities itself (sensor.community) needs no profile.
        let (mut values, profile) = match crate::sources::mapped_values(format, m.payload).transpose()? {
            Some(values) => (values, None),
            None => {
                let profile = self
                    .profiles
                    .get(&device.profile)
                    .ok_or_else(|| Rejection::ProfileMissing { device: device.id.clone(), profile: device.profile.clone() })?;
                let decoded = profile
                    .decode_uplink(uplink.f_port, &uplink.payload, uplink.decoded.as_deref())
                    .map_err(|error| Rejection::Decode { profile: device.profile.clone(), error })?;
                if !decoded.warnings.is_empty() {
                    debug!(device = %device.id, warnings = ?decoded.warnings, "decoded with warnings");
                }
                // Non-finite values are kept, to be stored flagged bad by the range test.
                let values =
                    decoded.into_values().map_err(|why| Rejection::NoReadings { profile: device.profile.clone(), why })?;
                (values, Some(profile))
            }
        };
        // An implausible measurement time gives way to the reception time (flagged below).
        let when = qc.reading_time(self.history, &device.id, uplink.time, m.received_at, self.devices.quality());
        let time = when.time;
        if let Some((from, to)) = when.moved_aside {
            // Readings this stage stored at their reception time hold this measurement time:
            // they are written again at `to` first, so this uplink's readings replace nothing.
            self.move_aside(&device.id, from, to, out);
        }
        crate::aggregates::derived::add_derived(&mut values);
        let limits = quality::Limits {
            settings: self.devices.quality(),
            profile: profile.map(|p| p.quality()),
            device_ranges: Some(&device.ranges),
            device_battery_low_v: device.battery_low_v,
        };
        let battery = quality::battery_low(values.iter().map(|v| (v.quantity, v.value)), &limits);
        let battery = battery.as_deref();
        for v in values {
            let mut verdict =
                qc.assess(&when, self.history, out, &limits, &device.id, v.quantity, v.value, m.received_at, battery);
            if device.source == Source::Citizen {
                let stations = self.devices.official_stations();
                let (here, citizens) = ((device.lat, device.lon), self.devices.citizens());
                let nearby = qc.nearby(self.history, out);
                quality::neighbours::check(&nearby, stations, here, v.quantity, v.value, time, citizens, &mut verdict);
            }
            if verdict.flag != QualityFlag::Good {
                Metrics::inc(&self.tally.flagged, 1);
            }
            self.tally.quality.count(&verdict);
            let (flag, reason) = (verdict.flag, verdict.into_reason());
            out.push(Reading { device: device.id.clone(), quantity: v.quantity, value: v.value, time, flag, reason });
        }
        Ok(Some(device.clone()))
    }

    /// Add copies at `to` of the readings of `device` at `from`: those of this batch if it
    /// has them, else those stored.
    fn move_aside(&self, device: &crate::model::DeviceId, from: DateTime<Utc>, to: DateTime<Utc>, out: &mut Vec<Reading>) {
        let mut copies: Vec<Reading> = out.iter().filter(|r| r.device == *device && r.time == from).cloned().collect();
        if copies.is_empty() {
            copies = self.history.at(device, from).unwrap_or_else(|e| {
                tracing::warn!(device = %device, error = %e, "cannot read the readings to move aside; the uplink's readings replace them");
                Vec::new()
            });
        }
        Metrics::inc(&self.tally.moved_aside, copies.len() as u64);
        for mut r in copies {
            r.time = to;
            out.push(r);
        }
    }

    /// Authenticate, counter-check and decrypt a raw LoRaWAN frame. `Ok(None)`: acknowledged
    /// without readings. An authentic new frame moves its counter on even if decoding fails
    /// later, so the same frame can't be slipped in again.
    fn open_lorawan(
        &self,
        m: &Message,
        counter_of: impl FnOnce(u32) -> Result<Option<FrameCounter>, String>,
        device_name: &mut Option<String>,
        update: &mut CounterUpdate,
    ) -> Result<Option<Uplink>, Rejection> {
        let outcome = lorawan::process(m.payload, self.lorawan, m.received_at.timestamp_millis(), counter_of);
        let (dev_addr, device, counter, opened, time) = match outcome {
            Ok(lorawan::Outcome::Ignored(kind)) => {
                Metrics::inc(&self.tally.lorawan_ignored, 1);
                debug!(topic = %Escaped(m.topic), kind, "raw LoRaWAN frame ignored");
                return Ok(None);
            }
            Ok(lorawan::Outcome::Frame { dev_addr, device, counter, opened, time }) => (dev_addr, device, counter, opened, time),
            Err(e) => {
                match e {
                    LorawanError::Mic { .. } => Metrics::inc(&self.tally.lorawan_mic_failures, 1),
                    LorawanError::Replay { .. } => Metrics::inc(&self.tally.lorawan_replays, 1),
                    _ => {}
                }
                return Err(e.into());
            }
        };
        *device_name = Some(device.clone());
        let (f_cnt, f_port, payload) = match opened {
            Opened::Duplicate { .. } => {
                Metrics::inc(&self.tally.lorawan_duplicates, 1);
                return Ok(None);
            }
            Opened::MacOnly { .. } => {
                *update = Some((dev_addr, counter));
                Metrics::inc(&self.tally.lorawan_ignored, 1);
                return Ok(None);
            }
            Opened::Data { f_cnt, f_port, payload } => (f_cnt, f_port, payload),
        };
        *update = Some((dev_addr, counter));
        let found =
            DevEui::parse(&device).ok().and_then(|eui| self.devices.find(Some(eui), None)).or_else(|| self.devices.get(&device));
        let found = found.ok_or(Rejection::UnknownSessionDevice { dev_addr, device })?;
        Ok(Some(Uplink {
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
