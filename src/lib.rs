//! payguard: a TLS-terminating reverse proxy that guards payment APIs.
//!
//! [`start`] wires the pieces: config → TLS → stack (see [`stack`]) → accept loop, plus the
//! admin listener and the certificate watcher.

pub mod admin;
pub mod answer;
pub mod body;
pub mod card;
pub mod client_ip;
pub mod config;
pub mod context;
pub mod decoding;
pub mod diag;
pub mod exchange;
pub mod files;
pub mod framing;
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod h2_flood;
pub mod metrics;
pub mod offline;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod rescue;
pub mod route;
pub mod rules;
pub mod ruletest;
pub mod server;
pub mod signature;
pub mod stack;
pub mod state;
pub mod tcp_info;
pub mod telemetry;
pub mod tls;
pub mod units;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::Health;
use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("invalid rules:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Rules(Vec<diag::Diagnostic>),
    #[error("state backend: {0}")]
    State(#[from] state::redis::RedisSetupError),
}

/// A started payguard: where it listens, and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    /// Reloads rules and certificates (SIGHUP).
    pub reloader: reload::Reloader,
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

/// Connections the kernel queues for the client listener before the accept loop takes them
/// (capped by `net.core.somaxconn`). The usual 128 drops the SYNs of a burst (a second's
/// retransmit for the client); nginx's `backlog=4096` in our benchmarks shows the same need.
const LISTEN_BACKLOG: u32 = 4096;

fn bind_client_listener(addr: SocketAddr, send_buffer: Option<usize>) -> Result<TcpListener, StartError> {
    let err = |source| StartError::Bind { addr, source };
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }.map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    if let Some(n) = send_buffer {
        // Accepted sockets inherit it (and so lose the kernel's send-buffer autotuning).
        socket.set_send_buffer_size(u32::try_from(n).unwrap_or(u32::MAX)).map_err(err)?;
    }
    socket.bind(addr).map_err(err)?;
    socket.listen(LISTEN_BACKLOG).map_err(err)
}

/// Runs `task` in the background until `stop` fires.
fn spawn_until(stop: CancellationToken, task: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(async move {
        tokio::select! {
            () = task => {}
            () = stop.cancelled() => {}
        }
    });
}

/// The replay store and the rate-limit store for `[state]`, with their background upkeep: the
/// memory stores' sweeps, or the shared store's health loop.
async fn state_stores(
    config: &config::StateConfig,
    health: &Arc<Health>,
    metrics: &Arc<Metrics>,
    stopped: &CancellationToken,
) -> Result<state::Stores, StartError> {
    match &config.backend {
        config::StateBackend::Memory => {
            let _ = health.state_backend.set("memory");
            health.state_ok.store(true, Ordering::Relaxed);
            metrics.state_store_up.set(1);
            let nonces = Arc::new(state::memory::MemoryNonceStore::new(config.max_replay_keys));
            let buckets = Arc::new(state::memory::MemoryRateStore::new(config.max_rate_keys));
            let failures = Arc::new(state::memory::MemoryFailureStore::new(config.max_failure_keys));
            let idempotency = Arc::new(state::memory::MemoryIdempotencyStore::new(
                config.max_idempotency_keys,
                config.max_idempotency_bytes,
            ));
            spawn_until(stopped.clone(), {
                let (nonces, buckets, failures) = (nonces.clone(), buckets.clone(), failures.clone());
                let idempotency = idempotency.clone();
                let metrics = metrics.clone();
                async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(10));
                    loop {
                        tick.tick().await;
                        // A pass over a million keys takes tens of milliseconds: not on a
                        // runtime thread.
                        let (nonces, buckets, failures) = (nonces.clone(), buckets.clone(), failures.clone());
                        let idempotency = idempotency.clone();
                        let swept = tokio::task::spawn_blocking(move || {
                            let now = std::time::Instant::now();
                            nonces.sweep(now);
                            buckets.sweep(now);
                            failures.sweep(now);
                            idempotency.sweep(now);
                            failures.bans_at(usize::MAX, now).len()
                        })
                        .await;
                        if let Ok(active) = swept {
                            metrics.bans_active.set(i64::try_from(active).unwrap_or(i64::MAX));
                        }
                    }
                }
            });
            Ok(state::Stores { nonces, buckets, failures, idempotency })
        }
        config::StateBackend::Redis { urls, cluster } => {
            let password = config.redis_password.as_ref().map(|p| p.0.as_str());
            let store = Arc::new(state::redis::RedisStore::with_password(urls, *cluster, config.timeout, password)?);
            let _ = health.state_backend.set("redis");
            // One ping before serving, so /healthz and the first requests start from the truth;
            // an unreachable Redis does not stop payguard (the routes' on_state_error apply).
            let up = report_state(&store, health, metrics, None).await;
            if up {
                tracing::info!(target: "payguard::state", redis = %store.target(), cluster = *cluster, "state store connected");
            }
            spawn_until(stopped.clone(), watch_state_store(store.clone(), health.clone(), metrics.clone(), up));
            Ok(state::Stores {
                nonces: store.clone(),
                buckets: store.clone(),
                failures: store.clone(),
                idempotency: store,
            })
        }
    }
}

/// Pings the shared store, records the answer in `/healthz` and `payguard_state_store_up`, and
/// logs when it changed from `was`. Returns whether the store is up.
async fn report_state(store: &state::redis::RedisStore, health: &Health, metrics: &Metrics, was: Option<bool>) -> bool {
    let result = store.ping().await;
    let up = result.is_ok();
    health.state_ok.store(up, Ordering::Relaxed);
    metrics.state_store_up.set(i64::from(up));
    match (was, result) {
        (Some(false), Ok(())) => {
            tracing::info!(target: "payguard::state", redis = %store.target(), "state store reachable again");
        }
        (Some(true) | None, Err(e)) => {
            tracing::warn!(target: "payguard::state", redis = %store.target(), error = %e, "state store unreachable; routes apply on_state_error");
        }
        _ => {}
    }
    up
}

/// Every second: ping the shared store and report it. The ping also drives reconnection, so
/// payguard recovers by itself when Redis returns.
async fn watch_state_store(store: Arc<state::redis::RedisStore>, health: Arc<Health>, metrics: Arc<Metrics>, up: bool) {
    let mut up = up;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    for n in 1u64.. {
        tick.tick().await;
        up = report_state(&store, &health, &metrics, Some(up)).await;
        if up && n % 10 == 0 {
            if let Ok(active) = store.active_bans().await {
                metrics.bans_active.set(i64::try_from(active).unwrap_or(i64::MAX));
            }
        }
    }
}

/// Binds every listener and starts serving in the background.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();
    // Background parts (admin, watchers) outlive the drain so /readyz can report it.
    let stopped = CancellationToken::new();

    // Rules first: a proxy that cannot say what it enforces must not start.
    let rule_set = rules::load_dir(&config.rules.dir, &rules::Env::of(&config)).map_err(StartError::Rules)?;
    if rule_set.routes().iter().any(|r| r.injection.is_some()) {
        guard::injection::prepare();
    }
    let shared: rules::active::SharedRules =
        Arc::new(arc_swap::ArcSwap::from_pointee(rules::active::ActiveRules::new(rule_set, 1)));
    health.rules_version.store(1, Ordering::Relaxed);
    health.rules_loaded.store(true, Ordering::Relaxed);
    let reloader = reload::Reloader::default();
    let watcher = rules::watch::watch(
        config.rules.dir.clone(),
        rules::Env::of(&config),
        shared.clone(),
        metrics.clone(),
        config.rules.watch.then_some(Duration::from_millis(500)),
        reloader.requests(),
        {
            let health = health.clone();
            move |version| health.rules_version.store(version, Ordering::Relaxed)
        },
    );
    spawn_until(stopped.clone(), watcher);

    let provider = tls::provider();
    let (cert, key) = tls::cert_paths(&config.server.tls)?;
    let certified = tls::load_certified_key(&cert, &key, &provider)?;
    tls::export_expiry(&certified, &metrics);
    let resolver = Arc::new(tls::CertResolver::new(certified));
    let tls_config = Arc::new(tls::server_config(resolver.clone(), provider.clone())?);
    spawn_until(
        stopped.clone(),
        tls::watch_certificates(
            resolver.clone(),
            cert,
            key,
            provider,
            metrics.clone(),
            Duration::from_secs(1),
            reloader.requests(),
        ),
    );

    let listener = bind_client_listener(config.server.listen, config.server.send_buffer)?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.server.listen, source })?;
    let stores = state_stores(&config.state, &health, &metrics, &stopped).await?;
    let admin_addr = match config.server.admin_listen {
        Some(a) => {
            let l = bind(a).await?;
            let local = l.local_addr().map_err(|source| StartError::Bind { addr: a, source })?;
            let access = Arc::new(config.server.admin.clone());
            tokio::spawn(admin::serve(
                l,
                access,
                health.clone(),
                metrics.clone(),
                stores.failures.clone(),
                stopped.clone(),
            ));
            Some(local)
        }
        None => None,
    };

    let service = stack::from_config(&config, shared.clone(), metrics.clone(), stores.clone());

    let server = server::Server {
        listener,
        tls: tokio_rustls::TlsAcceptor::from(tls_config),
        certs: resolver.clone(),
        service,
        config: config.server.clone(),
        metrics: metrics.clone(),
        // defaults.ip_deny applies to the peer before any TLS work.
        peer_filter: Arc::new({
            let shared = shared.clone();
            move |ip: std::net::IpAddr| !shared.load().rules.defaults().ip_deny.contains(ip)
        }),
    };
    tracing::info!(target: "payguard", listen = %addr, admin = %admin_addr.map_or_else(|| "off".to_string(), |a| a.to_string()), upstream = %config.upstream.url, "payguard listening");
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
    Ok(Running { addr, admin_addr, health, metrics, reloader, shutdown, task })
}

/// `payguard check`: validates the config and what it points at. Returns a one-line summary,
/// or every problem found.
pub fn check(path: Option<&std::path::Path>) -> Result<String, Vec<diag::Diagnostic>> {
    let config = Config::load(path)?;
    let mut problems = Vec::new();
    let rule_count = match rules::load_dir(&config.rules.dir, &rules::Env::of(&config)) {
        Ok(set) => set.routes().len(),
        Err(mut p) => {
            problems.append(&mut p);
            0
        }
    };
    if let config::TlsSource::Files { cert, key } = &config.server.tls {
        if let Err(e) = tls::load_certified_key(cert, key, &tls::provider()) {
            let file = path.unwrap_or(std::path::Path::new("payguard.toml"));
            problems.push(diag::Diagnostic::at_start(file, format!("TLS: {e}")));
        }
    }
    if problems.is_empty() {
        let source = path.map_or("built-in defaults".to_string(), |p| p.display().to_string());
        Ok(format!("ok: {source}; {rule_count} route(s) in {}", config.rules.dir.display()))
    } else {
        Err(problems)
    }
}
