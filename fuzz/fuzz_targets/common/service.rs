//! The whole payguard service (router, every guard, replay store, proxy) driven over an
//! in-memory stream, without TLS, through `payguard::fuzzing::Stack`.
//!
//! Input: the raw bytes a client sends on one connection (HTTP/1.1 for [`run`]; for
//! [`run_h2`], the bytes after the HTTP/2 client preface, which the harness writes itself).
//! The client writes everything, half-closes (HTTP/2: once every request it started has been
//! answered, or nothing has moved for 20 ms), and reads until payguard closes.
//!
//! Built once per process (a current-thread Tokio runtime, the stack from the fixed rule set
//! [`RULES`], an in-process hyper backend on 127.0.0.1 that answers `200` with
//! `x-backend: fuzz`, or the status named by a `/status/<code>` path).
//!
//! Checked beyond "no panic":
//! - the connection ends within [`DEADLINE`] (no hang);
//! - HTTP/1.1: payguard's output is a sequence of well-formed responses with a status in
//!   100..=599; every error response (status >= 400) that did not come from the backend is
//!   either one of hyper's own bare parse-error answers (400/414/431/505, empty body, no
//!   request id) or payguard's JSON `{"error","rule","request_id"}` with the same request id
//!   as its `x-request-id` header;
//! - the backend never sees more requests than payguard accepted on the connection (a request
//!   smuggled inside another one's body would show up as an extra backend request).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use payguard::fuzzing::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest a single input may take (its connection, including upstream requests).
pub const DEADLINE: Duration = Duration::from_secs(4);

/// The client's address. It is a trusted proxy (`[client_ip]`), so `X-Forwarded-For` in the
/// input decides the client address the IP and rate-limit guards see.
pub const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), 40000);

/// Made-up test secrets (also used by the committed seeds' valid signatures).
pub const HMAC_SECRET: &str = "fuzz-hmac-secret-not-a-real-one";
pub const STRIPE_SECRET: &str = "whsec_fuzzstripesecretnotarealone";

const CHECKOUT_SCHEMA: &str = include_str!("../../../rules/schemas/checkout.json");

/// Every guard kind, in enforce and monitor mode. The Stripe route's tolerance is ten years so
/// that the committed, validly signed seeds (timestamps of November 2026) stay valid.
pub const RULES: &str = r#"
[ip_sets]
office = ["10.0.0.0/8", "2001:db8:1::/48"]
providers = ["192.0.2.0/24", "2001:db8:2::/48"]

[defaults]
action = "forward"
max_body = "64KiB"
ip_deny = ["198.51.100.66", "2001:db8:66::/48"]
rate_limit = { key = "ip", rate = "1000000/s", burst = 1000000 }

[[route]]
name = "admin"
match = { path = "/admin/*" }
ip_allow = ["@office"]

[[route]]
name = "closed"
match = { path = "/closed/*" }
ip_allow = []

[[route]]
name = "limited"
match = { path = "/limited", methods = ["GET", "HEAD"] }
rate_limit = { key = "header:X-Api-Key", rate = "3/min", burst = 3 }

[[route]]
name = "orders"
match = { path = "/api/orders", methods = ["POST"] }
[route.validate]
content_type = ["application/json"]
required_headers = ["Idempotency-Key"]
max_body = "8KiB"
fields = [
  { at = "/product_id", type = "string", pattern = "^prod_[a-z0-9_]{1,32}$" },
  { at = "/quantity", type = "integer", min = 1, max = 100 },
  { at = "/email", type = "string", max_len = 254 },
]

[[route]]
name = "checkout"
match = { path = "/api/checkout", methods = ["POST"], host = "shop.example" }
[route.validate]
content_type = ["application/json"]
max_body = "4KiB"
json_schema = "checkout.json"
fields = [{ at = "/order_id", type = "string", pattern = "^ord_[0-9a-f]{16}$" }]

[[route]]
name = "search"
match = { path = "/api/search", methods = ["GET"] }
[route.validate]
fields = [
  { at = "page", type = "integer", min = 1, max = 100 },
  { at = "sort", one_of = ["price", "date"] },
]

[[route]]
name = "login"
match = { path = "/login", methods = ["POST"] }
rate_limit = { key = "ip", rate = "5/min", burst = 5 }
[route.validate]
content_type = ["application/x-www-form-urlencoded", "application/json"]
max_body = "2KiB"
fields = [
  { at = "username", type = "string", max_len = 64 },
  { at = "/username", type = "string", max_len = 64 },
]

[[route]]
name = "hook-hmac"
match = { path = "/hooks/hmac", methods = ["POST"] }
ip_allow = ["@providers", "@office"]
max_body = "16KiB"
[route.signature]
provider = "hmac"
secrets = ["file:hmac.secret"]

[[route]]
name = "hook-stripe"
match = { path = "/hooks/stripe", methods = ["POST"] }
max_body = "16KiB"
[route.signature]
provider = "stripe"
tolerance = "3650d"
secrets = ["file:stripe.secret"]
[route.validate]
content_type = ["application/json"]

[[route]]
name = "monitor"
match = { path = "/monitor/*" }
mode = "monitor"
ip_allow = ["@office"]
rate_limit = { key = "route", rate = "2/min", burst = 2 }
[route.validate]
content_type = ["application/json"]
required_headers = ["X-Trace"]
max_body = "1KiB"
"#;

fn config(backend: SocketAddr) -> String {
    format!(
        r#"
[server]
header_read_timeout = "2s"
max_header_size = "16KiB"
max_h2_streams = 16

[upstream]
url = "http://{backend}"
connect_timeout = "1s"
response_timeout = "2s"

[client_ip]
trusted_proxies = ["203.0.113.0/24"]

[state]
max_replay_keys = 100000
"#
    )
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    stack: Stack,
    /// Requests the backend received, over the process's life.
    backend_seen: Arc<AtomicU64>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        let backend_seen = Arc::new(AtomicU64::new(0));
        let stack = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the backend");
            let addr = listener.local_addr().expect("backend address");
            tokio::spawn(backend(listener, backend_seen.clone()));
            let dir = std::env::temp_dir().join(format!("payguard-fuzz-service-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            std::fs::write(dir.join("checkout.json"), CHECKOUT_SCHEMA).expect("write schema");
            std::fs::write(dir.join("hmac.secret"), HMAC_SECRET).expect("write secret");
            std::fs::write(dir.join("stripe.secret"), STRIPE_SECRET).expect("write secret");
            let files: Vec<(PathBuf, String)> = vec![(dir.join("fuzz.toml"), RULES.to_string())];
            let stack = Stack::new(&config(addr), &files);
            let _ = std::fs::remove_dir_all(&dir);
            match stack {
                Ok(s) => s,
                Err(e) => panic!("fixed fuzz stack does not build: {e}"),
            }
        });
        Fixture { rt, stack, backend_seen }
    })
}

/// The shop backend: reads the whole request, answers 200 (or `/status/<code>`'s code, if it
/// is 200..=599) with `x-backend: fuzz`.
async fn backend(listener: tokio::net::TcpListener, seen: Arc<AtomicU64>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let seen = seen.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                seen.fetch_add(1, Ordering::Relaxed);
                async move {
                    let status = req
                        .uri()
                        .path()
                        .strip_prefix("/status/")
                        .and_then(|c| c.get(..3))
                        .and_then(|c| c.parse::<u16>().ok())
                        .and_then(|c| http::StatusCode::from_u16(c).ok())
                        .filter(|s| (200..600).contains(&s.as_u16()))
                        .unwrap_or(http::StatusCode::OK);
                    let len = match req.into_body().collect().await {
                        Ok(b) => b.to_bytes().len(),
                        Err(_) => 0,
                    };
                    let mut res = http::Response::new(Full::new(Bytes::from(format!("backend got {len} bytes\n"))));
                    *res.status_mut() = status;
                    res.headers_mut().insert("x-backend", http::HeaderValue::from_static("fuzz"));
                    Ok::<_, std::convert::Infallible>(res)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
        });
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/1.1: `data` is the client's byte stream.
pub fn run(data: &[u8]) {
    let out = drive(data, false);
    if std::env::var_os("PAYGUARD_FUZZ_DEBUG").is_some() {
        let statuses: Vec<String> = out
            .output
            .windows(12)
            .filter(|w| w.starts_with(b"HTTP/1.") && w[8] == b' ')
            .map(|w| String::from_utf8_lossy(&w[9..12]).into_owned())
            .collect();
        eprintln!("accepted={} backend={} statuses={statuses:?}", out.accepted, out.backend_requests);
    }
    check_h1(data, &out.output);
    assert!(
        out.backend_requests <= out.accepted,
        "the backend saw {} requests but payguard accepted only {} (smuggled request?)",
        out.backend_requests,
        out.accepted
    );
}

/// HTTP/2 with prior knowledge: the harness sends the preface, `data` is the frames after it.
pub fn run_h2(data: &[u8]) {
    let mut stream = H2_PREFACE.to_vec();
    stream.extend_from_slice(data);
    let out = drive(&stream, true);
    if std::env::var_os("PAYGUARD_FUZZ_DEBUG").is_some() {
        eprintln!("accepted={} backend={} output={} bytes", out.accepted, out.backend_requests, out.output.len());
    }
    assert!(
        out.backend_requests <= out.accepted,
        "the backend saw {} requests but payguard accepted only {}",
        out.backend_requests,
        out.accepted
    );
}

struct Outcome {
    output: Vec<u8>,
    accepted: u64,
    backend_requests: u64,
}

fn drive(data: &[u8], h2: bool) -> Outcome {
    let f = fixture();
    let data = data.to_vec();
    f.rt.block_on(async {
        let seen_before = f.backend_seen.load(Ordering::Relaxed);
        let accepted_before = f.stack.requests();
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serve = f.stack.serve(server, PEER, h2);
        let client_side = async move {
            // Write and read at once: payguard may answer (and stop reading) before all is sent.
            let (mut rd, mut wr) = tokio::io::split(&mut client);
            let received = std::cell::Cell::new(0usize);
            let write = async {
                let _ = wr.write_all(&data).await;
                if h2 {
                    // An HTTP/2 server drops streams it has not yet handed out when the
                    // connection ends: let the requests finish first.
                    settle(&f.stack, &f.backend_seen, &received).await;
                }
                let _ = wr.shutdown().await;
            };
            let read = async {
                let mut output = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            output.extend_from_slice(&buf[..n]);
                            received.set(output.len());
                        }
                    }
                }
                output
            };
            let ((), output) = tokio::join!(write, read);
            output
        };
        let done = tokio::time::timeout(DEADLINE, async { tokio::join!(serve, client_side) }).await;
        let output = match done {
            Ok((_, output)) => output,
            Err(_) => panic!("the connection did not end within {DEADLINE:?} (hang)"),
        };
        // HTTP/2 stream handlers run on their own tasks and may outlive the connection: let
        // them finish too, so each input is judged (and timed) on its own.
        let drained = tokio::time::timeout(DEADLINE, async {
            while f.stack.in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(
            drained.is_ok(),
            "{} request(s) still in flight {DEADLINE:?} after the connection ended (hang)",
            f.stack.in_flight()
        );
        Outcome {
            output,
            accepted: f.stack.requests() - accepted_before,
            backend_requests: f.backend_seen.load(Ordering::Relaxed) - seen_before,
        }
    })
}

/// Returns once no request is in flight and nothing has moved for a few scheduler turns (the
/// server side runs in the same task, so a turn lets it process what it has buffered), or once
/// requests are in flight but nothing has moved for 20 ms: they wait for input the client
/// will never send (a body cut short), and only the end of the stream will end them.
async fn settle(stack: &Stack, backend_seen: &AtomicU64, received: &std::cell::Cell<usize>) {
    let progress = || (stack.requests(), stack.in_flight(), backend_seen.load(Ordering::Relaxed), received.get());
    let mut last = progress();
    let mut quiet = 0;
    loop {
        if stack.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
        let now = progress();
        if now == last {
            quiet += 1;
        } else {
            quiet = 0;
            last = now;
        }
        if (stack.in_flight() == 0 && quiet >= 8) || quiet >= 20 {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 response checks.

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A chunked body's length on the wire, or `None` if it is cut short or malformed.
fn chunked_len(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + find(&buf[at..], b"\r\n")?;
        let size_text = std::str::from_utf8(&buf[at..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers (none expected), then the final CRLF.
            let end = at + find(&buf[at..], b"\r\n")?;
            return Some(end + 2);
        }
        at = at.checked_add(size)?.checked_add(2)?;
        if at > buf.len() {
            return None;
        }
    }
}

pub fn check_h1(input: &[u8], out: &[u8]) {
    // A response to HEAD announces a length it does not send, so the stream cannot be split
    // after one: with HEAD anywhere in the input only the first response head is checked.
    let has_head = find(input, b"HEAD").is_some();
    let mut rest = out;
    let mut index = 0;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut headers);
        let head_len = match res.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            // A connection cut while a response was being written.
            Ok(httparse::Status::Partial) if index > 0 => return,
            other => panic!(
                "response {index} is not a valid HTTP/1.1 response ({other:?}): {:?}",
                String::from_utf8_lossy(&rest[..rest.len().min(300)])
            ),
        };
        let status = res.code.unwrap_or(0);
        assert!((100..=599).contains(&status), "response {index}: invalid status {status}");
        let header = |name: &str| {
            res.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let from_backend = header("x-backend").is_some();
        let request_id = header("x-request-id");
        let content_length = header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let content_type = header("content-type");
        rest = &rest[head_len..];

        if has_head {
            if status >= 400 && !from_backend && request_id.is_none() {
                assert!(matches!(status, 400 | 414 | 431 | 505), "response {index}: {status} without a request id");
            }
            return;
        }
        let body_len = if (100..200).contains(&status) || status == 204 || status == 304 {
            0
        } else if chunked {
            match chunked_len(rest) {
                Some(n) => n,
                None => return,
            }
        } else if let Some(n) = content_length {
            n
        } else {
            rest.len()
        };
        let Some(body) = rest.get(..body_len) else {
            // Cut short: only the backend streams bodies of unknown completion.
            assert!(from_backend || status < 400, "response {index}: payguard's {status} body is cut short");
            return;
        };
        rest = &rest[body_len..];
        if status >= 400 && !from_backend {
            check_error(index, status, request_id.as_deref(), content_type.as_deref(), body, chunked);
        }
        index += 1;
    }
}

fn check_error(
    index: usize,
    status: u16,
    request_id: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
    chunked: bool,
) {
    if request_id.is_none() && content_type.is_none() && body.is_empty() {
        // hyper's own answer to a request it could not parse (the service never saw it).
        assert!(matches!(status, 400 | 414 | 431 | 505), "response {index}: bare {status} from hyper");
        return;
    }
    assert!(!chunked, "response {index}: payguard's {status} is chunked");
    assert_eq!(content_type, Some("application/json"), "response {index}: payguard's {status} is not JSON");
    let json: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            panic!("response {index}: payguard's {status} body is not JSON ({e}): {:?}", String::from_utf8_lossy(body))
        }
    };
    let error = json.get("error").and_then(serde_json::Value::as_str);
    assert!(error.is_some_and(|e| !e.is_empty()), "response {index}: {status} without \"error\": {json}");
    let id = json.get("request_id").and_then(serde_json::Value::as_str);
    assert!(id.is_some_and(|i| !i.is_empty()), "response {index}: {status} without \"request_id\": {json}");
    assert_eq!(id, request_id, "response {index}: body request_id differs from x-request-id");
    assert!(
        json.get("rule").is_some_and(|r| r.is_null() || r.is_string()),
        "response {index}: \"rule\" missing: {json}"
    );
}
