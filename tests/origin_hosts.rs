//! `[route.origin]` and `defaults.hosts` through the real proxy: real TLS, HTTP/1.1 and HTTP/2
//! clients, a real hyper backend that counts what reaches it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

const RULES: &str = r#"
[defaults]
hosts = ["localhost", "*.shop.test"]

[[route]]
name = "checkout"
match = { path = "/checkout" }
[route.origin]
allow = ["https://pay.example.net"]

[[route]]
name = "strict"
match = { path = "/strict" }
[route.origin]
require_browser_headers = true

[[route]]
name = "shadow"
match = { path = "/shadow" }
mode = "monitor"
[route.origin]
"#;

async fn status(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, serde_json::from_str(&res.text().await.unwrap()).unwrap_or_default())
}

#[tokio::test]
async fn cross_site_state_changes_are_refused_and_everything_else_passes() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("web.toml", RULES)]).await;
    let own = format!("https://localhost:{}", proxy.addr.port());
    for c in [h1_client(&proxy.cert), h2_client(&proxy.cert)] {
        let before = backend.count();
        let post = |path: &str| c.post(proxy.url(path)).body("{}");
        // Passes: same origin by either header, an allowed origin, a caller that is no browser,
        // a safe method.
        for req in [
            post("/checkout").header("sec-fetch-site", "same-origin"),
            post("/checkout").header("origin", own.as_str()),
            post("/checkout").header("sec-fetch-site", "cross-site").header("origin", "https://pay.example.net"),
            post("/checkout"),
            c.get(proxy.url("/checkout")).header("sec-fetch-site", "cross-site"),
            post("/strict").header("sec-fetch-site", "none"),
        ] {
            assert_eq!(status(req).await.0, 200);
        }
        // Refused: another site by either header, a null origin, no browser headers where they
        // are required.
        for req in [
            post("/checkout").header("sec-fetch-site", "cross-site"),
            post("/checkout").header("origin", "https://evil.example"),
            post("/checkout").header("sec-fetch-site", "same-site").header("origin", "https://a.shop.test"),
            post("/checkout").header("origin", "null"),
            post("/strict"),
        ] {
            let (code, body) = status(req).await;
            assert_eq!(code, 403, "{body}");
            assert_eq!(body["error"], "cross_origin");
        }
        assert_eq!(backend.count(), before + 6);
        // In monitor mode a cross-site request is recorded and forwarded.
        let (code, body) = status(post("/shadow").header("sec-fetch-site", "cross-site")).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(backend.count(), before + 7);
    }
    proxy
        .assert_metrics(&[
            "payguard_decisions_total{route=\"checkout\",guard=\"origin\",decision=\"block\"} 8",
            "payguard_decisions_total{route=\"strict\",guard=\"origin\",decision=\"block\"} 2",
            "payguard_decisions_total{route=\"shadow\",guard=\"origin\",decision=\"would_block\"} 2",
        ])
        .await;
}

#[tokio::test]
async fn a_request_for_another_host_is_misdirected() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("web.toml", RULES)]).await;
    for c in [h1_client(&proxy.cert), h2_client(&proxy.cert)] {
        let before = backend.count();
        assert_eq!(status(c.get(proxy.url("/anything"))).await.0, 200);
        // The certificate covers 127.0.0.1, the rules do not: 421, whatever the route.
        let other = format!("https://127.0.0.1:{}/checkout", proxy.addr.port());
        let (code, body) = status(c.get(other)).await;
        assert_eq!(code, 421, "{body}");
        assert_eq!(body["error"], "misdirected_request");
        assert_eq!(backend.count(), before + 1);
    }
    // HTTP/1.1 with a Host header for a name below the wildcard, and one that only ends like it.
    let c = h1_client(&proxy.cert);
    assert_eq!(status(c.get(proxy.url("/x")).header("host", "www.shop.test")).await.0, 200);
    assert_eq!(status(c.get(proxy.url("/x")).header("host", "evilshop.test")).await.0, 421);
}
