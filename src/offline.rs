//! Deciding requests without a client: `payguard explain` and `payguard test` run the real
//! stack (every layer of [`crate::stack::build`], the real proxy, fresh in-memory state) on
//! requests built in memory. A stand-in backend on loopback answers in place of the shop's, so
//! nothing leaves the machine and the response phase (masking, failure counting, idempotency)
//! runs as it does in production.
//!
//! What each guard decided is read from the audit lines the request produced (captured here,
//! not written anywhere) and from the stack's order ([`crate::stack::GUARDS`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};

use crate::body::Body;
use crate::config::Config;
use crate::context::{ConnInfo, LoggedBody, MatchedRoute, X_REQUEST_ID};
use crate::diag::Diagnostic;
use crate::metrics::Metrics;
use crate::rules::active::{ActiveRules, SharedRules};
use crate::rules::Mode;

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("invalid rules:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Rules(Vec<Diagnostic>),
    #[error("cannot start the stand-in backend on loopback: {0}")]
    StandIn(std::io::Error),
    #[error("invalid request: {0}")]
    Request(String),
}

/// One request to decide.
#[derive(Debug, Clone)]
pub struct Probe {
    pub method: Method,
    /// `https://host/path?query` or `/path?query` (then the host is `localhost` unless a
    /// `Host` header is given).
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// The client's address (the TCP peer).
    pub from: IpAddr,
    /// What the stand-in backend answers if the request reaches it.
    pub backend: Answer,
}

/// The stand-in backend's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    pub content_type: HeaderValue,
}

impl Default for Answer {
    /// 200 `{}`.
    fn default() -> Self {
        Answer {
            status: StatusCode::OK,
            body: Bytes::from_static(b"{}"),
            content_type: HeaderValue::from_static("application/json"),
        }
    }
}

/// What payguard did with a [`Probe`].
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The matched route's name; `None`: no route matched.
    pub route: Option<String>,
    /// Where the route is defined (`file:line:col`).
    pub defined_at: Option<String>,
    /// `enforce` or `monitor` (of the matched route).
    pub mode: Option<&'static str>,
    /// The status the client gets.
    pub status: u16,
    /// The error code of payguard's refusal; `None` when the answer is the backend's (or a
    /// stored idempotent replay of it).
    pub error: Option<String>,
    /// Whether the request reached the (stand-in) backend.
    pub forwarded: bool,
    /// Every guard in stack order, then what the response phase did.
    pub guards: Vec<GuardStep>,
    /// The request as the backend received it, when forwarded.
    pub backend_request: Option<Seen>,
    /// The headers of the answer the client gets.
    pub response_headers: BTreeMap<String, String>,
    /// The answer's body (lossy UTF-8).
    pub response_body: String,
    /// Shared state (replay keys, rate limits, failure counts and bans, idempotency keys)
    /// starts empty for every [`Session`]: always `"empty at start"`.
    pub state: &'static str,
}

impl Decision {
    /// The headers payguard added to (or set on) the request it forwarded: those the backend
    /// received that the client did not send with that value.
    pub fn added_headers(&self, sent: &[(HeaderName, HeaderValue)]) -> BTreeMap<String, String> {
        let Some(seen) = &self.backend_request else { return BTreeMap::new() };
        seen.headers
            .iter()
            .filter(|(name, value)| {
                !sent.iter().any(|(n, v)| n.as_str() == name.as_str() && v.as_bytes() == value.as_bytes())
            })
            .filter(|(name, _)| !matches!(name.as_str(), "host" | "content-length"))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    /// The report `payguard explain` prints.
    pub fn render(&self, sent: &[(HeaderName, HeaderValue)]) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        match (&self.route, &self.defined_at, self.mode) {
            (Some(name), Some(at), Some(mode)) => {
                let _ = writeln!(out, "route    {name} ({at}, {mode})");
            }
            _ => {
                let _ = writeln!(out, "route    none matched: [defaults] apply");
            }
        }
        let _ = writeln!(out, "guards");
        for s in &self.guards {
            let phase = if s.phase == "response" { " (on the answer)" } else { "" };
            let _ = writeln!(out, "  {:<14} {:<12} {}{phase}", s.guard, s.decision, s.reason);
        }
        match &self.error {
            Some(code) => {
                let _ = writeln!(out, "answer   {} {code} from payguard", self.status);
            }
            None if self.forwarded => {
                let _ = writeln!(out, "answer   {} from the backend (a stand-in answering 200 {{}})", self.status);
            }
            None => {
                let _ = writeln!(out, "answer   {}", self.status);
            }
        }
        if self.forwarded {
            let _ = writeln!(out, "forwarded, with these headers set by payguard:");
            for (name, value) in self.added_headers(sent) {
                let _ = writeln!(out, "  {name}: {value}");
            }
        } else {
            let _ = writeln!(out, "not forwarded");
        }
        let _ =
            writeln!(out, "state    replay keys, rate limits, failure counts and idempotency keys were {}", self.state);
        out
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GuardStep {
    pub guard: String,
    /// `pass`, `block`, `would_block`, `not_reached`, or a response-phase decision (`mask`,
    /// `count`, …) as the audit line calls it.
    pub decision: String,
    pub reason: String,
    /// `request` or `response`.
    pub phase: &'static str,
}

/// A request as the stand-in backend received it.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
}

/// One audit line, as captured.
#[derive(Debug, Clone, Default)]
struct AuditEvent {
    request_id: String,
    guard: String,
    decision: String,
    reason: String,
    detail: String,
    key_id: String,
}

/// Audit lines of every request decided here, in order.
#[derive(Clone, Default)]
struct AuditLog(Arc<Mutex<Vec<AuditEvent>>>);

impl AuditLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<AuditEvent>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Fields<'a>(&'a mut AuditEvent);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let slot = match field.name() {
            "request_id" => &mut self.0.request_id,
            "guard" => &mut self.0.guard,
            "decision" => &mut self.0.decision,
            "reason" => &mut self.0.reason,
            "detail" => &mut self.0.detail,
            "key_id" => &mut self.0.key_id,
            _ => return,
        };
        *slot = value.to_string();
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "detail" && self.0.detail.is_empty() {
            self.0.detail = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AuditLog {
    fn on_event(&self, event: &tracing::Event<'_>, _cx: LayerContext<'_, S>) {
        if event.metadata().target() == crate::telemetry::AUDIT_TARGET {
            let mut e = AuditEvent::default();
            event.record(&mut Fields(&mut e));
            self.lock().push(e);
        }
    }
}

/// The stand-in backend: answers what it is told to and remembers what it received.
#[derive(Clone)]
struct StandIn {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    seen: Arc<Mutex<Vec<(Seen, usize)>>>,
}

impl StandIn {
    async fn start(audit: AuditLog) -> Result<StandIn, OfflineError> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await.map_err(OfflineError::StandIn)?;
        let addr = listener.local_addr().map_err(OfflineError::StandIn)?;
        let this = StandIn { addr, answer: Arc::default(), seen: Arc::default() };
        let served = this.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (this, audit) = (served.clone(), audit.clone());
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (this, audit) = (this.clone(), audit.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        // Read to the end, as a backend would, before answering.
                        let _ = body.collect().await;
                        let seen = Seen {
                            method: parts.method.to_string(),
                            path: parts.uri.path_and_query().map_or_else(|| "/".into(), ToString::to_string),
                            headers: header_strings(&parts.headers),
                        };
                        // The audit lines so far belong to the request phase.
                        let mark = audit.lock().len();
                        this.seen.lock().unwrap_or_else(PoisonError::into_inner).push((seen, mark));
                        let answer = this.answer.lock().unwrap_or_else(PoisonError::into_inner).clone();
                        let mut res = Response::new(http_body_util::Full::new(answer.body));
                        *res.status_mut() = answer.status;
                        res.headers_mut().insert(http::header::CONTENT_TYPE, answer.content_type);
                        Ok::<_, Infallible>(res)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        Ok(this)
    }
}

fn header_strings(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_string())
            .and_modify(|e: &mut String| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

type Svc = BoxCloneSyncService<Request<Body>, Response<LoggedBody>, Infallible>;

/// A configuration's rules, ready to decide requests. Must be used inside a Tokio runtime on
/// one thread (a current-thread runtime): the audit lines are captured on that thread.
pub struct Offline {
    config: Config,
    rules: SharedRules,
    stand_in: StandIn,
    audit: AuditLog,
    _capture: tracing::subscriber::DefaultGuard,
}

/// One fresh state: replay keys, rate limits, failure counts and idempotency keys start empty.
pub struct Session<'a> {
    offline: &'a Offline,
    service: Svc,
}

impl Offline {
    /// Loads the rules `config` points at (secrets resolved as when serving) and starts the
    /// stand-in backend. The state backend is always memory, whatever `[state]` says.
    pub async fn new(mut config: Config) -> Result<Offline, OfflineError> {
        let rule_set =
            crate::rules::load_dir(&config.rules.dir, &crate::rules::Env::of(&config)).map_err(OfflineError::Rules)?;
        let rules: SharedRules = Arc::new(arc_swap::ArcSwap::from_pointee(ActiveRules::new(rule_set, 1)));
        let audit = AuditLog::default();
        let capture = tracing::subscriber::set_default(tracing_subscriber::registry().with(audit.clone()));
        let stand_in = StandIn::start(audit.clone()).await?;
        // The backend's base path stays (the proxy prefixes it); only where it is changes.
        let base = config.upstream.url.path_and_query().map_or("/", http::uri::PathAndQuery::as_str);
        config.upstream.url = Uri::try_from(format!("http://{}{base}", stand_in.addr))
            .map_err(|e| OfflineError::Request(e.to_string()))?;
        Ok(Offline { config, rules, stand_in, audit, _capture: capture })
    }

    /// A fresh state to decide requests in, in order.
    pub fn session(&self) -> Session<'_> {
        let metrics = Arc::new(Metrics::new());
        let stores = crate::state::Stores::memory(&self.config.state);
        let service = crate::stack::from_config::<Body>(&self.config, self.rules.clone(), metrics, stores);
        Session { offline: self, service: BoxCloneSyncService::new(service) }
    }

    /// The route `probe` matches (by host, path and method), as the router would pick it.
    pub fn route_for(&self, probe: &Probe) -> Option<Arc<crate::rules::Route>> {
        let (target, host) = target_of(&probe.url).ok()?;
        let header = probe.headers.iter().find(|(n, _)| n == http::header::HOST).and_then(|(_, v)| v.to_str().ok());
        // The router normalises the host (case, port) itself.
        let host = host.as_deref().or(header).unwrap_or("localhost");
        match self.rules.load().rules.route(Some(host), target.path(), &probe.method) {
            crate::rules::RouteLookup::Matched(r) => Some(r.clone()),
            _ => None,
        }
    }
}

/// Splits `url` into the request target and the host it names, if any.
fn target_of(url: &str) -> Result<(Uri, Option<String>), OfflineError> {
    let uri = Uri::try_from(url).map_err(|e| OfflineError::Request(format!("URL {url:?}: {e}")))?;
    let host = uri.authority().map(|a| a.as_str().to_string());
    let target = uri.path_and_query().map_or("/", http::uri::PathAndQuery::as_str);
    let target = Uri::try_from(target).map_err(|e| OfflineError::Request(format!("URL {url:?}: {e}")))?;
    Ok((target, host))
}

impl Session<'_> {
    /// Decides one request, and waits for the answer to end (so the response phase has run).
    pub async fn decide(&mut self, probe: &Probe) -> Result<Decision, OfflineError> {
        let offline = self.offline;
        *offline.stand_in.answer.lock().unwrap_or_else(PoisonError::into_inner) = probe.backend.clone();
        let seen_before = offline.stand_in.seen.lock().unwrap_or_else(PoisonError::into_inner).len();
        let audit_before = offline.audit.lock().len();

        let (target, host) = target_of(&probe.url)?;
        let mut req = Request::new(Body::full(probe.body.clone()));
        *req.method_mut() = probe.method.clone();
        *req.uri_mut() = target;
        let headers = req.headers_mut();
        for (name, value) in &probe.headers {
            headers.append(name.clone(), value.clone());
        }
        if !headers.contains_key(http::header::HOST) {
            let host = HeaderValue::try_from(host.unwrap_or_else(|| "localhost".into()))
                .map_err(|e| OfflineError::Request(e.to_string()))?;
            headers.insert(http::header::HOST, host);
        }
        if !probe.body.is_empty() && !headers.contains_key(http::header::CONTENT_LENGTH) {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(probe.body.len()));
        }
        let peer = SocketAddr::new(probe.from, 50_000);
        req.extensions_mut().insert(ConnInfo {
            peer,
            peer_header: crate::client_ip::ip_header(probe.from),
            body_read_timeout: None,
        });

        let res = match self.service.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let request_id = parts.headers.get(X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();

        let seen = offline.stand_in.seen.lock().unwrap_or_else(PoisonError::into_inner).get(seen_before).cloned();
        let forwarded = seen.is_some();
        let events: Vec<AuditEvent> =
            offline.audit.lock()[audit_before..].iter().filter(|e| e.request_id == request_id).cloned().collect();
        // Lines logged before the stand-in saw the request belong to the request phase.
        let split = seen.as_ref().map_or(events.len(), |(_, mark)| {
            offline.audit.lock()[audit_before..*mark].iter().filter(|e| e.request_id == request_id).count()
        });

        let route_name = parts.extensions.get::<MatchedRoute>().map(|m| m.label().0.to_string());
        let active = offline.rules.load();
        let route = route_name.as_deref().and_then(|n| active.rules.routes().iter().find(|r| &*r.name == n));
        let error = refusal_code(&parts.headers, &body, &request_id);
        let guards = steps(&events[..split], &events[split..], forwarded, route.map(|r| &**r), active.rules.defaults());
        Ok(Decision {
            defined_at: route.map(|r| r.defined_at.to_string()),
            mode: route.map(|r| match r.mode {
                Mode::Enforce => "enforce",
                Mode::Monitor => "monitor",
            }),
            route: route_name,
            status: parts.status.as_u16(),
            error,
            forwarded,
            guards,
            backend_request: seen.map(|(s, _)| s),
            response_headers: header_strings(&parts.headers),
            response_body: String::from_utf8_lossy(&body).into_owned(),
            state: "empty at start",
        })
    }
}

/// The error code of an answer payguard made itself: a small JSON body carrying this request's
/// id (a backend's answer never does).
fn refusal_code(headers: &HeaderMap, body: &[u8], request_id: &str) -> Option<String> {
    let json = headers.get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == b"application/json");
    if !json || body.len() > 4096 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    (v.get("request_id")?.as_str()? == request_id).then_some(())?;
    v.get("error")?.as_str().map(str::to_string)
}

/// Whether a guard has anything to do on `route`, or under `defaults` for a request that
/// matched none (for the reason of a pass).
fn configured(guard: &str, route: Option<&crate::rules::Route>, defaults: &crate::rules::Defaults) -> bool {
    let Some(r) = route else {
        return match guard {
            "ip" => defaults.ip_allow.is_some() || !defaults.ip_deny.is_empty(),
            "rate_limit" => defaults.rate_limit.is_some(),
            "card_data" => defaults.card_data.scans_requests(),
            "card_answer" => defaults.card_data.response != crate::rules::card_data::OnResponse::Allow,
            "validate" | "body" => true,
            _ => false,
        };
    };
    match guard {
        "ip" => r.ip_allow.is_some() || !r.ip_deny.is_empty(),
        "rate_limit" => r.rate_limit.is_some(),
        "origin" => r.origin.is_some(),
        "failure_limit" => !r.failure_limits.is_empty(),
        "signature" | "replay" => r.signature.is_some(),
        "validate_body" => r.validate.is_some(),
        "card_data" => r.card_data.scans_requests(),
        "injection" => r.injection.is_some(),
        "idempotency" => r.idempotency.is_some(),
        "card_answer" => r.card_data.response != crate::rules::card_data::OnResponse::Allow,
        _ => true,
    }
}

fn reason_of(e: &AuditEvent) -> String {
    let mut reason = if e.detail.is_empty() { e.reason.clone() } else { format!("{}: {}", e.reason, e.detail) };
    if !e.key_id.is_empty() {
        reason.push_str(&format!(" (key {})", e.key_id));
    }
    reason
}

/// Every guard of the stack in order with its decision, then the response phase's lines.
fn steps(
    request: &[AuditEvent],
    response: &[AuditEvent],
    forwarded: bool,
    route: Option<&crate::rules::Route>,
    defaults: &crate::rules::Defaults,
) -> Vec<GuardStep> {
    let step = |guard: &str, decision: &str, reason: String, phase| GuardStep {
        guard: guard.to_string(),
        decision: decision.to_string(),
        reason,
        phase,
    };
    let mut out = Vec::new();
    // The router's own refusals (no route, method, a malformed head) stop everything.
    let routed = match request.iter().find(|e| e.guard == "route") {
        Some(e) => {
            out.push(step("route", &e.decision, reason_of(e), "request"));
            e.decision == "would_block"
        }
        None => {
            let why = route
                .map_or_else(|| "no route matched; [defaults] apply".to_string(), |r| format!("matched {}", r.name));
            out.push(step("route", "pass", why, "request"));
            true
        }
    };
    let mut stopped = !routed;
    for guard in crate::stack::GUARDS {
        if stopped {
            out.push(step(guard, "not_reached", String::new(), "request"));
            continue;
        }
        let mine: Vec<&AuditEvent> = request.iter().filter(|e| e.guard == guard).collect();
        if let Some(e) = mine.iter().find(|e| e.decision == "block" || e.decision == "replay") {
            out.push(step(guard, &e.decision, reason_of(e), "request"));
            stopped = !forwarded;
        } else if let Some(e) = mine.iter().find(|e| e.decision == "would_block") {
            out.push(step(guard, "would_block", reason_of(e), "request"));
        } else if let Some(e) = mine.first() {
            out.push(step(guard, "pass", reason_of(e), "request"));
        } else {
            let why = if configured(guard, route, defaults) { "passed" } else { "nothing to check on this route" };
            out.push(step(guard, "pass", why.to_string(), "request"));
        }
    }
    for e in response {
        out.push(step(&e.guard, &e.decision, reason_of(e), "response"));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ev(guard: &str, decision: &str, reason: &str) -> AuditEvent {
        AuditEvent { guard: guard.into(), decision: decision.into(), reason: reason.into(), ..Default::default() }
    }

    #[test]
    fn a_block_stops_the_stack_and_later_guards_are_not_reached() {
        let s = steps(
            &[ev("origin", "would_block", "cross_origin"), ev("injection", "block", "injection_detected")],
            &[],
            false,
            None,
            &crate::rules::Defaults::default(),
        );
        let get = |g: &str| s.iter().find(|s| s.guard == g).unwrap().decision.clone();
        assert_eq!(get("route"), "pass");
        assert_eq!(get("ip"), "pass");
        assert_eq!(get("origin"), "would_block");
        assert_eq!(get("injection"), "block");
        assert_eq!(get("idempotency"), "not_reached");
        assert_eq!(s.len(), 1 + crate::stack::GUARDS.len());
    }

    #[test]
    fn a_router_refusal_reaches_no_guard() {
        let s = steps(&[ev("route", "block", "no_route")], &[], false, None, &crate::rules::Defaults::default());
        assert_eq!(s[0].decision, "block");
        assert!(s[1..].iter().all(|s| s.decision == "not_reached"));
    }

    /// The real stack, offline: a card number in the answer to a request that matched no
    /// route is masked under `[defaults] card_data`, and the response phase shows it.
    #[tokio::test(flavor = "current_thread")]
    async fn an_unrouted_answer_is_masked_under_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("00.toml"),
            "[defaults]\ncard_data = { request = \"reject\", response = \"mask\" }\n",
        )
        .unwrap();
        let config = Config::parse(&format!("[rules]\ndir = {:?}\n", dir.path().display().to_string()), None).unwrap();
        let offline = Offline::new(config).await.unwrap();
        let mut session = offline.session();
        let probe = Probe {
            method: Method::GET,
            url: "/anything".into(),
            headers: Vec::new(),
            body: Bytes::new(),
            from: IpAddr::from([127, 0, 0, 1]),
            backend: Answer { body: Bytes::from_static(br#"{"card":"4111111111111111"}"#), ..Answer::default() },
        };
        let d = session.decide(&probe).await.unwrap();
        assert_eq!((d.status, d.forwarded, d.route.as_deref()), (200, true, None));
        assert_eq!(d.response_body, r#"{"card":"411111******1111"}"#);
        let mask = d.guards.iter().find(|g| g.phase == "response").expect("a response-phase step");
        assert_eq!((mask.guard.as_str(), mask.decision.as_str()), ("card_data", "mask"));
    }

    #[test]
    fn only_payguards_own_answer_has_an_error_code() {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = br#"{"error":"replay","message":"x","rule":"r","request_id":"abc"}"#;
        assert_eq!(refusal_code(&h, body, "abc").as_deref(), Some("replay"));
        assert_eq!(refusal_code(&h, body, "other"), None);
        assert_eq!(refusal_code(&h, b"{}", "abc"), None);
    }
}
