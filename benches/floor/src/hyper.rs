//! Floor 1 of issue #16: the bare forwarder on today's stack. hyper's server (HTTP/1.1 or HTTP/2
//! by ALPN) behind tokio-rustls with payguard's own TLS set-up, forwarding every request to the
//! backend through payguard's own upstream pool, on one thread. Nothing else: no guards, no
//! rules, no metrics, no audit, no timers, no header rewriting beyond what HTTP/2 → HTTP/1.1
//! needs. What payguard's data path costs before any of payguard's own work.
//!
//! Usage: floor-hyper LISTEN_ADDR CERT_PEM KEY_PEM BACKEND_ADDR
//!
//! `FLOOR_RUNTIME=multi` runs it on tokio's multi-thread scheduler with one worker (as
//! `payguard run --threads 1` does) instead of the current-thread one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use payguard::body::Body;
use payguard::pool::Pool;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

mod forward;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, cert, key, backend] = &args[..] else {
        bail!("usage: floor-hyper LISTEN_ADDR CERT_PEM KEY_PEM BACKEND_ADDR");
    };
    let listen: SocketAddr = listen.parse().context("LISTEN_ADDR")?;
    let backend: Authority = backend.parse().context("BACKEND_ADDR")?;
    let provider = payguard::tls::provider();
    let key = payguard::tls::load_certified_key(Path::new(cert), Path::new(key), &provider)?;
    let resolver = Arc::new(payguard::tls::CertResolver::new(key));
    let acceptor = TlsAcceptor::from(Arc::new(payguard::tls::server_config(resolver, provider)?));
    let rt = match std::env::var("FLOOR_RUNTIME").as_deref() {
        Ok("multi") => tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?,
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
    };
    rt.block_on(serve(listen, acceptor, backend))
}

async fn serve(listen: SocketAddr, acceptor: TlsAcceptor, backend: Authority) -> anyhow::Result<()> {
    let pool: Arc<Pool> = Pool::new(&backend, 80, 1024, Duration::from_secs(5), Duration::from_secs(60));
    let listener = TcpListener::bind(listen).await?;
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (acceptor, pool, builder) = (acceptor.clone(), pool.clone(), builder.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let svc = service_fn(move |req| forward(pool.clone(), req));
            let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
        });
    }
}

async fn forward(pool: Arc<Pool>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    Ok(forward::forward(pool, req.map(Body::from)).await)
}
