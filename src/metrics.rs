//! Counters, gauges and histograms behind `/metrics` (Prometheus text format): what the
//! pipeline did, how its commits went, and the process's own resources ([`process`]).
//!
//! Label values come from fixed sets only (dead-letter reason classes, quality flags), never
//! from message contents, so the number of series stays bounded whatever arrives.

mod process;

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::sources::{Inbound, InputMetrics};

/// Upper bounds of the store commit latency buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];
/// Upper bounds of the batch size buckets, in messages per commit.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// Why messages became dead letters, as a fixed set of classes (the `reason` label of
/// `messnetz_dead_letters_by_reason_total`); the full reason stays in the letter itself.
pub const DEAD_LETTER_REASONS: [&str; 9] = [
    "oversized",
    "no_subscription",
    "malformed",
    "unknown_device",
    "profile_missing",
    "decode",
    "lorawan_rejected",
    "influxdb_rejected",
    "other",
];

/// The class of a dead letter's reason text (an index into [`DEAD_LETTER_REASONS`]).
pub fn reason_class(reason: &str) -> usize {
    let class = if reason.contains("over the size limit") {
        "oversized"
    } else if reason.contains("matches no configured subscription") {
        "no_subscription"
    } else if reason.starts_with("unknown device") || reason.contains("is not in the device registry") {
        "unknown_device"
    } else if reason.ends_with("is not loaded") {
        "profile_missing"
    } else if reason.starts_with("profile ") {
        "decode"
    } else if reason.starts_with("InfluxDB rejected") {
        "influxdb_rejected"
    } else if ["MIC check failed", "replayed frame", "frame counter", "no session keys"].iter().any(|t| reason.contains(t)) {
        "lorawan_rejected"
    } else if reason.starts_with("not valid ")
        || reason.starts_with("field ")
        || reason.starts_with("the uplink carries no")
        || reason.starts_with("frame of ")
        || reason.starts_with("not a LoRaWAN")
        || reason.contains("CRC error")
    {
        "malformed"
    } else {
        "other"
    };
    DEAD_LETTER_REASONS.iter().position(|c| *c == class).unwrap_or(DEAD_LETTER_REASONS.len() - 1)
}

/// A Prometheus histogram with fixed bucket bounds; lock-free.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum in millionths of the observed unit.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            if value <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add((value * 1e6) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", bucket.load(Relaxed));
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// When the process started, for `process_start_time_seconds`.
struct StartTime(f64);

impl Default for StartTime {
    fn default() -> Self {
        Self(chrono::Utc::now().timestamp_millis() as f64 / 1e3)
    }
}

/// The ingest queue, watched without keeping it open: a weak handle, so the queue still
/// closes at shutdown when the inputs drop their senders.
struct QueueProbe {
    sender: mpsc::WeakSender<Inbound>,
    capacity: usize,
}

/// The gateway's counters. Shared by every stage through an `Arc`; updates are lock-free.
#[derive(Default)]
pub struct Metrics {
    /// Messages decoded into readings.
    pub messages_decoded: AtomicU64,
    /// Messages that could not be parsed, matched to a device or decoded.
    pub messages_failed: AtomicU64,
    /// Dead letters written.
    pub dead_letters: AtomicU64,
    /// Readings written to the store.
    pub readings_stored: AtomicU64,
    /// Readings flagged suspect or bad by quality control.
    pub readings_flagged: AtomicU64,
    /// Readings stored at their reception time that a measured reading at the same
    /// millisecond moved to a free one (each move is also counted in `readings_stored`).
    pub readings_moved_aside: AtomicU64,
    /// Messages acknowledged to the broker after their batch was stored.
    pub messages_acked: AtomicU64,
    /// Store commits that failed (the batch is retried, not acknowledged).
    pub store_errors: AtomicU64,
    /// Raw LoRaWAN frames that are no data uplink (join requests, downlinks, MAC-only frames): acknowledged, not stored.
    pub lorawan_ignored: AtomicU64,
    /// Raw LoRaWAN copies of an already accepted frame (several gateways): acknowledged, not stored again.
    pub lorawan_duplicates: AtomicU64,
    /// Raw LoRaWAN frames refused as replays (counter at or below the last accepted one).
    pub lorawan_replays: AtomicU64,
    /// Raw LoRaWAN frames whose MIC did not verify (wrong keys or altered frames).
    pub lorawan_mic_failures: AtomicU64,
    /// The inputs (broker connection, embedded listener): messages received, connects,
    /// confirmed subscriptions. An `Arc` of its own, handed to the input tasks.
    pub input: Arc<InputMetrics>,
    /// The InfluxDB writer and its spool.
    pub influx: InfluxMetrics,
    /// Readings per quality flag and failures per quality test.
    pub quality: crate::quality::QualityMetrics,
    /// Dead letters written, per class of [`DEAD_LETTER_REASONS`].
    dead_letter_reasons: [AtomicU64; DEAD_LETTER_REASONS.len()],
    /// Latency of one store commit, in seconds.
    store_latency: CommitLatency,
    /// Messages per store commit.
    batch_size: BatchSize,
    /// Readings and dead letters deleted by retention (`store::retention`).
    pub retention: RetentionMetrics,
    queue: OnceLock<QueueProbe>,
    started: StartTime,
}

/// The commit latency histogram (a newtype for its bucket bounds in `Default`).
struct CommitLatency(Histogram);

impl Default for CommitLatency {
    fn default() -> Self {
        Self(Histogram::new(&LATENCY_BUCKETS_S))
    }
}

/// The batch size histogram.
struct BatchSize(Histogram);

impl Default for BatchSize {
    fn default() -> Self {
        Self(Histogram::new(&BATCH_BUCKETS))
    }
}

/// What the retention task deleted, and how long its passes took.
#[derive(Default)]
pub struct RetentionMetrics {
    /// Readings deleted because they were older than their retention.
    pub readings_deleted: AtomicU64,
    /// Dead letters deleted because they were older than their retention.
    pub dead_letters_deleted: AtomicU64,
    /// Completed passes over the whole store.
    pub passes: AtomicU64,
    /// When the last pass ended (Unix seconds); 0 before the first.
    pub last_pass_unix_s: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Relaxed);
    }

    /// Record one store commit's latency.
    pub fn observe_store_latency(&self, d: Duration) {
        self.store_latency.0.observe(d.as_secs_f64());
    }

    /// Record how many messages one batch took into the store.
    pub fn observe_batch(&self, messages: usize) {
        self.batch_size.0.observe(messages as f64);
    }

    /// Count dead letters written, by the class of their reason.
    pub fn dead_lettered<'a>(&self, reasons: impl IntoIterator<Item = &'a str>) {
        for reason in reasons {
            self.dead_letters.fetch_add(1, Relaxed);
            self.dead_letter_reasons[reason_class(reason)].fetch_add(1, Relaxed);
        }
    }

    /// Report the depth of this ingest queue (`messnetz_ingest_queue_messages`).
    pub fn watch_queue(&self, queue: &mpsc::Sender<Inbound>) {
        let _ = self.queue.set(QueueProbe { sender: queue.downgrade(), capacity: queue.max_capacity() });
    }

    /// Whole seconds since the metrics (the gateway) started.
    pub fn uptime_s(&self) -> u64 {
        (chrono::Utc::now().timestamp_millis() as f64 / 1e3 - self.started.0).max(0.0) as u64
    }

    /// Messages waiting in the ingest queue, and its capacity.
    fn queue_depth(&self) -> Option<(usize, usize)> {
        let probe = self.queue.get()?;
        let depth = probe.sender.upgrade().map(|s| probe.capacity - s.capacity()).unwrap_or(0);
        Some((depth, probe.capacity))
    }

    /// Render in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let counters: [(&str, &str, &AtomicU64); 15] = [
            ("messnetz_messages_received_total", "Messages taken from the broker.", &self.input.messages_received),
            ("messnetz_messages_decoded_total", "Messages decoded into readings.", &self.messages_decoded),
            (
                "messnetz_messages_failed_total",
                "Messages that could not be parsed, matched to a device or decoded.",
                &self.messages_failed,
            ),
            ("messnetz_dead_letters_total", "Dead letters written.", &self.dead_letters),
            ("messnetz_readings_stored_total", "Readings written to the store.", &self.readings_stored),
            ("messnetz_readings_flagged_total", "Readings flagged suspect or bad by quality control.", &self.readings_flagged),
            (
                "messnetz_readings_moved_aside_total",
                "Readings stored at their reception time, moved to a free millisecond for a measured reading at theirs.",
                &self.readings_moved_aside,
            ),
            ("messnetz_messages_acked_total", "Messages acknowledged to the broker after storage.", &self.messages_acked),
            ("messnetz_mqtt_connects_total", "Connections established to the broker.", &self.input.mqtt_connects),
            ("messnetz_store_errors_total", "Store commits that failed.", &self.store_errors),
            ("messnetz_mqtt_subscriptions_total", "Subscriptions confirmed by the broker.", &self.input.mqtt_subscriptions),
            (
                "messnetz_lorawan_ignored_total",
                "Raw LoRaWAN frames that are no data uplink (join, downlink, MAC only).",
                &self.lorawan_ignored,
            ),
            ("messnetz_lorawan_duplicates_total", "Raw LoRaWAN copies of an already accepted frame.", &self.lorawan_duplicates),
            ("messnetz_lorawan_replays_total", "Raw LoRaWAN frames refused as replays.", &self.lorawan_replays),
            ("messnetz_lorawan_mic_failures_total", "Raw LoRaWAN frames whose MIC did not verify.", &self.lorawan_mic_failures),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Relaxed));
        }
        let name = "messnetz_dead_letters_by_reason_total";
        let _ = writeln!(
            out,
            "# HELP {name} Dead letters written, by class of reason (the letter keeps the full reason).\n# TYPE {name} counter"
        );
        for (class, value) in DEAD_LETTER_REASONS.iter().zip(&self.dead_letter_reasons) {
            let _ = writeln!(out, "{name}{{reason=\"{class}\"}} {}", value.load(Relaxed));
        }
        let name = "messnetz_build_info";
        let _ = writeln!(
            out,
            "# HELP {name} The running build: version of messnetz (always 1).\n# TYPE {name} gauge\n{name}{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        if let Some((depth, capacity)) = self.queue_depth() {
            let name = "messnetz_ingest_queue_messages";
            let _ = writeln!(
                out,
                "# HELP {name} Messages waiting between the MQTT input and the store.\n# TYPE {name} gauge\n{name} {depth}"
            );
            let name = "messnetz_ingest_queue_capacity_messages";
            let _ = writeln!(out, "# HELP {name} Size of the ingest queue (ingest.queue_capacity); when full, reading from the broker pauses.\n# TYPE {name} gauge\n{name} {capacity}");
        }
        self.retention.render(&mut out);
        self.influx.render(&mut out);
        self.quality.render(&mut out);
        self.store_latency.0.render(&mut out, "messnetz_store_commit_seconds", "Latency of one store commit (one batch).");
        self.batch_size.0.render(&mut out, "messnetz_ingest_batch_messages", "Messages taken into the store by one commit.");
        process::render(&mut out, self.started.0);
        out
    }
}

impl RetentionMetrics {
    fn render(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 3] = [
            (
                "messnetz_retention_readings_deleted_total",
                "Readings deleted as older than their retention.",
                &self.readings_deleted,
            ),
            (
                "messnetz_retention_dead_letters_deleted_total",
                "Dead letters deleted as older than their retention.",
                &self.dead_letters_deleted,
            ),
            ("messnetz_retention_passes_total", "Completed retention passes over the store.", &self.passes),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Relaxed));
        }
        let name = "messnetz_retention_last_pass_timestamp_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} When the last retention pass ended (Unix time); 0 before the first.\n# TYPE {name} gauge\n{name} {}",
            self.last_pass_unix_s.load(Relaxed)
        );
    }
}

/// The InfluxDB writer's counters (`store::influx`), rendered into `/metrics` by [`Metrics::render`].
#[derive(Default)]
pub struct InfluxMetrics {
    /// Points InfluxDB accepted.
    pub points_written: AtomicU64,
    /// Write requests that failed in a retryable way (unreachable, timeout, 5xx, 429 ...).
    pub write_errors: AtomicU64,
    /// Points InfluxDB rejected as malformed, moved to the dead letters.
    pub points_rejected: AtomicU64,
    /// Points deleted unsent from a full spool (policy `drop-oldest`).
    pub spool_dropped: AtomicU64,
    /// Times ingest held a batch back because the spool was full (policy `backpressure`).
    pub spool_full_waits: AtomicU64,
    /// Points waiting in the spool (a gauge).
    pub spool_readings: AtomicU64,
    /// The spool size at which ingest holds messages back (policy `backpressure`); 0 when
    /// nothing is held (no InfluxDB, or policy `drop-oldest`). Readiness compares the two.
    pub spool_hold_limit: AtomicU64,
    /// When the points still spooled were spooled, for the age of the oldest.
    pub spool_age: SpoolAge,
}

/// How long the oldest spooled point has waited: appends are remembered as (points, when),
/// at most one entry per second, and sends take points off the front. After a restart the
/// points found spooled count as spooled at the start.
#[derive(Default)]
pub struct SpoolAge(Mutex<VecDeque<(u64, Instant)>>);

/// Most entries kept; past it, appends join the newest entry (the age errs on the young side).
const SPOOL_AGE_ENTRIES: usize = 100_000;

impl SpoolAge {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Instant)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `n` points were spooled now.
    pub fn appended(&self, n: u64) {
        let now = Instant::now();
        let mut q = self.queue();
        let full = q.len() >= SPOOL_AGE_ENTRIES;
        match q.back_mut() {
            Some((points, when)) if full || now.duration_since(*when) < Duration::from_secs(1) => *points += n,
            _ => q.push_back((n, now)),
        }
    }

    /// The `n` oldest points left the spool (sent, rejected or dropped).
    pub fn removed(&self, mut n: u64) {
        let mut q = self.queue();
        while n > 0 {
            let Some(front) = q.front_mut() else { return };
            if front.0 > n {
                front.0 -= n;
                return;
            }
            n -= front.0;
            q.pop_front();
        }
    }

    /// The spool holds `len` points (counted from disk): keep the newest entries that make it up.
    pub fn resync(&self, len: u64) {
        let mut q = self.queue();
        let total: u64 = q.iter().map(|e| e.0).sum();
        if total < len {
            q.push_front((len - total, Instant::now()));
        }
        drop(q);
        self.removed(total.saturating_sub(len));
    }

    /// Seconds the oldest spooled point has waited; 0 when the spool is empty.
    pub fn oldest_s(&self) -> f64 {
        self.queue().front().map(|(_, when)| when.elapsed().as_secs_f64()).unwrap_or(0.0)
    }
}

impl InfluxMetrics {
    pub fn render(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 5] = [
            ("messnetz_influx_points_written_total", "Points InfluxDB accepted.", &self.points_written),
            (
                "messnetz_influx_write_errors_total",
                "InfluxDB write requests that failed and will be retried.",
                &self.write_errors,
            ),
            (
                "messnetz_influx_points_rejected_total",
                "Points InfluxDB rejected as malformed (dead-lettered).",
                &self.points_rejected,
            ),
            (
                "messnetz_influx_spool_dropped_total",
                "Points dropped unsent from a full spool (drop-oldest).",
                &self.spool_dropped,
            ),
            (
                "messnetz_influx_spool_full_waits_total",
                "Times ingest waited for room in a full spool (backpressure).",
                &self.spool_full_waits,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Relaxed));
        }
        let name = "messnetz_influx_spool_readings";
        let _ = writeln!(
            out,
            "# HELP {name} Points waiting in the InfluxDB spool.\n# TYPE {name} gauge\n{name} {}",
            self.spool_readings.load(Relaxed)
        );
        let name = "messnetz_influx_spool_oldest_age_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} How long the oldest point in the InfluxDB spool has waited to be sent; 0 when it is empty.\n# TYPE {name} gauge\n{name} {}",
            self.spool_age.oldest_s()
        );
        let name = "messnetz_influx_spool_hold_limit_readings";
        let _ = writeln!(
            out,
            "# HELP {name} Spooled points at which ingest holds messages back (backpressure); 0 when it never does.\n# TYPE {name} gauge\n{name} {}",
            self.spool_hold_limit.load(Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_store_latency(Duration::from_micros(300));
        m.observe_store_latency(Duration::from_millis(30));
        let text = m.render();
        assert!(text.contains("messnetz_store_commit_seconds_bucket{le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("messnetz_store_commit_seconds_bucket{le=\"0.05\"} 2\n"), "{text}");
        assert!(text.contains("messnetz_store_commit_seconds_count 2\n"), "{text}");
        assert!(text.contains("messnetz_messages_received_total 0\n"), "{text}");
        assert!(text.contains("messnetz_build_info{version=\""), "{text}");
    }

    #[test]
    fn dead_letter_reasons_fall_into_a_fixed_set_of_classes() {
        let class = |r: &str| DEAD_LETTER_REASONS[reason_class(r)];
        assert_eq!(class("message of 300000 bytes is over the size limit (mqtt.max_packet_bytes, ...)"), "oversized");
        assert_eq!(class("the topic matches no configured subscription"), "no_subscription");
        assert_eq!(class("unknown device: no registry entry for DevEUI - or network id \"x\""), "unknown_device");
        assert_eq!(class("device a: profile \"p\" is not loaded"), "profile_missing");
        assert_eq!(class("profile dragino-lht65: payload too short"), "decode");
        assert_eq!(class("InfluxDB rejected the point (HTTP 400): bad"), "influxdb_rejected");
        assert_eq!(class("MIC check failed for DevAddr 260B1234 (FCnt 3 on air): wrong session keys"), "lorawan_rejected");
        assert_eq!(class("not valid ttn-v3 JSON: expected value at line 1"), "malformed");
        assert_eq!(class("field uplink_message.frm_payload: not base64"), "malformed");
        assert_eq!(class("\u{1b}[31m anything an attacker sends"), "other");
        let m = Metrics::default();
        m.dead_lettered(["profile x: bad", "profile y: bad", "weird"]);
        let text = m.render();
        assert!(text.contains("messnetz_dead_letters_by_reason_total{reason=\"decode\"} 2\n"), "{text}");
        assert!(text.contains("messnetz_dead_letters_by_reason_total{reason=\"other\"} 1\n"), "{text}");
        assert!(text.contains("messnetz_dead_letters_total 3\n"), "{text}");
    }

    #[test]
    fn the_spool_age_is_that_of_the_oldest_point_still_spooled() {
        let age = SpoolAge::default();
        assert_eq!(age.oldest_s(), 0.0);
        age.appended(10);
        std::thread::sleep(Duration::from_millis(30));
        assert!(age.oldest_s() >= 0.03);
        age.removed(4);
        assert!(age.oldest_s() >= 0.03, "6 of the first points are still there");
        age.removed(6);
        assert_eq!(age.oldest_s(), 0.0);
        age.resync(5);
        assert!(age.oldest_s() < 1.0);
        age.resync(0);
        assert_eq!(age.oldest_s(), 0.0);
    }
}
