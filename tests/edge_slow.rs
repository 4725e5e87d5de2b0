//! Slow and greedy clients against the real proxy (real TLS, real backend): slowloris, slow
//! POST, slow read, and a connection flood past `max_connections`. Every slow connection must
//! be closed within its timeout plus 2 s, and fresh clients must keep being served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

/// The tests here open hundreds of sockets and measure timeouts: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The slack allowed past a timeout before a connection must be gone.
const SLACK: Duration = Duration::from_secs(2);

fn connector(cert: &TestCert, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(Arc::new(rustls_client(&[&cert.der], alpn)))
}

fn localhost() -> rustls_pki_types::ServerName<'static> {
    rustls_pki_types::ServerName::try_from("localhost").unwrap()
}

async fn tls_connect(addr: SocketAddr, tls: &tokio_rustls::TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tls.connect(localhost(), tcp).await.unwrap()
}

/// Reads until the server closes (EOF or error); returns what it sent. Panics after `within`.
async fn read_to_close<R: tokio::io::AsyncRead + Unpin>(r: &mut R, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let done = tokio::time::timeout(within, async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(done.is_ok(), "server did not close the connection within {within:?}");
    out
}

/// Sockets the proxy (in this process) holds for connections accepted on `port`: open file
/// descriptors of TCP sockets whose local port is `port`, the listener excepted.
fn server_sockets(port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    // Distinct inodes: a table read while it changes may list a socket twice.
    let mut held = std::collections::HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            // st 0A = LISTEN: the listener itself.
            if local_port == Some(port) && f[3] != "0A" && inodes.contains(f[9]) {
                held.insert(f[9].to_string());
            }
        }
    }
    held.len()
}

#[tokio::test]
async fn slowloris_connections_are_closed_after_header_read_timeout_while_fresh_clients_are_served() {
    let _serial = SERIAL.lock().await;
    const N: usize = 300;
    let timeout = Duration::from_secs(2);
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "header_read_timeout = \"2s\"\n").await;
    let tls = connector(&proxy.cert, &[b"http/1.1"]);
    let started = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    // Handshakes in waves of 50 so the test measures the proxy, not a connect storm.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(50));
    for _ in 0..N {
        let (tls, started, handshakes, addr) = (tls.clone(), started.clone(), handshakes.clone(), proxy.addr);
        tasks.push(tokio::spawn(async move {
            let permit = handshakes.acquire_owned().await.unwrap();
            let stream = tls_connect(addr, &tls).await;
            drop(permit);
            let (mut r, mut w) = tokio::io::split(stream);
            // A request head that never ends: one more header line every 500 ms.
            w.write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
            let sent = Instant::now();
            started.fetch_add(1, Ordering::Relaxed);
            let dribble = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if w.write_all(b"X-Slow: 1\r\n").await.is_err() {
                        return;
                    }
                }
            });
            let answer = read_to_close(&mut r, Duration::from_secs(30)).await;
            dribble.abort();
            (sent.elapsed(), Instant::now(), answer)
        }));
    }
    assert!(
        eventually(Duration::from_secs(30), || async { started.load(Ordering::Relaxed) == N }).await,
        "only {} of {N} slow connections were set up",
        started.load(Ordering::Relaxed)
    );
    // A fresh client while they hang on.
    let open_before = proxy.running.as_ref().unwrap().metrics.open_connections.get();
    let fresh = Instant::now();
    let res = h1_client(&proxy.cert).get(proxy.url("/fresh")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let fresh_latency = fresh.elapsed();
    let fresh_done = Instant::now();

    let mut lifetimes = Vec::new();
    let mut last_close = fresh_done - Duration::from_secs(3600);
    for t in tasks {
        let (lifetime, closed_at, answer) = t.await.unwrap();
        assert!(!answer.starts_with(b"HTTP/1.1 200"), "a slowloris request was answered");
        lifetimes.push(lifetime);
        last_close = last_close.max(closed_at);
    }
    lifetimes.sort();
    let max = *lifetimes.last().unwrap();
    eprintln!(
        "slowloris: {N} connections, lifetime after first header byte min {:?} median {:?} max {max:?} (header_read_timeout {timeout:?}); fresh request {fresh_latency:?} with {open_before} connections open",
        lifetimes[0],
        lifetimes[N / 2]
    );
    assert!(max <= timeout + SLACK, "a slowloris connection lived {max:?}");
    assert!(lifetimes[0] >= timeout - Duration::from_millis(200), "closed before the timeout: {:?}", lifetimes[0]);
    assert!(last_close > fresh_done, "the fresh client was only served after every slow connection was gone");
    assert_eq!(backend.count(), 1, "only the fresh request reaches the backend");
    let m = proxy.metrics().await;
    assert!(m.contains(&format!("payguard_connection_timeouts_total{{kind=\"header\"}} {N}")), "{m}");
    proxy.stop().await;
}

/// Sends a request head announcing `len` body bytes, then one byte every 300 ms. Returns what
/// the server answered and how long after the head the connection was closed.
async fn slow_post(addr: SocketAddr, tls: &tokio_rustls::TlsConnector, path: &str, len: usize) -> (String, Duration) {
    let stream = tls_connect(addr, tls).await;
    let (mut r, mut w) = tokio::io::split(stream);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    w.write_all(head.as_bytes()).await.unwrap();
    let sent = Instant::now();
    let dribble = tokio::spawn(async move {
        for _ in 0..len {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if w.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let answer = read_to_close(&mut r, Duration::from_secs(30)).await;
    let elapsed = sent.elapsed();
    dribble.abort();
    (String::from_utf8_lossy(&answer).into_owned(), elapsed)
}

const BUFFERED_RULES: &[(&str, &str)] = &[(
    "00-slow.toml",
    r#"[defaults]
max_body = "1MiB"

[[route]]
name = "buffered"
match = { path = "/buffered", methods = ["POST"] }
[route.validate]
content_type = ["application/json"]
fields = [{ at = "/a", type = "string" }]
"#,
)];

#[tokio::test]
async fn slow_post_is_cut_off_with_408_after_body_read_timeout() {
    let _serial = SERIAL.lock().await;
    let timeout = Duration::from_secs(2);
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "body_read_timeout = \"2s\"\n", BUFFERED_RULES).await;
    let tls = connector(&proxy.cert, &[b"http/1.1"]);

    // Streamed route: the body goes to the backend as it arrives, and is aborted there.
    let (answer, lifetime) = slow_post(proxy.addr, &tls, "/upload", 1000).await;
    eprintln!("slow POST (streamed): closed {lifetime:?} after the head (body_read_timeout {timeout:?})");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    assert!(answer.contains(r#""request_id":""#), "{answer}");
    assert!(lifetime >= timeout - Duration::from_millis(200) && lifetime <= timeout + SLACK, "{lifetime:?}");
    assert!(
        eventually(Duration::from_secs(10), || async { backend.count() == 1 }).await,
        "the backend never saw the streamed request"
    );
    let seen = backend.last();
    assert!(seen.body_len < 1000, "the backend got a complete body: {}", seen.body_len);

    // Buffered route (validated): nothing reaches the backend.
    let (answer, lifetime) = slow_post(proxy.addr, &tls, "/buffered", 1000).await;
    eprintln!("slow POST (buffered): closed {lifetime:?} after the head");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""rule":"buffered""#), "{answer}");
    assert!(lifetime <= timeout + SLACK, "{lifetime:?}");
    // ...while a normal request to the same route goes through.
    let res = h1_client(&proxy.cert)
        .post(proxy.url("/buffered"))
        .header("content-type", "application/json")
        .body(r#"{"a":"b"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(backend.count(), 2, "the slow buffered request must not have been forwarded");
    assert_eq!(backend.last().body, br#"{"a":"b"}"#);

    // HTTP/2: the stream is answered 408.
    let started = Instant::now();
    let dribble = futures_util::stream::unfold(0u32, |i| async move {
        if i >= 100 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b" ")), i + 1))
    });
    let res = h2_client(&proxy.cert)
        .post(proxy.url("/upload-h2"))
        .header("content-type", "application/json")
        .header("content-length", "100")
        .body(reqwest::Body::wrap_stream(dribble))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    eprintln!("slow POST (HTTP/2): answered after {elapsed:?}");
    assert_eq!(res.status(), 408);
    assert!(elapsed <= timeout + SLACK, "{elapsed:?}");
    assert_eq!(json(res).await["error"], "request_timeout");
    proxy.stop().await;
}

/// Connects with a 4 KiB receive buffer (a small TCP window) and asks for `bytes` bytes.
async fn small_window_download(addr: SocketAddr, cert: &TestCert, bytes: u64) -> TlsStream<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(addr).await.unwrap();
    let mut s = connector(cert, &[b"http/1.1"]).connect(localhost(), tcp).await.unwrap();
    s.write_all(format!("GET /download?bytes={bytes} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    s
}

/// A client asks for `size` bytes and never reads: closed at the send timeout (2 s), with a long
/// idle timeout so that only the send timeout can close it in time.
async fn reader_taking_nothing_is_closed(size: u64) {
    let _serial = SERIAL.lock().await;
    let timeout = Duration::from_secs(2);
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "send_timeout = \"2s\"\nidle_timeout = \"120s\"\n").await;
    let metrics = proxy.running.as_ref().unwrap().metrics.clone();
    let mut s = small_window_download(proxy.addr, &proxy.cert, size).await;
    let sent = Instant::now();
    assert!(
        eventually(Duration::from_secs(30), || async { metrics.open_connections.get() == 0 }).await,
        "the reader taking nothing of {size} bytes is still connected"
    );
    let lifetime = sent.elapsed();
    eprintln!(
        "reader taking nothing of {size} bytes: closed {lifetime:?} after the request (send_timeout {timeout:?})"
    );
    assert!(lifetime >= timeout, "closed before the send timeout: {lifetime:?}");
    assert!(lifetime <= timeout + SLACK, "a reader taking nothing lived {lifetime:?}");
    let m = proxy.metrics().await;
    assert!(m.contains("payguard_connection_timeouts_total{kind=\"send\"} 1"), "{m}");
    // The client finds the connection gone (after what was already in flight).
    let got = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!((got.len() as u64) < size, "the whole response arrived");
    // The proxy still serves readers that read.
    let res = h1_client(&proxy.cert).get(proxy.url("/download?bytes=1000000")).send().await.unwrap();
    assert_eq!(res.bytes().await.unwrap().len(), 1_000_000);
    proxy.stop().await;
}

/// 256 MiB: payguard's writes stall once the socket buffers are full.
#[tokio::test]
async fn slow_reader_is_closed_after_send_timeout() {
    reader_taking_nothing_is_closed(256 << 20).await;
}

/// 48 KiB fits in the socket buffers: no write of payguard's ever waits, yet the client takes
/// nothing. It is closed at the send timeout, not left to the (long) idle timeout.
#[tokio::test]
async fn a_reader_that_takes_nothing_is_closed_even_when_no_write_waits() {
    reader_taking_nothing_is_closed(48 << 10).await;
}

/// A client reading slowly but steadily (about 16 KiB/s, above `min_send_rate`) through a large
/// response keeps its connection across several send timeouts, though payguard's writes wait
/// on the full socket buffer all along; one reading 256 bytes a second (below it) is closed at
/// the send timeout. (That one does not notice soon: its TLS layer holds a whole record.)
/// A TLS client reads its socket a record at a time, and payguard, like nginx, writes records
/// of 16 KiB when the answer comes faster than the client takes it: the steady reader takes
/// one a second, so that every window of the 2 s send timeout sees it take some.
#[tokio::test]
async fn readers_are_judged_by_the_rate_they_take() {
    let _serial = SERIAL.lock().await;
    let timeout = Duration::from_secs(2);
    let backend = Backend::start().await;
    let proxy = start_proxy(
        backend.addr,
        "send_timeout = \"2s\"\nidle_timeout = \"120s\"\nmin_send_rate = \"2KiB\"\nsend_buffer = \"16KiB\"\n",
    )
    .await;
    let metrics = proxy.running.as_ref().unwrap().metrics.clone();
    let reader = |chunk: usize, every: Duration| {
        let (addr, cert) = (proxy.addr, proxy.cert.clone());
        async move {
            let mut s = small_window_download(addr, &cert, 10_000_000).await;
            let mut buf = vec![0u8; chunk];
            let mut got = 0usize;
            loop {
                match s.read(&mut buf).await {
                    Ok(n) if n > 0 => got += n,
                    _ => return got,
                }
                tokio::time::sleep(every).await;
            }
        }
    };
    let started = Instant::now();
    let steady = tokio::spawn(reader(2048, Duration::from_millis(125)));
    let slow = tokio::spawn(reader(64, Duration::from_millis(250)));
    let send_timeouts =
        || metrics.connection_timeouts.get_or_create(&payguard::metrics::KindLabels { kind: "send" }).get();
    assert!(eventually(Duration::from_secs(10), || async { send_timeouts() == 1 }).await, "no reader was closed");
    let slow_lifetime = started.elapsed();
    eprintln!("reader taking 256 B/s closed after {slow_lifetime:?} (send_timeout {timeout:?}, min_send_rate 2 KiB/s)");
    assert!(slow_lifetime <= timeout + SLACK, "the slow reader lived {slow_lifetime:?}");
    // Three and a half send timeouts in all: the steady reader is still there, the slow one gone.
    tokio::time::sleep_until(started + Duration::from_secs(7)).await;
    assert_eq!(send_timeouts(), 1);
    assert_eq!(metrics.open_connections.get(), 1, "the steady reader was cut off too");
    assert!(!steady.is_finished());
    steady.abort();
    slow.abort();
    proxy.stop().await;
}

struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn connection_flood_past_max_connections_is_refused_at_once_and_recovers() {
    let _serial = SERIAL.lock().await;
    const MAX: usize = 20;
    const FLOOD: usize = 200;
    let backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, &format!("max_connections = {MAX}\nheader_read_timeout = \"60s\"\n")).await;
    let metrics = proxy.running.as_ref().unwrap().metrics.clone();
    let tls = connector(&proxy.cert, &[b"http/1.1"]);
    // The attacker first takes every slot...
    let mut held = Vec::new();
    for _ in 0..MAX {
        held.push(tls_connect(proxy.addr, &tls).await);
    }
    assert!(eventually(Duration::from_secs(10), || async { metrics.open_connections.get() == MAX as i64 }).await);
    // ...then floods. Every extra connection must fail fast, not hang in the backlog.
    let port = proxy.addr.port();
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    // Stops the sampler however this test ends (a blocking task would hold the runtime open).
    let _stop = StopOnDrop(sampling.clone());
    let sampler = tokio::task::spawn_blocking({
        let sampling = sampling.clone();
        move || {
            let mut max = 0;
            while sampling.load(Ordering::Relaxed) {
                max = max.max(server_sockets(port));
                std::thread::sleep(Duration::from_millis(5));
            }
            max
        }
    });
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let (tls, addr) = (tls.clone(), proxy.addr);
        flood.push(tokio::spawn(async move {
            let start = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(10), async {
                // The reset may even beat the end of connect().
                let Ok(tcp) = TcpStream::connect(addr).await else { return false };
                tls.connect(localhost(), tcp).await.is_ok()
            })
            .await;
            (r, start.elapsed())
        }));
    }
    let mut times = Vec::new();
    for f in flood {
        let (r, elapsed) = f.await.unwrap();
        assert_eq!(r, Ok(false), "a flood connection got through or hung (after {elapsed:?})");
        times.push(elapsed);
    }
    times.sort();
    let slowest = times[FLOOD - 1];
    eprintln!(
        "refusal times: p50 {:?} p90 {:?} p99 {:?}",
        times[FLOOD / 2],
        times[FLOOD * 9 / 10],
        times[FLOOD * 99 / 100]
    );
    sampling.store(false, Ordering::Relaxed);
    let max_sockets = sampler.await.unwrap();
    eprintln!("flood: {FLOOD} extra connections refused, slowest refusal {slowest:?}; at most {max_sockets} server sockets open (max_connections {MAX})");
    assert!(slowest < Duration::from_secs(5), "a refusal took {slowest:?}");
    assert!(max_sockets <= MAX + 2, "{max_sockets} server sockets open with max_connections = {MAX}");
    assert!(max_sockets >= MAX, "the sampler did not see the held connections ({max_sockets})");
    let m = proxy.metrics().await;
    assert!(m.contains(&format!("payguard_connections_refused_total {FLOOD}")), "{m}");
    assert!(m.contains(&format!("payguard_open_connections {MAX}")), "{m}");
    // The flood ends: a fresh client is served within 2 s.
    drop(held);
    let ended = Instant::now();
    let served = eventually(Duration::from_secs(10), || async {
        let c = h1_client(&proxy.cert);
        matches!(c.get(proxy.url("/after")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    let recovery = ended.elapsed();
    eprintln!("flood: fresh client served {recovery:?} after the flood ended");
    assert!(served, "no fresh client was served after the flood");
    assert!(recovery <= Duration::from_secs(2), "recovery took {recovery:?}");
    assert_eq!(backend.count(), 1);
    proxy.stop().await;
}
