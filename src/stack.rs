//! The one place where the order of layers is decided. Outermost first; each layer says why it
//! sits where it does. Cheap checks run before expensive ones, and nothing reads a body before
//! every check that can refuse the request without it.

use std::sync::Arc;

use tower::ServiceBuilder;

use crate::client_ip::TrustedProxies;
use crate::context::ContextLayer;
use crate::guard::body::BufferGuard;
use crate::guard::card_answer::CardAnswerGuard;
use crate::guard::card_data::CardDataGuard;
use crate::guard::failure_limit::FailureLimitGuard;
use crate::guard::head::HeadLimits;
use crate::guard::idempotency::IdempotencyGuard;
use crate::guard::injection::InjectionGuard;
use crate::guard::ip::IpGuard;
use crate::guard::layer::{Guard, GuardLayer};
use crate::guard::origin::OriginGuard;
use crate::guard::rate_limit::RateLimitGuard;
use crate::guard::replay::ReplayGuard;
use crate::guard::signature::SignatureGuard;
use crate::guard::validate::{BodyGuard, HeaderGuard};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::route::RouteLayer;
use crate::rules::active::SharedRules;

pub struct StackParts {
    pub trusted: Arc<TrustedProxies>,
    pub metrics: Arc<Metrics>,
    pub rules: SharedRules,
    pub nonces: Arc<dyn crate::state::NonceStore>,
    /// In memory, or on the shared store (`[state] backend = "redis"`).
    pub rate_limit: RateLimitGuard,
    pub failure_limit: FailureLimitGuard,
    pub idempotency: IdempotencyGuard,
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
        rate_limit: RateLimitGuard::new(stores.buckets, metrics.clone()),
        failure_limit: FailureLimitGuard::new(stores.failures, metrics.clone()),
        idempotency: IdempotencyGuard::new(stores.idempotency, metrics.clone()),
        metrics,
        rules,
        nonces: stores.nonces,
        head_limits: HeadLimits {
            max_uri_len: config.server.max_uri_len,
            max_header_size: config.server.max_header_size,
        },
        response_headers: response_headers(&config.server),
    })
}

/// The guards of [`build`] in the order a request meets them, by the names of their audit
/// lines, metrics and trail steps. `payguard explain` lists them so; a test holds it to the
/// trail of a request that passed them all.
pub const GUARDS: [&str; 13] = [
    <IpGuard as Guard>::NAME,
    <RateLimitGuard as Guard>::NAME,
    <HeaderGuard as Guard>::NAME,
    <OriginGuard as Guard>::NAME,
    <BufferGuard as Guard>::NAME,
    <FailureLimitGuard as Guard>::NAME,
    <SignatureGuard as Guard>::NAME,
    <ReplayGuard as Guard>::NAME,
    <BodyGuard as Guard>::NAME,
    <CardDataGuard as Guard>::NAME,
    <InjectionGuard as Guard>::NAME,
    <IdempotencyGuard as Guard>::NAME,
    <CardAnswerGuard as Guard>::NAME,
];

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
        // Cheapest refusal first: a set lookup on the client address.
        .layer(GuardLayer::new(IpGuard, m.clone()))
        // Before any parsing work, so a flood costs one bucket check per request.
        .layer(GuardLayer::new(parts.rate_limit, m.clone()))
        // Headers only: Content-Length against the cap, content type, required headers, query.
        .layer(GuardLayer::new(HeaderGuard, m.clone()))
        // Headers only: a state-changing request from another site, before any body is read.
        .layer(GuardLayer::new(OriginGuard, m.clone()))
        // Read the body only now, and only for routes that need it; cap it either way.
        .layer(GuardLayer::new(BufferGuard, m.clone()))
        // A key banned for repeated failures is refused before any verification work (its key
        // may be a body field, hence after the buffer); the answer is classified on the way
        // back and its failures counted.
        .layer(GuardLayer::new(parts.failure_limit, m.clone()))
        // Who sent it, proven on the exact raw bytes; refuses before any state is touched.
        .layer(GuardLayer::new(SignatureGuard::new(m.clone()), m.clone()))
        // Only authenticated requests may reserve a replay key (no store flooding by forgers);
        // the reservation is settled by the backend's answer, so this wraps the rest.
        .layer(GuardLayer::new(ReplayGuard::new(parts.nonces, m.clone()), m.clone()))
        // Schema and field rules: parsing untrusted JSON only for authentic requests.
        .layer(GuardLayer::new(BodyGuard, m.clone()))
        // A card number must never reach the backend, whoever sent it; looked for in values
        // decoded as the backend decodes them, so after the cheaper body checks.
        .layer(GuardLayer::new(CardDataGuard, m.clone()))
        // Injection patterns: a detector run over every decoded value, the dearest of the
        // content checks, last before the order's key is taken.
        .layer(GuardLayer::new(InjectionGuard, m.clone()))
        // Last: only a request every other guard let through may take an order's key, and the
        // answer it settles on is the backend's (or the proxy's own 502/504), nothing else.
        .layer(GuardLayer::new(parts.idempotency, m.clone()))
        // Innermost on the way back: card numbers in the backend's answer are masked (or the
        // answer refused) before idempotency keeps it for replay, so none is ever stored.
        .layer(GuardLayer::new(CardAnswerGuard::new(m.clone()), m))
        // Forward what every guard let through.
        .service(parts.proxy)
}
