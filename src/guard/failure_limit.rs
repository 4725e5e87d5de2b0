//! `[[route.failure_limit]]`: a key (client IP, a header, a field of the request) that failed
//! too often is banned. The request phase refuses a banned key before anything is forwarded
//! (429 `too_many_failures`, `Retry-After`); the response phase classifies the backend's answer
//! (by status, or by a field of its JSON body) and counts the failures, which may start a ban.
//! Counts and bans live in the `FailureStore` (memory, or Redis shared by every instance).
//!
//! Only the backend's answers count: a refusal by a guard further in (a malformed body) or
//! payguard's own 502/504 is not an attempt.
//!
//! A key the request does not carry (no such header or field) is not counted: there is nobody to
//! ban. Keys are stored as digests; logs show the IP, or the key's kind with 8 hex digits of its
//! digest, never a header or field value.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Response};
use http_body_util::BodyExt as _;
use sha2::{Digest as _, Sha256};

use crate::body::Body;
use crate::context::GuardTime;
use crate::exchange::{CountedKey, Exchange, Parts};
use crate::guard::json_doc::{Json, JsonDoc};
use crate::guard::layer::{Guard, Responded, Verdict};
use crate::guard::values;
use crate::guard::Reject;
use crate::metrics::{Metrics, RouteLabel};
use crate::rescue::broken_answer;
use crate::rules::{FailureKey, FailureLimit, Route};
use crate::state::{FailurePolicy, FailureStore, StoreError};

const NAME: &str = "failure_limit";

/// The largest answer read to classify it by a JSON field (by its declared Content-Length).
pub const MAX_CLASSIFIED_ANSWER: u64 = 64 * 1024;

#[derive(Clone)]
pub struct FailureLimitGuard {
    store: Arc<dyn FailureStore>,
    metrics: Arc<Metrics>,
}

impl FailureLimitGuard {
    pub fn new(store: Arc<dyn FailureStore>, metrics: Arc<Metrics>) -> Self {
        FailureLimitGuard { store, metrics }
    }
}

/// The store's view of a rule.
pub fn policy(rule: &FailureLimit) -> FailurePolicy {
    FailurePolicy {
        threshold: rule.threshold,
        window: rule.window,
        ban: rule.ban,
        ban_factor: rule.ban_factor,
        max_ban: rule.max_ban,
    }
}

/// The request's key for `key`; `None` when the request does not carry it. An IP is its own
/// key; any other value is keyed by a SHA-256 digest of the key's spec and the value.
/// `json` is the body's document, needed for a `json:` key.
pub fn counted_key(
    key: &FailureKey,
    client: std::net::IpAddr,
    headers: &HeaderMap,
    body: &[u8],
    json: Option<&JsonDoc>,
) -> Option<u128> {
    let (kind, name) = key.spec_parts();
    let mut h = Sha256::new().chain_update(kind).chain_update(name).chain_update([0xff]);
    match key {
        FailureKey::Ip => return Some(super::rate_limit::ip_key(client)),
        FailureKey::Header(header) => {
            let mut values = headers.get_all(header).iter().peekable();
            values.peek()?;
            for v in values {
                h.update((v.len() as u64).to_be_bytes());
                h.update(v.as_bytes());
            }
        }
        FailureKey::Json(pointer) => match json?.get(pointer)? {
            Json::String(s) if !s.is_empty() => h.update(s.as_bytes()),
            Json::Bool(b) => h.update(if b { "true" } else { "false" }),
            v => h.update(v.number_text()?),
        },
        FailureKey::Form(field) => {
            let (_, v) = form_urlencoded::parse(body).find(|(k, _)| k == field.as_str())?;
            if v.is_empty() {
                return None;
            }
            h.update(v.as_bytes());
        }
    }
    let digest = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    Some(u128::from_be_bytes(first))
}

/// What a key is, as safe to log and list: the IP, or the key's kind with the first 8 hex digits
/// of its digest (`header:x-account#1a2b3c4d`), never the value.
pub fn key_label(key: &FailureKey, counted: u128, client: std::net::IpAddr) -> String {
    match key {
        FailureKey::Ip => client.to_string(),
        other => format!("{}#{:08x}", other.spec(), counted >> 96),
    }
}

type Checked = (Exchange, Result<(), Reject>);

/// What the request phase decides from the store's answers: the longest ban found, or the
/// route's `on_state_error` when the store could not answer.
fn outcome(
    answers: impl IntoIterator<Item = Result<Option<Duration>, StoreError>>,
    route: &Route,
    metrics: &Metrics,
) -> Result<(), Reject> {
    let mut longest: Option<Duration> = None;
    for answer in answers {
        match answer {
            Ok(Some(left)) => longest = Some(longest.map_or(left, |l| l.max(left))),
            Ok(None) => {}
            Err(e) => {
                let label = RouteLabel(route.name.clone());
                super::store_unavailable(NAME, route.on_state_error.failure_limit, &e, metrics, &label)?;
            }
        }
    }
    longest.map_or(Ok(()), |left| Err(Reject::TooManyFailures { left }))
}

/// What the response phase needs: the route's rules and this request's keys.
pub struct Held {
    route: Arc<Route>,
    keys: Vec<CountedKey>,
    request_id: http::HeaderValue,
    client_ip: std::net::IpAddr,
}

impl Guard for FailureLimitGuard {
    const NAME: &'static str = NAME;
    const RESPONDS: bool = true;
    type Future = Pin<Box<dyn Future<Output = Checked> + Send>>;
    // Boxed: every layer's future holds the inner one's, so a large hold would be copied
    // through the whole stack on every request, on every route.
    type Hold = Box<Held>;
    type Respond = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

    fn check(&self, mut ex: Exchange) -> Verdict<Self::Future> {
        // Most routes have no failure limit: decided without touching the route's refcount.
        let Some(route) = ex.route.as_ref().filter(|r| !r.failure_limits.is_empty()).cloned() else {
            return Verdict::Now(ex, Ok(()));
        };
        let Parts { req, json, client, content, .. } = &mut *ex;
        let mut own = None;
        let limits = &route.failure_limits;
        let doc = limits
            .iter()
            .any(|l| matches!(l.key, FailureKey::Json(_)))
            .then(|| values::json_as_sent(json, &mut own, req, values::content(content, req)));
        let body = req.body().buffered().unwrap_or_default();
        let keys: Vec<CountedKey> = limits
            .iter()
            .enumerate()
            .filter_map(|(rule, limit)| {
                let key = counted_key(&limit.key, client.ip, req.headers(), body, doc)?;
                Some(CountedKey { rule, key })
            })
            .collect();
        let scope = |k: &CountedKey| route.failure_limits.get(k.rule).map_or(0, |r| r.scope);
        let now: Option<Vec<_>> = keys.iter().map(|k| self.store.banned_now(scope(k), k.key)).collect();
        if let Some(answers) = now {
            let outcome = outcome(answers, &route, &self.metrics);
            ex.failure_keys = keys;
            return Verdict::Now(ex, outcome);
        }
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        let scopes: Vec<(u64, u128)> = keys.iter().map(|k| (scope(k), k.key)).collect();
        ex.failure_keys = keys;
        Verdict::Later(Box::pin(async move {
            let mut answers = Vec::with_capacity(scopes.len());
            for (scope, key) in scopes {
                answers.push(store.banned(scope, key).await);
            }
            let outcome = outcome(answers, &route, &metrics);
            (ex, outcome)
        }))
    }

    fn hold(&self, ex: &mut Exchange) -> Option<Box<Held>> {
        if ex.failure_keys.is_empty() {
            return None;
        }
        Some(Box::new(Held {
            route: ex.route.clone()?,
            keys: std::mem::take(&mut ex.failure_keys),
            request_id: ex.request_id.clone(),
            client_ip: ex.client.ip,
        }))
    }

    fn respond(&self, held: Box<Held>, res: Response<Body>) -> Responded<Self::Respond> {
        // Only the backend's answers are attempts: a refusal by a guard further in, or payguard's
        // own 502/504, says nothing about the payment.
        if res.extensions().get::<GuardTime>().is_none() {
            return Responded::Now(res);
        }
        let status = res.status().as_u16();
        let rules = &held.route.failure_limits;
        let needs_body =
            rules.iter().any(|r| !r.status_fails(status) && r.json.is_some()) && readable_json(res.headers());
        if !needs_body && !rules.iter().any(|r| r.status_fails(status)) {
            return Responded::Now(res);
        }
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        Responded::Later(Box::pin(async move {
            let (parts, body) = res.into_parts();
            let (res, doc) = if needs_body {
                match body.collect().await {
                    Ok(collected) => {
                        let bytes: Bytes = collected.to_bytes();
                        let doc = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
                        (Response::from_parts(parts, Body::full(bytes)), doc)
                    }
                    Err(_) => {
                        // The backend broke off its answer: nothing to classify, nothing to send.
                        return broken_answer(Some(&held.route.name), &held.request_id, held.client_ip, &metrics);
                    }
                }
            } else {
                (Response::from_parts(parts, body), None)
            };
            for k in &held.keys {
                let Some(rule) = held.route.failure_limits.get(k.rule) else { continue };
                let failed = rule.status_fails(status)
                    || doc.as_ref().zip(rule.json.as_ref()).is_some_and(|(d, j)| j.matches(d));
                if failed {
                    record(&*store, &metrics, &held, k, rule).await;
                }
            }
            res
        }))
    }
}

/// Counts one failure; a ban it starts gets its audit line.
async fn record(store: &dyn FailureStore, metrics: &Metrics, held: &Held, k: &CountedKey, rule: &FailureLimit) {
    let label = RouteLabel(held.route.name.clone());
    // The route travels with the key's label, so a ban lists as `route|key`.
    let key = key_label(&rule.key, k.key, held.client_ip);
    let stored = format!("{}|{key}", held.route.name);
    match store.fail(rule.scope, k.key, &stored, policy(rule)).await {
        Ok(ban) => {
            metrics.failure(&label, ban.is_some());
            if let Some(ban) = ban {
                tracing::info!(
                    target: crate::telemetry::AUDIT_TARGET,
                    request_id = held.request_id.to_str().unwrap_or("-"),
                    route = %held.route.name,
                    client_ip = %held.client_ip,
                    guard = NAME,
                    decision = "ban",
                    reason = "too_many_failures",
                    key = %key,
                    ban_secs = ban.as_secs(),
                    detail = %format!("{} failures within {:?}", rule.threshold, rule.window),
                );
            }
        }
        Err(e) => {
            // Per failure at debug only: a full store warns once a second, an unreachable Redis
            // is reported by the health loop, and each miss is counted below.
            tracing::debug!(target: "payguard::failure_limit", error = %e, %key, "could not count a failed attempt");
            metrics.decision(&label, NAME, "fail_open");
        }
    }
}

/// A JSON answer small enough to read: `application/json` or `+json`, with a Content-Length
/// up to [`MAX_CLASSIFIED_ANSWER`].
fn readable_json(headers: &HeaderMap) -> bool {
    let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        let media = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        media == "application/json" || media.ends_with("+json")
    });
    let small = crate::body::declared_length(headers).is_some_and(|n| n <= MAX_CLASSIFIED_ANSWER);
    json && small
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::path::PathBuf;

    use http::{HeaderValue, Request, StatusCode};
    use tower::ServiceExt as _;

    use super::*;
    use crate::rules::active::ActiveRules;
    use crate::state::memory::MemoryFailureStore;

    #[test]
    fn keys_are_digests_with_safe_labels() {
        let ip: std::net::IpAddr = "203.0.113.7".parse().unwrap();
        let key =
            |k: &FailureKey, ip, h: &HeaderMap, body: &[u8]| counted_key(k, ip, h, body, Some(&JsonDoc::parse(body)));
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("alice"));
        let k = key(&FailureKey::Ip, ip, &h, b"").unwrap();
        assert_eq!(k, super::super::rate_limit::ip_key(ip));
        assert_eq!(key_label(&FailureKey::Ip, k, ip), "203.0.113.7");
        let header = FailureKey::Header(http::HeaderName::from_static("x-user"));
        let a = key(&header, ip, &h, b"").unwrap();
        let label = key_label(&header, a, ip);
        assert!(label.starts_with("header:x-user#") && label.len() == "header:x-user#".len() + 8, "{label}");
        assert!(!label.contains("alice"));
        assert_eq!(key(&header, ip, &HeaderMap::new(), b""), None, "no header, no key");
        let json = FailureKey::Json("/user/id".into());
        let b = key(&json, ip, &h, br#"{"user":{"id":"alice"}}"#).unwrap();
        assert_ne!(a, b, "the same value under another key is another key");
        // A number is keyed by its text: user 42 is user "42".
        assert_eq!(key(&json, ip, &h, br#"{"user":{"id":42}}"#), key(&json, ip, &h, br#"{"user":{"id":"42"}}"#));
        assert_eq!(key(&json, ip, &h, br#"{"user":{}}"#), None);
        assert_eq!(key(&json, ip, &h, b"not json"), None);
        let form = FailureKey::Form("card_bin".into());
        let c = key(&form, ip, &h, b"amount=1&card_bin=411111").unwrap();
        assert_eq!(Some(c), key(&form, ip, &h, b"card_bin=411111&amount=2"));
        assert_eq!(key(&form, ip, &h, b"card_bin="), None);
    }

    #[test]
    fn only_small_json_answers_are_read() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("20"));
        assert!(readable_json(&h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(MAX_CLASSIFIED_ANSWER + 1));
        assert!(!readable_json(&h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("20"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(!readable_json(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        assert!(readable_json(&h));
    }

    /// The guard over a backend answering `status` with `body`, for a client at 192.0.2.1.
    async fn through(
        store: Arc<MemoryFailureStore>,
        active: Arc<ActiveRules>,
        status: u16,
        body: &'static str,
    ) -> (u16, String) {
        let backend = move |_ex: Exchange| {
            let mut res = Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, body.len())
                .body(Body::full(body))
                .unwrap();
            // As the proxy marks the backend's answers.
            res.extensions_mut().insert(GuardTime(Duration::ZERO));
            res
        };
        let stores = crate::state::Stores { failures: store, ..crate::guard::chain::test_support::memory_stores() };
        let svc = crate::guard::chain::test_support::chain(stores, backend);
        let mut ex = Exchange::for_test(Request::post("/pay").body(Body::full("{}")).unwrap());
        ex.route = active.rules.routes().first().cloned();
        ex.active = active;
        let res = svc.oneshot(ex).await.unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn failures_by_status_or_json_ban_and_the_answer_passes_unchanged() {
        let rules = "[[route]]\nname = \"pay\"\nmatch = { path = \"/pay\" }\n\
                     [[route.failure_limit]]\nfailure = { status = [\"402\"], json = { at = \"/code\", equals = \"FAIL\" } }\n\
                     threshold = 3\nwindow = \"10m\"\nban = \"15m\"\n";
        let set = crate::rules::load_sources(&[(PathBuf::from("r.toml"), rules.to_owned())]).unwrap();
        let active = Arc::new(ActiveRules::new(set, 1));
        let store = Arc::new(MemoryFailureStore::new(100));
        // Successes are not counted; a 402 and a 200 whose JSON says FAIL are, and the client
        // gets each answer byte for byte.
        assert_eq!(through(store.clone(), active.clone(), 200, r#"{"code":"SUCCESS"}"#).await.0, 200);
        assert_eq!(
            through(store.clone(), active.clone(), 402, r#"{"declined":true}"#).await,
            (402, r#"{"declined":true}"#.into())
        );
        assert_eq!(
            through(store.clone(), active.clone(), 200, r#"{"code":"FAIL"}"#).await,
            (200, r#"{"code":"FAIL"}"#.into())
        );
        assert!(store.bans_at(10, std::time::Instant::now()).is_empty());
        assert_eq!(through(store.clone(), active.clone(), 402, "{}").await.0, 402);
        let bans = store.bans_at(10, std::time::Instant::now());
        assert_eq!((bans.len(), bans[0].label.as_str()), (1, "pay|192.0.2.1"));
        // Banned: refused before the backend, with the time left.
        let (status, body) = through(store.clone(), active.clone(), 200, "{}").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS.as_u16());
        assert!(body.contains("too_many_failures"), "{body}");
    }
}
