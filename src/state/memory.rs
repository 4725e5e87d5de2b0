//! In-memory replay store: sharded map (dashmap) with a TTL per key and a hard cap on the
//! number of keys. When full it refuses new reservations instead of evicting live ones:
//! forgetting a nonce early would let its replay through.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::{NonceStore, Reservation, StoreError, StoreFuture};

pub struct MemoryNonceStore {
    keys: DashMap<Box<str>, Instant>,
    /// `keys.len()` without visiting every shard on each reservation.
    count: AtomicUsize,
    max_keys: usize,
}

impl MemoryNonceStore {
    pub fn new(max_keys: usize) -> Self {
        MemoryNonceStore { keys: DashMap::new(), count: AtomicUsize::new(0), max_keys }
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
}
