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
use crate::guard::Reject;
use crate::metrics::Metrics;
use crate::rules::FailMode;
use crate::state::{NonceStore, Reservation};

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
            match store.reserve(&claim.key, claim.ttl).await {
                Ok(Reservation::Reserved) => {
                    let res = inner.call(req).await?;
                    let settled = if res.status().is_success() {
                        store.commit(&claim.key, claim.ttl).await
                    } else {
                        store.release(&claim.key).await
                    };
                    if let Err(e) = settled {
                        tracing::warn!(target: "payguard::replay", error = %e, "could not settle a replay reservation");
                    }
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
