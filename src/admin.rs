//! The admin listener (plain HTTP, keep it on loopback or a private network): `/metrics` in
//! Prometheus text format, `/healthz` (the process runs) and `/readyz` (it can serve).
//!
//! `[server] admin_allow` limits which peers may connect at all (others get 403);
//! `[server] admin_token` requires `Authorization: Bearer <token>` on every path except the
//! probes `/healthz` and `/readyz` (others get 401).

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::AdminAccess;
use crate::metrics::Metrics;

/// Process-wide health facts, written by the parts that know them.
#[derive(Debug, Default)]
pub struct Health {
    /// A valid rule set is loaded.
    pub rules_loaded: AtomicBool,
    pub rules_version: AtomicU64,
    /// Shutdown started: stop sending traffic here.
    pub draining: AtomicBool,
    /// The shared state store answers (always true for the memory backend).
    pub state_ok: AtomicBool,
    pub state_backend: std::sync::OnceLock<&'static str>,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.rules_loaded.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }

    fn body(&self) -> String {
        serde_json::json!({
            "status": if self.ready() { "ok" } else { "unavailable" },
            "rules_loaded": self.rules_loaded.load(Ordering::Relaxed),
            "rules_version": self.rules_version.load(Ordering::Relaxed),
            "draining": self.draining.load(Ordering::Relaxed),
            "state": {
                "backend": self.state_backend.get().copied().unwrap_or("memory"),
                "ok": self.state_ok.load(Ordering::Relaxed),
            },
        })
        .to_string()
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    res
}

/// The refusal to send when `peer` may not make this request.
fn refusal<B>(req: &Request<B>, peer: IpAddr, access: &AdminAccess) -> Option<Response<Full<Bytes>>> {
    let peer = crate::client_ip::canonical(peer);
    if !access.allow.is_empty() && !access.allow.iter().any(|n| n.contains(&peer)) {
        tracing::warn!(target: "payguard::admin", %peer, path = req.uri().path(), "admin request from a peer not in admin_allow");
        return Some(respond(StatusCode::FORBIDDEN, "text/plain", "forbidden\n".into()));
    }
    let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
    if let Some(token) = access.token.as_ref().filter(|_| !probe) {
        if !token.matches(req.headers().get(header::AUTHORIZATION).map(http::HeaderValue::as_bytes)) {
            tracing::warn!(target: "payguard::admin", %peer, path = req.uri().path(), "admin request without the admin token");
            let mut res = respond(StatusCode::UNAUTHORIZED, "text/plain", "admin token required\n".into());
            res.headers_mut().insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
            return Some(res);
        }
    }
    None
}

pub fn handle<B>(
    req: &Request<B>,
    peer: IpAddr,
    access: &AdminAccess,
    health: &Health,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    if let Some(refused) = refusal(req, peer, access) {
        return refused;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            respond(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode())
        }
        "/healthz" => respond(StatusCode::OK, "application/json", health.body()),
        "/readyz" => {
            let status = if health.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            respond(status, "application/json", health.body())
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

pub async fn serve(
    listener: TcpListener,
    access: Arc<AdminAccess>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        if !addr.ip().is_loopback() && access.allow.is_empty() && access.token.is_none() {
            tracing::warn!(target: "payguard::admin", %addr, "admin listener is reachable beyond loopback with neither admin_token nor admin_allow set");
        }
    }
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            () = shutdown.cancelled() => return,
        };
        let (access, health, metrics) = (access.clone(), health.clone(), metrics.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let res = handle(&req, peer.ip(), &access, &health, &metrics);
                async move { Ok::<_, Infallible>(res) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::AdminToken;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn get(path: &str, auth: Option<&str>) -> Request<()> {
        let mut b = Request::get(path);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    fn status(req: &Request<()>, peer: &str, access: &AdminAccess) -> u16 {
        let health = Health::default();
        handle(req, peer.parse().unwrap(), access, &health, &Metrics::new()).status().as_u16()
    }

    #[test]
    fn open_by_default() {
        let open = AdminAccess::default();
        assert_eq!(status(&get("/metrics", None), "203.0.113.9", &open), 200);
    }

    #[test]
    fn token_guards_everything_but_the_probes() {
        let access = AdminAccess { allow: vec![], token: Some(AdminToken::new(TOKEN.into())) };
        let bearer = format!("Bearer {TOKEN}");
        assert_eq!(status(&get("/metrics", Some(&bearer)), "10.0.0.1", &access), 200);
        assert_eq!(status(&get("/metrics", Some(&format!("bearer  {TOKEN} "))), "10.0.0.1", &access), 200);
        for bad in [None, Some("Bearer"), Some("Bearer wrong"), Some(&*format!("Basic {TOKEN}")), Some(TOKEN)] {
            assert_eq!(status(&get("/metrics", bad), "10.0.0.1", &access), 401, "{bad:?}");
        }
        let short = format!("Bearer {}", &TOKEN[..31]);
        assert_eq!(status(&get("/metrics", Some(&short)), "10.0.0.1", &access), 401);
        assert_eq!(status(&get("/nothing", None), "10.0.0.1", &access), 401, "unknown paths say nothing");
        // Probes stay open to the orchestrator; /readyz is 503 here because no rules are loaded.
        assert_eq!(status(&get("/healthz", None), "10.0.0.1", &access), 200);
        assert_eq!(status(&get("/readyz", None), "10.0.0.1", &access), 503);
    }

    #[test]
    fn allowlist_applies_to_every_path() {
        let access = AdminAccess { allow: vec!["10.0.0.0/8".parse().unwrap()], token: None };
        assert_eq!(status(&get("/metrics", None), "10.1.2.3", &access), 200);
        assert_eq!(status(&get("/metrics", None), "::ffff:10.1.2.3", &access), 200);
        assert_eq!(status(&get("/metrics", None), "192.0.2.1", &access), 403);
        assert_eq!(status(&get("/healthz", None), "192.0.2.1", &access), 403);
    }
}
