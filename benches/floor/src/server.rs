//! Floor 1b of issue #16: payguard's own connection driver (`payguard::server::Server`: the
//! HTTP/1 framing judge, activity and send-rate tracking, timeouts, drain) and its request
//! context layer (`ContextLayer`: request id, client address, forwarding headers, access line,
//! metrics per request), in front of a bare forward through payguard's pool. No router, no
//! guard stack, no `Proxy` service. Between `floor-hyper` and payguard: where payguard's own
//! per-request cost lies.
//!
//! Usage: floor-server PAYGUARD_CONFIG_TOML (its [server], TLS and [upstream] are used)

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{bail, Context as _};
use http::uri::Authority;
use http::Response;
use payguard::body::Body;
use payguard::client_ip::TrustedProxies;
use payguard::context::{ContextLayer, Contextual};
use payguard::metrics::Metrics;
use payguard::pool::Pool;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::{Layer as _, Service};

mod forward;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, config] = &args[..] else { bail!("usage: floor-server PAYGUARD_CONFIG_TOML") };
    let config = payguard::config::Config::load(Some(Path::new(config))).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    // As `payguard run --threads 1`.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async move {
        let provider = payguard::tls::provider();
        let (cert, key) = payguard::tls::cert_paths(&config.server.tls)?;
        let key = payguard::tls::load_certified_key(&cert, &key, &provider)?;
        let resolver = Arc::new(payguard::tls::CertResolver::new(key));
        let tls = TlsAcceptor::from(Arc::new(payguard::tls::server_config(resolver.clone(), provider)?));
        let backend: Authority =
            config.upstream.url.authority().cloned().context("the upstream URL has no authority")?;
        let pool = Pool::new(&backend, 80, 1024, Duration::from_secs(5), Duration::from_secs(60));
        let metrics = Arc::new(Metrics::new());
        let service = ContextLayer::new(Arc::new(TrustedProxies::default()), metrics.clone()).layer(Forward { pool });
        let server = payguard::server::Server {
            listener: TcpListener::bind(config.server.listen).await?,
            tls,
            certs: resolver,
            service,
            config: config.server.clone(),
            metrics,
            peer_filter: Arc::new(|_: std::net::IpAddr| true),
        };
        server.run(tokio_util::sync::CancellationToken::new()).await;
        anyhow::Ok(())
    })
}

#[derive(Clone)]
struct Forward {
    pool: Arc<Pool>,
}

impl Service<Contextual> for Forward {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, c: Contextual) -> Self::Future {
        let pool = self.pool.clone();
        Box::pin(async move { Ok(forward::forward(pool, c.req).await) })
    }
}
