//! One shard of the memory idempotency store, laid out for what a shop's store does most: take
//! a key it has never seen, keep its answer for `retention`, then let it go.
//!
//! - **Entries** live in a slab (`Vec`), each with its key, fingerprint, expiry and answer in
//!   one place. A freed entry's position is the next one taken, so a new key is written where
//!   the key just let go of was: memory already in cache.
//! - **The index** is open-addressed over 64-byte buckets of seven (tag, position) pairs. A
//!   lookup reads one cache line, and the slab only when a tag matches: a new key costs one
//!   random memory access, where a general hash map reads its control bytes and its slot, on
//!   different pages, and a boxed answer on a third. A bucket counts the keys that overflowed
//!   past it (as in folly's F14), so a lookup stops at the first bucket that has none.
//! - **Expiry** needs no scan. Every entry is queued on the ring of its lifetime (the `lease`
//!   while in flight, `retention` once settled); on one ring expiries come in the order queued,
//!   so the ones that ran out are at its front. Each `begin` reclaims a few of them, and the
//!   periodic sweep the rest. A reference left behind by an entry that moved on (settled,
//!   released, reused) is stale by its generation and dropped when it reaches the front.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Begin, IdemKey, StoreError, StoredAnswer};

const SLOTS: usize = 7;
const EMPTY: u32 = u32::MAX;
/// The index grows before more than this share (in eighths) of its slots are taken.
const LOAD_EIGHTHS: usize = 5;
/// What each `begin` reclaims before its own work, at most: ring references looked at, and
/// keys freed. A key leaves two references (its lease and its retention), so this keeps up with
/// any rate of new keys, and no `begin` waits on a long stretch of them.
const RECLAIM_LOOKS: usize = 16;
const RECLAIM_FREES: usize = 2;
/// Lifetimes with a ring of their own (a rule set has a lease and a retention per route).
const MAX_RINGS: usize = 64;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    tags: [u32; SLOTS],
    pos: [u32; SLOTS],
    /// Keys whose home is this bucket or one before it, stored past it.
    overflow: u32,
    _pad: u32,
}

const EMPTY_BUCKET: Bucket = Bucket { tags: [0; SLOTS], pos: [EMPTY; SLOTS], overflow: 0, _pad: 0 };

/// What the store says of a key.
#[derive(Debug)]
pub enum State {
    /// Not a key: a position on the free list.
    Free,
    InFlight,
    Done(Kept),
    Indeterminate,
}

/// A stored answer as kept: its content type and body in one allocation of their size, apart
/// from the buffer the answer was read into (which goes back as soon as the client has it).
#[derive(Debug)]
pub struct Kept {
    status: u16,
    type_len: u32,
    bytes: Box<[u8]>,
}

impl Kept {
    pub fn new(answer: &StoredAnswer) -> Kept {
        let content_type = answer.content_type.as_ref().map_or(&[][..], |v| v.as_bytes());
        let type_len = u32::try_from(content_type.len()).unwrap_or(0);
        let content_type = &content_type[..type_len as usize];
        let bytes = [content_type, &answer.body].concat().into_boxed_slice();
        Kept { status: answer.status, type_len, bytes }
    }

    fn body_len(&self) -> usize {
        self.bytes.len() - self.type_len as usize
    }

    fn answer(&self) -> StoredAnswer {
        let (content_type, body) = self.bytes.split_at(self.type_len as usize);
        StoredAnswer {
            status: self.status,
            content_type: (!content_type.is_empty())
                .then(|| http::HeaderValue::from_bytes(content_type).ok())
                .flatten(),
            body: bytes::Bytes::copy_from_slice(body),
        }
    }
}

struct Entry {
    hash: u64,
    key: IdemKey,
    fingerprint: [u8; 32],
    /// Nanoseconds after `Caps::epoch`.
    expires: u64,
    /// Bumped when the entry is queued again or freed: a ring's older reference to it is stale.
    generation: u32,
    state: State,
}

/// Entries of one lifetime, in the order queued (so in the order they run out).
struct Ring {
    life: Duration,
    refs: VecDeque<(u32, u32)>,
}

/// The caps shared by every shard (keys and stored body bytes), and the shards' clock.
pub struct Caps {
    pub keys: AtomicUsize,
    pub bytes: AtomicUsize,
    pub max_keys: usize,
    pub max_bytes: usize,
    pub epoch: Instant,
}

impl Caps {
    fn forget(&self, state: &State) {
        if let State::Done(kept) = state {
            self.bytes.fetch_sub(kept.body_len(), Ordering::Relaxed);
        }
    }

    /// `at` plus `life`, in nanoseconds after the epoch.
    fn ns(&self, at: Instant, life: Duration) -> u64 {
        let since = u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        since.saturating_add(u64::try_from(life.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// One shard's keys. Every method takes the key's hash (the store's seeded hasher): the top
/// bits chose the shard, bits 26..58 are the tag, the low bits the home bucket.
pub struct IdemTable {
    buckets: Vec<Bucket>,
    entries: Vec<Entry>,
    free: Vec<u32>,
    rings: Vec<Ring>,
    live: usize,
}

fn tag_of(hash: u64) -> u32 {
    (hash >> 26) as u32
}

impl Default for IdemTable {
    fn default() -> Self {
        IdemTable { buckets: vec![EMPTY_BUCKET; 2], entries: Vec::new(), free: Vec::new(), rings: Vec::new(), live: 0 }
    }
}

impl IdemTable {
    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    fn find(&self, hash: u64, key: &IdemKey) -> Option<usize> {
        let (tag, mask) = (tag_of(hash), self.mask());
        let mut b = hash as usize & mask;
        loop {
            let bucket = &self.buckets[b];
            for i in 0..SLOTS {
                let pos = bucket.pos[i] as usize;
                if bucket.tags[i] == tag && pos != EMPTY as usize && self.entries[pos].key == *key {
                    return Some(pos);
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = (b + 1) & mask;
        }
    }

    fn index_insert(buckets: &mut [Bucket], hash: u64, pos: u32) {
        let mask = buckets.len() - 1;
        let mut b = hash as usize & mask;
        loop {
            let bucket = &mut buckets[b];
            if let Some(i) = bucket.pos.iter().position(|&p| p == EMPTY) {
                bucket.pos[i] = pos;
                bucket.tags[i] = tag_of(hash);
                return;
            }
            bucket.overflow += 1;
            b = (b + 1) & mask;
        }
    }

    fn index_remove(&mut self, hash: u64, pos: u32) {
        let mask = self.mask();
        let home = hash as usize & mask;
        let mut b = home;
        for passed in 0..self.buckets.len() {
            if let Some(i) = self.buckets[b].pos.iter().position(|&p| p == pos) {
                self.buckets[b].pos[i] = EMPTY;
                let mut c = home;
                for _ in 0..passed {
                    self.buckets[c].overflow = self.buckets[c].overflow.saturating_sub(1);
                    c = (c + 1) & mask;
                }
                return;
            }
            b = (b + 1) & mask;
        }
    }

    /// Room in the index for one more key: doubled, and every key placed again, when needed.
    fn reserve_one(&mut self) {
        if (self.live + 1) * 8 <= self.buckets.len() * SLOTS * LOAD_EIGHTHS {
            return;
        }
        let mut buckets = vec![EMPTY_BUCKET; self.buckets.len() * 2];
        for (pos, e) in self.entries.iter().enumerate() {
            if !matches!(e.state, State::Free) {
                Self::index_insert(&mut buckets, e.hash, pos as u32);
            }
        }
        self.buckets = buckets;
    }

    /// Queues the entry at `pos` on the ring of `life` (its older references go stale).
    fn enqueue(&mut self, pos: usize, life: Duration) {
        let e = &mut self.entries[pos];
        e.generation = e.generation.wrapping_add(1);
        let generation = e.generation;
        let ring = self.ring_for(life);
        self.rings[ring].refs.push_back((pos as u32, generation));
    }

    fn ring_for(&mut self, life: Duration) -> usize {
        if let Some(r) = self.rings.iter().position(|r| r.life == life) {
            return r;
        }
        if self.rings.len() < MAX_RINGS {
            self.rings.push(Ring { life, refs: VecDeque::new() });
            return self.rings.len() - 1;
        }
        // More lifetimes than rings: the nearest longer ring, where an entry may wait past its
        // expiry for the ones queued before it (memory, never an answer: `begin` judges by the
        // entry's own expiry); else the longest, whose front it holds back by the difference.
        let longer = self.rings.iter().enumerate().filter(|(_, r)| r.life >= life).min_by_key(|(_, r)| r.life);
        longer.or_else(|| self.rings.iter().enumerate().max_by_key(|(_, r)| r.life)).map_or(0, |(i, _)| i)
    }

    fn free_entry(&mut self, pos: usize, caps: &Caps) {
        let e = &mut self.entries[pos];
        let (hash, state) = (e.hash, std::mem::replace(&mut e.state, State::Free));
        e.generation = e.generation.wrapping_add(1);
        caps.forget(&state);
        drop(state);
        self.index_remove(hash, pos as u32);
        self.free.push(pos as u32);
        self.live -= 1;
        caps.keys.fetch_sub(1, Ordering::Relaxed);
    }

    /// Frees the entries at the rings' fronts that ran out by `now`: `frees` of them at most,
    /// looking at `looks` ring references at most.
    fn reclaim(&mut self, now: Instant, mut looks: usize, mut frees: usize, caps: &Caps) {
        let now = caps.ns(now, Duration::ZERO);
        for r in 0..self.rings.len() {
            while looks > 0 && frees > 0 {
                let Some(&(pos, generation)) = self.rings[r].refs.front() else { break };
                let e = &self.entries[pos as usize];
                if e.generation == generation && !matches!(e.state, State::Free) {
                    if e.expires > now {
                        break;
                    }
                    self.free_entry(pos as usize, caps);
                    frees -= 1;
                }
                self.rings[r].refs.pop_front();
                looks -= 1;
            }
        }
    }

    pub fn begin(
        &mut self,
        hash: u64,
        key: IdemKey,
        fingerprint: [u8; 32],
        lease: Duration,
        now: Instant,
        caps: &Caps,
    ) -> Result<Begin, StoreError> {
        self.reclaim(now, RECLAIM_LOOKS, RECLAIM_FREES, caps);
        let (now, expires) = (caps.ns(now, Duration::ZERO), caps.ns(now, lease));
        if let Some(pos) = self.find(hash, &key) {
            let e = &mut self.entries[pos];
            if e.expires <= now {
                // Run out and not reclaimed yet: the key is free, taken over in place.
                caps.forget(&e.state);
                (e.fingerprint, e.state, e.expires) = (fingerprint, State::InFlight, expires);
                self.enqueue(pos, lease);
                return Ok(Begin::Started);
            }
            if e.fingerprint != fingerprint {
                return Ok(Begin::Mismatch);
            }
            return Ok(match &e.state {
                State::InFlight | State::Free => Begin::InFlight,
                State::Done(kept) => Begin::Done(kept.answer()),
                State::Indeterminate => Begin::Indeterminate,
            });
        }
        if caps.keys.load(Ordering::Relaxed) >= caps.max_keys {
            return Err(StoreError::Full);
        }
        self.reserve_one();
        let entry = Entry { hash, key, fingerprint, expires, generation: 0, state: State::InFlight };
        let pos = match self.free.pop() {
            Some(pos) => {
                let slot = &mut self.entries[pos as usize];
                let generation = slot.generation;
                *slot = Entry { generation, ..entry };
                pos
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        Self::index_insert(&mut self.buckets, hash, pos);
        self.enqueue(pos as usize, lease);
        self.live += 1;
        caps.keys.fetch_add(1, Ordering::Relaxed);
        Ok(Begin::Started)
    }

    /// Settles the attempt of `key` with `fingerprint`, if it is still in flight: `state` for
    /// `life` from `now`. An answer over the byte cap is not kept: the key is held without it
    /// (`Indeterminate`, later attempts get 409) rather than forgotten, and the caller hears
    /// `Full`.
    pub fn settle(
        &mut self,
        (hash, key): (u64, IdemKey),
        fingerprint: [u8; 32],
        state: State,
        life: Duration,
        now: Instant,
        caps: &Caps,
    ) -> Result<(), StoreError> {
        let Some(pos) = self.find(hash, &key) else { return Ok(()) };
        let e = &mut self.entries[pos];
        if e.fingerprint != fingerprint || !matches!(e.state, State::InFlight) {
            return Ok(());
        }
        let mut settled = Ok(());
        e.state = match state {
            State::Done(kept) => {
                let len = kept.body_len();
                if caps.bytes.fetch_add(len, Ordering::Relaxed) + len > caps.max_bytes {
                    caps.bytes.fetch_sub(len, Ordering::Relaxed);
                    settled = Err(StoreError::Full);
                    State::Indeterminate
                } else {
                    State::Done(kept)
                }
            }
            other => other,
        };
        e.expires = caps.ns(now, life);
        self.enqueue(pos, life);
        settled
    }

    /// Frees the key if the attempt with `fingerprint` holds it in flight.
    pub fn release(&mut self, hash: u64, key: IdemKey, fingerprint: [u8; 32], caps: &Caps) {
        let Some(pos) = self.find(hash, &key) else { return };
        let e = &self.entries[pos];
        if e.fingerprint == fingerprint && matches!(e.state, State::InFlight) {
            self.free_entry(pos, caps);
        }
    }

    /// Frees every key that ran out by `now`; returns how many are left.
    pub fn sweep(&mut self, now: Instant, caps: &Caps) -> usize {
        self.reclaim(now, usize::MAX, usize::MAX, caps);
        self.rings.retain(|r| !r.refs.is_empty());
        self.live
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const FP: [u8; 32] = [7; 32];
    const LEASE: Duration = Duration::from_secs(60);

    fn caps() -> Caps {
        let (keys, bytes) = (AtomicUsize::new(0), AtomicUsize::new(0));
        Caps { keys, bytes, max_keys: usize::MAX, max_bytes: usize::MAX, epoch: Instant::now() }
    }

    fn key(i: u32) -> IdemKey {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&i.to_be_bytes());
        IdemKey(k)
    }

    fn done(body: &'static str) -> State {
        State::Done(Kept::new(&StoredAnswer {
            status: 200,
            content_type: None,
            body: bytes::Bytes::from_static(body.as_bytes()),
        }))
    }

    /// Keys that all share one home bucket and one tag: the slab decides, and each overflows.
    #[test]
    fn colliding_keys_overflow_and_are_found_removed_and_placed_again() {
        let (mut t, c, now) = (IdemTable::default(), caps(), Instant::now());
        let hash = 0x5555_0000_0000_0003;
        for i in 0..40 {
            assert_eq!(t.begin(hash, key(i), FP, LEASE, now, &c), Ok(Begin::Started), "key {i}");
        }
        for i in 0..40 {
            assert_eq!(t.begin(hash, key(i), FP, LEASE, now, &c), Ok(Begin::InFlight), "key {i}");
        }
        // Releasing every other key gives back the overflow counts they took.
        for i in (0..40).step_by(2) {
            t.release(hash, key(i), FP, &c);
        }
        assert_eq!((t.live, c.keys.load(Ordering::Relaxed)), (20, 20));
        for i in 0..40 {
            let expect = if i % 2 == 0 { Begin::Started } else { Begin::InFlight };
            assert_eq!(t.begin(hash, key(i), FP, LEASE, now, &c), Ok(expect), "key {i}");
        }
        for i in 0..40 {
            t.release(hash, key(i), FP, &c);
        }
        assert_eq!(t.live, 0);
        assert!(t.buckets.iter().all(|b| b.overflow == 0 && b.pos == [EMPTY; SLOTS]));
    }

    #[test]
    fn the_index_grows_and_every_key_is_still_found() {
        let (mut t, c, now) = (IdemTable::default(), caps(), Instant::now());
        let hash = |i: u32| u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for i in 0..5_000 {
            t.begin(hash(i), key(i), FP, LEASE, now, &c).unwrap();
        }
        assert!(t.buckets.len() >= 5_000 * 8 / (SLOTS * LOAD_EIGHTHS));
        for i in 0..5_000 {
            assert_eq!(t.begin(hash(i), key(i), FP, LEASE, now, &c), Ok(Begin::InFlight));
        }
        assert_eq!(t.begin(hash(9_999), key(9_999), [0; 32], LEASE, now, &c), Ok(Begin::Started));
    }

    #[test]
    fn each_lifetime_runs_out_in_order_and_stale_references_are_dropped() {
        let (mut t, c, t0) = (IdemTable::default(), caps(), Instant::now());
        let (short, long) = (Duration::from_secs(5), Duration::from_secs(86_400));
        for i in 0..10u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            t.begin(u64::from(i), key(i), FP, LEASE, now, &c).unwrap();
            let life = if i % 2 == 0 { short } else { long };
            t.settle((u64::from(i), key(i)), FP, done("{}"), life, now, &c).unwrap();
        }
        assert_eq!(c.bytes.load(Ordering::Relaxed), 20);
        // The long-lived keys do not hold the short-lived ones back.
        assert_eq!(t.sweep(t0 + short + Duration::from_secs(1), &c), 5);
        assert_eq!(c.bytes.load(Ordering::Relaxed), 10);
        assert!(t.rings.iter().all(|r| r.life == long), "the lease ring's references went with their keys");
        // A freed position is taken by the next key, and its old references are stale.
        let now = t0 + short + Duration::from_secs(2);
        assert_eq!(t.begin(100, key(100), FP, LEASE, now, &c), Ok(Begin::Started));
        assert_eq!(t.entries.len(), 10);
        assert_eq!(t.sweep(now + long, &c), 0);
        assert_eq!((c.keys.load(Ordering::Relaxed), c.bytes.load(Ordering::Relaxed)), (0, 0));
    }

    #[test]
    fn more_lifetimes_than_rings_share_them_and_still_run_out() {
        let (mut t, c, t0) = (IdemTable::default(), caps(), Instant::now());
        for i in 0..1_000u32 {
            t.begin(u64::from(i), key(i), FP, LEASE, t0, &c).unwrap();
            t.settle((u64::from(i), key(i)), FP, State::Indeterminate, Duration::from_secs(u64::from(i) + 1), t0, &c)
                .unwrap();
        }
        assert!(t.rings.len() <= MAX_RINGS);
        // Every key is still judged by its own expiry.
        assert_eq!(t.begin(0, key(0), FP, LEASE, t0 + Duration::from_secs(1), &c), Ok(Begin::Started));
        assert_eq!(t.begin(999, key(999), FP, LEASE, t0 + Duration::from_secs(999), &c), Ok(Begin::Indeterminate));
        assert_eq!(t.sweep(t0 + Duration::from_secs(2_000), &c), 0);
    }

    #[test]
    fn each_begin_reclaims_so_a_steady_stream_holds_a_steady_population() {
        let (mut t, c, t0) = (IdemTable::default(), caps(), Instant::now());
        // A new key every millisecond, each kept for 100 ms, and no sweep.
        let life = Duration::from_millis(100);
        for i in 0..5_000u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            t.begin(u64::from(i), key(i), FP, LEASE, now, &c).unwrap();
            t.settle((u64::from(i), key(i)), FP, done("{}"), life, now, &c).unwrap();
        }
        assert!(t.entries.len() <= 102, "{} entries", t.entries.len());
        assert!(t.rings.iter().map(|r| r.refs.len()).sum::<usize>() <= 2 * 102);
        assert_eq!(c.bytes.load(Ordering::Relaxed), 2 * t.live);
    }
}
