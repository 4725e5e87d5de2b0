//! `payguard.toml`: read once into [`RawConfig`], then checked into the typed [`Config`] that the
//! rest of the proxy uses. Every key has a default, so no file at all is a valid configuration.

mod raw;
pub mod redis_url;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;
use toml::Spanned;

use crate::diag::Diagnostic;
use crate::units;
use raw::*;

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (`None`: embedded defaults).
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub client_ip: ClientIpConfig,
    pub rules: RulesConfig,
    pub state: StateConfig,
    pub log: LogConfig,
}

/// `[server] send_buffer`: what a client that stops reading can make payguard encrypt and the
/// kernel hold per connection (autotuning lets it grow to megabytes on fast links).
pub const DEFAULT_SEND_BUFFER: usize = 128 * 1024;

/// `[server] min_send_rate`, bytes per second: a slow reader taking less is closed after
/// `send_timeout`; a phone on a poor 2G link still takes ten times that.
pub const DEFAULT_MIN_SEND_RATE: usize = 1024;

/// `[server] admin_allow` and `admin_token`.
#[derive(Debug, Clone, Default)]
pub struct AdminAccess {
    /// Peers allowed to connect; empty: any.
    pub allow: Vec<IpNet>,
    /// Bearer token every admin path but `/healthz` and `/readyz` requires.
    pub token: Option<AdminToken>,
}

/// The admin bearer token. Its `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken(Box<[u8]>);

impl AdminToken {
    /// Shortest token accepted: 128 bits of hex.
    pub const MIN_LEN: usize = 32;

    pub fn new(bytes: Vec<u8>) -> Self {
        AdminToken(bytes.into_boxed_slice())
    }

    /// Whether `Authorization: Bearer <t>` carries this token (constant time in the token).
    pub fn matches(&self, authorization: Option<&[u8]>) -> bool {
        use subtle::ConstantTimeEq;
        let Some(given) = authorization.and_then(|a| {
            let (scheme, rest) = a.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then(|| rest.trim_ascii())
        }) else {
            return false;
        };
        given.len() == self.0.len() && bool::from(given.ct_eq(&self.0))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls: TlsSource,
    pub admin_listen: Option<SocketAddr>,
    /// Who may use the admin listener.
    pub admin: AdminAccess,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Deadline for receiving a whole request body, counted from the end of its head.
    pub body_read_timeout: Duration,
    /// How long a write to the client may make no progress before the connection is closed.
    pub send_timeout: Duration,
    /// While data waits for a client, the bytes per second it must take of it (measured over
    /// each `send_timeout`); 0: only that it takes something.
    pub min_send_rate: u64,
    /// Kernel send buffer of each client socket (`SO_SNDBUF`); `None`: the kernel autotunes it.
    pub send_buffer: Option<usize>,
    /// `Strict-Transport-Security: max-age=<secs>` on every response that lacks one; `None`: off.
    pub hsts_max_age: Option<Duration>,
    /// `[server.response_headers]`: added to every response that lacks them.
    pub response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub shutdown_grace: Duration,
    pub handshake_timeout: Duration,
    /// Request head (request line and header lines) at most this many bytes (HTTP/1.1).
    pub max_header_size: usize,
    /// Request target (path and query, or the absolute URI) at most this many bytes.
    pub max_uri_len: usize,
    pub max_h2_streams: u32,
    /// Requests an HTTP/2 client may cancel (RST_STREAM after payguard took them on) on one
    /// connection within 10 seconds; one more and the connection is shut down.
    pub max_h2_resets: u32,
    /// SETTINGS and PING frames (each costs an answer) an HTTP/2 client may send on one
    /// connection within 10 seconds; one more and the connection is closed.
    pub max_h2_control_frames: u32,
}

#[derive(Debug, Clone)]
pub enum TlsSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Self-signed development certificate kept in this directory.
    Dev {
        dir: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: Uri,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ClientIpConfig {
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct RulesConfig {
    pub dir: PathBuf,
    pub watch: bool,
}

#[derive(Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// One instance: replay keys and rate-limit buckets in this process.
    Memory,
    /// Shared by several instances. `redis_url` as one string is a single node (`cluster:
    /// false`); as a list, the seed nodes of a Redis Cluster (`cluster: true`, even with one).
    Redis { urls: Vec<String>, cluster: bool },
}

/// Node URLs may carry a password: `Debug` shows them redacted.
impl std::fmt::Debug for StateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateBackend::Memory => f.write_str("Memory"),
            StateBackend::Redis { urls, cluster } => f
                .debug_struct("Redis")
                .field("urls", &urls.iter().map(|u| redis_url::redact(u)).collect::<Vec<_>>())
                .field("cluster", cluster)
                .finish(),
        }
    }
}

/// `[state] redis_password`, resolved from `env:`/`file:`. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisPassword(pub String);

impl std::fmt::Debug for RedisPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisPassword(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub backend: StateBackend,
    /// Deadline of every call to the shared store (default 250 ms).
    pub timeout: Duration,
    /// Replay keys the memory backend holds at most (about 100 bytes each). When full it refuses
    /// new reservations (`on_state_error.replay`) rather than forget a live one.
    pub max_replay_keys: usize,
    /// Rate-limit buckets the memory backend holds at most (about 70 bytes each). At the cap a
    /// new client's request gets the route's `on_state_error.rate_limit`; known clients are
    /// still limited.
    pub max_rate_keys: usize,
    /// Keys the memory backend tracks for `[[route.failure_limit]]` at most (about 300 bytes
    /// each). At the cap a new key's failures are not counted (logged, and counted as
    /// `fail_open`); known keys are still counted and banned.
    pub max_failure_keys: usize,
    /// Idempotency keys the memory backend holds at most (about 220 bytes each, besides the
    /// stored answer). Past it a new key gets the route's `on_state_error.idempotency`; known
    /// keys still answer.
    pub max_idempotency_keys: usize,
    /// Body bytes of stored answers the memory backend holds at most. An answer that does not
    /// fit is not stored: its key is held without one (later attempts get 409).
    pub max_idempotency_bytes: usize,
    /// Overrides any password in `redis_url`, so none need be written into the file.
    pub redis_password: Option<RedisPassword>,
}

pub const DEFAULT_STATE_TIMEOUT: Duration = Duration::from_millis(250);
pub const DEFAULT_MAX_REPLAY_KEYS: usize = 10_000_000;
pub const DEFAULT_MAX_RATE_KEYS: usize = 10_000_000;
pub const DEFAULT_MAX_FAILURE_KEYS: usize = 1_000_000;
pub const DEFAULT_MAX_IDEMPOTENCY_KEYS: usize = 1_000_000;
pub const DEFAULT_MAX_IDEMPOTENCY_BYTES: usize = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

pub const DEFAULT_MAX_HEADER_SIZE: usize = 32 * 1024;
pub const DEFAULT_MAX_URI_LEN: usize = 8 * 1024;
/// The longest request target the HTTP stack can carry at all.
pub const MAX_URI_LEN_LIMIT: usize = 65_534;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
pub const DEFAULT_UPSTREAM: &str = "http://127.0.0.1:3000";
const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";

impl Config {
    /// Loads `path`; `None` gives the embedded defaults with paths relative to the working
    /// directory.
    pub fn load(path: Option<&Path>) -> Result<Config, Vec<Diagnostic>> {
        match path {
            None => Config::parse("", None),
            Some(p) => {
                let src = crate::files::read_to_string(p)
                    .map_err(|e| vec![Diagnostic::at_start(p, format!("cannot read config: {e}"))])?;
                Config::parse(&src, Some(p))
            }
        }
    }

    /// Parses config text. Relative paths resolve against the directory of `path`.
    pub fn parse(src: &str, path: Option<&Path>) -> Result<Config, Vec<Diagnostic>> {
        let file = path.unwrap_or(Path::new("payguard.toml"));
        let (raw, errors) = crate::diag::from_toml_recovering::<RawConfig>(src);
        let mut problems: Vec<Diagnostic> =
            errors.into_iter().map(|(span, msg)| Diagnostic::at(file, src, Some(span), msg)).collect();
        let Some(raw) = raw else { return Err(problems) };
        let base = path.and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        let mut cx = Checker { file, src, base: &base, problems: std::mem::take(&mut problems) };
        let config = cx.check(raw, path);
        if cx.problems.is_empty() {
            Ok(config)
        } else {
            cx.problems.sort_by_key(|d| (d.line, d.col));
            Err(cx.problems)
        }
    }
}

struct Checker<'a> {
    file: &'a Path,
    src: &'a str,
    base: &'a Path,
    problems: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn report(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.problems.push(Diagnostic::at(self.file, self.src, Some(span), message));
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn addr(&mut self, v: Option<Spanned<String>>, default: &str, key: &str) -> SocketAddr {
        let fallback = || default.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        match v {
            None => fallback(),
            Some(v) => match v.get_ref().parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => {
                    let msg =
                        format!("{key}: {:?} is not an address like \"0.0.0.0:8443\" or \"[::]:8443\"", v.get_ref());
                    self.report(v.span(), msg);
                    fallback()
                }
            },
        }
    }

    fn duration(&mut self, v: Option<Spanned<String>>, default: Duration, key: &str) -> Duration {
        let Some(v) = v else { return default };
        match units::parse_duration(v.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.report(v.span(), format!("{key}: must be greater than zero"));
                default
            }
            Err(e) => {
                self.report(v.span(), format!("{key}: {e}"));
                default
            }
        }
    }

    fn response_headers(
        &mut self,
        raw: std::collections::BTreeMap<String, Spanned<String>>,
    ) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let mut out = Vec::new();
        for (name, value) in raw {
            let span = value.span();
            let parsed = http::HeaderName::from_bytes(name.as_bytes());
            let hop = matches!(
                name.to_ascii_lowercase().as_str(),
                "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "upgrade" | "te" | "trailer"
            );
            match (parsed, http::HeaderValue::from_str(value.get_ref())) {
                (Ok(n), Ok(v)) if !hop => out.push((n, v)),
                (Ok(_), Ok(_)) => {
                    self.report(span, format!("response_headers: {name:?} is a framing header payguard manages"))
                }
                (Err(_), _) => self.report(span, format!("response_headers: {name:?} is not a valid header name")),
                (_, Err(_)) => self.report(span, format!("response_headers.{name}: not a valid header value")),
            }
        }
        out
    }

    fn count(&mut self, v: Option<Spanned<i64>>, default: usize, min: i64, max: i64, key: &str) -> usize {
        let Some(v) = v else { return default };
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            usize::try_from(n).unwrap_or(default)
        } else {
            self.report(v.span(), format!("{key}: must be between {min} and {max}"));
            default
        }
    }

    /// A size (`units` syntax) in `min..=max` bytes.
    fn size(&mut self, v: Option<&Spanned<String>>, default: usize, range: (usize, usize, &str), key: &str) -> usize {
        let (min, max, bounds) = range;
        let Some(v) = v else { return default };
        match units::parse_size(v.get_ref()) {
            Ok(n) if (min as u64..=max as u64).contains(&n) => usize::try_from(n).unwrap_or(default),
            Ok(_) => {
                self.report(v.span(), format!("{key}: must be between {bounds}"));
                default
            }
            Err(e) => {
                self.report(v.span(), format!("{key}: {e}"));
                default
            }
        }
    }

    fn admin_access(&mut self, allow: Option<Vec<Spanned<String>>>, token: Option<Spanned<String>>) -> AdminAccess {
        let mut nets = Vec::new();
        for v in allow.unwrap_or_default() {
            match units::parse_cidr(v.get_ref()) {
                Ok(net) => nets.push(net),
                Err(e) => self.report(v.span(), format!("admin_allow: {e}")),
            }
        }
        let token = token.and_then(|v| match crate::files::resolve_secret(v.get_ref(), self.base) {
            Ok(t) if t.len() >= AdminToken::MIN_LEN && t.iter().all(|b| b.is_ascii_graphic()) => {
                Some(AdminToken::new(t))
            }
            Ok(_) => {
                let msg = format!(
                    "admin_token: the token must be at least {} visible ASCII characters (e.g. `openssl rand -hex 32`)",
                    AdminToken::MIN_LEN
                );
                self.report(v.span(), msg);
                None
            }
            Err(e) => {
                self.report(v.span(), format!("admin_token: {e}"));
                None
            }
        });
        AdminAccess { allow: nets, token }
    }

    fn check(&mut self, raw: RawConfig, path: Option<&Path>) -> Config {
        let server = self.server(raw.server);
        let upstream = self.upstream(raw.upstream);
        let mut trusted_proxies = Vec::new();
        for v in raw.client_ip.trusted_proxies.unwrap_or_default() {
            match units::parse_cidr(v.get_ref()) {
                Ok(net) => trusted_proxies.push(net),
                Err(e) => self.report(v.span(), format!("trusted_proxies: {e}")),
            }
        }

        let rules = RulesConfig {
            dir: self.path(raw.rules.dir.as_ref().map_or("rules", |d| d.get_ref().as_str())),
            watch: raw.rules.watch.unwrap_or(true),
        };

        Config {
            source: path.map(Path::to_path_buf),
            server,
            upstream,
            client_ip: ClientIpConfig { trusted_proxies },
            rules,
            state: self.state(raw.state),
            log: self.log(raw.log),
        }
    }

    fn server(&mut self, s: RawServer) -> ServerConfig {
        let tls = match (s.tls_cert, s.tls_key) {
            (Some(c), Some(k)) => {
                for (v, what) in [(&c, "tls_cert"), (&k, "tls_key")] {
                    let p = self.path(v.get_ref());
                    if let Err(e) = std::fs::metadata(&p) {
                        self.report(v.span(), format!("{what}: cannot read {}: {e}", p.display()));
                    }
                }
                TlsSource::Files { cert: self.path(c.get_ref()), key: self.path(k.get_ref()) }
            }
            (None, None) => TlsSource::Dev { dir: self.path("certs") },
            (Some(v), None) | (None, Some(v)) => {
                self.report(v.span(), "tls_cert and tls_key must be given together");
                TlsSource::Dev { dir: self.path("certs") }
            }
        };
        let mut server = ServerConfig {
            listen: self.addr(s.listen, DEFAULT_LISTEN, "listen"),
            tls,
            admin_listen: match s.admin_listen {
                Some(v) if v.get_ref().is_empty() || v.get_ref() == "off" => None,
                v => Some(self.addr(v, DEFAULT_ADMIN, "admin_listen")),
            },
            admin: self.admin_access(s.admin_allow, s.admin_token),
            max_connections: self.count(s.max_connections, 10_000, 1, 1_000_000, "max_connections"),
            header_read_timeout: self.duration(s.header_read_timeout, Duration::from_secs(10), "header_read_timeout"),
            idle_timeout: self.duration(s.idle_timeout, Duration::from_secs(60), "idle_timeout"),
            body_read_timeout: self.duration(s.body_read_timeout, Duration::from_secs(30), "body_read_timeout"),
            send_timeout: self.duration(s.send_timeout, Duration::from_secs(30), "send_timeout"),
            min_send_rate: self.size(
                s.min_send_rate.as_ref(),
                DEFAULT_MIN_SEND_RATE,
                (0, 1 << 30, "0 and 1GiB"),
                "min_send_rate",
            ) as u64,
            send_buffer: match s.send_buffer {
                Some(v) if v.get_ref() == "auto" => None,
                v => Some(self.size(
                    v.as_ref(),
                    DEFAULT_SEND_BUFFER,
                    (4096, 64 * 1024 * 1024, "4KiB and 64MiB"),
                    "send_buffer",
                )),
            },
            response_headers: self.response_headers(s.response_headers.unwrap_or_default()),
            hsts_max_age: match s.hsts_max_age {
                Some(v) if v.get_ref() == "off" => None,
                v => Some(self.duration(v, Duration::from_secs(365 * 86_400), "hsts_max_age")),
            },
            shutdown_grace: self.duration(s.shutdown_grace, Duration::from_secs(30), "shutdown_grace"),
            handshake_timeout: self.duration(s.handshake_timeout, Duration::from_secs(10), "handshake_timeout"),
            max_header_size: self.size(
                s.max_header_size.as_ref(),
                DEFAULT_MAX_HEADER_SIZE,
                (1024, 1024 * 1024, "1KiB and 1MiB"),
                "max_header_size",
            ),
            max_uri_len: self.size(
                s.max_uri_len.as_ref(),
                DEFAULT_MAX_URI_LEN,
                (256, MAX_URI_LEN_LIMIT, "256 bytes and 65534 bytes"),
                "max_uri_len",
            ),
            max_h2_streams: self.count(s.max_h2_streams, 128, 1, 10_000, "max_h2_streams") as u32,
            max_h2_resets: self.count(s.max_h2_resets, 100, 1, 1_000_000, "max_h2_resets") as u32,
            max_h2_control_frames: self.count(s.max_h2_control_frames, 1000, 10, 1_000_000, "max_h2_control_frames")
                as u32,
        };
        // The request line is part of the head: a longer target could never get its 414.
        if server.max_uri_len > server.max_header_size {
            match &s.max_uri_len {
                Some(v) => self.report(
                    v.span(),
                    format!("max_uri_len: must not exceed max_header_size ({} bytes)", server.max_header_size),
                ),
                // Unset: the default shrinks to fit a smaller head.
                None => server.max_uri_len = server.max_header_size,
            }
        }
        server
    }

    fn upstream(&mut self, u: RawUpstream) -> UpstreamConfig {
        let url = match u.url {
            None => Uri::from_static(DEFAULT_UPSTREAM),
            Some(v) => match v.get_ref().parse::<Uri>() {
                Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => uri,
                Ok(_) => {
                    self.report(v.span(), "url: must be an http:// URL with a host, like \"http://127.0.0.1:3000\"");
                    Uri::from_static(DEFAULT_UPSTREAM)
                }
                Err(e) => {
                    self.report(v.span(), format!("url: {e}"));
                    Uri::from_static(DEFAULT_UPSTREAM)
                }
            },
        };
        UpstreamConfig {
            url,
            connect_timeout: self.duration(u.connect_timeout, Duration::from_secs(2), "connect_timeout"),
            response_timeout: self.duration(u.response_timeout, Duration::from_secs(30), "response_timeout"),
            pool_idle_timeout: self.duration(u.pool_idle_timeout, Duration::from_secs(90), "pool_idle_timeout"),
            pool_max_idle_per_host: self.count(u.pool_max_idle_per_host, 256, 0, 100_000, "pool_max_idle_per_host"),
        }
    }

    fn state(&mut self, st: RawState) -> StateConfig {
        let (urls, cluster) = match st.redis_url {
            None => (vec![DEFAULT_REDIS.to_string()], false),
            Some(v) => {
                let span = v.span();
                let (urls, cluster) = match v.into_inner() {
                    RawRedisUrl::One(u) => (vec![u], false),
                    RawRedisUrl::Cluster(list) => (list, true),
                };
                if urls.is_empty() {
                    self.report(span.clone(), "redis_url: a cluster needs at least one node URL");
                }
                for u in &urls {
                    if let Err(e) = redis_url::check_url(u) {
                        let msg = format!("redis_url: {:?}: {e}", redis_url::redact(u));
                        self.report(span.clone(), msg);
                    }
                }
                if urls.iter().any(|u| u.starts_with("rediss://")) && !urls.iter().all(|u| u.starts_with("rediss://")) {
                    self.report(span, "redis_url: cluster nodes must all use redis:// or all rediss://");
                }
                (urls, cluster)
            }
        };
        let timeout = self.duration(st.timeout, DEFAULT_STATE_TIMEOUT, "timeout");
        let max_replay_keys =
            self.count(st.max_replay_keys, DEFAULT_MAX_REPLAY_KEYS, 1_000, 1_000_000_000, "max_replay_keys");
        let max_rate_keys = self.count(st.max_rate_keys, DEFAULT_MAX_RATE_KEYS, 1_000, 1_000_000_000, "max_rate_keys");
        let max_failure_keys =
            self.count(st.max_failure_keys, DEFAULT_MAX_FAILURE_KEYS, 1_000, 1_000_000_000, "max_failure_keys");
        let max_idempotency_keys = self.count(
            st.max_idempotency_keys,
            DEFAULT_MAX_IDEMPOTENCY_KEYS,
            1_000,
            1_000_000_000,
            "max_idempotency_keys",
        );
        let max_idempotency_bytes = self.size(
            st.max_idempotency_bytes.as_ref(),
            DEFAULT_MAX_IDEMPOTENCY_BYTES,
            (1 << 20, 1 << 40, "1MiB and 1TiB"),
            "max_idempotency_bytes",
        );
        let redis_password = st.redis_password.and_then(|v| {
            match crate::files::resolve_secret(v.get_ref(), self.base).map(String::from_utf8) {
                Ok(Ok(p)) if !p.is_empty() => Some(RedisPassword(p)),
                Ok(_) => {
                    self.report(v.span(), "redis_password: the password must be non-empty UTF-8 text");
                    None
                }
                Err(e) => {
                    self.report(v.span(), format!("redis_password: {e}"));
                    None
                }
            }
        });
        let backend = match st.backend {
            None => StateBackend::Memory,
            Some(v) => match v.get_ref().as_str() {
                "memory" => StateBackend::Memory,
                "redis" => StateBackend::Redis { urls, cluster },
                other => {
                    self.report(v.span(), format!("backend: {other:?} is not \"memory\" or \"redis\""));
                    StateBackend::Memory
                }
            },
        };
        StateConfig {
            backend,
            timeout,
            max_replay_keys,
            max_rate_keys,
            max_failure_keys,
            max_idempotency_keys,
            max_idempotency_bytes,
            redis_password,
        }
    }

    fn log(&mut self, l: RawLog) -> LogConfig {
        let format = match l.format {
            None => LogFormat::Json,
            Some(v) => match v.get_ref().as_str() {
                "json" => LogFormat::Json,
                "pretty" => LogFormat::Pretty,
                other => {
                    self.report(v.span(), format!("format: {other:?} is not \"json\" or \"pretty\""));
                    LogFormat::Json
                }
            },
        };
        let level = match l.level {
            None => "info".to_string(),
            Some(v) => {
                let level = v.get_ref().trim();
                if !valid_log_filter(level) {
                    self.report(v.span(), format!("level: {:?} is not a log level or filter", v.get_ref()));
                }
                level.to_string()
            }
        };
        LogConfig { format, level }
    }
}

/// Whether `s` is a log filter (`info`, `payguard=debug,warn`). tracing-subscriber's parser
/// panics on some non-ASCII input, so only ASCII is handed to it.
pub fn valid_log_filter(s: &str) -> bool {
    s.is_ascii() && !s.chars().any(|c| c.is_ascii_control()) && tracing_subscriber::EnvFilter::try_new(s).is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = Config::parse("", None).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.upstream.url.to_string(), "http://127.0.0.1:3000/");
        assert_eq!(c.server.admin_listen.unwrap().to_string(), "127.0.0.1:9901");
        assert_eq!(c.server.max_connections, 10_000);
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.server.body_read_timeout, Duration::from_secs(30));
        assert_eq!(c.server.send_timeout, Duration::from_secs(30));
        assert_eq!(c.server.send_buffer, Some(128 * 1024));
        assert_eq!(c.server.hsts_max_age, Some(Duration::from_secs(365 * 86_400)));
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
        assert_eq!((c.server.max_h2_streams, c.server.max_h2_resets), (128, 100));
        assert_eq!((c.server.min_send_rate, c.server.max_h2_control_frames), (1024, 1000));
        assert_eq!(c.upstream.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.upstream.response_timeout, Duration::from_secs(30));
        assert!(c.client_ip.trusted_proxies.is_empty());
        assert_eq!(c.rules.dir, PathBuf::from("rules"));
        assert!(c.rules.watch);
        assert_eq!(c.state.backend, StateBackend::Memory);
        assert_eq!(c.state.max_replay_keys, 10_000_000);
        assert_eq!(c.state.max_rate_keys, 10_000_000);
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(matches!(c.server.tls, TlsSource::Dev { .. }));
    }

    #[test]
    fn response_headers_are_checked() {
        let c = Config::parse("[server.response_headers]\nX-Frame-Options = \"DENY\"\n", None).unwrap();
        assert_eq!(c.server.response_headers.len(), 1);
        assert_eq!(c.server.response_headers[0].0, "x-frame-options");
        let src = "[server.response_headers]\n\"bad name\" = \"x\"\nConnection = \"close\"\nX-A = \"a\\nb\"\n";
        let errs = Config::parse(src, Some(Path::new("p.toml"))).unwrap_err();
        let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e.starts_with("p.toml:2:14: response_headers: \"bad name\" is not a valid header name")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.contains("\"Connection\" is a framing header")), "{errs:?}");
        assert!(
            errs.iter().any(|e| e.starts_with("p.toml:4:7: response_headers.X-A: not a valid header value")),
            "{errs:?}"
        );
    }

    #[test]
    fn request_head_bounds() {
        let c = Config::parse("", None).unwrap();
        assert_eq!((c.server.max_header_size, c.server.max_uri_len), (32 * 1024, 8 * 1024));
        let c = Config::parse("[server]\nmax_uri_len = \"16KiB\"\nmax_header_size = \"64KiB\"\n", None).unwrap();
        assert_eq!((c.server.max_header_size, c.server.max_uri_len), (64 * 1024, 16 * 1024));
        assert_eq!(
            Config::parse("[server]\nmax_uri_len = \"65534\"\nmax_header_size = \"1MiB\"\n", None)
                .unwrap()
                .server
                .max_uri_len,
            65_534
        );
        for (src, want) in [
            (
                "[server]\nmax_uri_len = \"255\"\n",
                "p.toml:2:15: max_uri_len: must be between 256 bytes and 65534 bytes",
            ),
            (
                "[server]\nmax_uri_len = \"64KiB\"\nmax_header_size = \"1MiB\"\n",
                "p.toml:2:15: max_uri_len: must be between",
            ),
            ("[server]\nmax_uri_len = \"8k\"\n", "p.toml:2:15: max_uri_len:"),
            (
                "[server]\nmax_uri_len = \"40KiB\"\n",
                "p.toml:2:15: max_uri_len: must not exceed max_header_size (32768 bytes)",
            ),
            ("[server]\nmax_header_size = \"2MiB\"\n", "p.toml:2:19: max_header_size: must be between 1KiB and 1MiB"),
        ] {
            let errs = Config::parse(src, Some(Path::new("p.toml"))).unwrap_err();
            assert_eq!(errs.len(), 1, "{src}: {errs:?}");
            assert!(errs[0].to_string().starts_with(want), "{src}: {}", errs[0]);
        }
    }

    #[test]
    fn slow_reader_and_h2_flood_keys() {
        let c = Config::parse("[server]\nmin_send_rate = \"0\"\nmax_h2_control_frames = 50\n", None).unwrap();
        assert_eq!((c.server.min_send_rate, c.server.max_h2_control_frames), (0, 50));
        let c = Config::parse("[server]\nmin_send_rate = \"64KiB\"\n", None).unwrap();
        assert_eq!(c.server.min_send_rate, 65_536);
        for (src, want) in [
            ("[server]\nmin_send_rate = \"fast\"\n", "p.toml:2:17: min_send_rate:"),
            ("[server]\nmin_send_rate = \"2GiB\"\n", "p.toml:2:17: min_send_rate: must be between 0 and 1GiB"),
            ("[server]\nmax_h2_control_frames = 9\n", "p.toml:2:25: max_h2_control_frames: must be between 10 and"),
        ] {
            let errs = Config::parse(src, Some(Path::new("p.toml"))).unwrap_err();
            assert_eq!(errs.len(), 1, "{src}: {errs:?}");
            assert!(errs[0].to_string().starts_with(want), "{src}: {}", errs[0]);
        }
    }

    #[test]
    fn admin_access_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.token"), format!("{}\n", "a1".repeat(16))).unwrap();
        std::fs::write(dir.path().join("short.token"), "abc").unwrap();
        let path = dir.path().join("p.toml");
        let c = Config::parse(
            "[server]\nadmin_token = \"file:admin.token\"\nadmin_allow = [\"10.0.0.0/8\", \"::1\"]\n",
            Some(&path),
        )
        .unwrap();
        assert!(c.server.admin.token.as_ref().unwrap().matches(Some(format!("Bearer {}", "a1".repeat(16)).as_bytes())));
        assert_eq!(c.server.admin.allow.len(), 2);
        assert!(!format!("{:?}", c.server).contains("a1a1"), "the token never shows in Debug");
        assert!(Config::parse("", None).unwrap().server.admin.token.is_none());
        for (src, want) in [
            ("[server]\nadmin_token = \"inline-token-0123456789abcdef0123\"\n", ":2:15: admin_token: secrets must be"),
            ("[server]\nadmin_token = \"file:short.token\"\n", ":2:15: admin_token: the token must be at least 32"),
            ("[server]\nadmin_token = \"file:none.token\"\n", ":2:15: admin_token: cannot read"),
            ("[server]\nadmin_allow = [\"10.0.0.0/99\"]\n", ":2:16: admin_allow: invalid CIDR \"10.0.0.0/99\""),
            ("[server]\nadmin_allow = [\"10.0.0.1/8\"]\n", "did you mean \"10.0.0.0/8\""),
        ] {
            let errs = Config::parse(src, Some(&path)).unwrap_err();
            let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
            assert!(lines.len() == 1 && lines[0].contains(want), "{src}: {lines:?}");
        }
    }

    #[test]
    fn redis_credentials_never_show_and_come_from_env_or_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("redis.pw"), "s3cret-pw\n").unwrap();
        let path = dir.path().join("p.toml");
        let src = "[state]\nbackend = \"redis\"\nredis_url = \"rediss://user:urlpw@r.example:6380\"\nredis_password = \"file:redis.pw\"\n";
        let c = Config::parse(src, Some(&path)).unwrap();
        assert_eq!(c.state.redis_password, Some(RedisPassword("s3cret-pw".into())));
        let shown = format!("{:?}", c.state);
        assert!(!shown.contains("s3cret") && !shown.contains("urlpw"), "{shown}");
        assert!(shown.contains("rediss://***@r.example:6380"), "{shown}");
        for (src, want) in [
            ("[state]\nredis_password = \"inline\"\n", ":2:18: redis_password: secrets must be"),
            ("[state]\nredis_url = \"rediss://r.example#insecure\"\n", "always verified"),
        ] {
            let errs = Config::parse(src, Some(&path)).unwrap_err();
            let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
            assert!(lines.len() == 1 && lines[0].contains(want), "{src}: {lines:?}");
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let src = "[server]\nlisten = \"nope\"\nmax_connections = 0\n[upstream]\nurl = \"ftp://x\"\n[client_ip]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/99\"]\n";
        let errs = Config::parse(src, Some(Path::new("p.toml"))).unwrap_err();
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[0].starts_with("p.toml:2:10: listen"), "{lines:?}");
        assert!(lines[1].starts_with("p.toml:3:19: max_connections"), "{lines:?}");
        assert!(lines[2].starts_with("p.toml:5:7: url"), "{lines:?}");
        assert!(lines[3].starts_with("p.toml:7:34: trusted_proxies"), "{lines:?}");
    }

    #[test]
    fn every_unknown_key_is_reported() {
        let errs = Config::parse("[server]\nlistn = \"x\"\nmax_conections = 3\n[upstrem]\n", Some(Path::new("c.toml")))
            .unwrap_err();
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("c.toml:2:1:") && lines[0].contains("listn"), "{lines:?}");
        assert!(lines[1].starts_with("c.toml:3:1:") && lines[1].contains("max_conections"), "{lines:?}");
        assert!(lines[2].starts_with("c.toml:4:2:") && lines[2].contains("upstrem"), "{lines:?}");
    }

    #[test]
    fn unknown_key_is_an_error_with_position() {
        let errs = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n", Some(Path::new("c.toml")))
            .unwrap_err();
        assert_eq!(errs.len(), 1);
        let s = errs[0].to_string();
        assert!(s.starts_with("c.toml:3:1:"), "{s}");
        assert!(s.contains("listen_port"), "{s}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.crt"), "x").unwrap();
        std::fs::write(dir.path().join("a.key"), "x").unwrap();
        let cfg = dir.path().join("payguard.toml");
        let c =
            Config::parse("[server]\ntls_cert = \"a.crt\"\ntls_key = \"a.key\"\n[rules]\ndir = \"r\"\n", Some(&cfg))
                .unwrap();
        assert_eq!(c.rules.dir, dir.path().join("r"));
        match c.server.tls {
            TlsSource::Files { cert, .. } => assert_eq!(cert, dir.path().join("a.crt")),
            TlsSource::Dev { .. } => panic!("expected files"),
        }
    }

    #[test]
    fn unreadable_certificate_is_reported() {
        let errs = Config::parse(
            "[server]\ntls_cert = \"/nonexistent/c.crt\"\ntls_key = \"/nonexistent/c.key\"\n",
            Some(Path::new("c.toml")),
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(errs[0].to_string().contains("tls_cert: cannot read /nonexistent/c.crt"));
    }

    #[test]
    fn odd_log_levels_are_errors_not_panics() {
        for bad in [" é=info", "é", "info,=", "\u{0}"] {
            let src = format!("[log]\nlevel = {bad:?}\n");
            assert!(Config::parse(&src, None).is_err(), "{bad:?}");
        }
        assert_eq!(Config::parse("[log]\nlevel = \" debug \"\n", None).unwrap().log.level, "debug");
    }

    #[test]
    fn redis_cluster_list() {
        let c = Config::parse("[state]\nbackend = \"redis\"\nredis_url = [\"redis://a:1\", \"redis://b:2\"]\n", None)
            .unwrap();
        assert_eq!(
            c.state.backend,
            StateBackend::Redis { urls: vec!["redis://a:1".into(), "redis://b:2".into()], cluster: true }
        );
        assert_eq!(c.state.timeout, DEFAULT_STATE_TIMEOUT);
    }

    #[test]
    fn redis_single_node_tls_and_timeout() {
        let c = Config::parse(
            "[state]\nbackend = \"redis\"\nredis_url = \"rediss://:pw@cache.example:6380/1\"\ntimeout = \"100ms\"\n",
            None,
        )
        .unwrap();
        assert_eq!(
            c.state.backend,
            StateBackend::Redis { urls: vec!["rediss://:pw@cache.example:6380/1".into()], cluster: false }
        );
        assert_eq!(c.state.timeout, Duration::from_millis(100));
        // The default URL when only the backend is named.
        let c = Config::parse("[state]\nbackend = \"redis\"\n", None).unwrap();
        assert_eq!(c.state.backend, StateBackend::Redis { urls: vec![DEFAULT_REDIS.into()], cluster: false });
    }

    #[test]
    fn bad_redis_settings_are_reported_with_positions() {
        let src = "[state]\nbackend = \"redis\"\nredis_url = [\"redis://a:1\", \"rediss://b:2\", \"http://c\"]\ntimeout = \"0s\"\n";
        let errs = Config::parse(src, Some(Path::new("p.toml"))).unwrap_err();
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("p.toml:3:13: redis_url: \"http://c\"")), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("all use redis:// or all rediss://")), "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("p.toml:4:11: timeout: must be greater than zero")), "{lines:?}");
        let errs = Config::parse("[state]\nredis_url = []\n", None).unwrap_err();
        assert!(errs[0].to_string().contains("at least one node"), "{errs:?}");
        // Passwords never reach a diagnostic.
        let errs = Config::parse("[state]\nredis_url = \"redis://u:secret@h:nope\"\n", None).unwrap_err();
        assert!(!errs[0].to_string().contains("secret"), "{errs:?}");
    }
}
