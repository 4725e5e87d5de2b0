//! End-to-end tests of the proxy core: real TLS, real HTTP/1.1 and HTTP/2 clients, a real
//! hyper backend, payguard on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;

#[tokio::test]
async fn http1_round_trip_with_header_hygiene() {
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "").await;
    let client = h1_client(&proxy.cert);
    let res = client
        .post(proxy.url("/api/orders?x=1&y=%20"))
        .header("content-type", "application/json")
        .header("connection", "x-hop-me")
        .header("x-hop-me", "secret")
        .header("x-payguard-verified", "stripe")
        .header("x-payguard-anything", "1")
        .header("forwarded", "for=6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-request-id", "client-id_1.2")
        .body(r#"{"a":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), http::Version::HTTP_11);
    // From an untrusted peer a client's id is replaced (and logged as client_request_id).
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(res.headers().get("x-backend-hop").is_none(), "Connection-named response header leaked");
    assert!(res.headers().get("keep-alive").is_none());
    assert_eq!(res.text().await.unwrap(), r#"{"ok":true}"#);

    let seen = backend.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path_and_query, "/api/orders?x=1&y=%20");
    assert_eq!(seen.body, br#"{"a":1}"#);
    assert_eq!(seen.header("x-request-id"), Some(id.as_str()));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"), "untrusted peer's XFF must be dropped");
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some(format!("localhost:{}", proxy.addr.port()).as_str()));
    assert_eq!(seen.header("host"), Some(format!("localhost:{}", proxy.addr.port()).as_str()));
    assert!(seen.header("x-hop-me").is_none());
    assert!(seen.header("x-payguard-verified").is_none());
    assert!(seen.header("x-payguard-anything").is_none());
    assert!(seen.header("forwarded").is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn request_id_is_kept_only_from_a_trusted_proxy() {
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "[client_ip]\ntrusted_proxies = [\"127.0.0.1/32\"]\n").await;
    let client = h1_client(&proxy.cert);
    let res = client.get(proxy.url("/x")).header("x-request-id", "edge-id_1.2").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "edge-id_1.2");
    assert_eq!(backend.last().header("x-request-id"), Some("edge-id_1.2"));
    // Even a trusted proxy's malformed id is replaced.
    let res = client.get(proxy.url("/x")).header("x-request-id", "bad id").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"].len(), 32);
    proxy.stop().await;
}

#[tokio::test]
async fn http2_round_trip() {
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "").await;
    let client = h2_client(&proxy.cert);
    let res = client
        .put(proxy.url("/api/x"))
        .header("x-request-id", "bad id with spaces")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), http::Version::HTTP_2);
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 32, "malformed request id must be replaced");
    let seen = backend.last();
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.body, b"hello");
    assert_eq!(seen.header("x-request-id"), Some(generated.as_str()));
    assert_eq!(seen.header("host"), Some(format!("localhost:{}", proxy.addr.port()).as_str()));
    // Many concurrent streams on one connection.
    let futs = (0..50).map(|i| client.get(proxy.url(&format!("/c/{i}"))).send());
    for r in futures_util::future::join_all(futs).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    assert_eq!(backend.count(), 51);
    proxy.stop().await;
}

#[tokio::test]
async fn trusted_proxy_xff_is_walked_right_to_left() {
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "[client_ip]\ntrusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n").await;
    let client = h1_client(&proxy.cert);
    let res =
        client.get(proxy.url("/")).header("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = backend.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("198.51.100.7, 10.1.2.3, 127.0.0.1"));
    assert_eq!(seen.header("x-real-ip"), Some("198.51.100.7"));
    proxy.stop().await;
}

#[tokio::test]
async fn backend_unreachable_is_502_and_slow_is_504() {
    let dead = closed_port().await;
    let proxy = start_proxy(dead, "").await;
    let client = h1_client(&proxy.cert);
    let res = client.get(proxy.url("/x")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()["content-type"], "application/json");
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let v = json(res).await;
    assert_eq!(v["error"], "upstream_unavailable");
    assert_eq!(v["request_id"], id.as_str());
    assert!(v["rule"].is_null());
    assert!(proxy.metrics().await.contains("payguard_upstream_errors_total{kind=\"connect\"} 1"));
    proxy.stop().await;

    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "").await;
    // Shorten the response timeout by rewriting the config: a hanging backend → 504.
    let path = proxy.dir.path().join("payguard.toml");
    let text =
        std::fs::read_to_string(&path).unwrap().replace("response_timeout = \"10s\"", "response_timeout = \"300ms\"");
    let config = payguard::config::Config::parse(&text, Some(&path)).unwrap();
    let slow = payguard::start(config).await.unwrap();
    let res = h2_client(&proxy.cert).get(format!("https://localhost:{}/hang", slow.addr.port())).send().await.unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(json(res).await["error"], "upstream_timeout");
    slow.shutdown().await;
    proxy.stop().await;
}

#[tokio::test]
async fn upload_and_download_stream_through() {
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "").await;
    let client = h1_client(&proxy.cert);

    // Upload: the body is produced only after the backend has seen its first bytes, which is
    // impossible unless payguard streams instead of buffering.
    const TOTAL: usize = 8 * 1024 * 1024;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let req = client.post(proxy.url("/upload")).body(reqwest::Body::wrap_stream(stream)).send();
    let producer = async {
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        for _ in 0..TOTAL / chunk.len() {
            tx.send(Ok(chunk.clone())).await.unwrap();
        }
        drop(tx);
    };
    let (res, ()) = tokio::join!(req, producer);
    assert_eq!(res.unwrap().status(), 200);
    let seen = backend.last();
    assert_eq!(seen.body_len, TOTAL as u64);
    assert!(seen.header("content-length").is_none(), "chunked upload should stay chunked");

    // Download: the first chunk reaches the client while the backend is still holding the rest.
    let res = client.get(proxy.url("/download?bytes=1048576&gated=1")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    backend.open_gate();
    let mut total = first.len();
    while let Some(c) = stream.next().await {
        total += c.unwrap().len();
    }
    assert_eq!(total, 1_048_576);
    proxy.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let backend = Backend::start().await;
    let mut proxy = start_proxy(backend.addr, "").await;
    let client = h1_client(&proxy.cert);
    let in_flight = tokio::spawn(client.get(proxy.url("/gate")).send());
    backend.arrived.notified().await;
    let running = proxy.running.take().unwrap();
    let health = running.health.clone();
    let stopping = tokio::spawn(running.shutdown());
    // Readiness flips at once.
    assert!(eventually(Duration::from_secs(5), || async { !health.ready() }).await);
    let ready = admin_get(proxy.admin, "/readyz").await;
    assert_eq!(ready.status(), 503);
    // New connections are refused once the listener is closed.
    let addr = proxy.addr;
    assert!(
        eventually(Duration::from_secs(5), || async move { tokio::net::TcpStream::connect(addr).await.is_err() }).await
    );
    backend.open_gate();
    let res = in_flight.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    tokio::time::timeout(Duration::from_secs(10), stopping).await.unwrap().unwrap();
}

#[tokio::test]
async fn admin_endpoints() {
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "").await;
    h1_client(&proxy.cert).get(proxy.url("/m")).send().await.unwrap();
    let health = admin_get(proxy.admin, "/healthz").await;
    assert_eq!(health.status(), 200);
    let v = json(health).await;
    assert_eq!(v["status"], "ok");
    assert_eq!(v["state"]["backend"], "memory");
    let ready = admin_get(proxy.admin, "/readyz").await;
    assert_eq!(ready.status(), 200);
    let m = proxy.metrics().await;
    assert!(m.contains("payguard_requests_total{route=\"\",status=\"200\"} 1"), "{m}");
    assert!(m.contains("payguard_request_duration_seconds_bucket"), "{m}");
    assert!(m.contains("payguard_open_connections"), "{m}");
    proxy.stop().await;
}

#[tokio::test]
async fn certificate_reload_and_broken_replacement() {
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "").await;
    let addr = proxy.addr;
    let old = proxy.cert.der.clone();
    let new = make_cert();
    assert!(handshake_ok(addr, &old).await);
    assert!(!handshake_ok(addr, &new.der).await);

    // Replace: write the key first, then the cert, via rename as deploy tools do.
    let dir = proxy.dir.path();
    std::fs::write(dir.join("new.key"), &new.key_pem).unwrap();
    std::fs::write(dir.join("new.crt"), &new.cert_pem).unwrap();
    std::fs::rename(dir.join("new.key"), dir.join("server.key")).unwrap();
    std::fs::rename(dir.join("new.crt"), dir.join("server.crt")).unwrap();
    let der = new.der.clone();
    assert!(eventually(Duration::from_secs(10), || handshake_ok(addr, &der)).await, "new cert not picked up");

    // A broken replacement: reported, old (= new) certificate keeps serving.
    std::fs::write(dir.join("server.crt"), "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
        .unwrap();
    let admin = proxy.admin;
    assert!(
        eventually(Duration::from_secs(10), || async move {
            let m = admin_get(admin, "/metrics").await.text().await.unwrap();
            m.contains("payguard_certificate_reloads_total{result=\"error\"} 1")
        })
        .await
    );
    assert!(handshake_ok(addr, &new.der).await);
    let res = h1_client(&new).get(proxy.url("/after")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    proxy.stop().await;
}

async fn handshake_ok(addr: std::net::SocketAddr, root: &[u8]) -> bool {
    let cfg = rustls_client(&[root], &[b"http/1.1"]);
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else { return false };
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.is_ok()
}

#[tokio::test]
async fn tls_versions_and_alpn() {
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "").await;
    // TLS 1.2 only client is accepted; h2 negotiated by ALPN.
    let cfg =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates({
                let mut s = rustls::RootCertStore::empty();
                s.add(rustls_pki_types::CertificateDer::from(proxy.cert.der.clone())).unwrap();
                s
            })
            .with_no_client_auth();
    let mut cfg = cfg;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let tls = connector.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(tls);
    proxy.stop().await;
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    cert: &TestCert,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let cfg = rustls_client(&[&cert.der], &[b"http/1.1"]);
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, within: Duration) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let r = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(r.is_ok(), "server did not close the connection within {within:?}");
    out
}

#[tokio::test]
async fn connections_past_max_are_refused_at_once() {
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "max_connections = 2\n").await;
    let a = tls_connect(proxy.addr, &proxy.cert).await;
    let _b = tls_connect(proxy.addr, &proxy.cert).await;
    // Both slots taken: a third connection is accepted and reset at once, before any TLS work,
    // instead of waiting in the kernel's backlog.
    let cfg = rustls_client(&[&proxy.cert.der], &[b"http/1.1"]);
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let third = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("a refused connection hung instead of being closed");
    assert!(third.is_err(), "a third connection got through with max_connections = 2");
    let m = proxy.metrics().await;
    assert!(m.contains("payguard_connections_refused_total 1"), "{m}");
    assert!(m.contains("payguard_open_connections 2"), "{m}");
    // A freed slot is usable again.
    drop(a);
    let admitted = eventually(Duration::from_secs(10), || async {
        let cfg = rustls_client(&[&proxy.cert.der], &[b"http/1.1"]);
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        let Ok(tcp) = tokio::net::TcpStream::connect(proxy.addr).await else { return false };
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await.is_ok()
    })
    .await;
    assert!(admitted, "freed slot not reused");
    proxy.stop().await;
}

#[tokio::test]
async fn oversized_header_is_431() {
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "max_header_size = \"8KiB\"\n").await;
    let c = h1_client(&proxy.cert);
    let res = c.get(proxy.url("/big")).header("x-big", "a".repeat(16 * 1024)).send().await.unwrap();
    assert_eq!(res.status(), 431);
    let res = c.get(proxy.url("/small")).header("x-small", "a".repeat(1024)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(backend.count(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "header_read_timeout = \"500ms\"\nidle_timeout = \"700ms\"\n").await;
    // Slowloris: a request head that never ends.
    let mut slow = tls_connect(proxy.addr, &proxy.cert).await;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: ").await.unwrap();
    read_to_close(&mut slow, Duration::from_secs(5)).await;
    // Idle keep-alive: one request, then silence.
    let mut idle = tls_connect(proxy.addr, &proxy.cert).await;
    idle.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let answer = read_to_close(&mut idle, Duration::from_secs(5)).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(backend.count(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn hsts_on_every_response_unless_off() {
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "").await;
    let client = h1_client(&proxy.cert);
    let res = client.get(proxy.url("/a")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["strict-transport-security"], "max-age=31536000");
    // payguard's own answers carry it too.
    let res = h2_client(&proxy.cert).get(proxy.url("/a")).header("x_under", "1").send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["strict-transport-security"], "max-age=31536000");
    proxy.stop().await;

    let proxy = start_proxy(backend.addr, "hsts_max_age = \"1h\"").await;
    let res = h1_client(&proxy.cert).get(proxy.url("/a")).send().await.unwrap();
    assert_eq!(res.headers()["strict-transport-security"], "max-age=3600");
    proxy.stop().await;

    let proxy = start_proxy(backend.addr, "hsts_max_age = \"off\"").await;
    let res = h1_client(&proxy.cert).get(proxy.url("/a")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("strict-transport-security").is_none());
    proxy.stop().await;

    // Headers ops add in front of a store they cannot change; what the backend sets wins.
    let extra = "[server.response_headers]\nX-Frame-Options = \"SAMEORIGIN\"\nX-Content-Type-Options = \"nosniff\"\nContent-Type = \"text/x-never\"";
    let proxy = start_proxy(backend.addr, extra).await;
    let res = h1_client(&proxy.cert).get(proxy.url("/a")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-frame-options"], "SAMEORIGIN");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_ne!(res.headers()["content-type"], "text/x-never");
    assert_eq!(res.headers()["strict-transport-security"], "max-age=31536000");
    proxy.stop().await;
}

#[tokio::test]
async fn admin_token_guards_metrics_but_not_the_probes() {
    let backend = Backend::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let token = "9f2c4e6a8b0d1f3a5c7e9b1d3f5a7c9e";
    let file = secrets.path().join("admin.token");
    std::fs::write(&file, token).unwrap();
    let proxy = start_proxy(backend.addr, &format!("admin_token = \"file:{}\"\n", file.display())).await;
    let url = |p: &str| format!("http://{}{p}", proxy.admin);
    let http = reqwest::Client::builder().use_preconfigured_tls(rustls_client(&[], &[])).build().unwrap();
    let res = http.get(url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let res = http.get(url("/metrics")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = http.get(url("/metrics")).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("payguard_"));
    assert_eq!(http.get(url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(url("/readyz")).send().await.unwrap().status(), 200);
    proxy.stop().await;
}

/// A route that refuses any body over 1 KiB by its `Content-Length`, before reading it.
const SMALL: &[(&str, &str)] =
    &[("00-small.toml", "[[route]]\nname = \"small\"\nmatch = { path = \"/small\" }\nmax_body = \"1KiB\"\n")];

/// HTTP/2: a refusal decided before the body was read (413 by `Content-Length`) reaches a client
/// that goes on uploading, and its stream ends cleanly: payguard reads and drops the rest of the
/// body instead of resetting the stream (an RST_STREAM right after the answer makes some clients,
/// curl 7 among them, report an error instead of the 413).
#[tokio::test]
async fn an_early_refusal_lets_an_http2_upload_finish() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", SMALL).await;
    let tls = tls_connect_alpn(proxy.addr, &proxy.cert, b"h2").await;
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = http::Request::post("https://localhost/small").header("content-length", "100000").body(()).unwrap();
    let (res, mut stream) = send.send_request(req, false).unwrap();
    stream.send_data(Bytes::from(vec![b'x'; 16_384]), false).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), res).await.unwrap().unwrap();
    assert_eq!(res.status(), 413);
    // The rest of the upload, after the answer.
    stream.send_data(Bytes::from(vec![b'x'; 100_000 - 16_384]), true).unwrap();
    let reset = tokio::time::timeout(Duration::from_secs(2), std::future::poll_fn(|cx| stream.poll_reset(cx))).await;
    assert!(!matches!(reset, Ok(Ok(_))), "the stream was reset: {reset:?}");
    assert_eq!(backend.count(), 0);
}

/// HTTP/1.1: the same refusal keeps the connection: payguard reads the rest of the body, so the
/// answer is not lost to a TCP reset and the next request is served on the same connection.
#[tokio::test]
async fn an_early_refusal_lets_an_http1_upload_finish_and_keeps_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", SMALL).await;
    let mut tls = tls_connect_alpn(proxy.addr, &proxy.cert, b"http/1.1").await;
    let head = "POST /small HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100000\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&[b'x'; 10_000]).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    tls.write_all(&[b'x'; 90_000]).await.unwrap();
    tls.write_all(b"GET /next HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await.unwrap().unwrap();
    let next = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(next.starts_with("HTTP/1.1 200"), "the connection carried the next request: {next:?}");
    assert_eq!(backend.last().path_and_query, "/next");
}
