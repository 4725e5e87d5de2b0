//! Replay protection. After a signature verified, its replay key is reserved atomically; the
//! reservation is kept when the backend answers 2xx and released otherwise, so a provider's
//! retry after a backend failure passes while a replay of an accepted callback — or a duplicate
//! racing the first one — gets 401 `replay` and never reaches the backend.
//!
//! When the store cannot answer, the route's `on_state_error.replay` decides: `fail_closed`
//! (default) refuses with 503, `fail_open` forwards unprotected and says so in the audit line.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::Response;

use crate::body::Body;
use crate::exchange::{Exchange, ReplayClaim};
use crate::guard::layer::{Guard, Responded, Verdict};
use crate::guard::Reject;
use crate::metrics::Metrics;
use crate::rules::FailMode;
use crate::signature::Settle;
use crate::state::{NonceStore, Reservation, StoreError};

const NAME: &str = "replay";

/// The replay guard: reserves the claim's keys in the request phase, settles them on the
/// answer in the response phase.
#[derive(Clone)]
pub struct ReplayGuard {
    store: Arc<dyn NonceStore>,
    metrics: Arc<Metrics>,
}

impl ReplayGuard {
    pub fn new(store: Arc<dyn NonceStore>, metrics: Arc<Metrics>) -> Self {
        ReplayGuard { store, metrics }
    }
}

type Checked = (Exchange, Result<(), Reject>);

impl Guard for ReplayGuard {
    const NAME: &'static str = NAME;
    const RESPONDS: bool = true;
    type Future = Pin<Box<dyn Future<Output = Checked> + Send>>;
    type Hold = ReplayClaim;
    type Respond = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

    fn check(&self, mut ex: Exchange) -> Verdict<Self::Future> {
        let Some(claim) = ex.replay.take() else {
            return Verdict::Now(ex, Ok(()));
        };
        let fail_mode = ex.route.as_ref().map_or(FailMode::Closed, |r| r.on_state_error.replay);
        let label = crate::metrics::route_label(ex.route_name().map(|n| &**n));
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        Verdict::Later(Box::pin(async move {
            let outcome = match reserve_all(&*store, &claim).await {
                Ok(Reservation::Reserved) => {
                    ex.reserved = Some(claim);
                    Ok(())
                }
                Ok(Reservation::Taken) => Err(Reject::Replay),
                Err(e) => {
                    tracing::warn!(target: "payguard::replay", error = %e, "replay store unavailable");
                    super::store_unavailable(NAME, fail_mode, &e, &metrics, &label)
                }
            };
            (ex, outcome)
        }))
    }

    fn hold(&self, ex: &mut Exchange) -> Option<ReplayClaim> {
        ex.reserved.take()
    }

    fn respond(&self, claim: ReplayClaim, res: Response<Body>) -> Responded<Self::Respond> {
        let store = self.store.clone();
        Responded::Later(Box::pin(async move {
            settle(&*store, &claim, claim.policy.settle(res.status())).await;
            res
        }))
    }
}

/// Reserves every key of the claim, or none: at the first key already taken (a repeated item
/// within the batch included) or a store error, the keys reserved so far are released again, so
/// a refused batch consumes nothing.
async fn reserve_all(store: &dyn NonceStore, claim: &ReplayClaim) -> Result<Reservation, StoreError> {
    for (i, key) in claim.keys.iter().enumerate() {
        let outcome = store.reserve(key, claim.policy.ttl).await;
        if !matches!(outcome, Ok(Reservation::Reserved)) {
            for done in &claim.keys[..i] {
                if let Err(e) = store.release(done).await {
                    tracing::warn!(target: "payguard::replay", error = %e, "could not release a replay reservation");
                }
            }
            return outcome;
        }
    }
    Ok(Reservation::Reserved)
}

async fn settle(store: &dyn NonceStore, claim: &ReplayClaim, how: Settle) {
    for key in &claim.keys {
        let settled = match how {
            Settle::Keep => store.commit(key, claim.policy.ttl).await,
            Settle::Release => store.release(key).await,
        };
        if let Err(e) = settled {
            tracing::warn!(target: "payguard::replay", error = %e, "could not settle a replay reservation");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use http::StatusCode;

    use super::*;
    use crate::signature::ReplayPolicy;
    use crate::state::memory::MemoryNonceStore;

    const POLICY: ReplayPolicy = ReplayPolicy { ttl: Duration::from_secs(60), release_on_4xx: false };

    fn claim(keys: &[&str]) -> ReplayClaim {
        ReplayClaim { keys: keys.iter().map(|k| k.to_string()).collect(), policy: POLICY }
    }

    #[tokio::test]
    async fn a_batch_is_reserved_whole_or_not_at_all() {
        let store = MemoryNonceStore::new(1_000);
        assert_eq!(reserve_all(&store, &claim(&["a"])).await.unwrap(), Reservation::Reserved);
        // [b, a]: a is taken, so b must not stay reserved.
        assert_eq!(reserve_all(&store, &claim(&["b", "a"])).await.unwrap(), Reservation::Taken);
        assert_eq!(reserve_all(&store, &claim(&["b"])).await.unwrap(), Reservation::Reserved);
        // A batch that repeats an item is a replay of itself, and leaves nothing behind.
        assert_eq!(reserve_all(&store, &claim(&["c", "c"])).await.unwrap(), Reservation::Taken);
        assert_eq!(reserve_all(&store, &claim(&["c"])).await.unwrap(), Reservation::Reserved);
    }

    #[tokio::test]
    async fn settling_keeps_or_frees_every_key() {
        let store = MemoryNonceStore::new(1_000);
        let two = claim(&["x", "y"]);
        assert_eq!(reserve_all(&store, &two).await.unwrap(), Reservation::Reserved);
        settle(&store, &two, Settle::Release).await;
        assert_eq!(reserve_all(&store, &two).await.unwrap(), Reservation::Reserved);
        settle(&store, &two, Settle::Keep).await;
        assert_eq!(reserve_all(&store, &claim(&["y"])).await.unwrap(), Reservation::Taken);
    }

    /// The response phase through the guard chain: a stand-in backend answers `status`.
    async fn through_chain(store: Arc<MemoryNonceStore>, keys: &[&str], status: u16) -> u16 {
        use crate::guard::chain::test_support;
        use tower::ServiceExt;
        let backend = move |_ex: Exchange| {
            let mut res = Response::new(Body::empty());
            *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
            res
        };
        let stores = crate::state::Stores { nonces: store, ..test_support::memory_stores() };
        let svc = test_support::chain(stores, backend);
        let mut ex = Exchange::for_test(http::Request::new(Body::empty()));
        ex.replay = Some(claim(keys));
        svc.oneshot(ex).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn the_response_phase_settles_on_the_answer() {
        let store = Arc::new(MemoryNonceStore::new(1_000));
        // A backend failure releases: the retry passes, and is accepted.
        assert_eq!(through_chain(store.clone(), &["a", "b"], 503).await, 503);
        assert_eq!(through_chain(store.clone(), &["a", "b"], 200).await, 200);
        // Accepted: kept, so a replay — or any batch holding one of its items — is refused
        // before the backend, and reserves nothing.
        assert_eq!(through_chain(store.clone(), &["a", "b"], 200).await, 401);
        assert_eq!(through_chain(store.clone(), &["c", "b"], 200).await, 401);
        assert_eq!(through_chain(store.clone(), &["c"], 504).await, 504);
        // A timeout keeps the key: the backend may have acted.
        assert_eq!(through_chain(store.clone(), &["c"], 200).await, 401);
    }

    #[test]
    fn settlement_by_status() {
        let keep = |s: u16, p: ReplayPolicy| p.settle(StatusCode::from_u16(s).unwrap()) == Settle::Keep;
        let lenient = ReplayPolicy { release_on_4xx: true, ..POLICY };
        for s in [200, 201, 204, 299, 504] {
            assert!(keep(s, POLICY) && keep(s, lenient), "{s} keeps");
        }
        for s in [100, 301, 408, 429, 500, 502, 503] {
            assert!(!keep(s, POLICY) && !keep(s, lenient), "{s} releases");
        }
        for s in [400, 401, 403, 404, 409, 422, 499] {
            assert!(keep(s, POLICY), "{s} keeps by default");
            assert!(!keep(s, lenient), "{s} releases with replay_release_on_4xx");
        }
    }
}
