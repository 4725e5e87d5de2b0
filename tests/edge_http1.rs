//! HTTP/1.1 parsing at the edge, end to end: raw bytes over a real TLS connection to the real
//! proxy, the raw response read back. Every malformed or ambiguous request must get its exact
//! status and must never reach the backend; accepted tricks must reach it in normal form.
//!
//! One table of cases (name, bytes, expected answer), run in order on one proxy, so a failure
//! names its case and every case is reported at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Rules: everything forwarded with a 200 MiB cap, except `/small/*` (1 KiB cap).
const RULES: &[(&str, &str)] = &[
    ("00-open.toml", "[defaults]\nmax_body = \"200MiB\"\n"),
    ("10-small.toml", "[[route]]\nname = \"small\"\nmatch = { path = \"/small/*\" }\nmax_body = \"1KiB\"\n"),
];

/// The defaults the bounds below are tested at (payguard.toml sets neither).
const MAX_HEADER_SIZE: usize = 32 * 1024;
const MAX_URI_LEN: usize = 8 * 1024;

/// What a TE.CL smuggler hides in a chunk (`HOST` is replaced).
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: HOST\r\n\r\n";

/// Who answers a case.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// The backend, having seen this path and query.
    Backend(String),
    /// payguard's reject mapping: JSON body with this `error` code; the backend saw nothing.
    Json(&'static str),
    /// hyper, before payguard's service ran: empty body; the backend saw nothing.
    Hyper,
    /// hyper closes the connection without an answer; the backend saw nothing.
    Closed,
}

struct Case {
    name: &'static str,
    raw: Vec<u8>,
    status: u16,
    answer: Answer,
    /// The server closes the connection after this answer (it is never reused). When false, a
    /// second request on the same connection must be answered normally.
    closes: bool,
}

fn case(name: &'static str, raw: impl Into<Vec<u8>>, status: u16, answer: Answer, closes: bool) -> Case {
    Case { name, raw: raw.into(), status, answer, closes }
}

fn ok(path: &str) -> Answer {
    Answer::Backend(path.to_string())
}

/// One parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

async fn connect(proxy: &Proxy) -> TlsStream<TcpStream> {
    let cfg = rustls_client(&[&proxy.cert.der], &[b"http/1.1"]);
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.unwrap()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads more bytes into `buf`.
async fn fill(s: &mut TlsStream<TcpStream>, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 16 * 1024];
    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
        Ok(Ok(0)) => Err("connection closed".to_string()),
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Ok(Err(e)) => Err(format!("read error: {e}")),
        Err(_) => Err("no answer within 10 s".to_string()),
    }
}

/// Reads one response from `s` (bytes already read but not used stay in `buf`). `Err` says why
/// there was none.
async fn read_response(s: &mut TlsStream<TcpStream>, buf: &mut Vec<u8>) -> Result<Resp, String> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        fill(s, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut resp = Resp { status, headers, body: Vec::new() };
    if let Some(len) = resp.header("content-length").map(|v| v.parse::<usize>().unwrap()) {
        while buf.len() < len {
            fill(s, buf).await?;
        }
        resp.body = buf.drain(..len).collect();
    } else if resp.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                fill(s, buf).await?;
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap().trim(), 16).unwrap();
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                fill(s, buf).await?;
            }
            resp.body.extend(buf.drain(..size));
            buf.drain(..2);
            if size == 0 {
                break;
            }
        }
    }
    Ok(resp)
}

/// `Ok` when the peer closes the connection (cleanly or not) within 10 s, without sending more.
async fn expect_close(s: &mut TlsStream<TcpStream>, buf: &[u8]) -> Result<(), String> {
    if !buf.is_empty() {
        return Err(format!("unexpected bytes after the answer: {:?}", String::from_utf8_lossy(buf)));
    }
    let mut more = [0u8; 256];
    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut more)).await {
        Ok(Ok(0) | Err(_)) => Ok(()),
        Ok(Ok(n)) => Err(format!("unexpected bytes after the answer: {:?}", String::from_utf8_lossy(&more[..n]))),
        Err(_) => Err("connection still open 10 s after the answer (want closed)".into()),
    }
}

fn short(s: &str) -> String {
    if s.len() > 60 {
        format!("{}…({} bytes)", &s[..60], s.len())
    } else {
        s.to_string()
    }
}

/// Runs one case on a fresh connection: `Ok(n)` with the number of requests the backend saw
/// (the case's and the follow-up's), `Err` with every way it went wrong.
async fn run(proxy: &Proxy, backend: &Backend, host: &str, c: &Case) -> Result<usize, String> {
    let before = backend.count();
    let mut s = connect(proxy).await;
    // The server may stop reading (and close) before a huge head is all written: its answer is
    // still what counts.
    let wrote = match s.write_all(&c.raw).await {
        Ok(()) => s.flush().await.map_err(|e| format!("flush: {e}")),
        Err(e) => Err(format!("write: {e}")),
    };
    let mut buf = Vec::new();
    let mut problems = Vec::new();
    let res = match read_response(&mut s, &mut buf).await.map_err(|e| match &wrote {
        Ok(()) => e,
        Err(w) => format!("{w}; then {e}"),
    }) {
        Err(e) if c.answer == Answer::Closed && buf.is_empty() => {
            return if backend.count() == before {
                Ok(0)
            } else {
                Err(format!("no answer ({e}), but the backend saw it"))
            };
        }
        Err(e) => return Err(e),
        Ok(_) if c.answer == Answer::Closed => {
            return Err("answered (want the connection closed without an answer)".into())
        }
        Ok(r) => r,
    };
    if res.status != c.status {
        problems.push(format!("status {} (want {})", res.status, c.status));
    }
    match &c.answer {
        Answer::Json(code) => match serde_json::from_slice::<serde_json::Value>(&res.body) {
            Ok(v) if v["error"] == *code && v["request_id"].is_string() => {}
            _ => problems.push(format!("body {:?} (want JSON error {code:?})", String::from_utf8_lossy(&res.body))),
        },
        Answer::Hyper => {
            if !res.body.is_empty() {
                problems.push(format!("body {:?} (want hyper's empty body)", String::from_utf8_lossy(&res.body)));
            }
        }
        Answer::Backend(_) | Answer::Closed => {}
    }
    // When the connection closes, everything the server will ever do with these bytes is done;
    // otherwise it answered and waits: a second request must be understood as one.
    let mut extra = 0;
    if c.closes {
        if let Err(e) = expect_close(&mut s, &buf).await {
            problems.push(e);
        }
        if res.header("connection").is_some_and(|v| !v.eq_ignore_ascii_case("close")) {
            problems.push(format!("connection header {:?} (want close or none)", res.header("connection")));
        }
    }
    let after = backend.count();
    match &c.answer {
        Answer::Backend(path) => {
            if after != before + 1 {
                problems.push(format!("backend saw {} requests (want 1)", after - before));
            } else {
                let seen = backend.last();
                if seen.path_and_query != *path {
                    problems.push(format!("backend saw {:?} (want {:?})", short(&seen.path_and_query), short(path)));
                }
            }
        }
        Answer::Json(_) | Answer::Hyper | Answer::Closed => {
            if after != before {
                let seen = backend.last().path_and_query;
                problems.push(format!(
                    "backend saw {} request(s), last {:?} (want none)",
                    after - before,
                    short(&seen)
                ));
            }
        }
    }
    if !c.closes {
        if res.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            problems.push("answered with connection: close (want the connection kept)".into());
        }
        let next = format!("GET /after HTTP/1.1\r\nHost: {host}\r\n\r\n");
        s.write_all(next.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        match read_response(&mut s, &mut buf).await {
            Ok(r) if r.status == 200 && backend.last().path_and_query == "/after" => extra = 1,
            Ok(r) => problems.push(format!("second request on the connection got {}", r.status)),
            Err(e) => problems.push(format!("second request on the connection: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(after - before + extra)
    } else {
        Err(problems.join("; "))
    }
}

async fn run_all(proxy: &Proxy, backend: &Backend, host: &str, cases: &[Case]) {
    let mut failures = Vec::new();
    let mut forwarded = 0;
    for c in cases {
        match run(proxy, backend, host, c).await {
            Ok(n) => forwarded += n,
            Err(e) => failures.push(format!("{}: {e}", c.name)),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    // Nothing reached the backend late (a request whose head went out before it was refused).
    assert_eq!(backend.count(), forwarded, "the backend saw more requests than the accepted cases");
}

/// A request head of exactly `total` bytes: `GET /size`, Host, `extra` header lines, and one
/// `x-pad` header that makes up the size.
fn head_of_size(host: &str, extra: &str, total: usize) -> Vec<u8> {
    let fixed = format!("GET /size HTTP/1.1\r\nHost: {host}\r\n{extra}x-pad: \r\n\r\n").len();
    let head = format!("GET /size HTTP/1.1\r\nHost: {host}\r\n{extra}x-pad: {}\r\n\r\n", "p".repeat(total - fixed));
    assert_eq!(head.len(), total);
    head.into_bytes()
}

/// A GET whose request target is exactly `len` bytes long.
fn uri_of_len(host: &str, len: usize) -> Vec<u8> {
    let target = format!("/uri?q={}", "u".repeat(len - "/uri?q=".len()));
    assert_eq!(target.len(), len);
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// A GET with `n` header lines. Ten of them are named in `Connection`, so payguard drops them
/// (hop-by-hop) and the backend, itself limited to 100 lines, gets fewer than payguard did.
fn with_headers(host: &str, n: usize) -> Vec<u8> {
    let named: Vec<String> = (1..=10).map(|i| format!("x-h{i}")).collect();
    let mut r = format!("GET /many HTTP/1.1\r\nHost: {host}\r\nConnection: {}\r\n", named.join(", "));
    for i in 1..n - 1 {
        r.push_str(&format!("x-h{i}: {i}\r\n"));
    }
    r.push_str("\r\n");
    assert_eq!(r.matches("\r\n").count(), n + 2);
    r.into_bytes()
}

fn cases(host: &str) -> Vec<Case> {
    let h = |s: &str| s.replace("HOST", host).into_bytes();
    use Answer::{Hyper, Json};
    let bad = "invalid_request";
    vec![
        // --- sanity: the harness itself
        case("plain_get", h("GET /plain HTTP/1.1\r\nHost: HOST\r\n\r\n"), 200, ok("/plain"), false),
        case("post_with_body", h("POST /p HTTP/1.1\r\nHost: HOST\r\nContent-Length: 5\r\n\r\nhello"), 200, ok("/p"), false),
        // --- NUL and other control bytes
        case("nul_in_request_line", h("GET /a\0b HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Hyper, true),
        case("nul_in_header_name", h("GET / HTTP/1.1\r\nHost: HOST\r\nX-A\0b: 1\r\n\r\n"), 400, Hyper, true),
        case("nul_in_header_value", h("GET / HTTP/1.1\r\nHost: HOST\r\nX-A: a\0b\r\n\r\n"), 400, Hyper, true),
        case("bare_cr_in_header_value", h("GET / HTTP/1.1\r\nHost: HOST\r\nX-A: a\rb\r\n\r\n"), 400, Hyper, true),
        case("space_before_colon", h("GET / HTTP/1.1\r\nHost : HOST\r\n\r\n"), 400, Hyper, true),
        case("bad_method_token", h("G@T / HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Hyper, true),
        case("http_1_2", h("GET / HTTP/1.2\r\nHost: HOST\r\n\r\n"), 400, Hyper, true),
        case("double_space_request_line", h("GET  / HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Hyper, true),
        // --- Content-Length
        // hyper merges identical lines into one; the raw bytes show both (crate::framing).
        case(
            "cl_duplicate_same",
            h("POST /cl HTTP/1.1\r\nHost: HOST\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
            400,
            Json(bad),
            true,
        ),
        case(
            "cl_duplicate_different",
            h("POST /cl HTTP/1.1\r\nHost: HOST\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
            400,
            Hyper,
            true,
        ),
        case("cl_plus", h("POST /cl HTTP/1.1\r\nHost: HOST\r\nContent-Length: +5\r\n\r\nhello"), 400, Hyper, true),
        case("cl_minus", h("POST /cl HTTP/1.1\r\nHost: HOST\r\nContent-Length: -1\r\n\r\nhello"), 400, Hyper, true),
        case("cl_list", h("POST /cl HTTP/1.1\r\nHost: HOST\r\nContent-Length: 5, 5\r\n\r\nhello"), 400, Hyper, true),
        case("cl_inner_space", h("POST /cl HTTP/1.1\r\nHost: HOST\r\nContent-Length: 5 5\r\n\r\nhello"), 400, Hyper, true),
        case("cl_hex", h("POST /cl HTTP/1.1\r\nHost: HOST\r\nContent-Length: 0x5\r\n\r\nhello"), 400, Hyper, true),
        case("cl_empty", h("POST /cl HTTP/1.1\r\nHost: HOST\r\nContent-Length: \r\n\r\nhello"), 400, Hyper, true),
        case(
            "cl_overflow",
            h("POST /cl HTTP/1.1\r\nHost: HOST\r\nContent-Length: 18446744073709551616\r\n\r\nhello"),
            400,
            Hyper,
            true,
        ),
        // --- chunked framing
        case(
            "chunked_ok",
            h("POST /ch HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            200,
            ok("/ch"),
            false,
        ),
        case(
            "chunk_size_overflow",
            h("POST /ch HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            400,
            Json(bad),
            true,
        ),
        case(
            "chunk_size_not_hex",
            h("POST /ch HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
            400,
            Json(bad),
            true,
        ),
        case(
            "chunk_extension_bare_lf",
            h("POST /ch HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n"),
            400,
            Json(bad),
            true,
        ),
        // --- Transfer-Encoding
        case(
            "http10_chunked",
            h("POST /te HTTP/1.0\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            400,
            Hyper,
            true,
        ),
        case(
            "te_chunked_identity",
            h("POST /te HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            400,
            Hyper,
            true,
        ),
        case(
            "te_identity_chunked",
            h("POST /te HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: identity, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            400,
            Json(bad),
            true,
        ),
        case(
            "te_xchunked",
            h("POST /te HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            400,
            Hyper,
            true,
        ),
        case(
            "te_twice",
            h("POST /te HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            400,
            Json(bad),
            true,
        ),
        case(
            "te_tab_before_value",
            h("POST /te HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            200,
            ok("/te"),
            false,
        ),
        case(
            "te_vertical_tab",
            h("POST /te HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: \x0bchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            400,
            Hyper,
            true,
        ),
        case(
            "te_space_before_colon",
            h("POST /te HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            400,
            Hyper,
            true,
        ),
        case(
            "obs_fold_space",
            h("GET / HTTP/1.1\r\nHost: HOST\r\nX-A: a\r\n b\r\n\r\n"),
            400,
            Hyper,
            true,
        ),
        case(
            "obs_fold_tab",
            h("GET / HTTP/1.1\r\nHost: HOST\r\nX-A: a\r\n\tb\r\n\r\n"),
            400,
            Hyper,
            true,
        ),
        case(
            "obs_fold_te",
            h("POST /te HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            400,
            Hyper,
            true,
        ),
        // --- CL and TE together: request smuggling. hyper would drop the Content-Length (chunked
        // wins, RFC 9112 §6.3); the raw bytes show both (crate::framing), and like nginx payguard
        // refuses the request and closes: bytes after it are never read as a request.
        case(
            "cl_te",
            h("POST /smug HTTP/1.1\r\nHost: HOST\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: HOST\r\n\r\n"),
            400,
            Json(bad),
            true,
        ),
        case(
            "te_cl",
            h(&format!(
                "POST /smug HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
                h(SMUGGLED).len()
            )),
            400,
            Json(bad),
            true,
        ),
        case(
            "cl_te_chunked_identity",
            h("POST /smug HTTP/1.1\r\nHost: HOST\r\nContent-Length: 5\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: HOST\r\n\r\n"),
            400,
            Hyper,
            true,
        ),
        case(
            "cl_te_xchunked",
            h("POST /smug HTTP/1.1\r\nHost: HOST\r\nContent-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: HOST\r\n\r\n"),
            400,
            Hyper,
            true,
        ),
        case(
            "cl_te_odd_whitespace",
            h("POST /smug HTTP/1.1\r\nHost: HOST\r\nContent-Length: 5\r\nTransfer-Encoding: \t chunked \r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: HOST\r\n\r\n"),
            400,
            Json(bad),
            true,
        ),
        // --- Host
        case("host_duplicate", h("GET /h HTTP/1.1\r\nHost: HOST\r\nHost: evil.example\r\n\r\n"), 400, Json(bad), true),
        // A refused head closes the connection: a request pipelined behind it is never read.
        case(
            "host_duplicate_then_pipelined",
            h("GET /h HTTP/1.1\r\nHost: HOST\r\nHost: evil.example\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: HOST\r\n\r\n"),
            400,
            Json(bad),
            true,
        ),
        case("host_missing_http11", h("GET /h HTTP/1.1\r\n\r\n"), 400, Json(bad), true),
        case("host_missing_http10", h("GET /h10 HTTP/1.0\r\n\r\n"), 200, ok("/h10"), true),
        case("absolute_form_same_host", h("GET https://HOST/abs HTTP/1.1\r\nHost: HOST\r\n\r\n"), 200, ok("/abs"), false),
        case("absolute_form_other_host", h("GET http://evil.example/ HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Json(bad), true),
        case(
            "absolute_form_other_port",
            h("GET https://localhost:1/abs HTTP/1.1\r\nHost: HOST\r\n\r\n"),
            400,
            Json(bad),
            true,
        ),
        case("absolute_form_userinfo", h("GET https://u@HOST/abs HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Json(bad), true),
        // --- header names, upgrades
        case("underscore_header", h("GET / HTTP/1.1\r\nHost: HOST\r\nX_Api_Key: k\r\n\r\n"), 400, Json(bad), true),
        case(
            "upgrade_h2c",
            h("GET / HTTP/1.1\r\nHost: HOST\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
            400,
            Json(bad),
            true,
        ),
        case(
            "upgrade_websocket",
            h("GET / HTTP/1.1\r\nHost: HOST\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"),
            400,
            Json(bad),
            true,
        ),
        case("connection_upgrade_alone", h("GET / HTTP/1.1\r\nHost: HOST\r\nConnection: upgrade\r\n\r\n"), 400, Json(bad), true),
        case("http2_settings_alone", h("GET / HTTP/1.1\r\nHost: HOST\r\nHTTP2-Settings: AAMAAABk\r\n\r\n"), 400, Json(bad), true),
        case("h2_preface_on_http1", h("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, Answer::Closed, true),
        // --- paths
        case("path_dotdot_root", h("GET /.. HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Json(bad), true),
        case("path_climb", h("GET /a/../../etc HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Json(bad), true),
        case("path_dotdot_inside", h("GET /a/../b HTTP/1.1\r\nHost: HOST\r\n\r\n"), 200, ok("/b"), false),
        case("path_double_slash", h("GET //x//y HTTP/1.1\r\nHost: HOST\r\n\r\n"), 200, ok("/x/y"), false),
        case("path_dot", h("GET /a/./b/. HTTP/1.1\r\nHost: HOST\r\n\r\n"), 200, ok("/a/b/"), false),
        case("path_encoded_dots", h("GET /a/%2e%2E/b HTTP/1.1\r\nHost: HOST\r\n\r\n"), 200, ok("/b"), false),
        case("path_encoded_dots_climb", h("GET /%2e%2e/etc HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Json(bad), true),
        case("path_encoded_slash", h("GET /a%2fb HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Json(bad), true),
        case("path_encoded_backslash", h("GET /a%5cb HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Json(bad), true),
        case("path_backslash", h("GET /a\\b HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Json(bad), true),
        case("path_backslash_dotdot", h("GET /a\\..\\etc HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Json(bad), true),
        case("path_encoded_nul", h("GET /a%00 HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Json(bad), true),
        case("path_bad_escape", h("GET /a%zz HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Json(bad), true),
        case("path_unreserved_escape", h("GET /%61b%63 HTTP/1.1\r\nHost: HOST\r\n\r\n"), 200, ok("/abc"), false),
        case("path_fragment", h("GET /frag#x/../../etc HTTP/1.1\r\nHost: HOST\r\n\r\n"), 200, ok("/frag"), false),
        case("path_query_untouched", h("GET /q/../r?x=/../y HTTP/1.1\r\nHost: HOST\r\n\r\n"), 200, ok("/r?x=/../y"), false),
        case("asterisk_form", h("OPTIONS * HTTP/1.1\r\nHost: HOST\r\n\r\n"), 400, Json(bad), true),
        // --- body caps (route "small": 1 KiB)
        case(
            "body_cl_at_cap",
            [h("POST /small/a HTTP/1.1\r\nHost: HOST\r\nContent-Length: 1024\r\n\r\n"), vec![b'a'; 1024]].concat(),
            200,
            ok("/small/a"),
            false,
        ),
        case(
            "body_cl_past_cap",
            [h("POST /small/a HTTP/1.1\r\nHost: HOST\r\nContent-Length: 1025\r\n\r\n"), vec![b'a'; 1025]].concat(),
            413,
            Json("body_too_large"),
            false,
        ),
        case(
            "body_chunked_at_cap",
            [h("POST /small/a HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n"), vec![b'a'; 1024], b"\r\n0\r\n\r\n".to_vec()].concat(),
            200,
            ok("/small/a"),
            false,
        ),
        case(
            "body_chunked_past_cap",
            [h("POST /small/a HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n"), vec![b'a'; 1025], b"\r\n0\r\n\r\n".to_vec()].concat(),
            413,
            Json("body_too_large"),
            false,
        ),
        // --- URI length (max_uri_len, default 8 KiB)
        case("uri_at_bound", uri_of_len(host, MAX_URI_LEN), 200, ok(&format!("/uri?q={}", "u".repeat(MAX_URI_LEN - 7))), false),
        case("uri_past_bound", uri_of_len(host, MAX_URI_LEN + 1), 414, Json("uri_too_long"), true),
        case("uri_past_read_buffer", uri_of_len(host, 256 * 1024), 431, Hyper, true),
        // --- head size (max_header_size, default 32 KiB) and header count
        case("head_at_bound", head_of_size(host, "", MAX_HEADER_SIZE), 200, ok("/size"), false),
        case("head_past_bound", head_of_size(host, "", MAX_HEADER_SIZE + 1), 431, Json("headers_too_large"), true),
        // Counted as sent, before payguard replaces an invalid x-request-id or drops x-payguard-*.
        case(
            "head_at_bound_own_headers",
            head_of_size(host, "x-request-id: client-id-1\r\nx-payguard-verified: stripe\r\n", MAX_HEADER_SIZE),
            200,
            ok("/size"),
            false,
        ),
        case(
            "head_past_bound_own_headers",
            head_of_size(host, &format!("x-request-id: {}\r\nx-payguard-verified: stripe\r\n", "!".repeat(4096)), MAX_HEADER_SIZE + 1),
            431,
            Json("headers_too_large"),
            true,
        ),
        case(
            "single_32k_header",
            h(&format!("GET / HTTP/1.1\r\nHost: HOST\r\nx-big: {}\r\n\r\n", "b".repeat(32 * 1024))),
            431,
            Json("headers_too_large"),
            true,
        ),
        case(
            "single_256k_header",
            h(&format!("GET / HTTP/1.1\r\nHost: HOST\r\nx-big: {}\r\n\r\n", "b".repeat(256 * 1024))),
            431,
            Hyper,
            true,
        ),
        case("headers_100", with_headers(host, 100), 200, ok("/many"), false),
        case("headers_101", with_headers(host, 101), 431, Hyper, true),
    ]
}

#[tokio::test]
async fn malformed_and_ambiguous_requests_are_refused() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", RULES).await;
    let host = format!("localhost:{}", proxy.addr.port());
    let cases = cases(&host);
    run_all(&proxy, &backend, &host, &cases).await;
    // What hyper refused itself is counted too (one per connection it closed, with or without
    // an answer).
    let hyper_400 = cases
        .iter()
        .filter(|c| (matches!(c.answer, Answer::Hyper) && c.status == 400) || matches!(c.answer, Answer::Closed))
        .count();
    let m = proxy.metrics().await;
    let counted = |kind: &str| -> usize {
        m.lines()
            .find(|l| l.starts_with(&format!("payguard_malformed_requests_total{{kind=\"{kind}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(counted("parse"), hyper_400, "{m}");
    assert!(counted("too_large") >= 1, "{m}");
    proxy.stop().await;
}

/// `[server] max_uri_len` and `max_header_size` set in payguard.toml are the bounds enforced, to
/// the byte, on HTTP/1.1; the URI bound also holds on HTTP/2; every refusal is counted.
#[tokio::test]
async fn configured_bounds_are_exact() {
    let backend = Backend::start().await;
    let proxy =
        start_proxy_with_rules(backend.addr, "max_uri_len = \"1KiB\"\nmax_header_size = \"4KiB\"\n", RULES).await;
    let host = format!("localhost:{}", proxy.addr.port());
    let cases = vec![
        case("uri_at_bound", uri_of_len(&host, 1024), 200, ok(&format!("/uri?q={}", "u".repeat(1024 - 7))), false),
        case("uri_past_bound", uri_of_len(&host, 1025), 414, Answer::Json("uri_too_long"), true),
        case("head_at_bound", head_of_size(&host, "", 4096), 200, ok("/size"), false),
        case("head_past_bound", head_of_size(&host, "", 4097), 431, Answer::Json("headers_too_large"), true),
    ];
    run_all(&proxy, &backend, &host, &cases).await;

    // HTTP/2: the same target bound, the same JSON answer.
    let h2 = h2_client(&proxy.cert);
    let at = format!("/uri?q={}", "u".repeat(1024 - 7));
    let res = h2.get(proxy.url(&at)).send().await.unwrap();
    assert_eq!((res.version(), res.status().as_u16()), (http::Version::HTTP_2, 200));
    assert_eq!(backend.last().path_and_query, at);
    let res = h2.get(proxy.url(&format!("{at}u"))).send().await.unwrap();
    assert_eq!(res.status(), 414);
    assert_eq!(json(res).await["error"], "uri_too_long");

    proxy
        .assert_metrics(&[
            "payguard_decisions_total{route=\"\",guard=\"route\",decision=\"block\"} 3",
            "payguard_requests_total{route=\"\",status=\"414\"} 2",
            "payguard_requests_total{route=\"\",status=\"431\"} 1",
        ])
        .await;
    proxy.stop().await;
}

/// A chunk that breaks after valid data: the request was already streaming to the backend, so
/// the backend may get its head and the valid bytes, then an aborted body (never a complete
/// request); the client gets 400, not a 502 blaming the backend, and the connection is closed.
#[tokio::test]
async fn malformed_chunk_after_valid_data_is_400() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", RULES).await;
    let host = format!("localhost:{}", proxy.addr.port());
    let raw = format!(
        "POST /late HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"
    );
    let mut s = connect(&proxy).await;
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let res = read_response(&mut s, &mut buf).await.unwrap();
    assert_eq!(res.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(v["error"], "invalid_request");
    expect_close(&mut s, &buf).await.unwrap();
    let seen = backend.seen.lock().unwrap().clone();
    assert!(seen.len() <= 1 && seen.iter().all(|r| b"hello".starts_with(&r.body)), "{seen:?}");
    proxy.stop().await;
}
