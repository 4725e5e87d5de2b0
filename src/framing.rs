//! What hyper settles silently about HTTP/1.1 message framing, seen on the raw bytes.
//!
//! hyper drops a `Content-Length` sent next to `Transfer-Encoding` (chunked wins, the connection
//! closes after the answer) and merges repeated identical `Content-Length` lines, so the request
//! payguard's service sees no longer shows that the client framed it ambiguously. Those are the
//! request-smuggling shapes nginx refuses with 400, and so does payguard: this reader follows
//! the client's byte stream (heads, and bodies only as far as needed to find the next head),
//! and numbers the ambiguous heads; the service refuses the request with that number.
//!
//! It never changes a byte. On anything it cannot follow it stops judging the connection:
//! hyper answers malformed input itself and closes.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::h2_flood::ControlFrames;

/// The heads of one connection that framed their body ambiguously, by request number (0-based).
#[derive(Default)]
pub struct Ambiguous {
    any: AtomicBool,
    heads: Mutex<Vec<u64>>,
}

impl Ambiguous {
    /// Whether request number `n` of this connection was ambiguous. Cheap when none was.
    pub fn contains(&self, n: u64) -> bool {
        self.any.load(Ordering::Acquire) && self.heads.lock().map(|h| h.contains(&n)).unwrap_or(true)
    }

    fn mark(&self, n: u64) {
        if let Ok(mut h) = self.heads.lock() {
            h.push(n);
        }
        self.any.store(true, Ordering::Release);
    }
}

/// Marks a request whose head framed its body ambiguously; refused by the head check.
#[derive(Debug, Clone, Copy)]
pub struct AmbiguousFraming;

/// Longest head followed; past it hyper refuses the request anyway (431).
const MAX_HEAD: usize = 256 * 1024;

#[derive(Debug)]
enum State {
    /// Reading a head; the bytes so far.
    Head(Vec<u8>),
    /// Skipping a body of known length.
    Body(u64),
    /// Chunked body: reading a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Chunked body: skipping chunk data plus its CRLF.
    ChunkData(u64),
    /// Chunked body: trailer section, the current line so far.
    Trailers(Vec<u8>),
    /// Stopped following (malformed input, or a connection hyper will close).
    Done,
}

/// Follows the framing of a client's HTTP/1.1 byte stream.
pub struct Tracker {
    state: State,
    request: u64,
    ambiguous: Arc<Ambiguous>,
}

impl Tracker {
    pub fn new(ambiguous: Arc<Ambiguous>) -> Self {
        Tracker { state: State::Head(Vec::new()), request: 0, ambiguous }
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Done => return,
                State::Head(buf) => {
                    if buf.is_empty() {
                        // Empty lines before a request line are allowed (RFC 9112 §2.2).
                        let skip = bytes.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
                        bytes = &bytes[skip..];
                        if bytes.is_empty() {
                            return;
                        }
                    }
                    if buf.is_empty() {
                        // The usual case: the whole head in one read, judged in place.
                        if let Some(end) = find_head_end(bytes) {
                            let (head, rest) = bytes.split_at(end);
                            self.state = self.head(head);
                            self.request += 1;
                            bytes = rest;
                            continue;
                        }
                    }
                    let State::Head(buf) = &mut self.state else { return };
                    let start = buf.len().saturating_sub(3);
                    let take = bytes.len().min(MAX_HEAD.saturating_sub(buf.len()) + 1);
                    buf.extend_from_slice(&bytes[..take]);
                    match find_head_end(&buf[start..]).map(|e| e + start) {
                        Some(end) => {
                            let used = end - (buf.len() - take);
                            let head = std::mem::take(buf);
                            bytes = &bytes[used..];
                            self.state = self.head(&head[..end]);
                            self.request += 1;
                        }
                        None if buf.len() > MAX_HEAD => self.state = State::Done,
                        None => return,
                    }
                }
                State::Body(n) => {
                    let skip = (*n).min(bytes.len() as u64);
                    *n -= skip;
                    bytes = &bytes[skip as usize..];
                    if *n == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(line) => match bytes.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        line.extend_from_slice(&bytes[..i]);
                        bytes = &bytes[i + 1..];
                        self.state = match chunk_size(line) {
                            Some(0) => State::Trailers(Vec::new()),
                            Some(n) => State::ChunkData(n.saturating_add(2)),
                            None => State::Done,
                        };
                    }
                    None if line.len() + bytes.len() > 4096 => self.state = State::Done,
                    None => {
                        line.extend_from_slice(bytes);
                        return;
                    }
                },
                State::ChunkData(n) => {
                    let skip = (*n).min(bytes.len() as u64);
                    *n -= skip;
                    bytes = &bytes[skip as usize..];
                    if *n == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Trailers(line) => match bytes.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        line.extend_from_slice(&bytes[..i]);
                        bytes = &bytes[i + 1..];
                        let blank = line.is_empty() || line.as_slice() == b"\r";
                        line.clear();
                        if blank {
                            self.state = State::Head(Vec::new());
                        }
                    }
                    None if line.len() + bytes.len() > MAX_HEAD => self.state = State::Done,
                    None => {
                        line.extend_from_slice(bytes);
                        return;
                    }
                },
            }
        }
    }

    /// Judges one head and says how its body is framed.
    fn head(&self, head: &[u8]) -> State {
        let mut lengths = 0usize;
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut te = false;
        for line in head.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                lengths += 1;
                match std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok()) {
                    Some(v) if length.is_none_or(|l| l == v) => length = Some(v),
                    // Unparseable or conflicting: hyper answers 400 and closes.
                    _ => return State::Done,
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te = true;
                chunked = value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        }
        if lengths > 1 || (te && lengths > 0) {
            self.ambiguous.mark(self.request);
        }
        if te {
            // hyper closes a connection whose request had both; a non-chunked TE is a 400.
            if lengths > 0 || !chunked {
                return State::Done;
            }
            return State::ChunkSize(Vec::new());
        }
        match length {
            Some(n) if n > 0 => State::Body(n),
            _ => State::Head(Vec::new()),
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    // An empty line: CRLF CRLF, or with bare LFs (hyper accepts bare LF line ends).
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\n').map(|i| i + from) {
        let next = &buf[i + 1..];
        if next.starts_with(b"\n") {
            return Some(i + 2);
        }
        if next.starts_with(b"\r\n") {
            return Some(i + 3);
        }
        from = i + 1;
    }
    None
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let hex = line.split(|&b| b == b';').next()?.trim_ascii();
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

pin_project_lite::pin_project! {
    /// Reads through to `inner`, showing every byte read to a [`Tracker`] (HTTP/1.1) or to a
    /// [`ControlFrames`] counter (HTTP/2).
    pub struct FramingIo<T> {
        #[pin]
        inner: T,
        tracker: Tracker,
        h2: Option<H2Watch>,
    }
}

struct H2Watch {
    frames: ControlFrames,
    flooded: Arc<AtomicBool>,
}

impl<T> FramingIo<T> {
    pub fn new(inner: T, ambiguous: Arc<Ambiguous>) -> Self {
        FramingIo { inner, tracker: Tracker::new(ambiguous), h2: None }
    }

    /// HTTP/2: counts the client's SETTINGS and PING frames; past `limit` within
    /// [`ControlFrames::WINDOW`], sets `flooded` and fails every read, which ends the connection.
    pub fn h2(inner: T, limit: u32, flooded: Arc<AtomicBool>) -> Self {
        let mut io = Self::off(inner);
        io.h2 = Some(H2Watch { frames: ControlFrames::new(limit), flooded });
        io
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Reads through without judging.
    fn off(inner: T) -> Self {
        let mut tracker = Tracker::new(Arc::default());
        tracker.state = State::Done;
        FramingIo { inner, tracker, h2: None }
    }
}

impl<T: AsyncRead> AsyncRead for FramingIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let read = &buf.filled()[before..];
            match this.h2 {
                Some(h2) => {
                    if h2.frames.feed(read).is_err() {
                        h2.flooded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "HTTP/2 control frame flood",
                        )));
                    }
                }
                None => this.tracker.feed(read),
            }
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for FramingIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Feeds `stream` in pieces of every size and returns the ambiguous request numbers.
    fn judge(stream: &[u8]) -> Vec<u64> {
        let mut seen = None;
        for piece in [1, 2, 3, 7, 64, stream.len().max(1)] {
            let a = Arc::new(Ambiguous::default());
            let mut t = Tracker::new(a.clone());
            for c in stream.chunks(piece) {
                t.feed(c);
            }
            let got = a.heads.lock().unwrap().clone();
            if let Some(prev) = &seen {
                assert_eq!(prev, &got, "piece size {piece}");
            }
            seen = Some(got);
        }
        seen.unwrap()
    }

    #[test]
    fn plain_requests_are_not_ambiguous() {
        let s = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /z HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(judge(s).is_empty());
    }

    #[test]
    fn cl_with_te_and_repeated_cl_are_marked_by_request_number() {
        let s = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST /dup HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello\
POST /te HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(judge(s), vec![1, 2]);
        let te_first =
            b"POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n";
        assert_eq!(judge(te_first), vec![0]);
    }

    #[test]
    fn body_bytes_that_look_like_a_head_are_skipped() {
        let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        let mut s = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        s.extend_from_slice(body);
        s.extend_from_slice(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        s.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        s.extend_from_slice(body);
        s.extend_from_slice(b"\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(judge(&s).is_empty());
    }

    #[test]
    fn malformed_input_stops_the_judging() {
        assert!(judge(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n").is_empty());
        assert!(judge(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_empty());
    }
}
