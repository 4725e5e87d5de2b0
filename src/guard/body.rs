//! The body cap, and buffering for routes that must read the body (signature, body
//! validation). Every other request streams through with the cap enforced while streaming.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use super::layer::{Guard, NoHold, NoRespond, Verdict};
use super::Reject;
use crate::body::{is_timed_out, Body, BodyDeadline};
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
        let needs_body = ex.route.as_ref().is_some_and(|r| r.needs_body());
        let monitor = ex.mode() == Mode::Monitor;
        if !needs_body {
            // Streamed; in monitor mode nothing may cut a request short.
            ex.req.body_mut().set_limit(if monitor { u64::MAX } else { limit });
            return Verdict::Now(ex, Ok(()));
        }
        Verdict::Later(Box::pin(async move {
            let body = std::mem::replace(ex.req.body_mut(), Body::empty());
            let (body, outcome) = match read_capped(body, limit).await {
                Ok(bytes) => (Body::full(bytes), Ok(())),
                Err(ReadError::TooLarge { head, rest }) => {
                    let body = match rest {
                        Some((tail, deadline)) => Body::Chain { head: Some(head), tail, deadline },
                        None => Body::full(head),
                    };
                    (body, Err(Reject::BodyTooLarge { limit }))
                }
                Err(ReadError::TimedOut) => (Body::empty(), Err(Reject::BodyTimeout)),
                Err(ReadError::Broken) => {
                    (Body::empty(), Err(Reject::InvalidRequest("request body could not be read".into())))
                }
            };
            *ex.req.body_mut() = body;
            (ex, outcome)
        }))
    }
}

enum ReadError {
    /// Past the cap: what was read, and the unread rest (for monitor mode to forward).
    TooLarge {
        head: Bytes,
        rest: Option<(hyper::body::Incoming, Option<BodyDeadline>)>,
    },
    /// `[server] body_read_timeout` passed before the body ended.
    TimedOut,
    Broken,
}

async fn read_capped(body: Body, limit: u64) -> Result<Bytes, ReadError> {
    match body {
        Body::Empty => Ok(Bytes::new()),
        Body::Full { data } => {
            let data = data.unwrap_or_default();
            if data.len() as u64 > limit {
                Err(ReadError::TooLarge { head: data, rest: None })
            } else {
                Ok(data)
            }
        }
        Body::Incoming { inner, deadline, .. } => {
            // Read through the body itself (no cap: that is checked here) so the deadline holds.
            let mut body = Body::Incoming { inner, limit: u64::MAX, seen: 0, deadline };
            let mut buf = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame =
                    frame.map_err(|e| if is_timed_out(&*e) { ReadError::TimedOut } else { ReadError::Broken })?;
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                    if buf.len() as u64 > limit {
                        let rest = match body {
                            Body::Incoming { inner, deadline, .. } => Some((inner, deadline)),
                            _ => None,
                        };
                        return Err(ReadError::TooLarge { head: buf.freeze(), rest });
                    }
                }
            }
            Ok(buf.freeze())
        }
        // Chain is only built by this guard, Upstream and Resumed only for responses: a second
        // buffering pass or a response here would be a stack bug.
        Body::Chain { .. } | Body::Upstream { .. } | Body::Resumed { .. } => Err(ReadError::Broken),
    }
}
