//! One shard of the memory idempotency store, laid out for what a shop's store does most: take
//! a key it has never seen, keep its answer for `retention`, then let it go.
//!
//! - **Entries** live in a slab (`Vec`), one cache line each: key, fingerprint, expiry, state,
//!   and the pointer to the answer. A freed entry's position is the next one taken, so a new key
//!   is written where the key just let go of was: memory already in cache.
//! - **The index** is open-addressed over 64-byte buckets of seven (tag, position) pairs. A
//!   lookup reads one cache line, and the slab only when a tag matches: a new key costs one
//!   random memory access, where a general hash map reads its control bytes and its slot, on
//!   different pages, and a boxed answer on a third. A bucket counts the keys that overflowed
//!   past it (as in folly's F14), so a lookup stops at the first bucket that has none.
//! - **Expiry** needs no scan. Every entry is queued on the ring of its lifetime (the `lease`
//!   while in flight, `retention` once settled); on one ring expiries come in the order queued,
//!   so the ones that ran out are at its front. Each `begin` reclaims a few of them, and the
//!   periodic sweep the rest. A reference left behind by an entry that moved on (settled,
//!   released, reused) is stale by its generation and dropped when it reaches the front. The
//!   generations are an array of their own, 4 bytes per entry, so telling a stale reference
//!   reads no entry.
//! - **Prefetch.** A key's entry and its bucket are cold by the time it runs out: each `begin`
//!   asks the CPU for what the next one will free while it does its own work, and for the new
//!   key's bucket before it reclaims.

use std::collections::VecDeque;
use std::hash::BuildHasher;
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

/// How an attempt is settled.
#[derive(Debug)]
pub enum Settled {
    /// Answered: replayed from now on.
    Done(Kept),
    /// The outcome is unknown: later attempts get 409.
    Indeterminate,
}

/// A stored answer as kept: its status, and its content type and body in one allocation of
/// their size (apart from the buffer the answer was read into, which goes back as soon as the
/// client has it). The allocation starts with the content type's length (4 bytes).
#[derive(Debug)]
pub struct Kept {
    status: u16,
    bytes: Box<[u8]>,
}

impl Kept {
    pub fn new(answer: &StoredAnswer) -> Kept {
        let content_type = answer.content_type.as_ref().map_or(&[][..], |v| v.as_bytes());
        let type_len = u32::try_from(content_type.len()).unwrap_or(0);
        let content_type = &content_type[..type_len as usize];
        let mut bytes = Vec::with_capacity(4 + content_type.len() + answer.body.len());
        bytes.extend_from_slice(&type_len.to_le_bytes());
        bytes.extend_from_slice(content_type);
        bytes.extend_from_slice(&answer.body);
        Kept { status: answer.status, bytes: bytes.into_boxed_slice() }
    }
}

/// The content type's and the body's bytes of a kept answer.
fn kept_parts(bytes: &[u8]) -> (&[u8], &[u8]) {
    let (len, rest) = bytes.split_at(bytes.len().min(4));
    let type_len = <[u8; 4]>::try_from(len).map_or(0, u32::from_le_bytes) as usize;
    rest.split_at(type_len.min(rest.len()))
}

fn body_len(bytes: &[u8]) -> usize {
    kept_parts(bytes).1.len()
}

/// A copy of a kept answer, to replay.
fn stored(status: u16, bytes: Option<&[u8]>) -> StoredAnswer {
    let (content_type, body) = bytes.map_or((&[][..], &[][..]), kept_parts);
    StoredAnswer {
        status,
        content_type: (!content_type.is_empty()).then(|| http::HeaderValue::from_bytes(content_type).ok()).flatten(),
        body: bytes::Bytes::copy_from_slice(body),
    }
}

/// What the store says of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Not a key: a position on the free list.
    Free,
    InFlight,
    /// Answered: `status` and `answer` hold the answer.
    Done,
    Indeterminate,
}

/// The first half of a request's fingerprint: enough to tell two requests with one key apart.
type Fingerprint = [u8; 16];

fn half(fingerprint: &[u8; 32]) -> Fingerprint {
    let mut f = [0; 16];
    f.copy_from_slice(&fingerprint[..16]);
    f
}

/// One key, in one cache line.
#[repr(C, align(64))]
struct Entry {
    key: IdemKey,
    fingerprint: Fingerprint,
    /// Nanoseconds after `Caps::epoch`.
    expires: u64,
    /// `Done`: the answer's content type and body (see [`Kept`]); else none.
    answer: Option<Box<[u8]>>,
    /// `Done`: the answer's status.
    status: u16,
    phase: Phase,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 64);

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
    /// Lets go of the entry's answer, if it has one.
    fn forget(&self, e: &mut Entry) {
        if let Some(answer) = e.answer.take() {
            self.bytes.fetch_sub(body_len(&answer), Ordering::Relaxed);
        }
    }

    /// `at` plus `life`, in nanoseconds after the epoch.
    fn ns(&self, at: Instant, life: Duration) -> u64 {
        let since = u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        since.saturating_add(u64::try_from(life.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// One shard's keys. `hasher` is the store's: the top bits of a key's hash chose the shard,
/// bits 26..58 are its tag, the low bits its home bucket.
pub struct IdemTable<S> {
    hasher: S,
    buckets: Vec<Bucket>,
    entries: Vec<Entry>,
    /// Each entry's generation, bumped when it is queued again or freed: a ring's older
    /// reference to it is stale.
    gens: Vec<u32>,
    free: Vec<u32>,
    rings: Vec<Ring>,
    live: usize,
}

fn tag_of(hash: u64) -> u32 {
    (hash >> 26) as u32
}

/// Asks the CPU to bring `p`'s cache line closer. A hint: it reads nothing the program sees
/// and never faults, whatever `p` is.
#[inline]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 has no architectural effect and does not fault on any address.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl<S: BuildHasher> IdemTable<S> {
    pub fn new(hasher: S) -> Self {
        IdemTable {
            hasher,
            buckets: vec![EMPTY_BUCKET; 2],
            entries: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            rings: Vec::new(),
            live: 0,
        }
    }

    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    fn home(&self, hash: u64) -> &Bucket {
        &self.buckets[hash as usize & self.mask()]
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
            if e.phase != Phase::Free {
                Self::index_insert(&mut buckets, self.hasher.hash_one(e.key), pos as u32);
            }
        }
        self.buckets = buckets;
    }

    /// Queues the entry at `pos` on the ring of `life` (its older references go stale).
    fn enqueue(&mut self, pos: usize, life: Duration) {
        let generation = self.gens[pos].wrapping_add(1);
        self.gens[pos] = generation;
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
        let hash = self.hasher.hash_one(self.entries[pos].key);
        let e = &mut self.entries[pos];
        caps.forget(e);
        e.phase = Phase::Free;
        self.gens[pos] = self.gens[pos].wrapping_add(1);
        self.index_remove(hash, pos as u32);
        self.free.push(pos as u32);
        self.live -= 1;
        caps.keys.fetch_sub(1, Ordering::Relaxed);
    }

    /// Frees the entries at the rings' fronts that ran out by `now`: `frees` of them at most,
    /// looking at `looks` ring references at most. A reference of the entry's generation is its
    /// latest (a free entry's generation moved on when it was freed).
    fn reclaim(&mut self, now: Instant, mut looks: usize, mut frees: usize, caps: &Caps) {
        let now = caps.ns(now, Duration::ZERO);
        for r in 0..self.rings.len() {
            while looks > 0 && frees > 0 {
                let Some(&(pos, generation)) = self.rings[r].refs.front() else { break };
                if self.gens[pos as usize] == generation {
                    if self.entries[pos as usize].expires > now {
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

    /// Asks the CPU for what the next `begin` is likely to free: on each ring, the entry of the
    /// second live reference, and the bucket and answer of the first (whose entry the last
    /// call asked for, or this call read to see it had not run out).
    fn prefetch_next(&self) {
        for ring in &self.rings {
            // A few references: a long run of stale ones is popped by the next reclaim anyway.
            let mut live = ring.refs.iter().take(4).filter(|&&(pos, generation)| self.gens[pos as usize] == generation);
            if let Some(&(first, _)) = live.next() {
                let e = &self.entries[first as usize];
                prefetch(self.home(self.hasher.hash_one(e.key)));
                if let Some(answer) = &e.answer {
                    prefetch(answer.as_ptr());
                }
            }
            if let Some(&(second, _)) = live.next() {
                prefetch(&self.entries[second as usize]);
            }
        }
    }

    pub fn begin(
        &mut self,
        key: IdemKey,
        fingerprint: &[u8; 32],
        lease: Duration,
        now: Instant,
        caps: &Caps,
    ) -> Result<Begin, StoreError> {
        let (hash, fingerprint) = (self.hasher.hash_one(key), half(fingerprint));
        prefetch(self.home(hash));
        self.reclaim(now, RECLAIM_LOOKS, RECLAIM_FREES, caps);
        self.prefetch_next();
        let (now, expires) = (caps.ns(now, Duration::ZERO), caps.ns(now, lease));
        if let Some(pos) = self.find(hash, &key) {
            let e = &mut self.entries[pos];
            if e.expires <= now {
                // Run out and not reclaimed yet: the key is free, taken over in place.
                caps.forget(e);
                (e.fingerprint, e.phase, e.expires) = (fingerprint, Phase::InFlight, expires);
                self.enqueue(pos, lease);
                return Ok(Begin::Started);
            }
            if e.fingerprint != fingerprint {
                return Ok(Begin::Mismatch);
            }
            return Ok(match e.phase {
                Phase::InFlight | Phase::Free => Begin::InFlight,
                Phase::Done => Begin::Done(stored(e.status, e.answer.as_deref())),
                Phase::Indeterminate => Begin::Indeterminate,
            });
        }
        if caps.keys.load(Ordering::Relaxed) >= caps.max_keys {
            return Err(StoreError::Full);
        }
        self.reserve_one();
        let entry = Entry { key, fingerprint, expires, answer: None, status: 0, phase: Phase::InFlight };
        let pos = match self.free.pop() {
            Some(pos) => {
                self.entries[pos as usize] = entry;
                pos
            }
            None => {
                self.entries.push(entry);
                self.gens.push(0);
                (self.entries.len() - 1) as u32
            }
        };
        Self::index_insert(&mut self.buckets, hash, pos);
        self.enqueue(pos as usize, lease);
        self.live += 1;
        caps.keys.fetch_add(1, Ordering::Relaxed);
        Ok(Begin::Started)
    }

    /// Settles the attempt of `key` with `fingerprint`, if it is still in flight: `how` for
    /// `life` from `now`. An answer over the byte cap is not kept: the key is held without it
    /// (`Indeterminate`, later attempts get 409) rather than forgotten, and the caller hears
    /// `Full`.
    pub fn settle(
        &mut self,
        key: IdemKey,
        fingerprint: &[u8; 32],
        how: Settled,
        life: Duration,
        now: Instant,
        caps: &Caps,
    ) -> Result<(), StoreError> {
        let Some(pos) = self.find(self.hasher.hash_one(key), &key) else { return Ok(()) };
        let e = &mut self.entries[pos];
        if e.fingerprint != half(fingerprint) || e.phase != Phase::InFlight {
            return Ok(());
        }
        let mut settled = Ok(());
        e.phase = Phase::Indeterminate;
        if let Settled::Done(kept) = how {
            let len = body_len(&kept.bytes);
            if caps.bytes.fetch_add(len, Ordering::Relaxed) + len > caps.max_bytes {
                caps.bytes.fetch_sub(len, Ordering::Relaxed);
                settled = Err(StoreError::Full);
            } else {
                (e.phase, e.status, e.answer) = (Phase::Done, kept.status, Some(kept.bytes));
            }
        }
        e.expires = caps.ns(now, life);
        self.enqueue(pos, life);
        settled
    }

    /// Frees the key if the attempt with `fingerprint` holds it in flight.
    pub fn release(&mut self, key: IdemKey, fingerprint: &[u8; 32], caps: &Caps) {
        let Some(pos) = self.find(self.hasher.hash_one(key), &key) else { return };
        let e = &self.entries[pos];
        if e.fingerprint == half(fingerprint) && e.phase == Phase::InFlight {
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
    use foldhash::quality::RandomState;
    use std::hash::BuildHasherDefault;

    const FP: [u8; 32] = [7; 32];
    const LEASE: Duration = Duration::from_secs(60);

    fn caps() -> Caps {
        let (keys, bytes) = (AtomicUsize::new(0), AtomicUsize::new(0));
        Caps { keys, bytes, max_keys: usize::MAX, max_bytes: usize::MAX, epoch: Instant::now() }
    }

    /// Hashes every key alike: one home bucket and one tag for all.
    #[derive(Default)]
    struct Same;

    impl std::hash::Hasher for Same {
        fn finish(&self) -> u64 {
            0x5555_0000_0000_0003
        }

        fn write(&mut self, _: &[u8]) {}
    }

    fn key(i: u32) -> IdemKey {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&i.to_be_bytes());
        IdemKey(k)
    }

    fn done(body: &'static str) -> Settled {
        Settled::Done(Kept::new(&StoredAnswer {
            status: 200,
            content_type: None,
            body: bytes::Bytes::from_static(body.as_bytes()),
        }))
    }

    #[test]
    fn a_kept_answer_comes_back_as_it_was_stored() {
        let json = StoredAnswer {
            status: 201,
            content_type: Some(http::HeaderValue::from_static("application/json")),
            body: bytes::Bytes::from_static(b"{\"id\":1}"),
        };
        let bare = StoredAnswer { status: 500, content_type: None, body: bytes::Bytes::new() };
        for answer in [json, bare] {
            let kept = Kept::new(&answer);
            assert_eq!(body_len(&kept.bytes), answer.body.len());
            assert_eq!(stored(kept.status, Some(&kept.bytes)), answer);
        }
    }

    /// Keys that all share one home bucket and one tag: the slab decides, and each overflows.
    #[test]
    fn colliding_keys_overflow_and_are_found_removed_and_placed_again() {
        let (mut t, c, now) = (IdemTable::new(BuildHasherDefault::<Same>::default()), caps(), Instant::now());
        for i in 0..40 {
            assert_eq!(t.begin(key(i), &FP, LEASE, now, &c), Ok(Begin::Started), "key {i}");
        }
        for i in 0..40 {
            assert_eq!(t.begin(key(i), &FP, LEASE, now, &c), Ok(Begin::InFlight), "key {i}");
        }
        // Releasing every other key gives back the overflow counts they took.
        for i in (0..40).step_by(2) {
            t.release(key(i), &FP, &c);
        }
        assert_eq!((t.live, c.keys.load(Ordering::Relaxed)), (20, 20));
        for i in 0..40 {
            let expect = if i % 2 == 0 { Begin::Started } else { Begin::InFlight };
            assert_eq!(t.begin(key(i), &FP, LEASE, now, &c), Ok(expect), "key {i}");
        }
        for i in 0..40 {
            t.release(key(i), &FP, &c);
        }
        assert_eq!(t.live, 0);
        assert!(t.buckets.iter().all(|b| b.overflow == 0 && b.pos == [EMPTY; SLOTS]));
    }

    #[test]
    fn the_index_grows_and_every_key_is_still_found() {
        let (mut t, c, now) = (IdemTable::new(RandomState::default()), caps(), Instant::now());
        for i in 0..5_000 {
            t.begin(key(i), &FP, LEASE, now, &c).unwrap();
        }
        assert!(t.buckets.len() >= 5_000 * 8 / (SLOTS * LOAD_EIGHTHS));
        for i in 0..5_000 {
            assert_eq!(t.begin(key(i), &FP, LEASE, now, &c), Ok(Begin::InFlight));
        }
        assert_eq!(t.begin(key(9_999), &[0; 32], LEASE, now, &c), Ok(Begin::Started));
    }

    #[test]
    fn each_lifetime_runs_out_in_order_and_stale_references_are_dropped() {
        let (mut t, c, t0) = (IdemTable::new(RandomState::default()), caps(), Instant::now());
        let (short, long) = (Duration::from_secs(5), Duration::from_secs(86_400));
        for i in 0..10u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            t.begin(key(i), &FP, LEASE, now, &c).unwrap();
            let life = if i % 2 == 0 { short } else { long };
            t.settle(key(i), &FP, done("{}"), life, now, &c).unwrap();
        }
        assert_eq!(c.bytes.load(Ordering::Relaxed), 20);
        // The long-lived keys do not hold the short-lived ones back.
        assert_eq!(t.sweep(t0 + short + Duration::from_secs(1), &c), 5);
        assert_eq!(c.bytes.load(Ordering::Relaxed), 10);
        assert!(t.rings.iter().all(|r| r.life == long), "the lease ring's references went with their keys");
        // A freed position is taken by the next key, and its old references are stale.
        let now = t0 + short + Duration::from_secs(2);
        assert_eq!(t.begin(key(100), &FP, LEASE, now, &c), Ok(Begin::Started));
        assert_eq!(t.entries.len(), 10);
        assert_eq!(t.sweep(now + long, &c), 0);
        assert_eq!((c.keys.load(Ordering::Relaxed), c.bytes.load(Ordering::Relaxed)), (0, 0));
    }

    #[test]
    fn more_lifetimes_than_rings_share_them_and_still_run_out() {
        let (mut t, c, t0) = (IdemTable::new(RandomState::default()), caps(), Instant::now());
        for i in 0..1_000u32 {
            t.begin(key(i), &FP, LEASE, t0, &c).unwrap();
            t.settle(key(i), &FP, Settled::Indeterminate, Duration::from_secs(u64::from(i) + 1), t0, &c).unwrap();
        }
        assert!(t.rings.len() <= MAX_RINGS);
        // Every key is still judged by its own expiry.
        assert_eq!(t.begin(key(0), &FP, LEASE, t0 + Duration::from_secs(1), &c), Ok(Begin::Started));
        assert_eq!(t.begin(key(999), &FP, LEASE, t0 + Duration::from_secs(999), &c), Ok(Begin::Indeterminate));
        assert_eq!(t.sweep(t0 + Duration::from_secs(2_000), &c), 0);
    }

    #[test]
    fn each_begin_reclaims_so_a_steady_stream_holds_a_steady_population() {
        let (mut t, c, t0) = (IdemTable::new(RandomState::default()), caps(), Instant::now());
        // A new key every millisecond, each kept for 100 ms, and no sweep.
        let life = Duration::from_millis(100);
        for i in 0..5_000u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            t.begin(key(i), &FP, LEASE, now, &c).unwrap();
            t.settle(key(i), &FP, done("{}"), life, now, &c).unwrap();
        }
        assert!(t.entries.len() <= 102, "{} entries", t.entries.len());
        assert!(t.rings.iter().map(|r| r.refs.len()).sum::<usize>() <= 2 * 102);
        assert_eq!(c.bytes.load(Ordering::Relaxed), 2 * t.live);
    }
}
