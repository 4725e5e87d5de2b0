//! `[route.idempotency]` through the real proxy: real TLS, HTTP/1.1 and HTTP/2 clients, a real
//! hyper backend that counts what reaches it, and a real `redis-server` shared by two instances.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const RULES: &str = r#"
[[route]]
name = "pay"
match = { path = "/pay/*", methods = ["POST"] }
[route.idempotency]
key = "header:idempotency-key"

[[route]]
name = "orders"
match = { path = "/orders/*", methods = ["POST"] }
[route.idempotency]
key = "json:/order_id"
scope = "header:authorization"
on_timeout = "release"
lease = "10s"
"#;

async fn post(c: &reqwest::Client, p: &Proxy, path: &str, key: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = c.post(p.url(path)).header("content-type", "application/json").body(body.to_owned());
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    req.send().await.unwrap()
}

/// Status, the replay mark and the body.
async fn answer(res: reqwest::Response) -> (u16, bool, String) {
    let status = res.status().as_u16();
    let replayed = res.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    (status, replayed, res.text().await.unwrap())
}

/// Whether 19 of 20 concurrent attempts were answered (within 10 s): all but the one at the
/// backend's gate.
async fn all_but_one_answered(finished: &Arc<AtomicUsize>) -> bool {
    eventually(Duration::from_secs(10), || {
        let f = finished.clone();
        async move { f.load(Ordering::SeqCst) == 19 }
    })
    .await
}

/// Like `start_proxy_with_rules`, with `[upstream] response_timeout` set.
async fn start_with_timeout(backend: std::net::SocketAddr, timeout: &str, rules: &[(&str, &str)]) -> Proxy {
    let _ = tracing_subscriber::fmt().with_env_filter("payguard=debug").with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let path = write_config(dir.path(), &cert, backend, "", rules);
    let cfg = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, cfg.replace("response_timeout = \"10s\"", &format!("response_timeout = \"{timeout}\"")))
        .unwrap();
    let config = payguard::config::Config::load(Some(&path)).unwrap();
    let running = payguard::start(config).await.unwrap();
    let (addr, admin) = (running.addr, running.admin_addr.unwrap());
    Proxy { running: Some(running), addr, admin, dir, cert }
}

#[tokio::test]
async fn a_repeated_request_is_answered_from_the_store_and_a_different_one_refused() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("pay.toml", RULES)]).await;
    let (h1, h2) = (h1_client(&proxy.cert), h2_client(&proxy.cert));
    let body = r#"{"amount":1250,"currency":"EUR"}"#;

    let first = answer(post(&h1, &proxy, "/pay/echo", Some("order-1"), body).await).await;
    assert_eq!(first, (200, false, body.to_owned()));
    assert_eq!(backend.count(), 1);
    // The same request again, over HTTP/1.1 and over HTTP/2: the first answer, byte for byte,
    // marked as a replay; the backend is not contacted.
    for c in [&h1, &h2] {
        let res = post(c, &proxy, "/pay/echo", Some("order-1"), body).await;
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(answer(res).await, (200, true, body.to_owned()));
    }
    assert_eq!(backend.count(), 1, "a replay reached the backend");

    // The same key for a different request: 422, never forwarded.
    let res = post(&h1, &proxy, "/pay/echo", Some("order-1"), r#"{"amount":9999,"currency":"EUR"}"#).await;
    assert_eq!(res.status(), 422);
    let err = json(res).await;
    assert_eq!((err["error"].as_str(), err["rule"].as_str()), (Some("idempotency_mismatch"), Some("pay")));
    // Required and missing, or malformed: 400.
    for key in [None, Some("has space"), Some(&*"k".repeat(256))] {
        let res = post(&h1, &proxy, "/pay/echo", key, body).await;
        assert_eq!(res.status(), 400, "{key:?}");
        assert_eq!(json(res).await["error"], "idempotency_key_missing");
    }
    let res = h1
        .post(proxy.url("/pay/echo"))
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "two keys are ambiguous");
    assert_eq!(backend.count(), 1);
    // Another key is another order.
    assert!(!answer(post(&h2, &proxy, "/pay/echo", Some("order-2"), body).await).await.1);
    assert_eq!(backend.count(), 2);

    proxy
        .assert_metrics(&[
            "payguard_idempotency_total{route=\"pay\",outcome=\"stored\"} 2",
            "payguard_idempotency_total{route=\"pay\",outcome=\"replayed\"} 2",
            "payguard_idempotency_total{route=\"pay\",outcome=\"mismatch\"} 1",
            "payguard_idempotency_total{route=\"pay\",outcome=\"key_missing\"} 4",
            "payguard_decisions_total{route=\"pay\",guard=\"idempotency\",decision=\"replay\"} 2",
        ])
        .await;
    proxy.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_attempts_reach_the_backend_once() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("pay.toml", RULES)]).await;
    let c = h2_client(&proxy.cert);
    let proxy = Arc::new(proxy);
    let finished = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (c, proxy, finished) = (c.clone(), proxy.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            let res = post(&c, &proxy, "/pay/gate", Some("double-tap"), "{\"amount\":5}").await;
            let retry_after = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let a = answer(res).await;
            finished.fetch_add(1, Ordering::SeqCst);
            (a, retry_after)
        }));
    }
    // One attempt is at the backend (held at its gate); every other one is answered meanwhile.
    backend.arrived.notified().await;
    assert!(all_but_one_answered(&finished).await);
    backend.open_gate();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let first: Vec<_> = results.iter().filter(|((s, replayed, _), _)| *s == 200 && !replayed).collect();
    let in_flight: Vec<_> = results.iter().filter(|((s, _, _), _)| *s == 409).collect();
    assert_eq!((first.len(), in_flight.len()), (1, 19), "{results:?}");
    assert!(in_flight
        .iter()
        .all(|((_, _, body), retry)| body.contains("idempotency_in_flight") && retry.as_deref() == Some("1")));
    assert_eq!(backend.count(), 1);
    // Afterwards: the stored answer.
    let again = answer(post(&c, &proxy, "/pay/gate", Some("double-tap"), "{\"amount\":5}").await).await;
    assert_eq!(again, (200, true, "{\"ok\":true}".to_owned()));
    Arc::try_unwrap(proxy).ok().unwrap().stop().await;
}

#[tokio::test]
async fn nothing_done_releases_the_key_and_a_failure_is_replayed() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("pay.toml", RULES)]).await;
    let c = h1_client(&proxy.cert);
    // 503 and 429: nothing was done, so the retry is forwarded.
    for status in [503, 429] {
        let path = format!("/pay/status/{status}");
        let before = backend.count();
        for _ in 0..2 {
            let (s, replayed, _) = answer(post(&c, &proxy, &path, Some("released"), "{}").await).await;
            assert_eq!((s, replayed), (status, false));
        }
        assert_eq!(backend.count(), before + 2, "a {status} released the key");
    }
    // A 500 may have done something: stored and replayed as the 500 it was.
    assert_eq!(
        answer(post(&c, &proxy, "/pay/status/500", Some("broken"), "{}").await).await,
        (500, false, "{\"ok\":true}".into())
    );
    let before = backend.count();
    assert_eq!(
        answer(post(&c, &proxy, "/pay/status/500", Some("broken"), "{}").await).await,
        (500, true, "{\"ok\":true}".into())
    );
    assert_eq!(backend.count(), before);

    // An answer larger than max_response passes unchanged but is not stored: the key is held.
    let big = post(&c, &proxy, "/pay/download?bytes=100000", Some("big"), "{}").await;
    assert_eq!(big.status(), 200);
    assert_eq!(big.bytes().await.unwrap().len(), 100_000);
    let res = post(&c, &proxy, "/pay/download?bytes=100000", Some("big"), "{}").await;
    assert_eq!((res.status().as_u16(), json(res).await["error"].clone()), (409, "idempotency_indeterminate".into()));
    proxy.stop().await;

    // payguard's own 502 (backend unreachable): nothing was forwarded, so nothing is held.
    let proxy = start_proxy_with_rules(closed_port().await, "", &[("pay.toml", RULES)]).await;
    let c = h1_client(&proxy.cert);
    for _ in 0..2 {
        let res = post(&c, &proxy, "/pay/x", Some("unreachable"), "{}").await;
        assert_eq!(res.status(), 502);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_backend_timeout_holds_the_key_or_releases_it_as_configured() {
    let backend = Backend::start().await;
    let rules = RULES.replace("lease = \"10s\"", "lease = \"2s\"");
    let proxy = start_with_timeout(backend.addr, "1s", &[("pay.toml", rules.as_str())]).await;
    let c = h1_client(&proxy.cert);
    // hold (the default): the backend may have charged, so later attempts are 409 until the
    // retention ends, and none reaches the backend.
    assert_eq!(post(&c, &proxy, "/pay/hang", Some("slow"), "{}").await.status(), 504);
    let before = backend.count();
    let res = post(&c, &proxy, "/pay/hang", Some("slow"), "{}").await;
    assert_eq!(res.status(), 409);
    assert!(!res.headers().contains_key("retry-after"));
    assert_eq!(json(res).await["error"], "idempotency_indeterminate");
    assert_eq!(backend.count(), before);
    // release: the retry is forwarded.
    let order = r#"{"order_id":"ord_1"}"#;
    let send = || c.post(proxy.url("/orders/hang")).header("authorization", "Bearer a").body(order).send();
    assert_eq!(send().await.unwrap().status(), 504);
    assert_eq!(send().await.unwrap().status(), 504, "released: forwarded again");
    assert!(proxy.metrics().await.contains("payguard_idempotency_total{route=\"pay\",outcome=\"held\"} 1"));

    // A client that goes away while the backend works on its attempt: settled like a timeout.
    let gone = tokio::spawn({
        let (c, url) = (c.clone(), proxy.url("/pay/gate"));
        async move { c.post(url).header("idempotency-key", "gone").body("{}").send().await }
    });
    backend.arrived.notified().await;
    gone.abort();
    let (c2, p2) = (&c, &proxy);
    let held = eventually(Duration::from_secs(10), || async move {
        let res = post(c2, p2, "/pay/gate", Some("gone"), "{}").await;
        res.status() == 409 && json(res).await["error"] == "idempotency_indeterminate"
    })
    .await;
    assert!(held, "an abandoned attempt is held as indeterminate");
    backend.open_gate();
    proxy.stop().await;
}

#[tokio::test]
async fn answers_are_replayed_only_within_their_scope_and_monitor_mode_replays_nothing() {
    let backend = Backend::start().await;
    let monitor = RULES.replacen("methods = [\"POST\"] }\n", "methods = [\"POST\"] }\nmode = \"monitor\"\n", 1);
    let proxy = start_proxy_with_rules(backend.addr, "", &[("pay.toml", RULES)]).await;
    let c = h2_client(&proxy.cert);
    // Keyed by the order id in the body, scoped by Authorization.
    let order = r#"{"order_id":"ord_7","amount":3}"#;
    let send = |auth: &'static str| c.post(proxy.url("/orders/echo")).header("authorization", auth).body(order).send();
    assert_eq!(answer(send("Bearer alice").await.unwrap()).await, (200, false, order.into()));
    assert_eq!(answer(send("Bearer alice").await.unwrap()).await, (200, true, order.into()));
    assert_eq!(answer(send("Bearer bob").await.unwrap()).await, (200, false, order.into()), "another scope");
    assert_eq!(backend.count(), 2);
    // A request without the field: refused (required by default).
    let res = c.post(proxy.url("/orders/echo")).body("{}").send().await.unwrap();
    assert_eq!(res.status(), 400, "required by default");
    proxy.stop().await;

    // Monitor mode: the decisions are recorded, the requests forwarded, nothing replayed.
    let proxy = start_proxy_with_rules(backend.addr, "", &[("pay.toml", monitor.as_str())]).await;
    let c = h1_client(&proxy.cert);
    let before = backend.count();
    for _ in 0..2 {
        assert_eq!(answer(post(&c, &proxy, "/pay/echo", Some("m-1"), "{}").await).await, (200, false, "{}".into()));
    }
    assert_eq!(answer(post(&c, &proxy, "/pay/echo", None, "{}").await).await.0, 200);
    assert_eq!(backend.count(), before + 3);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("payguard_decisions_total{route=\"pay\",guard=\"idempotency\",decision=\"would_block\"} 2"),
        "{metrics}"
    );
    proxy.stop().await;
}

/// A first attempt waits for one Redis round trip, its reservation: the answer is stored as it
/// goes back, so it reaches the client while Redis answers nothing at all. The client's retry
/// through the same instance is ordered after the store and replays it.
#[tokio::test]
async fn a_first_attempt_on_redis_waits_for_its_reservation_only() {
    let redis = RedisServer::start().await;
    let backend = Backend::start().await;
    // A store timeout far beyond the test's patience: an answer that waited for the store would
    // not come back in time.
    let extra = format!("{}timeout = \"60s\"\n", redis.state_config());
    let proxy = Arc::new(start_proxy_with_rules(backend.addr, &extra, &[("pay.toml", RULES)]).await);
    let c = h2_client(&proxy.cert);
    let first = tokio::spawn({
        let (c, proxy) = (c.clone(), proxy.clone());
        async move { answer(post(&c, &proxy, "/pay/gate", Some("one-trip"), "{}").await).await }
    });
    backend.arrived.notified().await;
    redis.pause();
    backend.open_gate();
    let got = tokio::time::timeout(Duration::from_secs(20), first).await;
    redis.resume();
    assert_eq!(got.expect("the answer waited for Redis").unwrap(), (200, false, "{\"ok\":true}".into()));
    assert_eq!(
        answer(post(&c, &proxy, "/pay/gate", Some("one-trip"), "{}").await).await,
        (200, true, "{\"ok\":true}".into())
    );
    assert_eq!(backend.count(), 1);
    let metrics = proxy.metrics().await;
    assert!(metrics.contains("payguard_idempotency_total{route=\"pay\",outcome=\"stored\"} 1"), "{metrics}");
    assert!(metrics.contains("payguard_idempotency_total{route=\"pay\",outcome=\"replayed\"} 1"), "{metrics}");
}

#[tokio::test]
async fn two_instances_share_keys_through_redis_and_fail_closed_without_it() {
    let mut redis = RedisServer::start().await;
    let backend = Backend::start().await;
    let extra = redis.state_config();
    let a = Arc::new(start_proxy_with_rules(backend.addr, &extra, &[("pay.toml", RULES)]).await);
    let b = Arc::new(start_proxy_with_rules(backend.addr, &extra, &[("pay.toml", RULES)]).await);
    let (ca, cb) = (h1_client(&a.cert), h2_client(&b.cert));

    // Twenty concurrent attempts split across the two instances: one reaches the backend (held
    // at its gate); every other one is answered 409 meanwhile.
    let finished = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (c, p) = if i % 2 == 0 { (ca.clone(), a.clone()) } else { (cb.clone(), b.clone()) };
        let finished = finished.clone();
        tasks.push(tokio::spawn(async move {
            let status = post(&c, &p, "/pay/gate", Some("shared"), "{}").await.status().as_u16();
            finished.fetch_add(1, Ordering::SeqCst);
            (status, i % 2)
        }));
    }
    backend.arrived.notified().await;
    assert!(all_but_one_answered(&finished).await);
    backend.open_gate();
    let (mut statuses, mut first) = (Vec::new(), 0);
    for t in tasks {
        let (status, instance) = t.await.unwrap();
        if status == 200 {
            first = instance;
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [vec![200], vec![409; 19]].concat());
    assert_eq!(backend.count(), 1);
    // Stored once, replayed by either instance. The answer is stored as it goes back (its
    // command queued on the instance's Redis connection first): a retry through the instance
    // that answered is ordered after it; once that retry is a replay, every instance sees it.
    let order = if first == 0 { [(&ca, &a), (&cb, &b)] } else { [(&cb, &b), (&ca, &a)] };
    for (c, p) in order {
        assert_eq!(
            answer(post(c, p, "/pay/gate", Some("shared"), "{}").await).await,
            (200, true, "{\"ok\":true}".into())
        );
    }
    assert_eq!(backend.count(), 1);

    // The store unreachable: fail_closed by default, 503 and nothing forwarded.
    redis.stop();
    let res = post(&ca, &a, "/pay/echo", Some("no-store"), "{}").await;
    assert_eq!(res.status(), 503);
    assert_eq!(json(res).await["error"], "state_unavailable");
    assert_eq!(backend.count(), 1);
    Arc::try_unwrap(a).ok().unwrap().stop().await;
    Arc::try_unwrap(b).ok().unwrap().stop().await;
}
