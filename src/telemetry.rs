//! Logging: tracing with JSON output by default. Two record kinds with fixed targets so they can
//! be routed: `payguard::access` (one line per request) and `payguard::audit` (one line per guard
//! decision). Neither ever carries a header value, a query string or a body: those are where
//! secrets, tokens and card numbers travel.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Parses a log filter (`info`, `payguard=debug,warn`). tracing-subscriber's parser panics on
/// some non-ASCII input, so only ASCII is handed to it.
pub fn parse_filter(s: &str) -> Option<EnvFilter> {
    if !s.is_ascii() || s.chars().any(|c| c.is_ascii_control()) {
        return None;
    }
    EnvFilter::try_new(s).ok()
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured level when set.
pub fn init(cfg: &LogConfig) {
    // rustls warns per connection about things clients control (an IP address as SNI): keep
    // it to errors so no client can make payguard write a line per connection.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("{},rustls=error", cfg.level)));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match cfg.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stdout),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout)).try_init(),
    };
    // A subscriber already installed (tests, embedding) is fine: keep it.
    let _ = result;
}

/// What the access line says about one finished request.
pub struct AccessRecord<'a> {
    pub request_id: &'a str,
    pub client_ip: std::net::IpAddr,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub version: http::Version,
    pub route: &'a str,
    pub status: u16,
    pub duration: std::time::Duration,
    pub bytes_out: u64,
    pub completed: bool,
}

pub fn access(r: &AccessRecord<'_>) {
    tracing::info!(
        target: "payguard::access",
        request_id = r.request_id,
        client_ip = %r.client_ip,
        method = %r.method,
        path = r.path,
        version = ?r.version,
        route = r.route,
        status = r.status,
        duration_ms = r.duration.as_secs_f64() * 1000.0,
        bytes = r.bytes_out,
        completed = r.completed,
    );
}

/// One guard decision, as the audit line records it.
pub struct Decision<'a> {
    pub request_id: &'a str,
    pub route: Option<&'a str>,
    pub client_ip: std::net::IpAddr,
    pub guard: &'static str,
    /// `block`, `would_block` (monitor mode) or `allow`.
    pub decision: &'static str,
    /// The stable reject code, e.g. `ip_denied`.
    pub reason: &'static str,
    /// Human text; must never contain request values.
    pub detail: &'a str,
    pub key_id: Option<&'a str>,
    pub skew_secs: Option<i64>,
}

pub fn audit(d: &Decision<'_>) {
    tracing::info!(
        target: "payguard::audit",
        request_id = d.request_id,
        route = d.route,
        client_ip = %d.client_ip,
        guard = d.guard,
        decision = d.decision,
        reason = d.reason,
        detail = d.detail,
        key_id = d.key_id,
        skew_secs = d.skew_secs,
    );
}
