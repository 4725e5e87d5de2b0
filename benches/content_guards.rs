//! What the content guards cost per request on the JSON POST body of
//! `benches/load/content_cost.sh` (a storefront order, eleven string values): the card-number
//! search, the injection search, and libinjection on one value, each alone.
//!
//! Run pinned (see benches/MICRO.md): `taskset -c 1 cargo bench --bench content_guards`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = content_guards
}
criterion_main!(benches);
