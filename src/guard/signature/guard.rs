//! The signature guard: runs the route's verifier on the exact buffered body bytes. On
//! success it marks the request verified (→ `x-payguard-verified`), records the matched key id
//! and clock skew, and hands the replay key to the replay guard.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::Request;

use super::{ReplayPolicy, SignedRequest};
use crate::body::Body;
use crate::context::RequestCtx;
use crate::guard::layer::{Check, RouteCtx};
use crate::guard::Reject;
use crate::metrics::{Metrics, RouteLabel};
use crate::telemetry;

/// Set after a verified signature: the provider, which the proxy sends as `x-payguard-verified`.
#[derive(Debug, Clone, Copy)]
pub struct Verified(pub &'static str);

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
    /// signed material only (see [`super::ReplayId`]).
    pub fn new(route: &str, provider: &str, ids: &[super::ReplayId], policy: ReplayPolicy) -> Self {
        let keys = ids.iter().map(|id| format!("{route}|{provider}|{}", id.to_hex())).collect();
        ReplayClaim { keys, policy }
    }
}

#[derive(Clone)]
pub struct SignatureGuard {
    metrics: Arc<Metrics>,
}

impl SignatureGuard {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        SignatureGuard { metrics }
    }
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Check for SignatureGuard {
    const NAME: &'static str = "signature";

    fn check(&self, req: &mut Request<Body>, route: &RouteCtx) -> Result<(), Reject> {
        let Some(r) = route.route.as_ref() else { return Ok(()) };
        let Some(verifier) = r.verifier.as_ref() else { return Ok(()) };
        // Fail closed: a signed route whose body was not buffered cannot be verified.
        let body = req
            .body()
            .buffered()
            .ok_or_else(|| Reject::SignatureInvalid { reason: "body not available for verification".into() })?;
        let now = now_unix();
        let signed = SignedRequest {
            method: req.method(),
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
            body,
        };
        let verified = verifier.verify(&signed, now)?;
        let provider = verifier.provider();
        let skew = verified.timestamp.map(|ts| now - ts);
        if let Some(s) = skew {
            self.metrics.signature_skew(&RouteLabel(r.name.clone()), s);
        }
        if let Some(ctx) = req.extensions().get::<RequestCtx>() {
            telemetry::audit(&telemetry::Decision {
                request_id: ctx.request_id(),
                route: Some(&r.name),
                client_ip: ctx.client.ip,
                guard: Self::NAME,
                decision: "allow",
                reason: "verified",
                detail: provider,
                key_id: Some(&verified.key_id),
                skew_secs: skew,
            });
        }
        let claim = ReplayClaim::new(&r.name, provider, &verified.replay, verifier.replay_policy());
        let ext = req.extensions_mut();
        ext.insert(Verified(provider));
        ext.insert(claim);
        Ok(())
    }
}
