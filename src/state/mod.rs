//! State that outlives a request: replay keys (nonces). One instance keeps it in memory
//! ([`memory`]); several instances share it through Redis.

pub mod memory;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store holds as many keys as it may; it refuses rather than forgets one.
    #[error("replay store is full")]
    Full,
    #[error("state store unavailable: {0}")]
    Unavailable(String),
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
