//! Review of edges an earlier security review did not reach, each pinned by observable
//! behaviour (status codes, JSON error codes, what the backend received on the wire):
//!
//! 1. bodies without a declared length (HTTP/1.1 chunked, HTTP/2 without `content-length`)
//!    past `max_body`, on a route that buffers the body and on one that streams it;
//! 2. HTTP/2 header fields no HTTP/2 client may send (CR, LF, NUL, upper case names,
//!    connection-specific fields, `te` other than `trailers`), sent by `tests/h2/hostile.py
//!    inject` with the h2 library's outbound validation off: refused, never forwarded;
//! 3. the rate-limit and replay maps when the client chooses the key: what bounds them;
//! 4. hostile JSON bodies against JSON schema and field patterns (regex engine, depth, width);
//! 5. Redis credentials in logs, and a `rediss://` URL the client can never use.
//!
//! The backend for 1 and 2 is a raw HTTP/1.1 server that records every request head verbatim
//! and counts body bytes as they arrive (so a truncated forward is seen as truncated).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// Log capture: every test calls `capture()` before it starts a proxy, so this subscriber (not
// the test writer of `common`) is the global one, and the Redis test can search what was logged.

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("payguard=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        logs
    })
    .clone()
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 backend.

#[derive(Debug, Clone, Default)]
struct RawRequest {
    /// Which accepted connection carried it.
    conn: usize,
    /// Request line and header lines, exactly as received.
    head: String,
    /// Body bytes received so far (chunked: decoded data bytes).
    body: u64,
    /// The body ended as its framing says (last chunk, or Content-Length reached).
    complete: bool,
}

impl RawRequest {
    fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }
    /// Lower-cased names of the header lines.
    fn header_names(&self) -> Vec<String> {
        self.head.split("\r\n").skip(1).filter_map(|l| l.split_once(':')).map(|(n, _)| n.to_ascii_lowercase()).collect()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    }
}

#[derive(Clone)]
struct RawBackend {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<RawRequest>>>,
    closed: Arc<Mutex<HashSet<usize>>>,
}

/// Where one request's progress is recorded.
struct Progress {
    requests: Arc<Mutex<Vec<RawRequest>>>,
    idx: usize,
}

impl Progress {
    fn set(&self, body: u64, complete: bool) {
        let mut r = self.requests.lock().unwrap();
        r[self.idx].body = body;
        r[self.idx].complete = complete;
    }
}

const OK_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads more into `buf`; false at EOF or on an error.
async fn fill(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = vec![0u8; 64 * 1024];
    match tcp.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn line(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = find(buf, b"\r\n") {
            let l = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            return Some(l);
        }
        if !fill(tcp, buf).await {
            return None;
        }
    }
}

async fn read_chunked(tcp: &mut TcpStream, buf: &mut Vec<u8>, p: &Progress) -> bool {
    let mut total = 0u64;
    loop {
        let Some(size_line) = line(tcp, buf).await else { return false };
        let Ok(size) = u64::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16) else {
            return false;
        };
        if size == 0 {
            loop {
                match line(tcp, buf).await {
                    None => return false,
                    Some(l) if l.is_empty() => break,
                    Some(_) => {}
                }
            }
            p.set(total, true);
            return true;
        }
        while (buf.len() as u64) < size + 2 {
            p.set(total + (buf.len() as u64).min(size), false);
            if !fill(tcp, buf).await {
                p.set(total + (buf.len() as u64).min(size), false);
                return false;
            }
        }
        total += size;
        buf.drain(..(size + 2) as usize);
        p.set(total, false);
    }
}

async fn read_sized(tcp: &mut TcpStream, buf: &mut Vec<u8>, len: u64, p: &Progress) -> bool {
    while (buf.len() as u64) < len {
        p.set(buf.len() as u64, false);
        if !fill(tcp, buf).await {
            p.set((buf.len() as u64).min(len), false);
            return false;
        }
    }
    buf.drain(..len as usize);
    p.set(len, true);
    true
}

impl RawBackend {
    async fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = RawBackend { addr: listener.local_addr().unwrap(), requests: Arc::default(), closed: Arc::default() };
        let state = b.clone();
        tokio::spawn(async move {
            let mut next = 0usize;
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (state, conn) = (state.clone(), next);
                next += 1;
                tokio::spawn(async move {
                    state.serve(tcp, conn).await;
                    state.closed.lock().unwrap().insert(conn);
                });
            }
        });
        b
    }

    async fn serve(&self, mut tcp: TcpStream, conn: usize) {
        let mut buf = Vec::new();
        loop {
            let end = loop {
                if let Some(i) = find(&buf, b"\r\n\r\n") {
                    break i + 4;
                }
                if !fill(&mut tcp, &mut buf).await {
                    return;
                }
            };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            let req = RawRequest { conn, head, ..RawRequest::default() };
            let chunked = req.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            let len = req.header("content-length").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let idx = {
                let mut r = self.requests.lock().unwrap();
                r.push(req);
                r.len() - 1
            };
            let p = Progress { requests: self.requests.clone(), idx };
            let ok = if chunked {
                read_chunked(&mut tcp, &mut buf, &p).await
            } else {
                read_sized(&mut tcp, &mut buf, len, &p).await
            };
            if !ok || tcp.write_all(OK_RESPONSE).await.is_err() {
                return;
            }
        }
    }

    fn requests(&self) -> Vec<RawRequest> {
        self.requests.lock().unwrap().clone()
    }

    fn to(&self, prefix: &str) -> Vec<RawRequest> {
        self.requests().into_iter().filter(|r| r.target().starts_with(prefix)).collect()
    }

    /// Waits (bounded) until requests to `prefix` arrived and every connection that carried one
    /// is closed, i.e. the backend has seen all it will ever see of them.
    async fn settled(&self, prefix: &str) -> Vec<RawRequest> {
        let done = eventually(Duration::from_secs(5), || async {
            let reqs = self.to(prefix);
            let closed = self.closed.lock().unwrap().clone();
            !reqs.is_empty() && reqs.iter().all(|r| closed.contains(&r.conn))
        })
        .await;
        let reqs = self.to(prefix);
        assert!(done, "requests to {prefix} did not settle: {reqs:?}");
        reqs
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Body limits without a declared length.

const BODY_RULES: &str = r#"
[defaults]
max_body = "1MiB"

[[route]]
name = "buffered"
match = { path = "/buf/*", methods = ["POST"] }
max_body = "16KiB"
[route.validate]
content_type = ["application/json"]
fields = [{ at = "/amount", type = "integer", min = 1 }]

[[route]]
name = "streamed"
match = { path = "/stream/*", methods = ["POST"] }
max_body = "16KiB"
"#;

const CAP: u64 = 16 * 1024;

/// The pieces as a body of no declared length (chunked on HTTP/1.1, DATA frames without
/// `content-length` on HTTP/2).
fn unsized_body(chunks: Vec<Vec<u8>>) -> reqwest::Body {
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>)))
}

fn chunks_of(data: &[u8], size: usize) -> Vec<Vec<u8>> {
    data.chunks(size).map(<[u8]>::to_vec).collect()
}

async fn expect_error(res: reqwest::Response, status: u16, code: &str, rule: Option<&str>) {
    assert_eq!(res.status().as_u16(), status);
    let v = json(res).await;
    assert_eq!(v["error"], code, "{v}");
    if let Some(rule) = rule {
        assert_eq!(v["rule"], rule, "{v}");
    }
}

async fn body_caps(make_client: fn(&TestCert) -> reqwest::Client, proto: &str) {
    let backend = RawBackend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("body.toml", BODY_RULES)]).await;
    let client = make_client(&proxy.cert);
    let url = |p: &str| proxy.url(&format!("{p}/{proto}"));

    // (a) Buffering route, 4x the cap in 4 KiB pieces: 413 before anything is forwarded.
    let over = vec![b' '; 4 * CAP as usize];
    let res = client
        .post(url("/buf/over"))
        .header("content-type", "application/json")
        .body(unsized_body(chunks_of(&over, 4096)))
        .send()
        .await
        .unwrap();
    expect_error(res, 413, "body_too_large", Some("buffered")).await;
    // The decision came before any forward could start: nothing may have reached the backend.
    assert!(backend.to("/buf/").is_empty(), "{:?}", backend.to("/buf/"));

    // Exactly at the cap, valid JSON, same framing: forwarded whole.
    let mut ok = br#"{"amount": 5, "pad": ""#.to_vec();
    ok.resize(CAP as usize - 2, b'p');
    ok.extend_from_slice(b"\"}");
    assert_eq!(ok.len() as u64, CAP);
    let res = client
        .post(url("/buf/ok"))
        .header("content-type", "application/json")
        .body(unsized_body(chunks_of(&ok, 4096)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = backend.to("/buf/");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].target().starts_with("/buf/ok") && seen[0].complete && seen[0].body == CAP, "{seen:?}");

    // (b) Streaming route: the first 16 KiB stream through, the piece past the cap cuts it.
    let res = client.post(url("/stream/over")).body(unsized_body(chunks_of(&over, 4096))).send().await.unwrap();
    expect_error(res, 413, "body_too_large", Some("streamed")).await;
    let seen = backend.settled("/stream/over").await;
    eprintln!(
        "{proto}: streamed route, {} bytes sent against a {CAP}-byte cap: the backend saw {:?} (bytes, complete)",
        over.len(),
        seen.iter().map(|r| (r.body, r.complete)).collect::<Vec<_>>()
    );
    for r in &seen {
        assert!(r.body <= CAP, "the backend received {} bytes past a {CAP}-byte cap: {r:?}", r.body);
        // A cut stream must not look finished: no last chunk, the connection just ends.
        assert!(!r.complete, "a body cut at the cap reached the backend as a complete message: {r:?}");
    }
    // At the cap exactly, same framing: forwarded whole.
    let at = vec![b'a'; CAP as usize];
    let res = client.post(url("/stream/at")).body(unsized_body(chunks_of(&at, 4096))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = backend.to("/stream/at");
    assert!(seen.len() == 1 && seen[0].complete && seen[0].body == CAP, "{seen:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn h1_chunked_bodies_past_max_body_are_413_and_never_forwarded_past_the_cap() {
    capture();
    body_caps(h1_client, "h1").await;
}

#[tokio::test]
async fn h2_bodies_without_content_length_past_max_body_are_413_and_never_forwarded_past_the_cap() {
    capture();
    body_caps(h2_client, "h2").await;
}

// ---------------------------------------------------------------------------------------------
// 2. HTTP/2 header fields no client may send.

async fn hostile(proxy: &Proxy, args: &[&str]) -> Value {
    let mut cmd = std::process::Command::new(python());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h2/hostile.py"))
        .arg("127.0.0.1")
        .arg(proxy.addr.port().to_string())
        .arg(proxy.dir.path().join("server.crt"))
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "hostile.py failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
}

/// Header fields as (name, value).
type Fields = Vec<(&'static str, &'static str)>;

/// Cases refused by the HTTP/2 layer: (name, pseudo-header overrides, extra header fields).
fn refused_h2_cases() -> Vec<(&'static str, Fields, Fields)> {
    let inj = "v\r\nx-injected: 1";
    vec![
        ("value_crlf", vec![], vec![("x-a", inj)]),
        ("value_lf", vec![], vec![("x-a", "v\nx-injected: 1")]),
        ("value_cr", vec![], vec![("x-a", "v\rx-injected: 1")]),
        ("value_nul", vec![], vec![("x-a", "v\u{0}x-injected")]),
        ("value_crlf_crlf_smuggle", vec![], vec![("x-a", "v\r\n\r\nGET /smuggled HTTP/1.1\r\nx-injected: 1")]),
        ("host_crlf", vec![], vec![("host", "localhost\r\nx-injected: 1")]),
        ("name_crlf", vec![], vec![("x-a\r\nx-injected", "1")]),
        ("name_upper_case", vec![], vec![("X-Injected", "1")]),
        ("name_colon", vec![], vec![("x-injected:1", "1")]),
        ("name_space", vec![], vec![("x-injected 1", "1")]),
        ("path_crlf", vec![(":path", "/inject/path_crlf\r\nx-injected: 1")], vec![]),
        (
            "path_space_request_line",
            vec![(":path", "/inject/x HTTP/1.1\r\nx-injected: 1\r\n\r\nGET /smuggled")],
            vec![],
        ),
        ("method_crlf", vec![(":method", "GET /smuggled HTTP/1.1\r\nx-injected: 1\r\n\r\nGET")], vec![]),
        ("authority_crlf", vec![(":authority", "localhost\r\nx-injected: 1")], vec![]),
        ("connection", vec![], vec![("connection", "x-injected"), ("x-injected", "1")]),
        ("keep_alive", vec![], vec![("keep-alive", "timeout=5")]),
        ("proxy_connection", vec![], vec![("proxy-connection", "keep-alive")]),
        ("transfer_encoding", vec![], vec![("transfer-encoding", "chunked")]),
        ("upgrade", vec![], vec![("upgrade", "h2c")]),
        ("te_gzip", vec![], vec![("te", "gzip")]),
        ("te_trailers_gzip", vec![], vec![("te", "trailers, gzip")]),
        ("value_del", vec![], vec![("x-a", "v\u{7f}x-injected")]),
        ("empty_name", vec![], vec![("", "x-injected")]),
        ("pseudo_after_regular", vec![], vec![(":x-injected", "1")]),
        ("path_absolute_form", vec![(":path", "http://evil.example/inject/x-injected")], vec![]),
        ("authority_userinfo", vec![(":authority", "localhost@evil.example")], vec![]),
    ]
}

#[tokio::test]
async fn h2_control_characters_and_connection_specific_fields_are_refused_and_never_forwarded() {
    capture();
    let backend = RawBackend::start().await;
    let proxy = start_proxy(backend.addr, "").await;
    let case = |name: &str, pseudo: &[(&str, &str)], headers: &[(&str, &str)]| {
        let mut p = serde_json::Map::new();
        p.insert(":path".into(), Value::from(format!("/inject/{name}")));
        for (k, v) in pseudo {
            p.insert((*k).into(), Value::from(*v));
        }
        serde_json::json!({"name": name, "pseudo": p, "headers": headers.iter().map(|(n, v)| [n, v]).collect::<Vec<_>>()})
    };
    let refused = refused_h2_cases();
    let mut spec: Vec<Value> = refused.iter().map(|(n, p, h)| case(n, p, h)).collect();
    // Allowed: `te: trailers` (the one value HTTP/2 permits) and a plain request as control.
    spec.push(case("te_trailers", &[], &[("te", "trailers")]));
    spec.push(case("control", &[], &[("x-plain", "1")]));
    let v = hostile(&proxy, &["inject", "--spec", &Value::from(spec).to_string()]).await;
    let cases = &v["cases"];

    for (name, _, _) in &refused {
        let r = &cases[*name];
        let status = r["status"]["1"].as_u64();
        let reset = r["reset"]["1"].as_str();
        let goaway = r["goaway"]["error"].as_str();
        eprintln!("{name}: status {status:?}, RST_STREAM {reset:?}, GOAWAY {goaway:?}");
        assert!(status.is_none() || status == Some(400), "{name} was answered {status:?}: {r}");
        assert!(
            reset == Some("PROTOCOL_ERROR") || goaway == Some("PROTOCOL_ERROR") || status == Some(400),
            "{name} was not refused: {r}"
        );
    }
    for name in ["te_trailers", "control"] {
        assert_eq!(cases[name]["status"]["1"], 200, "{name}: {}", cases[name]);
    }

    // What the backend saw: the two allowed requests, nothing injected, nothing smuggled.
    let seen = backend.requests();
    let targets: Vec<&str> = seen.iter().map(RawRequest::target).collect();
    assert_eq!(targets, ["/inject/te_trailers", "/inject/control"], "{seen:#?}");
    for r in &seen {
        let lower = r.head.to_ascii_lowercase();
        assert!(!lower.contains("injected") && !lower.contains("smuggled"), "{}", r.head);
        // Every header line is a well-formed `name: value` line.
        for l in r.head.trim_end_matches("\r\n").split("\r\n").skip(1) {
            let (n, v) = l.split_once(": ").unwrap_or_else(|| panic!("malformed header line {l:?}"));
            assert!(n.bytes().all(|b| b.is_ascii_graphic() && b != b':'), "{l:?}");
            assert!(!v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0), "{l:?}");
        }
    }
    // `te: trailers` is hop-by-hop: dropped, not passed to an HTTP/1.1 backend.
    let te = &seen[0];
    assert!(!te.header_names().iter().any(|n| n == "te"), "{}", te.head);
    eprintln!("te: trailers as forwarded:\n{}", te.head);
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Rate-limit and replay maps when the client chooses the key.

const RL_RULES: &str = r#"
[[route]]
name = "by-key"
match = { path = "/k/*" }
rate_limit = { key = "header:x-api-key", rate = "1/h", burst = 1 }

[[route]]
name = "by-ip"
match = { path = "/ip/*" }
rate_limit = { key = "ip", rate = "1/h", burst = 1 }

[[route]]
name = "fast"
match = { path = "/fast/*" }
rate_limit = { key = "header:x-api-key", rate = "1000/s", burst = 1 }
"#;

/// The in-memory buckets are capped (`[state] max_rate_keys`): a bucket is dropped once it is
/// full again (for a key seen once: one emission interval, here an hour), and at the cap a new
/// key is refused (`StoreError::Full`, so the route's `on_state_error.rate_limit` decides) while
/// every known key is still limited. Before the cap existed, 20,000 fresh keys on a 1/h limit
/// simply stayed.
#[tokio::test]
async fn rate_limit_buckets_are_capped_and_evicted_when_full_again() {
    use payguard::guard::rate_limit::{bucket_key, gcra};
    use payguard::state::memory::MemoryRateStore;
    use payguard::state::{RateDecision, StoreError};
    let set = payguard::rules::load_sources(&[(PathBuf::from("rl.toml"), RL_RULES.to_owned())]).unwrap();
    let route = |name: &str| set.routes().iter().find(|r| &*r.name == name).unwrap().clone();
    let (slow, fast) = (route("by-key"), route("fast"));
    let (slow_spec, fast_spec) = (slow.rate_limit.clone().unwrap(), fast.rate_limit.clone().unwrap());
    const CAP: usize = 20_000;
    let store = MemoryRateStore::new(CAP);
    let ip = "192.0.2.1".parse().unwrap();
    let key = |i: usize| {
        let mut h = http::HeaderMap::new();
        h.insert("x-api-key", format!("attacker-{i}").parse().unwrap());
        bucket_key(&slow_spec.key, ip, &h)
    };
    let t = Instant::now();
    for i in 0..CAP / 2 {
        let now = Instant::now();
        assert_eq!(store.check_at(slow.fingerprint, key(i), gcra(&slow_spec), now), Ok(RateDecision::Allowed));
        assert_eq!(store.check_at(fast.fingerprint, key(i), gcra(&fast_spec), now), Ok(RateDecision::Allowed));
    }
    eprintln!("{CAP} fresh header keys: {:.0} ns per check", t.elapsed().as_nanos() as f64 / CAP as f64);
    assert_eq!(store.len(), CAP);
    // At the cap: a new key is refused, a known one is still limited.
    let now = Instant::now();
    assert_eq!(store.check_at(slow.fingerprint, key(CAP), gcra(&slow_spec), now), Err(StoreError::Full));
    assert!(matches!(
        store.check_at(slow.fingerprint, key(0), gcra(&slow_spec), now),
        Ok(RateDecision::Limited { .. })
    ));
    // 1000/s refills in 1 ms: a sweep drops those buckets and makes room; 1/h buckets stay.
    let later = now + Duration::from_millis(5);
    assert_eq!(store.sweep(later), CAP / 2, "a 1/h bucket is not full again within the hour");
    assert_eq!(store.check_at(slow.fingerprint, key(CAP), gcra(&slow_spec), later), Ok(RateDecision::Allowed));
}

fn headers_of(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| ((*n).to_string(), v.clone())).collect()
}

/// Sends GETs with the given headers, 64 at a time; returns the statuses in order.
async fn many(client: &reqwest::Client, url: String, per_request: Vec<Vec<(String, String)>>) -> Vec<u16> {
    futures_util::stream::iter(per_request.into_iter().map(|hs| {
        let mut rb = client.get(url.clone());
        for (n, v) in hs {
            rb = rb.header(n, v);
        }
        async move { rb.send().await.unwrap().status().as_u16() }
    }))
    .buffered(64)
    .collect()
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_api_keys_and_forwarded_ips_each_get_a_full_bucket() {
    capture();
    let backend = RawBackend::start().await;
    let extra = "[client_ip]\ntrusted_proxies = [\"127.0.0.1/32\"]\n";
    let proxy = start_proxy_with_rules(backend.addr, extra, &[("rl.toml", RL_RULES)]).await;
    let c = h2_client(&proxy.cert);
    const N: usize = 2_000;

    // One key, twice: the limit works (burst 1 at 1/h).
    let same = vec![headers_of(&[("x-api-key", "k-same".into())]); 2];
    assert_eq!(many(&c, proxy.url("/k/a"), same).await, [200, 429]);
    // N fresh keys: every one a fresh bucket, every request through.
    let t = Instant::now();
    let fresh = (0..N).map(|i| headers_of(&[("x-api-key", format!("attacker-{i}"))])).collect();
    let statuses = many(&c, proxy.url("/k/a"), fresh).await;
    let per = t.elapsed().as_secs_f64() * 1e6 / N as f64;
    assert!(statuses.iter().all(|s| *s == 200), "{:?}", statuses.iter().filter(|s| **s != 200).count());
    // The same through a trusted proxy's X-Forwarded-For: one fresh bucket per claimed address.
    let same = vec![headers_of(&[("x-forwarded-for", "198.51.100.7".into())]); 2];
    assert_eq!(many(&c, proxy.url("/ip/a"), same).await, [200, 429]);
    let fresh = (0..N)
        .map(|i| headers_of(&[("x-forwarded-for", format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))]))
        .collect();
    let statuses = many(&c, proxy.url("/ip/a"), fresh).await;
    assert!(statuses.iter().all(|s| *s == 200));
    eprintln!("{N} fresh rate-limit keys through the proxy: {per:.0} µs per request (debug build, h2, 64 in flight)");
    assert_eq!(backend.to("/k/").len(), N + 1);
    assert_eq!(backend.to("/ip/").len(), N + 1);
    proxy.stop().await;
}

const SECRET: &str = "review-edges-secret";

const NONCE_RULES: &str = r#"
[[route]]
name = "closed"
match = { path = "/cb/closed/*", methods = ["POST"] }
[route.signature]
provider = "hmac"
header = "x-signature"
prefix = ""
timestamp_header = "x-timestamp"
nonce_header = "x-nonce"
tolerance = "5m"
message = "{method}\n{path}\n{timestamp}\n{nonce}\n{body}"
secrets = ["file:hook.secret"]

[[route]]
name = "open"
match = { path = "/cb/open/*", methods = ["POST"] }
on_state_error = { replay = "fail_open" }
[route.signature]
provider = "hmac"
header = "x-signature"
prefix = ""
timestamp_header = "x-timestamp"
nonce_header = "x-nonce"
tolerance = "5m"
message = "{method}\n{path}\n{timestamp}\n{nonce}\n{body}"
secrets = ["file:hook.secret"]
"#;

fn signed(c: &reqwest::Client, proxy: &Proxy, path: &str, nonce: &str) -> reqwest::RequestBuilder {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
    let body = r#"{"event":"paid"}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("POST\n{path}\n{ts}\n{nonce}\n{body}").as_bytes());
    c.post(proxy.url(path))
        .header("x-signature", hex::encode(mac.finalize().into_bytes()))
        .header("x-timestamp", ts)
        .header("x-nonce", nonce)
        .body(body)
}

/// `[state] max_replay_keys` (at least 1,000) is a hard cap: a full store refuses new keys
/// (503 on a fail_closed route) and still knows the ones it holds. On a fail_open route a full
/// store means no replay protection at all for new callbacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_replay_store_refuses_new_keys_and_remembers_old_ones() {
    capture();
    let backend = RawBackend::start().await;
    let extra = "[state]\nmax_replay_keys = 1000\n";
    let files = [("hook.secret", SECRET), ("cb.toml", NONCE_RULES)];
    let proxy = start_proxy_with_rules(backend.addr, extra, &files).await;
    let c = h2_client(&proxy.cert);
    let path = "/cb/closed/x";
    let t = Instant::now();
    let statuses: Vec<u16> = futures_util::stream::iter((0..1000).map(|i| {
        let req = signed(&c, &proxy, path, &format!("n-{i}"));
        async move { req.send().await.unwrap().status().as_u16() }
    }))
    .buffered(64)
    .collect()
    .await;
    eprintln!("1,000 signed callbacks with fresh nonces: {:.0} µs each", t.elapsed().as_secs_f64() * 1e6 / 1000.0);
    assert!(statuses.iter().all(|s| *s == 200));
    // Full: a new nonce is refused, an old one is still a replay.
    expect_error(signed(&c, &proxy, path, "n-new").send().await.unwrap(), 503, "state_unavailable", Some("closed"))
        .await;
    expect_error(signed(&c, &proxy, path, "n-0").send().await.unwrap(), 401, "replay", Some("closed")).await;
    expect_error(signed(&c, &proxy, path, "n-999").send().await.unwrap(), 401, "replay", Some("closed")).await;
    // fail_open: forwarded without a reservation, so the very same callback passes again.
    for _ in 0..2 {
        assert_eq!(signed(&c, &proxy, "/cb/open/x", "o-1").send().await.unwrap().status(), 200);
    }
    assert_eq!(backend.to("/cb/closed/").len(), 1000);
    assert_eq!(backend.to("/cb/open/").len(), 2, "a replay passed on the fail_open route while the store was full");
    let m = proxy.metrics().await;
    assert!(m.contains("payguard_decisions_total{route=\"open\",guard=\"replay\",decision=\"fail_open\"} 2"), "{m}");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Hostile JSON against JSON schema and field patterns.

const HOSTILE_SCHEMA: &str = r##"{
  "anyOf": [
    {"type": "integer"},
    {"type": "array", "items": {"$ref": "#"}},
    {"type": "object",
     "properties": {"s": {"type": "string", "pattern": "^(a|aa)+$"}},
     "patternProperties": {"^k[0-9]+$": {"type": "integer"}, "^(x+x+)+y$": {"type": "string"}},
     "additionalProperties": {"$ref": "#"}}
  ]
}"##;

const SCHEMA_RULES: &str = r#"
[[route]]
name = "schema"
match = { path = "/schema", methods = ["POST"] }
max_body = "2MiB"
[route.validate]
content_type = ["application/json"]
json_schema = "hostile.schema.json"

[[route]]
name = "field"
match = { path = "/field", methods = ["POST"] }
max_body = "2MiB"
[route.validate]
content_type = ["application/json"]
fields = [{ at = "/s", type = "string", pattern = "^(a|aa)+$" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_json_is_refused_or_passed_in_linear_time_without_a_crash() {
    capture();
    let backend = RawBackend::start().await;
    let files = [("hostile.schema.json", HOSTILE_SCHEMA), ("schema.toml", SCHEMA_RULES)];
    let proxy = start_proxy_with_rules(backend.addr, "", &files).await;
    let c = h1_client(&proxy.cert);
    const MIB: usize = 1 << 20;
    let nested = |open: &str, close: &str, depth: usize| format!("{}1{}", open.repeat(depth), close.repeat(depth));
    let wide_array = format!("[{}0]", "0,".repeat(MIB / 2 - 1));
    let mut wide_object = (0..60_000).map(|i| format!("\"k{i}\":{i}")).collect::<Vec<_>>().join(",");
    wide_object = format!("{{{wide_object}}}");
    let long_key = format!("{{\"{}\":1}}", "x".repeat(MIB - 8));
    let s_bad = format!("{{\"s\":\"{}!\"}}", "a".repeat(MIB - 10));
    let s_good = format!("{{\"s\":\"{}\"}}", "a".repeat(MIB - 10));
    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("1 MiB of nested arrays", "/schema", nested("[", "]", MIB / 2), 400),
        ("1 MiB of nested objects", "/schema", nested("{\"a\":", "}", MIB / 6), 400),
        ("nesting 129 deep", "/schema", nested("[", "]", 129), 400),
        ("nesting 100 deep, $ref # at each level", "/schema", nested("[", "]", 100), 200),
        ("array of 524,288 integers", "/schema", wide_array, 200),
        ("object of 60,000 keys vs patternProperties", "/schema", wide_object, 200),
        ("1 MiB key vs ^(x+x+)+y$", "/schema", long_key, 200),
        ("1 MiB string vs ^(a|aa)+$ (schema), no match", "/schema", s_bad.clone(), 400),
        ("1 MiB string vs ^(a|aa)+$ (field), no match", "/field", s_bad, 400),
        ("1 MiB string vs ^(a|aa)+$ (field), match", "/field", s_good, 200),
    ];
    for (name, path, body, status) in cases {
        let len = body.len();
        let t = Instant::now();
        let res = c.post(proxy.url(path)).header("content-type", "application/json").body(body).send().await.unwrap();
        let got = res.status().as_u16();
        let v = res.bytes().await.unwrap();
        eprintln!("{name} ({len} bytes): {got} in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(got, status, "{name}: {}", String::from_utf8_lossy(&v));
        if status == 400 {
            assert_eq!(serde_json::from_slice::<Value>(&v).unwrap()["error"], "invalid_request", "{name}");
        }
    }
    // The proxy is still there.
    let res = c.post(proxy.url("/field")).header("content-type", "application/json").body(r#"{"s":"aa"}"#).send().await;
    assert_eq!(res.unwrap().status(), 200);
    assert_eq!(backend.to("/schema").len(), 4);
    assert_eq!(backend.to("/field").len(), 2);
    proxy.stop().await;
}

/// The schema's patterns are compiled by the `regex` crate (`PatternOptions::regex()`), which
/// has no backtracking features: a schema or a field rule that needs them does not load, so
/// fancy-regex (which jsonschema also links) is never reached from a request.
#[test]
fn backtracking_regex_features_do_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let load = |schema: &str, field_pattern: &str| {
        std::fs::write(dir.path().join("s.json"), schema).unwrap();
        let rules = format!(
            "[[route]]\nname = \"r\"\nmatch = {{ path = \"/r\" }}\n[route.validate]\njson_schema = \"s.json\"\nfields = [{{ at = \"/f\", type = \"string\", pattern = {field_pattern:?} }}]\n"
        );
        payguard::rules::load_sources(&[(dir.path().join("r.toml"), rules)])
            .map(|_| ())
            .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    };
    assert_eq!(load(r#"{"pattern": "^[a-z]+$"}"#, "^[a-z]+$"), Ok(()), "control");
    for schema in [
        r#"{"pattern": "^(?=a)a$"}"#,
        r#"{"pattern": "^(?!b)a$"}"#,
        r#"{"pattern": "(?<=a)b"}"#,
        r#"{"pattern": "^(a)\\1$"}"#,
        r#"{"patternProperties": {"^(?=k)k$": {}}}"#,
        r#"{"properties": {"p": {"patternProperties": {"(a)\\1": {}}}}}"#,
    ] {
        let e = load(schema, "^[a-z]+$").expect_err(schema);
        assert!(e.contains("invalid JSON schema"), "{schema}: {e}");
    }
    for pattern in ["^(?=a)a$", "^(a)\\1$"] {
        let e = load(r#"{"type": "object"}"#, pattern).expect_err(pattern);
        assert!(e.contains("invalid regex"), "{pattern}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Redis credentials.

const REDIS_RULES: &str = r#"
[[route]]
name = "cb"
match = { path = "/cb/*", methods = ["POST"] }
[route.signature]
provider = "hmac"
header = "x-signature"
prefix = ""
timestamp_header = "x-timestamp"
nonce_header = "x-nonce"
tolerance = "5m"
message = "{method}\n{path}\n{timestamp}\n{nonce}\n{body}"
secrets = ["file:hook.secret"]

[[route]]
name = "limited"
match = { path = "/rl" }
rate_limit = { key = "route", rate = "1/h", burst = 1 }
"#;

/// A password in `redis_url` never reaches the logs, whether Redis refuses it or the URL asks
/// for TLS of a server that has none. In each case the routes apply their defaults: replay fails
/// closed (503), the rate limit fails open (forwarded, counted). A URL asking for `#insecure`
/// TLS (which this build cannot do) is refused when the configuration loads, without the
/// password in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_passwords_are_not_logged_and_unusable_urls_apply_on_state_error() {
    let logs = capture();
    let redis = RedisServer::start().await;
    // A password only now: the helper's readiness check pings without one.
    let set: String = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("the-right-password")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    assert_eq!(set, "OK");
    let backend = RawBackend::start().await;
    let marker = format!("pw-marker-{}", fastrand::u64(..));
    let insecure = format!("[state]\nbackend = \"redis\"\nredis_url = \"rediss://:{marker}@127.0.0.1:1/#insecure\"\n");
    let errs = payguard::config::Config::parse(&insecure, None).unwrap_err();
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(shown.len() == 1 && shown[0].contains("always verified"), "{shown:?}");
    assert!(!shown[0].contains(&marker), "{shown:?}");
    let urls = [
        format!("redis://:{marker}-auth@127.0.0.1:{}", redis.port),
        format!("rediss://:{marker}-tls@127.0.0.1:{}", redis.port),
    ];
    for url in &urls {
        let extra = format!("[state]\nbackend = \"redis\"\nredis_url = \"{url}\"\ntimeout = \"250ms\"\n");
        let files = [("hook.secret", SECRET), ("r.toml", REDIS_RULES)];
        let proxy = start_proxy_with_rules(backend.addr, &extra, &files).await;
        let c = h1_client(&proxy.cert);
        expect_error(signed(&c, &proxy, "/cb/x", "n-1").send().await.unwrap(), 503, "state_unavailable", Some("cb"))
            .await;
        for _ in 0..2 {
            assert_eq!(c.get(proxy.url("/rl")).send().await.unwrap().status(), 200, "{url}: rate limit fails open");
        }
        let health = json(admin_get(proxy.admin, "/healthz").await).await;
        assert_eq!(health["state"], serde_json::json!({"backend": "redis", "ok": false}), "{url}");
        let m = proxy.metrics().await;
        assert!(
            m.contains("payguard_decisions_total{route=\"limited\",guard=\"rate_limit\",decision=\"fail_open\"} 2"),
            "{m}"
        );
        proxy.stop().await;
    }
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    // The capture works (the redacted target was logged) and never holds the password.
    assert!(text.contains(&format!("redis://***@127.0.0.1:{}", redis.port)), "nothing captured?");
    assert!(text.contains(&format!("rediss://***@127.0.0.1:{}", redis.port)), "nothing captured?");
    let leaked: Vec<&str> = text.lines().filter(|l| l.contains(&marker)).collect();
    assert!(leaked.is_empty(), "the Redis password was logged:\n{}", leaked.join("\n"));
    for l in text.lines().filter(|l| l.contains("state store") && l.contains("127.0.0.1")).take(6) {
        eprintln!("log: {l}");
    }
}

/// A well-formed `x-request-id` from a peer that is not a trusted proxy is not used, but it is
/// logged next to payguard's own id (`client_request_id` on the access line), so the two can
/// still be matched; a card number in it is masked there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_clients_request_id_is_replaced_and_logged_beside_ours() {
    let logs = capture();
    let backend = RawBackend::start().await;
    let proxy = start_proxy(backend.addr, "").await;
    let c = h1_client(&proxy.cert);
    // Letters only: a random number could be a Luhn-valid card number, which the line masks.
    let theirs = format!("their-id-{}", (0..16).map(|_| fastrand::alphabetic()).collect::<String>());
    let res = c.get(proxy.url("/x")).header("x-request-id", &theirs).send().await.unwrap();
    let ours = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(ours, theirs);
    let res = c.get(proxy.url("/y")).header("x-request-id", "card-4111111111111111").send().await.unwrap();
    let ours_too = res.headers()["x-request-id"].to_str().unwrap().to_string();
    proxy.stop().await;
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let line = |id: &str| text.lines().find(|l| l.contains("payguard::access") && l.contains(id)).map(str::to_string);
    let access = line(&ours).unwrap_or_else(|| panic!("no access line for {ours}:\n{text}"));
    assert!(access.contains(&format!("client_request_id=\"{theirs}\"")), "{access}");
    let masked = line(&ours_too).unwrap_or_else(|| panic!("no access line for {ours_too}"));
    assert!(masked.contains("client_request_id=\"card-411111******1111\""), "{masked}");
    assert!(!text.contains("4111111111111111"), "a full card number was logged");
}
