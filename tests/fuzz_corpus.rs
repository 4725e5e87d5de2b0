//! Replays every committed fuzz seed (`fuzz/corpus/<target>/*`) through the same harness
//! function the cargo-fuzz target calls (`fuzz/fuzz_targets/common/<target>.rs`), on stable
//! Rust and without sanitizers, so a seed that once crashed a target (and every other seed)
//! keeps passing. The libFuzzer replay with AddressSanitizer is `fuzz/replay.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "../fuzz/fuzz_targets/common/mod.rs"]
mod common;

type Harness = fn(&[u8]);

/// Every target with its harness; each must have a committed corpus.
const TARGETS: &[(&str, Harness)] = &[
    ("rules_parser", common::rules_parser::run),
    ("config_parser", common::config_parser::run),
    ("client_ip", common::client_ip::run),
    ("path_normalize", common::path_normalize::run),
    ("signature_headers", common::signature_headers::run),
    ("form_and_json_validation", common::form_and_json_validation::run),
    ("service", common::service::run),
    ("service_h2", common::service::run_h2),
    ("card_scan", common::card_scan::run),
    ("origin", common::origin::run),
    ("decoding", common::decoding::run),
];

fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every seed of `target`; returns how many, and panics naming every seed that failed.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let files = seeds(target);
    assert!(files.len() >= 5, "{target}: only {} seeds in fuzz/corpus/{target}", files.len());
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if std::env::var_os("PAYGUARD_FUZZ_DEBUG").is_some() {
            eprintln!("{target}: {}", file.display());
        }
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: {} seed(s) fail:\n{}", failed.len(), failed.join("\n"));
    files.len()
}

#[test]
fn every_target_has_a_corpus_and_harness() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut dirs: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    dirs.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_string()).collect();
    names.sort();
    assert_eq!(dirs, names, "fuzz/corpus/* and the replayed targets differ");
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml")).unwrap();
    for name in &names {
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{name} is not a fuzz target in fuzz/Cargo.toml");
    }
}

#[test]
fn rules_parser_corpus() {
    replay("rules_parser", common::rules_parser::run);
}

#[test]
fn config_parser_corpus() {
    replay("config_parser", common::config_parser::run);
}

#[test]
fn client_ip_corpus() {
    replay("client_ip", common::client_ip::run);
}

#[test]
fn path_normalize_corpus() {
    replay("path_normalize", common::path_normalize::run);
}

#[test]
fn signature_headers_corpus() {
    replay("signature_headers", common::signature_headers::run);
}

#[test]
fn form_and_json_validation_corpus() {
    replay("form_and_json_validation", common::form_and_json_validation::run);
}

/// Both service targets share one stack and one runtime: replayed in one test, one input at
/// a time (the harness compares backend and payguard request counts per input).
#[test]
fn service_corpora() {
    replay("service", common::service::run);
    replay("service_h2", common::service::run_h2);
}

/// The service target's response checks can fail: each bad answer below is caught.
#[test]
fn service_response_checks_catch_bad_answers() {
    let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let json = |id: &str| format!(r#"{{"error":"ip_denied","message":"m","rule":"admin","request_id":"{id}"}}"#);
    let answer = |status: &str, headers: &str, body: &str| {
        format!("HTTP/1.1 {status}\r\n{headers}content-length: {}\r\n\r\n{body}", body.len()).into_bytes()
    };
    let good = [
        answer("403 Forbidden", "content-type: application/json\r\nx-request-id: r1\r\n", &json("r1")),
        answer("400 Bad Request", "", ""),
        answer("404 Not Found", "x-backend: fuzz\r\nx-request-id: r2\r\n", "plain text from the backend"),
        [answer("200 OK", "x-request-id: r3\r\n", "ok"), answer("431 Request Header Fields Too Large", "", "")]
            .concat(),
    ];
    for out in &good {
        common::service::check_h1(input, out);
    }
    let bad = [
        answer("999 Nope", "", ""),
        answer("403 Forbidden", "x-request-id: r1\r\n", "forbidden"),
        answer("403 Forbidden", "content-type: application/json\r\nx-request-id: r1\r\n", &json("other")),
        answer("403 Forbidden", "content-type: application/json\r\nx-request-id: r1\r\n", r#"{"request_id":"r1"}"#),
        answer("401 Unauthorized", "", ""),
        b"not http at all".to_vec(),
        [answer("200 OK", "x-request-id: r3\r\n", "ok"), answer("502 Bad Gateway", "x-request-id: r4\r\n", "")]
            .concat(),
    ];
    for out in &bad {
        let caught = catch_unwind(|| common::service::check_h1(input, out)).is_err();
        assert!(caught, "accepted: {:?}", String::from_utf8_lossy(out));
    }
}

#[test]
fn card_scan_corpus() {
    replay("card_scan", common::card_scan::run);
}

#[test]
fn origin_corpus() {
    replay("origin", common::origin::run);
}

#[test]
fn decoding_corpus() {
    replay("decoding", common::decoding::run);
}
