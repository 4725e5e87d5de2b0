//! What the content guards cost per request on the JSON POST body of
//! `benches/load/content_cost.sh` (a storefront order, eleven string values): the card-number
//! search, the injection search, and libinjection on one value, each alone; and what decoding a
//! compressed answer for the card scan costs (a backend that ignores the removed
//! `accept-encoding`), per 64 KiB of JSON.
//!
//! Run pinned (see benches/MICRO.md): `taskset -c 1 cargo bench --bench content_guards`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use std::io::Write as _;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use payguard::card::Masker;
use payguard::decoding::{Coding, Decoder, Pull};
use payguard::guard::{card_data, injection};

const BODY: &[u8] = br#"{"amount":1250,"currency":"EUR","order":"A-1029-55","customer":{"name":"Ana O'Brien","email":"ana@example.com"},"shipping":{"line1":"Flat 3 #12, 221B Baker St.","city":"London","zip":"NW1 6XE"},"note":"leave at the door","items":[{"sku":"TS-42","qty":2,"price":625}]}"#;
const JSON: Option<&[u8]> = Some(b"application/json");

fn content_guards(c: &mut Criterion) {
    assert!(card_data::in_request(None, JSON, BODY).is_none());
    assert!(injection::in_request(None, JSON, BODY, None).is_none());
    c.bench_function("card_data/order", |b| b.iter(|| card_data::in_request(None, JSON, black_box(BODY))));
    c.bench_function("injection/order", |b| b.iter(|| injection::in_request(None, JSON, black_box(BODY), None)));
    for value in ["EUR", "Ana O'Brien", "Flat 3 #12, 221B Baker St.", "leave at the door"] {
        c.bench_function(&format!("libinjection/sqli/{value}"), |b| {
            b.iter(|| libinjectionrs::detect_sqli(black_box(value.as_bytes())).is_injection())
        });
        c.bench_function(&format!("libinjection/xss/{value}"), |b| {
            b.iter(|| libinjectionrs::detect_xss(black_box(value.as_bytes())).is_injection())
        });
    }
}

/// Decodes `encoded` and masks it as the card-answer guard does; the decoded length.
fn decode_and_mask(coding: Coding, encoded: &Bytes) -> usize {
    let (mut decoder, mut masker, mut out) = (Decoder::new(coding), Masker::json(), 0);
    decoder.push(encoded.clone());
    decoder.end();
    while let Ok(Pull::Data(piece)) = decoder.pull() {
        out += masker.push_bytes(piece).map_or(0, |b| b.len());
    }
    out + masker.finish().map_or(0, |b| b.len())
}

fn decoding(c: &mut Criterion) {
    let mut json = String::new();
    while json.len() < 64 * 1024 {
        json.push_str(
            r#"{"order":"A-1029-55","customer":{"name":"Ana O'Brien","email":"ana@example.com"},"amount":1250},"#,
        );
    }
    let gzip = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(json.as_bytes()).unwrap();
        Bytes::from(e.finish().unwrap())
    };
    let br = {
        let mut out = Vec::new();
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
        w.write_all(json.as_bytes()).unwrap();
        drop(w);
        Bytes::from(out)
    };
    let mut group = c.benchmark_group("decode_and_mask");
    group.throughput(Throughput::Bytes(json.len() as u64));
    for (name, coding, encoded) in [("gzip", Coding::Gzip, gzip), ("br", Coding::Br, br)] {
        assert_eq!(decode_and_mask(coding, &encoded), json.len());
        group.bench_function(name, |b| b.iter(|| decode_and_mask(coding, black_box(&encoded))));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = content_guards, decoding
}
criterion_main!(benches);
