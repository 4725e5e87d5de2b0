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

use super::{
    Ban, Begin, FailurePolicy, FailureStore, Gcra, IdemKey, IdempotencyStore, NonceStore, RateDecision, RateStore,
    Reservation, SoonFuture, StoreError, StoreFuture, StoredAnswer,
};
pub use crate::config::redis_url::{check_url, redact};

/// Namespace of replay keys.
pub const REPLAY_PREFIX: &str = "payguard:replay:";
/// Namespace of rate-limit buckets.
pub const RATE_PREFIX: &str = "payguard:rl:";
/// Namespace of failure counts and bans: `payguard:fl:{<scope>:<key>}:w|b|s`, one hash slot per
/// key (the braces), so one script can update all three on a cluster.
pub const FAIL_PREFIX: &str = "payguard:fl:";
/// The index of bans in force, for listing: member `<scope>:<key>`, score the ban's end (unix ms).
pub const BANS_INDEX: &str = "payguard:fl:bans";

/// Namespace of idempotency keys: one hash per key (`state`, `fp`, and for a stored answer
/// `status`, `ct`, `body`).
pub const IDEM_PREFIX: &str = "payguard:idem:";

/// Both steps of an attempt, in one script: the settlement runs a script its reservation has
/// just loaded on the key's node, so it is never refused as unknown (`NOSCRIPT`) and retried
/// behind the client's next attempt. `KEYS[1]`: the key's hash; `ARGV[2]`: the fingerprint.
///
/// - `ARGV[1] = "begin"`, `ARGV[3]`: lease (ms). Returns `{"started"}`, `{"in_flight"}`,
///   `{"mismatch"}`, `{"indeterminate"}` or `{"done", status, content type, body}`. An attempt
///   in flight expires with its lease.
/// - Otherwise `ARGV[1]` settles the attempt, if it is still in flight, as `D` (answered), `X`
///   (indeterminate) or `-` (released); `ARGV[3]`: retention (ms); for `D`, `ARGV[4..6]`:
///   status, content type, body.
pub const IDEM_SCRIPT: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if ARGV[1] == 'begin' then
  if not state then
    redis.call('HSET', KEYS[1], 'state', 'I', 'fp', ARGV[2])
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return {'started'}
  end
  if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[2] then return {'mismatch'} end
  if state == 'I' then return {'in_flight'} end
  if state == 'X' then return {'indeterminate'} end
  local a = redis.call('HMGET', KEYS[1], 'status', 'ct', 'body')
  return {'done', a[1], a[2] or '', a[3] or ''}
end
if state ~= 'I' or redis.call('HGET', KEYS[1], 'fp') ~= ARGV[2] then
  return {}
end
if ARGV[1] == '-' then
  redis.call('DEL', KEYS[1])
  return {}
end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
if ARGV[1] == 'D' then
  redis.call('HSET', KEYS[1], 'status', ARGV[4], 'ct', ARGV[5], 'body', ARGV[6])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {}
";

/// One failed attempt. `KEYS[1]`: the failures in the window (sorted set, score = ms on Redis'
/// clock); `KEYS[2]`: the ban (value = label, expires with the ban); `KEYS[3]`: the count of
/// bans so far. `ARGV`: threshold, window (ms), first ban (ms), ban factor, max ban (ms), label,
/// a member unique to this call. Returns `{0}` (no ban started) or `{ban ms, strike, end ms}`.
/// The same decisions as the memory store's.
pub const FAIL_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
if redis.call('PTTL', KEYS[2]) > 0 then return {0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local threshold = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local ban = tonumber(ARGV[3])
local factor = tonumber(ARGV[4])
local max_ban = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[7])
local n = redis.call('ZCARD', KEYS[1])
if n < threshold then
  redis.call('PEXPIRE', KEYS[1], window)
  return {0}
end
redis.call('DEL', KEYS[1])
local strike = redis.call('INCR', KEYS[3])
local len = ban
if factor > 1 then
  for i = 2, math.min(strike, 64) do
    if len >= max_ban then break end
    len = len * factor
  end
end
if len > max_ban then len = max_ban end
redis.call('SET', KEYS[2], ARGV[6], 'PX', len)
redis.call('PEXPIRE', KEYS[3], len + max_ban)
return {len, strike, now + len}
";

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
    fail: Script,
    idem: Script,
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
        Ok(RedisStore {
            conn,
            timeout,
            gcra: Script::new(GCRA_SCRIPT),
            fail: Script::new(FAIL_SCRIPT),
            idem: Script::new(IDEM_SCRIPT),
            target,
        })
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

    /// Failure-limit bans in force, by the listing index (for the gauge).
    pub async fn active_bans(&self) -> Result<u64, StoreError> {
        self.query(redis::cmd("ZCOUNT").arg(BANS_INDEX).arg(unix_ms()).arg("+inf")).await
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
        let wait_us: u64 = self.invoke(&invocation).await?;
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

impl RedisStore {
    /// Runs `script` on one key, bounded by the store's timeout.
    async fn invoke<T: FromRedisValue>(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<T, StoreError> {
        let call = async {
            match self.conn.clone() {
                Conn::Single(mut c) => invocation.invoke_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => invocation.invoke_async::<T>(&mut c).await,
            }
        };
        self.bounded(tokio::time::timeout(self.timeout, call).await)
    }

    async fn idem_settle(
        &self,
        key: IdemKey,
        fingerprint: [u8; 32],
        state: &str,
        retention: Duration,
        answer: Option<StoredAnswer>,
    ) -> Result<(), StoreError> {
        let mut invocation = self.idem.key(format!("{IDEM_PREFIX}{key}"));
        invocation.arg(state).arg(hex::encode(fingerprint)).arg(ms(retention));
        if let Some(a) = &answer {
            let ct = a.content_type.as_ref().map_or(&b""[..], http::HeaderValue::as_bytes);
            invocation.arg(a.status).arg(ct).arg(a.body.as_ref());
        }
        let _: Vec<Vec<u8>> = self.invoke(&invocation).await?;
        Ok(())
    }
}

impl IdempotencyStore for RedisStore {
    fn begin(&self, key: IdemKey, fingerprint: [u8; 32], lease: Duration) -> StoreFuture<'_, Begin> {
        Box::pin(async move {
            let mut invocation = self.idem.key(format!("{IDEM_PREFIX}{key}"));
            invocation.arg("begin").arg(hex::encode(fingerprint)).arg(ms(lease));
            let answer: Vec<Vec<u8>> = self.invoke(&invocation).await?;
            let malformed = || StoreError::Unavailable("unexpected idempotency script answer".into());
            Ok(match answer.first().map(Vec::as_slice) {
                Some(b"started") => Begin::Started,
                Some(b"in_flight") => Begin::InFlight,
                Some(b"mismatch") => Begin::Mismatch,
                Some(b"indeterminate") => Begin::Indeterminate,
                Some(b"done") => {
                    let [_, status, ct, body] = answer.as_slice() else { return Err(malformed()) };
                    let status = std::str::from_utf8(status).ok().and_then(|s| s.parse().ok()).ok_or_else(malformed)?;
                    let content_type = http::HeaderValue::from_bytes(ct).ok().filter(|_| !ct.is_empty());
                    Begin::Done(StoredAnswer { status, content_type, body: bytes::Bytes::copy_from_slice(body) })
                }
                _ => return Err(malformed()),
            })
        })
    }

    fn complete(
        &self,
        key: IdemKey,
        fingerprint: [u8; 32],
        answer: StoredAnswer,
        retention: Duration,
    ) -> SoonFuture<'_, ()> {
        super::later(self.idem_settle(key, fingerprint, "D", retention, Some(answer)))
    }

    fn hold(&self, key: IdemKey, fingerprint: [u8; 32], retention: Duration) -> SoonFuture<'_, ()> {
        super::later(self.idem_settle(key, fingerprint, "X", retention, None))
    }

    fn release(&self, key: IdemKey, fingerprint: [u8; 32]) -> SoonFuture<'_, ()> {
        super::later(self.idem_settle(key, fingerprint, "-", Duration::from_millis(1), None))
    }
}

fn fail_keys(scope: u64, key: u128) -> [String; 3] {
    let base = format!("{FAIL_PREFIX}{{{scope:016x}:{key:032x}}}");
    [format!("{base}:w"), format!("{base}:b"), format!("{base}:s")]
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl FailureStore for RedisStore {
    fn banned_now(&self, _scope: u64, _key: u128) -> Option<Result<Option<Duration>, StoreError>> {
        None
    }

    fn banned<'a>(&'a self, scope: u64, key: u128) -> StoreFuture<'a, Option<Duration>> {
        Box::pin(async move {
            let [_, ban, _] = fail_keys(scope, key);
            let left: i64 = self.query(redis::cmd("PTTL").arg(ban)).await?;
            Ok(u64::try_from(left).ok().filter(|&ms| ms > 0).map(Duration::from_millis))
        })
    }

    fn fail<'a>(
        &'a self,
        scope: u64,
        key: u128,
        label: &'a str,
        policy: FailurePolicy,
    ) -> StoreFuture<'a, Option<Duration>> {
        Box::pin(async move {
            let [window, ban, strikes] = fail_keys(scope, key);
            let mut invocation = self.fail.key(window);
            invocation.key(ban).key(strikes);
            invocation
                .arg(policy.threshold.max(1))
                .arg(ms(policy.window))
                .arg(ms(policy.ban))
                .arg(policy.ban_factor.max(1))
                .arg(ms(policy.max_ban))
                .arg(label)
                .arg(format!("{:016x}", fastrand::u64(..)));
            let answer: Vec<u64> = self.invoke(&invocation).await?;
            let (len, end) = match answer.as_slice() {
                [len, _strike, end] if *len > 0 => (*len, *end),
                _ => return Ok(None),
            };
            // The index only lists bans; a lost update costs a line in the admin listing,
            // never a ban (the ban key itself is already set).
            let mut index = redis::cmd("ZADD");
            index.arg(BANS_INDEX).arg(end).arg(format!("{scope:016x}:{key:032x}"));
            if let Err(e) = self.query::<i64>(&index).await {
                tracing::warn!(target: "payguard::failure_limit", error = %e, "could not index a ban for listing");
            }
            Ok(Some(Duration::from_millis(len)))
        })
    }

    fn bans(&self, limit: usize) -> StoreFuture<'_, Vec<Ban>> {
        Box::pin(async move {
            let mut expired = redis::cmd("ZREMRANGEBYSCORE");
            expired.arg(BANS_INDEX).arg("-inf").arg(unix_ms());
            let _: i64 = self.query(&expired).await?;
            let mut list = redis::cmd("ZREVRANGE");
            list.arg(BANS_INDEX).arg(0).arg(limit.saturating_sub(1));
            let members: Vec<String> = self.query(&list).await?;
            let mut out = Vec::with_capacity(members.len());
            for member in members {
                let Some((scope, key)) = member
                    .split_once(':')
                    .and_then(|(s, k)| Some((u64::from_str_radix(s, 16).ok()?, u128::from_str_radix(k, 16).ok()?)))
                else {
                    continue;
                };
                let [_, ban, strikes] = fail_keys(scope, key);
                let label: Option<String> = self.query(redis::cmd("GET").arg(&ban)).await?;
                let left: i64 = self.query(redis::cmd("PTTL").arg(&ban)).await?;
                let strike: Option<u32> = self.query(redis::cmd("GET").arg(&strikes)).await?;
                if let (Some(label), Ok(left)) = (label, u64::try_from(left)) {
                    if left > 0 {
                        let left = Duration::from_millis(left);
                        out.push(Ban { scope, key, label, left, strike: strike.unwrap_or(1) });
                    }
                }
            }
            Ok(out)
        })
    }

    fn lift(&self, scope: u64, key: u128) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let [window, ban, strikes] = fail_keys(scope, key);
            let left: i64 = self.query(redis::cmd("PTTL").arg(&ban)).await?;
            // One hash slot: one DEL for the three, on a cluster too.
            let _: i64 = self.query(redis::cmd("DEL").arg(&window).arg(&ban).arg(&strikes)).await?;
            let _: i64 = self.query(redis::cmd("ZREM").arg(BANS_INDEX).arg(format!("{scope:016x}:{key:032x}"))).await?;
            Ok(left > 0)
        })
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
