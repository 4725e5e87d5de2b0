//! Fuzz target: the harness is `common/decoding.rs` (shared with the corpus replay in
//! `tests/fuzz_corpus.rs`), which documents the input format and the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod common;

fuzz_target!(|data: &[u8]| common::decoding::run(data));
