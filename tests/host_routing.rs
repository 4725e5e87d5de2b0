//! payguard routes on exactly the host it forwards. A rule for `admin.shop.test` restricted by
//! `ip_allow` must not be walked around by an HTTP/2 request whose `:authority` names the public
//! host while its `host` header names the admin one, nor by an HTTP/1.1 absolute-form target that
//! disagrees with `Host`. The backend records the Host it received.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RULES: &str = r#"
[[route]]
name = "admin"
match = { host = "admin.shop.test", path = "/*" }
ip_allow = ["192.0.2.0/24"]

[[route]]
name = "public"
match = { path = "/*" }
"#;

async fn setup() -> (Backend, Proxy) {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("hosts.toml", RULES)]).await;
    (backend, proxy)
}

/// One HTTP/2 request with the given `:authority` and `host` headers; status and JSON body.
async fn h2_get(proxy: &Proxy, authority: &str, hosts: &[&str]) -> (u16, serde_json::Value) {
    let tls = tls_connect_alpn(proxy.addr, &proxy.cert, b"h2").await;
    let (mut send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder().uri(format!("https://{authority}/orders"));
    for h in hosts {
        req = req.header("host", *h);
    }
    let (res, _) = send.send_request(req.body(()).unwrap(), true).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), res).await.unwrap().unwrap();
    let status = res.status().as_u16();
    let mut body = res.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        bytes.extend_from_slice(&chunk);
    }
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

/// One raw HTTP/1.1 request; the status code.
async fn h1_raw(proxy: &Proxy, head: &str) -> u16 {
    let mut tls = tls_connect_alpn(proxy.addr, &proxy.cert, b"http/1.1").await;
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line: {text}"))
}

#[tokio::test]
async fn h2_host_header_that_disagrees_with_authority_is_refused() {
    let (backend, proxy) = setup().await;
    // The confirmed bypass: routed as the public site, forwarded as the admin one.
    let (status, body) = h2_get(&proxy, "www.shop.test", &["admin.shop.test"]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request");
    // A port that differs is another site too; two host headers are ambiguous.
    assert_eq!(h2_get(&proxy, "www.shop.test", &["www.shop.test:8443"]).await.0, 400);
    assert_eq!(h2_get(&proxy, "www.shop.test", &["www.shop.test", "www.shop.test"]).await.0, 400);
    assert_eq!(backend.count(), 0, "nothing ambiguous may reach the backend");

    // The admin site, however it is named, is under its own rules.
    let (status, body) = h2_get(&proxy, "admin.shop.test", &[]).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("ip_denied")));
    let (status, body) = h2_get(&proxy, "ADMIN.shop.test", &["admin.shop.test:443"]).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("ip_denied")));
    assert_eq!(backend.count(), 0);

    // The public site: the backend sees the host payguard routed on, and nothing else.
    for hosts in [&[][..], &["www.shop.test"][..], &["WWW.shop.test:443"][..]] {
        let (status, body) = h2_get(&proxy, "www.shop.test", hosts).await;
        assert_eq!(status, 200, "{hosts:?} {body}");
        let seen = backend.last();
        assert_eq!(seen.header_all("host"), ["www.shop.test"], "{hosts:?}");
        assert_eq!(seen.header("x-forwarded-host"), Some("www.shop.test"), "{hosts:?}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn h1_absolute_form_target_that_disagrees_with_host_is_refused() {
    let (backend, proxy) = setup().await;
    let req = |target: &str, host: &str| format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    assert_eq!(h1_raw(&proxy, &req("http://www.shop.test/orders", "admin.shop.test")).await, 400);
    assert_eq!(h1_raw(&proxy, &req("http://admin.shop.test/orders", "www.shop.test")).await, 400);
    assert_eq!(h1_raw(&proxy, &req("http://www.shop.test:8080/orders", "www.shop.test")).await, 400);
    assert_eq!(backend.count(), 0);
    assert_eq!(h1_raw(&proxy, &req("/orders", "admin.shop.test")).await, 403);
    assert_eq!(h1_raw(&proxy, &req("http://admin.shop.test/orders", "ADMIN.shop.test:80")).await, 403);
    assert_eq!(backend.count(), 0);
    assert_eq!(h1_raw(&proxy, &req("http://www.shop.test/orders", "www.shop.test:80")).await, 200);
    assert_eq!(backend.last().header_all("host"), ["www.shop.test"]);
    assert_eq!(h1_raw(&proxy, &req("/orders", "www.shop.test")).await, 200);
    assert_eq!(backend.last().header_all("host"), ["www.shop.test"]);
    proxy.stop().await;
}

/// A client may send a request for another host down a connection it opened (SNI) for one,
/// when the certificate covers both (HTTP/2 connection reuse). A host the certificate does not
/// cover was misdirected: 421, so the client retries on a connection of its own.
#[tokio::test]
async fn a_host_the_certificate_does_not_cover_is_misdirected() {
    let (backend, proxy) = setup().await;
    // The certificate covers localhost and *.shop.test; the connection's SNI is localhost.
    let (status, body) = h2_get(&proxy, "pay.other.test", &[]).await;
    assert_eq!((status, body["error"].as_str()), (421, Some("misdirected_request")), "{body}");
    assert_eq!(h2_get(&proxy, "shop.test", &[]).await.0, 421, "*.shop.test does not cover shop.test");
    let req = |host: &str| format!("GET /orders HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    assert_eq!(h1_raw(&proxy, &req("pay.other.test")).await, 421);
    assert_eq!(h1_raw(&proxy, &req("127.0.0.2")).await, 421);
    assert_eq!(backend.count(), 0, "a misdirected request reached the backend");
    // Covered hosts are served on the same connection kind: the SNI's own, a wildcard's, the IP's.
    assert_eq!(h2_get(&proxy, "www.shop.test", &[]).await.0, 200);
    assert_eq!(h2_get(&proxy, "LOCALHOST", &[]).await.0, 200);
    assert_eq!(h1_raw(&proxy, &req("127.0.0.1:443")).await, 200);
    assert_eq!(backend.count(), 3);
    proxy.stop().await;
}
