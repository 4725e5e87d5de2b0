//! The outermost layer: gives every request its id and client address, removes headers only
//! payguard may set, and records the finished exchange (access line + metrics) when the
//! response body ends — so duration and byte counts are the real ones, streaming included.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version};
use http_body::{Frame, SizeHint};
use tower::{Layer, Service};

use crate::body::{Body, BoxError, RequestBody};
use crate::client_ip::{ClientIp, TrustedProxies};
use crate::metrics::{Metrics, RouteCounters, RouteLabel};
use crate::telemetry;

pub const X_REQUEST_ID: &str = "x-request-id";

/// Set by the server on a request whose host the connection's certificate does not cover, on
/// a connection opened (SNI) for another host: the router answers 421.
#[derive(Debug, Clone, Copy)]
pub struct Misdirected;

/// Set by the server on every request of a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer address as a header value, formatted once per connection.
    pub peer_header: HeaderValue,
    /// `[server] body_read_timeout`: the request body must have arrived this long after its head.
    pub body_read_timeout: Option<std::time::Duration>,
}

/// What the edge learned about a request: handed to the router with the request itself
/// ([`Contextual`]), which makes it part of the request's `Exchange`.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// When this layer saw the request head: the exchange's clock starts here.
    pub started: Instant,
    pub request_id: HeaderValue,
    pub client: ClientIp,
    pub peer: SocketAddr,
}

impl RequestCtx {
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }
}

/// A request and its context, as the context layer hands it inward: the context travels as a
/// value, so no later layer can miss it.
pub struct Contextual {
    pub ctx: RequestCtx,
    pub req: Request<Body>,
}

/// Put on a response by the layer that matched a route, so the access line and metrics can
/// name it.
#[derive(Debug, Clone)]
pub enum MatchedRoute {
    /// The route's metric handles, which carry its name (the backend's answer).
    Route(Arc<RouteCounters>),
    /// Its name alone (a refusal).
    Name(RouteLabel),
}

impl MatchedRoute {
    pub fn label(&self) -> &RouteLabel {
        match self {
            MatchedRoute::Route(c) => c.label(),
            MatchedRoute::Name(label) => label,
        }
    }

    fn counters(&self) -> Option<&RouteCounters> {
        match self {
            MatchedRoute::Route(c) => Some(c),
            MatchedRoute::Name(_) => None,
        }
    }
}

/// Put on the backend's answer by the proxy (and on nothing else, so it also tells a backend
/// answer from a refusal): the time from the request head to forwarding the request, i.e. what
/// the guards took. The access line records it as `guards_ms`.
#[derive(Debug, Clone, Copy)]
pub struct GuardTime(pub std::time::Duration);

/// `x-request-id` is kept when it is 1–128 chars of `[A-Za-z0-9._-]` and comes from a trusted
/// proxy.
pub fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    let r = fastrand::u128(..);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((r >> (i * 4)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

/// Removes every client-sent `x-payguard-*` header: those claim verification results that only
/// payguard may assert.
pub fn strip_owned_headers(headers: &mut HeaderMap) {
    let owned: Vec<http::HeaderName> =
        headers.keys().filter(|k| k.as_str().starts_with("x-payguard-")).cloned().collect();
    for k in owned {
        headers.remove(&k);
    }
}

#[derive(Clone)]
pub struct ContextLayer {
    trusted: Arc<TrustedProxies>,
    metrics: Arc<Metrics>,
    added: AddedHeaders,
}

/// Headers put on every response that does not carry them already (the backend's win).
pub type AddedHeaders = Arc<[(http::HeaderName, HeaderValue)]>;

impl ContextLayer {
    pub fn new(trusted: Arc<TrustedProxies>, metrics: Arc<Metrics>) -> Self {
        ContextLayer { trusted, metrics, added: Arc::new([]) }
    }

    /// `[server] hsts_max_age` and `[server.response_headers]`.
    pub fn with_response_headers(mut self, added: AddedHeaders) -> Self {
        self.added = added;
        self
    }
}

impl<S> Layer<S> for ContextLayer {
    type Service = ContextService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ContextService {
            inner,
            trusted: self.trusted.clone(),
            metrics: self.metrics.clone(),
            added: self.added.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ContextService<S> {
    inner: S,
    trusted: Arc<TrustedProxies>,
    metrics: Arc<Metrics>,
    added: AddedHeaders,
}

impl<S, B> Service<Request<B>> for ContextService<S>
where
    S: Service<Contextual, Response = Response<Body>, Error = Infallible>,
    B: RequestBody,
{
    type Response = Response<LoggedBody>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let (mut parts, body) = req.into_parts();
        let (peer, peer_header, body_timeout) = match parts.extensions.remove::<ConnInfo>() {
            Some(c) => (c.peer, c.peer_header, c.body_read_timeout),
            None => (SocketAddr::from(([0, 0, 0, 0], 0)), HeaderValue::from_static("0.0.0.0"), None),
        };
        // The head's size as the client sent it, before this layer adds or removes headers.
        if parts.version <= Version::HTTP_11 {
            parts.extensions.insert(crate::guard::head::ClientHeadLen(crate::guard::head::head_len(&parts)));
        }
        // A client's own id is believed only from a trusted proxy: anyone else could reuse the
        // id of another request to muddle the audit trail. Theirs is logged next to ours.
        let offered = match parts.headers.get(X_REQUEST_ID) {
            Some(v) if valid_request_id(v) && parts.headers.get_all(X_REQUEST_ID).iter().count() == 1 => {
                Some(v.clone())
            }
            _ => None,
        };
        let (request_id, client_request_id) = match offered {
            Some(v) if self.trusted.contains(peer.ip()) => (v, None),
            offered => (new_request_id(), offered),
        };
        parts.headers.insert(X_REQUEST_ID, request_id.clone());
        strip_owned_headers(&mut parts.headers);
        let client = self.trusted.resolve(peer.ip(), &peer_header, &parts.headers);
        let record = Record {
            start,
            request_id: request_id.clone(),
            client_request_id,
            client_ip: client.ip,
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            version: parts.version,
        };
        let ctx = RequestCtx { started: start, request_id, client, peer };
        let deadline = match body_timeout {
            Some(t) if !http_body::Body::is_end_stream(&body) => Some(tokio::time::Instant::from_std(start + t)),
            _ => None,
        };
        let req = Request::from_parts(parts, body.into_request(deadline));
        ResponseFuture {
            inner: self.inner.call(Contextual { ctx, req }),
            record: Some(record),
            metrics: self.metrics.clone(),
            added: self.added.clone(),
        }
    }
}

struct Record {
    start: Instant,
    request_id: HeaderValue,
    /// A well-formed `x-request-id` from an untrusted peer: logged, not used.
    client_request_id: Option<HeaderValue>,
    client_ip: IpAddr,
    method: Method,
    path: String,
    version: Version,
}

pin_project_lite::pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        record: Option<Record>,
        metrics: Arc<Metrics>,
        added: AddedHeaders,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<LoggedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = match this.inner.poll(cx) {
            Poll::Ready(Ok(res)) => res,
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => return Poll::Pending,
        };
        let Some(record) = this.record.take() else {
            // Polled after completion: cannot happen with hyper; answer something sane.
            return Poll::Ready(Ok(res.map(|b| LoggedBody { inner: b, finish: None })));
        };
        let (mut parts, mut body) = res.into_parts();
        if record.method == Method::HEAD {
            // A response to HEAD has no body, whoever built it (a rejection's JSON included).
            body = Body::empty();
        }
        // A value no other response repeats: HPACK should not index it (HTTP/2). Indexed, each
        // response's id evicted the repeated headers from the connection's table and the encoder
        // compared every new id with all the ones kept (~50 comparisons per response).
        let mut request_id = record.request_id.clone();
        request_id.set_sensitive(true);
        parts.headers.insert(X_REQUEST_ID, request_id);
        for (name, value) in this.added.iter() {
            if !parts.headers.contains_key(name) {
                parts.headers.insert(name.clone(), value.clone());
            }
        }
        let route = match parts.extensions.get::<MatchedRoute>() {
            Some(matched) => matched.clone(),
            None => MatchedRoute::Name(RouteLabel(Arc::from(""))),
        };
        let guards = parts.extensions.get::<GuardTime>().map(|g| g.0);
        let status = parts.status.as_u16();
        let finish = Finish { record, route, status, guards, bytes: 0, metrics: this.metrics.clone() };
        Poll::Ready(Ok(Response::from_parts(parts, LoggedBody { inner: body, finish: Some(Box::new(finish)) })))
    }
}

struct Finish {
    record: Record,
    route: MatchedRoute,
    status: u16,
    guards: Option<std::time::Duration>,
    bytes: u64,
    metrics: Arc<Metrics>,
}

impl Finish {
    fn emit(&self, completed: bool) {
        let elapsed = self.record.start.elapsed();
        let route = self.route.label();
        self.metrics.request_done(route, self.route.counters(), self.status, elapsed, self.bytes);
        telemetry::access(&telemetry::AccessRecord {
            request_id: self.record.request_id.to_str().unwrap_or("-"),
            client_request_id: self.record.client_request_id.as_ref().and_then(|v| v.to_str().ok()),
            client_ip: self.record.client_ip,
            method: &self.record.method,
            path: &self.record.path,
            version: self.record.version,
            route: &route.0,
            status: self.status,
            duration: elapsed,
            guards: self.guards,
            bytes_out: self.bytes,
            completed,
        });
    }
}

pin_project_lite::pin_project! {
    /// The response body as sent to the client; records the exchange when it ends or is dropped
    /// (a client that hangs up mid-download is logged with `completed: false`).
    pub struct LoggedBody {
        #[pin]
        inner: Body,
        finish: Option<Box<Finish>>,
    }

    impl PinnedDrop for LoggedBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(f) = this.project().finish.take() {
                f.emit(false);
            }
        }
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let mut inner = this.inner;
        let polled = inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(d), Some(f)) = (frame.data_ref(), this.finish.as_mut()) {
                    f.bytes += d.len() as u64;
                }
                // hyper stops polling once the body says it is at its end (a full body, a
                // Content-Length reached): that is the end, not a hang-up.
                if inner.is_end_stream() {
                    if let Some(f) = this.finish.take() {
                        f.emit(true);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(f) = this.finish.take() {
                    f.emit(true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(f) = this.finish.take() {
                    // Only a streamed backend body can fail here: the backend broke off mid-response.
                    f.metrics.upstream_error("body");
                    f.emit(false);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn request_id_rules() {
        assert!(valid_request_id(&HeaderValue::from_static("abc-DEF_1.2")));
        assert!(valid_request_id(&HeaderValue::from_str(&"a".repeat(128)).unwrap()));
        assert!(!valid_request_id(&HeaderValue::from_str(&"a".repeat(129)).unwrap()));
        assert!(!valid_request_id(&HeaderValue::from_static("")));
        assert!(!valid_request_id(&HeaderValue::from_static("a b")));
        assert!(!valid_request_id(&HeaderValue::from_static("a/b")));
        let g = new_request_id();
        assert!(valid_request_id(&g));
        assert_eq!(g.len(), 32);
        assert_ne!(g, new_request_id());
    }

    #[test]
    fn owned_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("x-payguard-verified", HeaderValue::from_static("stripe"));
        h.append("x-payguard-anything", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        strip_owned_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-other"));
    }
}
