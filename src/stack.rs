//! The one place where the service handed to hyper is assembled: the context layer, the
//! router, then the guards (`guard::chain`, where their order is decided) and the proxy.

use std::sync::Arc;

use tower::ServiceBuilder;

use crate::client_ip::TrustedProxies;
use crate::context::ContextLayer;
use crate::guard::chain::{Chain, Guards};
use crate::guard::head::HeadLimits;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::route::RouteLayer;
use crate::rules::active::SharedRules;

pub struct StackParts {
    pub trusted: Arc<TrustedProxies>,
    pub metrics: Arc<Metrics>,
    pub rules: SharedRules,
    /// Over the state stores: in memory, or on the shared store (`[state] backend = "redis"`).
    pub guards: Guards,
    pub proxy: Proxy,
    /// `[server] max_uri_len` and `max_header_size`, enforced by the route layer.
    pub head_limits: HeadLimits,
    /// `[server] hsts_max_age` and `[server.response_headers]`, for every response.
    pub response_headers: crate::context::AddedHeaders,
}

/// What every response gets unless it has it: the configured headers, then HSTS.
fn response_headers(server: &crate::config::ServerConfig) -> crate::context::AddedHeaders {
    let mut added = server.response_headers.clone();
    if let Some(max_age) = server.hsts_max_age {
        let hsts = http::header::STRICT_TRANSPORT_SECURITY;
        if let (false, Ok(v)) = (
            added.iter().any(|(n, _)| *n == hsts),
            http::HeaderValue::try_from(format!("max-age={}", max_age.as_secs())),
        ) {
            added.push((hsts, v));
        }
    }
    added.into()
}

/// The stack for a configuration: the one assembly used by the server and the fuzz harness.
/// The state stores are the caller's (their upkeep tasks, or none).
pub fn from_config<B: crate::body::RequestBody>(
    config: &crate::config::Config,
    rules: SharedRules,
    metrics: Arc<Metrics>,
    stores: crate::state::Stores,
) -> impl tower::Service<
    http::Request<B>,
    Response = http::Response<crate::context::LoggedBody>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
       + Send
       + Sync
       + 'static {
    build(StackParts {
        trusted: Arc::new(TrustedProxies::new(config.client_ip.trusted_proxies.clone())),
        proxy: Proxy::new(&config.upstream, metrics.clone()),
        guards: Guards::new(stores, &metrics),
        metrics,
        rules,
        head_limits: HeadLimits {
            max_uri_len: config.server.max_uri_len,
            max_header_size: config.server.max_header_size,
        },
        response_headers: response_headers(&config.server),
    })
}

pub use crate::guard::chain::GUARDS;

/// The service handed to hyper for every connection.
pub fn build<B: crate::body::RequestBody>(
    parts: StackParts,
) -> impl tower::Service<
    http::Request<B>,
    Response = http::Response<crate::context::LoggedBody>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
       + Send
       + Sync
       + 'static {
    let m = parts.metrics.clone();
    ServiceBuilder::new()
        // Every request, even one refused next, gets a request id, a resolved client IP,
        // stripped x-payguard-* headers and exactly one access line.
        .layer(ContextLayer::new(parts.trusted, m.clone()).with_response_headers(parts.response_headers))
        // Head hygiene and bounds, normalise the path and pick the route: everything after
        // depends on the route.
        .layer(RouteLayer::new(parts.rules, m.clone(), parts.head_limits))
        // The guards, in the order of `GUARDS` (`guard::chain` says why each sits where it
        // does), then the proxy.
        .service(Chain::new(parts.guards, parts.proxy, m))
}
