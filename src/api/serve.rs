//! Serving the router over TCP with limits: a header-read timeout, an idle timeout, a
//! connection limit inside a file-descriptor budget, and graceful shutdown.
//!
//! `axum::serve` has none of these limits, so a few hundred clients that connect and send
//! nothing (or half a request) would hold their sockets forever and starve `/healthz`, the
//! embedded broker and reload of file descriptors. Here each connection is served by hyper's
//! HTTP/1 connection with `header_read_timeout` (which also bounds the wait for the next
//! request on a kept-alive connection), watched for idleness (no bytes either way while no
//! answer is being computed), and counted against `api.max_connections`. When every slot is
//! taken, the connection that has been quiet longest and is not being answered is closed to
//! make room; if every connection is busy answering, the new one is closed at once. So
//! clients that only hold sockets can't lock out a client that asks something.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::ApiSettings;

/// File descriptors kept for everything but HTTP clients: the store, the audit log, the
/// embedded broker's listener and its clients, the MQTT and InfluxDB connections, reading
/// device and profile files on reload, standard streams.
pub const RESERVED_FDS: u64 = 256;
/// Fewest HTTP connections allowed, however low the descriptor limit.
const MIN_CONNECTIONS: usize = 16;

/// The limits one server runs with, after the descriptor budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

/// Raise the soft `RLIMIT_NOFILE` to the hard one and cap `api.max_connections` so that
/// [`RESERVED_FDS`] stay free for the rest of the gateway; logs what was chosen.
pub fn limits(settings: &ApiSettings) -> Limits {
    let fds = raise_fd_limit();
    let max_connections = match fds {
        Some(fds) => {
            let budget = fds.saturating_sub(RESERVED_FDS).max(MIN_CONNECTIONS as u64);
            let chosen = (settings.max_connections as u64).min(budget) as usize;
            if chosen < settings.max_connections {
                warn!(
                    configured = settings.max_connections,
                    chosen,
                    fd_limit = fds,
                    reserved_fds = RESERVED_FDS,
                    "api.max_connections lowered to fit the file-descriptor limit (raise LimitNOFILE to allow more)"
                );
            }
            chosen
        }
        None => settings.max_connections,
    };
    let limits = Limits {
        header_read_timeout: Duration::from_millis(settings.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
        max_connections,
        shutdown_grace: Duration::from_secs(settings.shutdown_grace_s),
    };
    info!(
        fd_limit = fds,
        reserved_fds = RESERVED_FDS,
        max_connections,
        header_read_timeout_ms = settings.header_read_timeout_ms,
        idle_timeout_ms = settings.idle_timeout_ms,
        "HTTP limits"
    );
    limits
}

/// The soft descriptor limit after raising it to the hard limit (if it was lower).
fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            warn!(error = %e, "cannot read the file-descriptor limit");
            return None;
        }
    };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => return Some(hard),
            Err(e) => warn!(error = %e, soft, hard, "cannot raise the file-descriptor limit"),
        }
    }
    Some(soft)
}

/// Serve `router` on `listener` until `shutdown` fires, then give open requests
/// `limits.shutdown_grace` to finish. Handlers see the client's address as
/// `ConnectInfo<SocketAddr>`.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, shutdown: CancellationToken) {
    let slots = Arc::new(Slots::default());
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset before accept: wait a
                    // little instead of spinning, then go on.
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = slots.take(limits.max_connections) else {
            // Every connection is busy answering: this one is closed at once (dropped).
            if last_refusal_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                warn!(max_connections = limits.max_connections, "HTTP connection limit reached; new connections are closed");
                last_refusal_log = Some(Instant::now());
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = slot.activity.clone();
        let io = TokioIo::new(Tracked { inner: stream, activity: activity.clone() });
        let service = hyper::service::service_fn({
            let router = TowerToHyperService::new(router.clone());
            let activity = activity.clone();
            move |request: hyper::Request<Incoming>| {
                let exchange = Arc::new(AtomicU8::new(READING));
                if request.body().is_end_stream() {
                    exchange_answering(&exchange, &activity);
                }
                let (mut parts, body) = request.into_parts();
                parts.extensions.insert(ConnectInfo(addr));
                let body = Body::new(TrackedBody { inner: body, exchange: exchange.clone(), activity: activity.clone() });
                let request = hyper::Request::from_parts(parts, body);
                let answer = hyper::service::Service::call(&router, request);
                let done = ExchangeDone { exchange, activity: activity.clone() };
                async move {
                    let response = answer.await;
                    drop(done);
                    response
                }
            }
        });
        let connection = graceful.watch(builder.serve_connection(io, service));
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        debug!(client = %addr, error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = slot.evicted.cancelled() => debug!(client = %addr, "quiet HTTP connection closed to make room"),
                _ = idle(&activity, idle_timeout) => debug!(client = %addr, "idle HTTP connection closed"),
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        warn!(
            grace_s = limits.shutdown_grace.as_secs(),
            "HTTP requests still open at the end of the shutdown grace; they are cut"
        );
    }
}

/// Resolves once nothing was read or written for `timeout` while no answer was being computed.
async fn idle(activity: &Activity, timeout: Duration) {
    loop {
        let quiet = activity.quiet_for();
        if quiet >= timeout && activity.answering.load(Ordering::Acquire) == 0 {
            return;
        }
        tokio::time::sleep(timeout.saturating_sub(quiet).max(Duration::from_millis(100))).await;
    }
}

/// What one connection is doing, for the idle timeout and for choosing whom to close.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last byte read or written.
    last_io_ms: AtomicU64,
    /// Requests read whole whose answer is being computed or sent.
    answering: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self { start: Instant::now(), last_io_ms: AtomicU64::new(0), answering: AtomicUsize::new(0) }
    }

    fn touch(&self) {
        self.last_io_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Release);
    }

    fn quiet_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_io_ms.load(Ordering::Acquire)))
    }
}

/// One request's state: its body is being read, it is being answered, or it is done.
const READING: u8 = 0;
const ANSWERING: u8 = 1;
const DONE: u8 = 2;

fn exchange_answering(exchange: &AtomicU8, activity: &Activity) {
    if exchange.compare_exchange(READING, ANSWERING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        activity.answering.fetch_add(1, Ordering::AcqRel);
    }
}

/// Dropped when the handler has answered (or was dropped): the request no longer counts as busy.
struct ExchangeDone {
    exchange: Arc<AtomicU8>,
    activity: Arc<Activity>,
}

impl Drop for ExchangeDone {
    fn drop(&mut self) {
        if self.exchange.swap(DONE, Ordering::AcqRel) == ANSWERING {
            self.activity.answering.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The request body, which marks the request as being answered once it was read whole.
struct TrackedBody {
    inner: Incoming,
    exchange: Arc<AtomicU8>,
    activity: Arc<Activity>,
}

impl HttpBody for TrackedBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            exchange_answering(&self.exchange, &self.activity);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes move.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The open connections, for the limit and for closing the quietest one when it is reached.
#[derive(Default)]
struct Slots {
    open: Mutex<HashMap<u64, (Arc<Activity>, CancellationToken)>>,
    next_id: AtomicU64,
}

/// One counted connection; dropping it frees its place.
struct Slot {
    id: u64,
    slots: Arc<Slots>,
    activity: Arc<Activity>,
    evicted: CancellationToken,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl Slots {
    /// A place for a new connection: a free one, or that of the quietest connection not being
    /// answered (which is told to close); `None` if all `max` are busy answering.
    fn take(self: &Arc<Self>, max: usize) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= max {
            let quietest = open
                .iter()
                .filter(|(_, (a, _))| a.answering.load(Ordering::Acquire) == 0)
                .max_by_key(|(_, (a, _))| a.quiet_for())
                .map(|(id, _)| *id)?;
            if let Some((_, evict)) = open.remove(&quietest) {
                evict.cancel();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        let evicted = CancellationToken::new();
        open.insert(id, (activity.clone(), evicted.clone()));
        Some(Slot { id, slots: self.clone(), activity, evicted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quietest_idle_connection_makes_room_and_busy_ones_are_kept() {
        let slots = Arc::new(Slots::default());
        let a = slots.take(2).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let b = slots.take(2).unwrap();
        b.activity.touch();
        // Full: `a` has been quiet longest and is not answering, so it is told to close.
        let c = slots.take(2).unwrap();
        assert!(a.evicted.is_cancelled() && !b.evicted.is_cancelled());
        drop(a);
        // Both remaining connections are answering: nobody is closed, the new one is refused.
        b.activity.answering.fetch_add(1, Ordering::AcqRel);
        c.activity.answering.fetch_add(1, Ordering::AcqRel);
        assert!(slots.take(2).is_none());
        assert!(!b.evicted.is_cancelled() && !c.evicted.is_cancelled());
    }

    #[test]
    fn the_connection_limit_leaves_the_reserved_descriptors() {
        let settings = ApiSettings { max_connections: usize::MAX / 2, ..ApiSettings::default() };
        let limits = limits(&settings);
        let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(limits.max_connections as u64, soft.saturating_sub(RESERVED_FDS).max(16));
    }
}
