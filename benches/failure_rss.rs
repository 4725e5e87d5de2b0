//! Failure-limit store memory with many distinct keys (not a criterion bench: it prints RSS).
//!
//! Counts one failure (threshold 5, so no ban) for `KEYS` distinct client IPs in the memory
//! failure store, the way `[[route.failure_limit]] key = "ip"` does, and reads `VmRSS` before and
//! after: the bytes per tracked key. Then it bans a tenth of them (5 failures each) and sweeps
//! once the lone failures have left their window, to show what a sweep gives back.
//!
//! `cargo bench --bench failure_rss` tracks 1,000,000 keys; `KEYS=N` overrides. Run without
//! `--bench` (e.g. `cargo test --benches`) it does a 10,000-key smoke run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use payguard::guard::failure_limit::key_label;
use payguard::guard::rate_limit::ip_key;
use payguard::rules::FailureKey;
use payguard::state::memory::MemoryFailureStore;
use payguard::state::FailurePolicy;

#[path = "support/mod.rs"]
mod support;
use support::{mib, rss};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let keys: u32 =
        std::env::var("KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(if full { 1_000_000 } else { 10_000 });
    let policy = FailurePolicy {
        threshold: 5,
        window: Duration::from_secs(600),
        ban: Duration::from_secs(900),
        ban_factor: 2,
        max_ban: Duration::from_secs(86_400),
    };
    let store = MemoryFailureStore::new(usize::MAX);
    let t0 = Instant::now();
    let label = |ip: IpAddr| format!("checkout|{}", key_label(&FailureKey::Ip, ip_key(ip), ip));

    let before = rss();
    let start = Instant::now();
    for i in 0..keys {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        assert_eq!(store.fail_at(1, ip_key(ip), &label(ip), policy, t0), Ok(None));
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(keys);
    let after = rss();
    let per_key = after.saturating_sub(before) as f64 / f64::from(keys);
    println!(
        "{keys} keys with one failure each: VmRSS {:.1} -> {:.1} MiB, {per_key:.0} bytes per key, {ns:.0} ns per failure",
        mib(before),
        mib(after)
    );

    // A tenth of them fail four more times: banned.
    for i in (0..keys).step_by(10) {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        for _ in 0..3 {
            store.fail_at(1, ip_key(ip), &label(ip), policy, t0).unwrap();
        }
        assert!(store.fail_at(1, ip_key(ip), &label(ip), policy, t0).unwrap().is_some());
    }
    let banned = rss();
    // The lone failures leave their window after 10 minutes; the bans stay.
    let left = store.sweep(t0 + Duration::from_secs(601));
    println!(
        "{} banned: VmRSS {:.1} MiB; after the sweep {left} keys remain, VmRSS {:.1} MiB",
        keys.div_ceil(10),
        mib(banned),
        mib(rss())
    );
    assert_eq!(left, keys.div_ceil(10) as usize);
}
