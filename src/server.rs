//! Accepting connections: connection limit, peer deny list before any TLS work, TLS handshake
//! deadline, HTTP/1.1 and HTTP/2 (by ALPN) on one port, idle timeout, graceful drain.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
use crate::context::{ConnInfo, LoggedBody};
use crate::framing::{Ambiguous, AmbiguousFraming, FramingIo};
use crate::metrics::Metrics;

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
    pub service: S,
    pub config: ServerConfig,
    pub metrics: Arc<Metrics>,
    pub peer_filter: Arc<dyn PeerFilter>,
}

fn builders(cfg: &ServerConfig) -> (auto::Builder<TokioExecutor>, auto::Builder<TokioExecutor>) {
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
        .max_pending_accept_reset_streams(Some(50))
        .max_local_error_reset_streams(Some(256))
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
        let Server { listener, tls, service, config, metrics, peer_filter } = self;
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let tracker = TaskTracker::new();
        let (h1, h2) = builders(&config);
        let (h1, h2) = (Arc::new(h1), Arc::new(h2));
        loop {
            // Take a slot before accepting: past max_connections, new connections wait in the
            // kernel's backlog instead of costing us a file descriptor.
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                () = shutdown.cancelled() => break,
            };
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
                tracing::info!(target: "payguard::audit", client_ip = %peer.ip(), guard = "ip", decision = "block", reason = "ip_denied", detail = "peer denied at accept");
                drop(tcp);
                continue;
            }
            let conn = Connection {
                tls: tls.clone(),
                service: service.clone(),
                metrics: metrics.clone(),
                handshake_timeout: config.handshake_timeout,
                idle_timeout: config.idle_timeout,
                h1: h1.clone(),
                h2: h2.clone(),
                max_h2_resets: config.max_h2_resets,
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

struct Connection<S> {
    tls: TlsAcceptor,
    service: S,
    metrics: Arc<Metrics>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    h1: Arc<auto::Builder<TokioExecutor>>,
    h2: Arc<auto::Builder<TokioExecutor>>,
    max_h2_resets: u32,
    shutdown: CancellationToken,
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
    async fn serve(self, tcp: TcpStream, peer: SocketAddr) {
        self.metrics.connections.inc();
        self.metrics.open_connections.inc();
        let _open = OpenGuard(self.metrics.clone());
        let _ = tcp.set_nodelay(true);
        let tls = match tokio::time::timeout(self.handshake_timeout, self.tls.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.metrics.tls_handshake_failures.inc();
                tracing::debug!(target: "payguard::tls", client_ip = %peer.ip(), error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                self.metrics.tls_handshake_failures.inc();
                tracing::debug!(target: "payguard::tls", client_ip = %peer.ip(), "TLS handshake timed out");
                return;
            }
        };
        let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let activity = Arc::new(AtomicU64::new(now_ms()));
        // HTTP/1.1: what hyper settles silently about framing is judged on the raw bytes.
        let ambiguous = Arc::new(Ambiguous::default());
        let framed = if is_h2 { FramingIo::off(tls) } else { FramingIo::new(tls, ambiguous.clone()) };
        let io = TokioIo::new(ActivityIo { inner: framed, last: activity.clone() });
        let requests = AtomicU64::new(0);
        let info = ConnInfo { peer, peer_header: crate::client_ip::ip_header(peer.ip()) };
        let svc = self.service.clone();
        // HTTP/2: requests the client cancels after we took them on (rapid reset past h2's own
        // pending-accept limit: each one already cost a backend request) are budgeted.
        let resets = is_h2.then(|| Arc::new(ResetBudget::new(self.max_h2_resets)));
        let budget = resets.clone();
        let hyper_svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(info.clone());
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
        let idle = self.idle_timeout;
        let mut closing = false;
        loop {
            let last = activity.load(Ordering::Relaxed);
            let deadline = tokio::time::Instant::from_std(epoch() + Duration::from_millis(last) + idle);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(target: "payguard::server", client_ip = %peer.ip(), error = %e, "connection ended with error");
                    }
                    break;
                }
                () = self.shutdown.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    activity.store(now_ms(), Ordering::Relaxed);
                }
                () = ResetBudget::exhausted(resets.as_deref()), if !closing => {
                    tracing::warn!(target: "payguard::server", client_ip = %peer.ip(), limit = self.max_h2_resets, "HTTP/2 client cancelled too many requests; closing the connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    activity.store(now_ms(), Ordering::Relaxed);
                }
                () = tokio::time::sleep_until(deadline) => {
                    if now_ms().saturating_sub(activity.load(Ordering::Relaxed)) >= idle.as_millis() as u64 {
                        if closing {
                            // Not a byte moved for a whole idle period since closing began: a
                            // peer that stopped reading (after a PING/SETTINGS flood, say) keeps
                            // the GOAWAY or the rest of a response from ever being written.
                            tracing::debug!(target: "payguard::server", client_ip = %peer.ip(), "connection stalled while closing; dropping it");
                            break;
                        }
                        // Graceful: an HTTP/1 request in progress finishes, HTTP/2 gets GOAWAY.
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        activity.store(now_ms(), Ordering::Relaxed);
                    }
                }
            }
        }
    }
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

/// Records the time of the last successful read or write, for the idle timeout.
struct ActivityIo<T> {
    inner: T,
    last: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
