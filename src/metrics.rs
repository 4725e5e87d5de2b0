//! Prometheus metrics, served by the admin listener. Label values are bounded: route names come
//! from rule files, never from requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A route name as a label; `""` when no route matched.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteLabel(pub Arc<str>);

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: RouteLabel,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: RouteLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub route: RouteLabel,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub route: RouteLabel,
    pub guard: &'static str,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub route: RouteLabel,
    /// The error code the client got (RULES.md's error table).
    pub reason: &'static str,
}

#[derive(Clone)]
pub struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        // 100µs .. ~26s
        Histogram::new(exponential_buckets(0.0001, 2.0, 19))
    }
}

/// A route label from an optional route name (`""` when no route matched).
pub fn route_label(name: Option<&str>) -> RouteLabel {
    RouteLabel(Arc::from(name.unwrap_or("")))
}

#[derive(Clone)]
pub struct SkewBuckets;

impl MetricConstructor<Histogram> for SkewBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new([0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0])
    }
}

/// The `kind`s of `payguard_upstream_errors_total`: the backend refused the connection, broke
/// it, did not answer within `response_timeout`, or broke off its answer's body.
pub const UPSTREAM_ERROR_KINDS: [&str; 4] = ["connect", "io", "timeout", "body"];

/// The outcomes of `payguard_idempotency_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdemOutcome {
    KeyMissing,
    InFlight,
    Replayed,
    Mismatch,
    Indeterminate,
    StoreError,
    Stored,
    NotStored,
    Released,
    Held,
}

impl IdemOutcome {
    /// One past the last outcome: `Held` must stay the last variant.
    const COUNT: usize = IdemOutcome::Held as usize + 1;

    pub fn as_str(self) -> &'static str {
        match self {
            IdemOutcome::KeyMissing => "key_missing",
            IdemOutcome::InFlight => "in_flight",
            IdemOutcome::Replayed => "replayed",
            IdemOutcome::Mismatch => "mismatch",
            IdemOutcome::Indeterminate => "indeterminate",
            IdemOutcome::StoreError => "store_error",
            IdemOutcome::Stored => "stored",
            IdemOutcome::NotStored => "not_stored",
            IdemOutcome::Released => "released",
            IdemOutcome::Held => "held",
        }
    }
}

/// One route's counters that a request bumps on its way, kept with the compiled route: each
/// is looked up in its family the first time it is needed, not hashed again per request.
/// A handle remembers the [`Metrics`] it came from; another one looks up its own.
pub struct RouteCounters {
    route: RouteLabel,
    idempotency: [OnceLock<(u64, Counter)>; IdemOutcome::COUNT],
    latency: OnceLock<(u64, Histogram)>,
    /// `payguard_requests_total` by status: the first statuses the route answers with (a route
    /// answers with few); any other is looked up in the family.
    statuses: [OnceLock<(u64, u16, Counter)>; STATUS_HANDLES],
}

const STATUS_HANDLES: usize = 4;

impl RouteCounters {
    pub fn new(route: Arc<str>) -> Self {
        RouteCounters {
            route: RouteLabel(route),
            idempotency: Default::default(),
            latency: OnceLock::new(),
            statuses: Default::default(),
        }
    }

    pub fn label(&self) -> &RouteLabel {
        &self.route
    }
}

impl std::fmt::Debug for RouteCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteCounters").field("route", &self.route.0).finish_non_exhaustive()
    }
}

/// Tells one [`Metrics`] from another for [`RouteCounters`].
static METRICS_IDS: AtomicU64 = AtomicU64::new(1);

/// The handle in `slot` if it is the [`Metrics`] `id`'s (`make` fills an empty slot).
fn owned<T>(slot: &OnceLock<(u64, T)>, id: u64, make: impl FnOnce() -> T) -> Option<&T> {
    let (owner, handle) = slot.get_or_init(|| (id, make()));
    (*owner == id).then_some(handle)
}

pub struct Metrics {
    registry: Registry,
    id: u64,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, LatencyBuckets>,
    pub upstream_errors: Family<KindLabels, Counter>,
    pub open_connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub connections: Counter,
    /// Connections closed right after accept because `max_connections` were open.
    pub connections_refused: Counter,
    /// Connections closed by a timeout, by kind (`handshake`, `header`, `send`, `idle`).
    pub connection_timeouts: Family<KindLabels, Counter>,
    pub malformed_requests: Family<KindLabels, Counter>,
    pub h2_abuse: Family<KindLabels, Counter>,
    pub tls_handshake_failures: Counter,
    pub cert_reloads: Family<ResultLabels, Counter>,
    pub rule_reloads: Family<ResultLabels, Counter>,
    pub decisions: Family<DecisionLabels, Counter>,
    /// Refusals payguard answered, by error code.
    pub refusals: Family<RefusalLabels, Counter>,
    pub signature_skew: Family<RouteLabels, Histogram, SkewBuckets>,
    pub request_bytes: Counter<u64, AtomicU64>,
    pub response_bytes: Counter<u64, AtomicU64>,
    /// 1 while the state store answers (always 1 for the memory backend), else 0.
    pub state_store_up: Gauge,
    /// When the served certificate expires (its notAfter), in Unix seconds.
    pub cert_expiry: Gauge,
    /// `[[route.failure_limit]]`: failed attempts counted, bans started, bans in force.
    pub failures: Family<RouteLabels, Counter>,
    pub bans: Family<RouteLabels, Counter>,
    pub bans_active: Gauge,
    pub idempotency: Family<OutcomeLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("payguard"),
            id: METRICS_IDS.fetch_add(1, Ordering::Relaxed),
            requests: Family::default(),
            latency: Family::new_with_constructor(LatencyBuckets),
            upstream_errors: Family::default(),
            open_connections: Gauge::default(),
            connections: Counter::default(),
            connections_refused: Counter::default(),
            connection_timeouts: Family::default(),
            malformed_requests: Family::default(),
            h2_abuse: Family::default(),
            tls_handshake_failures: Counter::default(),
            cert_reloads: Family::default(),
            rule_reloads: Family::default(),
            decisions: Family::default(),
            refusals: Family::default(),
            signature_skew: Family::new_with_constructor(SkewBuckets),
            request_bytes: Counter::default(),
            response_bytes: Counter::default(),
            state_store_up: Gauge::default(),
            cert_expiry: Gauge::default(),
            failures: Family::default(),
            bans: Family::default(),
            bans_active: Gauge::default(),
            idempotency: Family::default(),
        };
        // The series with a known, small set of labels exist from the start at 0: an alert on
        // their increase sees the first error, and a dashboard shows 0 rather than no data.
        for result in ["ok", "error"] {
            drop(m.cert_reloads.get_or_create(&ResultLabels { result }));
            drop(m.rule_reloads.get_or_create(&ResultLabels { result }));
        }
        for kind in UPSTREAM_ERROR_KINDS {
            drop(m.upstream_errors.get_or_create(&KindLabels { kind }));
        }
        let r = &mut m.registry;
        r.register("requests", "Requests answered, by route and status", m.requests.clone());
        r.register("request_duration_seconds", "Time from request head to end of response body", m.latency.clone());
        r.register("upstream_errors", "Failed forwards to the backend, by kind", m.upstream_errors.clone());
        r.register("open_connections", "Client connections currently open", m.open_connections.clone());
        r.register("connections", "Client connections accepted", m.connections.clone());
        r.register(
            "connections_refused",
            "Connections closed at once because max_connections were open",
            m.connections_refused.clone(),
        );
        r.register(
            "connection_timeouts",
            "Client connections closed by a timeout, by kind (handshake, header, send, idle)",
            m.connection_timeouts.clone(),
        );
        r.register(
            "h2_abuse",
            "HTTP/2 connections closed for abuse, by kind (resets: cancelled requests past max_h2_resets; control_frames: SETTINGS/PING past max_h2_control_frames)",
            m.h2_abuse.clone(),
        );
        r.register(
            "malformed_requests",
            "Requests the HTTP layer refused before any rule ran, by kind (parse: 400, too_large: 431)",
            m.malformed_requests.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            m.tls_handshake_failures.clone(),
        );
        r.register("certificate_reloads", "Certificate reload attempts, by result", m.cert_reloads.clone());
        r.register("rule_reloads", "Rule reload attempts, by result", m.rule_reloads.clone());
        r.register("decisions", "Guard decisions, by route, guard and decision", m.decisions.clone());
        r.register("refusals", "Refusals payguard answered, by route and error code", m.refusals.clone());
        r.register("failures", "Failed attempts counted by failure limits, by route", m.failures.clone());
        r.register("bans", "Bans started by failure limits, by route", m.bans.clone());
        r.register("bans_active", "Failure-limit bans in force", m.bans_active.clone());
        r.register(
            "idempotency",
            "Idempotency decisions, by route and outcome (replayed, in_flight, mismatch, indeterminate, key_missing, stored, released, held, not_stored, store_error)",
            m.idempotency.clone(),
        );
        r.register(
            "signature_clock_skew_seconds",
            "Absolute clock skew of verified signatures",
            m.signature_skew.clone(),
        );
        r.register("request_body_bytes", "Request body bytes forwarded", m.request_bytes.clone());
        r.register("response_body_bytes", "Response body bytes sent to clients", m.response_bytes.clone());
        r.register(
            "state_store_up",
            "1 while the state store (replay keys, rate limits) answers, else 0",
            m.state_store_up.clone(),
        );
        r.register(
            "certificate_expiry_timestamp_seconds",
            "When the served TLS certificate expires (notAfter), in Unix seconds",
            m.cert_expiry.clone(),
        );
        r.register_collector(Box::new(crate::telemetry::LogCollector));
        m
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// A request answered. `counters`: its route's handles, when it matched one (else the
    /// families are looked up by `route`).
    pub fn request_done(
        &self,
        route: &RouteLabel,
        counters: Option<&RouteCounters>,
        status: u16,
        elapsed: Duration,
        bytes: u64,
    ) {
        self.response_bytes.inc_by(bytes);
        let requests = || self.requests.get_or_create(&RequestLabels { route: route.clone(), status }).clone();
        let latency = || self.latency.get_or_create(&RouteLabels { route: route.clone() }).clone();
        let Some(c) = counters else {
            requests().inc();
            latency().observe(elapsed.as_secs_f64());
            return;
        };
        match owned(&c.latency, self.id, latency) {
            Some(h) => h.observe(elapsed.as_secs_f64()),
            None => latency().observe(elapsed.as_secs_f64()),
        }
        for slot in &c.statuses {
            let (owner, s, counter) = slot.get_or_init(|| (self.id, status, requests()));
            if *owner == self.id && *s == status {
                counter.inc();
                return;
            }
        }
        requests().inc();
    }

    /// `kind`: one of [`UPSTREAM_ERROR_KINDS`].
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// A request the HTTP layer refused before any rule ran (it answered 400/431 itself).
    pub fn malformed_request(&self, kind: &'static str) {
        self.malformed_requests.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn h2_abuse(&self, kind: &'static str) {
        self.h2_abuse.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn connection_timeout(&self, kind: &'static str) {
        self.connection_timeouts.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn cert_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.cert_reloads.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn rule_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.rule_reloads.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn signature_skew(&self, route: &RouteLabel, skew_secs: i64) {
        self.signature_skew
            .get_or_create(&RouteLabels { route: route.clone() })
            .observe(skew_secs.unsigned_abs() as f64);
    }

    /// A failed attempt counted by a failure limit; `banned`: it started a ban.
    pub fn failure(&self, route: &RouteLabel, banned: bool) {
        let labels = RouteLabels { route: route.clone() };
        self.failures.get_or_create(&labels).inc();
        if banned {
            self.bans.get_or_create(&labels).inc();
        }
    }

    pub fn idempotency(&self, route: &RouteCounters, outcome: IdemOutcome) {
        let counter = || {
            let labels = OutcomeLabels { route: route.route.clone(), outcome: outcome.as_str() };
            self.idempotency.get_or_create(&labels).clone()
        };
        match owned(&route.idempotency[outcome as usize], self.id, counter) {
            Some(c) => c.inc(),
            None => counter().inc(),
        };
    }

    pub fn decision(&self, route: &RouteLabel, guard: &'static str, decision: &'static str) {
        self.decisions.get_or_create(&DecisionLabels { route: route.clone(), guard, decision }).inc();
    }

    pub fn refusal(&self, route: &RouteLabel, reason: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { route: route.clone(), reason }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_counters_count_into_the_metrics_they_are_bumped_with() {
        let (a, b) = (Metrics::new(), Metrics::new());
        let pay = RouteCounters::new(Arc::from("pay"));
        for _ in 0..3 {
            a.idempotency(&pay, IdemOutcome::Stored);
        }
        // The handle now holds `a`'s counter: `b` still counts into its own.
        b.idempotency(&pay, IdemOutcome::Stored);
        a.idempotency(&pay, IdemOutcome::Replayed);
        let line =
            |outcome: &str, n: u64| format!("payguard_idempotency_total{{route=\"pay\",outcome=\"{outcome}\"}} {n}");
        let (a, b) = (a.encode(), b.encode());
        assert!(a.contains(&line("stored", 3)) && a.contains(&line("replayed", 1)), "{a}");
        assert!(b.contains(&line("stored", 1)) && !b.contains("outcome=\"replayed\""), "{b}");
    }

    #[test]
    fn requests_count_the_same_with_or_without_the_routes_handles() {
        let (a, b) = (Metrics::new(), Metrics::new());
        let pay = RouteCounters::new(Arc::from("pay"));
        let ms = Duration::from_millis(1);
        // More statuses than the route keeps handles for: the rest go through the family.
        for status in [200, 200, 402, 500, 503, 504, 504, 200] {
            a.request_done(pay.label(), Some(&pay), status, ms, 10);
        }
        a.request_done(pay.label(), None, 200, ms, 10);
        b.request_done(pay.label(), Some(&pay), 200, ms, 10);
        let line = |status: u16, n: u64| format!("payguard_requests_total{{route=\"pay\",status=\"{status}\"}} {n}");
        let (a, b) = (a.encode(), b.encode());
        for (status, n) in [(200, 4), (402, 1), (500, 1), (503, 1), (504, 2)] {
            assert!(a.contains(&line(status, n)), "{status}: {a}");
        }
        assert!(a.contains("payguard_request_duration_seconds_count{route=\"pay\"} 9"), "{a}");
        assert!(a.contains("payguard_response_body_bytes_total 90"), "{a}");
        assert!(
            b.contains(&line(200, 1)) && b.contains("payguard_request_duration_seconds_count{route=\"pay\"} 1"),
            "{b}"
        );
    }
}
