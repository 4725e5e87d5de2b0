//! Rate-limiter memory with many distinct client keys (not a criterion bench: it prints RSS).
//!
//! Uses the memory rate store (`MemoryRateStore`) with the limit of a one-route rule file
//! (`key = "ip"`, `rate = "10/s"`, `burst = 20`), checks `KEYS` distinct IPv4 addresses, and
//! reads `VmRSS`/`VmHWM` from `/proc/self/status` before, after the batch, and after a `sweep()`
//! once every bucket has refilled (burst 20 at 10/s: 2 s). Then a second batch of `KEYS` other addresses shows whether the freed memory is
//! reused or the process grows again.
//!
//! `cargo bench --bench ratelimit_rss` runs 1,000,000 keys per batch; `KEYS=N` overrides. Run
//! without `--bench` (e.g. `cargo test --benches`) it does a 10,000-key smoke run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use payguard::guard::rate_limit::{gcra, ip_key};
use payguard::rules::load_sources;
use payguard::state::memory::MemoryRateStore;
use payguard::state::{Gcra, RateDecision};

const RULE: &str = r#"
[[route]]
name = "rl"
match = { path = "/pay/notify" }
rate_limit = { key = "ip", rate = "10/s", burst = 20 }
"#;

#[path = "support/mod.rs"]
mod support;
use support::{mib, status_bytes};

/// (VmRSS, VmHWM) in bytes.
fn mem() -> (u64, u64) {
    (status_bytes("VmRSS:"), status_bytes("VmHWM:"))
}

fn report(label: &str, keys: usize) -> u64 {
    let (rss, hwm) = mem();
    println!("{label:<34} keys {keys:>9}  VmRSS {:>8.1} MiB  VmHWM {:>8.1} MiB", mib(rss), mib(hwm));
    rss
}

/// Checks `count` distinct IPv4 keys starting at `first`; returns ns per check.
fn batch(limiter: &MemoryRateStore, g: Gcra, first: u32, count: u32) -> f64 {
    let start = Instant::now();
    for i in first..first + count {
        // Every first request of a key is within its burst.
        let key = ip_key(IpAddr::V4(Ipv4Addr::from(i)));
        assert_eq!(limiter.check_at(1, key, g, Instant::now()), Ok(RateDecision::Allowed));
    }
    start.elapsed().as_nanos() as f64 / f64::from(count)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let default_keys = if full { 1_000_000 } else { 10_000 };
    let keys: u32 = std::env::var("KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(default_keys);

    let set = load_sources(&[(PathBuf::from("ratelimit.toml"), RULE.to_owned())])
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())
        .unwrap();
    let spec = set.routes()[0].rate_limit.clone().unwrap();
    println!("spec: {spec:?}; {keys} keys per batch");
    let limiter = MemoryRateStore::new(10_000_000);
    let g = gcra(&spec);
    let refill = Duration::from_millis(2_100);

    let base = report("start", limiter.len());
    // 10.0.0.0 onwards, then 20.0.0.0 onwards: disjoint batches.
    let ns1 = batch(&limiter, g, 0x0a00_0000, keys);
    let after1 = report("after batch 1", limiter.len());
    println!("  {ns1:.0} ns per check (insert), {:.1} bytes/key", (after1 - base) as f64 / f64::from(keys));
    std::thread::sleep(refill);
    let t = Instant::now();
    let left = limiter.sweep(Instant::now());
    println!("  sweep: {left} keys left, took {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let evicted1 = report("after evict 1", limiter.len());

    let ns2 = batch(&limiter, g, 0x1400_0000, keys);
    let after2 = report("after batch 2 (new keys)", limiter.len());
    println!(
        "  {ns2:.0} ns per check (insert), RSS growth over post-evict: {:.1} bytes/key",
        (after2.saturating_sub(evicted1)) as f64 / f64::from(keys)
    );
    std::thread::sleep(refill);
    let left = limiter.sweep(Instant::now());
    println!("  sweep: {left} keys left");
    report("after evict 2", limiter.len());

    // Hot path for existing keys: the same keys again, no allocation.
    let ns3 = batch(&limiter, g, 0x1e00_0000, keys.min(100_000));
    let ns3b = batch(&limiter, g, 0x1e00_0000, keys.min(100_000));
    println!("  check of an existing key: {ns3b:.0} ns (first-time insert in that run: {ns3:.0} ns)");
    report("end", limiter.len());
}
