//! The one body type that flows through the stack, so no layer has to box.
//!
//! Request bodies stream from the client to the backend with a byte cap (`max_body`): the cap
//! is checked against the declared Content-Length up front and enforced again while streaming,
//! because a chunked body declares nothing. They also have a deadline (`[server]
//! body_read_timeout`): a client that dribbles its body is cut off, whichever path reads it.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::decoding::Pull;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The streamed body grew past its cap.
#[derive(Debug, thiserror::Error)]
#[error("body exceeds the limit of {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// The client's body could not be read: malformed chunked framing, or the client went away.
#[derive(Debug, thiserror::Error)]
#[error("request body could not be read: {0}")]
pub struct ClientBodyError(#[source] pub hyper::Error);

/// The request body did not arrive before its deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body not received in time")]
pub struct BodyTimedOut;

/// When a request body must have arrived in full. The timer is only created the first time the
/// body is not ready, so a body that arrives with its head costs nothing.
#[derive(Debug)]
pub struct BodyDeadline {
    at: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl BodyDeadline {
    pub fn new(at: Instant) -> Self {
        BodyDeadline { at, timer: None }
    }

    /// True once the deadline has passed; otherwise `cx` is woken when it does.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let at = self.at;
        self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at))).as_mut().poll(cx).is_ready()
    }
}

/// The next frame of a client's body, or [`BodyTimedOut`] once `deadline` passed first.
fn poll_before(
    inner: Pin<&mut Incoming>,
    deadline: &mut Option<BodyDeadline>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match http_body::Body::poll_frame(inner, cx) {
        Poll::Ready(f) => Poll::Ready(f.map(|r| r.map_err(|e| Box::new(ClientBodyError(e)) as BoxError))),
        Poll::Pending => {
            if deadline.as_mut().is_some_and(|d| d.poll_expired(cx)) {
                Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
            } else {
                Poll::Pending
            }
        }
    }
}

pin_project_lite::pin_project! {
    #[project = BodyProj]
    pub enum Body {
        Empty,
        Full { data: Option<Bytes> },
        // A client's body, with its cap and deadline.
        Incoming { #[pin] inner: Incoming, limit: u64, seen: u64, deadline: Option<BodyDeadline> },
        // A backend response: its connection goes back to the pool once the body has ended.
        Upstream { inner: crate::answer::AnswerBody },
        // What was read ahead of the rest, then the rest: a request past the body cap in
        // monitor mode, an answer too large to keep for replay.
        Resumed { head: Option<Bytes>, tail: Pin<Box<Body>> },
        // An answer whose card numbers are masked as it streams (`card_data.response = "mask"`).
        Masked { tail: Pin<Box<Body>>, state: Box<Masking> },
        // A compressed answer, decoded as it streams (so that it can be scanned).
        Decoded { tail: Pin<Box<Body>>, state: Box<Decoding> },
    }
}

/// The state of [`Body::Decoded`].
pub struct Decoding {
    decoder: crate::decoding::Decoder,
    done: bool,
    trailers: Option<http::HeaderMap>,
}

/// Called once a masked answer has ended: how many card numbers were masked, and the first.
pub type MaskReport = Box<dyn FnOnce(usize, Option<crate::card::Hit>) + Send + Sync>;

/// The state of [`Body::Masked`].
pub struct Masking {
    masker: crate::card::Masker,
    done: bool,
    trailers: Option<http::HeaderMap>,
    report: Option<MaskReport>,
}

impl Masking {
    /// The rest, masked; the report made.
    fn end(&mut self) -> Option<Bytes> {
        self.done = true;
        let rest = self.masker.finish();
        if let Some(report) = self.report.take() {
            let (found, first) = self.masker.found();
            report(found, first);
        }
        rest
    }
}

impl Body {
    pub fn empty() -> Self {
        Body::Empty
    }

    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        if data.is_empty() {
            Body::Empty
        } else {
            Body::Full { data: Some(data) }
        }
    }

    /// The whole body, when it has been buffered.
    pub fn buffered(&self) -> Option<&[u8]> {
        match self {
            Body::Empty => Some(&[]),
            Body::Full { data } => Some(data.as_deref().unwrap_or(&[])),
            Body::Incoming { .. }
            | Body::Upstream { .. }
            | Body::Resumed { .. }
            | Body::Masked { .. }
            | Body::Decoded { .. } => None,
        }
    }

    /// Caps a streamed body at `max` bytes (no effect on a buffered one).
    pub fn set_limit(&mut self, max: u64) {
        if let Body::Incoming { limit, .. } = self {
            *limit = max;
        }
    }

    /// A streamed body that fails with [`BodyTooLarge`] once more than `limit` bytes arrived.
    pub fn incoming(inner: Incoming, limit: u64) -> Self {
        Body::Incoming { inner, limit, seen: 0, deadline: None }
    }

    /// A client's request body that fails with [`BodyTimedOut`] if it has not ended by `deadline`.
    pub fn request(inner: Incoming, deadline: Option<Instant>) -> Self {
        Body::Incoming { inner, limit: u64::MAX, seen: 0, deadline: deadline.map(BodyDeadline::new) }
    }

    /// `head`, read from `tail` already, followed by the rest of `tail`.
    pub fn resumed(head: Bytes, tail: Body) -> Self {
        Body::Resumed { head: (!head.is_empty()).then_some(head), tail: Box::pin(tail) }
    }

    /// `tail` with every card number masked as it streams; `report` is called at its end.
    pub fn masked(tail: Body, masker: crate::card::Masker, report: MaskReport) -> Self {
        let state = Masking { masker, done: false, trailers: None, report: Some(report) };
        Body::Masked { tail: Box::pin(tail), state: Box::new(state) }
    }

    /// `tail`, compressed with `coding`, decoded as it streams; an error if it cannot be.
    pub fn decoded(tail: Body, coding: crate::decoding::Coding) -> Self {
        let state = Decoding { decoder: crate::decoding::Decoder::new(coding), done: false, trailers: None };
        Body::Decoded { tail: Box::pin(tail), state: Box::new(state) }
    }

    /// A backend's answer, read from its connection (which goes back to the pool at its end).
    pub fn from_upstream(inner: crate::answer::AnswerBody) -> Self {
        Body::Upstream { inner }
    }
}

/// At most this much of a refused request's unread body is read and dropped ([`discard`]).
const DISCARD_MAX: u64 = 1024 * 1024;
/// ... and for at most this long.
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// After a refusal decided before the request body was read (a 413 by `Content-Length`, a 403,
/// a 429): reads and drops what the client is still sending, within [`DISCARD_MAX`] bytes and
/// [`DISCARD_TIME`], so the refusal reaches it. Dropped unread, the body of a client still
/// uploading ends in an HTTP/2 `RST_STREAM` right after the answer (which some clients, curl 7
/// among them, report as an error instead of the answer), or, on HTTP/1.1, in a TCP reset that
/// can destroy the answer in the client's receive buffer; nginx discards such bodies too.
/// Past the bounds the body is dropped as before. A body already read, or none, costs nothing.
pub fn discard(body: Body) {
    if !matches!(body, Body::Incoming { .. } | Body::Resumed { .. }) || http_body::Body::is_end_stream(&body) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        use http_body_util::BodyExt as _;
        let mut body = body;
        let mut left = DISCARD_MAX;
        let reading = async {
            while let Some(Ok(frame)) = body.frame().await {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                match left.checked_sub(n) {
                    Some(rest) => left = rest,
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_TIME, reading).await;
    });
}

/// A request body as the context layer receives it: hyper's, from a client connection, or one
/// already in memory (`payguard explain` and `payguard test` decide requests without a client).
pub trait RequestBody: http_body::Body + Send + 'static {
    /// The exchange's body; `deadline`: when it must have ended.
    fn into_request(self, deadline: Option<Instant>) -> Body;
}

impl RequestBody for Incoming {
    fn into_request(self, deadline: Option<Instant>) -> Body {
        Body::request(self, deadline)
    }
}

impl RequestBody for Body {
    fn into_request(self, _deadline: Option<Instant>) -> Body {
        self
    }
}

impl From<Incoming> for Body {
    fn from(inner: Incoming) -> Self {
        Body::incoming(inner, u64::MAX)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            BodyProj::Empty => Poll::Ready(None),
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyProj::Incoming { inner, limit, seen, deadline } => match poll_before(inner, deadline, cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        *seen = seen.saturating_add(d.len() as u64);
                        if *seen > *limit {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit: *limit }))));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                other => other,
            },
            BodyProj::Resumed { head, tail } => match head.take() {
                Some(h) => Poll::Ready(Some(Ok(Frame::data(h)))),
                None => tail.as_mut().poll_frame(cx),
            },
            BodyProj::Masked { tail, state } => loop {
                if state.done {
                    return Poll::Ready(state.trailers.take().map(|t| Ok(Frame::trailers(t))));
                }
                let released = match ready!(tail.as_mut().poll_frame(cx)) {
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => state.masker.push_bytes(data),
                        Err(frame) => {
                            state.trailers = frame.into_trailers().ok();
                            state.end()
                        }
                    },
                    None => state.end(),
                };
                if let Some(data) = released {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
            },
            BodyProj::Decoded { tail, state } => loop {
                if state.done {
                    return Poll::Ready(state.trailers.take().map(|t| Ok(Frame::trailers(t))));
                }
                match state.decoder.pull() {
                    Err(e) => return Poll::Ready(Some(Err(Box::new(e)))),
                    Ok(Pull::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Pull::Done) => state.done = true,
                    Ok(Pull::NeedInput) => match ready!(tail.as_mut().poll_frame(cx)) {
                        Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) => state.decoder.push(data),
                            Err(frame) => {
                                state.trailers = frame.into_trailers().ok();
                                state.decoder.end();
                            }
                        },
                        None => state.decoder.end(),
                    },
                }
            },
            BodyProj::Upstream { inner } => Pin::new(inner).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full { data } => data.is_none(),
            Body::Incoming { inner, .. } => inner.is_end_stream(),
            Body::Upstream { inner, .. } => inner.is_end_stream(),
            Body::Resumed { head, tail } => head.is_none() && tail.is_end_stream(),
            Body::Masked { state, .. } => state.done && state.trailers.is_none(),
            Body::Decoded { state, .. } => state.done && state.trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Incoming { inner, .. } => inner.size_hint(),
            Body::Upstream { inner } => inner.size_hint(),
            Body::Resumed { head, tail } => prefixed(head.as_ref(), tail.size_hint()),
            Body::Masked { tail, state } if state.masker.keeps_length() => tail.size_hint(),
            Body::Masked { tail, .. } => {
                let mut hint = SizeHint::new();
                hint.set_lower(tail.size_hint().lower());
                hint
            }
            Body::Decoded { .. } => SizeHint::new(),
        }
    }
}

/// The size of a body that is `head`, then a body of size `tail`.
fn prefixed(head: Option<&Bytes>, tail: SizeHint) -> SizeHint {
    let head = head.map_or(0, |h| h.len() as u64);
    let mut hint = SizeHint::new();
    hint.set_lower(tail.lower().saturating_add(head));
    if let Some(u) = tail.upper() {
        hint.set_upper(u.saturating_add(head));
    }
    hint
}

/// How reading a body into a buffer up to a cap ended ([`read_capped_ready`], [`read_capped`]).
/// Trailers are not kept.
pub enum Capped {
    /// All of it.
    Whole(Bytes),
    /// Past the cap: what was read (more than the cap), and the unread rest.
    TooLarge(BytesMut, Body),
    /// The deadline passed first: what was read, and the unread rest.
    Late(BytesMut, Body),
    /// The body failed; the error says why (its own deadline, a client gone, a broken backend).
    Broken(BoxError),
}

/// Takes one frame of `body` into `buf`; `Some` once reading has ended. A body that comes
/// whole in one frame (the usual small one) is taken as it is, not copied; else `buf` is sized
/// to the whole body (as far as it is known, and the cap allows) at its first frame.
fn step_capped(
    buf: &mut BytesMut,
    body: &mut Body,
    frame: Option<Result<Frame<Bytes>, BoxError>>,
    max: u64,
) -> Option<Capped> {
    use http_body::Body as _;
    match frame {
        None => Some(Capped::Whole(std::mem::take(buf).freeze())),
        Some(Err(e)) => Some(Capped::Broken(e)),
        Some(Ok(frame)) => {
            if let Ok(data) = frame.into_data() {
                let len = data.len() as u64;
                if buf.is_empty() && len <= max && body.is_end_stream() {
                    return Some(Capped::Whole(data));
                }
                if buf.capacity() == 0 {
                    let whole = len.saturating_add(body.size_hint().lower()).min(max.saturating_add(1));
                    buf.reserve(usize::try_from(whole).unwrap_or(0));
                }
                buf.extend_from_slice(&data);
                if buf.len() as u64 > max {
                    return Some(Capped::TooLarge(std::mem::take(buf), std::mem::replace(body, Body::empty())));
                }
            }
            None
        }
    }
}

/// Reads what has arrived of `body` into `buf`, up to `max` bytes, without waiting; `None` when
/// more is to come (what was read stays in `buf`, the rest in `body`). A small body usually
/// came with its head: then it is decided at once, without a boxed future.
pub fn read_capped_ready(body: &mut Body, buf: &mut BytesMut, max: u64) -> Option<Capped> {
    use futures_util::FutureExt as _;
    use http_body_util::BodyExt as _;
    while let Some(frame) = body.frame().now_or_never() {
        if let Some(end) = step_capped(buf, body, frame, max) {
            return Some(end);
        }
    }
    None
}

/// Reads the rest of `body` into `buf` (what was read already), up to `max` bytes and, with a
/// `deadline`, until then. What has arrived is taken without a timer.
pub async fn read_capped(mut body: Body, mut buf: BytesMut, max: u64, deadline: Option<Instant>) -> Capped {
    use futures_util::FutureExt as _;
    use http_body_util::BodyExt as _;
    loop {
        let frame = match (body.frame().now_or_never(), deadline) {
            (Some(frame), _) => frame,
            (None, None) => body.frame().await,
            (None, Some(at)) => match tokio::time::timeout_at(at, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => return Capped::Late(buf, body),
            },
        };
        if let Some(end) = step_capped(&mut buf, &mut body, frame, max) {
            return end;
        }
    }
}

/// The length a message declares in its `Content-Length`, if it declares one.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// True when `err` (or anything in its source chain) is a [`BodyTooLarge`].
pub fn is_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    in_chain::<BodyTooLarge>(err)
}

/// True when `err` (or anything in its source chain) is a [`ClientBodyError`].
pub fn is_client_body_error(err: &(dyn std::error::Error + 'static)) -> bool {
    in_chain::<ClientBodyError>(err)
}

/// True when `err` (or anything in its source chain) is a [`BodyTimedOut`].
pub fn is_timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    in_chain::<BodyTimedOut>(err)
}

fn in_chain<T: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<T>() {
            return true;
        }
        cur = e.source();
    }
    false
}
