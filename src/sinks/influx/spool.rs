//! The ingest stage's handle on the InfluxDB spool: encodes readings as outbox lines, holds batches back while the spool is full, and wakes the writer.
//!
//! The lines themselves live in the store's outbox ([`crate::store::Outbox`]), written in the
//! same commit as the readings they copy.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{InfluxSettings, SpoolFullPolicy};
use crate::devices::Device;
use crate::metrics::Metrics;
use crate::model::{DeviceId, Reading};
use crate::store::Lines;

/// Devices whose tags are kept written at most; beyond, all are forgotten.
const TAGS_KEPT: usize = 100_000;

/// The ingest stage's handle on the spool: encodes readings into outbox lines, holds
/// batches back while the spool is full (policy `backpressure`), and wakes the writer.
pub struct Spool {
    max_readings: u64,
    /// Hash each line's point, so the store may keep lines as the gzip members the writer
    /// sends (with `gzip` on).
    pack: bool,
    pub(crate) policy: SpoolFullPolicy,
    metrics: Arc<Metrics>,
    /// Signalled after a commit added lines, so the writer need not poll.
    pub(crate) appended: Notify,
    /// Signalled after the writer removed lines, so held-back ingest can go on.
    room: Notify,
    /// Each device's tags as written for its lines, with the device they were written from:
    /// they are the same for all its uplinks (escaping them was a seventh of encoding). A
    /// changed device comes from the registry as another `Arc`, and the one held here keeps
    /// its address from being reused, so a stale entry is never taken for it.
    tags: Mutex<FxHashMap<DeviceId, (Arc<Device>, String)>>,
}

impl Spool {
    /// `len` is the number of lines already spooled (left from the previous run).
    pub fn new(settings: &InfluxSettings, metrics: Arc<Metrics>, len: u64) -> Self {
        metrics.influx.spool_readings.store(len, Relaxed);
        metrics.influx.spool_age.resync(len);
        let hold = if settings.spool_full == SpoolFullPolicy::Backpressure { settings.spool_max_readings } else { 0 };
        metrics.influx.spool_hold_limit.store(hold, Relaxed);
        Self {
            max_readings: settings.spool_max_readings,
            pack: settings.gzip,
            policy: settings.spool_full,
            metrics,
            appended: Notify::new(),
            room: Notify::new(),
            tags: Mutex::default(),
        }
    }

    /// Readings waiting to be sent (kept up to date by the ingest stage and the writer).
    pub fn len(&self) -> u64 {
        self.metrics.influx.spool_readings.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn max_readings(&self) -> u64 {
        self.max_readings
    }

    /// Add one line per reading of `device` to `out` (the batch's outbox lines). Line protocol
    /// has no NaN or infinity: such readings (stored flagged bad) stay in the embedded store.
    pub fn encode(&self, readings: &[Reading], device: &Arc<Device>, out: &mut Lines) {
        // Only the ingest stage encodes: the lock is never waited for.
        let mut kept = self.tags.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(kept.get(device.id.as_str()), Some((from, _)) if Arc::ptr_eq(from, device)) {
            if kept.len() >= TAGS_KEPT {
                kept.clear();
            }
            let mut tags = String::with_capacity(96);
            super::line_protocol::device_tags(device.id.as_str(), device, &mut tags);
            kept.insert(device.id.clone(), (device.clone(), tags));
        }
        let tags = &kept[device.id.as_str()].1;
        // Where a line's point ends is known from what was written, unless a backslash in a tag
        // makes reading the line the way to find it (as `point_hash` does).
        let plain = !tags.contains('\\');
        let (mut time, mut time_of) = (String::with_capacity(20), None);
        for r in readings.iter().filter(|r| r.value.is_finite()) {
            let series = if r.device == device.id {
                if time_of != Some(r.time) {
                    time.clear();
                    super::line_protocol::push_int(&mut time, r.time.timestamp_millis());
                    time_of = Some(r.time);
                }
                let series = out.push_with(|line| super::line_protocol::write_line_tagged(r, tags, &time, line));
                plain.then_some(series)
            } else {
                out.push_with(|line| super::line_protocol::write_line(r, device, line));
                None
            };
            if self.pack {
                let line = out.last().unwrap_or_default().as_bytes();
                // The encoder knows where the point's parts are; only an odd line is read for them.
                let hash = match series {
                    Some(n) => super::line_protocol::hash_point(&line[..n], time.as_bytes()),
                    None => super::line_protocol::point_hash(line),
                };
                out.push_point(hash);
            }
        }
    }

    /// With policy `backpressure`, wait until the spool is below its limit, so the batch in
    /// hand is neither committed nor acknowledged while InfluxDB is away and the spool full:
    /// the broker keeps the messages. The limit can be passed by at most one batch.
    /// Returns `false` if `cancel` fired while waiting.
    pub async fn wait_for_room(&self, cancel: &CancellationToken) -> bool {
        if self.policy != SpoolFullPolicy::Backpressure || self.len() < self.max_readings {
            return true;
        }
        Metrics::inc(&self.metrics.influx.spool_full_waits, 1);
        tracing::warn!(limit = self.max_readings, "InfluxDB spool full: holding messages unacknowledged until it drains");
        while self.len() >= self.max_readings {
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = self.room.notified() => {}
                // `notify_waiters` keeps no permit; re-check now and then.
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        true
    }

    /// A commit added `n` lines.
    pub fn appended(&self, n: usize) {
        if n > 0 {
            self.metrics.influx.spool_readings.fetch_add(n as u64, Relaxed);
            self.metrics.influx.spool_age.appended(n as u64);
            self.appended.notify_one();
        }
    }

    /// The writer removed `n` lines (sent, dead-lettered or dropped).
    pub(crate) fn removed(&self, n: u64) {
        let _ = self.metrics.influx.spool_readings.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
        self.metrics.influx.spool_age.removed(n);
        self.room.notify_waiters();
    }

    /// Set the count from the table itself.
    pub(crate) fn resync(&self, len: u64) {
        self.metrics.influx.spool_readings.store(len, Relaxed);
        self.metrics.influx.spool_age.resync(len);
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceId, QualityFlag, Quantity};
    use crate::sinks::influx::line_protocol::point_hash;

    fn spool() -> Spool {
        let settings: InfluxSettings = toml::from_str("url = \"http://127.0.0.1:1\"\norg = \"o\"\nbucket = \"b\"\n").unwrap();
        assert!(settings.gzip, "hashes are taken with gzip on, the default");
        Spool::new(&settings, Arc::new(Metrics::default()), 0)
    }

    fn device(id: &str, district: &str) -> Device {
        let toml = format!(
            "id = \"{id}\"\nname = \"n\"\nprofile = \"dragino-lht65\"\nlat = 1.0\nlon = 2.0\ndistrict = {district:?}\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n"
        );
        toml::from_str(&toml).unwrap()
    }

    fn reading(device: &str, quantity: Quantity, ms: i64) -> Reading {
        Reading {
            device: DeviceId::parse(device).unwrap(),
            quantity,
            value: 21.5,
            time: chrono::DateTime::from_timestamp_millis(ms).unwrap(),
            flag: QualityFlag::Good,
            reason: Default::default(),
        }
    }

    #[test]
    fn each_line_comes_with_the_hash_of_the_point_read_back_from_it() {
        let spool = spool();
        // Plain tags; tags whose backslashes change where a reading of the line ends the series
        // (a backslash before an escaped space, one at a tag's end); a reading of another device.
        for district in ["Mitte", "a\\ b", "Ost\\", "x\\\\, y", ""] {
            let dev = Arc::new(device("d1", district));
            let quantities: Vec<Quantity> = Quantity::all().collect();
            let mut readings: Vec<Reading> =
                quantities.iter().enumerate().map(|(i, q)| reading("d1", *q, 1_735_689_600_000 + (i as i64 % 3))).collect();
            readings.push(reading("d2", quantities[0], 1_735_689_600_000));
            let mut out = Lines::default();
            spool.encode(&readings, &dev, &mut out);
            assert_eq!(out.len(), readings.len());
            let read: Vec<u32> = out.iter().map(|l| point_hash(l.as_bytes())).collect();
            assert_eq!(out.points(), Some(read.as_slice()), "district {district:?}");
        }
    }

    #[test]
    fn a_device_changed_in_the_registry_gets_its_new_tags() {
        let spool = spool();
        let lines = |dev: &Arc<Device>| {
            let mut out = Lines::default();
            spool.encode(&[reading("d1", Quantity::by_name("air_temperature").unwrap(), 1_735_689_600_000)], dev, &mut out);
            let line = out.iter().next().unwrap().to_owned();
            line
        };
        let before = Arc::new(device("d1", "Mitte"));
        assert!(lines(&before).contains(",district=Mitte,"));
        // The registry's new version of the device, the old one gone: its tags, not the old ones.
        let after = Arc::new(device("d1", "Neustadt Nord"));
        drop(before);
        assert!(lines(&after).contains(",district=Neustadt\\ Nord,"), "{}", lines(&after));
        assert!(lines(&Arc::new(device("d1", ""))).contains(",device=d1,owner="));
    }
}
