//! In-memory state for one instance: sharded maps (dashmap) with a hard cap on their keys.
//!
//! - [`MemoryNonceStore`]: replay keys with a TTL each. When full it refuses new reservations
//!   instead of evicting live ones: forgetting a nonce early would let its replay through.
//! - [`MemoryRateStore`]: GCRA buckets, one theoretical arrival time (TAT) per (scope, key), the
//!   same algorithm as the Redis script. A bucket whose TAT has passed is full again and is
//!   dropped by the sweep; at the cap a new key is refused (`StoreError::Full`, so the route's
//!   `on_state_error.rate_limit` decides) while every existing bucket is still enforced.
//! - [`MemoryFailureStore`]: failed attempts and bans of `[[route.failure_limit]]`. The window
//!   is exact: the times of the last `threshold` failures are kept, not a count per slot. At the
//!   cap a new key's failures are not counted; a banned key is never forgotten early.
//! - [`MemoryIdempotencyStore`]: idempotency keys with their state (in flight, answered,
//!   indeterminate) and stored answers, capped by keys and by stored bytes; at either cap a new
//!   key is refused (`StoreError::Full`) and every held key keeps its state. Its shards are
//!   tables of their own (`idem_table`): a shop keeps far more of these keys than of any other,
//!   and each first attempt adds one.

use std::collections::VecDeque;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// Seeded per process, so a client who picks its address or key cannot aim at one shard's
/// buckets; several times cheaper than the standard SipHash on the fixed-size keys used here.
type Hasher = foldhash::quality::RandomState;
type Map<K, V> = DashMap<K, V, Hasher>;

use super::idem_table::{Caps, IdemTable, Kept, Settled};
use super::{
    Ban, Begin, FailurePolicy, FailureStore, Gcra, IdemKey, IdempotencyStore, NonceStore, RateDecision, RateStore,
    Reservation, SoonFuture, StoreError, StoreFuture, StoredAnswer,
};

/// Whether this caller is the first in a second (by `now`, ns) to claim `last`: a full store's
/// sweep runs once a second however many requests find it full.
fn first_this_second(last: &AtomicU64, now: u64) -> bool {
    let seen = last.load(Ordering::Relaxed);
    now.saturating_sub(seen) >= 1_000_000_000
        && last.compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

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
        if !first_this_second(&self.last_full_sweep, now) {
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

/// Idempotency keys in this process. See the module documentation.
pub struct MemoryIdempotencyStore {
    hasher: Hasher,
    shards: Box<[Mutex<IdemTable<Hasher>>]>,
    /// The shard of a hash: its top bits, `shift` = 64 − log2(shards).
    shift: u32,
    caps: Caps,
}

impl MemoryIdempotencyStore {
    pub fn new(max_keys: usize, max_bytes: usize) -> Self {
        // As many shards as dashmap would take: threads rarely wait on one another.
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let shards = (threads * 4).next_power_of_two().clamp(4, 64);
        let hasher = Hasher::default();
        MemoryIdempotencyStore {
            shards: (0..shards).map(|_| Mutex::new(IdemTable::new(hasher.clone()))).collect(),
            hasher,
            shift: 64 - shards.trailing_zeros(),
            caps: Caps {
                keys: AtomicUsize::new(0),
                bytes: AtomicUsize::new(0),
                max_keys,
                max_bytes,
                epoch: Instant::now(),
            },
        }
    }

    /// The key's shard, locked. Nothing panics while a shard is locked, so a poisoned lock
    /// would still hold a whole table: it is used as it is.
    fn shard(&self, key: &IdemKey) -> MutexGuard<'_, IdemTable<Hasher>> {
        let shard = &self.shards[(self.hasher.hash_one(key) >> self.shift) as usize];
        shard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn begin_at(
        &self,
        key: IdemKey,
        fingerprint: [u8; 32],
        lease: Duration,
        now: Instant,
    ) -> Result<Begin, StoreError> {
        self.shard(&key).begin(key, &fingerprint, lease, now, &self.caps)
    }

    fn settle(
        &self,
        key: IdemKey,
        fingerprint: [u8; 32],
        how: Settled,
        life: Duration,
        now: Instant,
    ) -> Result<(), StoreError> {
        self.shard(&key).settle(key, &fingerprint, how, life, now, &self.caps)
    }

    pub fn complete_at(
        &self,
        key: IdemKey,
        fingerprint: [u8; 32],
        answer: StoredAnswer,
        retention: Duration,
        now: Instant,
    ) -> Result<(), StoreError> {
        self.settle(key, fingerprint, Settled::Done(Kept::new(&answer)), retention, now)
    }

    pub fn hold_at(
        &self,
        key: IdemKey,
        fingerprint: [u8; 32],
        retention: Duration,
        now: Instant,
    ) -> Result<(), StoreError> {
        self.settle(key, fingerprint, Settled::Indeterminate, retention, now)
    }

    pub fn release_key(&self, key: IdemKey, fingerprint: [u8; 32]) {
        self.shard(&key).release(key, &fingerprint, &self.caps);
    }

    /// Drops expired keys (and their answers); returns how many remain.
    pub fn sweep(&self, now: Instant) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).sweep(now, &self.caps)).sum()
    }

    /// Body bytes of the stored answers.
    pub fn stored_bytes(&self) -> usize {
        self.caps.bytes.load(Ordering::Relaxed)
    }
}

impl IdempotencyStore for MemoryIdempotencyStore {
    fn immediate(&self) -> bool {
        true
    }

    fn begin_now(&self, key: IdemKey, fingerprint: [u8; 32], lease: Duration) -> Option<Result<Begin, StoreError>> {
        Some(self.begin_at(key, fingerprint, lease, Instant::now()))
    }

    fn begin(&self, key: IdemKey, fingerprint: [u8; 32], lease: Duration) -> StoreFuture<'_, Begin> {
        Box::pin(std::future::ready(self.begin_at(key, fingerprint, lease, Instant::now())))
    }

    fn complete(
        &self,
        key: IdemKey,
        fingerprint: [u8; 32],
        answer: StoredAnswer,
        retention: Duration,
    ) -> SoonFuture<'_, ()> {
        super::now(self.complete_at(key, fingerprint, answer, retention, Instant::now()))
    }

    fn hold(&self, key: IdemKey, fingerprint: [u8; 32], retention: Duration) -> SoonFuture<'_, ()> {
        super::now(self.hold_at(key, fingerprint, retention, Instant::now()))
    }

    fn release(&self, key: IdemKey, fingerprint: [u8; 32]) -> SoonFuture<'_, ()> {
        self.release_key(key, fingerprint);
        super::now(Ok(()))
    }
}

/// Failed attempts and bans in this process. See the module documentation.
pub struct MemoryFailureStore {
    keys: Map<(u64, u128), FailureEntry>,
    count: AtomicUsize,
    max_keys: usize,
    epoch: Instant,
    /// When a failure last swept because the store was full (ns since `epoch`).
    last_full_sweep: AtomicU64,
}

struct FailureEntry {
    /// Times of the failures within the window, oldest first (ns since `epoch`); at most
    /// `threshold` of them.
    recent: VecDeque<u64>,
    /// 0: not banned.
    banned_until: u64,
    /// Bans so far, remembered until `strikes_until`.
    strikes: u32,
    strikes_until: u64,
    /// The entry may go once this has passed: no ban, no strike, no failure in its window.
    keep_until: u64,
    /// Set when a ban starts (only bans are listed): a key that only ever failed now and then
    /// carries no string.
    label: Option<Box<str>>,
}

impl MemoryFailureStore {
    pub fn new(max_keys: usize) -> Self {
        MemoryFailureStore {
            keys: Map::default(),
            count: AtomicUsize::new(0),
            max_keys,
            epoch: Instant::now(),
            last_full_sweep: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn ns(d: Duration) -> u64 {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn banned_at(&self, scope: u64, key: u128, at: Instant) -> Option<Duration> {
        let now = self.nanos(at);
        let e = self.keys.get(&(scope, key))?;
        (e.banned_until > now).then(|| Duration::from_nanos(e.banned_until - now))
    }

    pub fn fail_at(
        &self,
        scope: u64,
        key: u128,
        label: &str,
        policy: FailurePolicy,
        at: Instant,
    ) -> Result<Option<Duration>, StoreError> {
        let now = self.nanos(at);
        if self.count.load(Ordering::Relaxed) >= self.max_keys {
            self.sweep_when_full(at, now);
        }
        let full = self.count.load(Ordering::Relaxed) >= self.max_keys;
        let mut e = match self.keys.entry((scope, key)) {
            Entry::Occupied(e) => e.into_ref(),
            Entry::Vacant(_) if full => return Err(StoreError::Full),
            Entry::Vacant(v) => {
                self.count.fetch_add(1, Ordering::Relaxed);
                v.insert(FailureEntry {
                    recent: VecDeque::new(),
                    banned_until: 0,
                    strikes: 0,
                    strikes_until: 0,
                    keep_until: 0,
                    label: None,
                })
            }
        };
        if e.banned_until > now {
            return Ok(None);
        }
        if e.strikes_until <= now {
            e.strikes = 0;
        }
        let window = Self::ns(policy.window);
        while e.recent.front().is_some_and(|&t| t.saturating_add(window) <= now) {
            e.recent.pop_front();
        }
        e.recent.push_back(now);
        let threshold = usize::try_from(policy.threshold.max(1)).unwrap_or(usize::MAX);
        while e.recent.len() > threshold {
            e.recent.pop_front();
        }
        if e.recent.len() < threshold {
            e.keep_until = e.keep_until.max(now.saturating_add(window));
            return Ok(None);
        }
        e.recent.clear();
        e.label = Some(label.into());
        e.strikes = e.strikes.saturating_add(1);
        let ban = policy.ban_for(e.strikes);
        e.banned_until = now.saturating_add(Self::ns(ban));
        e.strikes_until = e.banned_until.saturating_add(Self::ns(policy.max_ban));
        e.keep_until = e.keep_until.max(e.strikes_until);
        Ok(Some(ban))
    }

    /// At the cap, one failure a second sweeps first (and says so when the store stays full).
    fn sweep_when_full(&self, at: Instant, now: u64) {
        if !first_this_second(&self.last_full_sweep, now) {
            return;
        }
        let left = self.sweep(at);
        if left >= self.max_keys {
            tracing::warn!(target: "payguard::failure_limit", keys = left, "failure-limit store is full: failures of new keys are not counted");
        }
    }

    /// Every ban in force at `at`, longest left first, at most `limit`.
    pub fn bans_at(&self, limit: usize, at: Instant) -> Vec<Ban> {
        let now = self.nanos(at);
        let mut out: Vec<Ban> = self
            .keys
            .iter()
            .filter(|e| e.banned_until > now)
            .map(|e| Ban {
                scope: e.key().0,
                key: e.key().1,
                label: e.label.as_deref().unwrap_or_default().to_owned(),
                left: Duration::from_nanos(e.banned_until - now),
                strike: e.strikes,
            })
            .collect();
        out.sort_by_key(|b| std::cmp::Reverse(b.left));
        out.truncate(limit);
        out
    }

    pub fn lift_at(&self, scope: u64, key: u128, at: Instant) -> bool {
        let now = self.nanos(at);
        match self.keys.remove(&(scope, key)) {
            Some((_, e)) => {
                self.count.fetch_sub(1, Ordering::Relaxed);
                e.banned_until > now
            }
            None => false,
        }
    }

    /// Drops the entries with nothing left to remember; returns how many remain.
    pub fn sweep(&self, at: Instant) -> usize {
        let now = self.nanos(at);
        self.keys.retain(|_, e| e.keep_until > now);
        let n = self.keys.len();
        self.count.store(n, Ordering::Relaxed);
        n
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FailureStore for MemoryFailureStore {
    fn banned_now(&self, scope: u64, key: u128) -> Option<Result<Option<Duration>, StoreError>> {
        Some(Ok(self.banned_at(scope, key, Instant::now())))
    }

    fn banned<'a>(&'a self, scope: u64, key: u128) -> StoreFuture<'a, Option<Duration>> {
        Box::pin(std::future::ready(Ok(self.banned_at(scope, key, Instant::now()))))
    }

    fn fail<'a>(
        &'a self,
        scope: u64,
        key: u128,
        label: &'a str,
        policy: FailurePolicy,
    ) -> StoreFuture<'a, Option<Duration>> {
        Box::pin(std::future::ready(self.fail_at(scope, key, label, policy, Instant::now())))
    }

    fn bans(&self, limit: usize) -> StoreFuture<'_, Vec<Ban>> {
        Box::pin(std::future::ready(Ok(self.bans_at(limit, Instant::now()))))
    }

    fn lift(&self, scope: u64, key: u128) -> StoreFuture<'_, bool> {
        Box::pin(std::future::ready(Ok(self.lift_at(scope, key, Instant::now()))))
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

#[cfg(test)]
mod failure_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const POLICY: FailurePolicy = FailurePolicy {
        threshold: 3,
        window: Duration::from_secs(600),
        ban: Duration::from_secs(900),
        ban_factor: 2,
        max_ban: Duration::from_secs(3600),
    };

    fn mins(m: u64) -> Duration {
        Duration::from_secs(60 * m)
    }

    #[test]
    fn threshold_in_the_window_bans_and_bans_grow() {
        let s = MemoryFailureStore::new(100);
        let t0 = Instant::now();
        assert_eq!(s.fail_at(1, 7, "203.0.113.7", POLICY, t0), Ok(None));
        assert_eq!(s.fail_at(1, 7, "203.0.113.7", POLICY, t0 + mins(4)), Ok(None));
        assert_eq!(s.banned_at(1, 7, t0 + mins(4)), None);
        // The first failure has left the 10-minute window by minute 11: no ban yet.
        assert_eq!(s.fail_at(1, 7, "203.0.113.7", POLICY, t0 + mins(11)), Ok(None));
        // Three within ten minutes (4, 11, 12): banned for 15 minutes.
        let t1 = t0 + mins(12);
        assert_eq!(s.fail_at(1, 7, "203.0.113.7", POLICY, t1), Ok(Some(mins(15))));
        assert_eq!(s.banned_at(1, 7, t1 + mins(5)), Some(mins(10)));
        // Other keys and scopes are their own.
        assert_eq!(s.banned_at(1, 8, t1), None);
        assert_eq!(s.banned_at(2, 7, t1), None);
        // Failures that were in flight when the ban began count for nothing.
        assert_eq!(s.fail_at(1, 7, "203.0.113.7", POLICY, t1 + mins(1)), Ok(None));
        let bans = s.bans_at(10, t1 + mins(5));
        assert_eq!(bans.len(), 1);
        assert_eq!((bans[0].label.as_str(), bans[0].strike, bans[0].left), ("203.0.113.7", 1, mins(10)));
        // Over: the next three failures ban for twice as long, then the cap.
        let t2 = t1 + mins(15);
        assert_eq!(s.banned_at(1, 7, t2), None);
        for i in 0..2 {
            assert_eq!(s.fail_at(1, 7, "x", POLICY, t2 + mins(i)), Ok(None));
        }
        assert_eq!(s.fail_at(1, 7, "x", POLICY, t2 + mins(2)), Ok(Some(mins(30))));
        let t3 = t2 + mins(32);
        for i in 0..2 {
            assert_eq!(s.fail_at(1, 7, "x", POLICY, t3 + mins(i)), Ok(None));
        }
        assert_eq!(s.fail_at(1, 7, "x", POLICY, t3 + mins(2)), Ok(Some(mins(60))));
        // A key that stays clean for max_ban after its ban is forgiven: back to the first ban.
        let t4 = t3 + mins(2) + mins(60) + mins(60);
        for i in 0..2 {
            assert_eq!(s.fail_at(1, 7, "x", POLICY, t4 + mins(i)), Ok(None));
        }
        assert_eq!(s.fail_at(1, 7, "x", POLICY, t4 + mins(2)), Ok(Some(mins(15))));
    }

    #[test]
    fn lifting_forgives_and_the_sweep_forgets() {
        let s = MemoryFailureStore::new(100);
        let t0 = Instant::now();
        for _ in 0..3 {
            s.fail_at(1, 7, "k", POLICY, t0).unwrap();
        }
        assert!(s.banned_at(1, 7, t0).is_some());
        assert!(s.lift_at(1, 7, t0));
        assert!(!s.lift_at(1, 7, t0), "nothing left to lift");
        assert_eq!(s.banned_at(1, 7, t0), None);
        for _ in 0..2 {
            s.fail_at(1, 7, "k", POLICY, t0).unwrap();
        }
        assert_eq!(s.fail_at(1, 7, "k", POLICY, t0), Ok(Some(mins(15))), "strikes were forgotten");
        s.fail_at(2, 1, "one failure", POLICY, t0).unwrap();
        assert_eq!(s.sweep(t0 + mins(9)), 2);
        assert_eq!(s.sweep(t0 + mins(10)), 1, "the lone failure left its window");
        // The banned key is kept through its ban and the strike memory after it.
        assert_eq!(s.sweep(t0 + mins(15) + mins(59)), 1);
        assert_eq!(s.sweep(t0 + mins(15) + mins(60)), 0);
    }

    #[test]
    fn full_store_refuses_new_keys_and_keeps_counting_known_ones() {
        let s = MemoryFailureStore::new(2);
        let t0 = Instant::now();
        s.fail_at(1, 1, "a", POLICY, t0).unwrap();
        s.fail_at(1, 2, "b", POLICY, t0).unwrap();
        assert_eq!(s.fail_at(1, 3, "c", POLICY, t0), Err(StoreError::Full));
        s.fail_at(1, 1, "a", POLICY, t0).unwrap();
        assert_eq!(s.fail_at(1, 1, "a", POLICY, t0), Ok(Some(mins(15))));
    }

    #[test]
    fn concurrent_failures_start_one_ban() {
        let s = Arc::new(MemoryFailureStore::new(100));
        let policy = FailurePolicy { threshold: 5, ..POLICY };
        let bans: usize = std::thread::scope(|scope| {
            let hs: Vec<_> = (0..20)
                .map(|_| {
                    let s = s.clone();
                    scope.spawn(move || usize::from(s.fail_at(1, 1, "k", policy, Instant::now()).unwrap().is_some()))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(bans, 1);
    }
}

#[cfg(test)]
mod idempotency_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const A: [u8; 32] = [1; 32];
    const B: [u8; 32] = [2; 32];
    const LEASE: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(86_400);

    /// A stored key named by a short tag.
    fn key(name: &[u8]) -> IdemKey {
        let mut k = [0u8; 16];
        k[..name.len()].copy_from_slice(name);
        IdemKey(k)
    }

    fn answer(status: u16, body: &'static str) -> StoredAnswer {
        StoredAnswer {
            status,
            content_type: Some(http::HeaderValue::from_static("application/json")),
            body: bytes::Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn first_attempt_starts_then_in_flight_done_and_mismatch() {
        let s = MemoryIdempotencyStore::new(100, 1 << 20);
        let t0 = Instant::now();
        assert_eq!(s.begin_at(key(b"k"), A, LEASE, t0), Ok(Begin::Started));
        assert_eq!(s.begin_at(key(b"k"), A, LEASE, t0), Ok(Begin::InFlight));
        assert_eq!(s.begin_at(key(b"k"), B, LEASE, t0), Ok(Begin::Mismatch));
        // Another request's answer never settles this attempt.
        s.complete_at(key(b"k"), B, answer(200, "{}"), DAY, t0).unwrap();
        assert_eq!(s.begin_at(key(b"k"), A, LEASE, t0), Ok(Begin::InFlight));
        s.complete_at(key(b"k"), A, answer(500, r#"{"e":1}"#), DAY, t0).unwrap();
        assert_eq!(s.begin_at(key(b"k"), A, LEASE, t0), Ok(Begin::Done(answer(500, r#"{"e":1}"#))));
        assert_eq!(s.begin_at(key(b"k"), B, LEASE, t0), Ok(Begin::Mismatch));
        assert_eq!(s.stored_bytes(), 7);
        // Retention over: the key is free, its answer's bytes are given back.
        assert_eq!(s.begin_at(key(b"k"), B, LEASE, t0 + DAY), Ok(Begin::Started));
        assert_eq!(s.stored_bytes(), 0);
    }

    #[test]
    fn release_frees_hold_keeps_and_a_lease_runs_out() {
        let s = MemoryIdempotencyStore::new(100, 1 << 20);
        let t0 = Instant::now();
        assert_eq!(s.begin_at(key(b"r"), A, LEASE, t0), Ok(Begin::Started));
        s.release_key(key(b"r"), B);
        assert_eq!(s.begin_at(key(b"r"), A, LEASE, t0), Ok(Begin::InFlight), "only the attempt itself releases");
        s.release_key(key(b"r"), A);
        assert_eq!(s.begin_at(key(b"r"), A, LEASE, t0), Ok(Begin::Started));
        s.hold_at(key(b"r"), A, DAY, t0).unwrap();
        assert_eq!(s.begin_at(key(b"r"), A, LEASE, t0 + LEASE), Ok(Begin::Indeterminate));
        // An attempt in flight holds the key for its lease only (a crashed instance's hold).
        assert_eq!(s.begin_at(key(b"x"), A, LEASE, t0), Ok(Begin::Started));
        assert_eq!(s.begin_at(key(b"x"), A, LEASE, t0 + LEASE), Ok(Begin::Started));
    }

    #[test]
    fn caps_refuse_new_keys_and_never_forget_a_held_one() {
        let s = MemoryIdempotencyStore::new(2, 10);
        let t0 = Instant::now();
        assert_eq!(s.begin_at(key(b"a"), A, LEASE, t0), Ok(Begin::Started));
        assert_eq!(s.begin_at(key(b"b"), A, LEASE, t0), Ok(Begin::Started));
        assert_eq!(s.begin_at(key(b"c"), A, LEASE, t0), Err(StoreError::Full));
        // An answer over the byte cap is not stored: the key stays held, as indeterminate.
        assert_eq!(s.complete_at(key(b"a"), A, answer(200, "0123456789ab"), DAY, t0), Err(StoreError::Full));
        assert_eq!(s.begin_at(key(b"a"), A, LEASE, t0), Ok(Begin::Indeterminate));
        s.complete_at(key(b"b"), A, answer(200, "0123"), DAY, t0).unwrap();
        assert_eq!(s.sweep(t0 + DAY), 0);
        assert_eq!((s.stored_bytes(), s.begin_at(key(b"c"), A, LEASE, t0 + DAY)), (0, Ok(Begin::Started)));
    }

    #[test]
    fn concurrent_first_attempts_have_one_winner() {
        let s = Arc::new(MemoryIdempotencyStore::new(100, 1 << 20));
        let started: usize = std::thread::scope(|scope| {
            let hs: Vec<_> = (0..16)
                .map(|_| {
                    let s = s.clone();
                    scope.spawn(move || {
                        usize::from(s.begin_at(key(b"k"), A, LEASE, Instant::now()) == Ok(Begin::Started))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(started, 1);
    }
}
