//! Forwarding to the shop backend over a pooled HTTP/1.1 client, with header hygiene in both
//! directions. Bodies stream through untouched unless a guard already buffered them.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::Service;

use crate::body::{self, Body};
use crate::config::UpstreamConfig;
use crate::context::{MatchedRoute, RequestCtx};
use crate::guard::Reject;
use crate::metrics::Metrics;

/// Set by the signature guard after a verified signature; becomes `x-payguard-verified`.
#[derive(Debug, Clone, Copy)]
pub struct Verified(pub &'static str);

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
        doomed.extend(v.split(',').filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()));
    }
    doomed.extend(headers.keys().filter(|k| remove(k)).cloned());
    for n in doomed {
        headers.remove(&n);
    }
}

const UPSTREAM_READ_BUF: usize = 64 * 1024;

#[derive(Clone)]
pub struct Proxy {
    client: Client<HttpConnector, Body>,
    scheme: Scheme,
    authority: Authority,
    base_path: Arc<str>,
    response_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(cfg: &UpstreamConfig, metrics: Arc<Metrics>) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            // The read buffer per backend connection (default: grows to ~400 KiB). A client that
            // stops reading holds it until send_timeout; 64 KiB keeps a thousand of them cheap.
            .http1_max_buf_size(UPSTREAM_READ_BUF)
            .build(http);
        let base = cfg.url.path().trim_end_matches('/');
        Proxy {
            client,
            scheme: cfg.url.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: cfg.url.authority().cloned().unwrap_or_else(|| Authority::from_static("127.0.0.1:3000")),
            base_path: Arc::from(base),
            response_timeout: cfg.response_timeout,
            metrics,
        }
    }

    fn upstream_uri(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let pq = if self.base_path.is_empty() {
            PathAndQuery::try_from(pq)?
        } else {
            PathAndQuery::try_from(format!("{}{}", self.base_path, pq))?
        };
        Uri::builder().scheme(self.scheme.clone()).authority(self.authority.clone()).path_and_query(pq).build()
    }

    /// Rewrites a client request into the request the backend sees.
    fn prepare(&self, req: Request<Body>) -> Result<Request<Body>, Reject> {
        let (mut parts, body) = req.into_parts();
        let host = parts
            .headers
            .get(header::HOST)
            .cloned()
            .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
        parts.uri =
            self.upstream_uri(&parts.uri).map_err(|_| Reject::InvalidRequest("invalid request target".into()))?;
        parts.version = Version::HTTP_11;
        let h = &mut parts.headers;
        // Hop-by-hop headers go, and so does anything the client sent about the forwarding
        // identity: payguard owns it.
        strip(h, |n| is_removed(n) || is_owned(n));
        if let Some(ctx) = parts.extensions.get::<RequestCtx>() {
            h.insert(X_FORWARDED_FOR.clone(), ctx.client.forwarded_for.clone());
            h.insert(X_REAL_IP.clone(), ctx.client.ip_header.clone());
        }
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
        if let Some(host) = host {
            h.insert(X_FORWARDED_HOST.clone(), host.clone());
            h.insert(header::HOST, host);
        }
        if let Some(v) = parts.extensions.get::<Verified>() {
            h.insert(X_PAYGUARD_VERIFIED.clone(), HeaderValue::from_static(v.0));
        }
        Ok(Request::from_parts(parts, body))
    }
}

fn prepare_response(res: Response<hyper::body::Incoming>) -> Response<Body> {
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::from(body))
}

impl Service<Request<Body>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (request_id, client_ip) = req
                .extensions()
                .get::<RequestCtx>()
                .map(|c| (c.request_id.clone(), c.client.ip))
                .unwrap_or((HeaderValue::from_static("-"), std::net::IpAddr::from([0, 0, 0, 0])));
            let route = req.extensions().get::<MatchedRoute>().cloned();
            let reject = |r: Reject| {
                let id = request_id.to_str().unwrap_or("-");
                let detail = r.to_string();
                crate::telemetry::audit(&crate::telemetry::Decision {
                    request_id: id,
                    route: route.as_ref().map(|r| &*r.0),
                    client_ip,
                    guard: "proxy",
                    decision: "block",
                    reason: r.code(),
                    detail: &detail,
                    key_id: None,
                    skew_secs: None,
                });
                let mut res = r.to_response(route.as_ref().map(|r| &*r.0), id);
                if let Some(route) = route.clone() {
                    res.extensions_mut().insert(route);
                }
                Ok(res)
            };
            let req = match this.prepare(req) {
                Ok(r) => r,
                Err(r) => return reject(r),
            };
            match tokio::time::timeout(this.response_timeout, this.client.request(req)).await {
                Ok(Ok(res)) => {
                    let mut res = prepare_response(res);
                    if let Some(route) = route {
                        res.extensions_mut().insert(route);
                    }
                    Ok(res)
                }
                Ok(Err(e)) => {
                    if body::is_too_large(&e) {
                        let limit = source_limit(&e).unwrap_or(0);
                        return reject(Reject::BodyTooLarge { limit });
                    }
                    if body::is_timed_out(&e) {
                        // The client's fault, not the backend's: no upstream error.
                        return reject(Reject::BodyTimeout);
                    }
                    let kind = if e.is_connect() { "connect" } else { "io" };
                    this.metrics.upstream_error(kind);
                    tracing::warn!(target: "payguard::proxy", request_id = request_id.to_str().unwrap_or("-"), kind, error = %e, "forward failed");
                    reject(Reject::UpstreamUnavailable)
                }
                Err(_) => {
                    this.metrics.upstream_error("timeout");
                    reject(Reject::UpstreamTimeout)
                }
            }
        })
    }
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
