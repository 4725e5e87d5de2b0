//! The one place where the order of layers is decided. Outermost first; each layer says why it
//! sits where it does. Cheap checks run before expensive ones, and nothing reads a body before
//! the checks that can refuse the request without it.

use std::sync::Arc;

use tower::ServiceBuilder;

use crate::client_ip::TrustedProxies;
use crate::context::ContextLayer;
use crate::metrics::Metrics;
use crate::proxy::Proxy;

pub struct StackParts {
    pub trusted: Arc<TrustedProxies>,
    pub metrics: Arc<Metrics>,
    pub proxy: Proxy,
}

pub fn build(parts: StackParts) -> crate::context::ContextService<Proxy> {
    ServiceBuilder::new()
        // First: every request, even one refused by the next layer, gets a request id, a
        // resolved client IP, stripped x-payguard-* headers and exactly one access line.
        .layer(ContextLayer::new(parts.trusted, parts.metrics))
        // Last: forward what every guard let through.
        .service(parts.proxy)
}
