//! An HTTP/1.1 forwarding path of our own, the way Pingora keeps one instead of hyper's: the
//! request and response heads are parsed with `httparse` and forwarded as bytes, edited in place
//! (hop-by-hop and payguard-owned header lines left out, forwarding header lines appended), and
//! bodies are passed through as they are, framed by Content-Length or by parsing the chunked
//! framing to know where a body ends. One backend connection per client connection (opened on
//! the first request, kept alive, opened again when the backend closed it). Shared by
//! `floor-bytes` (tokio) and `floor-uring` (monoio, io_uring): the runtimes only supply the
//! byte streams ([`Io`]) and the backend connector ([`Connect`]).
//!
//! What it handles and what it refuses (answered, then the client connection is closed):
//! - HTTP/1.1 requests only: another version gets 505. Origin-form targets only (and `*` for
//!   OPTIONS): absolute-form or authority-form targets get 400, CONNECT 405.
//! - Exactly one Host header (else 400). Lines ending in CRLF only (a bare LF: 400). A head
//!   over 32 KiB or over 100 header lines: 431. Obsolete line folding: 400 (httparse).
//! - Request bodies by Content-Length (one header, digits only; a second one: 400) or chunked
//!   (`Transfer-Encoding: chunked` exactly; chunked after another coding: 501; chunked not last:
//!   400; both framings: 400); the chunked framing is checked (hex sizes of at most 15 digits,
//!   CRLF after every line and chunk, extensions and trailers at most 16 KiB) and forwarded byte
//!   for byte.
//! - `Expect: 100-continue` is answered by the proxy itself (`100 Continue`, as nginx does)
//!   and not forwarded; any other expectation gets 417.
//! - Hop-by-hop header lines are left out both ways: `connection`, `keep-alive`,
//!   `proxy-connection`, `te`, `trailer`, `upgrade` and every header the Connection header
//!   names (one naming `host`, `content-length` or `transfer-encoding` is refused with 400; one
//!   from the backend naming `content-length` or `transfer-encoding`, with 502). So are a client's `x-payguard-*` and `x-forwarded-proto`;
//!   `x-forwarded-for: <client address>` and `x-forwarded-proto: https` are appended (the
//!   former as a line of its own, which a recipient reads as appended to any the client sent).
//! - Responses: no body after HEAD, 1xx, 204 and 304; otherwise by Content-Length, chunked
//!   (`Transfer-Encoding` whose last coding is `chunked`: passed through, framing checked) or
//!   until the backend closes (then the client connection is closed after it, with
//!   `connection: close`). 1xx answers other than 101 are forwarded and the final answer read
//!   after them; 101, a malformed head, two Content-Lengths, or Content-Length with
//!   Transfer-Encoding: 502.
//! - A backend connection that fails on the first write of a request it was reused for is
//!   opened again and the request sent again; one that closes before any byte of the answer is
//!   retried the same way only for idempotent methods whose request was sent whole in that
//!   first write. Otherwise a failure before the answer: 502; after part of it: the client
//!   connection is closed.
//! - No timeouts (as in `floor-hyper`: a floor has no timers), no HTTP/2, no upgrades.

use std::io;
use std::net::IpAddr;
use std::ops::Range;

/// A byte stream as the runtimes offer it.
#[allow(async_fn_in_trait)]
pub trait Io {
    /// Reads into `buf`'s spare capacity (appending to it); 0 at the end of the stream.
    async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize>;
    /// Writes `buf[range]` whole.
    async fn write_all_of(&mut self, buf: &mut Vec<u8>, range: Range<usize>) -> io::Result<()>;
    /// Ends the writing side (TLS: close_notify first).
    async fn shutdown(&mut self) -> io::Result<()>;
}

/// Opens a connection to the backend.
#[allow(async_fn_in_trait)]
pub trait Connect {
    type Conn: Io;
    async fn connect(&self) -> io::Result<Self::Conn>;
}

const BUF: usize = 16 * 1024;
const MAX_HEAD: usize = 32 * 1024;
const MAX_HEADERS: usize = 100;

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parsed request head: what the loop needs once the head is copied into `out`.
struct RequestHead {
    len: usize,
    framing: Framing,
    head: bool,
    idempotent: bool,
    close: bool,
    expect_continue: bool,
}

struct ResponseHead {
    len: usize,
    framing: Framing,
    /// A 1xx other than 101: forwarded, then the final answer follows.
    interim: bool,
    /// The backend will close the connection after this answer.
    backend_close: bool,
}

#[derive(Clone, Copy, Debug)]
enum Refusal {
    BadRequest,
    HeadTooLarge,
    NotAllowed,
    ExpectationFailed,
    NotImplemented,
    VersionNotSupported,
    BadGateway,
}

impl Refusal {
    fn response(self) -> &'static [u8] {
        match self {
            Refusal::BadRequest => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            Refusal::HeadTooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
            Refusal::NotAllowed => b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            Refusal::ExpectationFailed => {
                b"HTTP/1.1 417 Expectation Failed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
            Refusal::NotImplemented => {
                b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
            Refusal::VersionNotSupported => {
                b"HTTP/1.1 505 HTTP Version Not Supported\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
            Refusal::BadGateway => b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        }
    }
}

/// Serves one client connection until either side closes it or a refusal.
pub async fn serve<C: Io, K: Connect>(mut client: C, peer: IpAddr, connector: K) {
    // The lines appended to every request, made once per connection.
    let forwarded = format!("x-forwarded-for: {peer}\r\nx-forwarded-proto: https\r\n").into_bytes();
    let mut cbuf: Vec<u8> = Vec::with_capacity(BUF);
    let mut bbuf: Vec<u8> = Vec::with_capacity(BUF);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut rout: Vec<u8> = Vec::with_capacity(1024);
    let mut backend: Option<K::Conn> = None;
    loop {
        // ---- the request head
        let req = loop {
            if !cbuf.is_empty() {
                match parse_request(&cbuf, &forwarded, &mut out) {
                    Ok(Some(req)) => break req,
                    Ok(None) if cbuf.len() >= MAX_HEAD => return refuse(&mut client, Refusal::HeadTooLarge).await,
                    Ok(None) => {}
                    Err(r) => return refuse(&mut client, r).await,
                }
            }
            reserve(&mut cbuf);
            match client.read_more(&mut cbuf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        // ---- the part of the request body already read, after the head
        let mut chunked = Chunked::default();
        let mut body_left: u64 = 0; // Length framing: bytes still to read from the client
        let avail = &cbuf[req.len..];
        let take = match req.framing {
            Framing::None => 0,
            Framing::Length(n) => {
                let t = n.min(avail.len() as u64) as usize;
                body_left = n - t as u64;
                t
            }
            Framing::Chunked => match chunked.feed(avail) {
                Ok(t) => t,
                Err(()) => return refuse(&mut client, Refusal::BadRequest).await,
            },
            Framing::UntilClose => unreachable!("requests are never delimited by close"),
        };
        out.extend_from_slice(&avail[..take]);
        let consumed = req.len + take;
        cbuf.drain(..consumed);
        let body_done = match req.framing {
            Framing::None => true,
            Framing::Length(_) => body_left == 0,
            Framing::Chunked => chunked.done(),
            Framing::UntilClose => unreachable!(),
        };
        if req.expect_continue && !body_done && take == 0 {
            let mut cont = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
            let n = cont.len();
            if client.write_all_of(&mut cont, 0..n).await.is_err() {
                return;
            }
        }
        // ---- to the backend: the head and what is here of the body in one write
        let mut reused = backend.is_some();
        let mut retried = false;
        let resp = 'attempt: loop {
            if backend.is_none() {
                match connector.connect().await {
                    Ok(b) => backend = Some(b),
                    Err(_) => return refuse(&mut client, Refusal::BadGateway).await,
                }
            }
            let be = backend.as_mut().unwrap();
            let n = out.len();
            if be.write_all_of(&mut out, 0..n).await.is_err() {
                backend = None;
                if reused && !retried {
                    // Closed while it sat idle: nothing of this request reached the backend.
                    (reused, retried) = (false, true);
                    continue 'attempt;
                }
                return refuse(&mut client, Refusal::BadGateway).await;
            }
            // The rest of the request body, as it comes.
            if !body_done
                && forward_request_body(&mut client, be, &mut cbuf, req.framing, &mut body_left, &mut chunked)
                    .await
                    .is_err()
            {
                // Client gone or a framing error: the backend has a partial request.
                return refuse(&mut client, Refusal::BadRequest).await;
            }
            // ---- the response head (after any interim 1xx answers)
            bbuf.clear();
            let mut interim_sent = false;
            loop {
                if !bbuf.is_empty() {
                    match parse_response(&bbuf, req.head, &mut rout) {
                        Ok(Some(r)) if r.interim => {
                            let n = rout.len();
                            if client.write_all_of(&mut rout, 0..n).await.is_err() {
                                return;
                            }
                            interim_sent = true;
                            bbuf.drain(..r.len);
                            continue;
                        }
                        Ok(Some(r)) => break 'attempt r,
                        Ok(None) if bbuf.len() >= MAX_HEAD => return refuse(&mut client, Refusal::BadGateway).await,
                        Ok(None) => {}
                        Err(_) => return refuse(&mut client, Refusal::BadGateway).await,
                    }
                }
                reserve(&mut bbuf);
                let be = backend.as_mut().unwrap();
                match be.read_more(&mut bbuf).await {
                    Ok(n) if n > 0 => {}
                    _ => {
                        backend = None;
                        if bbuf.is_empty() && !interim_sent && reused && !retried && req.idempotent && body_done {
                            // The backend closed the kept-alive connection as the request went out.
                            (reused, retried) = (false, true);
                            continue 'attempt;
                        }
                        return refuse(&mut client, Refusal::BadGateway).await;
                    }
                }
            }
        };
        // ---- the response: head and what is here of the body in one write, then the rest
        let close = req.close || resp.framing == Framing::UntilClose;
        if close {
            // The head ends in CRLF CRLF: insert before the last CRLF.
            let at = rout.len() - 2;
            rout.splice(at..at, b"connection: close\r\n".iter().copied());
        }
        let avail = &bbuf[resp.len..];
        let mut chunked = Chunked::default();
        let mut left: u64 = 0;
        let (take, done) = match resp.framing {
            Framing::None => (0, true),
            Framing::Length(n) => {
                let t = n.min(avail.len() as u64) as usize;
                left = n - t as u64;
                (t, left == 0)
            }
            Framing::Chunked => match chunked.feed(avail) {
                Ok(t) => (t, chunked.done()),
                Err(()) => return refuse(&mut client, Refusal::BadGateway).await,
            },
            Framing::UntilClose => (avail.len(), false),
        };
        rout.extend_from_slice(&avail[..take]);
        // Anything after the answer is not ours to forward: that connection is not reused.
        let mut backend_ok = !resp.backend_close && (!done || resp.len + take == bbuf.len());
        let n = rout.len();
        if client.write_all_of(&mut rout, 0..n).await.is_err() {
            return;
        }
        if !done {
            let be = backend.as_mut().unwrap();
            match forward_response_body(be, &mut client, &mut bbuf, resp.framing, left, &mut chunked).await {
                Ok(clean) => backend_ok &= clean,
                Err(Side::Client) => return,
                Err(Side::Backend) => {
                    // Part of the answer is out: all the client can be told is a close.
                    let _ = client.shutdown().await;
                    return;
                }
            }
        }
        if !backend_ok {
            backend = None;
        }
        bbuf.clear();
        if close {
            let _ = client.shutdown().await;
            return;
        }
    }
}

enum Side {
    Client,
    Backend,
}

/// Forwards the rest of a request body; bytes after it (a pipelined request) stay in `cbuf`.
async fn forward_request_body<C: Io, B: Io>(
    client: &mut C,
    backend: &mut B,
    cbuf: &mut Vec<u8>,
    framing: Framing,
    left: &mut u64,
    chunked: &mut Chunked,
) -> Result<(), ()> {
    loop {
        debug_assert!(cbuf.is_empty());
        reserve(cbuf);
        match client.read_more(cbuf).await {
            Ok(n) if n > 0 => {}
            _ => return Err(()),
        }
        let (take, done) = match framing {
            Framing::Length(_) => {
                let t = (*left).min(cbuf.len() as u64) as usize;
                *left -= t as u64;
                (t, *left == 0)
            }
            Framing::Chunked => {
                let t = chunked.feed(cbuf)?;
                (t, chunked.done())
            }
            _ => unreachable!(),
        };
        backend.write_all_of(cbuf, 0..take).await.map_err(|_| ())?;
        cbuf.drain(..take);
        if done {
            return Ok(());
        }
    }
}

/// Forwards the rest of a response body. Ok(false): the backend connection is not to be reused
/// (it sent more than the answer, or the body ran until it closed).
async fn forward_response_body<B: Io, C: Io>(
    backend: &mut B,
    client: &mut C,
    bbuf: &mut Vec<u8>,
    framing: Framing,
    mut left: u64,
    chunked: &mut Chunked,
) -> Result<bool, Side> {
    loop {
        bbuf.clear();
        reserve(bbuf);
        let n = match backend.read_more(bbuf).await {
            Ok(n) => n,
            Err(_) => return Err(Side::Backend),
        };
        if n == 0 {
            return if framing == Framing::UntilClose { Ok(false) } else { Err(Side::Backend) };
        }
        let (take, done) = match framing {
            Framing::Length(_) => {
                let t = left.min(n as u64) as usize;
                left -= t as u64;
                (t, left == 0)
            }
            Framing::Chunked => match chunked.feed(bbuf) {
                Ok(t) => (t, chunked.done()),
                Err(()) => return Err(Side::Backend),
            },
            Framing::UntilClose => (n, false),
            Framing::None => unreachable!(),
        };
        client.write_all_of(bbuf, 0..take).await.map_err(|_| Side::Client)?;
        if done {
            return Ok(take == n);
        }
    }
}

async fn refuse<C: Io>(client: &mut C, r: Refusal) {
    let mut v = r.response().to_vec();
    let n = v.len();
    if client.write_all_of(&mut v, 0..n).await.is_ok() {
        let _ = client.shutdown().await;
    }
}

fn reserve(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(BUF);
    }
}

// ------------------------------------------------------------------ heads

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the legacy ones), always left out.
fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 6] = [b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A Content-Length value: digits only, at most 18 of them.
fn content_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The Connection header's tokens other than `close` and `keep-alive`: the headers it names.
fn connection_tokens<'a>(v: &'a [u8], close: &mut bool, named: &mut Vec<&'a [u8]>) {
    for t in v.split(|&b| b == b',').map(trim) {
        if t.eq_ignore_ascii_case(b"close") {
            *close = true;
        } else if !t.is_empty() && !t.eq_ignore_ascii_case(b"keep-alive") {
            named.push(t);
        }
    }
}

/// Where each header line starts and ends in `buf` (CRLF included); Err if a line does not end
/// in CRLF. The line of header `i` starts at its name and ends after the LF that follows it.
fn line_spans(buf: &[u8], headers: &[httparse::Header<'_>], spans: &mut [(usize, usize)]) -> Result<(), ()> {
    let base = buf.as_ptr() as usize;
    for (h, span) in headers.iter().zip(spans.iter_mut()) {
        let start = h.name.as_ptr() as usize - base;
        let from = start + h.name.len();
        let lf = from + buf[from..].iter().position(|&b| b == b'\n').ok_or(())?;
        if buf[lf - 1] != b'\r' {
            return Err(());
        }
        *span = (start, lf + 1);
    }
    Ok(())
}

/// The first line's start (httparse skips empty lines before it) and end; Err on a bare LF.
fn first_line(buf: &[u8]) -> Result<(usize, usize), ()> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').ok_or(())?;
    let lf = start + buf[start..].iter().position(|&b| b == b'\n').ok_or(())?;
    if buf[lf - 1] != b'\r' {
        return Err(());
    }
    Ok((start, lf + 1))
}

/// Copies the head into `out` without the header lines `drop` names, then `extra` and the
/// final CRLF.
fn copy_head(
    buf: &[u8],
    first: (usize, usize),
    spans: &[(usize, usize)],
    drop: impl Fn(usize) -> bool,
    extra: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    let mut from = first.0;
    let mut end = first.1;
    for (i, &(s, e)) in spans.iter().enumerate() {
        if drop(i) {
            out.extend_from_slice(&buf[from..s]);
            from = e;
        }
        end = e;
    }
    out.extend_from_slice(&buf[from..end]);
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
}

/// Parses a request head at the start of `buf`; on success its edited copy is in `out`.
fn parse_request(buf: &[u8], forwarded: &[u8], out: &mut Vec<u8>) -> Result<Option<RequestHead>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
        Err(_) => return Err(Refusal::BadRequest),
    };
    if req.version != Some(1) {
        return Err(Refusal::VersionNotSupported);
    }
    let method = req.method.unwrap_or("");
    let path = req.path.unwrap_or("");
    if method == "CONNECT" {
        return Err(Refusal::NotAllowed);
    }
    if !(path.starts_with('/') || (path == "*" && method == "OPTIONS")) {
        return Err(Refusal::BadRequest);
    }
    let headers = &*req.headers;
    let mut length = None;
    let mut te = false;
    let mut hosts = 0;
    let mut close = false;
    let mut expect_continue = false;
    let mut named: Vec<&[u8]> = Vec::new();
    for h in headers {
        let n = h.name.as_bytes();
        if n.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(Refusal::BadRequest);
            }
            length = Some(content_length(h.value).ok_or(Refusal::BadRequest)?);
        } else if n.eq_ignore_ascii_case(b"transfer-encoding") {
            if te {
                return Err(Refusal::BadRequest);
            }
            te = true;
            if !trim(h.value).eq_ignore_ascii_case(b"chunked") {
                // Chunked not last: the length cannot be known (RFC 9112 §6.3); other codings
                // before it: not handled here.
                let last = h.value.rsplit(|&b| b == b',').next().map(trim).unwrap_or(b"");
                return Err(if last.eq_ignore_ascii_case(b"chunked") {
                    Refusal::NotImplemented
                } else {
                    Refusal::BadRequest
                });
            }
        } else if n.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if n.eq_ignore_ascii_case(b"connection") {
            connection_tokens(h.value, &mut close, &mut named);
        } else if n.eq_ignore_ascii_case(b"expect") {
            if !trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                return Err(Refusal::ExpectationFailed);
            }
            expect_continue = true;
        }
    }
    if hosts != 1 || (te && length.is_some()) {
        return Err(Refusal::BadRequest);
    }
    if named.iter().any(|t| {
        t.eq_ignore_ascii_case(b"host")
            || t.eq_ignore_ascii_case(b"content-length")
            || t.eq_ignore_ascii_case(b"transfer-encoding")
    }) {
        return Err(Refusal::BadRequest);
    }
    let first = first_line(buf).map_err(|()| Refusal::BadRequest)?;
    let mut spans = [(0usize, 0usize); MAX_HEADERS];
    let spans = &mut spans[..headers.len()];
    line_spans(buf, headers, spans).map_err(|()| Refusal::BadRequest)?;
    let drop = |i: usize| {
        let n = headers[i].name.as_bytes();
        is_hop_by_hop(n)
            || starts_with_ignore_case(n, b"x-payguard-")
            || n.eq_ignore_ascii_case(b"x-forwarded-proto")
            || n.eq_ignore_ascii_case(b"expect")
            || named.iter().any(|t| n.eq_ignore_ascii_case(t))
    };
    copy_head(buf, first, spans, drop, forwarded, out);
    let framing = match (te, length) {
        (true, _) => Framing::Chunked,
        (false, Some(0) | None) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
    };
    Ok(Some(RequestHead {
        len,
        framing,
        head: method == "HEAD",
        idempotent: matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"),
        close,
        expect_continue,
    }))
}

/// Parses a response head at the start of `buf`; on success its edited copy is in `out`.
fn parse_response(buf: &[u8], head_request: bool, out: &mut Vec<u8>) -> Result<Option<ResponseHead>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let code = res.code.ok_or(())?;
    if code == 101 || res.version != Some(1) {
        return Err(());
    }
    let headers = &*res.headers;
    let mut length = None;
    let mut te: Option<&[u8]> = None;
    let mut close = false;
    let mut named: Vec<&[u8]> = Vec::new();
    for h in headers {
        let n = h.name.as_bytes();
        if n.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(());
            }
            length = Some(content_length(h.value).ok_or(())?);
        } else if n.eq_ignore_ascii_case(b"transfer-encoding") {
            if te.is_some() {
                return Err(());
            }
            te = Some(h.value);
        } else if n.eq_ignore_ascii_case(b"connection") {
            connection_tokens(h.value, &mut close, &mut named);
        }
    }
    if te.is_some() && length.is_some() {
        return Err(());
    }
    if named.iter().any(|t| t.eq_ignore_ascii_case(b"content-length") || t.eq_ignore_ascii_case(b"transfer-encoding")) {
        return Err(());
    }
    let first = first_line(buf)?;
    let mut spans = [(0usize, 0usize); MAX_HEADERS];
    let spans = &mut spans[..headers.len()];
    line_spans(buf, headers, spans)?;
    let drop = |i: usize| {
        let n = headers[i].name.as_bytes();
        is_hop_by_hop(n) || named.iter().any(|t| n.eq_ignore_ascii_case(t))
    };
    copy_head(buf, first, spans, drop, b"", out);
    let interim = (100..200).contains(&code);
    let framing = if head_request || interim || code == 204 || code == 304 {
        Framing::None
    } else if let Some(te) = te {
        let last = te.rsplit(|&b| b == b',').next().map(trim).unwrap_or(b"");
        if last.eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match length {
            Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    Ok(Some(ResponseHead { len, framing, interim, backend_close: close || framing == Framing::UntilClose }))
}

// ------------------------------------------------------------------ chunked framing

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    SizeWs,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// Follows chunked framing (RFC 9112 §7.1) over the bytes of a body as they pass, to know where
/// it ends; the bytes themselves are forwarded as they are.
#[derive(Default)]
struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
    /// Bytes of chunk extensions and trailer lines so far (bounded).
    extra: usize,
}

const MAX_CHUNK_EXTRA: usize = 16 * 1024;

impl Chunked {
    fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// How many bytes at the start of `buf` belong to the body (all of them unless it ends in
    /// `buf`); Err on broken framing.
    fn feed(&mut self, buf: &[u8]) -> Result<usize, ()> {
        use ChunkState::*;
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                Done => return Ok(i),
                Data => {
                    let t = self.size.min((buf.len() - i) as u64);
                    i += t as usize;
                    self.size -= t;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                _ => {}
            }
            let b = buf[i];
            i += 1;
            self.state = match (self.state, b) {
                (Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    if self.digits >= 15 {
                        return Err(());
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from((b as char).to_digit(16).unwrap());
                    Size
                }
                (Size | SizeWs, b' ' | b'\t') if self.digits > 0 => SizeWs,
                (Size | SizeWs, b';') if self.digits > 0 => Ext,
                (Size | SizeWs, b'\r') if self.digits > 0 => SizeLf,
                (Ext, b'\r') => SizeLf,
                (Ext, c) if c == b'\t' || (c >= 0x20 && c != 0x7f) => {
                    self.extra += 1;
                    if self.extra > MAX_CHUNK_EXTRA {
                        return Err(());
                    }
                    Ext
                }
                (SizeLf, b'\n') => {
                    self.digits = 0;
                    if self.size == 0 {
                        TrailerStart
                    } else {
                        Data
                    }
                }
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => Size,
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart | Trailer, c) if c == b'\t' || (c >= 0x20 && c != 0x7f) => {
                    self.extra += 1;
                    if self.extra > MAX_CHUNK_EXTRA {
                        return Err(());
                    }
                    Trailer
                }
                (Trailer, b'\r') => TrailerLf,
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => {
                    self.state = Done;
                    return Ok(i);
                }
                _ => return Err(()),
            };
        }
        Ok(i)
    }
}

/// The command line both floors take (`LISTEN_ADDR CERT_PEM KEY_PEM BACKEND_ADDR`): where to
/// listen, the backend, and payguard's own TLS set-up for the certificate, HTTP/1.1 only.
pub fn setup(
    name: &str,
) -> anyhow::Result<(std::net::SocketAddr, std::net::SocketAddr, tokio_rustls::rustls::ServerConfig)> {
    use anyhow::Context as _;
    use std::net::ToSocketAddrs as _;
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, cert, key, backend] = &args[..] else {
        anyhow::bail!("usage: {name} LISTEN_ADDR CERT_PEM KEY_PEM BACKEND_ADDR");
    };
    let listen = listen.parse().context("LISTEN_ADDR")?;
    let backend = backend.to_socket_addrs().context("BACKEND_ADDR")?.next().context("BACKEND_ADDR: no address")?;
    let provider = payguard::tls::provider();
    let key = payguard::tls::load_certified_key(std::path::Path::new(cert), std::path::Path::new(key), &provider)?;
    let resolver = std::sync::Arc::new(payguard::tls::CertResolver::new(key));
    let mut config = payguard::tls::server_config(resolver, provider)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((listen, backend, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_framing() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\nGET /";
        let mut c = Chunked::default();
        assert_eq!(c.feed(body), Ok(body.len() - 5));
        assert!(c.done());
        // Byte by byte gives the same end.
        let mut c = Chunked::default();
        let mut n = 0;
        for b in body.iter() {
            n += c.feed(std::slice::from_ref(b)).unwrap();
            if c.done() {
                break;
            }
        }
        assert_eq!(n, body.len() - 5);
        for bad in [&b"4\nWiki\r\n0\r\n\r\n"[..], b"4\r\nWikiX\r\n", b"g\r\n", b"1000000000000000\r\n", b"\r\n"] {
            assert_eq!(Chunked::default().feed(bad), Err(()), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn request_head_edited() {
        let mut out = Vec::new();
        let buf = b"POST /p?q HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nX-Payguard-Verified: x\r\nTE: trailers\r\nContent-Length: 3\r\nX-Forwarded-Proto: http\r\nAccept: */*\r\n\r\nabc";
        let r =
            parse_request(buf, b"x-forwarded-for: 1.2.3.4\r\nx-forwarded-proto: https\r\n", &mut out).unwrap().unwrap();
        assert_eq!(r.len, buf.len() - 3);
        assert_eq!(r.framing, Framing::Length(3));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /p?q HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nAccept: */*\r\nx-forwarded-for: 1.2.3.4\r\nx-forwarded-proto: https\r\n\r\n"
        );
    }

    #[test]
    fn request_refusals() {
        let mut out = Vec::new();
        let cases: [(&[u8], &str); 9] = [
            (b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", "VersionNotSupported"),
            (b"GET / HTTP/1.1\r\n\r\n", "BadRequest"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "BadRequest"),
            (b"GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n", "BadRequest"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "BadRequest"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", "BadRequest"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "NotImplemented"),
            (b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", "BadRequest"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\n\r\n", "BadRequest"),
        ];
        for (buf, want) in cases {
            let got = parse_request(buf, b"", &mut out).err().map(|r| format!("{r:?}"));
            assert_eq!(got.as_deref(), Some(want), "{:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn response_head_edited() {
        let mut out = Vec::new();
        let buf = b"HTTP/1.1 200 OK\r\nServer: x\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let r = parse_response(buf, false, &mut out).unwrap().unwrap();
        assert_eq!(r.framing, Framing::Chunked);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let mut out = Vec::new();
        let r = parse_response(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", false, &mut out).unwrap().unwrap();
        assert_eq!(r.framing, Framing::UntilClose);
        assert!(r.backend_close);
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, &mut out).unwrap().unwrap();
        assert_eq!(r.framing, Framing::None);
    }
}
