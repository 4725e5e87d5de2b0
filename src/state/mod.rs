//! State that outlives a request: replay keys (nonces), rate-limit buckets, the failure counts
//! and bans of `[[route.failure_limit]]`, and the idempotency keys and stored answers of
//! `[route.idempotency]`. One instance keeps them in memory
//! ([`memory`]); several instances share them through Redis ([`redis`]).

mod idem_table;
pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The stores the guards share, chosen once at start from `[state]`.
#[derive(Clone)]
pub struct Stores {
    pub nonces: std::sync::Arc<dyn NonceStore>,
    pub buckets: std::sync::Arc<dyn RateStore>,
    pub failures: std::sync::Arc<dyn FailureStore>,
    pub idempotency: std::sync::Arc<dyn IdempotencyStore>,
}

impl Stores {
    /// Memory stores with the given caps and no upkeep (tests, fuzzing).
    pub fn memory(config: &crate::config::StateConfig) -> Stores {
        Stores {
            nonces: std::sync::Arc::new(memory::MemoryNonceStore::new(config.max_replay_keys)),
            buckets: std::sync::Arc::new(memory::MemoryRateStore::new(config.max_rate_keys)),
            failures: std::sync::Arc::new(memory::MemoryFailureStore::new(config.max_failure_keys)),
            idempotency: std::sync::Arc::new(memory::MemoryIdempotencyStore::new(
                config.max_idempotency_keys,
                config.max_idempotency_bytes,
            )),
        }
    }
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store's answer that may be there at once: a store that answers without waiting (memory)
/// gives it without boxing a future.
pub type SoonFuture<'a, T> =
    futures_util::future::Either<futures_util::future::Ready<Result<T, StoreError>>, StoreFuture<'a, T>>;

/// A [`SoonFuture`] with its answer.
pub fn now<'a, T>(answer: Result<T, StoreError>) -> SoonFuture<'a, T> {
    futures_util::future::Either::Left(futures_util::future::ready(answer))
}

/// A [`SoonFuture`] to wait for.
pub fn later<'a, T>(future: impl Future<Output = Result<T, StoreError>> + Send + 'a) -> SoonFuture<'a, T> {
    futures_util::future::Either::Right(Box::pin(future))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store holds as many keys as it may; it refuses rather than forgets one.
    #[error("state store is full")]
    Full,
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer within `[state] timeout`.
    #[error("state store did not answer within {0:?}")]
    Timeout(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The key was free and is now held for this request.
    Reserved,
    /// The key is held already: accepted before, or in flight right now.
    Taken,
}

/// Replay keys. `reserve` is atomic: of two concurrent reservations of one key, exactly one
/// gets [`Reservation::Reserved`].
pub trait NonceStore: Send + Sync + 'static {
    fn reserve<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Reservation>;
    /// The backend accepted the request: keep the key for `ttl` from now.
    fn commit<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, ()>;
    /// The backend did not accept it: free the key so the provider's retry passes.
    fn release<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;
    fn backend(&self) -> &'static str;
}

/// A GCRA limit as a shared store evaluates it: one cell every `emission_interval`, at most
/// `burst` cells at once (the same quota as the in-memory limiter's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    pub emission_interval: Duration,
    pub burst: u32,
}

/// What a shared rate-limit store decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// Refused; the next cell is available after `retry_after`.
    Limited {
        retry_after: Duration,
    },
}

/// Rate-limit buckets: GCRA per (scope, key). `scope` is the fingerprint of a route's limit
/// (or of `[defaults]`), `key` the client's bucket within it (see `guard::rate_limit`). The
/// memory store ([`memory::MemoryRateStore`]) answers at once; a shared store takes one cell
/// atomically across every instance, in one round trip.
pub trait RateStore: Send + Sync + 'static {
    /// The decision when the store can make it without waiting; `None`: ask [`Self::check`].
    fn check_now(&self, scope: u64, key: u128, gcra: Gcra) -> Option<Result<RateDecision, StoreError>>;

    /// Takes one cell from the bucket if one is available.
    fn check<'a>(&'a self, scope: u64, key: u128, gcra: Gcra) -> StoreFuture<'a, RateDecision>;
}

/// `[[route.failure_limit]]` as a store applies it: `threshold` failures within `window` ban the
/// key for `ban`; each further ban of the same key lasts `ban_factor` times longer, up to
/// `max_ban`. A key's count of bans is forgotten `max_ban` after its last ban ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePolicy {
    pub threshold: u32,
    pub window: Duration,
    pub ban: Duration,
    pub ban_factor: u32,
    pub max_ban: Duration,
}

impl FailurePolicy {
    /// How long the key's `strike`-th ban lasts (1: the first).
    pub fn ban_for(&self, strike: u32) -> Duration {
        let mut len = self.ban;
        if self.ban_factor > 1 {
            // 64 doublings of even 1 ns pass any cap: no need to count further.
            for _ in 1..strike.min(64) {
                if len >= self.max_ban {
                    break;
                }
                len = len.saturating_mul(self.ban_factor);
            }
        }
        len.min(self.max_ban)
    }
}

/// One ban in force, as the admin listener lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The route's failure-limit scope (a fingerprint, as for rate limits).
    pub scope: u64,
    /// The banned key's digest within the scope.
    pub key: u128,
    /// What the key is, as safe to show: an IP address, or a truncated digest of a header or
    /// field value (never the value itself).
    pub label: String,
    /// Time left.
    pub left: Duration,
    /// Which ban of this key it is (1: the first).
    pub strike: u32,
}

/// Failure counts and bans per (scope, key). Counting and banning are atomic: of many
/// concurrent failures of one key, exactly one starts its ban.
pub trait FailureStore: Send + Sync + 'static {
    /// The time left of the key's ban, when the store can tell without waiting; `None`: ask
    /// [`Self::banned`].
    fn banned_now(&self, scope: u64, key: u128) -> Option<Result<Option<Duration>, StoreError>>;

    /// The time left of the key's ban; `None` when it is not banned.
    fn banned<'a>(&'a self, scope: u64, key: u128) -> StoreFuture<'a, Option<Duration>>;

    /// Counts one failed attempt. Returns the ban it started when it reached the threshold. A
    /// failure of a key already banned (an attempt that was in flight when the ban began)
    /// counts for nothing.
    fn fail<'a>(
        &'a self,
        scope: u64,
        key: u128,
        label: &'a str,
        policy: FailurePolicy,
    ) -> StoreFuture<'a, Option<Duration>>;

    /// Every ban in force (at most `limit`), longest left first.
    fn bans(&self, limit: usize) -> StoreFuture<'_, Vec<Ban>>;

    /// Lifts the key's ban and forgets its failures and earlier bans; whether it was banned.
    fn lift(&self, scope: u64, key: u128) -> StoreFuture<'_, bool>;
}

/// An idempotency key as stored: 16 bytes of a digest of route, scope and key (never the key
/// itself). Written as 32 hex digits (Redis key names, logs show the first 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdemKey(pub [u8; 16]);

impl std::hash::Hash for IdemKey {
    // A digest already: one word for the hasher, not a slice with its length.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.0));
    }
}

impl IdemKey {
    /// The first 4 bytes, as logs show them (`#1a2b3c4d`).
    pub fn tag(&self) -> u32 {
        u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }
}

impl std::fmt::Display for IdemKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// An answer kept for replay by `[route.idempotency]`: status, `content-type` and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub content_type: Option<http::HeaderValue>,
    pub body: bytes::Bytes,
}

/// What the store says when an attempt with an idempotency key begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key was free: it is held for this attempt until its lease runs out.
    Started,
    /// An attempt with the same fingerprint holds the key right now.
    InFlight,
    /// An attempt with the same fingerprint finished: its answer.
    Done(StoredAnswer),
    /// The key is held, or was answered, for a different request.
    Mismatch,
    /// An attempt with the same fingerprint timed out at the backend, which may have acted on it.
    Indeterminate,
}

/// Idempotency keys (`[route.idempotency]`). `begin` is atomic: of concurrent attempts with one
/// key, exactly one gets [`Begin::Started`]. Every other call acts only on the key's attempt
/// with `fingerprint`, so a late answer never overwrites another request's state.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Whether every future this store returns is ready at once (memory): the guard may then
    /// settle an attempt without waiting.
    fn immediate(&self) -> bool {
        false
    }

    /// [`Self::begin`], when the store can answer without waiting; `None`: ask `begin`.
    fn begin_now(&self, _key: IdemKey, _fingerprint: [u8; 32], _lease: Duration) -> Option<Result<Begin, StoreError>> {
        None
    }

    /// Starts an attempt, or says why not. `lease`: how long an attempt in flight holds the key
    /// at most (a crashed instance's hold runs out).
    fn begin(&self, key: IdemKey, fingerprint: [u8; 32], lease: Duration) -> StoreFuture<'_, Begin>;

    /// The attempt finished with `answer`: replayed for `retention`. Its body and content type
    /// may be slices of a connection's buffers: what a store keeps is its own copy.
    fn complete(
        &self,
        key: IdemKey,
        fingerprint: [u8; 32],
        answer: StoredAnswer,
        retention: Duration,
    ) -> SoonFuture<'_, ()>;

    /// The attempt's outcome is unknown (the backend timed out): held as indeterminate for
    /// `retention`.
    fn hold(&self, key: IdemKey, fingerprint: [u8; 32], retention: Duration) -> SoonFuture<'_, ()>;

    /// Nothing was done: the key is free again.
    fn release(&self, key: IdemKey, fingerprint: [u8; 32]) -> SoonFuture<'_, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_grow_by_the_factor_up_to_the_cap() {
        let p = FailurePolicy {
            threshold: 5,
            window: Duration::from_secs(600),
            ban: Duration::from_secs(900),
            ban_factor: 2,
            max_ban: Duration::from_secs(3 * 3600),
        };
        let lens: Vec<u64> = (1..=6).map(|n| p.ban_for(n).as_secs()).collect();
        assert_eq!(lens, [900, 1800, 3600, 7200, 10800, 10800]);
        assert_eq!(p.ban_for(u32::MAX), p.max_ban);
        let flat = FailurePolicy { ban_factor: 1, ..p };
        assert_eq!(flat.ban_for(u32::MAX), Duration::from_secs(900));
    }
}
