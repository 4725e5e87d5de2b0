//! The upstream connection pool: HTTP/1.1 keep-alive connections to the one backend.
//!
//! Idle connections wait in a lock-free bounded queue, so checking one out or in takes no lock
//! shared by all workers. A connection goes back to the queue when the response body that used
//! it has been read to the end (or was empty); a response dropped half-read closes its
//! connection instead, because the rest of that body would still be on the wire.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use http::uri::Authority;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use http_body::Body as HttpBody;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to the backend timed out")]
    Timeout,
    #[error("connecting to the backend failed")]
    Io(#[from] std::io::Error),
    #[error("HTTP handshake with the backend failed")]
    Handshake(#[from] hyper::Error),
}

const UPSTREAM_READ_BUF: usize = 16 * 1024;

struct Idle<B> {
    sender: http1::SendRequest<B>,
    since: Instant,
}

/// Generic over the request body type `B` (payguard's own `Body` in practice), so the pool knows
/// nothing of how bodies are made.
pub struct Pool<B> {
    host: Box<str>,
    port: u16,
    idle: ArrayQueue<Idle<B>>,
    keep: bool,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl<B> Pool<B>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// `max_idle` 0 disables keep-alive to the backend (a connection per request).
    pub fn new(
        authority: &Authority,
        default_port: u16,
        max_idle: usize,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Arc<Pool<B>> {
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let pool = Arc::new(Pool {
            host: host.into(),
            port: authority.port_u16().unwrap_or(default_port),
            // ArrayQueue needs a capacity of at least one; `keep` says whether to use it.
            idle: ArrayQueue::new(max_idle.max(1)),
            keep: max_idle > 0,
            connect_timeout,
            idle_timeout,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sweep(Arc::downgrade(&pool)));
        }
        pool
    }

    /// An idle connection that is still open, or a new one.
    pub async fn checkout(self: &Arc<Self>) -> Result<Pooled<B>, ConnectError> {
        while let Some(idle) = self.idle.pop() {
            if idle.sender.is_closed() || idle.since.elapsed() >= self.idle_timeout {
                continue;
            }
            let mut sender = idle.sender;
            // Usually ready at once; right after the previous response ended the connection
            // task may still be finishing it. A connection that closes meanwhile errors here.
            if sender.ready().await.is_ok() {
                return Ok(Pooled { sender: Some(sender), pool: Arc::downgrade(self), reusable: false });
            }
        }
        // Boxed: a connection is opened rarely, and its future (address lookup, TCP connect,
        // handshake) would otherwise make every request's future that much larger to build
        // and move.
        Box::pin(self.connect()).await
    }

    /// A new connection, never taken from the idle queue (the retry after a stale one).
    pub async fn connect(self: &Arc<Self>) -> Result<Pooled<B>, ConnectError> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect((&*self.host, self.port)))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let _ = tcp.set_nodelay(true);
        // The read buffer per backend connection (hyper's default grows to ~400 KiB): a client
        // that stops reading holds it until send_timeout; 16 KiB keeps a thousand of them cheap.
        let (sender, conn) = http1::Builder::new().max_buf_size(UPSTREAM_READ_BUF).handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(target: "payguard::proxy", error = %e, "backend connection ended with an error");
            }
        });
        Ok(Pooled { sender: Some(sender), pool: Arc::downgrade(self), reusable: false })
    }
}

impl<B> Pool<B> {
    fn put(&self, sender: http1::SendRequest<B>) {
        if self.keep && !sender.is_closed() {
            // Full: this connection is one more than the pool keeps; dropping it closes it.
            let _ = self.idle.push(Idle { sender, since: Instant::now() });
        }
    }
}

/// Drops idle connections past the idle timeout, so a burst does not keep backend sockets open
/// for longer than `pool_idle_timeout`.
async fn sweep<B>(pool: Weak<Pool<B>>) {
    let every = match pool.upgrade() {
        Some(p) => (p.idle_timeout / 2).max(Duration::from_millis(500)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        for _ in 0..pool.idle.len() {
            let Some(idle) = pool.idle.pop() else { break };
            if !idle.sender.is_closed() && idle.since.elapsed() < pool.idle_timeout {
                let _ = pool.idle.push(idle);
            }
        }
    }
}

/// A checked-out connection. Back to the pool on drop once marked reusable.
pub struct Pooled<B> {
    sender: Option<http1::SendRequest<B>>,
    pool: Weak<Pool<B>>,
    reusable: bool,
}

impl<B> Pooled<B> {
    pub fn sender(&mut self) -> Option<&mut http1::SendRequest<B>> {
        self.sender.as_mut()
    }

    /// The response that used this connection has been read to its end.
    pub fn done(&mut self) {
        self.reusable = true;
    }
}

impl<B> Drop for Pooled<B> {
    fn drop(&mut self) {
        if !self.reusable {
            return;
        }
        if let (Some(sender), Some(pool)) = (self.sender.take(), self.pool.upgrade()) {
            pool.put(sender);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::body::Body;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http::Request;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A backend answering every request on a connection with "ok", closing after `per_conn`
    /// requests; counts the connections it accepted.
    async fn backend(per_conn: usize) -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for _ in 0..per_conn {
                        let mut seen = Vec::new();
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            let n = tcp.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            seen.extend_from_slice(&buf[..n]);
                        }
                        let body = "x".repeat(64);
                        let res = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        if tcp.write_all(res.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (Authority::try_from(addr.to_string()).unwrap(), accepted)
    }

    fn get() -> Request<Body> {
        Request::builder().uri("/").header("host", "shop").body(Body::empty()).unwrap()
    }

    async fn roundtrip(pool: &Arc<Pool<Body>>) -> Bytes {
        let mut conn = pool.checkout().await.unwrap();
        let res = conn.sender().unwrap().send_request(get()).await.unwrap();
        let body = Body::upstream(res.into_body(), conn);
        body.collect().await.unwrap().to_bytes()
    }

    fn pool(a: &Authority, max_idle: usize) -> Arc<Pool<Body>> {
        Pool::new(a, 80, max_idle, Duration::from_secs(2), Duration::from_secs(60))
    }

    #[tokio::test]
    async fn a_read_to_the_end_response_returns_its_connection() {
        let (a, accepted) = backend(usize::MAX).await;
        let p = pool(&a, 4);
        for _ in 0..20 {
            assert_eq!(roundtrip(&p).await.len(), 64);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_not_reused() {
        // One request per connection: each pooled connection is closed by the time it is
        // checked out again, and the request still succeeds on a new one.
        let (a, accepted) = backend(1).await;
        let p = pool(&a, 4);
        for _ in 0..5 {
            assert_eq!(roundtrip(&p).await.len(), 64);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_half_read_response_closes_its_connection() {
        let (a, accepted) = backend(usize::MAX).await;
        let p = pool(&a, 4);
        let mut conn = p.checkout().await.unwrap();
        let res = conn.sender().unwrap().send_request(get()).await.unwrap();
        drop(Body::upstream(res.into_body(), conn)); // body never read
        assert_eq!(roundtrip(&p).await.len(), 64);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn max_idle_zero_keeps_nothing() {
        let (a, accepted) = backend(usize::MAX).await;
        let p = pool(&a, 0);
        for _ in 0..3 {
            roundtrip(&p).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn connect_errors_are_typed() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = Authority::try_from(l.local_addr().unwrap().to_string()).unwrap();
        drop(l);
        assert!(matches!(pool(&a, 1).checkout().await, Err(ConnectError::Io(_))));
    }
}
