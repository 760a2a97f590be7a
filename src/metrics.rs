//! Counters and the store-latency histogram behind `/metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::sources::InputMetrics;

/// Upper bounds of the store commit latency buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];

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
    store_latency_buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    store_latency_count: AtomicU64,
    store_latency_sum_us: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Relaxed);
    }

    /// Record one store commit's latency.
    pub fn observe_store_latency(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS_S.iter().zip(&self.store_latency_buckets) {
            if s <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.store_latency_count.fetch_add(1, Relaxed);
        self.store_latency_sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// Render in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let counters: [(&str, &str, &AtomicU64); 14] = [
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
        self.influx.render(&mut out);
        self.quality.render(&mut out);
        let name = "messnetz_store_commit_seconds";
        let _ = writeln!(out, "# HELP {name} Latency of one store commit (one batch).\n# TYPE {name} histogram");
        for (bound, bucket) in LATENCY_BUCKETS_S.iter().zip(&self.store_latency_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", bucket.load(Relaxed));
        }
        let count = self.store_latency_count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.store_latency_sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
        out
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
    }
}
