//! The upstream connection pool: HTTP/1.1 keep-alive connections to the one backend.
//!
//! Idle connections wait in a lock-free bounded queue, so checking one out or in takes no lock
//! shared by all workers. A connection goes back to the queue when the answer that used it has
//! been read to the end (or was empty) and may carry another (`upstream.rs` decides); an answer
//! dropped half-read closes its connection instead, because the rest of that body would still
//! be on the wire.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use http::uri::Authority;
use tokio::net::TcpStream;

use bytes::BytesMut;
use futures_util::FutureExt as _;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to the backend timed out")]
    Timeout,
    #[error("connecting to the backend failed")]
    Io(#[from] std::io::Error),
}

/// One connection to the backend: the socket's halves and what was read and not yet used.
pub struct Conn {
    pub(crate) rd: OwnedReadHalf,
    /// `None` while a request body is still being written by a task of its own (the answer
    /// came first): such a connection is never reused.
    pub(crate) wr: Option<OwnedWriteHalf>,
    pub(crate) buf: BytesMut,
}

impl Conn {
    pub fn new(tcp: TcpStream) -> Conn {
        let (rd, wr) = tcp.into_split();
        Conn { rd, wr: Some(wr), buf: BytesMut::new() }
    }

    /// Whether this idle connection is known to be unusable without waiting: the backend
    /// closed it, or sent something unasked. Readiness comes from the event loop, so an open,
    /// quiet connection costs no system call.
    pub fn is_stale(&self) -> bool {
        if !self.buf.is_empty() || self.wr.is_none() {
            return true;
        }
        match self.rd.ready(tokio::io::Interest::READABLE).now_or_never() {
            None => false,
            Some(Err(_)) => true,
            // Readable: the end of the stream, or bytes nobody asked for; or nothing after all.
            Some(Ok(_)) => {
                !matches!(self.rd.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

pub struct Pool {
    host: Box<str>,
    port: u16,
    idle: ArrayQueue<Idle>,
    keep: bool,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Pool {
    /// `max_idle` 0 disables keep-alive to the backend (a connection per request).
    pub fn new(
        authority: &Authority,
        default_port: u16,
        max_idle: usize,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Arc<Pool> {
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
    pub async fn checkout(self: &Arc<Self>) -> Result<Pooled, ConnectError> {
        while let Some(idle) = self.idle.pop() {
            // Closed by the backend while it waited (as far as the event loop has seen).
            if idle.since.elapsed() >= self.idle_timeout || idle.conn.is_stale() {
                continue;
            }
            return Ok(Pooled { conn: Some(idle.conn), pool: Arc::downgrade(self), reusable: false, reused: true });
        }
        // Boxed: a connection is opened rarely, and its future (address lookup, TCP connect)
        // would otherwise make every request's future that much larger to build and move.
        Box::pin(self.connect()).await
    }

    /// A new connection, never taken from the idle queue (the retry after a stale one).
    pub async fn connect(self: &Arc<Self>) -> Result<Pooled, ConnectError> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect((&*self.host, self.port)))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let _ = tcp.set_nodelay(true);
        Ok(Pooled { conn: Some(Conn::new(tcp)), pool: Arc::downgrade(self), reusable: false, reused: false })
    }

    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.len()
    }

    fn put(&self, conn: Conn) {
        if self.keep {
            // Full: this connection is one more than the pool keeps; dropping it closes it.
            let _ = self.idle.push(Idle { conn, since: Instant::now() });
        }
    }
}

/// Drops idle connections past `idle_timeout` (or closed) while nobody asks for them.
async fn sweep(pool: Weak<Pool>) {
    let every = match pool.upgrade() {
        Some(p) => (p.idle_timeout / 2).max(Duration::from_millis(500)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        for _ in 0..pool.idle.len() {
            let Some(idle) = pool.idle.pop() else { break };
            if idle.since.elapsed() < pool.idle_timeout && !idle.conn.is_stale() {
                let _ = pool.idle.push(idle);
            }
        }
    }
}

/// A checked-out connection. Back to the pool on drop once marked reusable.
pub struct Pooled {
    conn: Option<Conn>,
    pool: Weak<Pool>,
    reusable: bool,
    /// Taken from the idle queue (rather than opened for this request).
    reused: bool,
}

impl Pooled {
    pub fn conn_mut(&mut self) -> Option<&mut Conn> {
        self.conn.as_mut()
    }

    pub fn reused(&self) -> bool {
        self.reused
    }

    /// The answer that used this connection has been read to its end, and the connection may
    /// carry another.
    pub fn done(&mut self) {
        self.reusable = true;
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if !self.reusable {
            return;
        }
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.upgrade()) {
            pool.put(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::body::Body;
    use crate::upstream::{self, Outgoing};
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

    async fn roundtrip(pool: &Arc<Pool>) -> Bytes {
        let res = upstream::send(pool, Outgoing::new(get())).await.unwrap();
        res.into_body().collect().await.unwrap().to_bytes()
    }

    fn pool(a: &Authority, max_idle: usize) -> Arc<Pool> {
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
        let res = upstream::send(&p, Outgoing::new(get())).await.unwrap();
        drop(res); // body never read
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
