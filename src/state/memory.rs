//! In-memory state for one instance: sharded maps (dashmap) with a hard cap on their keys.
//!
//! - [`MemoryNonceStore`]: replay keys with a TTL each. When full it refuses new reservations
//!   instead of evicting live ones: forgetting a nonce early would let its replay through.
//! - [`MemoryRateStore`]: GCRA buckets, one theoretical arrival time (TAT) per (scope, key), the
//!   same algorithm as the Redis script. A bucket whose TAT has passed is full again and is
//!   dropped by the sweep; at the cap a new key is refused (`StoreError::Full`, so the route's
//!   `on_state_error.rate_limit` decides) while every existing bucket is still enforced.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// Seeded per process, so a client who picks its address or key cannot aim at one shard's
/// buckets; several times cheaper than the standard SipHash on the fixed-size keys used here.
type Hasher = foldhash::quality::RandomState;
type Map<K, V> = DashMap<K, V, Hasher>;

use super::{Gcra, NonceStore, RateDecision, RateStore, Reservation, StoreError, StoreFuture};

pub struct MemoryNonceStore {
    keys: Map<Box<str>, Instant>,
    /// `keys.len()` without visiting every shard on each reservation.
    count: AtomicUsize,
    max_keys: usize,
}

impl MemoryNonceStore {
    pub fn new(max_keys: usize) -> Self {
        MemoryNonceStore { keys: Map::default(), count: AtomicUsize::new(0), max_keys }
    }

    pub fn reserve_at(&self, key: &str, ttl: Duration, now: Instant) -> Result<Reservation, StoreError> {
        let full = self.count.load(Ordering::Relaxed) >= self.max_keys;
        match self.keys.entry(key.into()) {
            Entry::Occupied(mut e) => {
                if *e.get() > now {
                    Ok(Reservation::Taken)
                } else {
                    e.insert(now + ttl);
                    Ok(Reservation::Reserved)
                }
            }
            Entry::Vacant(_) if full => Err(StoreError::Full),
            Entry::Vacant(e) => {
                e.insert(now + ttl);
                self.count.fetch_add(1, Ordering::Relaxed);
                Ok(Reservation::Reserved)
            }
        }
    }

    /// Drops expired keys; returns how many remain.
    pub fn sweep(&self, now: Instant) -> usize {
        self.keys.retain(|_, exp| *exp > now);
        let n = self.keys.len();
        self.count.store(n, Ordering::Relaxed);
        n
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl NonceStore for MemoryNonceStore {
    fn reserve<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Reservation> {
        let r = self.reserve_at(key, ttl, Instant::now());
        Box::pin(std::future::ready(r))
    }

    fn commit<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, ()> {
        if let Some(mut e) = self.keys.get_mut(key) {
            *e = Instant::now() + ttl;
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn release<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        if self.keys.remove(key).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

/// GCRA buckets in this process. See the module documentation.
pub struct MemoryRateStore {
    /// scope → (key → TAT in nanoseconds since `epoch`). One map per scope keeps an entry at 32
    /// bytes; a removed route's scope goes once its buckets are full again.
    scopes: Map<u64, Arc<Map<u128, u64>>>,
    /// Buckets in all scopes, without visiting every shard on each check.
    count: AtomicUsize,
    max_keys: usize,
    epoch: Instant,
    /// When a check last swept because the store was full (ns since `epoch`).
    last_full_sweep: AtomicU64,
}

impl MemoryRateStore {
    pub fn new(max_keys: usize) -> Self {
        MemoryRateStore {
            scopes: Map::default(),
            count: AtomicUsize::new(0),
            max_keys,
            epoch: Instant::now(),
            last_full_sweep: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn check_at(&self, scope: u64, key: u128, gcra: Gcra, at: Instant) -> Result<RateDecision, StoreError> {
        let now = self.nanos(at);
        let interval = u64::try_from(gcra.emission_interval.as_nanos()).unwrap_or(u64::MAX).max(1);
        let tau = interval.saturating_mul(u64::from(gcra.burst.max(1) - 1));
        if self.count.load(Ordering::Relaxed) >= self.max_keys {
            self.sweep_when_full(at, now);
        }
        let full = self.count.load(Ordering::Relaxed) >= self.max_keys;
        let buckets = match self.scopes.get(&scope) {
            Some(b) => b,
            None => self.scopes.entry(scope).or_default().downgrade(),
        };
        let decision = match buckets.entry(key) {
            Entry::Occupied(mut e) => {
                let tat = (*e.get()).max(now);
                let earliest = tat.saturating_sub(tau);
                if earliest > now {
                    Ok(RateDecision::Limited { retry_after: Duration::from_nanos(earliest - now) })
                } else {
                    e.insert(tat.saturating_add(interval));
                    Ok(RateDecision::Allowed)
                }
            }
            Entry::Vacant(_) if full => Err(StoreError::Full),
            Entry::Vacant(e) => {
                e.insert(now.saturating_add(interval));
                self.count.fetch_add(1, Ordering::Relaxed);
                Ok(RateDecision::Allowed)
            }
        };
        decision
    }

    /// At the cap, one check a second sweeps before refusing: full buckets may have refilled.
    fn sweep_when_full(&self, at: Instant, now: u64) {
        let last = self.last_full_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1_000_000_000
            || self.last_full_sweep.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        let left = self.sweep(at);
        if left >= self.max_keys {
            tracing::warn!(target: "payguard::rate_limit", keys = left, "rate-limit store is full: new clients get the routes' on_state_error.rate_limit");
        }
    }

    /// Drops the buckets that are full again, and scopes left empty; returns how many buckets
    /// remain. A scope is swept without holding the map of scopes, so checks go on meanwhile.
    pub fn sweep(&self, at: Instant) -> usize {
        let now = self.nanos(at);
        let scopes: Vec<Arc<Map<u128, u64>>> = self.scopes.iter().map(|e| e.value().clone()).collect();
        let mut left = 0;
        for buckets in scopes {
            let before = buckets.len();
            buckets.retain(|_, tat| *tat > now);
            let after = buckets.len();
            // Give memory back after a large drop: a steady population would otherwise regrow
            // its table after every pass.
            if after < before / 2 {
                buckets.shrink_to_fit();
            }
            left += after;
        }
        self.scopes.retain(|_, buckets| !buckets.is_empty());
        self.count.store(left, Ordering::Relaxed);
        left
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RateStore for MemoryRateStore {
    fn check_now(&self, scope: u64, key: u128, gcra: Gcra) -> Option<Result<RateDecision, StoreError>> {
        Some(self.check_at(scope, key, gcra, Instant::now()))
    }

    fn check<'a>(&'a self, scope: u64, key: u128, gcra: Gcra) -> StoreFuture<'a, RateDecision> {
        Box::pin(std::future::ready(self.check_at(scope, key, gcra, Instant::now())))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn reserve_once_then_taken_until_expiry() {
        let s = MemoryNonceStore::new(10);
        let t0 = Instant::now();
        assert_eq!(s.reserve_at("a", TTL, t0), Ok(Reservation::Reserved));
        assert_eq!(s.reserve_at("a", TTL, t0 + Duration::from_secs(59)), Ok(Reservation::Taken));
        assert_eq!(s.reserve_at("a", TTL, t0 + TTL), Ok(Reservation::Reserved));
    }

    #[tokio::test]
    async fn release_frees_commit_keeps() {
        let s = MemoryNonceStore::new(10);
        assert_eq!(s.reserve("a", TTL).await, Ok(Reservation::Reserved));
        s.release("a").await.unwrap();
        assert_eq!(s.reserve("a", TTL).await, Ok(Reservation::Reserved));
        s.commit("a", TTL).await.unwrap();
        assert_eq!(s.reserve("a", TTL).await, Ok(Reservation::Taken));
    }

    #[test]
    fn full_store_refuses_rather_than_forgets() {
        let s = MemoryNonceStore::new(2);
        let t0 = Instant::now();
        s.reserve_at("a", TTL, t0).unwrap();
        s.reserve_at("b", TTL, t0).unwrap();
        assert_eq!(s.reserve_at("c", TTL, t0), Err(StoreError::Full));
        // Existing keys still answer.
        assert_eq!(s.reserve_at("a", TTL, t0), Ok(Reservation::Taken));
        // Expired keys are swept and make room.
        assert_eq!(s.sweep(t0 + TTL), 0);
        assert_eq!(s.reserve_at("c", TTL, t0 + TTL), Ok(Reservation::Reserved));
    }

    #[test]
    fn concurrent_reservations_have_one_winner() {
        let s = std::sync::Arc::new(MemoryNonceStore::new(1000));
        let winners: usize = std::thread::scope(|scope| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let s = s.clone();
                    scope
                        .spawn(move || usize::from(s.reserve_at("k", TTL, Instant::now()) == Ok(Reservation::Reserved)))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(winners, 1);
    }

    fn gcra(per_cell: Duration, burst: u32) -> Gcra {
        Gcra { emission_interval: per_cell, burst }
    }

    #[test]
    fn gcra_burst_then_one_per_interval() {
        let s = MemoryRateStore::new(1_000);
        let t0 = Instant::now();
        let g = gcra(Duration::from_millis(100), 3);
        for _ in 0..3 {
            assert_eq!(s.check_at(1, 7, g, t0), Ok(RateDecision::Allowed));
        }
        match s.check_at(1, 7, g, t0) {
            Ok(RateDecision::Limited { retry_after }) => assert_eq!(retry_after, Duration::from_millis(100)),
            other => panic!("{other:?}"),
        }
        // One cell back after one interval, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(s.check_at(1, 7, g, t1), Ok(RateDecision::Allowed));
        assert!(matches!(s.check_at(1, 7, g, t1), Ok(RateDecision::Limited { .. })));
        // Other keys and other scopes have their own buckets.
        assert_eq!(s.check_at(1, 8, g, t1), Ok(RateDecision::Allowed));
        assert_eq!(s.check_at(2, 7, g, t1), Ok(RateDecision::Allowed));
        // Burst 1: no tolerance at all.
        let one = gcra(Duration::from_secs(1), 1);
        assert_eq!(s.check_at(3, 1, one, t0), Ok(RateDecision::Allowed));
        assert!(matches!(s.check_at(3, 1, one, t0), Ok(RateDecision::Limited { .. })));
    }

    #[test]
    fn same_decisions_as_the_redis_script_arguments() {
        // 20/s, burst 20 (T = 50 ms, tau = 19 T): 20 at once, then one per 50 ms.
        let s = MemoryRateStore::new(1_000);
        let t0 = Instant::now();
        let g = gcra(Duration::from_millis(50), 20);
        assert_eq!(crate::state::redis::gcra_args(g), (50_000, 950_000));
        assert!((0..20).all(|_| s.check_at(0, 0, g, t0) == Ok(RateDecision::Allowed)));
        assert!(matches!(s.check_at(0, 0, g, t0 + Duration::from_millis(49)), Ok(RateDecision::Limited { .. })));
        assert_eq!(s.check_at(0, 0, g, t0 + Duration::from_millis(50)), Ok(RateDecision::Allowed));
    }

    #[test]
    fn buckets_full_again_are_swept_and_the_cap_refuses_new_keys_only() {
        let s = MemoryRateStore::new(1_000);
        let t0 = Instant::now();
        let slow = gcra(Duration::from_secs(3600), 1);
        let fast = gcra(Duration::from_millis(1), 1);
        for k in 0..500u128 {
            assert_eq!(s.check_at(1, k, slow, t0), Ok(RateDecision::Allowed));
            assert_eq!(s.check_at(2, k, fast, t0), Ok(RateDecision::Allowed));
        }
        assert_eq!(s.len(), 1_000);
        // Full: a new key is refused, an existing one is still enforced.
        assert_eq!(s.check_at(1, 9_999, slow, t0), Err(StoreError::Full));
        assert!(matches!(s.check_at(1, 0, slow, t0), Ok(RateDecision::Limited { .. })));
        // The fast buckets refill within a millisecond; the next check at the cap sweeps them.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(s.check_at(1, 9_999, slow, later), Ok(RateDecision::Allowed));
        assert_eq!(s.len(), 501);
        assert_eq!(s.sweep(later), 501, "hour-long buckets are not full again");
        assert_eq!(s.sweep(t0 + Duration::from_secs(7_201)), 0);
    }
}
