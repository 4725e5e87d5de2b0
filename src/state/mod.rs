//! State that outlives a request: replay keys (nonces) and rate-limit buckets. One instance
//! keeps them in memory ([`memory`]); several instances share them
//! through Redis ([`redis`]).

pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

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
