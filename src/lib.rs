//! payguard: a TLS-terminating reverse proxy that guards payment APIs.
//!
//! [`start`] wires the pieces: config → TLS → stack (see [`stack`]) → accept loop, plus the
//! admin listener and the certificate watcher.

pub mod admin;
pub mod body;
pub mod client_ip;
pub mod config;
pub mod context;
pub mod diag;
pub mod guard;
pub mod metrics;
pub mod proxy;
pub mod rules;
pub mod server;
pub mod stack;
pub mod telemetry;
pub mod tls;
pub mod units;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::Health;
use crate::client_ip::TrustedProxies;
use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// A started payguard: where it listens, and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, drains in-flight requests (up to `shutdown_grace`), and returns when done.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Waits until the proxy stops (after `shutdown` fires elsewhere).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

/// Binds every listener and starts serving in the background.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    health.state_ok.store(true, Ordering::Relaxed);
    let shutdown = CancellationToken::new();
    // Background parts (admin, watchers) outlive the drain so /readyz can report it.
    let stopped = CancellationToken::new();

    let provider = tls::provider();
    let (cert, key) = tls::cert_paths(&config.server.tls)?;
    let resolver = Arc::new(tls::CertResolver::new(tls::load_certified_key(&cert, &key, &provider)?));
    let tls_config = Arc::new(tls::server_config(resolver.clone(), provider.clone())?);
    tokio::spawn({
        let metrics = metrics.clone();
        let stopped = stopped.clone();
        async move {
            tokio::select! {
                () = tls::watch_certificates(resolver, cert, key, provider, metrics, Duration::from_secs(1)) => {}
                () = stopped.cancelled() => {}
            }
        }
    });

    let listener = bind(config.server.listen).await?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.server.listen, source })?;
    let admin_addr = match config.server.admin_listen {
        Some(a) => {
            let l = bind(a).await?;
            let local = l.local_addr().map_err(|source| StartError::Bind { addr: a, source })?;
            tokio::spawn(admin::serve(l, health.clone(), metrics.clone(), stopped.clone()));
            Some(local)
        }
        None => None,
    };

    let trusted = Arc::new(TrustedProxies::new(config.client_ip.trusted_proxies.clone()));
    let proxy = proxy::Proxy::new(&config.upstream, metrics.clone());
    let service = stack::build(stack::StackParts { trusted, metrics: metrics.clone(), proxy });
    health.rules_loaded.store(true, Ordering::Relaxed);

    let server = server::Server {
        listener,
        tls: tokio_rustls::TlsAcceptor::from(tls_config),
        service,
        config: config.server.clone(),
        metrics: metrics.clone(),
        peer_filter: Arc::new(|_ip: std::net::IpAddr| true),
    };
    tracing::info!(target: "payguard", listen = %addr, admin = ?admin_addr, upstream = %config.upstream.url, "payguard listening");
    let task = tokio::spawn({
        let (shutdown, health) = (shutdown.clone(), health.clone());
        async move {
            tokio::join!(server.run(shutdown.clone()), async {
                shutdown.cancelled().await;
                health.draining.store(true, Ordering::Relaxed);
            });
            stopped.cancel();
        }
    });
    Ok(Running { addr, admin_addr, health, metrics, shutdown, task })
}

/// `payguard check`: validates the config and what it points at. Returns a one-line summary,
/// or every problem found.
pub fn check(path: Option<&std::path::Path>) -> Result<String, Vec<diag::Diagnostic>> {
    let config = Config::load(path)?;
    let mut problems = Vec::new();
    if let config::TlsSource::Files { cert, key } = &config.server.tls {
        if let Err(e) = tls::load_certified_key(cert, key, &tls::provider()) {
            let file = path.unwrap_or(std::path::Path::new("payguard.toml"));
            problems.push(diag::Diagnostic::at_start(file, format!("TLS: {e}")));
        }
    }
    if problems.is_empty() {
        Ok(format!("ok: {}", path.map_or("built-in defaults".to_string(), |p| p.display().to_string())))
    } else {
        Err(problems)
    }
}
