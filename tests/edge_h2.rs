//! HTTP/2 hostile clients against the real proxy (127.0.0.1, real TLS): stream limits, header
//! list size, rapid reset (CVE-2023-44487) both before and after payguard took the streams on
//! (`[server] max_h2_resets`), CONTINUATION flood (CVE-2024-27316 class), SETTINGS and PING
//! floods. The attacks are made by `tests/h2/hostile.py` with the Python `h2` library
//! (Debian package `python3-h2`); each prints one JSON line that the tests assert on.
//!
//! While each flood runs, a well-behaved HTTP/2 client measures the latency of plain GETs; its
//! p99 must stay within max(3 × the p99 it had before the flood, 50 ms). The floor keeps a
//! loaded 2-core CI box from tripping it; the measured numbers are printed (`--nocapture`).
//! The tests run one at a time (a shared lock) so that one flood does not skew another's numbers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

/// How long the floods whose latency is measured go on (seconds): each attack takes a few tens
/// of milliseconds before payguard cuts it off, so the attacker reconnects and repeats it, and
/// the well-behaved client's p99 is taken over a thousand-odd requests, not over the few that
/// fit in one attack (where p99 would be the single slowest).
const SUSTAINED: &str = "2";

/// One flood at a time: the latency numbers are per flood.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A real hyper backend that counts the requests it sees per path. `/barrier` requests are held
/// until `barrier` of them have arrived, then all are answered together; `/hang` never answers;
/// `/big` answers 32 MiB.
#[derive(Clone)]
struct CountingBackend {
    addr: SocketAddr,
    seen: Arc<Mutex<HashMap<String, usize>>>,
}

impl CountingBackend {
    async fn start(barrier: usize) -> CountingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = CountingBackend { addr: listener.local_addr().unwrap(), seen: Arc::default() };
        let seen = b.seen.clone();
        let gate = Arc::new(tokio::sync::Barrier::new(barrier));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (seen, gate) = (seen.clone(), gate.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (seen, gate) = (seen.clone(), gate.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            *seen.lock().unwrap().entry(path.clone()).or_default() += 1;
                            let _ = req.into_body().collect().await;
                            if path == "/barrier" {
                                gate.wait().await;
                            }
                            if path == "/hang" {
                                std::future::pending::<()>().await;
                            }
                            let body = if path == "/big" {
                                Bytes::from(vec![b'x'; 32 << 20])
                            } else {
                                Bytes::from_static(b"{\"ok\":true}")
                            };
                            Ok::<_, Infallible>(http::Response::new(Full::new(body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        b
    }

    fn count(&self, path: &str) -> usize {
        self.seen.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h2/hostile.py")
}

/// The attacker runs at the lowest CPU priority: on a 2-core box its own interpreter would
/// otherwise take a core from the proxy and the probe, and the probe's latency would measure the
/// attacker's machine rather than what the flood costs the proxy.
fn hostile_cmd(proxy: &Proxy, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("nice");
    cmd.args(["-n", "19", python()])
        .arg(script())
        .arg("127.0.0.1")
        .arg(proxy.addr.port().to_string())
        .arg(proxy.dir.path().join("server.crt"))
        .args(args);
    cmd
}

/// Runs one hostile scenario against the proxy (on a blocking thread) and parses its JSON line.
async fn hostile(proxy: &Proxy, args: &[&str]) -> Value {
    let mut cmd = hostile_cmd(proxy, args);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap();
    parse_result(args, &out)
}

/// Starts one hostile scenario; the receiver fires when its (first) connection is up, the task
/// ends with its JSON line.
fn hostile_started(
    proxy: &Proxy,
    args: &[&str],
) -> (tokio::sync::oneshot::Receiver<()>, tokio::task::JoinHandle<Value>) {
    use std::io::BufRead;
    let mut cmd = hostile_cmd(proxy, args);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::task::spawn_blocking(move || {
        let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        let mut tx = Some(tx);
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap() > 0 {
            if line.trim() == "connected" {
                tx.take().map(|tx| tx.send(()));
            }
            lines.push(std::mem::take(&mut line));
        }
        let mut out = child.wait_with_output().unwrap();
        out.stdout = lines.concat().into_bytes();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        parse_result(&args, &out)
    });
    (rx, task)
}

fn parse_result(args: &[&str], out: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "hostile.py {args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("hostile.py {args:?}: not JSON ({e}): {stdout}"))
}

async fn timed_get(client: &reqwest::Client, url: &str) -> Duration {
    let t = Instant::now();
    let res = client.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200, "a well-behaved client was refused");
    res.bytes().await.unwrap();
    t.elapsed()
}

fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[(samples.len() * 99).div_ceil(100).saturating_sub(1)]
}

/// p99 of sequential GETs by a well-behaved HTTP/2 client on an otherwise quiet proxy.
async fn baseline(client: &reqwest::Client, url: &str) -> Duration {
    for _ in 0..20 {
        timed_get(client, url).await;
    }
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        samples.push(timed_get(client, url).await);
    }
    p99(&mut samples)
}

/// Runs the scenario while the well-behaved client keeps sending GETs (at least 20 of them,
/// and until the scenario is over); asserts its p99 against the baseline.
async fn flood_with_probe(proxy: &Proxy, name: &str, args: &[&str]) -> Value {
    let client = h2_client(&proxy.cert);
    let url = proxy.url("/probe");
    let base = baseline(&client, &url).await;
    // Sampling starts when the attacker's connection is up: its interpreter starting is no flood.
    let (connected, mut flood) = hostile_started(proxy, args);
    tokio::time::timeout(Duration::from_secs(30), connected).await.unwrap().unwrap();
    let mut samples = Vec::new();
    let result = loop {
        tokio::select! {
            biased;
            r = &mut flood, if samples.len() >= 20 => break r.unwrap(),
            d = timed_get(&client, &url) => samples.push(d),
        }
    };
    let during = p99(&mut samples);
    let bound = (base * 3).max(Duration::from_millis(50));
    eprintln!(
        "{name}: well-behaved client p99 baseline {:.2} ms, during flood {:.2} ms ({} GETs), bound {:.0} ms; flood result {result}",
        base.as_secs_f64() * 1e3,
        during.as_secs_f64() * 1e3,
        samples.len(),
        bound.as_secs_f64() * 1e3,
    );
    assert!(during <= bound, "{name}: p99 {during:?} during the flood is over {bound:?} (baseline {base:?})");
    // And the proxy still serves a brand-new connection afterwards.
    assert_eq!(h2_client(&proxy.cert).get(proxy.url("/after")).send().await.unwrap().status(), 200);
    result
}

fn goaway_error(v: &Value) -> Option<&str> {
    v["goaway"]["error"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_max_h2_streams_are_refused() {
    let _serial = SERIAL.lock().await;
    let backend = CountingBackend::start(8).await;
    let proxy = start_proxy(backend.addr, "max_h2_streams = 8").await;
    // 12 streams in one burst, sent before the client has read the server's SETTINGS.
    let v = hostile(&proxy, &["streams", "--count", "12", "--path", "/barrier"]).await;
    assert_eq!(v["max_concurrent_streams"], 8, "SETTINGS_MAX_CONCURRENT_STREAMS advertised: {v}");
    assert!(v["goaway"].is_null() && v["closed"] == false, "the connection itself is fine: {v}");
    for id in [1, 3, 5, 7, 9, 11, 13, 15] {
        assert_eq!(v["status"][id.to_string()], 200, "stream {id} is within the limit: {v}");
    }
    for id in [17, 19, 21, 23] {
        assert_eq!(v["reset"][id.to_string()], "REFUSED_STREAM", "stream {id} is over the limit: {v}");
        assert!(v["status"][id.to_string()].is_null(), "stream {id} got a response: {v}");
    }
    assert_eq!(backend.count("/barrier"), 8, "only the streams within the limit reach the backend");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_list_size_limit() {
    let _serial = SERIAL.lock().await;
    let backend = CountingBackend::start(1).await;
    let proxy = start_proxy(backend.addr, "max_header_size = \"16KiB\"").await;
    // RFC 9113 header list size (name + value + 32 per field, pseudo-headers included):
    // just under the limit, at it, at 4x it (the most h2 still answers), and over 4x.
    let max = 16 * 1024;
    let sizes = [max - 1, max, 4 * max, 4 * max + 1024];
    let arg = sizes.map(|s| s.to_string()).join(",");
    let v = hostile(&proxy, &["headers", "--sizes", &arg]).await;
    let r = v["results"].as_array().unwrap();
    for (res, size) in r.iter().zip(sizes) {
        assert_eq!(res["size"], size, "the script built the size asked for: {res}");
    }
    // Under the limit: forwarded.
    assert_eq!(r[0]["status"]["1"], 200, "{}", r[0]);
    assert_eq!(r[0]["status"]["3"], 200, "{}", r[0]);
    assert_eq!(backend.count("/hdr"), 1, "only the request under the limit reaches the backend");
    // At the limit and up to 4x: 431 on that stream (END_STREAM, no RST), and the connection
    // goes on serving: the next stream on it gets 200.
    for res in &r[1..3] {
        assert_eq!(res["status"]["1"], 431, "{res}");
        assert!(res["reset"]["1"].is_null() && res["goaway"].is_null(), "{res}");
        assert_eq!(res["status"]["3"], 200, "the connection is still usable after the 431: {res}");
    }
    // Beyond 4x the limit: the whole connection is refused with GOAWAY ENHANCE_YOUR_CALM.
    assert_eq!(goaway_error(&r[3]), Some("ENHANCE_YOUR_CALM"), "{}", r[3]);
    assert_eq!(r[3]["goaway"]["debug"], "header_list_way_too_large", "{}", r[3]);
    assert!(r[3]["closed_after_ms"].as_u64().is_some_and(|ms| ms <= 3000), "closed within 3 s: {}", r[3]);
    assert!(r[3]["status"]["1"].is_null(), "{}", r[3]);
    assert_eq!(backend.count("/hdr"), 1);
    assert_eq!(backend.count("/after"), 3, "one follow-up GET on each connection that was not refused");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_goaway() {
    let _serial = SERIAL.lock().await;
    let backend = CountingBackend::start(1).await;
    let proxy = start_proxy(backend.addr, "").await;
    // Up to 5000 HEADERS + RST_STREAM(CANCEL) pairs, 100 per write.
    let v =
        flood_with_probe(&proxy, "rapid reset", &["rapid-reset", "--streams", "5000", "--duration", SUSTAINED]).await;
    // The client pauses 20 ms between batches, so it normally reads the GOAWAY; when the close
    // (TCP reset: our frames were still unread) overtakes it, there is none to read.
    assert_eq!(v["closed"], true, "the connection is closed: {v}");
    assert!(v["sent"].as_u64().unwrap() <= 1000, "closed only after {} streams: {v}", v["sent"]);
    if !v["goaway"].is_null() {
        assert_eq!(goaway_error(&v), Some("ENHANCE_YOUR_CALM"), "{v}");
        assert_eq!(v["goaway"]["debug"], "too_many_resets", "{v}");
        // It names the last stream the server processed: past the pending-accept limit (20
        // cancelled before payguard took them on), within the first batch of 100.
        let last = v["goaway"]["last_stream_id"].as_u64().unwrap();
        assert!(last <= 2 * 100, "GOAWAY only after {} streams: {v}", last.div_ceil(2));
    }
    let reached = backend.count("/rapid-reset");
    let rounds = v["rounds"].as_u64().unwrap() as usize;
    eprintln!(
        "rapid reset: {rounds} rounds, the last sent {} streams, GOAWAY {}; {reached} reached the backend",
        v["sent"], v["goaway"]
    );
    assert!(reached <= 100 * rounds, "{reached} reset requests of {rounds} rounds reached the backend");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_cut_off() {
    let _serial = SERIAL.lock().await;
    let backend = CountingBackend::start(1).await;
    let proxy = start_proxy(backend.addr, "").await;
    // Empty CONTINUATION frames (no size ever adds up) and ones carrying ~1 KB of valid HPACK.
    for payload in ["0", "1000"] {
        let name = format!("CONTINUATION flood, {payload}-byte frames");
        let args = ["continuation", "--frames", "5000", "--payload", payload, "--duration", SUSTAINED];
        let v = flood_with_probe(&proxy, &name, &args).await;
        // The client pauses 20 ms after every 5 frames, so it normally reads the GOAWAY; when
        // the close (TCP reset: our frames were still unread) overtakes it, there is none to read.
        if !v["goaway"].is_null() {
            assert_eq!(goaway_error(&v), Some("ENHANCE_YOUR_CALM"), "{v}");
            assert_eq!(v["goaway"]["debug"], "too_many_continuations", "{v}");
        }
        assert_eq!(v["closed"], true, "{v}");
        assert!(v["sent"].as_u64().unwrap() <= 500, "closed only after {} frames: {v}", v["sent"]);
        assert!(v["closed_after_ms"].as_u64().is_some_and(|ms| ms <= 3000), "closed within 3 s: {v}");
    }
    assert_eq!(backend.count("/continuation"), 0, "a header block that never ends is never forwarded");
    proxy.stop().await;
}

/// SETTINGS and PING floods whose ACKs the client does not read while flooding. h2 answers each
/// frame and reads no further until the answer is written, so nothing piles up in the proxy;
/// past `max_h2_control_frames` (default 1,000 per connection in 10 s) the connection is closed,
/// so the flood stops costing CPU. Half the budget is answered frame for frame.
async fn control_flood(kind: &str) {
    let _serial = SERIAL.lock().await;
    let backend = CountingBackend::start(1).await;
    let proxy = start_proxy(backend.addr, "").await;
    let v =
        flood_with_probe(&proxy, &format!("{kind} flood"), &[kind, "--frames", "5000", "--duration", SUSTAINED]).await;
    assert_eq!(v["closed"], true, "a flood of 5,000 was not cut off: {v}");
    assert!(v["acks"].as_i64().unwrap() <= 1000, "more ACKs than the budget: {v}");
    let m = proxy.metrics().await;
    let rounds = v["rounds"].as_u64().unwrap();
    assert!(
        m.contains(&format!("payguard_h2_abuse_total{{kind=\"control_frames\"}} {rounds}")),
        "{rounds} rounds: {m}"
    );
    let v = hostile(&proxy, &[kind, "--frames", "500"]).await;
    assert_eq!((&v["closed"], v["acks"].as_u64()), (&Value::Bool(false), Some(500)), "within the budget: {v}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_is_bounded() {
    control_flood("settings").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_is_bounded() {
    control_flood("ping").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_requests_are_budgeted_per_connection() {
    let _serial = SERIAL.lock().await;
    let backend = CountingBackend::start(1).await;
    let proxy = start_proxy(backend.addr, "max_h2_resets = 20").await;
    // Rapid reset that h2's pending-accept limit does not see: each batch of 10 streams is
    // cancelled only after 200 ms, when payguard has taken them on and forwarded them to the
    // backend (which never answers `/hang`). Unbounded, all 400 would reach the backend.
    let args = ["rapid-reset", "--streams", "400", "--batch", "10", "--hold-ms", "200", "--path", "/hang"];
    let v = flood_with_probe(&proxy, "slow reset", &args).await;
    let reached = backend.count("/hang");
    eprintln!("slow reset: {} streams sent, {reached} reached the backend", v["sent"]);
    // payguard's budget (GOAWAY NO_ERROR, graceful) or, on a box too slow to take the streams
    // on within 200 ms, h2's own pending-accept limit (ENHANCE_YOUR_CALM): bounded either way.
    assert!(matches!(goaway_error(&v), Some("NO_ERROR" | "ENHANCE_YOUR_CALM")), "{v}");
    assert!(v["sent"].as_u64().unwrap() <= 100, "GOAWAY only after {} streams: {v}", v["sent"]);
    assert!(reached <= 60, "{reached} cancelled requests reached the backend");
    assert!(v["closed_after_ms"].as_u64().is_some_and(|ms| ms <= 3000), "closed within 3 s: {v}");
    proxy.stop().await;
}

/// A client that stops reading (after a PING or SETTINGS flood, or in the middle of a large
/// response) blocks every write to it, the GOAWAY of a graceful close included. Once nothing has
/// moved for `idle_timeout` after the close began, payguard drops the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped() {
    use std::process::Stdio;
    let _serial = SERIAL.lock().await;
    let backend = CountingBackend::start(1).await;
    let proxy = start_proxy(backend.addr, "idle_timeout = \"1s\"").await;
    let open = |n: u32| {
        let proxy = &proxy;
        async move { proxy.metrics().await.contains(&format!("payguard_open_connections {n}\n")) }
    };
    assert!(open(0).await);
    // The client holds its socket without reading until we close its stdin (20 s at most).
    let args = ["stall", "--path", "/big", "--hold", "20"];
    let mut child =
        hostile_cmd(&proxy, &args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdin = child.stdin.take();
    assert!(eventually(Duration::from_secs(5), || async { backend.count("/big") == 1 }).await, "request never arrived");
    assert!(open(1).await, "the stalled connection is open");
    let t = Instant::now();
    // 1 s without progress -> GOAWAY that cannot be written -> 1 s more -> dropped.
    let gone = eventually(Duration::from_secs(15), || open(0)).await;
    let after = t.elapsed();
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let v = parse_result(&args, &out);
    eprintln!(
        "stalled client: dropped {gone} {:.1} s after the request arrived; client then saw {v}",
        after.as_secs_f64()
    );
    assert!(gone, "the connection of a client that stopped reading is still open: {v}");
    assert_eq!(v["closed"], true, "the client sees its connection closed: {v}");
    assert!(v["received_after_hold"].as_u64().unwrap() < 16 << 20, "most of the 32 MiB never left: {v}");
    proxy.stop().await;
}

/// Each response's `x-request-id` is new, so payguard sends it as a never-indexed literal
/// (RFC 7541 §6.2.3). Indexed, every id took a place in the connection's HPACK table, pushed the
/// headers that do repeat out of it (so they went out in full again) and made the encoder
/// compare each new id with all the ones it kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_never_indexed_and_repeated_headers_stay_indexed() {
    let _serial = SERIAL.lock().await;
    let backend = CountingBackend::start(1).await;
    let proxy = start_proxy(backend.addr, "").await;
    // More responses than the 4 KiB table holds ids (an entry is 32 + 12 + 32 bytes).
    const N: usize = 120;
    let v = hostile(&proxy, &["sequential", "--count", &N.to_string(), "--path", "/seq"]).await;
    assert_eq!(backend.count("/seq"), N, "every request was forwarded: {v}");
    let never = v["never_indexed"].as_array().expect("never_indexed");
    assert_eq!(never.len(), N, "every response arrived on the one connection: {v}");
    for (i, names) in never.iter().enumerate() {
        assert_eq!(names, &serde_json::json!(["x-request-id"]), "response {i}: only the request id is never indexed");
    }
    let blocks: Vec<u64> =
        v["header_blocks"].as_array().expect("header_blocks").iter().filter_map(Value::as_u64).collect();
    assert_eq!(blocks.len(), N, "one header block per response: {blocks:?}");
    // From the second response on, the repeated headers are table references; only the id (and
    // a new `date` once a second, ~23 bytes) is sent as a literal. Pushed out of the table, the
    // repeated headers would go out in full again, as in the first block.
    let steady = blocks[1..].iter().copied().min().unwrap_or(0);
    assert!(steady + 20 < blocks[0], "the later responses reuse the first's headers: {blocks:?}");
    assert!(blocks[1..].iter().all(|&b| b <= steady + 30), "the repeated headers stay in the table: {blocks:?}");
    proxy.stop().await;
}
