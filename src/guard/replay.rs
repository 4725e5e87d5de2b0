//! Replay protection. After a signature verified, its replay key is reserved atomically; the
//! reservation is kept when the backend answers 2xx and released otherwise, so a provider's
//! retry after a backend failure passes while a replay of an accepted callback — or a duplicate
//! racing the first one — gets 401 `replay` and never reaches the backend.
//!
//! When the store cannot answer, the route's `on_state_error.replay` decides: `fail_closed`
//! (default) refuses with 503, `fail_open` forwards unprotected and says so in the audit line.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Request, Response};
use tower::{Layer, Service};

use crate::body::Body;
use crate::guard::layer::{apply, RouteCtx};
use crate::guard::signature::guard::ReplayClaim;
use crate::guard::signature::Settle;
use crate::guard::Reject;
use crate::metrics::Metrics;
use crate::rules::FailMode;
use crate::state::{NonceStore, Reservation, StoreError};

const NAME: &str = "replay";

#[derive(Clone)]
pub struct ReplayLayer {
    store: Arc<dyn NonceStore>,
    metrics: Arc<Metrics>,
}

impl ReplayLayer {
    pub fn new(store: Arc<dyn NonceStore>, metrics: Arc<Metrics>) -> Self {
        ReplayLayer { store, metrics }
    }
}

impl<S> Layer<S> for ReplayLayer {
    type Service = ReplayService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ReplayService { inner, store: self.store.clone(), metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct ReplayService<S> {
    inner: S,
    store: Arc<dyn NonceStore>,
    metrics: Arc<Metrics>,
}

type BoxFut = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<S> Service<Request<Body>> for ReplayService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFut>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(claim) = req.extensions().get::<ReplayClaim>().cloned() else {
            return Either::Left(self.inner.call(req));
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        Either::Right(Box::pin(async move {
            let route = req.extensions().get::<RouteCtx>().cloned();
            let fail_mode =
                route.as_ref().and_then(|r| r.route.as_ref()).map_or(FailMode::Closed, |r| r.on_state_error.replay);
            match reserve_all(&*store, &claim).await {
                Ok(Reservation::Reserved) => {
                    let res = inner.call(req).await?;
                    settle(&*store, &claim, claim.policy.settle(res.status())).await;
                    Ok(res)
                }
                Ok(Reservation::Taken) => match apply(NAME, &Reject::Replay, &req, route.as_ref(), &metrics) {
                    Some(res) => Ok(res),
                    None => inner.call(req).await,
                },
                Err(e) => {
                    tracing::warn!(target: "payguard::replay", error = %e, "replay store unavailable");
                    if fail_mode == FailMode::Open {
                        metrics.decision(
                            &crate::metrics::route_label(route.as_ref().and_then(RouteCtx::name)),
                            NAME,
                            "fail_open",
                        );
                        return inner.call(req).await;
                    }
                    match apply(NAME, &Reject::StateUnavailable, &req, route.as_ref(), &metrics) {
                        Some(res) => Ok(res),
                        None => inner.call(req).await,
                    }
                }
            }
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
    use crate::guard::signature::ReplayPolicy;
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
