//! A backend's answer, read off its connection: the head parsed with `httparse` (interim `1xx`
//! answers skipped), the body framed as RFC 9112 §6.3 says and read as the client takes it,
//! in the request's own task. Its connection goes back to the pool once the body has been read
//! to the end, if the answer lets it carry another exchange.
//!
//! What the backend may not do, it does not get away with: a head that `httparse` rejects or
//! that is larger than [`MAX_HEAD`], conflicting `Content-Length`s, a chunked body whose framing
//! is broken, a `101`: the answer is refused (502 before the head is passed on, an aborted body
//! after). An answer framed by the connection's end closes its connection.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncReadExt as _;
use tokio::net::tcp::OwnedReadHalf;

use crate::pool::Pooled;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest answer head accepted (status line and headers), and the read buffer's step.
pub const MAX_HEAD: usize = 16 * 1024;
/// A body is read from the backend this much at a time at most: a full TLS record's worth.
const BODY_READ: usize = 16 * 1024;
/// Header fields in an answer head, at most.
const MAX_HEADERS: usize = 100;
/// A chunk-size line (with its extensions) or the trailer section, at most.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a backend's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("backend connection: {0}")]
    Io(#[from] io::Error),
    /// The backend closed the connection before any byte of an answer.
    #[error("the backend closed the connection before answering")]
    Closed,
    #[error("invalid answer from the backend: {0}")]
    Invalid(&'static str),
}

/// An answer's head: its parts, how its body is framed, whether the connection stays open.
pub(crate) struct Head {
    pub(crate) parts: http::response::Parts,
    pub(crate) framing: Framing,
    pub(crate) keep: bool,
}

/// How an answer's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes the connection.
    Close,
}

/// Reads the answer's head (skipping interim `1xx` answers): the response's parts, and how
/// its body is framed. `head_request`: the answer to a HEAD has no body, whatever it says.
pub(crate) async fn read_head(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Head, AnswerError> {
    let mut any = false;
    loop {
        if !buf.is_empty() {
            any = true;
            if let Some(head) = parse_head(buf, head_request)? {
                return Ok(head);
            }
            if buf.len() >= MAX_HEAD {
                return Err(AnswerError::Invalid("the head is too large"));
            }
        }
        buf.reserve(MAX_HEAD);
        match rd.read_buf(buf).await {
            Ok(0) if any => return Err(AnswerError::Invalid("the connection closed within the head")),
            // Closed (or reset, as a backend does when a request reached a socket it had
            // closed) before any byte of an answer.
            Ok(0) => return Err(AnswerError::Closed),
            Err(e) if !any && is_closed(&e) => return Err(AnswerError::Closed),
            Err(e) => return Err(AnswerError::Io(e)),
            Ok(_) => {}
        }
    }
}

fn is_closed(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe)
}

/// The head at the start of `buf`, taken from it; `None` while it is incomplete. An interim
/// answer (`100 Continue`, `103 Early Hints`) is taken and skipped.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, AnswerError> {
    loop {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, &mut slots)
        {
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                return Err(AnswerError::Invalid("the head is too large"))
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(AnswerError::Invalid("too many header fields")),
            Err(_) => return Err(AnswerError::Invalid("the head is malformed")),
        };
        let code = res.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| AnswerError::Invalid("the status is out of range"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(AnswerError::Invalid("101 Switching Protocols without an upgrade"));
        }
        if status.is_informational() {
            buf.advance(len);
            continue;
        }
        let version = if res.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        // The header values share the head's bytes, taken from the buffer below: no copy of
        // each. Found by their offsets, as the parser's slices borrow the buffer.
        let start = buf.as_ptr() as usize;
        let mut fields = Vec::with_capacity(res.headers.len());
        for h in res.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| AnswerError::Invalid("a header name is invalid"))?;
            let at = h.value.as_ptr() as usize - start;
            fields.push((name, at, at + h.value.len()));
        }
        let bytes = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(fields.len());
        for (name, from, to) in fields {
            let value = HeaderValue::from_maybe_shared(bytes.slice(from..to))
                .map_err(|_| AnswerError::Invalid("a header value is invalid"))?;
            headers.append(name, value);
        }
        let (framing, keep) = framing(&mut headers, status, version, head_request)?;
        let mut parts = Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        return Ok(Some(Head { parts, framing, keep }));
    }
}

/// RFC 9112 §6.3: how the body of this answer ends, and whether the connection may carry
/// another exchange after it. A `Content-Length` beside chunked framing is dropped, and that
/// connection closed after the answer, as is every one whose answer ends with the connection.
fn framing(
    headers: &mut HeaderMap,
    status: StatusCode,
    version: Version,
    head_request: bool,
) -> Result<(Framing, bool), AnswerError> {
    let keep = keep_alive(headers, version);
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, keep));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        let both = headers.remove(header::CONTENT_LENGTH).is_some();
        return Ok(if chunked { (Framing::Chunked, keep && !both) } else { (Framing::Close, false) });
    }
    Ok(match content_length(headers)? {
        Some(0) => (Framing::Empty, keep),
        Some(n) => (Framing::Length(n), keep),
        None => (Framing::Close, false),
    })
}

/// Whether the connection may carry another exchange after this answer.
fn keep_alive(headers: &HeaderMap, version: Version) -> bool {
    let mut close = false;
    let mut keep = false;
    for v in headers.get_all(header::CONNECTION) {
        for token in v.to_str().unwrap_or("close").split(',').map(str::trim) {
            close |= token.eq_ignore_ascii_case("close");
            keep |= token.eq_ignore_ascii_case("keep-alive");
        }
    }
    !close && (version == Version::HTTP_11 || keep)
}

/// The answer's `Content-Length`: every value (and list element) the same valid number.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, AnswerError> {
    let mut found = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(AnswerError::Invalid("the content-length is invalid"));
            }
            // At most 19 digits: always a u64.
            let Some(n) = std::str::from_utf8(part).ok().and_then(|p| p.parse::<u64>().ok()) else {
                return Err(AnswerError::Invalid("the content-length is invalid"));
            };
            if found.is_some_and(|f| f != n) {
                return Err(AnswerError::Invalid("the content-lengths disagree"));
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Where the body reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Length(u64),
    /// A chunk-size line is next.
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    Close,
    Done,
}

/// An answer's body, read from its connection as the client takes it.
pub struct AnswerBody {
    conn: Option<Pooled>,
    read: Read,
    keep: bool,
}

impl AnswerBody {
    pub(crate) fn new(mut conn: Pooled, framing: Framing, keep: bool) -> AnswerBody {
        // A connection whose request body is still being written is not reused either.
        let keep = keep && conn.conn_mut().is_some_and(|c| c.wr.is_some());
        let read = match framing {
            Framing::Empty => Read::Done,
            Framing::Length(n) => Read::Length(n),
            Framing::Chunked => Read::ChunkSize,
            Framing::Close => Read::Close,
        };
        let mut body = AnswerBody { conn: Some(conn), read, keep };
        if body.read == Read::Done {
            body.finish();
        }
        body
    }

    /// The answer has ended: its connection goes back to the pool if it can carry another.
    fn finish(&mut self) {
        self.read = Read::Done;
        if let Some(mut conn) = self.conn.take() {
            if self.keep && conn.conn_mut().is_some_and(|c| c.buf.is_empty()) {
                conn.done();
            }
        }
    }

    fn fail(&mut self, why: &'static str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.read = Read::Done;
        self.conn = None;
        Poll::Ready(Some(Err(Box::new(AnswerError::Invalid(why)))))
    }

    /// Reads more from the connection; `Ok(0)`: it has ended.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(c) = self.conn.as_mut().and_then(Pooled::conn_mut) else { return Poll::Ready(Ok(0)) };
        c.buf.reserve(BODY_READ);
        tokio_util::io::poll_read_buf(Pin::new(&mut c.rd), cx, &mut (&mut c.buf).limit(BODY_READ))
    }

    fn buf(&mut self) -> Option<&mut BytesMut> {
        self.conn.as_mut().and_then(Pooled::conn_mut).map(|c| &mut c.buf)
    }
}

impl http_body::Body for AnswerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let buffered = this.buf().map_or(0, |b| b.len());
            match this.read {
                Read::Done => return Poll::Ready(None),
                Read::Length(left) | Read::ChunkData(left) if buffered > 0 => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buffered);
                    let Some(buf) = this.buf() else { return this.fail("the connection is gone") };
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    match this.read {
                        Read::Length(_) if left == 0 => this.finish(),
                        Read::Length(_) => this.read = Read::Length(left),
                        _ if left == 0 => this.read = Read::ChunkEnd,
                        _ => this.read = Read::ChunkData(left),
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Read::Close if buffered > 0 => {
                    let Some(buf) = this.buf() else { return this.fail("the connection is gone") };
                    return Poll::Ready(Some(Ok(Frame::data(buf.split().freeze()))));
                }
                Read::ChunkSize if buffered > 0 => {
                    let Some(buf) = this.buf() else { return this.fail("the connection is gone") };
                    match chunk_size(buf) {
                        Err(why) => return this.fail(why),
                        Ok(Some(0)) => {
                            this.read = Read::Trailers;
                            continue;
                        }
                        Ok(Some(n)) => {
                            this.read = Read::ChunkData(n);
                            continue;
                        }
                        // Incomplete: read more below.
                        Ok(None) => {}
                    }
                }
                Read::ChunkEnd if buffered >= 2 => {
                    let Some(buf) = this.buf() else { return this.fail("the connection is gone") };
                    if &buf[..2] != b"\r\n" {
                        return this.fail("a chunk is not followed by CRLF");
                    }
                    buf.advance(2);
                    this.read = Read::ChunkSize;
                    continue;
                }
                Read::Trailers if buffered > 0 => {
                    let Some(buf) = this.buf() else { return this.fail("the connection is gone") };
                    match trailers(buf) {
                        Err(why) => return this.fail(why),
                        Ok(Some(map)) => {
                            this.finish();
                            if map.is_empty() {
                                return Poll::Ready(None);
                            }
                            return Poll::Ready(Some(Ok(Frame::trailers(map))));
                        }
                        Ok(None) => {}
                    }
                }
                _ => {}
            }
            // More bytes are needed.
            match ready!(this.poll_fill(cx)) {
                Ok(0) if this.read == Read::Close => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail("the backend closed the connection within the body"),
                Ok(_) => {}
                Err(e) => {
                    this.read = Read::Done;
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(AnswerError::Io(e)))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read == Read::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.read {
            Read::Done => SizeHint::with_exact(0),
            Read::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::new(),
        }
    }
}

/// The size of the chunk whose size line starts `buf`, the line taken; `None` while the line
/// is incomplete. Extensions are skipped; a bare LF, a size without digits or past 16 hex
/// digits is refused.
pub(crate) fn chunk_size(buf: &mut BytesMut) -> Result<Option<u64>, &'static str> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_CHUNK_LINE { Err("a chunk-size line is too long") } else { Ok(None) };
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err("a chunk-size line does not end in CRLF");
    }
    let line = &buf[..lf - 1];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err("a chunk size is invalid");
    }
    match line.get(digits) {
        None | Some(b';' | b' ' | b'\t') => {}
        Some(_) => return Err("a chunk size is invalid"),
    }
    // At most 16 hex digits: always a u64.
    let size = std::str::from_utf8(&line[..digits]).ok().and_then(|d| u64::from_str_radix(d, 16).ok());
    let Some(size) = size else { return Err("a chunk size is invalid") };
    buf.advance(lf + 1);
    Ok(Some(size))
}

/// The trailer section at the start of `buf` (ending in an empty line), taken; `None` while
/// incomplete.
fn trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, &'static str> {
    if buf.starts_with(b"\r\n") {
        buf.advance(2);
        return Ok(Some(HeaderMap::new()));
    }
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete((len, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for f in fields {
                let (Ok(name), Ok(value)) =
                    (HeaderName::from_bytes(f.name.as_bytes()), HeaderValue::from_bytes(f.value))
                else {
                    return Err("a trailer field is invalid");
                };
                map.append(name, value);
            }
            buf.advance(len);
            Ok(Some(map))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => Err("the trailers are too large"),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err("the trailers are malformed"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn bytes(s: &str) -> BytesMut {
        BytesMut::from(s.as_bytes())
    }

    #[test]
    fn chunk_sizes_are_read_strictly() {
        let mut b = bytes("1a;name=value\r\nrest");
        assert_eq!(chunk_size(&mut b), Ok(Some(26)));
        assert_eq!(&b[..], b"rest");
        assert_eq!(chunk_size(&mut bytes("0\r\n")), Ok(Some(0)));
        assert_eq!(chunk_size(&mut bytes("FF \r\n")), Ok(Some(255)));
        assert_eq!(chunk_size(&mut bytes("1a")), Ok(None));
        assert!(chunk_size(&mut bytes("1a\n")).is_err(), "a bare LF");
        assert!(chunk_size(&mut bytes("\r\n")).is_err(), "no digits");
        assert!(chunk_size(&mut bytes("-1\r\n")).is_err());
        assert!(chunk_size(&mut bytes("1x\r\n")).is_err());
        assert!(chunk_size(&mut bytes("10000000000000000\r\n")).is_err(), "past 16 hex digits");
        assert!(chunk_size(&mut bytes(&"1".repeat(MAX_CHUNK_LINE + 1))).is_err(), "a line without end");
    }

    #[test]
    fn trailers_end_with_an_empty_line() {
        let mut b = bytes("\r\nnext");
        assert_eq!(trailers(&mut b).unwrap().unwrap().len(), 0);
        assert_eq!(&b[..], b"next");
        let mut b = bytes("x-checksum: abc\r\nx-more: 1\r\n\r\n");
        let map = trailers(&mut b).unwrap().unwrap();
        assert_eq!(map["x-checksum"], "abc");
        assert_eq!(map.len(), 2);
        assert!(b.is_empty());
        assert_eq!(trailers(&mut bytes("x-checksum: abc\r\n")), Ok(None));
        assert!(trailers(&mut bytes("bad header\r\n\r\n")).is_err());
    }

    fn head_of(raw: &str, head_request: bool) -> Result<Option<Head>, AnswerError> {
        parse_head(&mut bytes(raw), head_request)
    }

    fn framed(raw: &str) -> (Framing, bool) {
        let h = head_of(raw, false).unwrap().unwrap();
        (h.framing, h.keep)
    }

    #[test]
    fn answers_are_framed_as_rfc_9112_says() {
        assert_eq!(framed("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"), (Framing::Length(5), true));
        assert_eq!(framed("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n"), (Framing::Length(5), true));
        assert_eq!(framed("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), (Framing::Empty, true));
        assert_eq!(framed("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n"), (Framing::Empty, true));
        assert_eq!(framed("HTTP/1.1 304 Not Modified\r\n\r\n"), (Framing::Empty, true));
        assert_eq!(framed("HTTP/1.1 200 OK\r\n\r\n"), (Framing::Close, false));
        assert_eq!(framed("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"), (Framing::Chunked, true));
        assert_eq!(framed("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"), (Framing::Chunked, true));
        assert_eq!(framed("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"), (Framing::Close, false));
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\n"),
            (Framing::Length(5), false)
        );
        assert_eq!(framed("HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n"), (Framing::Length(5), false));
        assert_eq!(
            framed("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 5\r\n\r\n"),
            (Framing::Length(5), true)
        );
        // Both: chunked wins, the length goes, and the connection is not trusted again.
        let h = head_of("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep), (Framing::Chunked, false));
        assert!(!h.parts.headers.contains_key(header::CONTENT_LENGTH));
        // The answer to a HEAD has no body, whatever its length says.
        let h = head_of("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", true).unwrap().unwrap();
        assert_eq!(h.framing, Framing::Empty);
        assert_eq!(h.parts.headers[header::CONTENT_LENGTH], "10");
    }

    #[test]
    fn bad_heads_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(matches!(head_of(raw, false), Err(AnswerError::Invalid(_))), "{raw:?}");
        }
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "x: y\r\n".repeat(MAX_HEADERS + 1));
        assert!(matches!(head_of(&many, false), Err(AnswerError::Invalid("too many header fields"))));
        assert!(head_of("HTTP/1.1 200 OK\r\ncontent-le", false).unwrap().is_none(), "incomplete");
    }

    #[test]
    fn interim_answers_are_skipped() {
        let mut b = bytes("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nok");
        let h = parse_head(&mut b, false).unwrap().unwrap();
        assert_eq!(h.parts.status, StatusCode::CREATED);
        assert_eq!(h.parts.headers["x-a"], "1");
        assert!(!h.parts.headers.contains_key("link"));
        assert_eq!(&b[..], b"ok");
    }
}
