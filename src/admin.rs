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
use crate::state::FailureStore;

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
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only (DELETE for /bans/<id>)\n".into());
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

/// How many bans `GET /bans` lists at most.
const MAX_LISTED_BANS: usize = 1_000;

/// `GET /bans`: the failure-limit bans in force. `DELETE /bans/<id>`: lifts one (and forgives the
/// key's earlier failures and bans). `None`: not a `/bans` request.
async fn bans<B>(
    req: &Request<B>,
    peer: IpAddr,
    access: &AdminAccess,
    failures: &dyn FailureStore,
) -> Option<Response<Full<Bytes>>> {
    let path = req.uri().path();
    if path != "/bans" && !path.starts_with("/bans/") {
        return None;
    }
    if let Some(refused) = refusal(req, peer, access) {
        return Some(refused);
    }
    let unavailable = |e: crate::state::StoreError| {
        respond(StatusCode::SERVICE_UNAVAILABLE, "application/json", json_error(&e.to_string()))
    };
    Some(match (req.method(), path.strip_prefix("/bans/")) {
        (&Method::GET, None) => match failures.bans(MAX_LISTED_BANS).await {
            Ok(list) => {
                let bans: Vec<serde_json::Value> = list
                    .iter()
                    .map(|b| {
                        let (route, key) = b.label.split_once('|').unwrap_or(("", b.label.as_str()));
                        serde_json::json!({
                            "id": format!("{:016x}:{:032x}", b.scope, b.key),
                            "route": route,
                            "key": key,
                            "seconds_left": b.left.as_secs() + u64::from(b.left.subsec_nanos() > 0),
                            "strike": b.strike,
                        })
                    })
                    .collect();
                respond(StatusCode::OK, "application/json", serde_json::json!({ "bans": bans }).to_string())
            }
            Err(e) => unavailable(e),
        },
        (&Method::DELETE, Some(id)) => {
            let parsed = id
                .split_once(':')
                .and_then(|(s, k)| Some((u64::from_str_radix(s, 16).ok()?, u128::from_str_radix(k, 16).ok()?)));
            match parsed {
                None => respond(
                    StatusCode::BAD_REQUEST,
                    "application/json",
                    json_error("a ban id is <scope>:<key> as GET /bans lists it"),
                ),
                Some((scope, key)) => match failures.lift(scope, key).await {
                    Ok(lifted) => {
                        tracing::info!(target: "payguard::admin", %peer, id, lifted, "ban lifted by an operator");
                        let status = if lifted { StatusCode::OK } else { StatusCode::NOT_FOUND };
                        respond(status, "application/json", serde_json::json!({ "lifted": lifted }).to_string())
                    }
                    Err(e) => unavailable(e),
                },
            }
        }
        _ => respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET /bans, DELETE /bans/<id>\n".into()),
    })
}

fn json_error(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

pub async fn serve(
    listener: TcpListener,
    access: Arc<AdminAccess>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    failures: Arc<dyn FailureStore>,
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
        let (access, health, metrics, failures) = (access.clone(), health.clone(), metrics.clone(), failures.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (access, health, metrics, failures) =
                    (access.clone(), health.clone(), metrics.clone(), failures.clone());
                async move {
                    let res = match bans(&req, peer.ip(), &access, &*failures).await {
                        Some(res) => res,
                        None => handle(&req, peer.ip(), &access, &health, &metrics),
                    };
                    Ok::<_, Infallible>(res)
                }
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
