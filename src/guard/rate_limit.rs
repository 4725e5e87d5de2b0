//! Rate limits: keyed GCRA per scope. `rate` is the sustained rate, `burst` the bucket size.
//! Keys are the client IP (IPv6 by /64: one subscriber gets one bucket however many addresses
//! it rotates through), the whole route, or a header's value (hashed, never stored).
//!
//! The guard derives the bucket (scope fingerprint, key, GCRA) from the rules and the request;
//! the [`RateStore`] chosen at start keeps the buckets, with the same decisions either way:
//! - **memory** (one instance, `state::memory::MemoryRateStore`): in-process, synchronous and
//!   allocation-free for a known key, at most `[state] max_rate_keys` buckets.
//! - **shared** (`[state] backend = "redis"`): the same GCRA in a Lua script on Redis, one round
//!   trip per decision, so N instances enforce one limit together (see `state::redis`).
//!
//! When the store cannot answer (Redis unreachable, or the memory store full for a new key), the
//! route's `on_state_error.rate_limit` decides: `fail_open` (default) lets the request through
//! and counts `decision="fail_open"`, `fail_closed` refuses with 503 `state_unavailable`.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::layer::{Guard, NoHold, NoRespond, Verdict};
use super::Reject;
use crate::client_ip::canonical;
use crate::exchange::Exchange;
use crate::metrics::Metrics;
use crate::rules::{FailMode, RateKey, RateLimitSpec};
use crate::state::{Gcra, RateDecision, RateStore, StoreError};

/// The GCRA of a limit: one cell every `per / count`, `burst` cells at once.
pub fn gcra(spec: &RateLimitSpec) -> Gcra {
    let count = spec.rate.count.max(1);
    let emission_interval =
        spec.rate.per.checked_div(count).unwrap_or(Duration::from_nanos(1)).max(Duration::from_nanos(1));
    Gcra { emission_interval, burst: spec.burst.max(1) }
}

/// The bucket of a request within its scope, the same on every instance: the client address
/// ([`ip_key`]), one bucket for the whole route, or the first 128 bits of SHA-256 over the
/// header's values (so clients cannot aim collisions, and the value is never stored).
pub fn bucket_key(key: &RateKey, client: IpAddr, headers: &HeaderMap) -> u128 {
    match key {
        RateKey::Ip => ip_key(client),
        RateKey::Route => 0,
        RateKey::Header(name) => {
            let mut h = Sha256::new();
            for v in headers.get_all(name) {
                h.update((v.len() as u64).to_be_bytes());
                h.update(v.as_bytes());
            }
            let digest = h.finalize();
            let mut first = [0u8; 16];
            first.copy_from_slice(&digest[..16]);
            u128::from_be_bytes(first)
        }
    }
}

/// IPv4 as itself, IPv6 by its /64.
pub fn ip_key(ip: IpAddr) -> u128 {
    match canonical(ip) {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        // The /64 prefix; bit 63 (never set in an IPv4 key) keeps the two families apart.
        IpAddr::V6(v6) => (u128::from(v6) & (u128::MAX << 64)) | (1 << 63),
    }
}

/// The rate-limit guard: the route's limit (or the defaults' for unrouted requests), checked
/// on the configured [`RateStore`] — in this process, or shared by every instance.
#[derive(Clone)]
pub struct RateLimitGuard {
    store: Arc<dyn RateStore>,
    metrics: Arc<Metrics>,
}

impl RateLimitGuard {
    pub fn new(store: Arc<dyn RateStore>, metrics: Arc<Metrics>) -> Self {
        RateLimitGuard { store, metrics }
    }
}

type Outcome = (Exchange, Result<(), Reject>);

/// A round trip to the shared store (the memory store answers at once).
pub type RateLimitFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

const NAME: &str = "rate_limit";

/// What one answer of the store means for the request.
struct Decide {
    limit: u64,
    fail_mode: FailMode,
    label: crate::metrics::RouteLabel,
    metrics: Arc<Metrics>,
}

impl Decide {
    fn outcome(&self, answer: Result<RateDecision, StoreError>) -> Result<(), Reject> {
        match answer {
            Ok(RateDecision::Allowed) => Ok(()),
            Ok(RateDecision::Limited { retry_after }) => {
                Err(Reject::RateLimited { limit: self.limit, reset: retry_after })
            }
            Err(e) => super::store_unavailable(NAME, self.fail_mode, &e, &self.metrics, &self.label),
        }
    }
}

impl Guard for RateLimitGuard {
    const NAME: &'static str = NAME;
    type Future = RateLimitFuture;
    type Hold = NoHold;
    type Respond = NoRespond;

    fn check(&self, ex: Exchange) -> Verdict<Self::Future> {
        let Some((spec, scope)) = ex.active.rate_limit(ex.route.as_deref()) else {
            return Verdict::Now(ex, Ok(()));
        };
        let key = bucket_key(&spec.key, ex.client.ip, ex.req.headers());
        let gcra = gcra(spec);
        let decide = || Decide {
            limit: u64::from(spec.burst),
            fail_mode: ex.route.as_ref().map_or(FailMode::Open, |r| r.on_state_error.rate_limit),
            label: crate::metrics::route_label(ex.route_name().map(|n| &**n)),
            metrics: self.metrics.clone(),
        };
        if let Some(answer) = self.store.check_now(scope, key, gcra) {
            // The memory store: decided here; the label and metrics only matter on failure.
            let outcome = match answer {
                Ok(RateDecision::Allowed) => Ok(()),
                other => decide().outcome(other),
            };
            return Verdict::Now(ex, outcome);
        }
        let (store, decide) = (self.store.clone(), decide());
        Verdict::Later(Box::pin(async move {
            let outcome = decide.outcome(store.check(scope, key, gcra).await);
            (ex, outcome)
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::units::Rate;
    use http::HeaderValue;

    fn spec(key: RateKey, count: u32, per: Duration, burst: u32) -> RateLimitSpec {
        RateLimitSpec { key, rate: Rate { count, per }, burst }
    }

    #[test]
    fn ipv4_mapped_is_ipv4_and_ipv6_is_per_64() {
        let a = ip_key("::ffff:192.0.2.1".parse().unwrap());
        assert_eq!(a, ip_key("192.0.2.1".parse().unwrap()));
        assert_eq!(ip_key("2001:db8:1:2::1".parse().unwrap()), ip_key("2001:db8:1:2:ffff::9".parse().unwrap()));
        assert_ne!(ip_key("2001:db8:1:2::1".parse().unwrap()), ip_key("2001:db8:1:3::1".parse().unwrap()));
        assert_ne!(ip_key("0.0.0.1".parse().unwrap()), ip_key("::1".parse().unwrap()));
    }

    #[test]
    fn route_and_header_keys() {
        let (a_ip, b_ip) = ("192.0.2.1".parse().unwrap(), "192.0.2.9".parse().unwrap());
        assert_eq!(
            bucket_key(&RateKey::Route, a_ip, &HeaderMap::new()),
            bucket_key(&RateKey::Route, b_ip, &HeaderMap::new())
        );
        assert_ne!(
            bucket_key(&RateKey::Ip, a_ip, &HeaderMap::new()),
            bucket_key(&RateKey::Ip, b_ip, &HeaderMap::new())
        );
        let header = RateKey::Header(http::HeaderName::from_static("x-api-key"));
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("x-api-key", HeaderValue::from_static(v));
            h
        };
        assert_ne!(bucket_key(&header, a_ip, &with("a")), bucket_key(&header, a_ip, &with("b")));
        assert_eq!(bucket_key(&header, a_ip, &with("a")), bucket_key(&header, b_ip, &with("a")));
        // Values are length-framed: ["ab"] and ["a", "b"] are different keys.
        let mut split = HeaderMap::new();
        split.append("x-api-key", HeaderValue::from_static("a"));
        split.append("x-api-key", HeaderValue::from_static("b"));
        assert_ne!(bucket_key(&header, a_ip, &with("ab")), bucket_key(&header, a_ip, &split));
    }

    #[test]
    fn gcra_matches_rate_and_burst() {
        let g = gcra(&spec(RateKey::Ip, 600, Duration::from_secs(60), 20));
        assert_eq!((g.emission_interval, g.burst), (Duration::from_millis(100), 20));
        let g = gcra(&spec(RateKey::Ip, 0, Duration::from_secs(1), 0));
        assert_eq!((g.emission_interval, g.burst), (Duration::from_secs(1), 1));
    }
}
