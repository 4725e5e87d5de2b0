//! The admin listener (plain HTTP, keep it on loopback or a private network): `/metrics` in
//! Prometheus text format, `/healthz` (the process runs) and `/readyz` (it can serve).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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

pub fn handle(req: &Request<Incoming>, health: &Health, metrics: &Metrics) -> Response<Full<Bytes>> {
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

pub async fn serve(listener: TcpListener, health: Arc<Health>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            () = shutdown.cancelled() => return,
        };
        let (health, metrics) = (health.clone(), metrics.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let res = handle(&req, &health, &metrics);
                async move { Ok::<_, Infallible>(res) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
