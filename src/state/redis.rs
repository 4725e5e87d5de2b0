//! Shared state on Redis (or a Redis Cluster), for several payguard instances behind one load
//! balancer: a nonce reserved on one instance is seen by all, and a rate limit is counted once,
//! cluster-wide.
//!
//! - **Connections**: one multiplexed connection per instance (`ConnectionManager`), which
//!   reconnects by itself after Redis went away; for a cluster, the crate's async cluster
//!   connection (slots refreshed on `MOVED`, nodes reconnected). Nothing is connected at start:
//!   payguard starts while Redis is down, and the health loop ([`RedisStore::ping`], every
//!   second) connects and reports.
//! - **Deadlines**: every call is bounded by `[state] timeout` (default 250 ms), including the
//!   wait for a connection; a call that misses it is [`StoreError::Timeout`] and the route's
//!   `on_state_error` decides.
//! - **Replay keys** (`payguard:replay:<route>|<provider>|<key>`): reserve = `SET k 1 NX PX ttl`
//!   (one atomic command: of two instances reserving one key, exactly one gets `OK`), commit =
//!   `SET k 1 XX PX ttl`, release = `DEL k`.
//! - **Rate limits** (`payguard:rl:<scope fingerprint>:<key>`): GCRA in one Lua script
//!   ([`GCRA_SCRIPT`], `EVALSHA`, loaded once per server), one round trip per decision. The
//!   script reads Redis' own clock (`TIME`), so the instances' clocks do not matter, and gives the
//!   key a TTL of the time its bucket takes to refill, so idle keys expire by themselves.
//! - **Cluster**: every command and the script touch exactly one key, so no hash tag is needed;
//!   keys are deliberately left untagged so they spread over all slots.
//! - **TLS** (`rediss://`): rustls with the aws-lc-rs provider the listener uses (no second
//!   crypto provider); the server certificate is checked against the system's root store.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, Script};

use super::{Gcra, NonceStore, RateDecision, RateStore, Reservation, StoreError, StoreFuture};
pub use crate::config::redis_url::{check_url, redact};

/// Namespace of replay keys.
pub const REPLAY_PREFIX: &str = "payguard:replay:";
/// Namespace of rate-limit buckets.
pub const RATE_PREFIX: &str = "payguard:rl:";

/// GCRA on one bucket. `KEYS[1]`: the bucket, whose value is its theoretical arrival time (TAT)
/// in µs on Redis' clock. `ARGV[1]`: emission interval T (µs); `ARGV[2]`: tolerance
/// τ = T × (burst − 1) (µs). Returns 0 when a cell was taken, else the wait in µs (> 0).
/// Same decision as the memory store's: allowed when now ≥ max(TAT, now) − τ, then TAT = max(TAT, now) + T.
pub const GCRA_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < now then tat = now end
local wait = tat - tau - now
if wait > 0 then return wait end
local nxt = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000))
return 0
";

/// Reconnection: a short backoff, few retries; the health loop starts the next attempt within a
/// second, so recovery after Redis returns takes about a second without a restart.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
const RECONNECT_RETRIES: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("redis_url {url}: {message}")]
    Url { url: String, message: String },
    #[error("redis_url: a cluster needs at least one node URL")]
    NoNodes,
    #[error("redis cluster: {0}")]
    Cluster(String),
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Replay keys and rate-limit buckets on Redis.
pub struct RedisStore {
    conn: Conn,
    timeout: Duration,
    gcra: Script,
    target: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("target", &self.target).field("timeout", &self.timeout).finish()
    }
}

/// The client's view of one URL, with `password` (if given) in place of the URL's own.
fn connection_info(url: &str, password: Option<&str>) -> Result<redis::ConnectionInfo, RedisSetupError> {
    let info =
        url.into_connection_info().map_err(|e| RedisSetupError::Url { url: redact(url), message: e.to_string() })?;
    Ok(match password {
        Some(p) => {
            let settings = info.redis_settings().clone().set_password(p);
            info.set_redis_settings(settings)
        }
        None => info,
    })
}

impl RedisStore {
    /// Prepares the connection (single node, or a cluster when `cluster`); connects lazily.
    /// Must be called inside a tokio runtime.
    pub fn new(urls: &[String], cluster: bool, timeout: Duration) -> Result<RedisStore, RedisSetupError> {
        Self::with_password(urls, cluster, timeout, None)
    }

    /// [`Self::new`] with `[state] redis_password`, which replaces any password in the URLs.
    pub fn with_password(
        urls: &[String],
        cluster: bool,
        timeout: Duration,
        password: Option<&str>,
    ) -> Result<RedisStore, RedisSetupError> {
        let first = urls.first().ok_or(RedisSetupError::NoNodes)?;
        for u in urls {
            check_url(u).map_err(|message| RedisSetupError::Url { url: redact(u), message })?;
        }
        let infos = urls.iter().map(|u| connection_info(u, password)).collect::<Result<Vec<_>, _>>()?;
        if urls.iter().any(|u| u.starts_with("rediss://")) {
            // The redis client builds its rustls config from the process-wide provider: make it
            // the one the listener uses (a no-op when one is installed already).
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let target = urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",");
        let conn = if cluster {
            let client = redis::cluster::ClusterClientBuilder::new(infos)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(RECONNECT_RETRIES as u32)
                .min_retry_wait(RECONNECT_MIN_DELAY.as_millis() as u64)
                .max_retry_wait(RECONNECT_MAX_DELAY.as_millis() as u64)
                .build()
                .map_err(|e| RedisSetupError::Cluster(e.to_string()))?;
            let config =
                redis::cluster::ClusterConfig::new().set_connection_timeout(timeout).set_response_timeout(timeout);
            Conn::Cluster(client.get_pending_async_connection_with_config(config))
        } else {
            let info = infos.into_iter().next().ok_or(RedisSetupError::NoNodes)?;
            let client = redis::Client::open(info)
                .map_err(|e| RedisSetupError::Url { url: redact(first), message: e.to_string() })?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(RECONNECT_RETRIES)
                .set_min_delay(RECONNECT_MIN_DELAY)
                .set_max_delay(RECONNECT_MAX_DELAY);
            let manager = ConnectionManager::new_lazy_with_config(client, config)
                .map_err(|e| RedisSetupError::Url { url: redact(first), message: e.to_string() })?;
            Conn::Single(manager)
        };
        Ok(RedisStore { conn, timeout, gcra: Script::new(GCRA_SCRIPT), target })
    }

    /// The node URL(s), credentials redacted.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn bounded<T>(&self, r: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>) -> Result<T, StoreError> {
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let call = async {
            match self.conn.clone() {
                Conn::Single(mut c) => cmd.query_async(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            }
        };
        self.bounded(tokio::time::timeout(self.timeout, call).await)
    }

    /// One round trip: does the store answer?
    pub async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!("unexpected PING answer {pong:?}")))
        }
    }

    async fn gcra(&self, key: &str, gcra: Gcra) -> Result<RateDecision, StoreError> {
        let (interval, tau) = gcra_args(gcra);
        let mut invocation = self.gcra.key(format!("{RATE_PREFIX}{key}"));
        invocation.arg(interval).arg(tau);
        let call = async {
            match self.conn.clone() {
                Conn::Single(mut c) => invocation.invoke_async::<u64>(&mut c).await,
                Conn::Cluster(mut c) => invocation.invoke_async::<u64>(&mut c).await,
            }
        };
        let wait_us = self.bounded(tokio::time::timeout(self.timeout, call).await)?;
        Ok(if wait_us == 0 {
            RateDecision::Allowed
        } else {
            RateDecision::Limited { retry_after: Duration::from_micros(wait_us) }
        })
    }
}

/// The script's arguments: T and τ in µs (T at least 1 µs: rates above 1,000,000/s per key
/// are treated as 1,000,000/s).
pub fn gcra_args(gcra: Gcra) -> (u64, u64) {
    let interval = u64::try_from(gcra.emission_interval.as_micros()).unwrap_or(u64::MAX).max(1);
    let tau = interval.saturating_mul(u64::from(gcra.burst.max(1) - 1));
    (interval, tau)
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl NonceStore for RedisStore {
    fn reserve<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Reservation> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(format!("{REPLAY_PREFIX}{key}")).arg(1).arg("NX").arg("PX").arg(ttl_ms(ttl));
            // `OK` when set, nil when the key exists.
            let set: Option<String> = self.query(&cmd).await?;
            Ok(if set.is_some() { Reservation::Reserved } else { Reservation::Taken })
        })
    }

    fn commit<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(format!("{REPLAY_PREFIX}{key}")).arg(1).arg("XX").arg("PX").arg(ttl_ms(ttl));
            let _: Option<String> = self.query(&cmd).await?;
            Ok(())
        })
    }

    fn release<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(format!("{REPLAY_PREFIX}{key}"));
            let _: i64 = self.query(&cmd).await?;
            Ok(())
        })
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

impl RateStore for RedisStore {
    fn check_now(&self, _scope: u64, _key: u128, _gcra: Gcra) -> Option<Result<RateDecision, StoreError>> {
        None
    }

    fn check<'a>(&'a self, scope: u64, key: u128, gcra: Gcra) -> StoreFuture<'a, RateDecision> {
        Box::pin(async move { self.gcra(&format!("{scope:016x}:{key:032x}"), gcra).await })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn gcra_arguments_match_the_memory_quota() {
        // 20/s, burst 20: T = 50 ms, τ = 19 T.
        let g = Gcra { emission_interval: Duration::from_millis(50), burst: 20 };
        assert_eq!(gcra_args(g), (50_000, 950_000));
        // Burst 1: no tolerance. Sub-µs intervals are clamped to 1 µs.
        assert_eq!(gcra_args(Gcra { emission_interval: Duration::from_nanos(10), burst: 1 }), (1, 0));
        assert_eq!(gcra_args(Gcra { emission_interval: Duration::from_secs(1), burst: 0 }), (1_000_000, 0));
    }

    #[tokio::test]
    async fn unreachable_redis_is_a_timely_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let store = RedisStore::new(&[format!("redis://127.0.0.1:{port}")], false, Duration::from_millis(250)).unwrap();
        let started = std::time::Instant::now();
        assert!(store.reserve("k", Duration::from_secs(1)).await.is_err());
        assert!(store.ping().await.is_err());
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
}
