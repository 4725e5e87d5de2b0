//! The body cap, and buffering for routes that must read the body (signature, body
//! validation). Every other request streams through with the cap enforced while streaming.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body_util::BodyExt;

use super::layer::{Guard, NoHold, NoRespond, RouteCtx, Verdict};
use super::Reject;
use crate::body::{is_timed_out, Body, BodyDeadline};
use crate::rules::Mode;

#[derive(Clone, Copy, Default)]
pub struct BufferGuard;

type Checked = (Request<Body>, Result<(), Reject>);

impl Guard for BufferGuard {
    const NAME: &'static str = "body";
    // Only requests that must be buffered pay for a boxed future.
    type Future = Pin<Box<dyn Future<Output = Checked> + Send>>;
    type Hold = NoHold;
    type Respond = NoRespond;

    fn check(&self, req: Request<Body>, route: &RouteCtx) -> Verdict<Self::Future> {
        let limit = route.max_body();
        let needs_body = route.route.as_ref().is_some_and(|r| r.needs_body());
        let monitor = route.mode() == Mode::Monitor;
        if !needs_body {
            let (parts, mut body) = req.into_parts();
            // Streamed; in monitor mode nothing may cut a request short.
            body.set_limit(if monitor { u64::MAX } else { limit });
            return Verdict::Now(Request::from_parts(parts, body), Ok(()));
        }
        Verdict::Later(Box::pin(async move {
            let (parts, body) = req.into_parts();
            match read_capped(body, limit).await {
                Ok(bytes) => (Request::from_parts(parts, Body::full(bytes)), Ok(())),
                Err(ReadError::TooLarge { head, rest }) => {
                    let body = match rest {
                        Some((tail, deadline)) => Body::Chain { head: Some(head), tail, deadline },
                        None => Body::full(head),
                    };
                    (Request::from_parts(parts, body), Err(Reject::BodyTooLarge { limit }))
                }
                Err(ReadError::TimedOut) => (Request::from_parts(parts, Body::empty()), Err(Reject::BodyTimeout)),
                Err(ReadError::Broken) => (
                    Request::from_parts(parts, Body::empty()),
                    Err(Reject::InvalidRequest("request body could not be read".into())),
                ),
            }
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
        // Chain is only built by this guard and Upstream only for responses: a second
        // buffering pass or a response here would be a stack bug.
        Body::Chain { .. } | Body::Upstream { .. } => Err(ReadError::Broken),
    }
}
