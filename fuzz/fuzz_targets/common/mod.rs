//! The readable request format shared by the structured targets, so that seeds are plain text
//! and a mutated header stays a header:
//!
//! ```text
//! first line             <- target-specific (request target, query string, peer address...)
//! Name: value            <- header lines ("\n" or "\r\n"); repeated names are kept
//! ...
//!                        <- empty line
//! body bytes             <- everything after, raw
//! ```
//!
//! Each structured target puts a fixed-size block of knobs, decoded with `arbitrary`, in front of this.

use http::{HeaderMap, HeaderName, HeaderValue};

// One harness per fuzz target: `run(data)` is what the target calls on every input, and what
// `tests/fuzz_corpus.rs` calls on every committed seed.
pub mod card_scan;
pub mod client_ip;
pub mod config_parser;
pub mod decoding;
pub mod form_and_json_validation;
pub mod origin;
pub mod path_normalize;
pub mod rules_parser;
pub mod service;
pub mod signature_headers;

#[allow(dead_code)] // not every target reads every part
pub struct Text {
    pub first_line: String,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}

pub fn parse(rest: &[u8]) -> Text {
    let (head, body) = match find(rest, b"\n\n") {
        Some(at) => (&rest[..at], &rest[at + 2..]),
        None => match find(rest, b"\r\n\r\n") {
            Some(at) => (&rest[..at], &rest[at + 4..]),
            None => (rest, &[][..]),
        },
    };
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let headers = lines
        .filter_map(|l| {
            let at = l.iter().position(|&b| b == b':')?;
            let value = &l[at + 1..];
            let value = value.strip_prefix(b" ").unwrap_or(value);
            Some((l[..at].to_vec(), value.to_vec()))
        })
        .collect();
    Text { first_line, headers, body: body.to_vec() }
}

/// Header lines as a `HeaderMap`; names or values `http` rejects are skipped (hyper never
/// hands such a request to the proxy).
pub fn header_map(headers: &[(Vec<u8>, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else { continue };
        map.append(name, value);
    }
    map
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
