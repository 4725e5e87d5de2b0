//! The body cap, and buffering for routes that must read the body (signature, body
//! validation). Every other request streams through with the cap enforced while streaming.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use http_body_util::BodyExt;

use super::layer::{Guard, NoHold, NoRespond, Verdict};
use super::Reject;
use crate::body::{is_timed_out, Body, BoxError};
use crate::exchange::Exchange;
use crate::rules::Mode;

#[derive(Clone, Copy, Default)]
pub struct BufferGuard;

type Checked = (Exchange, Result<(), Reject>);

impl Guard for BufferGuard {
    const NAME: &'static str = "body";
    // Only requests that must be buffered pay for a boxed future.
    type Future = Pin<Box<dyn Future<Output = Checked> + Send>>;
    type Hold = NoHold;
    type Respond = NoRespond;

    fn check(&self, mut ex: Exchange) -> Verdict<Self::Future> {
        let limit = ex.max_body();
        // Without a route, only the defaults' card-number scan reads the body.
        let needs_body = ex.route.as_ref().map_or_else(|| ex.card_data().scans_requests(), |r| r.needs_body());
        let monitor = ex.mode() == Mode::Monitor;
        if !needs_body {
            // Streamed; in monitor mode nothing may cut a request short.
            ex.req.body_mut().set_limit(if monitor { u64::MAX } else { limit });
            return Verdict::Now(ex, Ok(()));
        }
        // The cap is checked here, on what was read: the body itself must not fail on it (in
        // monitor mode the rest is forwarded after what was read).
        ex.req.body_mut().set_limit(u64::MAX);
        let mut buf = BytesMut::new();
        // A small body usually arrived with the head: read what is there without waiting, and
        // decide at once when that is all of it.
        while let Some(frame) = ex.req.body_mut().frame().now_or_never() {
            if let Some(end) = step(&mut buf, frame, limit) {
                let outcome = finish(&mut ex, buf, end, limit);
                return Verdict::Now(ex, outcome);
            }
        }
        Verdict::Later(Box::pin(async move {
            loop {
                let frame = ex.req.body_mut().frame().await;
                if let Some(end) = step(&mut buf, frame, limit) {
                    let outcome = finish(&mut ex, buf, end, limit);
                    return (ex, outcome);
                }
            }
        }))
    }
}

/// How buffering a body ended.
enum End {
    /// All of it was read.
    Whole,
    /// Past the cap.
    TooLarge,
    /// `[server] body_read_timeout` passed before the body ended.
    TimedOut,
    Broken,
}

/// Takes one frame of the body into `buf`; `Some` once buffering has ended.
fn step(buf: &mut BytesMut, frame: Option<Result<http_body::Frame<Bytes>, BoxError>>, limit: u64) -> Option<End> {
    match frame {
        None => Some(End::Whole),
        Some(Err(e)) => Some(if is_timed_out(&*e) { End::TimedOut } else { End::Broken }),
        Some(Ok(frame)) => {
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                if buf.len() as u64 > limit {
                    return Some(End::TooLarge);
                }
            }
            None
        }
    }
}

/// Puts what was read back as the request's body and says whether the request may go on.
fn finish(ex: &mut Exchange, buf: BytesMut, end: End, limit: u64) -> Result<(), Reject> {
    let body = std::mem::replace(ex.req.body_mut(), Body::empty());
    let (body, outcome) = match end {
        End::Whole => (Body::full(buf.freeze()), Ok(())),
        End::TooLarge => {
            // What was read, then the unread rest (for monitor mode to forward).
            (Body::resumed(buf.freeze(), body), Err(Reject::BodyTooLarge { limit }))
        }
        End::TimedOut => (Body::empty(), Err(Reject::BodyTimeout)),
        End::Broken => (Body::empty(), Err(Reject::InvalidRequest("request body could not be read".into()))),
    };
    *ex.req.body_mut() = body;
    outcome
}
