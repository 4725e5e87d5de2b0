//! The signature guard: runs the route's verifier on the exact buffered body bytes. On
//! success it marks the request verified (→ `x-payguard-verified`), records the matched key id
//! and clock skew, and hands the replay key to the replay guard.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::exchange::{Exchange, ReplayClaim, VerifiedBy};
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
        ex.verified = Some(VerifiedBy { provider, key_id: verified.key_id });
        ex.replay = Some(claim);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::path::PathBuf;

    use hmac::Mac as _;

    use super::*;
    use crate::body::Body;
    use crate::rules::active::ActiveRules;

    const SECRET: &str = "whsec_guard_unit_test";

    fn exchange(header: Option<String>, body: &'static str) -> Exchange {
        std::env::set_var("PAYGUARD_TEST_GUARD_SIG", SECRET);
        let rules = "[[route]]\nname = \"cb\"\nmatch = { path = \"/cb\" }\n[route.signature]\n\
                     provider = \"stripe\"\nsecrets = [\"env:PAYGUARD_TEST_GUARD_SIG\"]\n";
        let set = crate::rules::load_sources(&[(PathBuf::from("r.toml"), rules.to_owned())]).unwrap();
        let active = Arc::new(ActiveRules::new(set, 1));
        let mut req = http::Request::post("/cb");
        if let Some(h) = header {
            req = req.header("stripe-signature", h);
        }
        let mut ex = Exchange::for_test(req.body(Body::full(body)).unwrap());
        ex.route = active.rules.routes().first().cloned();
        ex.active = active;
        ex
    }

    #[test]
    fn a_verified_request_names_its_provider_and_key_and_carries_its_replay_claim() {
        let body = "{\"id\":\"evt_1\"}";
        let t = now_unix().to_string();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        let guard = SignatureGuard::new(Arc::new(Metrics::new()));

        let mut ex = exchange(Some(format!("t={t},v1={sig}")), body);
        guard.check(&mut ex).unwrap();
        assert_eq!(ex.verified, Some(VerifiedBy { provider: "stripe", key_id: "secrets[0]".into() }));
        let claim = ex.replay.take().expect("a replay claim");
        assert_eq!(claim.keys.len(), 1);
        assert!(claim.keys[0].starts_with("cb|stripe|"), "{:?}", claim.keys);

        let mut ex = exchange(Some(format!("t={t},v1={}", "0".repeat(64))), body);
        assert!(matches!(guard.check(&mut ex), Err(Reject::SignatureInvalid { .. })));
        assert!(ex.verified.is_none() && ex.replay.is_none());
        let mut ex = exchange(None, body);
        assert!(guard.check(&mut ex).is_err());
        assert!(ex.verified.is_none());
    }
}
