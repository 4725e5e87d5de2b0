//! The memory idempotency store's cost per first attempt by how many keys it holds (not a
//! criterion bench: it prints ns). Each step is what one first attempt does to the store: a
//! `begin` of a new key, the `complete` of its answer, and its share of the sweep that drops
//! expired keys. The table is filled to `POPULATION` first, and every new key pushes one old
//! key past its expiry, so the population holds steady.
//!
//! `cargo bench --bench idempotency_store` runs populations 1,000, 100,000 and 600,000 (the
//! steady population of `benches/load/idempotency_cost.sh`); `POPULATION=N` picks one. Run
//! without `--bench` it does a 1,000-key smoke run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use http::HeaderMap;
use payguard::guard::idempotency::stored_key;
use payguard::rules::KeyScope;
use payguard::state::memory::MemoryIdempotencyStore;
use payguard::state::{Begin, IdemKey, StoredAnswer};

// As in the binary: the allocator changes what a miss costs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn key(i: u64) -> IdemKey {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    stored_key("idem", &KeyScope::Ip, ip, &HeaderMap::new(), format!("order-{i}").as_bytes())
}

fn answer() -> StoredAnswer {
    StoredAnswer {
        status: 200,
        content_type: Some(http::HeaderValue::from_static("application/json")),
        body: bytes::Bytes::copy_from_slice(br#"{"ok":true}"#),
    }
}

fn run(population: u64, attempts: u64) {
    let keys: Vec<IdemKey> = (0..population + attempts).map(key).collect();
    let store = MemoryIdempotencyStore::new(usize::MAX, usize::MAX);
    let (t0, lease, tick) = (Instant::now(), Duration::from_secs(60), Duration::from_micros(1));
    let ticks = |n: u64| tick * u32::try_from(n).expect("fits");
    // Key i arrives at tick i and is kept for `population` ticks: each new key outlives the
    // oldest by one tick.
    let retention = ticks(population);
    for (i, k) in keys.iter().take(population as usize).enumerate() {
        let (fp, now) = ([1; 32], t0 + ticks(i as u64));
        assert_eq!(store.begin_at(*k, fp, lease, now), Ok(Begin::Started));
        store.complete_at(*k, fp, answer(), retention, now).unwrap();
    }
    let sweep_every = (population / 4).max(1);
    let (mut begin, mut sweep) = (Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    for j in 0..attempts {
        let k = keys[(population + j) as usize];
        let now = t0 + ticks(population + j);
        let t = Instant::now();
        assert_eq!(store.begin_at(k, [1; 32], lease, now), Ok(Begin::Started));
        begin += t.elapsed();
        store.complete_at(k, [1; 32], answer(), retention, now).unwrap();
        if j % sweep_every == 0 {
            let t = Instant::now();
            store.sweep(now);
            sweep += t.elapsed();
        }
    }
    let per = |d: Duration| d.as_nanos() as f64 / attempts as f64;
    println!(
        "{population} keys: {:.0} ns per first attempt (begin {:.0}, sweep {:.0} per key), {} keys held",
        per(start.elapsed()),
        per(begin),
        per(sweep),
        store.sweep(t0 + ticks(population + attempts)),
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let chosen: Option<u64> = std::env::var("POPULATION").ok().and_then(|v| v.parse().ok());
    let populations = match chosen {
        Some(p) => vec![p],
        None if full => vec![1_000, 100_000, 600_000],
        None => vec![1_000],
    };
    let attempts = if full { 2_000_000 } else { 10_000 };
    for p in populations {
        run(p, attempts);
    }
}
