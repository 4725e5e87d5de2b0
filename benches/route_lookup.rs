//! Route lookup cost versus rule-set size.
//!
//! Builds rule sets of 10, 100 and 1000 routes (a quarter each: host-less exact paths,
//! host-less `/*` prefixes, host-specific exact paths, host-specific prefixes, spread over 8
//! hosts) through `rules::load_sources`, and times `RuleSet::route` for exact hits, deep prefix
//! hits (the path is several segments below the prefix) and misses. The router promises a
//! bounded number of hash probes whatever the route count, so ns/lookup should stay flat.
//!
//! Run pinned (see benches/MICRO.md): `taskset -c 1 cargo bench --bench route_lookup`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::Method;
use payguard::rules::{load_sources, RouteLookup, RuleSet};

const SIZES: [usize; 3] = [10, 100, 1000];
const HOSTS: usize = 8;

fn host(i: usize) -> String {
    format!("h{}.example.com", i % HOSTS)
}

/// Route `i` of the generated set, by kind `i % 4`.
fn route_toml(i: usize) -> String {
    let m = match i % 4 {
        0 => format!("path = \"/api/svc{i}/v1/items\", methods = [\"GET\", \"POST\"]"),
        1 => format!("path = \"/api/svc{i}/v2/*\""),
        2 => format!("path = \"/tenant/t{i}/pay/notify\", host = \"{}\", methods = [\"POST\"]", host(i)),
        _ => format!("path = \"/partner/p{i}/*\", host = \"{}\"", host(i)),
    };
    format!("[[route]]\nname = \"r{i}\"\nmatch = {{ {m} }}\n")
}

fn rule_set(n: usize) -> RuleSet {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&route_toml(i));
    }
    let set = load_sources(&[(PathBuf::from("bench.toml"), text)])
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(set.routes().len(), n);
    set
}

/// The index of the route of `kind` nearest the middle of an `n`-route set.
fn middle(n: usize, kind: usize) -> usize {
    (n / 2) / 4 * 4 + kind
}

struct Case {
    name: &'static str,
    host: Option<String>,
    path: String,
    method: Method,
    /// Expected route name; `None` = NoRoute.
    expect: Option<String>,
}

fn cases(n: usize) -> Vec<Case> {
    let e = middle(n, 0);
    let p = middle(n, 1);
    let he = middle(n, 2);
    let hp = middle(n, 3);
    vec![
        Case {
            name: "exact_hit",
            host: Some("shop.example.com".into()),
            path: format!("/api/svc{e}/v1/items"),
            method: Method::POST,
            expect: Some(format!("r{e}")),
        },
        Case {
            name: "host_exact_hit",
            host: Some(format!("{}:443", host(he))),
            path: format!("/tenant/t{he}/pay/notify"),
            method: Method::POST,
            expect: Some(format!("r{he}")),
        },
        Case {
            name: "deep_prefix_hit",
            host: Some("shop.example.com".into()),
            path: format!("/api/svc{p}/v2/orders/ord_123/items/456/refunds/789"),
            method: Method::GET,
            expect: Some(format!("r{p}")),
        },
        Case {
            name: "host_deep_prefix_hit",
            host: Some(host(hp)),
            path: format!("/partner/p{hp}/a/b/c/d/e/f"),
            method: Method::GET,
            expect: Some(format!("r{hp}")),
        },
        Case {
            name: "miss",
            host: Some(host(1)),
            path: "/api/unknown/v2/orders/ord_123/items/456".into(),
            method: Method::GET,
            expect: None,
        },
        Case {
            name: "miss_no_host",
            host: None,
            path: "/static/css/site.css".into(),
            method: Method::GET,
            expect: None,
        },
    ]
}

fn check(set: &RuleSet, c: &Case) {
    let got = match set.route(c.host.as_deref(), &c.path, &c.method) {
        RouteLookup::Matched(r) => Some(r.name.to_string()),
        RouteLookup::MethodNotAllowed(r) => panic!("{}: 405 at {}", c.name, r.name),
        RouteLookup::NoRoute => None,
    };
    let mut msg = String::new();
    let _ = write!(msg, "{} ({} routes)", c.name, set.routes().len());
    assert_eq!(got, c.expect, "{msg}");
}

fn bench(c: &mut Criterion) {
    let sets: Vec<(usize, RuleSet)> = SIZES.iter().map(|&n| (n, rule_set(n))).collect();
    for case_name in ["exact_hit", "host_exact_hit", "deep_prefix_hit", "host_deep_prefix_hit", "miss", "miss_no_host"]
    {
        let mut group = c.benchmark_group(format!("route_lookup/{case_name}"));
        group.throughput(Throughput::Elements(1));
        for (n, set) in &sets {
            let all = cases(*n);
            let case = all.iter().find(|k| k.name == case_name).unwrap();
            check(set, case);
            group.bench_with_input(BenchmarkId::from_parameter(n), case, |b, case| {
                b.iter(|| {
                    let found = set.route(black_box(case.host.as_deref()), black_box(&case.path), &case.method);
                    black_box(matches!(found, RouteLookup::Matched(_)))
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
