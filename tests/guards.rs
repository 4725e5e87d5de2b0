//! End-to-end tests of the rule-driven guards: every status of the reject table that the rules
//! own, monitor mode, and hot reload. Real TLS, real clients, real backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

const SHOP: &str = r#"
[ip_sets]
office = ["10.0.0.0/8"]

[defaults]
action = "deny"
max_body = "4KiB"

[[route]]
name = "orders"
match = { path = "/api/orders", methods = ["POST"] }
rate_limit = { key = "ip", rate = "100/s", burst = 100 }
[route.validate]
content_type = ["application/json"]
required_headers = ["x-shop-id"]
fields = [
  { at = "/amount", type = "integer", min = 1, max = 1000 },
  { at = "/currency", type = "string", one_of = ["EUR", "USD"] },
]

[[route]]
name = "login"
match = { path = "/login", methods = ["POST"] }
rate_limit = { key = "ip", rate = "1/h", burst = 3 }

[[route]]
name = "orders-read"
match = { path = "/api/orders/*", methods = ["GET"] }
[route.validate]
fields = [{ at = "page", type = "integer", min = 1, max = 100 }]

[[route]]
name = "admin"
match = { path = "/admin/*" }
ip_allow = ["@office"]

[[route]]
name = "hosted"
match = { path = "/hosted", methods = ["GET"] }
[route.validate]
required_headers = ["Host"]

[[route]]
name = "upload"
match = { path = "/upload", methods = ["POST"] }
max_body = "16KiB"

[[route]]
name = "shadow"
match = { path = "/shadow", methods = ["POST"] }
mode = "monitor"
ip_allow = ["@office"]
[route.validate]
content_type = ["application/json"]
fields = [{ at = "/n", type = "integer", max = 5 }]
"#;

async fn shop() -> (Backend, Proxy) {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("shop.toml", SHOP)]).await;
    (backend, proxy)
}

async fn expect(res: reqwest::Response, status: u16, code: &str, rule: Option<&str>) -> serde_json::Value {
    assert_eq!(res.status().as_u16(), status);
    assert_eq!(res.headers()["content-type"], "application/json");
    let v = json(res).await;
    assert_eq!(v["error"], code, "{v}");
    match rule {
        Some(r) => assert_eq!(v["rule"], r),
        None => assert!(v["rule"].is_null(), "{v}"),
    }
    assert!(v["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    v
}

#[tokio::test]
async fn routing_statuses_404_405() {
    let (backend, proxy) = shop().await;
    let c = h1_client(&proxy.cert);
    expect(c.get(proxy.url("/nowhere")).send().await.unwrap(), 404, "no_route", None).await;
    let res = c.delete(proxy.url("/api/orders")).send().await.unwrap();
    assert_eq!(res.headers()["allow"], "POST");
    expect(res, 405, "method_not_allowed", Some("orders")).await;
    // Path tricks cannot reach a route around its rules, nor sneak past "deny".
    expect(c.get(proxy.url("/admin/../admin/x")).send().await.unwrap(), 403, "ip_denied", Some("admin")).await;
    expect(c.get(proxy.url("//admin/x")).send().await.unwrap(), 403, "ip_denied", Some("admin")).await;
    expect(c.get(proxy.url("/%61dmin/x")).send().await.unwrap(), 403, "ip_denied", Some("admin")).await;
    expect(c.get(proxy.url("/api%2forders")).send().await.unwrap(), 400, "invalid_request", None).await;
    assert_eq!(backend.count(), 0, "nothing refused may reach the backend");
    proxy.stop().await;
}

#[tokio::test]
async fn ip_allow_list_403() {
    let (backend, proxy) = shop().await;
    let c = h2_client(&proxy.cert);
    expect(c.get(proxy.url("/admin/orders")).send().await.unwrap(), 403, "ip_denied", Some("admin")).await;
    assert_eq!(backend.count(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn validation_400_415_and_what_passes() {
    let (backend, proxy) = shop().await;
    let c = h1_client(&proxy.cert);
    let post = |body: &'static str, ct: &'static str| {
        c.post(proxy.url("/api/orders")).header("content-type", ct).header("x-shop-id", "s1").body(body).send()
    };
    let ok = post(r#"{"amount": 1000, "currency": "EUR"}"#, "application/json; charset=utf-8").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(backend.last().body, br#"{"amount": 1000, "currency": "EUR"}"#);

    let v = expect(
        post(r#"{"amount": 1001, "currency": "EUR"}"#, "application/json").await.unwrap(),
        400,
        "invalid_request",
        Some("orders"),
    )
    .await;
    assert!(v["message"].as_str().unwrap().contains("/amount"), "{v}");
    assert!(!v["message"].as_str().unwrap().contains("1001"), "value echoed: {v}");
    expect(
        post(r#"{"amount": 5, "currency": "GBP"}"#, "application/json").await.unwrap(),
        400,
        "invalid_request",
        Some("orders"),
    )
    .await;
    expect(post(r#"{"amount": 5,"#, "application/json").await.unwrap(), 400, "invalid_request", Some("orders")).await;
    expect(post(r#"{"amount": 5}"#, "text/plain").await.unwrap(), 415, "unsupported_media_type", Some("orders")).await;
    let missing =
        c.post(proxy.url("/api/orders")).header("content-type", "application/json").body("{}").send().await.unwrap();
    let v = expect(missing, 400, "invalid_request", Some("orders")).await;
    assert!(v["message"].as_str().unwrap().contains("x-shop-id"), "{v}");
    // Query fields.
    assert_eq!(c.get(proxy.url("/api/orders/o1?page=2")).send().await.unwrap().status(), 200);
    expect(
        c.get(proxy.url("/api/orders/o1?page=0")).send().await.unwrap(),
        400,
        "invalid_request",
        Some("orders-read"),
    )
    .await;
    assert_eq!(backend.count(), 2);
    proxy.stop().await;
}

/// Body rules read the bytes as sent; a backend that inflates `gzip`/`deflate` (Express does)
/// would act on content no rule saw. So a route with body rules takes `identity` only.
#[tokio::test]
async fn compressed_body_on_a_body_rule_route_is_415() {
    let (backend, proxy) = shop().await;
    let c = h2_client(&proxy.cert);
    let post = |encoding: &'static str| {
        c.post(proxy.url("/api/orders"))
            .header("content-type", "application/json")
            .header("x-shop-id", "s1")
            .header("content-encoding", encoding)
            .body(r#"{"amount": 5, "currency": "EUR"}"#)
            .send()
    };
    for encoding in ["gzip", "deflate", "br", "identity, gzip"] {
        let v = expect(post(encoding).await.unwrap(), 415, "unsupported_media_type", Some("orders")).await;
        assert_eq!(v["message"], "content encoding not allowed on this route", "{encoding}");
    }
    assert_eq!(backend.count(), 0);
    assert_eq!(post("identity").await.unwrap().status(), 200);
    // A route without body rules streams whatever it is sent.
    let res = c.post(proxy.url("/upload")).header("content-encoding", "gzip").body("x").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(backend.count(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn body_caps_413_declared_streamed_and_buffered() {
    let (backend, proxy) = shop().await;
    let c = h1_client(&proxy.cert);
    // Declared Content-Length past the route's cap: refused before any body byte is read.
    let res = c.post(proxy.url("/upload")).body(vec![b'a'; 16 * 1024 + 1]).send().await.unwrap();
    expect(res, 413, "body_too_large", Some("upload")).await;
    // Exactly at the cap passes.
    let res = c.post(proxy.url("/upload")).body(vec![b'a'; 16 * 1024]).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(backend.last().body_len, 16 * 1024);
    // Chunked (no length) past the cap: cut while streaming.
    let chunks = futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b'b'; 4096])));
    let res = c.post(proxy.url("/upload")).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    expect(res, 413, "body_too_large", Some("upload")).await;
    // Buffered route (body validation) past the default 4 KiB cap, sent chunked.
    let chunks = futures_util::stream::iter((0..3).map(|_| Ok::<_, std::io::Error>(vec![b' '; 2048])));
    let res = c
        .post(proxy.url("/api/orders"))
        .header("content-type", "application/json")
        .header("x-shop-id", "s")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    expect(res, 413, "body_too_large", Some("orders")).await;
    // The streamed upload was cut: the backend may have seen its start, never more than the cap.
    let seen = backend.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.body_len <= 16 * 1024), "{:?}", seen.iter().map(|s| s.body_len).collect::<Vec<_>>());
    assert_eq!(seen.iter().filter(|s| s.path_and_query == "/api/orders").count(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn rate_limit_429_with_headers() {
    let (backend, proxy) = shop().await;
    let c = h2_client(&proxy.cert);
    let send = || c.post(proxy.url("/login")).body("user=a").send();
    for _ in 0..3 {
        assert_eq!(send().await.unwrap().status(), 200);
    }
    let res = send().await.unwrap();
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 3000, "1/h with an empty bucket: retry-after {retry}");
    assert_eq!(res.headers()["ratelimit-limit"], "3");
    assert_eq!(res.headers()["ratelimit-remaining"], "0");
    expect(res, 429, "rate_limited", Some("login")).await;
    assert_eq!(backend.count(), 3);
    // Another route has its own budget.
    let other = c.get(proxy.url("/api/orders/o1")).send().await.unwrap();
    assert_eq!(other.status(), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn monitor_mode_forwards_and_records_would_block() {
    let (backend, proxy) = shop().await;
    let c = h1_client(&proxy.cert);
    // Not from @office, a bad field, a wrong content type: all would block, none does.
    let res =
        c.post(proxy.url("/shadow")).header("content-type", "text/plain").body(r#"{"n": 9}"#).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(backend.last().body, br#"{"n": 9}"#);
    let m = proxy.metrics().await;
    for guard in ["ip", "validate"] {
        let line = format!("payguard_decisions_total{{route=\"shadow\",guard=\"{guard}\",decision=\"would_block\"}} 1");
        assert!(m.contains(&line), "missing {line}\n{m}");
    }
    assert!(!m.contains("decision=\"block\""), "{m}");
    proxy.stop().await;
}

#[tokio::test]
async fn peer_denied_before_tls() {
    let backend = Backend::start().await;
    let proxy =
        start_proxy_with_rules(backend.addr, "", &[("d.toml", "[defaults]\nip_deny = [\"127.0.0.0/8\"]\n")]).await;
    let err = h1_client(&proxy.cert).get(proxy.url("/")).send().await.unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    let m = proxy.metrics().await;
    assert!(m.contains("payguard_tls_handshake_failures_total 0"), "denied before any TLS work:\n{m}");
    assert_eq!(backend.count(), 0);
    proxy.stop().await;
}

/// Replaces a rule file the way editors and config tools do (a rename), so the watcher never
/// reads it half-written: `fs::write` truncates first, and an empty rule file is a valid one.
fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// 20 reloads, good and bad alternating, while a client keeps sending: no request fails, every
/// good edit takes effect, every bad one is reported and ignored, and rate-limit state of an
/// unchanged route survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_traffic() {
    let backend = Backend::start().await;
    let base = "[defaults]\naction = \"deny\"\n[[route]]\nname = \"limited\"\nmatch = { path = \"/limited\" }\nrate_limit = { key = \"route\", rate = \"1/h\", burst = 2 }\n";
    let stable = "[[route]]\nname = \"stable\"\nmatch = { path = \"/stable\" }\n";
    let proxy = start_proxy_with_rules(backend.addr, "", &[("a.toml", base), ("b.toml", stable)]).await;
    let c = h1_client(&proxy.cert);
    // Use up the limited route's bucket.
    for _ in 0..2 {
        assert_eq!(c.get(proxy.url("/limited")).send().await.unwrap().status(), 200);
    }
    assert_eq!(c.get(proxy.url("/limited")).send().await.unwrap().status(), 429);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (c, url, stop) = (c.clone(), proxy.url("/stable"), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().as_u16()),
                    Err(e) => failed.push(if e.is_timeout() { 1 } else { 0 }),
                }
            }
            (ok, failed)
        })
    };
    let rules = proxy.dir.path().join("rules");
    let admin = proxy.admin;
    for i in 0..20 {
        let marker = format!("/v{i}");
        if i % 2 == 0 {
            let good = format!("[[route]]\nname = \"stable\"\nmatch = {{ path = \"/stable\" }}\n[[route]]\nname = \"v{i}\"\nmatch = {{ path = \"{marker}\" }}\n");
            write_atomically(&rules.join("b.toml"), &good);
            let url = proxy.url(&marker);
            let c2 = c.clone();
            assert!(
                eventually(Duration::from_secs(2), || {
                    let (c2, url) = (c2.clone(), url.clone());
                    async move { c2.get(&url).send().await.is_ok_and(|r| r.status() == 200) }
                })
                .await,
                "good edit {i} not live within 2 s"
            );
        } else {
            let errors_before = reload_errors(admin).await;
            write_atomically(
                &rules.join("b.toml"),
                "[[route]]\nname = \"stable\"\nmatch = { path = \"/stable\" }\n[[route]]\nname = 7\n",
            );
            assert!(
                eventually(Duration::from_secs(2), || async move { reload_errors(admin).await > errors_before }).await,
                "bad edit {i} not reported"
            );
            // The previous good set still serves its marker.
            let prev = proxy.url(&format!("/v{}", i - 1));
            assert_eq!(c.get(&prev).send().await.unwrap().status(), 200);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic.await.unwrap();
    assert!(failed.is_empty(), "{} requests failed during reloads: {failed:?}", failed.len());
    assert!(ok > 20, "the client kept sending ({ok} requests)");
    // Unchanged route: still rate limited (bucket survived 10 reloads).
    assert_eq!(c.get(proxy.url("/limited")).send().await.unwrap().status(), 429);
    // Deleting the file takes its routes away.
    std::fs::remove_file(rules.join("b.toml")).unwrap();
    let url = proxy.url("/stable");
    assert!(
        eventually(Duration::from_secs(2), || {
            let (c, url) = (c.clone(), url.clone());
            async move { c.get(&url).send().await.is_ok_and(|r| r.status() == 404) }
        })
        .await
    );
    proxy.stop().await;
}

async fn reload_errors(admin: std::net::SocketAddr) -> u64 {
    let m = admin_get(admin, "/metrics").await.text().await.unwrap();
    m.lines()
        .find(|l| l.starts_with("payguard_rule_reloads_total{result=\"error\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// HTTP/2 sends the host as `:authority`; a route that requires `Host` accepts it as such, and
/// the backend gets a Host header either way.
#[tokio::test]
async fn required_host_is_met_by_http2_authority() {
    let (backend, proxy) = shop().await;
    for client in [h1_client(&proxy.cert), h2_client(&proxy.cert)] {
        let res = client.get(proxy.url("/hosted")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(backend.last().header("host"), Some(format!("localhost:{}", proxy.addr.port()).as_str()));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn monitor_mode_forwards_a_body_past_the_cap_whole() {
    use sha2::Digest as _;
    // A route that reads its body (a field rule) in monitor mode: a body over max_body is
    // recorded as would_block and forwarded whole, what was read first and then the rest.
    let rules = r#"
[[route]]
name = "watch"
match = { path = "/watch" }
mode = "monitor"
max_body = "64"
[route.validate]
fields = [{ at = "/n", type = "integer" }]
"#;
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("watch.toml", rules)]).await;
    let body = format!("{{\"n\":1,\"pad\":\"{}\"}}", "x".repeat(200_000));
    for c in [h1_client(&proxy.cert), h2_client(&proxy.cert)] {
        let res = c
            .post(proxy.url("/watch"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let seen = backend.last();
        assert_eq!(seen.body_len, body.len() as u64);
        assert_eq!(seen.body_sha256, hex::encode(sha2::Sha256::digest(body.as_bytes())));
    }
    let m = proxy.metrics().await;
    assert!(m.contains("payguard_decisions_total{route=\"watch\",guard=\"body\",decision=\"would_block\"} 2"), "{m}");
    proxy.stop().await;
}
