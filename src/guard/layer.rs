//! One tower layer shape for every guard: `GuardLayer<G>` → `GuardService<G, S>` →
//! `ResponseFuture`. The guard decides; this file applies the decision the same way for all of
//! them: in `enforce` mode a rejection becomes the response (logged once, here), in `monitor`
//! mode it is recorded as `would_block` and the request goes on.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::Reject;
use crate::body::Body;
use crate::metrics::Metrics;
use crate::rescue::{rescue, Refusal, Stage};
use crate::rules::active::ActiveRules;
use crate::rules::{Mode, Route};

/// What the route layer decided, for every layer after it.
#[derive(Clone)]
pub struct RouteCtx {
    pub active: Arc<ActiveRules>,
    pub route: Option<Arc<Route>>,
}

impl RouteCtx {
    pub fn name(&self) -> Option<&str> {
        self.route.as_deref().map(|r| &*r.name)
    }

    pub fn mode(&self) -> Mode {
        self.route.as_ref().map_or(Mode::Enforce, |r| r.mode)
    }

    pub fn max_body(&self) -> u64 {
        self.route.as_ref().map_or(self.active.rules.defaults().max_body, |r| r.max_body)
    }
}

/// A guard's answer: decided at once, or after waiting (a body to read, a shared store).
// Matched right where it is returned; boxing the request would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Verdict<F> {
    Now(Request<Body>, Result<(), Reject>),
    Later(F),
}

/// A guard: looks at a request and says whether it may go on. Synchronous guards implement
/// [`Check`] instead and get this for free.
pub trait Guard: Clone + Send + Sync + 'static {
    const NAME: &'static str;
    type Future: Future<Output = (Request<Body>, Result<(), Reject>)> + Send + 'static;
    fn check(&self, req: Request<Body>, route: &RouteCtx) -> Verdict<Self::Future>;
}

/// A guard that decides without waiting.
pub trait Check: Clone + Send + Sync + 'static {
    const NAME: &'static str;
    fn check(&self, req: &mut Request<Body>, route: &RouteCtx) -> Result<(), Reject>;
}

impl<C: Check> Guard for C {
    const NAME: &'static str = C::NAME;
    // Never built: a check always answers `Verdict::Now`.
    type Future = Ready<(Request<Body>, Result<(), Reject>)>;
    fn check(&self, mut req: Request<Body>, route: &RouteCtx) -> Verdict<Self::Future> {
        let r = Check::check(self, &mut req, route);
        Verdict::Now(req, r)
    }
}

/// Applies a guard's rejection through the rescue point: the response in enforce mode, `None`
/// (go on) in monitor mode; recorded either way.
pub fn apply(
    guard: &'static str,
    reject: &Reject,
    req: &Request<Body>,
    route: Option<&RouteCtx>,
    metrics: &Metrics,
) -> Option<Response<Body>> {
    let name = route.and_then(|r| r.route.as_ref()).map(|r| &r.name);
    let mode = route.map_or(Mode::Enforce, RouteCtx::mode);
    rescue(&Refusal::of(req, Stage::Guard, guard, reject, name, mode), metrics)
}

#[derive(Clone)]
pub struct GuardLayer<G> {
    guard: G,
    metrics: Arc<Metrics>,
}

impl<G> GuardLayer<G> {
    pub fn new(guard: G, metrics: Arc<Metrics>) -> Self {
        GuardLayer { guard, metrics }
    }
}

impl<G: Clone, S> Layer<S> for GuardLayer<G> {
    type Service = GuardService<G, S>;
    fn layer(&self, inner: S) -> Self::Service {
        GuardService { guard: self.guard.clone(), metrics: self.metrics.clone(), inner }
    }
}

#[derive(Clone)]
pub struct GuardService<G, S> {
    guard: G,
    metrics: Arc<Metrics>,
    inner: S,
}

impl<G, S> Service<Request<Body>> for GuardService<G, S>
where
    G: Guard,
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<G::Future, S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(route) = req.extensions().get::<RouteCtx>().cloned() else {
            // Only reachable if the stack is mis-assembled; never skip a guard silently.
            tracing::error!(target: "payguard::stack", guard = G::NAME, "guard ran before routing");
            return ResponseFuture::Rejected { response: Some(Reject::StateUnavailable.to_response(None, "-")) };
        };
        match self.guard.check(req, &route) {
            // Decided at once (the usual case): the inner service, made ready by poll_ready,
            // is called right here; nothing is cloned.
            Verdict::Now(req, outcome) => {
                if let Err(reject) = outcome {
                    if let Some(response) = apply(G::NAME, &reject, &req, Some(&route), &self.metrics) {
                        return ResponseFuture::Rejected { response: Some(response) };
                    }
                }
                ResponseFuture::Forwarding { fut: self.inner.call(req) }
            }
            Verdict::Later(check) => {
                // Called later: take the ready inner service and leave a clone.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::Checking {
                    check,
                    inner: Some(inner),
                    route,
                    metrics: self.metrics.clone(),
                    name: G::NAME,
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    pub enum ResponseFuture<F, S: Service<Request<Body>>> {
        Checking { #[pin] check: F, inner: Option<S>, route: RouteCtx, metrics: Arc<Metrics>, name: &'static str },
        Forwarding { #[pin] fut: S::Future },
        Rejected { response: Option<Response<Body>> },
    }
}

impl<F, S> Future for ResponseFuture<F, S>
where
    F: Future<Output = (Request<Body>, Result<(), Reject>)>,
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                Proj::Checking { check, inner, route, metrics, name } => {
                    let (req, outcome) = ready!(check.poll(cx));
                    if let Err(reject) = outcome {
                        if let Some(res) = apply(name, &reject, &req, Some(route), metrics) {
                            return Poll::Ready(Ok(res));
                        }
                    }
                    let Some(mut svc) = inner.take() else {
                        return Poll::Ready(Ok(Reject::StateUnavailable.to_response(None, "-")));
                    };
                    let fut = svc.call(req);
                    self.set(ResponseFuture::Forwarding { fut });
                }
                Proj::Forwarding { fut } => return fut.poll(cx),
                Proj::Rejected { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .unwrap_or_else(|| Reject::StateUnavailable.to_response(None, "-"))));
                }
            }
        }
    }
}
