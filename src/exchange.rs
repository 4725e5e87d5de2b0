//! The one per-request value the guards and the proxy work on. The router makes it: from there
//! inward every layer takes an [`Exchange`], so the request id, the client, the rule set and the
//! matched route are always there (no layer has a fallback for a missing one), and what a guard
//! learns (a verified signature, a replay reservation) is a typed field, not an extension.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request};

use crate::body::Body;
use crate::client_ip::ClientIp;
use crate::rules::active::ActiveRules;
use crate::rules::{Mode, Route};
use crate::signature::{ReplayId, ReplayPolicy};

/// What the replay guard must reserve for this request: all of `keys`, or none.
#[derive(Debug, Clone)]
pub struct ReplayClaim {
    /// One per signed item, each scoped to route and provider: two routes never share a
    /// reservation.
    pub keys: Vec<String>,
    pub policy: ReplayPolicy,
}

impl ReplayClaim {
    /// The one place a store key is made from a verified callback: the replay ids come from
    /// signed material only (see [`ReplayId`]).
    pub fn new(route: &str, provider: &str, ids: &[ReplayId], policy: ReplayPolicy) -> Self {
        let keys = ids.iter().map(|id| format!("{route}|{provider}|{}", id.to_hex())).collect();
        ReplayClaim { keys, policy }
    }
}

/// What one guard decided about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Refused with this error code (RULES.md error table).
    Block(&'static str),
    /// Would have refused with this code; the route is in monitor mode.
    WouldBlock(&'static str),
}

/// One decision, in the order the guards ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The guard's name, as in metrics and audit lines (`ip`, `rate_limit`, …).
    pub guard: &'static str,
    pub outcome: Outcome,
    /// When it was decided, counted from the request's first layer: a guard that waited (a
    /// body, a shared store) shows as a jump from the step before. A guard that decided at
    /// once, without waiting, takes well under a microsecond and is stamped with the step
    /// before it (no clock read on the hot path).
    pub at: Duration,
}

/// How many steps a request's trail holds without growing: one per guard of the chain
/// (`guard::chain::GUARDS`, thirteen), and the route's own refusal in monitor mode. A trail
/// that grows costs a second allocation and a copy on every request.
const TRAIL_CAPACITY: usize = 14;

/// The guards a trail passed, in order, for an audit line: `ip,rate_limit`.
pub fn passed(trail: &[Step]) -> String {
    let mut out = String::new();
    for step in trail.iter().filter(|s| s.outcome == Outcome::Pass) {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(step.guard);
    }
    out
}

/// One `[[route.failure_limit]]` key of this request: the rule (by position in the route) and
/// the key's digest in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountedKey {
    pub rule: usize,
    pub key: u128,
}

/// A verified signature: which provider (`x-payguard-verified`) and which configured key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBy {
    pub provider: &'static str,
    /// As in the audit line: `secrets[0]`, a serial, a certificate URL. Never key material.
    pub key_id: String,
}

/// The request's value, boxed: it travels through every layer by value, and a pointer moves
/// where the whole value would be copied at each of them. Its fields are [`Parts`]'.
pub struct Exchange(Box<Parts>);

impl std::ops::Deref for Exchange {
    type Target = Parts;
    fn deref(&self) -> &Parts {
        &self.0
    }
}

impl std::ops::DerefMut for Exchange {
    fn deref_mut(&mut self) -> &mut Parts {
        &mut self.0
    }
}

impl Exchange {
    pub fn new(parts: Parts) -> Exchange {
        Exchange(Box::new(parts))
    }

    pub fn into_parts(self) -> Parts {
        *self.0
    }
}

/// What an [`Exchange`] holds.
pub struct Parts {
    pub req: Request<Body>,
    /// When the first layer saw the request head.
    pub started: Instant,
    /// Every guard's decision so far, in order.
    pub trail: Vec<Step>,
    /// Also in the request's `x-request-id` header and the response's.
    pub request_id: HeaderValue,
    pub client: ClientIp,
    pub peer: SocketAddr,
    /// The rule set this request is judged by, start to end (one load per request).
    pub active: Arc<ActiveRules>,
    /// `None`: no route matched (the `[defaults]` apply).
    pub route: Option<Arc<Route>>,
    /// Set by the signature guard: who signed the request.
    pub verified: Option<VerifiedBy>,
    /// Set by the signature guard: the replay keys to reserve.
    pub replay: Option<ReplayClaim>,
    /// Set by the replay guard: the keys it reserved, settled by the answer.
    pub reserved: Option<ReplayClaim>,
    /// Set by the failure-limit guard: whose failures the answer may count.
    pub failure_keys: Vec<CountedKey>,
    /// Set by the idempotency guard when this request is the first attempt with its key: the
    /// answer settles it.
    pub attempt: Option<Attempt>,
    /// The JSON body as the backend will read it (decoded), parsed by the first body guard that
    /// needs it and kept for the others: see [`crate::guard::values::json_doc`].
    pub json: Option<crate::guard::json_doc::JsonDoc>,
    /// What the request's headers say of its body (kind, content coding), read by the first
    /// body guard that asks: see [`crate::guard::values::content`].
    pub content: Option<crate::guard::values::Content>,
}

/// An attempt holding an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The key as stored: a digest of route, scope and key, never the key itself.
    pub key: crate::state::IdemKey,
    /// SHA-256 over method, path and query, and body.
    pub fingerprint: [u8; 32],
    /// When the key was taken: the lease runs from here.
    pub since: Instant,
}

impl Parts {
    /// Records a guard's decision, stamped with the time since the request started.
    pub fn record(&mut self, guard: &'static str, outcome: Outcome) {
        let at = self.started.elapsed();
        self.push(Step { guard, outcome, at });
    }

    /// Records a guard that passed without waiting: stamped like the step before it.
    pub fn record_pass_now(&mut self, guard: &'static str) {
        let at = self.trail.last().map_or(Duration::ZERO, |s| s.at);
        self.push(Step { guard, outcome: Outcome::Pass, at });
    }

    fn push(&mut self, step: Step) {
        if self.trail.capacity() == 0 {
            self.trail.reserve_exact(TRAIL_CAPACITY);
        }
        self.trail.push(step);
    }

    /// The guards passed so far, for an audit line.
    pub fn passed(&self) -> String {
        passed(&self.trail)
    }

    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }

    pub fn route_name(&self) -> Option<&Arc<str>> {
        self.route.as_ref().map(|r| &r.name)
    }

    /// The route's mode; requests that match no route are enforced.
    pub fn mode(&self) -> Mode {
        self.route.as_ref().map_or(Mode::Enforce, |r| r.mode)
    }

    /// Card-number scanning: the route's, or the defaults' for a request no route matched.
    pub fn card_data(&self) -> crate::rules::card_data::CardData {
        self.route.as_ref().map_or(self.active.rules.defaults().card_data, |r| r.card_data)
    }

    /// The body cap: the route's, or the defaults'.
    pub fn max_body(&self) -> u64 {
        self.route.as_ref().map_or(self.active.rules.defaults().max_body, |r| r.max_body)
    }
}

#[cfg(test)]
impl Exchange {
    /// A request from 192.0.2.1 judged by an empty rule set, for unit tests.
    #[allow(clippy::expect_used)]
    pub(crate) fn for_test(req: Request<Body>) -> Exchange {
        let ip = std::net::IpAddr::from([192, 0, 2, 1]);
        let header = crate::client_ip::ip_header(ip);
        let rules = crate::rules::load_sources(&[]).expect("an empty rule set loads");
        Exchange::new(Parts {
            req,
            started: Instant::now(),
            trail: Vec::new(),
            request_id: HeaderValue::from_static("test"),
            client: ClientIp { ip, ip_header: header.clone(), forwarded_for: header },
            peer: SocketAddr::from((ip, 40_000)),
            active: Arc::new(ActiveRules::new(rules, 1)),
            route: None,
            verified: None,
            replay: None,
            reserved: None,
            failure_keys: Vec::new(),
            attempt: None,
            json: None,
            content: None,
        })
    }
}
