//! Routing: normalise the path, pick the route from the current rule set (one `ArcSwap` load
//! per request), and hand every later layer the request's [`Exchange`]. Requests that
//! match no route are forwarded under `[defaults]` or refused with 404, as the rules say.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Request, Response, Uri, Version};
use tower::{Layer, Service};

use crate::body::Body;
use crate::context::Contextual;
use crate::exchange::{Exchange, Parts};
use crate::guard::head::HeadLimits;
use crate::guard::layer::apply;
use crate::guard::Reject;
use crate::metrics::Metrics;
use crate::rescue::{rescue, Refusal};
use crate::rules::active::SharedRules;
use crate::rules::{DefaultAction, RouteLookup};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("request path must start with '/'")]
    NotAbsolute,
    #[error("request path contains an encoded slash, backslash or NUL")]
    EncodedSeparator,
    #[error("request path contains a backslash")]
    Backslash,
    #[error("request path contains an invalid percent-escape")]
    BadEscape,
    #[error("request path climbs above the root")]
    AboveRoot,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The path a backend will act on, so routing sees the same thing: unreserved characters
/// percent-decoded (RFC 3986 §6.2.2.2), `//` collapsed, `.` and `..` resolved. Encoded `/`,
/// `\` and NUL, raw backslashes, broken escapes and `..` above the root are refused: backends
/// disagree about them, and that disagreement is how rules get bypassed.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let b = path.as_bytes();
    if b.contains(&b'\\') {
        return Err(PathError::Backslash);
    }
    let clean = !b.contains(&b'%') && !path.contains("//") && !path.contains("/.");
    if clean {
        return Ok(Cow::Borrowed(path));
    }
    // 1. Percent-decoding of unreserved characters only.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(h), Some(l)) = (b.get(i + 1).and_then(|&c| hex(c)), b.get(i + 2).and_then(|&c| hex(c))) else {
                return Err(PathError::BadEscape);
            };
            let c = h * 16 + l;
            match c {
                b'/' | b'\\' | 0 => return Err(PathError::EncodedSeparator),
                c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => decoded.push(c as char),
                _ => {
                    decoded.push('%');
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
                }
            }
            i += 3;
        } else {
            // Multi-byte UTF-8 can't occur in a valid URI path; copy bytes as chars safely.
            let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
            decoded.push_str(&path[i..i + ch_len]);
            i += ch_len;
        }
    }
    // 2. Segments.
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => out.push(s),
        }
    }
    let mut norm = String::with_capacity(decoded.len());
    for s in &out {
        norm.push('/');
        norm.push_str(s);
    }
    if norm.is_empty() || trailing {
        norm.push('/');
    }
    if norm == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(norm))
    }
}

fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

/// The host a request is for: its `:authority` (HTTP/2, or an absolute-form target), else its
/// Host header.
fn host_of(req: &Request<Body>) -> Option<&str> {
    req.uri().authority().map(|a| a.host()).or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
}

#[derive(Clone)]
pub struct RouteLayer {
    rules: SharedRules,
    metrics: Arc<Metrics>,
    limits: HeadLimits,
}

impl RouteLayer {
    /// `limits`: the `[server]` request-head bounds.
    pub fn new(rules: SharedRules, metrics: Arc<Metrics>, limits: HeadLimits) -> Self {
        RouteLayer { rules, metrics, limits }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = RouteService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RouteService { inner, rules: self.rules.clone(), metrics: self.metrics.clone(), limits: self.limits }
    }
}

#[derive(Clone)]
pub struct RouteService<S> {
    inner: S,
    rules: SharedRules,
    metrics: Arc<Metrics>,
    limits: HeadLimits,
}

impl<S> Service<Contextual> for RouteService<S>
where
    S: Service<Exchange, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response<Body>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, Contextual { ctx, req }: Contextual) -> Self::Future {
        // Refusals of the head, before a route is known: always enforced, and the rescue point
        // closes an HTTP/1 connection after them.
        let refuse = |req: &mut Request<Body>, r: Reject, metrics: &Metrics| {
            let refusal = Refusal::of_head(&ctx, req.version(), "route", &r);
            let res = rescue(&refusal, metrics)?;
            crate::body::discard(std::mem::replace(req.body_mut(), Body::empty()));
            Some(Either::Left(std::future::ready(Ok(res))))
        };
        let (mut parts, body) = req.into_parts();
        let head = crate::guard::head::check(&parts, &self.limits);
        // HTTP/2 carries the host as `:authority`: give every later layer (required_headers,
        // header-keyed rate limits, the backend) the Host header an HTTP/1.1 request has. Only
        // now, so the head check compared only a Host header the client sent.
        if parts.version == Version::HTTP_2 && !parts.headers.contains_key(header::HOST) {
            if let Some(host) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        let mut req = Request::from_parts(parts, body);
        if let Err(r) = head {
            if let Some(res) = refuse(&mut req, r, &self.metrics) {
                return res;
            }
        }
        let path = match normalize_path(req.uri().path()) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(p)) => Some(p),
            Err(e) => {
                if let Some(res) = refuse(&mut req, Reject::InvalidRequest(e.to_string()), &self.metrics) {
                    return res;
                }
                None
            }
        };
        if let Some(p) = path {
            match with_path(req.uri(), &p) {
                Some(uri) => *req.uri_mut() = uri,
                None => {
                    let r = Reject::InvalidRequest("invalid request target".into());
                    if let Some(res) = refuse(&mut req, r, &self.metrics) {
                        return res;
                    }
                }
            }
        }
        let active = self.rules.load_full();
        let misdirected = req.extensions().get::<crate::context::Misdirected>().is_some()
            || active.rules.defaults().hosts.as_ref().is_some_and(|h| !h.allows(host_of(&req)));
        if misdirected {
            if let Some(res) = refuse(&mut req, Reject::MisdirectedRequest, &self.metrics) {
                return res;
            }
        }
        let host = host_of(&req);
        let lookup = active.rules.route(host, req.uri().path(), req.method());
        let (route, refused) = match lookup {
            RouteLookup::Matched(r) => (Some(r.clone()), None),
            RouteLookup::MethodNotAllowed(r) => {
                (Some(r.clone()), Some(Reject::MethodNotAllowed { allow: r.allow_header() }))
            }
            RouteLookup::NoRoute if active.rules.defaults().action == DefaultAction::Deny => {
                (None, Some(Reject::NoRoute))
            }
            RouteLookup::NoRoute => (None, None),
        };
        let mut ex = Exchange::new(Parts {
            req,
            started: ctx.started,
            trail: Vec::new(),
            request_id: ctx.request_id,
            client: ctx.client,
            peer: ctx.peer,
            active,
            route,
            verified: None,
            replay: None,
            reserved: None,
            failure_keys: Vec::new(),
            attempt: None,
            json: None,
            content: None,
        });
        if let Some(r) = refused {
            if let Some(res) = apply("route", &r, &mut ex, &self.metrics) {
                return Either::Left(std::future::ready(Ok(res)));
            }
        }
        Either::Right(self.inner.call(ex))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn clean_paths_are_borrowed() {
        assert!(matches!(normalize_path("/api/orders").unwrap(), Cow::Borrowed(_)));
        assert!(matches!(normalize_path("/").unwrap(), Cow::Borrowed(_)));
        assert!(matches!(normalize_path("/a.b/c").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn tricks_are_normalised() {
        for (input, want) in [
            ("//admin", "/admin"),
            ("/api//orders", "/api/orders"),
            ("/api/./orders", "/api/orders"),
            ("/api/x/../admin", "/api/admin"),
            ("/%61dmin", "/admin"),
            ("/pay/%6Eotify", "/pay/notify"),
            ("/a/%2e%2e/admin", "/admin"),
            ("/a/b/", "/a/b/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/caf%c3%a9", "/caf%C3%A9"),
        ] {
            assert_eq!(normalize_path(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(normalize_path("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a%5Cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a%00"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a\\b"), Err(PathError::Backslash));
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%4"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/../etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(normalize_path("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
    }

    proptest::proptest! {
        #[test]
        fn normalising_twice_changes_nothing(s in "/[a-z%./2F5Ce0-9]{0,24}") {
            if let Ok(once) = normalize_path(&s) {
                let once = once.into_owned();
                let twice = normalize_path(&once).unwrap().into_owned();
                proptest::prop_assert_eq!(once, twice);
            }
        }
    }
}
