//! `[[route.failure_limit]]` through the real proxy: real TLS, a real hyper backend that fails
//! payments on request, the admin listener, and a real `redis-server` shared by two instances.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

const RULES: &str = r#"
[[route]]
name = "pay"
match = { path = "/pay/*" }

# Counted per account: a declined payment (402), or a 200 whose JSON says FAIL.
[[route.failure_limit]]
key = "header:x-account"
failure = { status = ["402"], json = { at = "/code", equals = "FAIL" } }
threshold = 3
window = "10m"
ban = "1s"
ban_factor = 3
max_ban = "1h"
"#;

async fn post(c: &reqwest::Client, p: &Proxy, path: &str, account: &str, body: &str) -> reqwest::Response {
    c.post(p.url(path))
        .header("x-account", account)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn status(c: &reqwest::Client, p: &Proxy, path: &str, account: &str, body: &str) -> u16 {
    post(c, p, path, account, body).await.status().as_u16()
}

#[tokio::test]
async fn repeated_failures_ban_the_key_before_the_backend_and_bans_grow() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("pay.toml", RULES)]).await;
    let c = h1_client(&proxy.cert);

    // Three declined payments reach the backend; the fourth attempt does not.
    for _ in 0..3 {
        assert_eq!(status(&c, &proxy, "/pay/status/402", "alice", "{}").await, 402);
    }
    let seen = backend.count();
    let res = post(&c, &proxy, "/pay/ok", "alice", "{}").await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(retry, 1);
    let body = json(res).await;
    assert_eq!((body["error"].as_str(), body["rule"].as_str()), (Some("too_many_failures"), Some("pay")));
    assert_eq!(backend.count(), seen, "a banned key never reaches the backend");
    // Another account is not touched.
    assert_eq!(status(&c, &proxy, "/pay/ok", "bob", "{}").await, 200);

    // The ban ends by itself; the next one is ban_factor times longer.
    let (c2, p2) = (&c, &proxy);
    let over =
        eventually(Duration::from_secs(10), || async move { status(c2, p2, "/pay/ok", "alice", "{}").await == 200 })
            .await;
    assert!(over, "the one-second ban ended");
    for _ in 0..3 {
        assert_eq!(status(&c, &proxy, "/pay/status/402", "alice", "{}").await, 402);
    }
    let res = post(&c, &proxy, "/pay/ok", "alice", "{}").await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "3");

    // Metrics: every counted failure, and the two bans.
    let metrics = proxy.metrics().await;
    assert!(metrics.contains("payguard_failures_total{route=\"pay\"} 6"), "{metrics}");
    assert!(metrics.contains("payguard_bans_total{route=\"pay\"} 2"), "{metrics}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_json_field_of_the_answer_classifies_it_and_ops_can_list_and_lift_bans() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("pay.toml", RULES)]).await;
    let c = h1_client(&proxy.cert);

    // 200 answers whose body says FAIL are failures; the client still gets them unchanged.
    let fail = r#"{"code":"FAIL","msg":"card declined"}"#;
    for _ in 0..3 {
        let res = post(&c, &proxy, "/pay/echo", "carol", fail).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), fail);
    }
    // Successes are not counted, however many.
    for _ in 0..5 {
        assert_eq!(status(&c, &proxy, "/pay/echo", "dave", r#"{"code":"SUCCESS"}"#).await, 200);
    }
    assert_eq!(status(&c, &proxy, "/pay/echo", "carol", r#"{"code":"SUCCESS"}"#).await, 429);
    assert_eq!(status(&c, &proxy, "/pay/echo", "dave", r#"{"code":"SUCCESS"}"#).await, 200);

    // The admin listener lists the ban: route, a digest of the key (never the account), time left.
    let list = json(admin_get(proxy.admin, "/bans").await).await;
    let bans = list["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 1, "{list}");
    assert_eq!(bans[0]["route"], "pay");
    let key = bans[0]["key"].as_str().unwrap();
    assert!(key.starts_with("header:x-account#") && !key.contains("carol"), "{key}");
    assert_eq!(bans[0]["strike"], 1);
    // Lifting it lets the account pay again, at once.
    let id = bans[0]["id"].as_str().unwrap().to_owned();
    let res = admin_delete(proxy.admin, &format!("/bans/{id}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["lifted"], true);
    assert_eq!(admin_delete(proxy.admin, &format!("/bans/{id}")).await.status(), 404, "nothing left to lift");
    assert_eq!(admin_delete(proxy.admin, "/bans/not-an-id").await.status(), 400);
    assert_eq!(status(&c, &proxy, "/pay/echo", "carol", r#"{"code":"SUCCESS"}"#).await, 200);
    assert!(json(admin_get(proxy.admin, "/bans").await).await["bans"].as_array().unwrap().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn two_instances_share_counts_and_bans_through_redis() {
    let redis = RedisServer::start().await;
    let backend = Backend::start().await;
    let extra = redis.state_config();
    let a = start_proxy_with_rules(backend.addr, &extra, &[("pay.toml", RULES)]).await;
    let b = start_proxy_with_rules(backend.addr, &extra, &[("pay.toml", RULES)]).await;
    let (ca, cb) = (h1_client(&a.cert), h1_client(&b.cert));

    // Failures on either instance add up; the ban holds on both.
    assert_eq!(status(&ca, &a, "/pay/status/402", "erin", "{}").await, 402);
    assert_eq!(status(&cb, &b, "/pay/status/402", "erin", "{}").await, 402);
    assert_eq!(status(&ca, &a, "/pay/status/402", "erin", "{}").await, 402);
    assert_eq!(status(&cb, &b, "/pay/ok", "erin", "{}").await, 429);
    assert_eq!(status(&ca, &a, "/pay/ok", "erin", "{}").await, 429);
    assert_eq!(status(&ca, &a, "/pay/ok", "frank", "{}").await, 200);
    // Listed by either admin listener, lifted through the other.
    let list = json(admin_get(a.admin, "/bans").await).await;
    let id = list["bans"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(admin_delete(b.admin, &format!("/bans/{id}")).await.status(), 200);
    assert_eq!(status(&ca, &a, "/pay/ok", "erin", "{}").await, 200);
    a.stop().await;
    b.stop().await;
    drop(redis);
}
