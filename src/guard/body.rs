//! The body cap, and buffering for routes that must read the body (signature, body
//! validation). Every other request streams through with the cap enforced while streaming.

use std::future::Future;
use std::pin::Pin;

use bytes::BytesMut;

use super::layer::{Guard, NoHold, NoRespond, Verdict};
use super::Reject;
use crate::body::{is_timed_out, read_capped, read_capped_ready, Body, Capped};
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
        if let Some(end) = read_capped_ready(ex.req.body_mut(), &mut buf, limit) {
            let outcome = finish(&mut ex, end, limit);
            return Verdict::Now(ex, outcome);
        }
        Verdict::Later(Box::pin(async move {
            let body = std::mem::replace(ex.req.body_mut(), Body::empty());
            let end = read_capped(body, buf, limit, None).await;
            let outcome = finish(&mut ex, end, limit);
            (ex, outcome)
        }))
    }
}

/// Puts what was read back as the request's body and says whether the request may go on.
fn finish(ex: &mut Exchange, end: Capped, limit: u64) -> Result<(), Reject> {
    let (body, outcome) = match end {
        Capped::Whole(bytes) => (Body::full(bytes), Ok(())),
        // What was read, then the unread rest (for monitor mode to forward).
        Capped::TooLarge(buf, rest) => (Body::resumed(buf.freeze(), rest), Err(Reject::BodyTooLarge { limit })),
        // `[server] body_read_timeout` passed before the body ended.
        Capped::Late(..) => (Body::empty(), Err(Reject::BodyTimeout)),
        Capped::Broken(e) if is_timed_out(&*e) => (Body::empty(), Err(Reject::BodyTimeout)),
        Capped::Broken(_) => (Body::empty(), Err(Reject::InvalidRequest("request body could not be read".into()))),
    };
    *ex.req.body_mut() = body;
    outcome
}
