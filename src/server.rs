//! Accepting connections: connection limit (refusing past it), peer deny list before any TLS
//! work, TLS handshake deadline, HTTP/1.1 and HTTP/2 (by ALPN) on one port, idle and send
//! timeouts, graceful drain.

use std::convert::Infallible;
use std::future::Future as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::config::ServerConfig;
use crate::context::{ConnInfo, LoggedBody, Misdirected};
use crate::framing::{Ambiguous, AmbiguousFraming, FramingIo};
use crate::metrics::Metrics;
use crate::tcp_info::Delivery;

/// Decides, from the peer address alone, whether a connection may even start TLS.
pub trait PeerFilter: Send + Sync + 'static {
    fn allowed(&self, peer: IpAddr) -> bool;
}

impl<F: Fn(IpAddr) -> bool + Send + Sync + 'static> PeerFilter for F {
    fn allowed(&self, peer: IpAddr) -> bool {
        self(peer)
    }
}

pub struct Server<S> {
    pub listener: TcpListener,
    pub tls: TlsAcceptor,
    /// The certificate the acceptor serves, to tell which hosts it covers.
    pub certs: Arc<crate::tls::CertResolver>,
    pub service: S,
    pub config: ServerConfig,
    pub metrics: Arc<Metrics>,
    pub peer_filter: Arc<dyn PeerFilter>,
}

pub(crate) fn builders(cfg: &ServerConfig) -> (auto::Builder<TokioExecutor>, auto::Builder<TokioExecutor>) {
    let mut h1 = auto::Builder::new(TokioExecutor::new()).http1_only();
    h1.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        // Room for heads past max_header_size, so the route layer answers them with its exact
        // 431; only a head past twice the bound is refused by hyper (431, empty body).
        .max_buf_size(cfg.max_header_size.saturating_mul(2).max(8192))
        .keep_alive(true)
        .half_close(false);
    let mut h2 = auto::Builder::new(TokioExecutor::new()).http2_only();
    h2.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.max_h2_streams)
        .max_header_list_size(u32::try_from(cfg.max_header_size).unwrap_or(u32::MAX))
        // Rapid reset (CVE-2023-44487): streams cancelled before they were taken on cost only
        // decoding, but an attacker reconnects after each GOAWAY, so fewer per connection is
        // less work per reconnect; 20 is h2's default.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256))
        // Unsent response data per stream (hyper: 400 KiB): a client reading slowly on 128 streams
        // would pin 50 MiB per connection; 64 KiB keeps it at 8 MiB.
        .max_send_buf_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    (h1, h2)
}

impl<S> Server<S>
where
    S: Service<Request<Incoming>, Response = Response<LoggedBody>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    /// Serves until `shutdown` fires, then drains in-flight connections for up to
    /// `shutdown_grace`.
    pub async fn run(self, shutdown: CancellationToken) {
        let Server { listener, tls, certs, service, config, metrics, peer_filter } = self;
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let tracker = TaskTracker::new();
        let (h1, h2) = builders(&config);
        let (h1, h2) = (Arc::new(h1), Arc::new(h2));
        let mut refusals = RefusalLog::default();
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(target: "payguard::server", error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => break,
            };
            if !peer_filter.allowed(peer.ip()) {
                crate::rescue::refused_connection(peer.ip(), "ip", "ip_denied", &"peer denied at accept");
                drop(tcp);
                continue;
            }
            // Past max_connections a new connection is closed at once (a reset, before any TLS
            // work): the client learns it now instead of hanging in the kernel's backlog, and
            // we never hold more than max_connections sockets (plus this one, for a moment).
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                refuse(tcp);
                metrics.connections_refused.inc();
                let _ = refusals.refused(config.max_connections);
                continue;
            };
            let conn = Connection {
                tls: tls.clone(),
                certs: certs.clone(),
                service: service.clone(),
                metrics: metrics.clone(),
                handshake_timeout: config.handshake_timeout,
                idle_timeout: config.idle_timeout,
                send_timeout: config.send_timeout,
                min_send_rate: config.min_send_rate,
                body_read_timeout: config.body_read_timeout,
                h1: h1.clone(),
                h2: h2.clone(),
                max_h2_resets: config.max_h2_resets,
                max_h2_control_frames: config.max_h2_control_frames,
                shutdown: shutdown.clone(),
            };
            tracker.spawn(async move {
                let _permit = permit;
                conn.serve(tcp, peer).await;
            });
        }
        drop(listener);
        tracker.close();
        if tokio::time::timeout(config.shutdown_grace, tracker.wait()).await.is_err() {
            tracing::warn!(target: "payguard::server", remaining = tracker.len(), "shutdown grace elapsed; closing remaining connections");
        }
    }
}

/// Closes a connection with a reset: nothing to flush, and no TIME_WAIT left on our side.
fn refuse(tcp: TcpStream) {
    let _ = tcp.set_zero_linger();
    drop(tcp);
}

/// At most one warning a second about refused connections, however many there are.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    unreported: u64,
}

impl RefusalLog {
    /// Counts one refusal; returns whether it was logged.
    fn refused(&mut self, max_connections: usize) -> bool {
        self.unreported += 1;
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return false;
        }
        tracing::warn!(target: "payguard::server", refused = self.unreported, max_connections, "connection limit reached; refusing new connections (count since the last such line)");
        self.last = Some(now);
        self.unreported = 0;
        true
    }
}

struct Connection<S> {
    tls: TlsAcceptor,
    certs: Arc<crate::tls::CertResolver>,
    service: S,
    metrics: Arc<Metrics>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    send_timeout: Duration,
    min_send_rate: u64,
    body_read_timeout: Duration,
    h1: Arc<auto::Builder<TokioExecutor>>,
    h2: Arc<auto::Builder<TokioExecutor>>,
    max_h2_resets: u32,
    max_h2_control_frames: u32,
    shutdown: CancellationToken,
}

/// A request for a host other than the one the connection was opened for (its SNI) that the
/// certificate does not cover: the client should not have sent it here (RFC 9110 §15.5.20).
fn misdirected<B>(req: &Request<B>, sni: &str, certs: &crate::tls::CertResolver) -> bool {
    let host = match req.uri().authority() {
        Some(a) => Some(a.host()),
        None => req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()),
    };
    let Some(host) = host else { return false };
    // Borrowed unless the host has capitals: nothing is allocated for the usual request.
    let host = crate::rules::router::normalize_host(host);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&host);
    !host.eq_ignore_ascii_case(sni) && !certs.covers(host)
}

struct OpenGuard(Arc<Metrics>);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.dec();
    }
}

impl<S> Connection<S>
where
    S: Service<Request<Incoming>, Response = Response<LoggedBody>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    /// The TLS handshake within `handshake_timeout`; a failure is counted and logged here.
    async fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        match tokio::time::timeout(self.handshake_timeout, self.tls.accept(tcp)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                self.metrics.tls_handshake_failures.inc();
                tracing::debug!(target: "payguard::tls", client_ip = %peer.ip(), error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.metrics.tls_handshake_failures.inc();
                self.metrics.connection_timeout("handshake");
                tracing::debug!(target: "payguard::tls", client_ip = %peer.ip(), "TLS handshake timed out");
                None
            }
        }
    }

    /// Counts and logs how a connection ended on its own (not by one of our timers).
    fn ended(
        &self,
        res: Result<(), Box<dyn std::error::Error + Send + Sync>>,
        flooded: bool,
        peer: SocketAddr,
        clock: &Clock,
    ) {
        if flooded {
            self.metrics.h2_abuse("control_frames");
            tracing::warn!(target: "payguard::server", client_ip = %peer.ip(), limit = self.max_h2_control_frames, "HTTP/2 client sent too many SETTINGS/PING frames; connection closed");
            clock.reset_on_close.store(true, Ordering::Relaxed);
        } else if let Err(e) = res {
            match e.downcast_ref::<hyper::Error>() {
                Some(h) if h.is_timeout() => self.metrics.connection_timeout("header"),
                // hyper answered these itself (400 / 431, empty body): count them and say why,
                // as the guards do for theirs.
                Some(h) if h.is_parse_too_large() || h.is_parse() => {
                    let kind = if h.is_parse_too_large() { "too_large" } else { "parse" };
                    self.metrics.malformed_request(kind);
                    crate::rescue::refused_connection(peer.ip(), "http", kind, h);
                }
                _ => {}
            }
            tracing::debug!(target: "payguard::server", client_ip = %peer.ip(), error = %e, "connection ended with error");
        }
    }

    /// A connection's timer fired: judge the send watch, a blocked write and idleness.
    fn timer(&self, watch: &mut SendWatch, clock: &Clock, fd: RawFd, peer: SocketAddr, idle_closing: bool) -> Timer {
        let now = now_ms();
        let blocked = clock.blocked_since.load(Ordering::Relaxed);
        let send = self.send_timeout.as_millis() as u64;
        let close = |why: &'static str| {
            clock.reset_on_close.store(true, Ordering::Relaxed);
            tracing::debug!(target: "payguard::server", client_ip = %peer.ip(), "{why}");
            Timer::Close
        };
        if let Some(s) = watch.check(now, &clock.wrote_at, || crate::tcp_info::delivery(fd)) {
            self.metrics.connection_timeout("send");
            tracing::debug!(target: "payguard::server", client_ip = %peer.ip(), waiting = s.waiting, took = s.took, required = s.required, "send timeout: client reads too slowly");
            clock.reset_on_close.store(true, Ordering::Relaxed);
            return Timer::Close;
        }
        if !watch.enabled && blocked != NOT_BLOCKED && now.saturating_sub(blocked) >= send {
            // The client stopped reading: nothing more can be sent, so no goodbye.
            self.metrics.connection_timeout("send");
            return close("send timeout: client stopped reading");
        }
        if now.saturating_sub(clock.last.load(Ordering::Relaxed)) >= self.idle_timeout.as_millis() as u64 {
            if idle_closing {
                // A whole idle period more without progress: the drain is stuck.
                self.metrics.connection_timeout("idle");
                return close("idle connection did not drain; closing");
            }
            return Timer::Idle;
        }
        Timer::Wait
    }

    async fn serve(self, tcp: TcpStream, peer: SocketAddr) {
        self.metrics.connections.inc();
        self.metrics.open_connections.inc();
        let _open = OpenGuard(self.metrics.clone());
        let _ = tcp.set_nodelay(true);
        let Some(mut tls) = self.handshake(tcp, peer).await else { return };
        // Encrypted bytes waiting for the socket (default limit 64 KiB): what a client that stops
        // reading pins in memory, besides the kernel's buffers, until send_timeout.
        tls.get_mut().1.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let sni: Option<Arc<str>> = tls.get_ref().1.server_name().map(Arc::from);
        // Valid while `conn` (which owns the socket) lives, and only used while it does.
        let fd = tls.get_ref().0.as_raw_fd();
        let mut watch = SendWatch::new(self.send_timeout, self.min_send_rate);
        let clock = Arc::new(Clock::new());
        // HTTP/1.1: what hyper settles silently about framing is judged on the raw bytes.
        let ambiguous = Arc::new(Ambiguous::default());
        let flooded = Arc::new(AtomicBool::new(false));
        let framed = if is_h2 {
            FramingIo::h2(tls, self.max_h2_control_frames, flooded.clone())
        } else {
            FramingIo::new(tls, ambiguous.clone())
        };
        let io = TokioIo::new(ActivityIo { inner: framed, clock: clock.clone() });
        let requests = AtomicU64::new(0);
        let info = ConnInfo {
            peer,
            peer_header: crate::client_ip::ip_header(peer.ip()),
            body_read_timeout: Some(self.body_read_timeout),
        };
        let svc = self.service.clone();
        // HTTP/2: requests the client cancels after we took them on (rapid reset past h2's own
        // pending-accept limit: each one already cost a backend request) are budgeted.
        let resets = is_h2.then(|| Arc::new(ResetBudget::new(self.max_h2_resets)));
        let budget = resets.clone();
        let certs = self.certs.clone();
        let hyper_svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(info.clone());
            if sni.as_deref().is_some_and(|sni| misdirected(&req, sni, &certs)) {
                req.extensions_mut().insert(Misdirected);
            }
            if ambiguous.contains(requests.fetch_add(1, Ordering::Relaxed)) {
                req.extensions_mut().insert(AmbiguousFraming);
            }
            let res = svc.clone().call(req);
            let watch = budget.clone().map(|budget| CancelWatch { budget, done: false });
            async move {
                let res = res.await;
                if let Some(mut w) = watch {
                    w.done = true;
                }
                res
            }
        });
        let builder = if is_h2 { &self.h2 } else { &self.h1 };
        let conn = builder.serve_connection(io, hyper_svc);
        tokio::pin!(conn);
        // What the control below asks of the connection ([`GRACEFUL`], [`CLOSE`]).
        let asks = AtomicU8::new(0);
        let control = async {
            let idle = self.idle_timeout.as_millis() as u64;
            let send = self.send_timeout.as_millis() as u64;
            // graceful: asked (server drain, reset budget or idle); idle_closing: by the idle timer.
            let (mut graceful, mut idle_closing) = (false, false);
            let ask_graceful = |graceful: &mut bool| {
                asks.fetch_or(GRACEFUL, Ordering::Relaxed);
                *graceful = true;
            };
            loop {
                // A write may block while we sleep, unseen: look again at least every send_timeout,
                // then sleep until exactly blocked + send_timeout.
                let blocked = clock.blocked_since.load(Ordering::Relaxed);
                // Where the kernel tells how much the client takes, the watch judges that instead.
                let send_check = if watch.enabled {
                    u64::MAX
                } else if blocked == NOT_BLOCKED {
                    now_ms().saturating_add(send)
                } else {
                    blocked.saturating_add(send)
                };
                let wake = clock
                    .last
                    .load(Ordering::Relaxed)
                    .saturating_add(idle)
                    .min(send_check)
                    .min(watch.next(clock.wrote_at.load(Ordering::Relaxed)));
                let deadline = tokio::time::Instant::from_std(epoch() + Duration::from_millis(wake));
                tokio::select! {
                    () = self.shutdown.cancelled(), if !graceful => ask_graceful(&mut graceful),
                    () = ResetBudget::exhausted(resets.as_deref()), if !graceful => {
                        self.metrics.h2_abuse("resets");
                        tracing::warn!(target: "payguard::server", client_ip = %peer.ip(), limit = self.max_h2_resets, "HTTP/2 client cancelled too many requests; closing the connection");
                        ask_graceful(&mut graceful);
                        // One idle period to drain, like an idle close; then it is dropped.
                        idle_closing = true;
                        clock.touch();
                    }
                    // The first write since the watch last looked: it may have to look sooner.
                    () = clock.first_write.notified(), if watch.waits_for_writes() => {}
                    () = tokio::time::sleep_until(deadline) => match self.timer(&mut watch, &clock, fd, peer, idle_closing) {
                        Timer::Wait => {}
                        Timer::Close => {
                            asks.fetch_or(CLOSE, Ordering::Relaxed);
                            return;
                        }
                        Timer::Idle => {
                            // Graceful: an HTTP/1 request in progress may finish, HTTP/2 gets
                            // GOAWAY; it gets one more idle period to do so.
                            if !graceful {
                                ask_graceful(&mut graceful);
                            }
                            idle_closing = true;
                            clock.touch();
                        }
                    },
                }
            }
        };
        tokio::pin!(control);
        // The control is polled only when one of its own wake-ups fired (a timer, the drain, a
        // notification), not on every wake of the connection: a busy connection wakes for each
        // read and write, and polling the control's four idle futures each time cost some 2,000
        // instructions a request.
        let flag = Arc::new(WakeFlag { woken: AtomicBool::new(true), task: AtomicWaker::new() });
        let control_waker = Waker::from(flag.clone());
        let mut graceful = false;
        let ended = std::future::poll_fn(|cx| {
            flag.task.register(cx.waker());
            if flag.woken.swap(false, Ordering::AcqRel) {
                // Never polled again once it has closed the connection: that ends this future.
                let _ = control.as_mut().poll(&mut Context::from_waker(&control_waker));
            }
            let asked = asks.load(Ordering::Relaxed);
            if asked & CLOSE != 0 {
                return Poll::Ready(None);
            }
            if asked & GRACEFUL != 0 && !graceful {
                conn.as_mut().graceful_shutdown();
                graceful = true;
            }
            conn.as_mut().poll(cx).map(Some)
        })
        .await;
        if let Some(res) = ended {
            self.ended(res, flooded.load(Ordering::Relaxed), peer, &clock);
        }
    }
}

/// What a connection's control asks of it: close gracefully (HTTP/1: after the request in
/// progress; HTTP/2: GOAWAY) ...
const GRACEFUL: u8 = 1;
/// ... or close now.
const CLOSE: u8 = 2;

/// The waker of a connection's control: notes that the control has something to look at, then
/// wakes the connection's task.
struct WakeFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// What a connection's timer decided.
enum Timer {
    /// Nothing is due yet.
    Wait,
    /// Close now (a reset: the client takes nothing more).
    Close,
    /// Idle for `idle_timeout`: start a graceful close.
    Idle,
}

/// Counts the requests an HTTP/2 client cancelled on one connection in a fixed 10-second
/// window; past `limit`, [`ResetBudget::exhausted`] fires once.
struct ResetBudget {
    limit: u32,
    window: Mutex<(Instant, u32)>,
    exhausted: Notify,
}

impl ResetBudget {
    const WINDOW: Duration = Duration::from_secs(10);

    fn new(limit: u32) -> ResetBudget {
        ResetBudget { limit, window: Mutex::new((Instant::now(), 0)), exhausted: Notify::new() }
    }

    fn cancelled(&self) {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if w.0.elapsed() >= Self::WINDOW {
            *w = (Instant::now(), 0);
        }
        w.1 = w.1.saturating_add(1);
        if w.1 == self.limit.saturating_add(1) {
            self.exhausted.notify_one();
        }
    }

    /// Resolves when the budget is spent; never for a connection without one (HTTP/1).
    async fn exhausted(budget: Option<&ResetBudget>) {
        match budget {
            Some(b) => b.exhausted.notified().await,
            None => std::future::pending().await,
        }
    }
}

/// Dropped before its request produced a response: the client cancelled it.
struct CancelWatch {
    budget: Arc<ResetBudget>,
    done: bool,
}

impl Drop for CancelWatch {
    fn drop(&mut self) {
        if !self.done {
            self.budget.cancelled();
        }
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

const NOT_BLOCKED: u64 = u64::MAX;

const TLS_BUFFER_LIMIT: usize = 32 * 1024;

/// The slow-reader check: while data waits for the client, the client must take at least
/// `min_send_rate` bytes per second of it (and at least one byte, or all of it if that is less)
/// within each `send_timeout`. It looks at the kernel's counters ([`crate::tcp_info`]) shortly
/// after a write, so the clock starts when data starts waiting, not once every buffer on the way
/// is full (which, for a thousand slow readers, takes long), and a client reading slowly but
/// steadily is not cut off because a full buffer keeps payguard's writes waiting. Where the
/// kernel cannot tell, a write that waits `send_timeout` closes the connection instead.
struct SendWatch {
    timeout: u64,
    min_rate: u64,
    /// Off where the kernel cannot tell (then only the blocked-write check runs).
    enabled: bool,
    window: Option<SendWindow>,
}

#[derive(Debug, Clone, Copy)]
struct SendWindow {
    /// When the client must have taken its share (ms since [`epoch`]).
    due: u64,
    /// When `acked` and `waiting` were read.
    since: u64,
    acked: u64,
    waiting: u64,
}

/// Why the watch gave up on a client.
#[derive(Debug, PartialEq, Eq)]
struct Stalled {
    waiting: u64,
    took: u64,
    required: u64,
}

impl SendWatch {
    fn new(timeout: Duration, min_rate: u64) -> Self {
        SendWatch { timeout: timeout.as_millis() as u64, min_rate, enabled: true, window: None }
    }

    /// How long after a write the watch looks whether data waits: soon enough to start the
    /// window near the write, late enough that a client keeping up has taken it by then.
    fn probe_delay(&self) -> u64 {
        (self.timeout / 2).min(1000)
    }

    fn waits_for_writes(&self) -> bool {
        self.enabled && self.window.is_none()
    }

    /// When to look next, given the time of the first write since the last look.
    fn next(&self, wrote_at: u64) -> u64 {
        match self.window {
            _ if !self.enabled => u64::MAX,
            Some(w) => w.due,
            None if wrote_at != NOT_BLOCKED => wrote_at.saturating_add(self.probe_delay()),
            None => u64::MAX,
        }
    }

    /// Looks if it is time; `Some` when the client has not kept up and must be dropped.
    fn check(
        &mut self,
        now: u64,
        wrote_at: &AtomicU64,
        delivery: impl FnOnce() -> Option<Delivery>,
    ) -> Option<Stalled> {
        if now < self.next(wrote_at.load(Ordering::Relaxed)) {
            return None;
        }
        let first_write = wrote_at.swap(NOT_BLOCKED, Ordering::Relaxed);
        let Some(d) = delivery() else {
            self.enabled = false;
            self.window = None;
            return None;
        };
        let due = match self.window.take() {
            None => first_write.saturating_add(self.timeout),
            Some(w) => {
                let took = d.acked.saturating_sub(w.acked);
                let rate = self.min_rate.saturating_mul(now.saturating_sub(w.since)) / 1000;
                let required = w.waiting.min(rate.max(1));
                if took < required {
                    return Some(Stalled { waiting: w.waiting, took, required });
                }
                now.saturating_add(self.timeout)
            }
        };
        if d.waiting > 0 {
            self.window = Some(SendWindow { due, since: now, acked: d.acked, waiting: d.waiting });
        }
        None
    }
}

/// What the connection's timers need to know about its I/O, in ms since [`epoch`].
struct Clock {
    /// The last byte read or written.
    last: AtomicU64,
    /// Since when a write has been waiting for the client to read ([`NOT_BLOCKED`]: none is).
    blocked_since: AtomicU64,
    /// Close with a reset (the connection timed out; unsent data is dropped, not lingered on).
    reset_on_close: AtomicBool,
    /// The first write since the [`SendWatch`] last looked ([`NOT_BLOCKED`]: none).
    wrote_at: AtomicU64,
    /// Notified when `wrote_at` is set.
    first_write: Notify,
}

impl Clock {
    fn new() -> Self {
        Clock {
            last: AtomicU64::new(now_ms()),
            blocked_since: AtomicU64::new(NOT_BLOCKED),
            reset_on_close: AtomicBool::new(false),
            wrote_at: AtomicU64::new(NOT_BLOCKED),
            first_write: Notify::new(),
        }
    }

    fn touch(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }

    /// A write (or flush) finished: progress, and nothing is blocked.
    fn wrote(&self) {
        let now = now_ms();
        self.last.store(now, Ordering::Relaxed);
        if self.wrote_at.load(Ordering::Relaxed) == NOT_BLOCKED {
            self.wrote_at.store(now, Ordering::Relaxed);
            self.first_write.notify_one();
        }
        if self.blocked_since.load(Ordering::Relaxed) != NOT_BLOCKED {
            self.blocked_since.store(NOT_BLOCKED, Ordering::Relaxed);
        }
    }

    /// A write (or flush) could not proceed: the blocked clock starts unless it runs already.
    fn blocked(&self) {
        if self.blocked_since.load(Ordering::Relaxed) == NOT_BLOCKED {
            self.blocked_since.store(now_ms(), Ordering::Relaxed);
        }
    }

    fn track<T>(&self, r: &Poll<io::Result<T>>, progress: impl FnOnce(&T) -> bool) {
        match r {
            Poll::Ready(Ok(v)) if progress(v) => self.wrote(),
            Poll::Pending => self.blocked(),
            _ => {}
        }
    }
}

/// Records reads and writes for the idle and send timeouts.
struct ActivityIo {
    inner: FramingIo<tokio_rustls::server::TlsStream<TcpStream>>,
    clock: Arc<Clock>,
}

impl Drop for ActivityIo {
    fn drop(&mut self) {
        if self.clock.reset_on_close.load(Ordering::Relaxed) {
            let _ = self.inner.get_ref().get_ref().0.set_zero_linger();
        }
    }
}

impl AsyncRead for ActivityIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.touch();
        }
        r
    }
}

impl AsyncWrite for ActivityIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.clock.track(&r, |n| *n > 0);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.clock.track(&r, |n| *n > 0);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        // A flush that completes after waiting moved bytes: progress. One that had nothing to
        // wait for is not activity.
        let was_blocked = self.clock.blocked_since.load(Ordering::Relaxed) != NOT_BLOCKED;
        self.clock.track(&r, |()| was_blocked);
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.clock.track(&r, |()| false);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(acked: u64, waiting: u64) -> Option<Delivery> {
        Some(Delivery { acked, waiting })
    }

    #[test]
    fn send_watch_looks_only_after_writes() {
        let mut w = SendWatch::new(Duration::from_secs(10), 1024);
        let wrote_at = AtomicU64::new(NOT_BLOCKED);
        assert_eq!(w.next(NOT_BLOCKED), u64::MAX);
        assert_eq!(w.check(5_000, &wrote_at, || panic!("looked without a write")), None);
        // A write at 1 s: a look 1 s later; the client took it all, so nothing more to watch.
        wrote_at.store(1_000, Ordering::Relaxed);
        assert_eq!(w.next(1_000), 2_000);
        assert_eq!(w.check(1_500, &wrote_at, || panic!("looked too early")), None);
        assert_eq!(w.check(2_000, &wrote_at, || d(500, 0)), None);
        assert_eq!(wrote_at.load(Ordering::Relaxed), NOT_BLOCKED);
        assert!(w.window.is_none() && w.waits_for_writes());
    }

    #[test]
    fn send_watch_drops_a_client_taking_less_than_the_rate_from_the_first_write() {
        let mut w = SendWatch::new(Duration::from_secs(10), 1024);
        let wrote_at = AtomicU64::new(1_000);
        // 64 KiB wait at the look: the window runs from the write, due at 11 s.
        assert_eq!(w.check(2_000, &wrote_at, || d(100, 65_536)), None);
        assert_eq!(w.next(NOT_BLOCKED), 11_000);
        assert!(!w.waits_for_writes());
        // 9 s at 1 KiB/s is 9,216 bytes; it took 32.
        let s = w.check(11_000, &wrote_at, || d(132, 65_504));
        assert_eq!(s, Some(Stalled { waiting: 65_536, took: 32, required: 9_216 }));
    }

    #[test]
    fn send_watch_keeps_a_slow_but_steady_reader_and_one_that_took_all_it_had() {
        let mut w = SendWatch::new(Duration::from_secs(10), 1024);
        let wrote_at = AtomicU64::new(0);
        assert_eq!(w.check(1_000, &wrote_at, || d(0, 200_000)), None);
        // 2 KiB/s: enough; more waits, so a new window from now.
        assert_eq!(w.check(10_000, &wrote_at, || d(18_432, 190_000)), None);
        assert_eq!(w.next(NOT_BLOCKED), 20_000);
        // Only 300 bytes waited and it took them all, though 300 < 9 KiB: then it has caught up.
        let mut w = SendWatch::new(Duration::from_secs(10), 1024);
        assert_eq!(w.check(1_000, &wrote_at, || d(0, 300)), None);
        assert_eq!(w.check(10_000, &wrote_at, || d(300, 0)), None);
        assert!(w.window.is_none());
    }

    #[test]
    fn send_watch_with_no_rate_asks_for_one_byte() {
        let mut w = SendWatch::new(Duration::from_secs(2), 0);
        let wrote_at = AtomicU64::new(0);
        assert_eq!(w.check(1_000, &wrote_at, || d(0, 5_000)), None);
        assert_eq!(w.check(2_000, &wrote_at, || d(1, 4_999)), None);
        assert_eq!(w.check(4_000, &wrote_at, || d(1, 4_999)), Some(Stalled { waiting: 4_999, took: 0, required: 1 }));
    }

    #[test]
    fn send_watch_turns_itself_off_where_the_kernel_cannot_tell() {
        let mut w = SendWatch::new(Duration::from_secs(2), 1024);
        let wrote_at = AtomicU64::new(0);
        assert_eq!(w.check(1_000, &wrote_at, || None), None);
        assert!(!w.enabled && !w.waits_for_writes());
        assert_eq!(w.next(5), u64::MAX);
    }

    #[test]
    fn refusals_are_logged_at_most_once_a_second() {
        let mut log = RefusalLog::default();
        let logged = (0..1_000).filter(|_| log.refused(10)).count();
        assert_eq!(logged, 1);
        assert_eq!(log.unreported, 999);
        // A second later the next refusal is reported with the count since the last line.
        log.last = log.last.and_then(|t| t.checked_sub(Duration::from_secs(1)));
        assert!(log.refused(10));
        assert_eq!(log.unreported, 0);
    }
}
