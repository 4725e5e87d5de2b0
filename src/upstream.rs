//! HTTP/1.1 to the backend, on payguard's own terms: the request is written as bytes (its head
//! encoded here, the body framed by its known length or chunked); the answer is read by
//! `answer.rs`, in the request's own task.
//! No connection task, no channel between the request and its connection: one backend
//! connection carries one exchange at a time, and goes back to the pool (`pool.rs`) once its
//! answer has been read to the end.
//!
//! The client's framing headers never reach the backend: payguard says how long the body is.
//! A connection whose answer came before the request body was all written is not reused.

use std::io;
use std::sync::Arc;

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::BodyExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::OwnedWriteHalf;

use crate::answer::{read_head, AnswerBody, AnswerError, Head};
use crate::body::{Body, BoxError};
use crate::pool::{Conn, ConnectError, Pool, Pooled};

/// Why an exchange with the backend failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Writing the request failed.
    #[error("backend connection: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Answer(#[from] AnswerError),
    /// The request's own body failed (too large, too slow, malformed): the client's doing.
    #[error("request body: {0}")]
    Body(#[source] BoxError),
}

/// How a request's body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Nothing follows the head.
    Nothing,
    Length(u64),
    Chunked,
}

/// Header fields payguard sets on a request as its head is encoded, rather than in its map
/// (where each would cost a hash insert, and often the map's growth): `host` first, as RFC 9112
/// §3.2 asks (it replaces the request's own), `fields` after the request's (those without a
/// value left out). The request must have none of `fields`' names already: the caller removed
/// them.
#[derive(Default, Clone, Copy)]
pub struct Added<'a> {
    pub host: Option<&'a HeaderValue>,
    pub fields: &'a [(&'a HeaderName, Option<&'a HeaderValue>)],
}

/// A request ready to send: its head as bytes, its body, and what the answer's framing depends on.
pub struct Outgoing {
    head: Bytes,
    body: Body,
    sent: Sent,
    head_request: bool,
    /// Can go again on another connection if the first one turns out closed: nothing but the
    /// head, and a method that changes nothing.
    replayable: bool,
}

impl Outgoing {
    /// Encodes `req` (already rewritten for the backend: origin-form target, hop-by-hop headers
    /// gone). Its framing headers are payguard's: `Content-Length` when the body's length is
    /// known, `Transfer-Encoding: chunked` when it is not.
    pub fn new(req: Request<Body>) -> Outgoing {
        let mut req = req;
        Outgoing::take(&mut req, Added::default())
    }

    /// [`Outgoing::new`] without moving the request (its body is taken, the rest is read), with
    /// `added` written into the head as it is encoded.
    pub fn take(req: &mut Request<Body>, added: Added<'_>) -> Outgoing {
        let body = std::mem::replace(req.body_mut(), Body::empty());
        let hint = http_body::Body::size_hint(&body);
        let declared = req.headers().contains_key(header::CONTENT_LENGTH);
        let sent = match hint.exact() {
            Some(0) if !declared && !matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) => {
                Sent::Nothing
            }
            Some(n) => Sent::Length(n),
            None => Sent::Chunked,
        };
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let line = |(n, v): (&HeaderName, &HeaderValue)| n.as_str().len() + v.len() + 4;
        let size = req.headers().iter().map(line).sum::<usize>()
            + added.fields.iter().filter_map(|&(n, v)| Some(line((n, v?)))).sum::<usize>()
            + added.host.map_or(0, |h| h.len() + 8);
        let mut head = BytesMut::with_capacity(size + target.len() + 64);
        head.extend_from_slice(req.method().as_str().as_bytes());
        head.extend_from_slice(b" ");
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        let mut field = |name: &HeaderName, value: &HeaderValue| {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        };
        if let Some(host) = added.host {
            field(&header::HOST, host);
        }
        for (name, value) in req.headers() {
            let replaced = added.host.is_some() && name == header::HOST;
            if !replaced && name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
                field(name, value);
            }
        }
        for &(name, value) in added.fields {
            if let Some(value) = value {
                field(name, value);
            }
        }
        match sent {
            Sent::Nothing => {}
            Sent::Length(n) => {
                head.extend_from_slice(b"content-length: ");
                head.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                head.extend_from_slice(b"\r\n");
            }
            Sent::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        head.extend_from_slice(b"\r\n");
        let head_request = req.method() == Method::HEAD;
        let replayable = sent == Sent::Nothing && matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        Outgoing { head: head.freeze(), body, sent, head_request, replayable }
    }

    /// The same request again, for a replayable one (its body is empty).
    fn again(&self) -> Option<Outgoing> {
        let Outgoing { sent, head_request, replayable, .. } = *self;
        replayable.then(|| Outgoing { head: self.head.clone(), body: Body::empty(), sent, head_request, replayable })
    }
}

/// Sends `out` on a pooled connection, or a new one. A reused connection the backend turns out
/// to have closed before it answered gets a request that changes nothing once more, on a new
/// connection; any other request is not sent twice (it may have been acted on).
pub async fn send(pool: &Arc<Pool>, out: Outgoing) -> Result<Response<Body>, UpstreamError> {
    let conn = pool.checkout().await?;
    let again = if conn.reused() { out.again() } else { None };
    match exchange(conn, out).await {
        Err(UpstreamError::Answer(AnswerError::Closed)) if again.is_some() => {
            let conn = Box::pin(pool.connect()).await?;
            match again {
                Some(out) => exchange(conn, out).await,
                None => Err(AnswerError::Closed.into()),
            }
        }
        answered => answered,
    }
}

/// Sends `out` on `conn` and reads the answer's head; the answer's body reads on from the
/// connection, which it returns to the pool at its end.
async fn exchange(mut conn: Pooled, out: Outgoing) -> Result<Response<Body>, UpstreamError> {
    let Some(c) = conn.conn_mut() else { return Err(AnswerError::Closed.into()) };
    let Outgoing { head, body, sent, head_request, .. } = out;
    let head = match body {
        // Nothing to send but the head (a client's body known to be empty included).
        _ if matches!(sent, Sent::Nothing | Sent::Length(0)) => write_then_read(c, head, None, head_request).await?,
        Body::Full { data } if data.as_ref().is_none_or(|d| d.len() <= INLINE_BODY) => {
            write_then_read(c, head, data, head_request).await?
        }
        body => send_streaming(c, head, body, sent, head_request).await?,
    };
    let Head { parts, framing, keep } = head;
    Ok(Response::from_parts(parts, Body::from_upstream(AnswerBody::new(conn, framing, keep))))
}

/// A buffered body up to this size is written with its head, before the answer is read.
const INLINE_BODY: usize = 64 * 1024;

/// The head and a small buffered body in one write, then the answer's head. A backend that
/// answers without reading (and closes) may break the write: its answer is still read.
async fn write_then_read(
    c: &mut Conn,
    head: Bytes,
    data: Option<Bytes>,
    head_request: bool,
) -> Result<Head, UpstreamError> {
    let Some(wr) = c.wr.as_mut() else { return Err(AnswerError::Closed.into()) };
    let written = match data {
        Some(data) => wr.write_all_buf(&mut head.chain(data)).await,
        None => wr.write_all(&head).await,
    };
    if written.is_err() {
        // Never reused: the backend stopped reading.
        c.wr = None;
    }
    // A write the backend broke says less than what it read: its answer, or its close.
    Ok(read_head(&mut c.rd, &mut c.buf, head_request).await?)
}

/// A body that streams (or is buffered but larger than one write): written as it comes, while
/// the answer is awaited. An answer that comes first is passed on at once, the rest of the
/// body written by a task of its own (a backend may answer before it has read everything, or
/// answer as it reads, as an echo does); that connection is not reused.
async fn send_streaming(
    c: &mut Conn,
    head: Bytes,
    body: Body,
    sent: Sent,
    head_request: bool,
) -> Result<Head, UpstreamError> {
    let Some(wr) = c.wr.take() else { return Err(AnswerError::Closed.into()) };
    let mut writer = Box::pin(write_body(wr, head, body, sent));
    let read = read_head(&mut c.rd, &mut c.buf, head_request);
    tokio::pin!(read);
    let mut write_error = None;
    loop {
        tokio::select! {
            biased;
            done = &mut writer, if write_error.is_none() => match done {
                Ok(wr) => {
                    c.wr = Some(wr);
                    return Ok(read.await?);
                }
                Err(UpstreamError::Body(e)) => return Err(UpstreamError::Body(e)),
                // The backend stopped taking the body: it may have answered, so read on.
                Err(e) => write_error = Some(e),
            },
            head = &mut read => {
                let still_writing = write_error.is_none();
                let head = match (head, write_error) {
                    (Ok(h), _) => h,
                    (Err(_), Some(e)) => return Err(e),
                    (Err(e), None) => return Err(e.into()),
                };
                if still_writing {
                    // Answered before the body was all written: the rest goes on in the background.
                    tokio::spawn(async move {
                        let _ = writer.await;
                    });
                }
                return Ok(head);
            }
        }
    }
}

async fn write_body(
    mut wr: OwnedWriteHalf,
    head: Bytes,
    mut body: Body,
    sent: Sent,
) -> Result<OwnedWriteHalf, UpstreamError> {
    let mut pending = Some(head);
    let mut written = 0u64;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(UpstreamError::Body(e)),
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => {
                written += data.len() as u64;
                if let Sent::Length(n) = sent {
                    if written > n {
                        return Err(UpstreamError::Body("the body is longer than its declared length".into()));
                    }
                }
                let head = pending.take().unwrap_or_default();
                if sent == Sent::Chunked {
                    let size = format!("{:x}\r\n", data.len());
                    wr.write_all_buf(&mut head.chain(Bytes::from(size)).chain(data).chain(&b"\r\n"[..])).await?;
                } else {
                    wr.write_all_buf(&mut head.chain(data)).await?;
                }
            }
            Err(frame) => {
                // Trailers: only chunked framing carries them.
                if let (Sent::Chunked, Ok(trailers)) = (sent, frame.into_trailers()) {
                    let mut end = BytesMut::from(&pending.take().unwrap_or_default()[..]);
                    end.extend_from_slice(b"0\r\n");
                    for (name, value) in &trailers {
                        end.extend_from_slice(name.as_str().as_bytes());
                        end.extend_from_slice(b": ");
                        end.extend_from_slice(value.as_bytes());
                        end.extend_from_slice(b"\r\n");
                    }
                    end.extend_from_slice(b"\r\n");
                    wr.write_all(&end).await?;
                    return Ok(wr);
                }
            }
        }
    }
    if let Sent::Length(n) = sent {
        if written < n {
            return Err(UpstreamError::Body("the body is shorter than its declared length".into()));
        }
    }
    let head = pending.take().unwrap_or_default();
    if sent == Sent::Chunked {
        wr.write_all_buf(&mut head.chain(&b"0\r\n\r\n"[..])).await?;
    } else if !head.is_empty() {
        wr.write_all(&head).await?;
    }
    Ok(wr)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use crate::answer::chunk_size;
    use http::uri::Authority;
    use http::{HeaderMap, StatusCode};
    use http_body::Body as _;
    use tokio::io::AsyncReadExt as _;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    fn outgoing(method: &str, headers: &[(&str, &str)], body: Body) -> Outgoing {
        let mut req = Request::builder().method(method).uri("http://shop/pay?x=1");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        Outgoing::new(req.body(body).unwrap())
    }

    /// A body of unknown length (decoded as it streams).
    fn streaming(data: &[u8]) -> Body {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        Body::decoded(Body::full(gz.finish().unwrap()), crate::decoding::Coding::Gzip)
    }

    /// A chunked body's data, its framing checked.
    fn dechunk(mut wire: BytesMut) -> Vec<u8> {
        let mut data = Vec::new();
        loop {
            let size = chunk_size(&mut wire).unwrap().unwrap() as usize;
            if size == 0 {
                assert_eq!(&wire[..], b"\r\n");
                return data;
            }
            data.extend_from_slice(&wire[..size]);
            assert_eq!(&wire[size..size + 2], b"\r\n");
            wire.advance(size + 2);
        }
    }

    fn head_text(out: &Outgoing) -> String {
        String::from_utf8(out.head.to_vec()).unwrap()
    }

    #[test]
    fn requests_are_framed_by_payguard() {
        let get = outgoing("GET", &[("host", "shop")], Body::empty());
        assert_eq!(head_text(&get), "GET /pay?x=1 HTTP/1.1\r\nhost: shop\r\n\r\n");
        assert!(get.replayable);
        let post = outgoing("POST", &[("host", "shop")], Body::empty());
        assert_eq!(head_text(&post), "POST /pay?x=1 HTTP/1.1\r\nhost: shop\r\ncontent-length: 0\r\n\r\n");
        assert!(!post.replayable);
        // The client's own framing headers never reach the backend: payguard's say what it sends.
        let post = outgoing(
            "POST",
            &[("content-length", "999"), ("transfer-encoding", "chunked"), ("x-a", "b")],
            Body::full("abc"),
        );
        assert_eq!(head_text(&post), "POST /pay?x=1 HTTP/1.1\r\nx-a: b\r\ncontent-length: 3\r\n\r\n");
        let streamed = outgoing("PUT", &[], streaming(b"abcd"));
        assert_eq!(head_text(&streamed), "PUT /pay?x=1 HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(streamed.sent, Sent::Chunked);
        // What payguard adds: Host first, in place of the client's; its own fields last.
        let mut req =
            Request::builder().uri("/a").header("host", "client").header("x-a", "b").body(Body::empty()).unwrap();
        let (xff, ip) = (HeaderName::from_static("x-forwarded-for"), HeaderValue::from_static("192.0.2.1"));
        let host = HeaderValue::from_static("shop.example");
        let out = Outgoing::take(&mut req, Added { host: Some(&host), fields: &[(&xff, Some(&ip)), (&xff, None)] });
        assert_eq!(
            head_text(&out),
            "GET /a HTTP/1.1\r\nhost: shop.example\r\nx-a: b\r\nx-forwarded-for: 192.0.2.1\r\n\r\n"
        );
        // A GET whose client declared an empty body says so.
        let get = outgoing("GET", &[("content-length", "0")], Body::empty());
        assert!(head_text(&get).ends_with("content-length: 0\r\n\r\n"));
        assert!(!get.replayable);
    }

    /// What the backend does with the next request on a connection.
    #[derive(Clone, Copy)]
    enum Then {
        Answer(&'static str),
        AnswerAndClose(&'static str),
        Close,
    }

    /// A backend that reads each request (head and body, by its length or chunked to its end),
    /// hands its bytes to the test and does the next of `script`. Each connection starts again
    /// from the script's start.
    async fn backend(script: Vec<Then>) -> (Arc<Pool>, mpsc::UnboundedReceiver<Vec<u8>>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::unbounded_channel();
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(tcp, script.clone(), tx.clone()));
            }
        });
        let a = Authority::try_from(addr.to_string()).unwrap();
        (Pool::new(&a, 80, 4, Duration::from_secs(5), Duration::from_secs(60)), rx, accepted)
    }

    async fn serve(mut tcp: TcpStream, script: Vec<Then>, tx: mpsc::UnboundedSender<Vec<u8>>) {
        let mut buf = Vec::new();
        for then in script {
            let Some(request) = read_request(&mut tcp, &mut buf).await else { return };
            let _ = tx.send(request);
            match then {
                Then::Answer(a) => tcp.write_all(a.as_bytes()).await.unwrap(),
                Then::AnswerAndClose(a) => return tcp.write_all(a.as_bytes()).await.unwrap(),
                Then::Close => return,
            }
        }
        // Held open until the client closes it.
        let _ = read_request(&mut tcp, &mut buf).await;
    }

    async fn read_request(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                let total = if head.contains("transfer-encoding: chunked") {
                    buf.windows(5).position(|w| w == b"0\r\n\r\n").map(|at| at + 5)
                } else {
                    Some(end + 4 + len).filter(|&t| buf.len() >= t)
                };
                if let Some(total) = total {
                    return Some(buf.drain(..total).collect());
                }
            }
            let n = tcp.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn get() -> Request<Body> {
        Request::builder().uri("/").header("host", "shop").body(Body::empty()).unwrap()
    }

    fn post(body: Body) -> Request<Body> {
        Request::builder().method("POST").uri("/pay").header("host", "shop").body(body).unwrap()
    }

    async fn read_all(res: Response<Body>) -> (Bytes, Option<HeaderMap>) {
        let collected = res.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn a_chunked_answer_is_read_with_its_trailers_and_its_connection_reused() {
        let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n";
        let (pool, _rx, accepted) = backend(vec![Then::Answer(chunked), Then::Answer(chunked)]).await;
        for _ in 0..2 {
            let res = send(&pool, Outgoing::new(get())).await.unwrap();
            assert!(!res.headers().contains_key(header::CONTENT_LENGTH));
            let (body, trailers) = read_all(res).await;
            assert_eq!(&body[..], b"hello world");
            assert_eq!(trailers.unwrap()["x-sum"], "42");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_framed_by_the_close_ends_with_it_and_is_not_reused() {
        // The backend closes after writing: the body is what came before the close.
        let (pool, _rx, accepted) = backend(vec![Then::AnswerAndClose("HTTP/1.1 200 OK\r\n\r\nuntil the end")]).await;
        let res = send(&pool, Outgoing::new(get())).await.unwrap();
        assert_eq!(res.body().size_hint().exact(), None);
        assert_eq!(&read_all(res).await.0[..], b"until the end");
        let res = send(&pool, Outgoing::new(get())).await.unwrap();
        assert_eq!(&read_all(res).await.0[..], b"until the end");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn head_answers_have_no_body_and_keep_their_connection() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n";
        let (pool, _rx, accepted) =
            backend(vec![Then::Answer(ok), Then::Answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi")]).await;
        let head = Request::builder().method("HEAD").uri("/").body(Body::empty()).unwrap();
        let res = send(&pool, Outgoing::new(head)).await.unwrap();
        assert_eq!(res.headers()[header::CONTENT_LENGTH], "10");
        assert!(read_all(res).await.0.is_empty());
        let res = send(&pool, Outgoing::new(get())).await.unwrap();
        assert_eq!(&read_all(res).await.0[..], b"hi");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_request_reaches_the_backend_as_framed() {
        let ok = "HTTP/1.1 204 No Content\r\n\r\n";
        let (pool, mut rx, _) = backend(vec![Then::Answer(ok), Then::Answer(ok), Then::Answer(ok)]).await;
        send(&pool, Outgoing::new(post(Body::full("amount=1")))).await.unwrap();
        assert_eq!(
            rx.recv().await.unwrap(),
            b"POST /pay HTTP/1.1\r\nhost: shop\r\ncontent-length: 8\r\n\r\namount=1".to_vec()
        );
        let data = "amount=2&".repeat(20_000);
        send(&pool, Outgoing::new(post(streaming(data.as_bytes())))).await.unwrap();
        let seen = rx.recv().await.unwrap();
        let head = b"POST /pay HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(seen.starts_with(head));
        assert_eq!(dechunk(BytesMut::from(&seen[head.len()..])), data.as_bytes());
        let large = Bytes::from(vec![b'a'; INLINE_BODY + 1]);
        send(&pool, Outgoing::new(post(Body::full(large.clone())))).await.unwrap();
        let seen = rx.recv().await.unwrap();
        assert!(seen.ends_with(&large));
        assert!(String::from_utf8_lossy(&seen).contains(&format!("content-length: {}\r\n", large.len())));
    }

    #[tokio::test]
    async fn a_reused_connection_found_closed_is_retried_for_a_get_only() {
        // Each connection answers once, then reads the next request and closes unanswered:
        // a connection that looked alive when it was checked out.
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (pool, _rx, accepted) = backend(vec![Then::Answer(ok), Then::Close]).await;
        assert_eq!(&read_all(send(&pool, Outgoing::new(get())).await.unwrap()).await.0[..], b"ok");
        assert_eq!(&read_all(send(&pool, Outgoing::new(get())).await.unwrap()).await.0[..], b"ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "retried on a new connection");
        // The same for a POST: it may have been acted on, so it is not sent again.
        assert!(matches!(
            send(&pool, Outgoing::new(post(Body::full("x")))).await,
            Err(UpstreamError::Answer(AnswerError::Closed))
        ));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_broken_answer_is_an_error_and_its_connection_is_dropped() {
        let (pool, _rx, _) =
            backend(vec![Then::Answer("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabc")]).await;
        assert!(matches!(send(&pool, Outgoing::new(get())).await, Err(UpstreamError::Answer(AnswerError::Invalid(_)))));

        let broken = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n";
        let (pool, _rx, accepted) = backend(vec![Then::Answer(broken), Then::Answer(broken)]).await;
        for _ in 0..2 {
            let res = send(&pool, Outgoing::new(get())).await.unwrap();
            assert!(res.into_body().collect().await.is_err());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        // Shorter than its length, then closed.
        let (pool, _rx, _) =
            backend(vec![Then::AnswerAndClose("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")]).await;
        let res = send(&pool, Outgoing::new(get())).await.unwrap();
        assert!(res.into_body().collect().await.is_err());
    }

    #[tokio::test]
    async fn an_answer_before_the_body_is_written_is_passed_on() {
        // The backend refuses after the head, without reading a body far larger than the
        // socket buffers, and keeps the connection open.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = Authority::try_from(listener.local_addr().unwrap().to_string()).unwrap();
        let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut chunk = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tcp.read(&mut chunk).await.unwrap();
                seen.extend_from_slice(&chunk[..n]);
            }
            tcp.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo much").await.unwrap();
            let _ = hold_rx.await;
        });
        let pool = Pool::new(&a, 80, 4, Duration::from_secs(5), Duration::from_secs(60));
        let body = Body::full(Bytes::from(vec![b'a'; 64 * 1024 * 1024]));
        let res = tokio::time::timeout(Duration::from_secs(20), send(&pool, Outgoing::new(post(body))))
            .await
            .expect("answered without the body written")
            .unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(&read_all(res).await.0[..], b"too much");
        // Its body still being written, that connection does not go back to the pool.
        assert_eq!(pool.idle_count(), 0);
        drop(hold_tx);
    }
}
