//! Faults around payguard: a backend that resets mid-response, resets before answering, closes
//! at once or hangs; the rule directory deleted; the certificate replaced with garbage; stdout
//! on a full disk or a pipe nobody reads. Each time payguard keeps serving what it can, answers
//! the rest with the documented status, never panics, and gives back every file descriptor.
//!
//! Already covered elsewhere, not repeated here: an unreachable backend (502) and a backend that
//! never answers a read request (504) in `core.rs::backend_unreachable_is_502_and_slow_is_504`;
//! a garbage certificate keeps the old one serving in
//! `core.rs::certificate_reload_and_broken_replacement` (here: the same fault in the real binary,
//! for its file descriptors).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bin_harness;
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bin_harness::{Payguard, Stdout};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How the raw backend misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// By request path: `/reset-mid` (200 with `content-length: 100000`, 1,000 bytes of body,
    /// then RST once [`RawBackend::proceed`] is notified), `/reset-mid-chunked` (the same,
    /// chunked), `/reset-before` (RST after reading the request, before any response byte),
    /// `/close` (FIN without answering), `/hang` (reads the request, never answers); anything
    /// else answers `200 ok` and keeps the connection alive.
    ByPath,
    /// Closes every connection as soon as it is accepted, without reading.
    CloseAtOnce,
    /// Accepts and then neither reads nor answers.
    HangAtAccept,
}

/// An HTTP/1.1 backend written on raw sockets, so it can break the protocol the way real
/// backends do.
#[derive(Clone)]
struct RawBackend {
    addr: SocketAddr,
    /// Lets a `/reset-mid` request reset (once the client saw the response head).
    proceed: Arc<Notify>,
    /// Connections kept open on purpose (hanging).
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl RawBackend {
    async fn start(mode: Mode) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b =
            RawBackend { addr: listener.local_addr().unwrap(), proceed: Arc::new(Notify::new()), held: Arc::default() };
        let state = b.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else { return };
                match mode {
                    Mode::CloseAtOnce => drop(s),
                    Mode::HangAtAccept => state.held.lock().unwrap().push(s),
                    Mode::ByPath => {
                        tokio::spawn(state.clone().serve(s));
                    }
                }
            }
        });
        b
    }

    async fn serve(self, mut s: TcpStream) {
        let mut buf = Vec::new();
        loop {
            let end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            let target = head.split_whitespace().nth(1).unwrap_or("/");
            let path = target.split('?').next().unwrap_or("/");
            match path {
                "/reset-mid" | "/reset-mid-chunked" => {
                    let mut out = if path.ends_with("chunked") {
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n3e8\r\n"
                            .to_vec()
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\n".to_vec()
                    };
                    out.extend_from_slice(&[b'x'; 1000]);
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                    self.proceed.notified().await;
                    reset(s);
                    return;
                }
                "/reset-before" => {
                    reset(s);
                    return;
                }
                "/close" => return,
                "/hang" => {
                    self.held.lock().unwrap().push(s);
                    return;
                }
                _ => {
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Drops the socket with SO_LINGER 0: the peer gets a RST instead of a FIN.
fn reset(s: TcpStream) {
    s.set_zero_linger().unwrap();
    drop(s);
}

/// payguard in-process with `[upstream] response_timeout` set.
async fn start_with_timeout(upstream: SocketAddr, timeout: &str, rules: &[(&str, &str)]) -> Proxy {
    let mut p = start_proxy_with_rules(upstream, "", rules).await;
    let path = p.dir.path().join("payguard.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("response_timeout = \"10s\"", &format!("response_timeout = \"{timeout}\""));
    std::fs::write(&path, &text).unwrap();
    p.running.take().unwrap().shutdown().await;
    let running = payguard::start(payguard::config::Config::parse(&text, Some(&path)).unwrap()).await.unwrap();
    p.addr = running.addr;
    p.admin = running.admin_addr.unwrap();
    p.running = Some(running);
    p
}

/// An error and its sources, for messages.
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn sample(page: &str, s: &str) -> f64 {
    bin_harness::metric_value(page, s)
}

#[tokio::test]
async fn backend_reset_mid_response_aborts_that_response_only() {
    let backend = RawBackend::start(Mode::ByPath).await;
    let proxy = start_proxy(backend.addr, "").await;
    for h2 in [false, true] {
        let client = bin_harness::client(&proxy.cert, h2);
        for path in ["/reset-mid", "/reset-mid-chunked"] {
            let res = client.get(proxy.url(path)).send().await.unwrap();
            assert_eq!(res.status(), 200, "{path} h2={h2}: the head was already on its way");
            backend.proceed.notify_one();
            let body = res.bytes().await;
            assert!(body.is_err(), "{path} h2={h2}: an aborted response must not look complete: {body:?}");
            let why = error_chain(&body.unwrap_err());
            // HTTP/2: the stream is reset (RST_STREAM), the connection lives on. HTTP/1.1: the
            // connection is closed before the declared length or the last chunk.
            let expected = if h2 { "stream error received" } else { "error reading a body from connection" };
            assert!(why.contains(expected), "{path} h2={h2}: {why}");
            // The same client, and so for HTTP/2 the same connection, goes on working.
            let ok = client.get(proxy.url("/ok")).send().await.unwrap();
            assert_eq!(ok.status(), 200);
            assert_eq!(ok.text().await.unwrap(), "ok");
        }
    }
    let counted = eventually(Duration::from_secs(5), || async {
        sample(&proxy.metrics().await, "payguard_upstream_errors_total{kind=\"body\"}") == 4.0
    })
    .await;
    assert!(counted, "{}", proxy.metrics().await);
    proxy.stop().await;
}

#[tokio::test]
async fn backend_reset_before_any_byte_is_502() {
    let backend = RawBackend::start(Mode::ByPath).await;
    let proxy = start_proxy(backend.addr, "").await;
    for h2 in [false, true] {
        let client = bin_harness::client(&proxy.cert, h2);
        let res = client.get(proxy.url("/reset-before")).send().await.unwrap();
        assert_eq!(res.status(), 502);
        assert_eq!(res.headers()["content-type"], "application/json");
        let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
        let v = json(res).await;
        assert_eq!(v["error"], "upstream_unavailable");
        assert_eq!(v["request_id"], id.as_str());
        assert_eq!(client.get(proxy.url("/ok")).send().await.unwrap().status(), 200);
    }
    assert_eq!(sample(&proxy.metrics().await, "payguard_upstream_errors_total{kind=\"io\"}"), 2.0);
    proxy.stop().await;
}

#[tokio::test]
async fn backend_closing_at_once_is_502_and_hanging_after_accept_is_504() {
    let closing = RawBackend::start(Mode::CloseAtOnce).await;
    let proxy = start_proxy(closing.addr, "").await;
    for h2 in [false, true] {
        let res = bin_harness::client(&proxy.cert, h2).post(proxy.url("/pay")).body("{}").send().await.unwrap();
        assert_eq!(res.status(), 502);
        assert_eq!(json(res).await["error"], "upstream_unavailable");
    }
    proxy.stop().await;

    let hanging = RawBackend::start(Mode::HangAtAccept).await;
    let proxy = start_with_timeout(hanging.addr, "500ms", OPEN_RULES).await;
    for h2 in [false, true] {
        let started = Instant::now();
        let res = bin_harness::client(&proxy.cert, h2).get(proxy.url("/x")).send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(res.status(), 504);
        assert_eq!(json(res).await["error"], "upstream_timeout");
        // The timer never fires early; the upper bound is generous for a loaded CI box.
        assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(10), "504 after {took:?}");
        eprintln!("hanging backend (h2={h2}): 504 after {took:?} with response_timeout 500ms");
    }
    assert_eq!(sample(&proxy.metrics().await, "payguard_upstream_errors_total{kind=\"timeout\"}"), 2.0);
    assert!(!hanging.held.lock().unwrap().is_empty(), "payguard never reached the hanging backend");
    proxy.stop().await;
}

/// Rules for the binary tests: `/admin` refused to loopback clients (403), everything else
/// forwarded.
const ADMIN_DENIED: &[(&str, &str)] =
    &[("00-rules.toml", "[[route]]\nname = \"admin\"\nmatch = { path = \"/admin\" }\nip_deny = [\"127.0.0.0/8\"]\n")];

/// Writes the config for a binary test (optionally with a short response timeout).
fn binary_config(
    dir: &std::path::Path,
    cert: &TestCert,
    upstream: SocketAddr,
    timeout: Option<&str>,
) -> std::path::PathBuf {
    let path = write_config(dir, cert, upstream, "", ADMIN_DENIED);
    if let Some(t) = timeout {
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("response_timeout = \"10s\"", &format!("response_timeout = \"{t}\""));
        std::fs::write(&path, text).unwrap();
    }
    path
}

fn no_panic(stderr: &[String]) {
    assert!(!stderr.iter().any(|l| l.contains("panicked")), "payguard panicked: {stderr:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_give_back_every_file_descriptor() {
    let backend = RawBackend::start(Mode::ByPath).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let cfg = binary_config(dir.path(), &cert, backend.addr, Some("300ms"));
    let pg = Payguard::spawn(&cfg, Stdout::Captured, &[]).await;

    // Warm up (TLS, the backend pool), close every client connection, take the baseline.
    for h2 in [false, true] {
        let c = bin_harness::client(&cert, h2);
        assert_eq!(c.get(pg.url("/ok")).send().await.unwrap().status(), 200);
    }
    let idle = || async { pg.metric("payguard_open_connections").await == 0.0 };
    assert!(eventually(Duration::from_secs(10), idle).await);
    // Idle backend connections stay pooled (bounded by the pool settings, not a leak): count them
    // apart from everything else.
    let pid = pg.pid();
    let pool = || bin_harness::sockets_to(pid, backend.addr.port());
    let (baseline, baseline_pool) = (pg.fds(), pool());
    let baseline_fds = pg.fd_targets();
    let mut peak = baseline;

    // 200 resets mid-response: 100 over HTTP/1.1 (each closes its client connection), 100 over
    // one HTTP/2 connection (each resets its stream).
    for h2 in [false, true] {
        let c = bin_harness::client(&cert, h2);
        for _ in 0..100 {
            let res = c.get(pg.url("/reset-mid")).send().await.unwrap();
            assert_eq!(res.status(), 200);
            backend.proceed.notify_one();
            assert!(res.bytes().await.is_err());
            peak = peak.max(pg.fds());
        }
    }
    // 50 resets before any byte and 50 closes: 502.
    let c = bin_harness::client(&cert, false);
    for path in ["/reset-before", "/close"] {
        for _ in 0..50 {
            assert_eq!(c.get(pg.url(path)).send().await.unwrap().status(), 502, "{path}");
            peak = peak.max(pg.fds());
        }
    }
    // 20 hanging requests at once: 504 after the 300 ms response timeout.
    let c2 = bin_harness::client(&cert, true);
    let hung = futures_util::future::join_all((0..20).map(|_| c2.get(pg.url("/hang")).send())).await;
    for r in hung {
        assert_eq!(r.unwrap().status(), 504);
    }
    // The certificate replaced with garbage: the old one keeps serving new handshakes.
    std::fs::write(dir.path().join("server.crt"), "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    let refused = || async { pg.metric("payguard_certificate_reloads_total{result=\"error\"}").await == 1.0 };
    assert!(eventually(Duration::from_secs(10), refused).await, "the broken certificate was not noticed");
    for _ in 0..20 {
        let fresh = bin_harness::client(&cert, false);
        assert_eq!(fresh.get(pg.url("/ok")).send().await.unwrap().status(), 200);
        peak = peak.max(pg.fds());
    }
    assert_eq!(c.get(pg.url("/admin")).send().await.unwrap().status(), 403, "rules still enforced");
    drop((c, c2));

    // Back to the baseline exactly, apart from at most a few pooled backend connections.
    let last = Mutex::new((0, 0));
    let back = eventually(Duration::from_secs(15), || async {
        let (n, p) = (pg.fds(), pool());
        *last.lock().unwrap() = (n, p);
        pg.metric("payguard_open_connections").await == 0.0 && n.saturating_sub(p) <= baseline - baseline_pool && p <= 4
    })
    .await;
    let (last, last_pool) = last.into_inner().unwrap();
    eprintln!(
        "payguard fds: baseline {baseline} ({baseline_pool} pooled backend connections), peak {peak}, after {last} \
         ({last_pool} pooled) for 360 faulty requests + 21 good ones"
    );
    assert!(back, "file descriptors leaked: baseline {baseline_fds:?}, now {:?}", pg.fd_targets());

    let m = pg.metrics().await;
    assert_eq!(sample(&m, "payguard_upstream_errors_total{kind=\"body\"}"), 200.0, "{m}");
    assert_eq!(sample(&m, "payguard_upstream_errors_total{kind=\"timeout\"}"), 20.0, "{m}");
    assert_eq!(sample(&m, "payguard_upstream_errors_total{kind=\"io\"}"), 100.0, "{m}");

    // The access log records each abort as an incomplete 200.
    let aborted = || async {
        pg.log()
            .iter()
            .filter(|l| l.contains("\"payguard::access\"") && l.contains("\"/reset-mid\""))
            .filter(|l| l.contains("\"completed\":false") && l.contains("\"status\":200"))
            .count()
            == 200
    };
    assert!(eventually(Duration::from_secs(5), aborted).await);
    // ...while a response that did arrive whole says so.
    let whole = pg.log().iter().filter(|l| l.contains("\"path\":\"/ok\"") && l.contains("\"completed\":true")).count();
    assert_eq!(whole, 22, "{:?}", pg.log().iter().filter(|l| l.contains("\"/ok\"")).collect::<Vec<_>>());
    let (code, stderr) = pg.terminate(Duration::from_secs(20)).await;
    no_panic(&stderr);
    assert_eq!(code, Some(0), "{stderr:?}");
}

/// The status of a GET, its body read to the end so that the connection can carry the next one.
async fn status(c: &reqwest::Client, url: String) -> u16 {
    let res = c.get(url).send().await.unwrap();
    let status = res.status().as_u16();
    let _ = res.bytes().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_directory_deleted_keeps_the_last_rules_until_it_returns() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let cfg = binary_config(dir.path(), &cert, backend.addr, None);
    let pg = Payguard::spawn(&cfg, Stdout::Captured, &[]).await;
    let c = h1_client(&cert);
    assert_eq!(status(&c, pg.url("/admin")).await, 403);

    // Sockets come and go with the client's and the backend pool's connections (another test
    // holds those to account); what the watcher opens is a file, a directory or an inotify.
    let files = || pg.fd_targets().into_iter().filter(|t| !t.starts_with("socket:")).collect::<Vec<_>>();
    let baseline = files();
    let rules = dir.path().join("rules");
    std::fs::remove_dir_all(&rules).unwrap();
    let refused = || async { pg.metric("payguard_rule_reloads_total{result=\"error\"}").await >= 1.0 };
    assert!(eventually(Duration::from_secs(10), refused).await, "the deletion was not noticed");
    // The last good rules keep serving, and payguard says it is fine to send traffic.
    let res = c.get(pg.url("/admin")).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"], "ip_denied");
    assert_eq!(status(&c, pg.url("/shop")).await, 200);
    let health = json(admin_get(pg.admin, "/readyz").await).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["rules_version"], 1);
    let logged = || async {
        pg.log().iter().any(|l| {
            l.contains("\"level\":\"ERROR\"") && l.contains("payguard::rules") && l.contains("rules directory")
        })
    };
    assert!(eventually(Duration::from_secs(5), logged).await, "{:?}", pg.log());

    // Recreated (directory first, the file a moment later, as a deploy would): loaded.
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("00-rules.toml"),
        "[[route]]\nname = \"admin\"\nmatch = { path = \"/admin\" }\nip_deny = [\"127.0.0.0/8\"]\n\n[[route]]\nname = \"closed\"\nmatch = { path = \"/closed\" }\nip_allow = []\n",
    )
    .unwrap();
    let loaded = || async {
        json(admin_get(pg.admin, "/healthz").await).await["rules_version"] == 2
            && status(&c, pg.url("/closed")).await == 403
    };
    assert!(eventually(Duration::from_secs(10), loaded).await, "the recreated rules did not load");
    assert_eq!(status(&c, pg.url("/admin")).await, 403);
    assert_eq!(status(&c, pg.url("/shop")).await, 200);
    // The watcher gives back what it opened.
    let settled = || async { files() == baseline };
    let fds_ok = eventually(Duration::from_secs(10), settled).await;
    assert!(fds_ok, "fds: {baseline:?} before the deletion, {:?} after", pg.fd_targets());
    let lines = pg.lines.clone();
    let (code, stderr) = pg.terminate(Duration::from_secs(20)).await;
    no_panic(&stderr);
    assert_eq!(code, Some(0));
    // The queue is flushed at exit: the very last line made it out.
    let last = lines.lock().unwrap().last().cloned().unwrap_or_default();
    assert!(last.contains("\"message\":\"stopped\""), "last line: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_on_a_full_disk_costs_log_lines_not_requests() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let cfg = binary_config(dir.path(), &cert, backend.addr, None);
    // /dev/full: every write fails with ENOSPC, as on a full disk.
    let pg = Payguard::spawn(&cfg, Stdout::File("/dev/full"), &[]).await;
    let c = h2_client(&cert);
    for _ in 0..50 {
        assert_eq!(c.get(pg.url("/shop")).send().await.unwrap().status(), 200);
        let res = c.get(pg.url("/admin")).send().await.unwrap();
        assert_eq!(res.status(), 403);
        assert_eq!(json(res).await["error"], "ip_denied");
    }
    assert_eq!(backend.count(), 50);
    // Startup lines + 100 access lines + 50 audit lines, each a failed write.
    let errors = Mutex::new(0.0);
    let counted = eventually(Duration::from_secs(10), || async {
        let e = pg.metric("payguard_log_write_errors_total").await;
        *errors.lock().unwrap() = e;
        e >= 150.0
    })
    .await;
    let errors = errors.into_inner().unwrap();
    eprintln!("stdout on /dev/full: {errors} failed log writes counted after 100 requests");
    assert!(counted, "write errors not counted: {errors}");
    let (code, stderr) = pg.terminate(Duration::from_secs(20)).await;
    no_panic(&stderr);
    assert_eq!(code, Some(0), "{stderr:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_pipe_nobody_reads_never_stalls_requests() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let cfg = binary_config(dir.path(), &cert, backend.addr, None);
    // Verbose logging so the pipe (64 KiB) and then the log queue fill within a few hundred
    // requests.
    let pg = Payguard::spawn(&cfg, Stdout::Unread, &[("RUST_LOG", "trace")]).await;
    let c = h2_client(&cert);
    let started = Instant::now();
    let mut sent = 0;
    let mut dropped = 0.0;
    while sent < 3_000 {
        let batch = futures_util::future::join_all((0..50).map(|_| c.get(pg.url("/shop")).send())).await;
        for r in batch {
            assert_eq!(r.unwrap().status(), 200, "a request failed behind a stuck log consumer");
        }
        sent += 50;
        dropped = pg.metric("payguard_log_lines_dropped_total").await;
        // Keep going well past the first drop: requests must still be served once lines are lost.
        if dropped > 1_000.0 && sent >= 1_000 {
            break;
        }
    }
    let res = c.get(pg.url("/admin")).send().await.unwrap();
    assert_eq!(res.status(), 403);
    eprintln!("stdout pipe never read: {sent} requests served in {:?}, {dropped} log lines dropped", started.elapsed());
    assert!(dropped > 1_000.0, "no log line was dropped after {sent} requests: the queue is unbounded");
    // Shutdown does not hang on the stuck consumer either.
    let (code, stderr) = pg.terminate(Duration::from_secs(20)).await;
    no_panic(&stderr);
    assert_eq!(code, Some(0), "{stderr:?}");
}
