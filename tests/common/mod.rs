//! Shared test harness: a real in-process hyper backend, a real payguard on 127.0.0.1:0 with a
//! certificate generated at run time, and real HTTP/1.1 and HTTP/2 clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub type TestBody = BoxBody<Bytes, Infallible>;

/// What the backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body_len: u64,
    pub body_sha256: String,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().map(|v| v.to_str().unwrap_or("").to_string()).collect()
    }
}

/// A real hyper HTTP/1.1 backend on 127.0.0.1:0.
///
/// Paths (anywhere below a prefix): `…/status/NNN` answers NNN; `…/gate` answers only after [`Backend::open_gate`]; `…/hang` never answers;
/// `…/download?bytes=N` streams N bytes (first chunk at once, the rest after the gate opens when
/// `gated=1`); `…/echo` answers 200 with the request's body (as JSON); anything else answers 200
/// `{"ok":true}` after reading the whole body.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub gate: Arc<Notify>,
    /// Notified when a request reaches `/gate` (so tests know it is in flight).
    pub arrived: Arc<Notify>,
}

impl Backend {
    pub async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let b = Backend { addr, seen: Arc::default(), gate: Arc::new(Notify::new()), arrived: Arc::new(Notify::new()) };
        let state = b.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        b
    }

    pub fn open_gate(&self) {
        self.gate.notify_one();
    }

    pub fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("backend saw no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<TestBody> {
        let (parts, mut body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let query: HashMap<String, String> = parts
            .uri
            .query()
            .map(|q| {
                q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
            })
            .unwrap_or_default();
        if path.ends_with("/gate") {
            self.arrived.notify_one();
            self.gate.notified().await;
        }
        if path.ends_with("/hang") {
            std::future::pending::<()>().await;
        }
        // Read the body incrementally so a 100 MiB upload is hashed, not kept.
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut kept = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(d) = frame.data_ref() {
                hasher.update(d);
                len += d.len() as u64;
                if kept.len() < 1 << 20 {
                    kept.extend_from_slice(d);
                }
            }
        }
        self.seen.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            path_and_query: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
            headers: parts.headers.clone(),
            body_len: len,
            body_sha256: hex::encode(hasher.finalize()),
            body: kept.clone(),
        });
        if path.ends_with("/download") {
            let total: u64 = query.get("bytes").and_then(|v| v.parse().ok()).unwrap_or(0);
            let gated = query.get("gated").is_some_and(|v| v == "1");
            let gate = self.gate.clone();
            let stream = async_stream(total, gated, gate);
            let mut res = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            res.headers_mut().insert("content-type", "application/octet-stream".parse().unwrap());
            return res;
        }
        let answer = if path.ends_with("/echo") { Bytes::from(kept) } else { Bytes::from_static(b"{\"ok\":true}") };
        let mut res = Response::new(Full::new(answer).boxed());
        // `/status/NNN...` answers NNN: for tests of what payguard does with backend failures.
        *res.status_mut() = path
            .split_once("/status/")
            .and_then(|(_, s)| s.get(..3))
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::OK);
        let h = res.headers_mut();
        h.insert("content-type", "application/json".parse().unwrap());
        // `?encoding=E`: the answer claims that content-encoding (the echoed body is already
        // encoded), whatever the request accepted, as a careless backend does.
        if let Some(e) = query.get("encoding") {
            h.insert("content-encoding", e.parse().unwrap());
            h.insert("etag", "\"v1\"".parse().unwrap());
        }
        // Hop-by-hop headers a backend may send; payguard must not pass them on.
        h.insert("connection", "x-backend-hop".parse().unwrap());
        h.insert("x-backend-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        res
    }
}

fn async_stream(
    total: u64,
    gated: bool,
    gate: Arc<Notify>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    futures_util::stream::unfold((0u64, false), move |(sent, waited)| {
        let chunk = chunk.clone();
        let gate = gate.clone();
        async move {
            if sent >= total {
                return None;
            }
            if gated && sent > 0 && !waited {
                gate.notified().await;
            }
            let n = (total - sent).min(CHUNK as u64) as usize;
            Some((Ok(Frame::data(chunk.slice(..n))), (sent + n as u64, waited || sent > 0)))
        }
    })
}

/// A certificate for 127.0.0.1, localhost and *.shop.test generated now.
#[derive(Clone)]
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

pub fn make_cert() -> TestCert {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into(), "*.shop.test".into()]).unwrap();
    TestCert { cert_pem: ck.cert.pem(), key_pem: ck.key_pair.serialize_pem(), der: ck.cert.der().to_vec() }
}

pub fn rustls_client(roots: &[&[u8]], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for der in roots {
        store.add(rustls_pki_types::CertificateDer::from(der.to_vec())).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    cfg
}

pub fn h1_client(cert: &TestCert) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(rustls_client(&[&cert.der], &[b"http/1.1"]))
        .http1_only()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn h2_client(cert: &TestCert) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(rustls_client(&[&cert.der], &[b"h2"]))
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A running payguard plus its files.
pub struct Proxy {
    pub running: Option<payguard::Running>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub cert: TestCert,
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    pub async fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics").await.text().await.unwrap()
    }

    /// Asserts that every one of `lines` is a line of the proxy's metrics.
    pub async fn assert_metrics(&self, lines: &[&str]) {
        let metrics = self.metrics().await;
        for line in lines {
            assert!(metrics.lines().any(|l| l == *line), "missing {line}\n{metrics}");
        }
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Rules for tests that exercise the core: no route, bodies up to 200 MiB.
pub const OPEN_RULES: &[(&str, &str)] = &[("00-open.toml", "[defaults]\nmax_body = \"200MiB\"\n")];

/// Writes the certificate, `rules/` and a payguard.toml into a temp dir. `extra` is appended;
/// its lines before the first `[table]` header are added to `[server]`.
pub fn write_config(dir: &Path, cert: &TestCert, upstream: SocketAddr, extra: &str, rules: &[(&str, &str)]) -> PathBuf {
    std::fs::write(dir.join("server.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), &cert.key_pem).unwrap();
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    for (name, text) in rules {
        std::fs::write(dir.join("rules").join(name), text).unwrap();
    }
    // Lines of `extra` before its first table header are more [server] keys.
    let split = extra.find("\n[").map_or(if extra.starts_with('[') { 0 } else { extra.len() }, |i| {
        if extra.starts_with('[') {
            0
        } else {
            i + 1
        }
    });
    let (server_extra, tables) = extra.split_at(split);
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ntls_cert = \"server.crt\"\ntls_key = \"server.key\"\nshutdown_grace = \"10s\"\n{server_extra}\n\n[upstream]\nurl = \"http://{upstream}\"\nresponse_timeout = \"10s\"\n\n{tables}\n"
    );
    let path = dir.join("payguard.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

pub async fn start_proxy(upstream: SocketAddr, extra: &str) -> Proxy {
    start_proxy_with_rules(upstream, extra, OPEN_RULES).await
}

pub async fn start_proxy_with_rules(upstream: SocketAddr, extra: &str, rules: &[(&str, &str)]) -> Proxy {
    let _ = tracing_subscriber::fmt().with_env_filter("payguard=debug").with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let path = write_config(dir.path(), &cert, upstream, extra, rules);
    let config = payguard::config::Config::load(Some(&path)).unwrap_or_else(|e| panic!("{e:?}"));
    let running = payguard::start(config).await.unwrap();
    let addr = running.addr;
    let admin = running.admin_addr.unwrap();
    Proxy { running: Some(running), addr, admin, dir, cert }
}

/// A TLS connection to the proxy offering `alpn` (`b"h2"`, `b"http/1.1"`), SNI `localhost`.
pub async fn tls_connect_alpn(
    addr: SocketAddr,
    cert: &TestCert,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let cfg = rustls_client(&[&cert.der], &[alpn]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

/// The Python that has `h2` (for the hostile HTTP/2 client, tests/h2/hostile.py): Debian's
/// `/usr/bin/python3` (where `python3-h2` installs), else whatever `python3` is on PATH.
/// Installs `python3-h2` once when missing and we are root with apt-get, like `RedisServer` does
/// for redis-server; panics with the install command otherwise.
pub fn python() -> &'static str {
    static PY: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        let has_h2 = |py: &str| {
            std::process::Command::new(py)
                .args(["-c", "import h2, hpack, hyperframe"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let find = || ["/usr/bin/python3", "python3"].into_iter().find(|py| has_h2(py));
        if let Some(py) = find() {
            return py;
        }
        apt_install("python3-h2");
        find().unwrap_or_else(|| {
            panic!("Python `h2` is not installed: these tests need it. Run `apt-get install python3-h2` (.ci/run does)")
        })
    })
}

/// A port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Polls `f` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn json(res: reqwest::Response) -> serde_json::Value {
    let bytes = res.bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
}

/// GET on the plain-HTTP admin listener.
pub async fn admin_get(admin: SocketAddr, path: &str) -> reqwest::Response {
    admin_client().get(format!("http://{admin}{path}")).send().await.unwrap()
}

/// DELETE on the plain-HTTP admin listener.
pub async fn admin_delete(admin: SocketAddr, path: &str) -> reqwest::Response {
    admin_client().delete(format!("http://{admin}{path}")).send().await.unwrap()
}

fn admin_client() -> reqwest::Client {
    reqwest::Client::builder().use_preconfigured_tls(rustls_client(&[], &[])).build().unwrap()
}

/// A real `redis-server` on 127.0.0.1 (no persistence), started by the test and killed when
/// dropped. Its port is chosen below the kernel's ephemeral range, so no socket bound to port 0
/// (a proxy, a client connection) can take it while the server is stopped for a restart.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

/// Installs Debian's `redis-server` once when it is missing and we may (root with apt-get), so
/// `cargo test` works on a fresh machine the way `.ci/run` does; otherwise the caller's check
/// fails with the install command.
fn ensure_redis_installed() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::process::Command::new("redis-server").arg("--version").output().is_err() {
            apt_install("redis-server");
        }
    });
}

/// Installs a Debian package when running as root (a fresh CI machine); otherwise does nothing
/// and the caller reports what is missing. Tries without `apt-get update` first.
pub fn apt_install(package: &str) {
    let root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !root {
        return;
    }
    let apt = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !apt(&["install", "-y", "-qq", package]) {
        let _ = apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", package]);
    }
}

impl RedisServer {
    /// Starts one; panics with the install command when `redis-server` is missing.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(&[]).await
    }

    /// Starts one with more `redis-server` arguments (e.g. `--cluster-enabled yes`).
    pub async fn start_with(args: &[&str]) -> RedisServer {
        ensure_redis_installed();
        match std::process::Command::new("redis-server").arg("--version").output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!("redis-server --version failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!(
                "redis-server is not installed ({e}): these tests need a real Redis. Run `apt-get install redis-server` (.ci/run does)"
            ),
        }
        for _ in 0..20 {
            let port = 20_000 + fastrand::u16(..12_000);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let args = args.iter().map(ToString::to_string).collect();
            let mut s = RedisServer { port, child: None, dir: tempfile::tempdir().unwrap(), args };
            s.spawn();
            if s.wait_ready(Duration::from_secs(10)).await {
                return s;
            }
            // Lost the port to someone else, most likely: try another.
        }
        panic!("redis-server did not start on any of 20 ports");
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
    }

    /// Polls PING until it answers; false if the server exited or `within` passed.
    async fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().unwrap().is_some() {
                    return false;
                }
            }
            if let Ok(mut c) = self.try_connection().await {
                if redis::cmd("PING").query_async::<String>(&mut c).await.is_ok() {
                    return true;
                }
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `[state]` lines for payguard.toml using this server.
    pub fn state_config(&self) -> String {
        format!("[state]\nbackend = \"redis\"\nredis_url = \"{}\"\n", self.url())
    }

    async fn try_connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url())?;
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        client.get_multiplexed_async_connection_with_config(&cfg).await
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.try_connection().await.expect("connect to the test redis-server")
    }

    /// `INFO <section>` as text.
    pub async fn info(&self, section: &str) -> String {
        redis::cmd("INFO").arg(section).query_async(&mut self.connection().await).await.unwrap()
    }

    /// Calls of one command so far (`INFO commandstats`), e.g. `evalsha`.
    pub async fn calls(&self, command: &str) -> u64 {
        let info = self.info("commandstats").await;
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Kills the server (as a crash or an outage would) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered until
    /// [`Self::resume`]. A stopped process is still killed by [`Self::stop`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id().to_string();
        let status = std::process::Command::new("kill").args([signal, &pid]).status().expect("run kill");
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    /// Starts it again on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        assert!(self.wait_ready(Duration::from_secs(10)).await, "redis-server did not restart on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of `n` primaries (no replicas) on 127.0.0.1, ready when returned.
pub async fn redis_cluster(n: usize) -> Vec<RedisServer> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(RedisServer::start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli (installed with redis-server)");
    assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
    let ready = eventually(Duration::from_secs(20), || {
        let nodes = &nodes;
        async move {
            for s in nodes {
                if !s.info("cluster").await.contains("cluster_enabled:1") {
                    return false;
                }
                let mut c = s.connection().await;
                let state: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut c).await.unwrap();
                if !state.contains("cluster_state:ok") {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(ready, "the test cluster did not reach cluster_state:ok");
    nodes
}

/// What every replay store must do, whatever keeps the keys (memory or Redis): one reservation
/// per key at a time, released keys free again, committed keys kept for the new TTL, expired
/// keys free, independent keys, and exactly one winner among concurrent reservations.
pub async fn nonce_store_contract(store: std::sync::Arc<dyn payguard::state::NonceStore>, prefix: &str) {
    use payguard::state::Reservation::{Reserved, Taken};
    const TTL: Duration = Duration::from_secs(60);
    let k = |s: &str| format!("{prefix}|{s}");

    assert_eq!(store.reserve(&k("a"), TTL).await, Ok(Reserved));
    assert_eq!(store.reserve(&k("a"), TTL).await, Ok(Taken));
    assert_eq!(store.reserve(&k("b"), TTL).await, Ok(Reserved), "keys are independent");

    store.release(&k("a")).await.unwrap();
    assert_eq!(store.reserve(&k("a"), TTL).await, Ok(Reserved), "a released key is free again");
    store.commit(&k("a"), TTL).await.unwrap();
    assert_eq!(store.reserve(&k("a"), TTL).await, Ok(Taken), "a committed key stays taken");

    // Expiry: a short reservation frees itself; a committed one lives for its new TTL.
    let short = Duration::from_millis(50);
    assert_eq!(store.reserve(&k("expires"), short).await, Ok(Reserved));
    assert_eq!(store.reserve(&k("extended"), short).await, Ok(Reserved));
    store.commit(&k("extended"), TTL).await.unwrap();
    let freed = eventually(Duration::from_secs(5), || {
        let store = store.clone();
        let key = k("expires");
        async move { store.reserve(&key, short).await == Ok(Reserved) }
    })
    .await;
    assert!(freed, "an expired reservation must free its key");
    assert_eq!(store.reserve(&k("extended"), TTL).await, Ok(Taken), "commit extends the reservation");

    // Releasing or committing an unknown key is harmless.
    store.release(&k("never")).await.unwrap();
    store.commit(&k("never"), TTL).await.unwrap();
    assert_eq!(store.reserve(&k("never"), TTL).await, Ok(Reserved), "commit does not create a key");

    // Concurrent reservations of one key: exactly one winner.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let key = k("race");
            tokio::spawn(async move { store.reserve(&key, TTL).await })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        if t.await.unwrap() == Ok(Reserved) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

/// What every failure store must do, whatever keeps the counts (memory or Redis): `threshold`
/// failures ban the key, keys and scopes are independent, a ban ends by itself, the next ban
/// of the same key is longer, bans are listed with their label and lifted (which forgives), and
/// of concurrent failures exactly one starts the ban.
pub async fn failure_store_contract(store: std::sync::Arc<dyn payguard::state::FailureStore>) {
    use payguard::state::FailurePolicy;
    let policy = FailurePolicy {
        threshold: 3,
        window: Duration::from_secs(60),
        ban: Duration::from_secs(1),
        ban_factor: 3,
        max_ban: Duration::from_secs(10),
    };
    let fail = |scope: u64, key: u128| {
        let store = store.clone();
        async move { store.fail(scope, key, "203.0.113.7", policy).await.unwrap() }
    };
    assert_eq!(fail(1, 7).await, None);
    assert_eq!(fail(1, 7).await, None);
    assert_eq!(store.banned(1, 7).await.unwrap(), None);
    let first = fail(1, 7).await.expect("the third failure bans");
    assert_eq!(first, Duration::from_secs(1));
    let left = store.banned(1, 7).await.unwrap().expect("banned");
    assert!(left <= first && left > Duration::ZERO, "{left:?}");
    assert_eq!(store.banned(1, 8).await.unwrap(), None, "keys are independent");
    assert_eq!(store.banned(2, 7).await.unwrap(), None, "scopes are independent");
    assert_eq!(fail(1, 7).await, None, "a failure while banned starts nothing");

    let bans = store.bans(10).await.unwrap();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!((bans[0].scope, bans[0].key, bans[0].label.as_str(), bans[0].strike), (1, 7, "203.0.113.7", 1));

    let over = eventually(Duration::from_secs(5), || {
        let store = store.clone();
        async move { store.banned(1, 7).await.unwrap().is_none() }
    })
    .await;
    assert!(over, "a ban ends by itself");
    assert!(store.bans(10).await.unwrap().is_empty());
    // The second ban of the same key: ban_factor times longer.
    assert_eq!(fail(1, 7).await, None);
    assert_eq!(fail(1, 7).await, None);
    assert_eq!(fail(1, 7).await, Some(Duration::from_secs(3)));
    assert_eq!(store.bans(10).await.unwrap()[0].strike, 2);
    // Lifted: not banned, and forgiven (the next ban is a first one again).
    assert!(store.lift(1, 7).await.unwrap());
    assert!(!store.lift(1, 7).await.unwrap());
    assert_eq!(store.banned(1, 7).await.unwrap(), None);
    assert!(store.bans(10).await.unwrap().is_empty());
    for _ in 0..2 {
        assert_eq!(fail(1, 7).await, None);
    }
    assert_eq!(fail(1, 7).await, Some(Duration::from_secs(1)));

    // Twenty failures at once against a threshold of five: one ban.
    let many = FailurePolicy { threshold: 5, ban: Duration::from_secs(5), ..policy };
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.fail(3, 3, "k", many).await.unwrap().is_some() })
        })
        .collect();
    let mut started = 0;
    for t in tasks {
        started += usize::from(t.await.unwrap());
    }
    assert_eq!(started, 1);
}

/// What every idempotency store must do, whatever keeps the keys (memory or Redis): one first
/// attempt per key, in flight until settled, the stored answer replayed byte for byte, another
/// request under the key a mismatch, release and hold acting only on the attempt itself, a
/// lease that runs out, and exactly one winner among concurrent first attempts.
/// A stored idempotency key for a test: the digest of `prefix|name`, so that runs against one
/// Redis never meet.
pub fn idem_key(prefix: &str, name: &str) -> payguard::state::IdemKey {
    let digest = Sha256::digest(format!("{prefix}|{name}").as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&digest[..16]);
    payguard::state::IdemKey(k)
}

pub async fn idempotency_store_contract(store: std::sync::Arc<dyn payguard::state::IdempotencyStore>, prefix: &str) {
    use payguard::state::{Begin, StoredAnswer};
    const A: [u8; 32] = [0xa; 32];
    const B: [u8; 32] = [0xb; 32];
    let lease = Duration::from_secs(60);
    let day = Duration::from_secs(86_400);
    let k = |s: &str| idem_key(prefix, s);
    let answer = StoredAnswer {
        status: 500,
        content_type: Some(http::HeaderValue::from_static("application/json; charset=utf-8")),
        // Not UTF-8, with a NUL: stored byte for byte.
        body: bytes::Bytes::from_static(b"{\"error\":\"boom\"}\x00\xff"),
    };

    assert_eq!(store.begin(k("a"), A, lease).await, Ok(Begin::Started));
    assert_eq!(store.begin(k("a"), A, lease).await, Ok(Begin::InFlight));
    assert_eq!(store.begin(k("a"), B, lease).await, Ok(Begin::Mismatch));
    // Another request's settlement does nothing to this attempt.
    store.complete(k("a"), B, answer.clone(), day).await.unwrap();
    store.release(k("a"), B).await.unwrap();
    assert_eq!(store.begin(k("a"), A, lease).await, Ok(Begin::InFlight));
    store.complete(k("a"), A, answer.clone(), day).await.unwrap();
    assert_eq!(store.begin(k("a"), A, lease).await, Ok(Begin::Done(answer.clone())));
    assert_eq!(store.begin(k("a"), B, lease).await, Ok(Begin::Mismatch));
    // A settled attempt is not released.
    store.release(k("a"), A).await.unwrap();
    assert_eq!(store.begin(k("a"), A, lease).await, Ok(Begin::Done(answer.clone())));

    assert_eq!(store.begin(k("r"), A, lease).await, Ok(Begin::Started));
    store.release(k("r"), A).await.unwrap();
    assert_eq!(store.begin(k("r"), B, lease).await, Ok(Begin::Started), "a released key is free for anyone");
    store.hold(k("r"), B, day).await.unwrap();
    assert_eq!(store.begin(k("r"), B, lease).await, Ok(Begin::Indeterminate));

    // An attempt in flight holds the key for its lease only.
    let short = Duration::from_millis(100);
    assert_eq!(store.begin(k("lease"), A, short).await, Ok(Begin::Started));
    let freed = eventually(Duration::from_secs(5), || {
        let store = store.clone();
        let key = k("lease");
        async move { store.begin(key, A, short).await == Ok(Begin::Started) }
    })
    .await;
    assert!(freed, "an expired lease frees the key");

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            let key = k("race");
            tokio::spawn(async move { store.begin(key, A, lease).await == Ok(Begin::Started) })
        })
        .collect();
    let mut started = 0;
    for t in tasks {
        started += usize::from(t.await.unwrap());
    }
    assert_eq!(started, 1);
}
