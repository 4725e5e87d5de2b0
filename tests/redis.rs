//! Shared state on a real Redis: several payguard instances behind one load balancer see the
//! same replay keys and count one rate limit together; an unreachable Redis is handled per
//! route (`on_state_error`) and payguard recovers by itself when Redis returns.
//!
//! Each test starts its own `redis-server` (no persistence) on 127.0.0.1 and kills it at the end;
//! without `redis-server` installed they fail and say what to install.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hmac::{Hmac, Mac};
use payguard::state::redis::RedisStore;
use payguard::state::{Gcra, NonceStore, RateDecision, RateStore};
use sha2::Sha256;

const SECRET: &str = "redis-test-secret";
const RATE: f64 = 20.0;
const BURST: f64 = 20.0;

const RULES: &str = r#"
[[route]]
name = "cb"
match = { path = "/cb/*", methods = ["POST"] }
[route.signature]
provider = "hmac"
secrets = ["file:hook.secret"]

[[route]]
name = "limited"
match = { path = "/rl" }
rate_limit = { key = "route", rate = "20/s", burst = 20 }

[[route]]
name = "limited-closed"
match = { path = "/rlc" }
rate_limit = { key = "route", rate = "20/s", burst = 20 }
on_state_error = { rate_limit = "fail_closed" }
"#;

/// Two payguard instances sharing one Redis and one backend, like two nodes behind an L4
/// load balancer.
struct Pair {
    redis: RedisServer,
    backend: Backend,
    a: Proxy,
    b: Proxy,
    ca: reqwest::Client,
    cb: reqwest::Client,
    _rules: tempfile::TempDir,
}

async fn pair() -> Pair {
    let redis = RedisServer::start().await;
    let backend = Backend::start().await;
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("hook.secret"), SECRET).unwrap();
    std::fs::write(rules.path().join("routes.toml"), RULES).unwrap();
    let extra = format!("[rules]\ndir = \"{}\"\n\n{}", rules.path().display(), redis.state_config());
    let a = start_proxy_with_rules(backend.addr, &extra, &[]).await;
    let b = start_proxy_with_rules(backend.addr, &extra, &[]).await;
    let (ca, cb) = (h1_client(&a.cert), h1_client(&b.cert));
    Pair { redis, backend, a, b, ca, cb, _rules: rules }
}

fn signed(c: &reqwest::Client, p: &Proxy, body: &str) -> reqwest::RequestBuilder {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    c.post(p.url("/cb/paid")).header("x-hub-signature-256", format!("sha256={sig}")).body(body.to_string())
}

async fn status_and_error(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body = res.bytes().await.unwrap();
    let error = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, error)
}

async fn healthz(p: &Proxy) -> serde_json::Value {
    json(admin_get(p.admin, "/healthz").await).await
}

fn gauge(metrics: &str, name: &str) -> Option<i64> {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn fail_open_count(metrics: &str, route: &str) -> u64 {
    let label = format!("payguard_decisions_total{{route=\"{route}\",guard=\"rate_limit\",decision=\"fail_open\"}}");
    metrics.lines().find_map(|l| l.strip_prefix(&label)?.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn replay_store_contract_holds_for_memory_and_redis() {
    nonce_store_contract(Arc::new(payguard::state::memory::MemoryNonceStore::new(1000)), "memory").await;
    let redis = RedisServer::start().await;
    let store = Arc::new(RedisStore::new(&[redis.url()], false, Duration::from_millis(500)).unwrap());
    nonce_store_contract(store.clone(), "redis").await;
    // Keys are namespaced, and what is left carries a TTL.
    let mut c = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut c).await.unwrap();
    assert!(!keys.is_empty() && keys.iter().all(|k| k.starts_with("payguard:replay:redis|")), "{keys:?}");
    for k in keys {
        let ttl: i64 = redis::cmd("PTTL").arg(&k).query_async(&mut c).await.unwrap();
        assert!(ttl > 0, "{k} has no TTL ({ttl})");
    }
    // A second store object (another instance) sees the same keys.
    let other = RedisStore::new(&[redis.url()], false, Duration::from_millis(500)).unwrap();
    assert_eq!(other.reserve("redis|a", Duration::from_secs(60)).await, Ok(payguard::state::Reservation::Taken));
}

#[tokio::test]
async fn idempotency_store_contract_holds_for_memory_and_redis() {
    let memory = payguard::state::memory::MemoryIdempotencyStore::new(1000, 1 << 20);
    idempotency_store_contract(Arc::new(memory), "memory").await;
    let redis = RedisServer::start().await;
    let store = Arc::new(RedisStore::new(&[redis.url()], false, Duration::from_millis(500)).unwrap());
    idempotency_store_contract(store.clone(), "redis").await;
    // Namespaced, and everything left carries a TTL.
    let mut c = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut c).await.unwrap();
    // One hash per key, named by the key's digest (32 hex digits), never by the key itself.
    let named = |k: &String| {
        k.strip_prefix("payguard:idem:").is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    assert!(!keys.is_empty() && keys.iter().all(named), "{keys:?}");
    for k in keys {
        let ttl: i64 = redis::cmd("PTTL").arg(&k).query_async(&mut c).await.unwrap();
        assert!(ttl > 0, "{k} has no TTL ({ttl})");
    }
    // Another instance sees the answered key.
    let other = RedisStore::new(&[redis.url()], false, Duration::from_millis(500)).unwrap();
    let seen =
        payguard::state::IdempotencyStore::begin(&other, idem_key("redis", "a"), [0xa; 32], Duration::from_secs(60))
            .await;
    assert!(matches!(seen, Ok(payguard::state::Begin::Done(_))), "{seen:?}");
}

#[tokio::test]
async fn failure_store_contract_holds_for_memory_and_redis() {
    failure_store_contract(Arc::new(payguard::state::memory::MemoryFailureStore::new(1000))).await;
    let redis = RedisServer::start().await;
    let store = Arc::new(RedisStore::new(&[redis.url()], false, Duration::from_millis(500)).unwrap());
    failure_store_contract(store.clone()).await;
    // One key's state sits in one hash slot, and everything left carries a TTL.
    let mut c = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("payguard:fl:{*").query_async(&mut c).await.unwrap();
    assert!(!keys.is_empty());
    for k in keys {
        assert!(k.contains('{') && k.contains('}'), "{k} has no hash tag");
        let ttl: i64 = redis::cmd("PTTL").arg(&k).query_async(&mut c).await.unwrap();
        assert!(ttl > 0, "{k} has no TTL ({ttl})");
    }
    // Another instance sees the ban.
    let other = RedisStore::new(&[redis.url()], false, Duration::from_millis(500)).unwrap();
    assert!(payguard::state::FailureStore::banned(&other, 3, 3).await.unwrap().is_some());
}

#[tokio::test]
async fn gcra_on_redis_decides_like_the_memory_limiter() {
    let redis = RedisServer::start().await;
    let spec = payguard::rules::RateLimitSpec {
        key: payguard::rules::RateKey::Route,
        rate: payguard::units::Rate { count: 1, per: Duration::from_secs(3600) },
        burst: 5,
    };
    let memory = payguard::state::memory::MemoryRateStore::new(1_000);
    let gcra = payguard::guard::rate_limit::gcra(&spec);
    assert_eq!(gcra, Gcra { emission_interval: Duration::from_secs(3600), burst: 5 });
    let store = RedisStore::new(&[redis.url()], false, Duration::from_millis(500)).unwrap();
    for i in 0..8 {
        let mem = memory.check(0, 0, gcra).await.unwrap() == RateDecision::Allowed;
        let shared = store.check(0x7, 0, gcra).await.unwrap();
        assert_eq!(mem, shared == RateDecision::Allowed, "request {i}: memory {mem}, redis {shared:?}");
        if let RateDecision::Limited { retry_after } = shared {
            // The next cell comes one emission interval after the first.
            assert!(
                retry_after > Duration::from_secs(3590) && retry_after <= Duration::from_secs(3600),
                "{retry_after:?}"
            );
        }
    }
    // The key expires when its bucket would be full again: at most burst × T from now.
    let mut c = redis.connection().await;
    let key = format!("payguard:rl:{:016x}:{:032x}", 0x7, 0);
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut c).await.unwrap();
    assert!(ttl > 0 && ttl <= 5 * 3_600_000, "{ttl}");

    // Several instances (store objects, each with its own connection) racing on one bucket:
    // exactly `burst` cells are handed out.
    let stores: Vec<Arc<RedisStore>> =
        (0..4).map(|_| Arc::new(RedisStore::new(&[redis.url()], false, Duration::from_secs(2)).unwrap())).collect();
    let gcra = Gcra { emission_interval: Duration::from_secs(3600), burst: 50 };
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = stores[i % stores.len()].clone();
            tokio::spawn(async move { s.check(0x8, 0, gcra).await.unwrap() == RateDecision::Allowed })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    assert_eq!(allowed, 50);

    // A refilled bucket: 1000/s with burst 1 allows again after a millisecond or so.
    let fast = Gcra { emission_interval: Duration::from_millis(1), burst: 1 };
    assert_eq!(store.check(0x9, 0, fast).await.unwrap(), RateDecision::Allowed);
    let store = &store;
    let ok = eventually(Duration::from_secs(5), || async move {
        store.check(0x9, 0, fast).await.unwrap() == RateDecision::Allowed
    })
    .await;
    assert!(ok);
}

#[tokio::test]
async fn callback_accepted_by_one_instance_is_a_replay_on_the_other() {
    let p = pair().await;
    let body = "{\"event\":\"paid\",\"order\":\"A-1001\"}";
    let res = signed(&p.ca, &p.a, body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(p.backend.count(), 1);
    let (status, error) = status_and_error(signed(&p.cb, &p.b, body).send().await.unwrap()).await;
    assert_eq!((status, error.as_str()), (401, "replay"));
    // And back on A too; the backend saw it once.
    let (status, error) = status_and_error(signed(&p.ca, &p.a, body).send().await.unwrap()).await;
    assert_eq!((status, error.as_str()), (401, "replay"));
    assert_eq!(p.backend.count(), 1);

    // A callback the backend refused is released: the provider's retry passes on the other
    // instance.
    let body = "{\"event\":\"paid\",\"order\":\"A-1002\"}";
    let res = p.ca.post(p.a.url("/cb/status/500")).header("x-hub-signature-256", {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    });
    assert_eq!(res.body(body).send().await.unwrap().status(), 500);
    assert_eq!(signed(&p.cb, &p.b, body).send().await.unwrap().status(), 200);

    // Reserve + commit per accepted callback, and the key is namespaced.
    let mut c = p.redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("payguard:replay:*").query_async(&mut c).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("payguard:replay:cb|hmac|")), "{keys:?}");
    p.a.stop().await;
    p.b.stop().await;
}

#[tokio::test]
async fn one_rate_limit_is_enforced_across_two_instances() {
    let p = pair().await;
    // Connections (TLS handshakes) first, on a path without a limit, so the measured window
    // holds only rate-limited requests.
    assert_eq!(p.ca.get(p.a.url("/warm")).send().await.unwrap().status(), 200);
    assert_eq!(p.cb.get(p.b.url("/warm")).send().await.unwrap().status(), 200);
    let evalsha_before = p.redis.calls("evalsha").await;

    let (mut ok, mut limited, mut sent) = ([0u32; 2], [0u32; 2], 0u64);
    let mut retry_after_seen = false;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let i = (sent % 2) as usize;
        let (c, proxy) = if i == 0 { (&p.ca, &p.a) } else { (&p.cb, &p.b) };
        let res = c.get(proxy.url("/rl")).send().await.unwrap();
        sent += 1;
        match res.status().as_u16() {
            200 => ok[i] += 1,
            429 => {
                limited[i] += 1;
                let h = res.headers();
                let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=2).contains(&retry), "{retry}");
                assert_eq!(h["ratelimit-limit"], "20");
                assert_eq!(h["ratelimit-remaining"], "0");
                retry_after_seen = true;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = f64::from(ok[0] + ok[1]);
    let expected = BURST + RATE * elapsed;
    eprintln!(
        "{sent} requests in {elapsed:.3}s: accepted {accepted} (A {}, B {}), limited {} (A {}, B {}), expected {expected:.1}",
        ok[0],
        ok[1],
        limited[0] + limited[1],
        limited[0],
        limited[1]
    );
    assert!(accepted <= expected * 1.1, "accepted {accepted} > 1.1 × {expected:.1}");
    assert!(accepted >= expected * 0.9, "accepted {accepted} < 0.9 × {expected:.1}");
    // Both instances admitted and refused: the bucket is shared, not split.
    assert!(ok[0] > 0 && ok[1] > 0 && limited[0] > 0 && limited[1] > 0, "{ok:?} {limited:?}");
    assert!(retry_after_seen);
    // One round trip (one EVALSHA) per rate-limited request; the first EVALSHA to a fresh
    // server answers NOSCRIPT once (then SCRIPT LOAD), hence at most one extra per instance.
    let evalsha = p.redis.calls("evalsha").await - evalsha_before;
    assert!((sent..=sent + 2).contains(&evalsha), "{evalsha} EVALSHA for {sent} requests");
    p.a.stop().await;
    p.b.stop().await;
}

#[tokio::test]
async fn redis_outage_follows_on_state_error_and_recovers_without_restart() {
    let Pair { mut redis, backend, a, b, ca, cb, _rules } = pair().await;
    // References, so the polling closures below can copy them.
    let (pa, pb, ca, cb) = (&a, &b, &ca, &cb);
    let n = std::sync::atomic::AtomicU64::new(0);
    let fresh = || format!("{{\"event\":\"paid\",\"n\":{}}}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));

    // Normal: accepted once, replay refused, limit enforced.
    let body = fresh();
    assert_eq!(signed(ca, pa, &body).send().await.unwrap().status(), 200);
    assert_eq!(status_and_error(signed(cb, pb, &body).send().await.unwrap()).await.1, "replay");
    assert_eq!(healthz(pa).await["state"], serde_json::json!({"backend": "redis", "ok": true}));
    assert_eq!(gauge(&pa.metrics().await, "payguard_state_store_up"), Some(1));

    // Redis goes away.
    redis.stop();
    let closed = eventually(Duration::from_secs(10), || async move {
        status_and_error(signed(ca, pa, &fresh()).send().await.unwrap()).await == (503, "state_unavailable".to_string())
    })
    .await;
    assert!(closed, "the replay route (fail_closed) must answer 503 state_unavailable while Redis is down");
    // Fail closed on the other instance too, and never forwarded.
    let before = backend.count();
    assert_eq!(
        status_and_error(signed(cb, pb, &fresh()).send().await.unwrap()).await,
        (503, "state_unavailable".to_string())
    );
    assert_eq!(backend.count(), before);
    // The rate-limited route fails open: more than a burst passes, all 200.
    for _ in 0..(BURST as usize + 10) {
        assert_eq!(ca.get(pa.url("/rl")).send().await.unwrap().status(), 200);
    }
    let m = pa.metrics().await;
    assert!(fail_open_count(&m, "limited") >= BURST as u64 + 10, "{m}");
    // A route that chose fail_closed for its limit refuses.
    assert_eq!(
        status_and_error(cb.get(pb.url("/rlc")).send().await.unwrap()).await,
        (503, "state_unavailable".to_string())
    );
    // Reported by /healthz and the gauge; /readyz does not fail because of Redis.
    let down = eventually(Duration::from_secs(5), || async move {
        healthz(pb).await["state"]["ok"] == false && gauge(&pb.metrics().await, "payguard_state_store_up") == Some(0)
    })
    .await;
    assert!(down, "healthz/state_store_up must report the outage");
    assert_eq!(admin_get(pb.admin, "/readyz").await.status(), 200);

    // Redis returns (empty, same port): back to normal with no restart of payguard.
    redis.restart().await;
    let body = fresh();
    let body = body.as_str();
    let back =
        eventually(
            Duration::from_secs(15),
            || async move { signed(ca, pa, body).send().await.unwrap().status() == 200 },
        )
        .await;
    assert!(back, "payguard must reconnect by itself when Redis returns");
    assert_eq!(status_and_error(signed(cb, pb, body).send().await.unwrap()).await.1, "replay");
    let limited = eventually(Duration::from_secs(10), || async move {
        let mut statuses = Vec::new();
        for _ in 0..(BURST as usize + 5) {
            statuses.push(cb.get(pb.url("/rl")).send().await.unwrap().status().as_u16());
        }
        statuses.contains(&429)
    })
    .await;
    assert!(limited, "the shared limit must apply again");
    let up = eventually(Duration::from_secs(5), || async move {
        healthz(pa).await["state"]["ok"] == true && gauge(&pa.metrics().await, "payguard_state_store_up") == Some(1)
    })
    .await;
    assert!(up);
    a.stop().await;
    b.stop().await;
}

/// `[state] redis_password` (from a file) authenticates to a Redis that requires a password,
/// with none written into `redis_url`; without it the store is unavailable and the routes'
/// on_state_error applies.
#[tokio::test]
async fn redis_password_from_a_file_authenticates() {
    let backend = Backend::start().await;
    let redis = RedisServer::start().await;
    let password = format!("pw-{:032x}", fastrand::u128(..));
    let mut admin = redis.connection().await;
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("requirepass").arg(&password).query_async(&mut admin).await.unwrap();
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("hook.secret"), SECRET).unwrap();
    std::fs::write(rules.path().join("routes.toml"), RULES).unwrap();
    std::fs::write(rules.path().join("redis.password"), format!("{password}\n")).unwrap();
    let state = |with_password: bool| {
        let line = if with_password {
            format!("redis_password = \"file:{}\"\n", rules.path().join("redis.password").display())
        } else {
            String::new()
        };
        format!("[rules]\ndir = \"{}\"\n\n{}timeout = \"200ms\"\n{line}", rules.path().display(), redis.state_config())
    };
    let p = start_proxy_with_rules(backend.addr, &state(true), &[]).await;
    let c = h1_client(&p.cert);
    assert!(eventually(Duration::from_secs(5), || async { healthz(&p).await["state"]["ok"] == true }).await);
    assert_eq!(signed(&c, &p, "{\"pw\":1}").send().await.unwrap().status(), 200);
    assert_eq!(status_and_error(signed(&c, &p, "{\"pw\":1}").send().await.unwrap()).await, (401, "replay".into()));
    p.stop().await;

    let p = start_proxy_with_rules(backend.addr, &state(false), &[]).await;
    let c = h1_client(&p.cert);
    assert_eq!(healthz(&p).await["state"]["ok"], false);
    assert_eq!(
        status_and_error(signed(&c, &p, "{\"pw\":2}").send().await.unwrap()).await,
        (503, "state_unavailable".into())
    );
    p.stop().await;
}

#[tokio::test]
async fn payguard_starts_while_redis_is_down_and_reports_it() {
    let backend = Backend::start().await;
    let port = closed_port().await.port();
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("hook.secret"), SECRET).unwrap();
    std::fs::write(rules.path().join("routes.toml"), RULES).unwrap();
    let extra = format!(
        "[rules]\ndir = \"{}\"\n\n[state]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}\"\ntimeout = \"100ms\"\n",
        rules.path().display()
    );
    let p = start_proxy_with_rules(backend.addr, &extra, &[]).await;
    let c = h1_client(&p.cert);
    assert_eq!(healthz(&p).await["state"], serde_json::json!({"backend": "redis", "ok": false}));
    assert_eq!(admin_get(p.admin, "/readyz").await.status(), 200);
    assert_eq!(gauge(&p.metrics().await, "payguard_state_store_up"), Some(0));
    let started = Instant::now();
    assert_eq!(status_and_error(signed(&c, &p, "{}").send().await.unwrap()).await, (503, "state_unavailable".into()));
    assert_eq!(c.get(p.url("/rl")).send().await.unwrap().status(), 200);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    p.stop().await;
}

#[tokio::test]
async fn redis_cluster_backend_shares_replay_keys_and_limits() {
    let nodes = redis_cluster(3).await;
    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let store = Arc::new(RedisStore::new(&urls, true, Duration::from_secs(1)).unwrap());
    nonce_store_contract(store.clone(), "cluster").await;
    // Keys of one route land on different nodes (no hash tag), and a second client (another
    // instance, seeded with one node only) sees them.
    let other = RedisStore::new(&urls[2..], true, Duration::from_secs(1)).unwrap();
    for i in 0..30 {
        let key = format!("cb|hmac|{i}");
        assert_eq!(store.reserve(&key, Duration::from_secs(60)).await, Ok(payguard::state::Reservation::Reserved));
        assert_eq!(other.reserve(&key, Duration::from_secs(60)).await, Ok(payguard::state::Reservation::Taken));
    }
    let mut holding = 0;
    for n in &nodes {
        let keys: i64 = redis::cmd("DBSIZE").query_async(&mut n.connection().await).await.unwrap();
        holding += usize::from(keys > 0);
    }
    assert!(holding >= 2, "keys should spread over the cluster's nodes");
    // GCRA through the cluster: exactly `burst` cells, shared by both clients.
    let gcra = Gcra { emission_interval: Duration::from_secs(3600), burst: 7 };
    let mut allowed = 0;
    for i in 0..20 {
        let s: &RedisStore = if i % 2 == 0 { &store } else { &other };
        allowed += usize::from(s.check(0xa, 0, gcra).await.unwrap() == RateDecision::Allowed);
    }
    assert_eq!(allowed, 7);
    // Failure counts and bans: one script over three keys, in one hash slot.
    failure_store_contract(store.clone()).await;
    // Idempotency keys: one script over one key.
    idempotency_store_contract(store.clone(), "cluster").await;
    assert!(payguard::state::FailureStore::banned(&other, 3, 3).await.unwrap().is_some());
    assert!(store.ping().await.is_ok());
}
