//! Rate limits: keyed GCRA per scope. `rate` is the sustained rate, `burst` the bucket size.
//! Keys are the client IP (IPv6 by /64: one subscriber gets one bucket however many addresses
//! it rotates through), the whole route, or a header's value (hashed, never stored).
//!
//! Two backends with the same decisions:
//! - **memory** (one instance): governor, in-process; idle keys are evicted periodically so
//!   memory stays bounded whatever the key count. The check is synchronous and allocation-free.
//! - **shared** (`[state] backend = "redis"`): the same GCRA in a Lua script on Redis, one round
//!   trip per decision, so N instances enforce one limit together (see `state::redis`). When the
//!   store does not answer, the route's `on_state_error.rate_limit` decides: `fail_open`
//!   (default) lets the request through and counts `decision="fail_open"`, `fail_closed` refuses
//!   with 503 `state_unavailable`.

use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderMap, Request};
use sha2::{Digest, Sha256};

use super::layer::{Guard, RouteCtx, Verdict};
use super::Reject;
use crate::body::Body;
use crate::client_ip::canonical;
use crate::metrics::Metrics;
use crate::rules::{FailMode, RateKey, RateLimitSpec};
use crate::state::{Gcra, RateDecision, RateStore};

type Keyed = RateLimiter<u128, DashMapStateStore<u128>, DefaultClock>;

pub struct Limiter {
    spec: RateLimitSpec,
    inner: Keyed,
    clock: DefaultClock,
    /// Seeds header-value hashing so clients cannot aim collisions.
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("spec", &self.spec).field("keys", &self.inner.len()).finish()
    }
}

/// GCRA quota: one cell every `per / count`, `burst` cells at once.
pub fn quota(spec: &RateLimitSpec) -> Quota {
    let count = spec.rate.count.max(1);
    let period = spec.rate.per.checked_div(count).unwrap_or(Duration::from_nanos(1)).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(spec.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst)
}

impl Limiter {
    pub fn new(spec: &RateLimitSpec) -> Limiter {
        let clock = DefaultClock::default();
        Limiter {
            spec: spec.clone(),
            inner: RateLimiter::dashmap_with_clock(quota(spec), clock.clone()),
            clock,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    pub fn spec(&self) -> &RateLimitSpec {
        &self.spec
    }

    /// The bucket key of a request.
    pub fn key(&self, client: IpAddr, headers: &HeaderMap) -> u128 {
        match &self.spec.key {
            RateKey::Ip => ip_key(client),
            RateKey::Route => 0,
            RateKey::Header(name) => {
                let mut h = self.hasher.build_hasher();
                for v in headers.get_all(name) {
                    v.as_bytes().hash(&mut h);
                }
                u128::from(h.finish())
            }
        }
    }

    /// The bucket key of a request on a shared store: the same on every instance (the client
    /// address as [`ip_key`] in hex, `route`, or SHA-256 of the header's values).
    pub fn shared_key(&self, client: IpAddr, headers: &HeaderMap) -> String {
        match &self.spec.key {
            RateKey::Ip => format!("{:x}", ip_key(client)),
            RateKey::Route => "route".to_string(),
            RateKey::Header(name) => {
                let mut h = Sha256::new();
                for v in headers.get_all(name) {
                    h.update((v.len() as u64).to_be_bytes());
                    h.update(v.as_bytes());
                }
                hex::encode(&h.finalize()[..16])
            }
        }
    }

    /// The quota as a shared store evaluates it.
    pub fn gcra(&self) -> Gcra {
        let q = quota(&self.spec);
        Gcra { emission_interval: q.replenish_interval(), burst: q.burst_size().get() }
    }

    pub fn check(&self, key: u128) -> Result<(), Reject> {
        match self.inner.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(Reject::RateLimited {
                limit: u64::from(self.spec.burst),
                reset: not_until.wait_time_from(self.clock.now()),
            }),
        }
    }

    /// Drops buckets that are full again (idle keys) and returns how many remain.
    pub fn evict_idle(&self) -> usize {
        let before = self.inner.len();
        self.inner.retain_recent();
        let after = self.inner.len();
        // Give memory back only after a large drop: a steady population would otherwise
        // regrow its tables after every pass.
        if after < before / 2 {
            self.inner.shrink_to_fit();
        }
        after
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
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
/// in memory, or on the shared store when there is one.
#[derive(Clone, Default)]
pub struct RateLimitGuard {
    shared: Option<SharedLimits>,
}

#[derive(Clone)]
struct SharedLimits {
    store: Arc<dyn RateStore>,
    metrics: Arc<Metrics>,
}

impl RateLimitGuard {
    /// Buckets in this process (one instance).
    pub fn memory() -> Self {
        RateLimitGuard { shared: None }
    }

    /// Buckets on a store shared by every instance.
    pub fn shared(store: Arc<dyn RateStore>, metrics: Arc<Metrics>) -> Self {
        RateLimitGuard { shared: Some(SharedLimits { store, metrics }) }
    }
}

type Outcome = (Request<Body>, Result<(), Reject>);

/// A round trip to the shared store (the memory backend answers at once).
pub type RateLimitFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

const NAME: &str = "rate_limit";

impl Guard for RateLimitGuard {
    const NAME: &'static str = NAME;
    type Future = RateLimitFuture;

    fn check(&self, req: Request<Body>, route: &RouteCtx) -> Verdict<Self::Future> {
        let Some(limiter) = route.active.limiter(route.route.as_deref()) else {
            return Verdict::Now(req, Ok(()));
        };
        let client =
            req.extensions().get::<crate::context::RequestCtx>().map_or(IpAddr::from([0, 0, 0, 0]), |c| c.client.ip);
        let Some(shared) = &self.shared else {
            let outcome = limiter.check(limiter.key(client, req.headers()));
            return Verdict::Now(req, outcome);
        };
        let scope = route.active.limit_scope(route.route.as_deref());
        let key = format!("{scope:016x}:{}", limiter.shared_key(client, req.headers()));
        let (gcra, limit) = (limiter.gcra(), u64::from(limiter.spec().burst));
        let fail_mode = route.route.as_ref().map_or(FailMode::Open, |r| r.on_state_error.rate_limit);
        let label = crate::metrics::route_label(route.name());
        let shared = shared.clone();
        Verdict::Later(Box::pin(async move {
            let outcome = match shared.store.check(&key, gcra).await {
                Ok(RateDecision::Allowed) => Ok(()),
                Ok(RateDecision::Limited { retry_after }) => Err(Reject::RateLimited { limit, reset: retry_after }),
                Err(e) if fail_mode == FailMode::Open => {
                    // Per request at debug only: the health loop reports the outage once.
                    tracing::debug!(target: "payguard::rate_limit", error = %e, "rate-limit store unavailable; failing open");
                    shared.metrics.decision(&label, NAME, "fail_open");
                    Ok(())
                }
                Err(e) => {
                    tracing::debug!(target: "payguard::rate_limit", error = %e, "rate-limit store unavailable; failing closed");
                    Err(Reject::StateUnavailable)
                }
            };
            (req, outcome)
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
    fn burst_then_refused_with_retry_after() {
        let l = Limiter::new(&spec(RateKey::Ip, 1, Duration::from_secs(3600), 3));
        let k = l.key("192.0.2.1".parse().unwrap(), &HeaderMap::new());
        for _ in 0..3 {
            assert!(l.check(k).is_ok());
        }
        match l.check(k) {
            Err(Reject::RateLimited { limit, reset }) => {
                assert_eq!(limit, 3);
                assert!(reset > Duration::from_secs(3000), "{reset:?}");
            }
            other => panic!("{other:?}"),
        }
        // Another client has its own bucket.
        assert!(l.check(l.key("192.0.2.2".parse().unwrap(), &HeaderMap::new())).is_ok());
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
        let l = Limiter::new(&spec(RateKey::Route, 1, Duration::from_secs(3600), 1));
        assert_eq!(
            l.key("192.0.2.1".parse().unwrap(), &HeaderMap::new()),
            l.key("192.0.2.9".parse().unwrap(), &HeaderMap::new())
        );
        let l = Limiter::new(&spec(
            RateKey::Header(http::HeaderName::from_static("x-api-key")),
            1,
            Duration::from_secs(3600),
            1,
        ));
        let mut a = HeaderMap::new();
        a.insert("x-api-key", HeaderValue::from_static("a"));
        let mut b = HeaderMap::new();
        b.insert("x-api-key", HeaderValue::from_static("b"));
        let ip = "192.0.2.1".parse().unwrap();
        assert_ne!(l.key(ip, &a), l.key(ip, &b));
        assert!(l.check(l.key(ip, &a)).is_ok());
        assert!(l.check(l.key(ip, &a)).is_err());
        assert!(l.check(l.key(ip, &b)).is_ok());
    }

    #[test]
    fn idle_keys_are_evicted() {
        let l = Limiter::new(&spec(RateKey::Ip, 1000, Duration::from_secs(1), 1000));
        for i in 0..1000u32 {
            l.check(ip_key(IpAddr::from(i.to_be_bytes()))).unwrap();
        }
        assert_eq!(l.len(), 1000);
        // One cell per millisecond: after a few ms every bucket is full again and evictable.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(l.evict_idle(), 0);
    }

    #[test]
    fn quota_matches_rate_and_burst() {
        let q = quota(&spec(RateKey::Ip, 600, Duration::from_secs(60), 20));
        assert_eq!(q.replenish_interval(), Duration::from_millis(100));
        assert_eq!(q.burst_size().get(), 20);
    }
}
