//! Serde mirror of `payguard.toml`. Unknown keys are errors; values that need checking beyond
//! their TOML type keep their span so the error can point at them.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub client_ip: RawClientIp,
    #[serde(default)]
    pub rules: RawRules,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Spanned<String>>,
    pub tls_cert: Option<Spanned<String>>,
    pub tls_key: Option<Spanned<String>>,
    pub admin_listen: Option<Spanned<String>>,
    pub admin_token: Option<Spanned<String>>,
    pub admin_allow: Option<Vec<Spanned<String>>>,
    pub max_connections: Option<Spanned<i64>>,
    pub header_read_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub body_read_timeout: Option<Spanned<String>>,
    pub send_timeout: Option<Spanned<String>>,
    pub send_buffer: Option<Spanned<String>>,
    pub min_send_rate: Option<Spanned<String>>,
    pub hsts_max_age: Option<Spanned<String>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub handshake_timeout: Option<Spanned<String>>,
    pub max_header_size: Option<Spanned<String>>,
    pub max_uri_len: Option<Spanned<String>>,
    pub max_h2_streams: Option<Spanned<i64>>,
    pub max_h2_resets: Option<Spanned<i64>>,
    pub max_h2_control_frames: Option<Spanned<i64>>,
    pub response_headers: Option<std::collections::BTreeMap<String, Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub response_timeout: Option<Spanned<String>>,
    pub pool_idle_timeout: Option<Spanned<String>>,
    pub pool_max_idle_per_host: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientIp {
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    pub dir: Option<Spanned<String>>,
    pub watch: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub backend: Option<Spanned<String>>,
    pub redis_url: Option<Spanned<RawRedisUrl>>,
    pub timeout: Option<Spanned<String>>,
    pub max_replay_keys: Option<Spanned<i64>>,
    pub max_rate_keys: Option<Spanned<i64>>,
    pub max_failure_keys: Option<Spanned<i64>>,
    pub max_idempotency_keys: Option<Spanned<i64>>,
    pub max_idempotency_bytes: Option<Spanned<String>>,
    pub redis_password: Option<Spanned<String>>,
}

/// A single URL, or a list of node URLs for a Redis Cluster.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRedisUrl {
    One(String),
    Cluster(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<Spanned<String>>,
    pub level: Option<Spanned<String>>,
}
