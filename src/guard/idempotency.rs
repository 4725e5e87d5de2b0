//! `[route.idempotency]`: one order, one charge. The first attempt with a key reserves it
//! atomically (in memory, or on Redis for every instance) and is forwarded; the backend's
//! answer is stored and replayed to every later attempt with the same key and request, without
//! contacting the backend. Meanwhile a second attempt gets 409; the same key for a different
//! request, 422.
//!
//! The response phase settles the attempt by the answer (RULES.md, "Idempotency"): payguard's
//! own 502 and the backend's 429/503 mean nothing was done (released); a timeout (504) may have
//! charged (`on_timeout`: held as indeterminate, or released); any other answer is stored, 5xx
//! included. An attempt abandoned halfway (the client went away) is settled as a timeout.
//!
//! Keys are stored as digests of route, scope and key: a key is never written to a log or to
//! Redis, and two routes or two scopes never share one. Logs show `#` and 8 hex digits of the
//! digest.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::FutureExt as _;
use http::{header, HeaderMap, HeaderValue, Method, Response};
use sha2::{Digest as _, Sha256};

use crate::body::{read_capped, read_capped_ready, Body, Capped};
use crate::context::GuardTime;
use crate::exchange::{Attempt, Exchange, Parts};
use crate::guard::json_doc::{Json, JsonDoc};
use crate::guard::layer::{Guard, Responded, Verdict};
use crate::guard::values;
use crate::guard::{Reject, Replayed};
use crate::metrics::{IdemOutcome, Metrics, RouteLabel};
use crate::rescue::broken_answer;
use crate::rules::idempotency::MAX_KEY_LEN;
use crate::rules::{Idempotency, KeyScope, KeySource, OnTimeout, Route};
use crate::state::{Begin, IdemKey, IdempotencyStore, StoreError, StoredAnswer};

const NAME: &str = "idempotency";

#[derive(Clone)]
pub struct IdempotencyGuard {
    store: Arc<dyn IdempotencyStore>,
    metrics: Arc<Metrics>,
}

impl IdempotencyGuard {
    pub fn new(store: Arc<dyn IdempotencyStore>, metrics: Arc<Metrics>) -> Self {
        IdempotencyGuard { store, metrics }
    }
}

/// The request's idempotency key: `Ok(None)` when it carries none, `Err(reason)` when the key
/// is there but unusable (several, empty, too long, not visible ASCII). `json` is the body's
/// document, needed for a `json:` source.
pub fn request_key<'a>(
    source: &KeySource,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    body: &'a [u8],
    json: Option<&'a JsonDoc>,
) -> Result<Option<std::borrow::Cow<'a, [u8]>>, &'static str> {
    use std::borrow::Cow;
    let found: Option<Cow<'a, [u8]>> = match source {
        KeySource::Header(name) => {
            let mut values = headers.get_all(name).iter();
            let first = values.next();
            if values.next().is_some() {
                return Err("the request carries several keys");
            }
            first.map(|v| Cow::Borrowed(v.as_bytes()))
        }
        KeySource::Json(pointer) => match json.and_then(|doc| doc.get(pointer)) {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(Cow::Borrowed(s.as_bytes())),
            Some(v) => {
                Some(Cow::Owned(v.number_text().ok_or("the key field is not a string or a number")?.into_bytes()))
            }
        },
        KeySource::Form(field) => form_value(body, field),
        KeySource::Query(name) => form_value(query.unwrap_or_default().as_bytes(), name),
    };
    let Some(key) = found else { return Ok(None) };
    if key.is_empty() {
        return Err("the key is empty");
    }
    if key.len() > MAX_KEY_LEN {
        return Err("the key is longer than 255 characters");
    }
    if !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err("the key holds characters other than visible ASCII");
    }
    Ok(Some(key))
}

fn form_value<'a>(data: &'a [u8], name: &str) -> Option<std::borrow::Cow<'a, [u8]>> {
    form_urlencoded::parse(data).find(|(k, _)| k == name).map(|(_, v)| match v {
        std::borrow::Cow::Borrowed(s) => std::borrow::Cow::Borrowed(s.as_bytes()),
        std::borrow::Cow::Owned(s) => std::borrow::Cow::Owned(s.into_bytes()),
    })
}

/// The key as stored: the first 16 bytes of SHA-256 over the route, the scope and the key.
pub fn stored_key(route: &str, scope: &KeyScope, client: IpAddr, headers: &HeaderMap, key: &[u8]) -> IdemKey {
    // Short framing, so a usual key fits SHA-256's one 64-byte block: route names are at most
    // 128 characters (two length bytes), keys at most 255 bytes (one).
    let mut h = Sha256::new();
    h.update(b"pgidem");
    h.update(u16::try_from(route.len()).unwrap_or(u16::MAX).to_be_bytes());
    h.update(route.as_bytes());
    let by_ip = |h: &mut Sha256| {
        h.update(b"i");
        h.update(super::rate_limit::ip_key(client).to_be_bytes());
    };
    match scope {
        KeyScope::Ip => by_ip(&mut h),
        KeyScope::Route => h.update(b"r"),
        KeyScope::Header(name) => {
            let mut values = headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                // No such header: the request is its client's (never another header value's).
                by_ip(&mut h);
            } else {
                h.update(b"h");
                for v in values {
                    h.update((v.len() as u64).to_be_bytes());
                    h.update(v.as_bytes());
                }
            }
        }
    }
    h.update([u8::try_from(key.len()).unwrap_or(u8::MAX)]);
    h.update(key);
    let digest = h.finalize();
    let mut stored = [0u8; 16];
    stored.copy_from_slice(&digest[..16]);
    IdemKey(stored)
}

/// SHA-256 over method, path and query, and the raw body.
pub fn fingerprint(method: &Method, uri: &http::Uri, body: &[u8]) -> [u8; 32] {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    Sha256::new()
        .chain_update(method.as_str())
        .chain_update([0])
        .chain_update((target.len() as u64).to_be_bytes())
        .chain_update(target)
        .chain_update(body)
        .finalize()
        .into()
}

type Checked = (Exchange, Result<(), Reject>);

/// What the store's answer to `begin` means for the request, and its metric outcome. A first
/// attempt is counted once settled (stored, released, held, …): nothing to count on the way in.
fn decide(begun: Result<Begin, StoreError>, tag: u32, route: &Route, metrics: &Metrics) -> (bool, Result<(), Reject>) {
    let (outcome, result) = match begun {
        Ok(Begin::Started) => return (true, Ok(())),
        Ok(Begin::InFlight) => (IdemOutcome::InFlight, Err(Reject::IdempotencyInFlight { key: tag })),
        Ok(Begin::Done(answer)) => {
            (IdemOutcome::Replayed, Err(Reject::IdempotentReplay(Box::new(Replayed { answer, key: tag }))))
        }
        Ok(Begin::Mismatch) => (IdemOutcome::Mismatch, Err(Reject::IdempotencyMismatch { key: tag })),
        Ok(Begin::Indeterminate) => (IdemOutcome::Indeterminate, Err(Reject::IdempotencyIndeterminate { key: tag })),
        Err(e) => {
            metrics.idempotency(&route.counters, IdemOutcome::StoreError);
            let label = RouteLabel(route.name.clone());
            return (false, super::store_unavailable(NAME, route.on_state_error.idempotency, &e, metrics, &label));
        }
    };
    metrics.idempotency(&route.counters, outcome);
    (false, result)
}

/// What the response phase needs: the rule, the attempt, and who made it.
pub struct Held {
    route: Arc<Route>,
    request_id: HeaderValue,
    client_ip: IpAddr,
    unsettled: Unsettled,
}

/// An attempt not settled yet. Dropped unsettled (the client went away while the backend was
/// working on it, or the answer broke off), it is settled as a timeout: the backend may have
/// acted on it.
struct Unsettled {
    store: Arc<dyn IdempotencyStore>,
    attempt: Option<Attempt>,
    terms: Terms,
}

/// The parts of the rule the response phase needs (the rule itself stays with the route).
#[derive(Debug, Clone, Copy)]
struct Terms {
    retention: Duration,
    lease: Duration,
    on_timeout: OnTimeout,
    max_response: u64,
}

impl Terms {
    fn of(rule: &Idempotency) -> Terms {
        Terms {
            retention: rule.retention,
            lease: rule.lease,
            on_timeout: rule.on_timeout,
            max_response: rule.max_response,
        }
    }
}

impl Unsettled {
    /// Takes the attempt for settling; the drop does nothing after this.
    fn take(&mut self) -> Option<Attempt> {
        self.attempt.take()
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        let Some(attempt) = self.attempt.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (store, retention) = (self.store.clone(), self.terms.retention);
        let on_timeout = self.terms.on_timeout;
        runtime.spawn(async move {
            let done = match on_timeout {
                OnTimeout::Hold => store.hold(attempt.key, attempt.fingerprint, retention).await,
                OnTimeout::Release => store.release(attempt.key, attempt.fingerprint).await,
            };
            if let Err(e) = done {
                tracing::debug!(target: "payguard::idempotency", error = %e, "could not settle an abandoned attempt");
            }
        });
    }
}

/// How an answer settles its attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Nothing was done: the key is free again.
    Release,
    /// The backend may have acted: `on_timeout`.
    Timeout,
    /// Stored and replayed.
    Store,
}

fn settlement(status: u16, from_backend: bool) -> Settle {
    match (from_backend, status) {
        (true, 429 | 503) => Settle::Release,
        (_, 504) => Settle::Timeout,
        (true, _) => Settle::Store,
        // payguard's own answer (backend unreachable): nothing reached the backend.
        (false, _) => Settle::Release,
    }
}

impl Guard for IdempotencyGuard {
    const NAME: &'static str = NAME;
    const RESPONDS: bool = true;
    type Future = Pin<Box<dyn Future<Output = Checked> + Send>>;
    // Boxed: every layer's future holds the inner one's, so a large hold would be copied
    // through the whole stack on every request, on every route.
    type Hold = Box<Held>;
    type Respond = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

    fn check(&self, mut ex: Exchange) -> Verdict<Self::Future> {
        // Most routes have none: decided without touching the route's refcount.
        let Some(route) = ex.route.as_ref().filter(|r| r.idempotency.is_some()).cloned() else {
            return Verdict::Now(ex, Ok(()));
        };
        let Some(rule) = &route.idempotency else { return Verdict::Now(ex, Ok(())) };
        let Parts { req, json, client, content, .. } = &mut *ex;
        let mut own = None;
        let doc = matches!(rule.key, KeySource::Json(_))
            .then(|| values::json_as_sent(json, &mut own, req, values::content(content, req)));
        let body = req.body().buffered().unwrap_or_default();
        let key = match request_key(&rule.key, req.uri().query(), req.headers(), body, doc) {
            Ok(Some(key)) => key,
            Ok(None) if !rule.required => return Verdict::Now(ex, Ok(())),
            missing => {
                let reason = missing.err().unwrap_or("the request carries no key");
                self.metrics.idempotency(&route.counters, IdemOutcome::KeyMissing);
                return Verdict::Now(ex, Err(Reject::IdempotencyKeyMissing { reason }));
            }
        };
        let key = stored_key(&route.name, &rule.scope, client.ip, req.headers(), &key);
        let tag = key.tag();
        let fingerprint = fingerprint(req.method(), req.uri(), body);
        let lease = rule.lease;
        let since = Instant::now();
        if let Some(begun) = self.store.begin_now(key, fingerprint, lease) {
            let (first, result) = decide(begun, tag, &route, &self.metrics);
            if first {
                ex.attempt = Some(Attempt { key, fingerprint, since });
            }
            return Verdict::Now(ex, result);
        }
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        Verdict::Later(Box::pin(async move {
            let begun = store.begin(key, fingerprint, lease).await;
            let (first, result) = decide(begun, tag, &route, &metrics);
            if first {
                ex.attempt = Some(Attempt { key, fingerprint, since });
            }
            (ex, result)
        }))
    }

    fn hold(&self, ex: &mut Exchange) -> Option<Box<Held>> {
        let attempt = ex.attempt.take()?;
        let route = ex.route.clone()?;
        let rule = route.idempotency.as_ref()?;
        let unsettled = Unsettled { store: self.store.clone(), attempt: Some(attempt), terms: Terms::of(rule) };
        Some(Box::new(Held { request_id: ex.request_id.clone(), client_ip: ex.client.ip, unsettled, route }))
    }

    fn respond(&self, held: Box<Held>, res: Response<Body>) -> Responded<Self::Respond> {
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        let rule = held.unsettled.terms;
        let status = res.status().as_u16();
        let settle = settlement(status, res.extensions().get::<GuardTime>().is_some());
        let declared = crate::body::declared_length(res.headers());
        if settle != Settle::Store || declared.is_some_and(|n| n > rule.max_response) {
            // Nothing to read: settled by the status alone.
            let settling = settle_by_status(held, settle, store.clone(), metrics);
            run_settlement(&*store, settling);
            return Responded::Now(res);
        }
        let (parts, mut body) = res.into_parts();
        // The store keeps its own copy of what it stores: the answer as read is passed on.
        let mut buf = BytesMut::new();
        let lease_end = held.unsettled.attempt.as_ref().map_or_else(Instant::now, |a| a.since) + rule.lease;
        // A small answer usually came with its head: then it goes back without waiting (and
        // without a boxed future).
        if let Some(read) = read_capped_ready(&mut body, &mut buf, rule.max_response) {
            let (res, settling) = keep(held, parts, status, read, store.clone(), metrics);
            run_settlement(&*store, settling);
            return Responded::Now(res);
        }
        Responded::Later(Box::pin(async move {
            let read = read_capped(body, buf, rule.max_response, Some(lease_end.into())).await;
            let (res, settling) = keep(held, parts, status, read, store.clone(), metrics);
            run_settlement(&*store, settling);
            res
        }))
    }
}

/// Runs a settlement without holding the answer back for it. The memory store settles at
/// once. Redis: the first poll, here, queues the store's command on its connection before the
/// client has the answer, so the client's next attempt through this instance is ordered after
/// it and finds the attempt settled; the reply is awaited by a task of its own. A first attempt
/// thus waits for one round trip, its reservation.
fn run_settlement(store: &dyn IdempotencyStore, settling: impl Future<Output = ()> + Send + 'static) {
    if store.immediate() {
        // Ready at once; were it not, dropping it settles the attempt as abandoned.
        let _ = std::pin::pin!(settling).now_or_never();
        return;
    }
    let mut settling = Box::pin(settling);
    if settling.as_mut().now_or_never().is_none() {
        tokio::spawn(settling);
    }
}

/// Settles an attempt whose answer is not read: released, held (`on_timeout`), or held
/// without its answer (larger than `max_response`).
async fn settle_by_status(
    mut held: Box<Held>,
    settle: Settle,
    store: Arc<dyn IdempotencyStore>,
    metrics: Arc<Metrics>,
) {
    let rule = held.unsettled.terms;
    match settle {
        Settle::Release => release(&mut held, &*store, &metrics).await,
        Settle::Timeout => timed_out(&mut held, rule, &*store, &metrics, "the backend did not answer in time").await,
        Settle::Store => not_stored(&mut held, rule, &*store, &metrics).await,
    }
}

/// The answer to pass on (unchanged, unless it broke off), and the settlement of its attempt
/// by the answer as read: stored, or held.
fn keep(
    mut held: Box<Held>,
    parts: http::response::Parts,
    status: u16,
    read: Capped,
    store: Arc<dyn IdempotencyStore>,
    metrics: Arc<Metrics>,
) -> (Response<Body>, impl Future<Output = ()> + Send + 'static) {
    let rule = held.unsettled.terms;
    let (res, kept) = match read {
        Capped::Whole(body) => {
            // The store copies what it keeps: these may be slices of the connection's buffers.
            let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
            let answer = StoredAnswer { status, content_type, body: body.clone() };
            (Response::from_parts(parts, Body::full(body)), Ok(answer))
        }
        Capped::TooLarge(head, rest) => (Response::from_parts(parts, Body::resumed(head.freeze(), rest)), Err(None)),
        Capped::Late(head, rest) => (
            Response::from_parts(parts, Body::resumed(head.freeze(), rest)),
            Err(Some("the answer was still arriving when the lease ran out")),
        ),
        Capped::Broken(_) => (
            broken_answer(Some(&held.route.name), &held.request_id, held.client_ip, &metrics),
            Err(Some("the backend broke off its answer")),
        ),
    };
    let settling = async move {
        let (held, store, metrics) = (&mut *held, &*store, &*metrics);
        match kept {
            Ok(answer) => complete(held, rule, answer, store, metrics).await,
            // Larger than `max_response`.
            Err(None) => not_stored(held, rule, store, metrics).await,
            Err(Some(why)) => timed_out(held, rule, store, metrics, why).await,
        }
    };
    (res, settling)
}

async fn release(held: &mut Held, store: &dyn IdempotencyStore, metrics: &Metrics) {
    let Some(a) = held.unsettled.take() else { return };
    match store.release(a.key, a.fingerprint).await {
        Ok(()) => metrics.idempotency(&held.route.counters, IdemOutcome::Released),
        Err(e) => store_error(held, metrics, &e),
    }
}

async fn complete(held: &mut Held, rule: Terms, answer: StoredAnswer, store: &dyn IdempotencyStore, metrics: &Metrics) {
    let Some(a) = held.unsettled.take() else { return };
    match store.complete(a.key, a.fingerprint, answer, rule.retention).await {
        Ok(()) => metrics.idempotency(&held.route.counters, IdemOutcome::Stored),
        // The memory store holds the key without the answer when its bytes are spent.
        Err(StoreError::Full) => {
            metrics.idempotency(&held.route.counters, IdemOutcome::NotStored);
            audit_hold(held, &a, "the state store has no room for the answer");
        }
        Err(e) => store_error(held, metrics, &e),
    }
}

/// An answer larger than `max_response`: held without it (later attempts get 409).
async fn not_stored(held: &mut Held, rule: Terms, store: &dyn IdempotencyStore, metrics: &Metrics) {
    let Some(a) = held.unsettled.take() else { return };
    match store.hold(a.key, a.fingerprint, rule.retention).await {
        Ok(()) => {
            metrics.idempotency(&held.route.counters, IdemOutcome::NotStored);
            audit_hold(held, &a, "the answer is larger than max_response");
        }
        Err(e) => store_error(held, metrics, &e),
    }
}

async fn timed_out(held: &mut Held, rule: Terms, store: &dyn IdempotencyStore, metrics: &Metrics, why: &str) {
    if rule.on_timeout == OnTimeout::Release {
        return release(held, store, metrics).await;
    }
    let Some(a) = held.unsettled.take() else { return };
    match store.hold(a.key, a.fingerprint, rule.retention).await {
        Ok(()) => {
            metrics.idempotency(&held.route.counters, IdemOutcome::Held);
            audit_hold(held, &a, why);
        }
        Err(e) => store_error(held, metrics, &e),
    }
}

/// The key is held as indeterminate: later attempts get 409 until `retention` ends.
fn audit_hold(held: &Held, a: &Attempt, why: &str) {
    tracing::info!(
        target: crate::telemetry::AUDIT_TARGET,
        request_id = held.request_id.to_str().unwrap_or("-"),
        route = %held.route.name,
        client_ip = %held.client_ip,
        guard = NAME,
        decision = "hold",
        reason = "idempotency_indeterminate",
        key = %format!("#{:08x}", a.key.tag()),
        detail = %format!("{why}; later attempts with this key get 409"),
    );
}

fn store_error(held: &Held, metrics: &Metrics, e: &StoreError) {
    // At debug per request: an unreachable Redis is reported by the health loop. The key runs
    // out with its lease.
    tracing::debug!(target: "payguard::idempotency", error = %e, "could not settle an attempt");
    metrics.idempotency(&held.route.counters, IdemOutcome::StoreError);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn keys_from_every_source_and_what_is_malformed() {
        let h = HeaderName::from_static("idempotency-key");
        let none = HeaderMap::new();
        let one = headers(&[("idempotency-key", "order-1")]);
        let two = headers(&[("idempotency-key", "a"), ("idempotency-key", "b")]);
        let key = |src: &KeySource, q: Option<&str>, h: &HeaderMap, b: &[u8]| {
            let doc = JsonDoc::parse(b);
            request_key(src, q, h, b, Some(&doc)).map(|k| k.map(|k| String::from_utf8(k.into_owned()).unwrap()))
        };
        let header = KeySource::Header(h);
        assert_eq!(key(&header, None, &one, b""), Ok(Some("order-1".into())));
        assert_eq!(key(&header, None, &none, b""), Ok(None));
        assert_eq!(key(&header, None, &two, b""), Err("the request carries several keys"));
        let json = KeySource::Json("/order/id".into());
        assert_eq!(key(&json, None, &none, br#"{"order":{"id":"A-1"}}"#), Ok(Some("A-1".into())));
        assert_eq!(key(&json, None, &none, br#"{"order":{"id":1234}}"#), Ok(Some("1234".into())));
        assert_eq!(key(&json, None, &none, br#"{"order":{}}"#), Ok(None));
        assert_eq!(key(&json, None, &none, b"not json"), Ok(None));
        assert!(key(&json, None, &none, br#"{"order":{"id":[1]}}"#).is_err());
        assert_eq!(key(&json, None, &none, br#"{"order":{"id":""}}"#), Err("the key is empty"));
        assert!(key(&json, None, &none, "{\"order\":{\"id\":\"caf\u{e9}\"}}".as_bytes()).is_err());
        assert!(key(&json, None, &none, br#"{"order":{"id":"a b"}}"#).is_err());
        let long = format!("{{\"order\":{{\"id\":\"{}\"}}}}", "k".repeat(256));
        assert_eq!(key(&json, None, &none, long.as_bytes()), Err("the key is longer than 255 characters"));
        let form = KeySource::Form("order".into());
        assert_eq!(key(&form, None, &none, b"a=1&order=O%2D7"), Ok(Some("O-7".into())));
        let query = KeySource::Query("o".into());
        assert_eq!(key(&query, Some("x=1&o=Q9"), &none, b""), Ok(Some("Q9".into())));
        assert_eq!(key(&query, None, &none, b""), Ok(None));
    }

    #[test]
    fn stored_keys_never_meet_across_routes_or_scopes() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let none = HeaderMap::new();
        let alice = headers(&[("authorization", "Bearer alice")]);
        let bob = headers(&[("authorization", "Bearer bob")]);
        let auth = KeyScope::Header(HeaderName::from_static("authorization"));
        let k = |route, scope: &KeyScope, ip, h: &HeaderMap| stored_key(route, scope, ip, h, b"order-1");
        assert_eq!(k("pay", &KeyScope::Ip, ip, &none), k("pay", &KeyScope::Ip, ip, &alice));
        assert_ne!(k("pay", &KeyScope::Ip, ip, &none), k("pay", &KeyScope::Ip, other, &none));
        assert_ne!(k("pay", &KeyScope::Ip, ip, &none), k("order", &KeyScope::Ip, ip, &none));
        assert_eq!(k("pay", &KeyScope::Route, ip, &none), k("pay", &KeyScope::Route, other, &bob));
        assert_ne!(k("pay", &KeyScope::Route, ip, &none), k("pay", &KeyScope::Ip, ip, &none));
        assert_eq!(k("pay", &auth, ip, &alice), k("pay", &auth, other, &alice));
        assert_ne!(k("pay", &auth, ip, &alice), k("pay", &auth, ip, &bob));
        // Without the header: scoped to the client, never to a header value.
        assert_ne!(k("pay", &auth, ip, &none), k("pay", &auth, other, &none));
        assert_ne!(k("pay", &auth, ip, &none), k("pay", &auth, ip, &alice));
        let key = stored_key("pay", &KeyScope::Ip, ip, &none, b"order-1");
        let hex = key.to_string();
        assert_eq!((hex.len(), format!("{:08x}", key.tag())), (32, hex[..8].to_string()));
    }

    #[test]
    fn fingerprints_cover_method_target_and_body() {
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        let f = fingerprint(&Method::POST, &uri("/pay?x=1"), b"{}");
        assert_eq!(f, fingerprint(&Method::POST, &uri("/pay?x=1"), b"{}"));
        assert_ne!(f, fingerprint(&Method::PUT, &uri("/pay?x=1"), b"{}"));
        assert_ne!(f, fingerprint(&Method::POST, &uri("/pay?x=2"), b"{}"));
        assert_ne!(f, fingerprint(&Method::POST, &uri("/pay?x=1"), b"{ }"));
    }

    #[test]
    fn answers_settle_as_the_contract_says() {
        assert_eq!(settlement(502, false), Settle::Release, "payguard's own 502: nothing was forwarded");
        assert_eq!(settlement(504, false), Settle::Timeout, "payguard's own 504: the backend may have acted");
        for s in [429, 503] {
            assert_eq!(settlement(s, true), Settle::Release);
        }
        assert_eq!(settlement(504, true), Settle::Timeout);
        for s in [200, 201, 400, 402, 409, 422, 500, 502] {
            assert_eq!(settlement(s, true), Settle::Store, "{s}");
        }
    }

    use http::HeaderName;
}
