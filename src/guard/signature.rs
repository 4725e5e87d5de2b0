//! The signature guard: runs the route's verifier on the exact buffered body bytes. On
//! success it marks the request verified (→ `x-payguard-verified`), records the matched key id
//! and clock skew, and hands the replay key to the replay guard.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::exchange::{Exchange, ReplayClaim};
use crate::guard::layer::Check;
use crate::guard::Reject;
use crate::metrics::{Metrics, RouteLabel};
use crate::signature::SignedRequest;
use crate::telemetry;

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

    fn check(&self, ex: &mut Exchange) -> Result<(), Reject> {
        let Some(r) = ex.route.as_ref() else { return Ok(()) };
        let req = &ex.req;
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
        telemetry::audit(&telemetry::Decision {
            request_id: ex.request_id(),
            route: Some(&r.name),
            client_ip: ex.client.ip,
            guard: Self::NAME,
            decision: "allow",
            reason: "verified",
            detail: provider,
            key_id: Some(&verified.key_id),
            skew_secs: skew,
            passed: None,
            elapsed: None,
        });
        let claim = ReplayClaim::new(&r.name, provider, &verified.replay, verifier.replay_policy());
        ex.verified = Some(provider);
        ex.replay = Some(claim);
        Ok(())
    }
}
