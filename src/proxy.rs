//! Forwarding to the shop backend over a pooled HTTP/1.1 client, with header hygiene in both
//! directions. Bodies stream through untouched unless a guard already buffered them.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Request, Response, Uri, Version};

use crate::body::{self, Body};
use crate::config::UpstreamConfig;
use crate::context::{GuardTime, MatchedRoute};
use crate::exchange::Exchange;
use crate::guard::chain::Forward;
use crate::guard::Reject;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::rescue::{rescue, Refusal};
use crate::upstream::{self, Added, Outgoing, UpstreamError};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_PAYGUARD_VERIFIED: HeaderName = HeaderName::from_static("x-payguard-verified");

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy ones proxies still see), and the
/// forwarding-identity headers only payguard may set.
fn is_removed(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn is_owned(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "forwarded"
            | "x-real-ip"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-payguard-verified"
    )
}

/// Removes hop-by-hop headers, including every header the `Connection` header names, in one
/// pass over the names (most requests have none to remove, and then nothing is allocated).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, is_removed);
}

fn strip(headers: &mut HeaderMap, remove: impl Fn(&HeaderName) -> bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        let Ok(v) = v.to_str() else { continue };
        for token in v.split(',').map(str::trim) {
            // The usual tokens name no header, or one removed below anyway.
            if token.eq_ignore_ascii_case("keep-alive") || token.eq_ignore_ascii_case("close") {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(token.as_bytes()) {
                doomed.push(n);
            }
        }
    }
    doomed.extend(headers.keys().filter(|k| remove(k)).cloned());
    for n in doomed {
        headers.remove(&n);
    }
}

/// Forwards to the backend. Cloned per request, so it is one `Arc`.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Arc<Pool>,
    base_path: Box<str>,
    response_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(cfg: &UpstreamConfig, metrics: Arc<Metrics>) -> Self {
        // The config takes `http://` upstream URLs only: the backend sits beside payguard.
        let authority = cfg.url.authority().cloned().unwrap_or_else(|| Authority::from_static("127.0.0.1:3000"));
        let pool = Pool::new(&authority, 80, cfg.pool_max_idle_per_host, cfg.connect_timeout, cfg.pool_idle_timeout);
        let base = cfg.url.path().trim_end_matches('/');
        Proxy {
            inner: Arc::new(Inner { pool, base_path: base.into(), response_timeout: cfg.response_timeout, metrics }),
        }
    }
}

impl Inner {
    /// The request target the backend sees: origin form, under the upstream URL's path.
    fn upstream_uri(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let pq = if self.base_path.is_empty() {
            PathAndQuery::try_from(pq)?
        } else {
            PathAndQuery::try_from(format!("{}{}", self.base_path, pq))?
        };
        Ok(Uri::from(pq))
    }

    /// Sends on a pooled connection (`upstream::send`); the answer's hop-by-hop headers go.
    async fn send(&self, out: Outgoing) -> Result<Response<Body>, UpstreamError> {
        let mut res = upstream::send(&self.pool, out).await?;
        strip_hop_by_hop(res.headers_mut());
        Ok(res)
    }

    /// Rewrites a client request, in place, into the request the backend sees, but for the
    /// header fields payguard sets itself (the host returned here, its forwarding identity):
    /// those are written as the head is encoded ([`Added`]).
    fn prepare(&self, req: &mut Request<Body>) -> Result<Option<HeaderValue>, Reject> {
        // The authority the request was routed on (the head guard refused a Host header that
        // names another), else the Host header. An HTTP/2 request without a Host header was
        // given the authority as one by the router: reused as it is, not copied again.
        let sent = req.headers().get(header::HOST);
        let host = match req.uri().authority() {
            Some(a) if sent.is_some_and(|h| h.as_bytes() == a.as_str().as_bytes()) => sent.cloned(),
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => sent.cloned(),
        };
        *req.uri_mut() =
            self.upstream_uri(req.uri()).map_err(|_| Reject::InvalidRequest("invalid request target".into()))?;
        *req.version_mut() = Version::HTTP_11;
        // Hop-by-hop headers go, and so does anything the client sent about the forwarding
        // identity: payguard owns it.
        strip(req.headers_mut(), |n| is_removed(n) || is_owned(n));
        Ok(host)
    }
}

static HTTPS: HeaderValue = HeaderValue::from_static("https");

impl Forward for Proxy {
    async fn forward(&self, mut ex: Exchange) -> Response<Body> {
        let this = &*self.inner;
        // The request leaves the exchange; the rest of it stays where it is, boxed, not copied.
        let mut req = std::mem::replace(&mut ex.req, Request::new(Body::empty()));
        // The parsed JSON body was the guards'; it does not wait on the backend with the rest.
        ex.json = None;
        let version = req.version();
        let ex = &ex;
        let reject = |r: Reject| {
            let passed = crate::exchange::passed(&ex.trail);
            let route = ex.route.as_ref().map(|r| &r.name);
            let refusal = Refusal {
                passed: Some(&passed),
                elapsed: Some(ex.started.elapsed()),
                ..Refusal::of_proxy(&r, &ex.request_id, ex.client.ip, route, version)
            };
            // Enforced: the rescue point always answers.
            rescue(&refusal, &this.metrics).unwrap_or_else(|| r.to_response(None, "-"))
        };
        // In a block of its own, so that nothing but `out` is held across the wait below.
        let out = match this.prepare(&mut req) {
            Ok(host) => {
                let verified = ex.verified.as_ref().map(|v| HeaderValue::from_static(v.provider));
                let fields = [
                    (&X_FORWARDED_FOR, Some(&ex.client.forwarded_for)),
                    (&X_REAL_IP, Some(&ex.client.ip_header)),
                    (&X_FORWARDED_PROTO, Some(&HTTPS)),
                    (&X_FORWARDED_HOST, host.as_ref()),
                    (&X_PAYGUARD_VERIFIED, verified.as_ref()),
                ];
                Outgoing::take(&mut req, Added { host: host.as_ref(), fields: &fields })
            }
            Err(r) => return reject(r),
        };
        drop(req);
        let guards = GuardTime(ex.started.elapsed());
        // Boxed: the exchange's state (~2 KB: the backend's connection, the answer being read)
        // would otherwise be part of, and moved with, every future that holds this one, up to
        // the chain's (then ~9 KB, copied into its box on every request).
        match tokio::time::timeout(this.response_timeout, Box::pin(this.send(out))).await {
            Ok(Ok(mut res)) => {
                if let Some(route) = &ex.route {
                    res.extensions_mut().insert(MatchedRoute::Route(route.counters.clone()));
                }
                res.extensions_mut().insert(guards);
                res
            }
            Ok(Err(e)) if body::is_too_large(&e) => {
                let limit = source_limit(&e).unwrap_or(0);
                reject(Reject::BodyTooLarge { limit })
            }
            // The client's fault, not the backend's: no upstream error.
            Ok(Err(e)) if body::is_timed_out(&e) => reject(Reject::BodyTimeout),
            // Bad chunked framing (or the client left): the client's fault too.
            Ok(Err(e)) if body::is_client_body_error(&e) => {
                reject(Reject::InvalidRequest("request body is malformed or incomplete".into()))
            }
            Ok(Err(e)) => {
                let kind = if matches!(e, UpstreamError::Connect(_)) { "connect" } else { "io" };
                let error = error_chain(&e);
                this.metrics.upstream_error(kind);
                tracing::warn!(target: "payguard::proxy", request_id = ex.request_id.to_str().unwrap_or("-"), kind, error, "forward failed");
                reject(Reject::UpstreamUnavailable)
            }
            Err(_) => {
                this.metrics.upstream_error("timeout");
                reject(Reject::UpstreamTimeout)
            }
        }
    }
}

/// An error with its sources (`client error (SendRequest): connection closed before message
/// completed`): the outer hyper error alone says too little. None of them carries a request value.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

fn source_limit(err: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<body::BodyTooLarge>() {
            return Some(t.limit);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret-Hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }
}
