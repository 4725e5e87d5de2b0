//! Card-number scanning speed (issue #15's targets: ≥ 1 GiB/s on bodies without digits,
//! ≥ 200 MiB/s on digit-dense JSON). Three 64 KiB bodies: JSON text without a digit, an order
//! list dense with numbers (ids, amounts, dates, phone numbers; no card number), and the same
//! with a card number every 4 KiB. Each case checks what it finds before it is timed.
//!
//! Run pinned (see benches/MICRO.md): `taskset -c 1 cargo bench --bench card_scan`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use payguard::card::{find_all, Scanner};

const SIZE: usize = 64 * 1024;

fn fill(unit: impl Fn(usize) -> String) -> Vec<u8> {
    let mut out = String::with_capacity(SIZE + 512);
    let mut i = 0;
    while out.len() < SIZE {
        out.push_str(&unit(i));
        i += 1;
    }
    out.truncate(SIZE);
    out.into_bytes()
}

fn bodies() -> Vec<(&'static str, Vec<u8>, usize)> {
    let words = fill(|_| {
        "{\"customer\":{\"name\":\"Ana O'Brien\",\"email\":\"ana@example.com\",\"note\":\"leave at the door\"},\"currency\":\"EUR\"},".into()
    });
    let dense = fill(|i| {
        format!(
            "{{\"order_id\":{},\"amount\":{},\"created\":\"2026-12-0{}T10:{:02}:00Z\",\"phone\":\"+49 30 {:08}\",\"sku\":\"{}-{}\"}},",
            2_000_000_000 + i * 7919,
            1250 + i,
            1 + i % 9,
            i % 60,
            i * 31,
            i % 1000,
            i % 97
        )
    });
    let cards = fill(|i| {
        if i % 40 == 39 {
            "{\"note\":\"card 4111 1111 1111 1111\"},".into()
        } else {
            format!("{{\"order_id\":{},\"amount\":{},\"qty\":{}}},", 2_000_000_000 + i * 7919, 1250 + i, i % 7)
        }
    });
    let expect_cards = find_all(&cards).len();
    vec![("no_digits", words, 0), ("digit_dense_json", dense, 0), ("json_with_cards", cards, expect_cards)]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("card_scan");
    for (name, body, expected) in bodies() {
        assert_eq!(find_all(&body).len(), expected, "{name}");
        assert!(name != "json_with_cards" || expected > 10);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0;
                let mut s = Scanner::new();
                s.feed(black_box(&body), |_| n += 1);
                s.finish(|_| n += 1);
                n
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
