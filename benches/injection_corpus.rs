//! Detection and false-positive rates of `[route.injection]`'s detector over libinjection's own
//! corpus (`data/` of github.com/libinjection/libinjection, not shipped with the crate): SQLi
//! files (`sqli-*.txt`) must be caught as SQLi or XSS, XSS files (`xss-*.txt`) likewise, and
//! `false_positives.txt` (benign text) must pass. Lines are read the way libinjection's own
//! `reader` reads them: `#` comments and blank lines skipped, then URL-decoded.
//!
//! It also holds the SQLi pre-check to its promise over the same lines (each as written and
//! decoded): whatever [`may_be_sqli`] lets skip libinjection, libinjection passes. It stops
//! with the first line that breaks this.
//!
//! `LIBINJECTION_DATA=/path/to/libinjection/data cargo bench --bench injection_corpus`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use payguard::guard::injection::{detect, may_be_sqli};

/// libinjection's `modp_url_decode`: `+` is a space, `%XX` with two hex digits a byte.
fn url_decode(s: &[u8]) -> Vec<u8> {
    let hex = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let (mut out, mut i) = (Vec::with_capacity(s.len()), 0);
    while i < s.len() {
        match s[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (s.get(i + 1).copied().and_then(hex), s.get(i + 2).copied().and_then(hex)) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn main() {
    let Ok(dir) = std::env::var("LIBINJECTION_DATA") else {
        println!("LIBINJECTION_DATA is not set: nothing to measure (see the header of benches/injection_corpus.rs)");
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    // (lines, flagged) per class
    let mut sqli = (0usize, 0usize);
    let mut xss = (0usize, 0usize);
    let mut benign = (0usize, 0usize);
    let mut fp_examples = Vec::new();
    // (values looked at, skipped by the pre-check)
    let mut prechecked = (0usize, 0usize);
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let class = if name.starts_with("sqli-") {
            &mut sqli
        } else if name.starts_with("xss-") {
            &mut xss
        } else if name == "false_positives.txt" {
            &mut benign
        } else {
            continue;
        };
        for line in std::fs::read(&path).unwrap().split(|&b| b == b'\n') {
            let line = line.trim_ascii_end();
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            let value = url_decode(line);
            for v in [line, &value[..]] {
                prechecked.0 += 1;
                if !may_be_sqli(v) {
                    prechecked.1 += 1;
                    let sqli = libinjectionrs::detect_sqli(v);
                    assert!(
                        !sqli.is_injection(),
                        "{:?} skipped by the pre-check, flagged by libinjection",
                        String::from_utf8_lossy(v)
                    );
                }
            }
            class.0 += 1;
            if let Some(found) = detect(&value) {
                class.1 += 1;
                if name == "false_positives.txt" && fp_examples.len() < 10 {
                    fp_examples.push((String::from_utf8_lossy(&value).into_owned(), found));
                }
            }
        }
    }
    let pct = |(n, k): (usize, usize)| if n == 0 { 0.0 } else { 100.0 * k as f64 / n as f64 };
    println!("| corpus | values | flagged | rate |");
    println!("|---|---|---|---|");
    println!("| SQL injection (sqli-*.txt) | {} | {} | {:.2}% caught |", sqli.0, sqli.1, pct(sqli));
    println!("| XSS (xss-*.txt) | {} | {} | {:.2}% caught |", xss.0, xss.1, pct(xss));
    println!("| benign (false_positives.txt) | {} | {} | {:.2}% false positives |", benign.0, benign.1, pct(benign));
    for (v, f) in fp_examples {
        println!("flagged benign: {v:?} {f:?}");
    }
    println!(
        "SQLi pre-check: {} of {} values (as written and decoded) skipped libinjection, which passes every one of them",
        prechecked.1, prechecked.0
    );
}
