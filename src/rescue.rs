//! The one rescue point: every refusal — a guard's, the router's, the proxy's, the HTTP layer's —
//! becomes its audit line, its metric and (unless the route is in monitor mode) its response
//! here, and here alone it is decided whether the connection may carry another request.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Response, Version};

use crate::body::Body;
use crate::context::{MatchedRoute, RequestCtx};
use crate::guard::Reject;
use crate::metrics::{Metrics, RouteLabel};
use crate::rules::Mode;
use crate::telemetry;

/// Where in a request's life the refusal happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before a route was chosen: the request head itself is malformed or ambiguous. Always
    /// enforced; on HTTP/1 the connection is not reused (as nginx does), so nothing a confused
    /// client sends after it is read as a request.
    Head,
    /// A route's guard (or the router: no route, method not allowed).
    Guard,
    /// Forwarding: the backend, or the client's body while it streamed.
    Proxy,
}

/// One refusal, with what its audit line needs.
pub struct Refusal<'a> {
    pub stage: Stage,
    /// The guard (or layer) that refused: `ip`, `rate_limit`, `route`, `proxy`, …
    pub guard: &'static str,
    pub reject: &'a Reject,
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    /// The matched route, if any.
    pub route: Option<&'a Arc<str>>,
    /// The route's mode: in monitor mode the refusal is recorded as `would_block` and the
    /// request goes on.
    pub mode: Mode,
    pub version: Version,
    /// The guards the request passed before this refusal (`ip,rate_limit`), once it had an
    /// exchange.
    pub passed: Option<&'a str>,
    /// Time from the request head to this refusal.
    pub elapsed: Option<std::time::Duration>,
}

impl<'a> Refusal<'a> {
    /// A refusal while forwarding (the backend failed, or broke off its answer): always
    /// enforced, since the request has gone to the backend already.
    pub fn of_proxy(
        reject: &'a Reject,
        request_id: &'a HeaderValue,
        client_ip: IpAddr,
        route: Option<&'a Arc<str>>,
        version: Version,
    ) -> Self {
        Refusal {
            stage: Stage::Proxy,
            guard: "proxy",
            reject,
            request_id: request_id.to_str().unwrap_or("-"),
            client_ip,
            route,
            mode: Mode::Enforce,
            version,
            passed: None,
            elapsed: None,
        }
    }

    /// A refusal of the request head, before any route was chosen: always enforced.
    pub fn of_head(ctx: &'a RequestCtx, version: Version, guard: &'static str, reject: &'a Reject) -> Self {
        Refusal {
            stage: Stage::Head,
            guard,
            reject,
            request_id: ctx.request_id(),
            client_ip: ctx.client.ip,
            route: None,
            mode: Mode::Enforce,
            version,
            passed: None,
            elapsed: Some(ctx.started.elapsed()),
        }
    }
}

/// Records the refusal (one audit line, one metric) and returns the response to send, or
/// `None` when the route is in monitor mode and the request must go on.
pub fn rescue(r: &Refusal<'_>, metrics: &Metrics) -> Option<Response<Body>> {
    let monitor = r.mode == Mode::Monitor && r.stage != Stage::Head;
    let decision = if monitor { "would_block" } else { r.reject.decision() };
    let route_name = r.route.map(|n| &**n);
    let detail = r.reject.detail();
    telemetry::audit(&telemetry::Decision {
        request_id: r.request_id,
        route: route_name,
        client_ip: r.client_ip,
        guard: r.guard,
        decision,
        reason: r.reject.code(),
        detail: &detail,
        key_id: None,
        skew_secs: r.reject.skew_secs(),
        passed: r.passed,
        elapsed: r.elapsed,
    });
    let label = r.route.map_or_else(|| RouteLabel(Arc::from("")), |n| RouteLabel(n.clone()));
    metrics.decision(&label, r.guard, decision);
    if monitor {
        return None;
    }
    if decision == "block" {
        metrics.refusal(&label, r.reject.code());
    }
    let mut res = r.reject.to_response(route_name, r.request_id);
    if closes_connection(r.stage, r.version) {
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(name) = r.route {
        res.extensions_mut().insert(MatchedRoute::Name(RouteLabel(name.clone())));
    }
    Some(res)
}

/// The backend broke off an answer a response phase was reading (to classify or store it):
/// nothing usable to send. A refusal like the proxy's own 502, through this rescue point.
pub fn broken_answer(
    route: Option<&Arc<str>>,
    request_id: &HeaderValue,
    client_ip: IpAddr,
    metrics: &Metrics,
) -> Response<Body> {
    metrics.upstream_error("body");
    let reject = Reject::UpstreamUnavailable;
    let refusal = Refusal::of_proxy(&reject, request_id, client_ip, route, Version::HTTP_11);
    rescue(&refusal, metrics).unwrap_or_else(|| reject.to_response(None, "-"))
}

/// Whether the connection may not carry another request after this refusal.
fn closes_connection(stage: Stage, version: Version) -> bool {
    stage == Stage::Head && version <= Version::HTTP_11
}

/// A refusal below any request (the peer denied at accept, a head the HTTP layer could not
/// parse): only an audit line, since there is no request to answer or the HTTP layer answered.
pub fn refused_connection(peer: IpAddr, guard: &'static str, reason: &str, detail: &dyn std::fmt::Display) {
    tracing::info!(target: crate::telemetry::AUDIT_TARGET, client_ip = %peer, guard, decision = "block", reason, detail = %detail);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn refusal<'a>(
        stage: Stage,
        reject: &'a Reject,
        route: Option<&'a Arc<str>>,
        mode: Mode,
        v: Version,
    ) -> Refusal<'a> {
        Refusal {
            stage,
            guard: "test",
            reject,
            request_id: "r1",
            client_ip: IpAddr::from([192, 0, 2, 1]),
            route,
            mode,
            version: v,
            passed: None,
            elapsed: None,
        }
    }

    #[test]
    fn one_place_decides_response_monitor_and_connection_close() {
        let m = Metrics::new();
        let name: Arc<str> = Arc::from("orders");
        let bad = Reject::InvalidRequest("x".into());
        // A malformed head closes an HTTP/1 connection, never an HTTP/2 one, and is enforced
        // even on a monitor route.
        let res = rescue(&refusal(Stage::Head, &bad, None, Mode::Monitor, Version::HTTP_11), &m).unwrap();
        assert_eq!(res.headers()[header::CONNECTION], "close");
        let res = rescue(&refusal(Stage::Head, &bad, None, Mode::Enforce, Version::HTTP_2), &m).unwrap();
        assert!(res.headers().get(header::CONNECTION).is_none());
        // A guard's refusal keeps the connection and names the route.
        let res = rescue(&refusal(Stage::Guard, &Reject::IpDenied, Some(&name), Mode::Enforce, Version::HTTP_11), &m)
            .unwrap();
        assert_eq!(res.status(), 403);
        assert!(res.headers().get(header::CONNECTION).is_none());
        assert_eq!(&*res.extensions().get::<MatchedRoute>().unwrap().label().0, "orders");
        // Monitor mode: recorded, not answered.
        assert!(rescue(&refusal(Stage::Guard, &Reject::IpDenied, Some(&name), Mode::Monitor, Version::HTTP_11), &m)
            .is_none());
        let text = m.encode();
        assert!(text.contains("payguard_decisions_total{route=\"orders\",guard=\"test\",decision=\"would_block\"} 1"));
        assert!(text.contains("payguard_decisions_total{route=\"orders\",guard=\"test\",decision=\"block\"} 1"));
        // Refusals answered, by error code: the monitor-mode one is not among them.
        assert!(text.contains("payguard_refusals_total{route=\"orders\",reason=\"ip_denied\"} 1"), "{text}");
        assert!(text.contains("payguard_refusals_total{route=\"\",reason=\"invalid_request\"} 2"), "{text}");
    }
}
