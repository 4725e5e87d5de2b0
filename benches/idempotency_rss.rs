//! Idempotency store memory with many stored answers (not a criterion bench: it prints RSS).
//!
//! Stores `KEYS` answers of 1 KiB in the memory idempotency store the way `[route.idempotency]`
//! does (a 32-hex-digit key per order, begin then complete) and reads `VmRSS` before and after:
//! the bytes per stored key. Then it shows the two bounds: a store whose answer bytes are spent
//! holds a key without its answer (later attempts get 409), and one whose keys are spent refuses
//! new keys (the route's `on_state_error`). Last, a sweep after the retention reclaims every key.
//!
//! `cargo bench --bench idempotency_rss` stores 100,000 answers; `KEYS=N` overrides. Run without
//! `--bench` (e.g. `cargo test --benches`) it does a 1,000-key smoke run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use http::HeaderMap;
use payguard::guard::idempotency::stored_key;
use payguard::rules::KeyScope;
use payguard::state::memory::MemoryIdempotencyStore;
use payguard::state::{Begin, IdemKey, StoreError, StoredAnswer};

const ANSWER: usize = 1024;

#[path = "support/mod.rs"]
mod support;
use support::{mib, rss};

fn key(i: u32) -> IdemKey {
    let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i % 65_536)));
    stored_key("checkout", &KeyScope::Ip, ip, &HeaderMap::new(), format!("ord_{i:016x}").as_bytes())
}

fn answer(i: u32) -> StoredAnswer {
    let mut body = vec![b' '; ANSWER];
    let id = format!("{{\"order_id\":\"ord_{i:016x}\",\"status\":\"paid\"}}");
    body[..id.len()].copy_from_slice(id.as_bytes());
    StoredAnswer {
        status: 200,
        content_type: Some(http::HeaderValue::from_static("application/json")),
        body: body.into(),
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let keys: u32 =
        std::env::var("KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(if full { 100_000 } else { 1_000 });
    let (lease, retention) = (Duration::from_secs(60), Duration::from_secs(86_400));
    let t0 = Instant::now();

    // The keys are made first, so RSS counts only what the store keeps; each answer is made
    // as the guard makes it (its own bytes) and left to the store.
    let made: Vec<IdemKey> = (0..keys).map(key).collect();
    let store = MemoryIdempotencyStore::new(usize::MAX, usize::MAX);
    let before = rss();
    let start = Instant::now();
    for (i, k) in made.iter().enumerate() {
        let fp = [i as u8; 32];
        assert_eq!(store.begin_at(*k, fp, lease, t0), Ok(Begin::Started));
        store.complete_at(*k, fp, answer(i as u32), retention, t0).unwrap();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(keys);
    let after = rss();
    let per_key = after.saturating_sub(before) as f64 / f64::from(keys);
    println!(
        "{keys} keys with {ANSWER}-byte answers: VmRSS {:.1} -> {:.1} MiB, {per_key:.0} bytes per key ({ANSWER} of them the answer), {ns:.0} ns per begin + complete",
        mib(before),
        mib(after),
    );
    // A replay hands out the stored answer without copying its body.
    let start = Instant::now();
    for (i, k) in made.iter().enumerate() {
        assert!(matches!(store.begin_at(*k, [i as u8; 32], lease, t0), Ok(Begin::Done(_))));
    }
    println!("{:.0} ns per replay lookup", start.elapsed().as_nanos() as f64 / f64::from(keys));

    // The bounds. Answer bytes: a quarter of the answers fit; the rest are held without one.
    let bytes_cap = (keys as usize / 4) * ANSWER;
    let capped = MemoryIdempotencyStore::new(usize::MAX, bytes_cap);
    let mut held = 0;
    for (i, k) in made.iter().enumerate() {
        let fp = [i as u8; 32];
        capped.begin_at(*k, fp, lease, t0).unwrap();
        if capped.complete_at(*k, fp, answer(i as u32), retention, t0) == Err(StoreError::Full) {
            held += 1;
            assert_eq!(capped.begin_at(*k, fp, lease, t0), Ok(Begin::Indeterminate));
        }
    }
    assert!(capped.stored_bytes() <= bytes_cap);
    println!(
        "max_idempotency_bytes = {bytes_cap}: {} bytes stored, {held} keys held without their answer",
        capped.stored_bytes()
    );
    // Keys: past the cap a new key is refused (on_state_error), a known one still answers.
    let key_cap = (keys / 2) as usize;
    let few = MemoryIdempotencyStore::new(key_cap, usize::MAX);
    let refused =
        made.iter().enumerate().filter(|(i, k)| few.begin_at(**k, [*i as u8; 32], lease, t0).is_err()).count();
    assert_eq!(refused, keys as usize - key_cap);
    println!("max_idempotency_keys = {key_cap}: {refused} new keys refused");

    // Expired keys are reclaimed: after the retention, a sweep leaves nothing.
    drop((capped, few));
    let left = store.sweep(t0 + retention + Duration::from_secs(1));
    assert_eq!((left, store.stored_bytes()), (0, 0));
    println!("after the retention a sweep leaves {left} keys and 0 answer bytes; VmRSS {:.1} MiB", mib(rss()));
}
