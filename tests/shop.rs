//! The shipped rules in front of the real Node.js example store (examples/shop).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

struct Shop {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop")
}

fn start_shop() -> Shop {
    let dir = shop_dir();
    if !dir.join("node_modules/express").exists() {
        // Same as .ci/run does; lets `cargo test` work on a fresh checkout.
        let ok =
            Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(&dir).status();
        assert!(ok.is_ok_and(|s| s.success()), "npm ci in examples/shop failed");
    }
    let mut child = Command::new("node")
        .arg("server.js")
        .current_dir(&dir)
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node is required for this test");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("shop listening on ").unwrap_or_else(|| panic!("unexpected: {line}"));
    Shop { addr: addr.parse().unwrap(), child }
}

async fn shop_json(shop: &Shop, path: &str) -> serde_json::Value {
    let c = reqwest::Client::builder().use_preconfigured_tls(rustls_client(&[], &[])).build().unwrap();
    json(c.get(format!("http://{}{path}", shop.addr)).send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_rules_guard_the_example_shop() {
    let shop = start_shop();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let extra = format!(
        "[client_ip]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[rules]\ndir = \"{}\"\nwatch = false\n",
        rules.display()
    );
    let proxy = start_proxy_with_rules(shop.addr, &extra, &[]).await;
    let c = h2_client(&proxy.cert);
    let count = || async { shop_json(&shop, "/debug/requests/count").await["count"].as_u64().unwrap() };

    let products = json(c.get(proxy.url("/api/products")).send().await.unwrap()).await;
    assert_eq!(products["products"].as_array().unwrap().len(), 3);

    // A valid order passes and the shop sees payguard's forwarding headers.
    let res = c
        .post(proxy.url("/api/orders"))
        .header("content-type", "application/json")
        .header("x-payguard-verified", "forged")
        .body(r#"{"product_id":"prod_mug","quantity":2,"email":"a@example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let order = json(res).await;
    let order_id = order["order_id"].as_str().unwrap().to_string();
    assert_eq!(order["amount"], 2500);
    let last = shop_json(&shop, "/debug/last-request").await;
    assert_eq!(last["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(last["headers"]["x-forwarded-proto"], "https");
    assert!(last["headers"]["x-request-id"].as_str().is_some_and(|s| s.len() == 32));
    assert!(last["headers"].get("x-payguard-verified").is_none(), "forged verification header reached the shop");

    // Invalid input never reaches the shop.
    let before = count().await;
    for body in [
        r#"{"product_id":"prod_mug","quantity":0,"email":"a@example.com"}"#,
        r#"{"product_id":"../etc","quantity":1,"email":"a@example.com"}"#,
        r#"{"product_id":"prod_mug","quantity":1}"#,
        r#"not json"#,
    ] {
        let res = c
            .post(proxy.url("/api/orders"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{body}");
    }
    let checkout =
        |token: &str, extra: &str| format!(r#"{{"order_id":"{order_id}","payment_token":"{token}"{extra}}}"#);
    for bad in [checkout("tok visa", ""), checkout("tok_visa", r#","admin":true"#)] {
        let res = c
            .post(proxy.url("/api/checkout"))
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
    }
    // The shop takes tokens: a card number in a request is a broken integration or an attack.
    let res = c
        .post(proxy.url("/api/orders?card=4111-1111-1111-1111"))
        .header("content-type", "application/json")
        .body(r#"{"product_id":"prod_mug","quantity":1,"email":"a@example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(json(res).await["error"], "card_data");
    assert_eq!(count().await, before, "rejected requests reached the shop");

    // A double-submitted payment: both submissions at once, one charge. The shop sees one; the
    // other is answered 409 while the first runs, or with the first answer (marked as a replay).
    let pay = checkout("tok_visa", "");
    let submit =
        || c.post(proxy.url("/api/checkout")).header("content-type", "application/json").body(pay.clone()).send();
    let (a, b) = tokio::join!(submit(), submit());
    let mut answers = Vec::new();
    for res in [a.unwrap(), b.unwrap()] {
        let replayed = res.headers().contains_key("idempotent-replayed");
        answers.push((res.status().as_u16(), replayed, json(res).await));
    }
    answers.sort_by_key(|(s, r, _)| (*s, *r));
    assert_eq!((answers[0].0, answers[0].1), (200, false), "{answers:?}");
    assert_eq!(answers[0].2["status"], "paid");
    assert!(matches!((answers[1].0, answers[1].1), (200, true) | (409, false)), "{answers:?}");
    let again = submit().await.unwrap();
    assert_eq!((again.status().as_u16(), again.headers()["idempotent-replayed"].to_str().unwrap()), (200, "true"));
    assert_eq!(json(again).await, answers[0].2, "the replay is the first answer");
    let in_shop = shop_json(&shop, &format!("/api/orders/{order_id}")).await;
    assert_eq!(in_shop["charges"], 1, "charged once");
    // The shop's order page leaks the full card number; through payguard it arrives masked,
    // first six and last four, over HTTP/2 and HTTP/1.1.
    assert_eq!(in_shop["payment"]["card_number"], "4242424242424242");
    for client in [&c, &h1_client(&proxy.cert)] {
        let page = client.get(proxy.url(&format!("/api/orders/{order_id}"))).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let page = json(page).await;
        assert_eq!(page["payment"]["card_number"], "424242******4242", "{page}");
        assert_eq!(page["order_id"], in_shop["order_id"]);
    }
    // Injection patterns on the storefront are recorded, not refused (shipped as "monitor").
    let res = c
        .post(proxy.url("/api/orders?ref=1%27%20OR%20%271%27%3D%271"))
        .header("content-type", "application/json")
        .header("x-forwarded-for", "203.0.113.30")
        .body(r#"{"product_id":"prod_mug","quantity":1,"email":"a@example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let metrics = proxy.metrics().await;
    assert!(
        metrics
            .contains(r#"payguard_decisions_total{route="orders-create",guard="injection",decision="would_block"} 1"#),
        "{metrics}"
    );
    // A cross-site page may not post an order.
    let res = c
        .post(proxy.url("/api/orders"))
        .header("content-type", "application/json")
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://evil.example")
        .body(r#"{"product_id":"prod_mug","quantity":1,"email":"a@example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"], "cross_origin");
    // The same order with another card is another request for the same key: refused, from
    // any address (the key is the shop's order id, shared by the route).
    let res = c
        .post(proxy.url("/api/checkout"))
        .header("content-type", "application/json")
        .header("x-forwarded-for", "203.0.113.9")
        .body(checkout("tok_mastercard", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(json(res).await["error"], "idempotency_mismatch");

    // Card testing from one address: one order is one attempt, so the tester makes an order per
    // card. The shop declines three (402), then payguard bans the address before a fourth
    // attempt reaches the shop, whatever card it carries. The refusals above (400, 422:
    // payguard's own) were not counted as attempts.
    let tester = "198.51.100.7";
    let new_order = || async {
        let res = c
            .post(proxy.url("/api/orders"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", tester)
            .body(r#"{"product_id":"prod_mug","quantity":1,"email":"t@example.com"}"#)
            .send()
            .await
            .unwrap();
        json(res).await["order_id"].as_str().unwrap().to_owned()
    };
    let attempt = |order: String, token: &str| {
        let body = format!(r#"{{"order_id":"{order}","payment_token":"{token}"}}"#);
        c.post(proxy.url("/api/checkout"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", tester)
            .body(body)
            .send()
    };
    for _ in 0..3 {
        let res = attempt(new_order().await, "tok_chargeDeclined").await.unwrap();
        assert_eq!(res.status(), 402);
        assert_eq!(json(res).await["error"], "card_declined");
    }
    let order = new_order().await;
    let before = count().await;
    let res = attempt(order, "tok_visa").await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(json(res).await["error"], "too_many_failures");
    assert_eq!(count().await, before, "a banned client reached the shop");
    let bans = json(admin_get(proxy.admin, "/bans").await).await;
    assert_eq!(bans["bans"][0]["key"], tester, "{bans}");
    assert_eq!(bans["bans"][0]["route"], "checkout");

    // Callbacks: only from the providers' networks (here via a trusted proxy hop).
    let notify = format!(r#"{{"out_trade_no":"{order_id}","trade_state":"SUCCESS"}}"#);
    let res = c
        .post(proxy.url("/pay/notify"))
        .header("content-type", "application/json")
        .body(notify.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = c
        .post(proxy.url("/pay/notify"))
        .header("content-type", "application/json")
        .header("x-forwarded-for", "192.0.2.10")
        .body(notify.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["code"], "SUCCESS");
    let last = shop_json(&shop, "/debug/last-request").await;
    assert_eq!(last["body_sha256"], hex::encode(Sha256::digest(notify.as_bytes())), "body not forwarded byte for byte");
    assert_eq!(last["headers"]["x-forwarded-for"], "192.0.2.10, 127.0.0.1");

    // Admin from a private network; login is strictly limited.
    assert_eq!(c.get(proxy.url("/admin/orders")).send().await.unwrap().status(), 200);
    let admin_from_outside =
        c.get(proxy.url("/admin/orders")).header("x-forwarded-for", "203.0.113.5").send().await.unwrap();
    assert_eq!(admin_from_outside.status(), 403);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = c
            .post(proxy.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("username=demo&password=demo")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    // JSON logins are validated too (and limited by the same budget).
    let r = c
        .post(proxy.url("/login"))
        .header("content-type", "application/json")
        .body(r#"{"username":"demo"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // HEAD refusals carry no body (HTTP/2 would call one a protocol error).
    let head = c.head(proxy.url("/api/checkout")).send().await.unwrap();
    assert_eq!(head.status(), 405);
    assert!(head.bytes().await.unwrap().is_empty());
    tokio::time::timeout(Duration::from_secs(15), proxy.stop()).await.unwrap();
}
