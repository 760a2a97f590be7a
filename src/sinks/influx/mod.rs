//! InfluxDB v2 writer: drains the spool (the outbox table) in order, in gzip'd line-protocol batches, with backoff on outages and dead letters for rejected points.
//!
//! Schema (documented for Grafana users in docs/data-model.md): one measurement per quantity
//! (`air_temperature`, ...), tags `device`, `district`, `owner`, `profile`, `unit`, fields
//! `value` (always a float) and `quality` (always an integer: 0 good, 1 suspect, 2 bad),
//! timestamp = the time of measurement in milliseconds. Same series and time overwrite in
//! InfluxDB, so replaying a batch after a timeout or a crash never duplicates.
//!
//! Why not the `influxdb2` crate: its gzip support exists only on its `DataPoint` stream
//! path (at the slowest compression level), its raw line-protocol writes cannot set
//! `Content-Encoding`, it brings a second HTTP stack (reqwest 0.11 / hyper 0.14) and sets
//! no request timeout unless given a reqwest 0.11 builder. A write is one POST, so it is
//! done here with the reqwest 0.12 already in the tree; status codes are classified below.
//!
//! What each answer means:
//! - 2xx: the lines are removed from the spool.
//! - 400, 413, 422: the batch holds something InfluxDB will never take. It is split in
//!   halves until the offending lines stand alone; those become dead letters with
//!   InfluxDB's error text, everything else is written (re-sending lines InfluxDB already
//!   took from a partial write is harmless: same series and time overwrite).
//! - 429, 5xx, 401/403/404, timeouts and connection errors: nothing is wrong with the
//!   points (401/403/404 are a token or bucket problem an operator fixes), so the batch stays
//!   spooled and is retried with exponential backoff (or after `Retry-After`).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

mod line_protocol;
mod spool;

pub use line_protocol::write_line;
pub use spool::Spool;

use crate::config::{InfluxSettings, SpoolFullPolicy};
use crate::metrics::Metrics;
use crate::store::{DeadLetter, Spooled, Store, StoreError, WriteBatch};

/// Why the writer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    #[error("influxdb.url: {0}")]
    Url(String),
    #[error("influxdb.token: not a valid HTTP header value")]
    Token,
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot read the spool: {0}")]
    Store(#[from] StoreError),
}

/// What one write request came to.
enum Outcome {
    Written,
    Rejected { status: u16, text: String },
    Retry { reason: String, after: Option<Duration> },
}

/// What one pass over the head of the spool came to.
enum Step {
    Progress,
    Empty,
    Retry(Option<Duration>),
}

/// Set up the spool handle (for ingest) and the writer task (for the app) from settings.
pub fn start(
    settings: &InfluxSettings,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
) -> Result<(Arc<Spool>, InfluxWriter), InfluxError> {
    let len = store.outbox_len()?;
    let spool = Arc::new(Spool::new(settings, metrics.clone(), len));
    if len > 0 {
        info!(readings = len, "InfluxDB spool holds readings from before; sending them first");
    }
    let writer = InfluxWriter::new(settings, store, spool.clone(), metrics)?;
    Ok((spool, writer))
}

/// Sends the spool to InfluxDB. Run with [`InfluxWriter::run`].
pub struct InfluxWriter {
    store: Arc<dyn Store>,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    write_url: reqwest::Url,
    /// `Token ...`, marked sensitive so no debug output shows it.
    auth: Option<HeaderValue>,
    settings: InfluxSettings,
}

impl InfluxWriter {
    pub fn new(
        settings: &InfluxSettings,
        store: Arc<dyn Store>,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, InfluxError> {
        let base = settings.url.trim_end_matches('/');
        let write_url = reqwest::Url::parse_with_params(
            &format!("{base}/api/v2/write"),
            [("org", settings.org.as_str()), ("bucket", settings.bucket.as_str()), ("precision", "ms")],
        )
        .map_err(|e| InfluxError::Url(e.to_string()))?;
        let auth = match &settings.token {
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Token {}", t.expose())).map_err(|_| InfluxError::Token)?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .connect_timeout(Duration::from_millis(settings.request_timeout_ms.min(5000)))
            .build()?;
        Ok(Self { store, spool, metrics, client, write_url, auth, settings: settings.clone() })
    }

    /// Send until `stop` fires, then keep sending for at most `shutdown_flush_ms`; whatever
    /// is left stays in the spool for the next start. The app fires `stop` after ingest has
    /// committed its last batch, so that batch gets its chance too.
    pub async fn run(self, stop: CancellationToken) {
        let flush = Duration::from_millis(self.settings.flush_interval_ms);
        let linger = Duration::from_millis(self.settings.linger_ms);
        let min = Duration::from_millis(self.settings.retry_min_ms);
        let max = Duration::from_millis(self.settings.retry_max_ms);
        let batch = self.settings.batch_size as u64;
        let mut backoff = min;
        // The keys of the batch InfluxDB took last, removed from the spool while the next
        // one is on its way (sorted).
        let mut sent = Vec::new();
        info!(url = %self.write_url, "InfluxDB writer started");
        while !stop.is_cancelled() {
            self.trim(&mut sent).await;
            if self.spool.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = self.spool.appended.notified() => {}
                    _ = tokio::time::sleep(flush) => {}
                }
                continue;
            }
            // Batch by size and by time: send once `batch_size` lines wait, when no commit
            // added any for `linger_ms`, or when the oldest waiting line has waited
            // `flush_interval_ms`.
            let window = Instant::now() + flush;
            let unsent = || self.spool.len().saturating_sub(sent.len() as u64);
            while unsent() > 0 && unsent() < batch {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = self.spool.appended.notified() => {}
                    _ = tokio::time::sleep(linger) => break,
                    _ = tokio::time::sleep_until(window) => break,
                }
            }
            match self.send_some(&mut sent).await {
                Step::Progress | Step::Empty => backoff = min,
                Step::Retry(after) => {
                    let wait = after.map_or(backoff, |a| a.max(backoff)).min(max);
                    self.sleep_trimming(wait, &stop, &mut sent).await;
                    backoff = (backoff * 2).min(max);
                }
            }
        }
        self.flush_at_shutdown(sent).await;
    }

    async fn flush_at_shutdown(&self, mut sent: Vec<u64>) {
        let deadline = Instant::now() + Duration::from_millis(self.settings.shutdown_flush_ms);
        while !self.spool.is_empty() {
            match tokio::time::timeout_at(deadline, self.send_some(&mut sent)).await {
                Ok(Step::Progress) => continue,
                Ok(Step::Empty) | Ok(Step::Retry(_)) | Err(_) => break,
            }
        }
        let left = self.spool.len();
        if left > 0 {
            warn!(readings = left, "InfluxDB writer stopped; the rest stays spooled for the next start");
        } else {
            info!("InfluxDB writer stopped with an empty spool");
        }
    }

    /// Back off, still trimming a full spool (policy `drop-oldest`) as readings arrive.
    async fn sleep_trimming(&self, wait: Duration, stop: &CancellationToken, sent: &mut Vec<u64>) {
        let until = Instant::now() + wait;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(until) => return,
                _ = self.spool.appended.notified() => self.trim(sent).await,
            }
        }
    }

    /// Policy `drop-oldest`: delete the oldest lines beyond the limit, and count them. The
    /// oldest are those InfluxDB took last (`sent`): they go first, as sent.
    async fn trim(&self, sent: &mut Vec<u64>) {
        if self.spool.policy != SpoolFullPolicy::DropOldest || self.spool.len() <= self.spool.max_readings() {
            return;
        }
        if !sent.is_empty() && self.remove(sent.clone()).await {
            sent.clear();
        }
        let excess = self.spool.len().saturating_sub(self.spool.max_readings());
        if excess == 0 || !sent.is_empty() {
            return;
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.outbox_drop_oldest(excess)).await {
            Ok(Ok(n)) => {
                Metrics::inc(&self.metrics.influx.spool_dropped, n);
                self.spool.removed(n);
                warn!(
                    dropped = n,
                    limit = self.spool.max_readings(),
                    "InfluxDB spool full: dropped the oldest unsent readings (they stay in the embedded store)"
                );
            }
            Ok(Err(e)) => error!(error = %e, "cannot trim the InfluxDB spool"),
            Err(e) => error!(error = %e, "spool task failed"),
        }
    }

    /// Send the head of the spool after the lines of `sent` (batches InfluxDB took), removing
    /// those meanwhile; split around rejected lines. Batches that go whole are left in `sent`
    /// for the next call to remove, so InfluxDB works on the next batch while the spool's table
    /// removes the last (a removal waits for the store's write lock, which the ingest stage's
    /// commits hold most of the time during a burst).
    ///
    /// Two batches go at once when no point of the second is one of the first's (InfluxDB
    /// takes one request on about one core: two at once went 1.6–2.5× faster on a 2-core
    /// machine, BENCHMARKS.md); otherwise one. Removals stay in the spool's order, so a crash
    /// sends again, in order, everything from the oldest batch not removed: a point is never
    /// left with an older value than the spool's last.
    async fn send_some(&self, sent: &mut Vec<u64>) -> Step {
        let store = self.store.clone();
        let limit = self.settings.batch_size;
        let skip = sent.clone();
        let two = limit.saturating_mul(2);
        let peek = move || store.outbox_peek_except(two, &skip);
        let entries = match tokio::task::spawn_blocking(peek).await {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => {
                error!(error = %e, "cannot read the InfluxDB spool");
                return Step::Retry(None);
            }
            Err(e) => {
                error!(error = %e, "spool task failed");
                return Step::Retry(None);
            }
        };
        if entries.is_empty() {
            if sent.is_empty() {
                self.spool.resync(0);
            } else if self.remove(sent.clone()).await {
                sent.clear();
            } else {
                return Step::Retry(None);
            }
            return Step::Empty;
        }
        // A request ends where a packed run does, so runs go as they were stored.
        let n = entries.boundary(entries.len().min(limit));
        let second = if entries.len() > n && disjoint(&entries, 0..n, n..entries.len()) { entries.len() } else { n };
        let removed = async {
            if sent.is_empty() || self.remove(sent.clone()).await {
                sent.clear();
            }
        };
        let also = async {
            if second > n {
                Some(self.post(&entries, n..second).await)
            } else {
                None
            }
        };
        let (outcome, also, ()) = tokio::join!(self.post(&entries, 0..n), also, removed);
        // What went whole, in order: the first batch, and the second only with it. A second
        // batch written after a first that was not is sent again (its points are not the
        // first's, so the repeat changes nothing).
        let whole = match (&outcome, &also) {
            (Outcome::Written, Some(Outcome::Written)) => second,
            (Outcome::Written, _) => n,
            _ => 0,
        };
        Metrics::inc(&self.metrics.influx.points_written, whole as u64);
        if !sent.is_empty() {
            // The last batches are not removed yet: the next call removes these with those (a
            // removal of lines already gone is no error).
            sent.extend(entries.keys(0..whole));
            return Step::Retry(None);
        }
        *sent = entries.keys(0..whole);
        if let Some(Outcome::Retry { reason, after }) = also.filter(|_| whole == n) {
            Metrics::inc(&self.metrics.influx.write_errors, 1);
            warn!(reason = %crate::model::Escaped(&reason), spooled = self.spool.len(), "InfluxDB write failed; readings stay spooled and will be retried");
            return Step::Retry(after);
        }
        // Ranges still to send, the next one on top: halves are pushed right first so the
        // spool is still written in order.
        let mut ranges = Vec::new();
        match outcome {
            Outcome::Written => return Step::Progress,
            Outcome::Retry { reason, after } => {
                Metrics::inc(&self.metrics.influx.write_errors, 1);
                warn!(reason = %crate::model::Escaped(&reason), spooled = self.spool.len(), "InfluxDB write failed; readings stay spooled and will be retried");
                return Step::Retry(after);
            }
            Outcome::Rejected { status, text } if n == 1 => {
                if !self.dead_letter(entries.line(0), status, &text).await || !self.remove(entries.keys(0..1)).await {
                    return Step::Retry(None);
                }
                Metrics::inc(&self.metrics.influx.points_rejected, 1);
            }
            Outcome::Rejected { .. } => ranges.extend([(n / 2, n), (0, n / 2)]),
        }
        while let Some((a, b)) = ranges.pop() {
            match self.post(&entries, a..b).await {
                Outcome::Written => {
                    if !self.remove(entries.keys(a..b)).await {
                        return Step::Retry(None);
                    }
                    Metrics::inc(&self.metrics.influx.points_written, (b - a) as u64);
                }
                Outcome::Rejected { status, text } if b - a == 1 => {
                    if !self.dead_letter(entries.line(a), status, &text).await || !self.remove(entries.keys(a..b)).await {
                        return Step::Retry(None);
                    }
                    Metrics::inc(&self.metrics.influx.points_rejected, 1);
                }
                Outcome::Rejected { .. } => {
                    let mid = a + (b - a) / 2;
                    ranges.push((mid, b));
                    ranges.push((a, mid));
                }
                Outcome::Retry { reason, after } => {
                    Metrics::inc(&self.metrics.influx.write_errors, 1);
                    warn!(reason = %crate::model::Escaped(&reason), spooled = self.spool.len(), "InfluxDB write failed; readings stay spooled and will be retried");
                    return Step::Retry(after);
                }
            }
        }
        Step::Progress
    }

    /// Send the lines in `range` of `entries`: packed runs of the spool as they were stored,
    /// the other lines gzip'd here (or all as text, with `gzip` off).
    async fn post(&self, entries: &Spooled, range: Range<usize>) -> Outcome {
        let mut request = self.client.post(self.write_url.clone()).header(CONTENT_TYPE, "text/plain; charset=utf-8");
        let body = match entries.body(range, self.settings.gzip) {
            Ok(body) => body,
            Err(e) => return Outcome::Retry { reason: format!("gzip: {e}"), after: None },
        };
        if self.settings.gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response = match request.body(body).send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry { reason: format!("cannot reach InfluxDB: {e}"), after: None },
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Written;
        }
        let after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut text = response.text().await.unwrap_or_default();
        if text.len() > 1000 {
            let mut cut = 1000;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        match status.as_u16() {
            400 | 413 | 422 => Outcome::Rejected { status: status.as_u16(), text },
            _ => Outcome::Retry { reason: format!("HTTP {status}: {}", text.trim()), after },
        }
    }

    async fn remove(&self, keys: Vec<u64>) -> bool {
        let n = keys.len() as u64;
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.outbox_remove(&keys)).await {
            Ok(Ok(())) => {
                self.spool.removed(n);
                true
            }
            // The lines stay spooled and are sent again: harmless, writes are idempotent.
            Ok(Err(e)) => {
                error!(error = %e, "cannot remove sent lines from the InfluxDB spool");
                false
            }
            Err(e) => {
                error!(error = %e, "spool task failed");
                false
            }
        }
    }

    /// Keep a rejected line as a dead letter, with InfluxDB's reason. Written before the line
    /// leaves the spool, so a crash in between repeats the dead letter rather than losing it.
    async fn dead_letter(&self, line: &[u8], status: u16, text: &str) -> bool {
        let text_line = String::from_utf8_lossy(line);
        let device =
            text_line.split_once(",device=").map(|(_, rest)| rest.split([',', ' ']).next().unwrap_or_default().to_owned());
        warn!(device = %crate::model::Escaped(device.as_deref().unwrap_or("-")), status, reason = %crate::model::Escaped(text.trim()), "InfluxDB rejected a point; dead-lettered");
        let letter = DeadLetter {
            id: 0,
            received_at: chrono::Utc::now(),
            topic: "influxdb".to_owned(),
            format: "influx-line-protocol".to_owned(),
            device,
            reason: format!("InfluxDB rejected the point (HTTP {status}): {}", text.trim()),
            payload: line.to_vec(),
        };
        let store = self.store.clone();
        let batch = WriteBatch { dead_letters: vec![letter], ..Default::default() };
        match tokio::task::spawn_blocking(move || store.write(&batch)).await {
            Ok(Ok(_)) => {
                self.metrics.dead_lettered(["InfluxDB rejected the point"]);
                true
            }
            Ok(Err(e)) => {
                error!(error = %e, "cannot store the dead letter of a rejected point");
                false
            }
            Err(e) => {
                error!(error = %e, "store task failed");
                false
            }
        }
    }
}

/// Whether no line of `b` is a point of `a` (series and time, compared by a hash: a collision
/// only makes the two batches go one after the other).
fn disjoint(entries: &Spooled, a: Range<usize>, b: Range<usize>) -> bool {
    let first: rustc_hash::FxHashSet<u32> = entries.point_hashes(a, line_protocol::point_hash).into_iter().collect();
    !entries.point_hashes(b, line_protocol::point_hash).iter().any(|p| first.contains(p))
}
