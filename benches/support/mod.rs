//! What the memory benchmarks share: this process's memory as the kernel counts it.
// Each benchmark uses part of it.
#![allow(dead_code)]

/// A `/proc/self/status` field given in kB (`"VmRSS:"`), in bytes; 0 when unreadable.
pub fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// VmRSS in bytes.
pub fn rss() -> u64 {
    status_bytes("VmRSS:")
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
