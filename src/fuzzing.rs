//! A seam for the fuzz targets and their corpus replay: the real service stack (every layer of
//! [`crate::stack::build`], the real proxy, in-memory state), served by hyper over any byte
//! stream instead of a TLS connection. Not part of the supported API.
//!
//! What differs from [`crate::start`]: no TLS, no listener, no connection limit, no idle timer
//! and no rule watcher. The hyper connection settings are the ones `server.rs` uses, except
//! that HTTP/1 allows half-closed connections: a fuzz client writes its bytes and then closes
//! its sending side, and should still get every answer (with `half_close(false)`, as in
//! production, that end-of-stream aborts the request in flight).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tower::util::BoxCloneSyncService;
use tower::Service;

use crate::config::{Config, ServerConfig};
use crate::context::{ConnInfo, LoggedBody};
use crate::diag::Diagnostic;
use crate::metrics::Metrics;
use crate::rules::active::{ActiveRules, SharedRules};

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("invalid config: {0:?}")]
    Config(Vec<Diagnostic>),
    #[error("invalid rules: {0:?}")]
    Rules(Vec<Diagnostic>),
}

type Svc = BoxCloneSyncService<Request<Incoming>, Response<LoggedBody>, Infallible>;

/// The assembled stack and the hyper settings to serve it with.
pub struct Stack {
    service: Svc,
    server: ServerConfig,
    pub metrics: Arc<Metrics>,
    /// Requests hyper handed to the stack, over every connection served.
    requests: Arc<AtomicU64>,
    /// Requests whose response future has neither finished nor been dropped.
    in_flight: Arc<AtomicU64>,
}

/// Counts a request as in flight until its response future finishes or is dropped.
struct InFlight(Arc<AtomicU64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stack {
    /// Builds the stack from a `payguard.toml` text (`[server]`, `[upstream]`, `[client_ip]`,
    /// `[state] max_replay_keys`; the state backend is always memory) and rule files given as
    /// (path, text); paths inside the rules resolve against each file's directory.
    pub fn new(config: &str, rule_files: &[(PathBuf, String)]) -> Result<Stack, StackError> {
        let config = Config::parse(config, None).map_err(StackError::Config)?;
        let rule_set = crate::rules::load_sources(rule_files).map_err(StackError::Rules)?;
        let rules: SharedRules = Arc::new(arc_swap::ArcSwap::from_pointee(ActiveRules::new(rule_set, 1)));
        let metrics = Arc::new(Metrics::new());
        let stores = crate::state::Stores::memory(&config.state);
        let service = crate::stack::from_config(&config, rules, metrics.clone(), stores);
        Ok(Stack {
            service: BoxCloneSyncService::new(service),
            server: config.server,
            metrics,
            requests: Arc::new(AtomicU64::new(0)),
            in_flight: Arc::new(AtomicU64::new(0)),
        })
    }

    /// How many requests hyper has handed to the stack so far (all connections).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests still being handled (an HTTP/2 stream's handler runs on its own task, and can
    /// outlive its connection).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Serves one connection from `peer` over `io` until it ends, as HTTP/1.1 or (with `h2`)
    /// HTTP/2 with prior knowledge. Must run inside a Tokio runtime.
    pub async fn serve<I>(
        &self,
        io: I,
        peer: SocketAddr,
        h2: bool,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // The server's own settings, but for HTTP/1 half-close (see the module documentation).
        let (mut h1_builder, h2_builder) = crate::server::builders(&self.server);
        h1_builder.http1().half_close(true);
        let builder = if h2 { h2_builder } else { h1_builder };
        let info = ConnInfo {
            peer,
            peer_header: crate::client_ip::ip_header(peer.ip()),
            body_read_timeout: Some(self.server.body_read_timeout),
        };
        // The same framing judge as a real HTTP/1.1 connection.
        let ambiguous = Arc::new(crate::framing::Ambiguous::default());
        let io = if h2 {
            let flooded = Arc::default();
            crate::framing::FramingIo::h2(io, self.server.max_h2_control_frames, flooded)
        } else {
            crate::framing::FramingIo::new(io, ambiguous.clone())
        };
        let seen = AtomicU64::new(0);
        let svc = self.service.clone();
        let (requests, in_flight) = (self.requests.clone(), self.in_flight.clone());
        let hyper_svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            requests.fetch_add(1, Ordering::Relaxed);
            in_flight.fetch_add(1, Ordering::Relaxed);
            let guard = InFlight(in_flight.clone());
            req.extensions_mut().insert(info.clone());
            if ambiguous.contains(seen.fetch_add(1, Ordering::Relaxed)) {
                req.extensions_mut().insert(crate::framing::AmbiguousFraming);
            }
            let response = svc.clone().call(req);
            async move {
                let r = response.await;
                drop(guard);
                r
            }
        });
        builder.serve_connection(TokioIo::new(io), hyper_svc).await
    }
}
