//! Fuzz target: the harness is `common/service.rs` (shared with the corpus replay in
//! `tests/fuzz_corpus.rs`), which documents the input format and the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod common;

/// libFuzzer's `main` is not Rust's, so SIGPIPE keeps its default action (terminate): a write
/// to a socket the backend already closed would kill the fuzzer. payguard's own `main` ignores
/// it, as every Rust binary does.
fn ignore_sigpipe() {
    // SAFETY: sets a signal disposition to SIG_IGN before any thread uses the signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

fuzz_target!(init: ignore_sigpipe(), |data: &[u8]| common::service::run_h2(data));
