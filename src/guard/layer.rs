//! One tower layer shape for every guard: `GuardLayer<G>` → `GuardService<G, S>` →
//! `ResponseFuture`. The guard decides; this file applies the decision the same way for all of
//! them: in `enforce` mode a rejection becomes the response (through the rescue point), in
//! `monitor` mode it is recorded as `would_block` and the request goes on.
//!
//! Every guard works on the request's [`Exchange`], which the router made: the context is a
//! value the guard is handed, never something it looks up and might miss.
//!
//! A guard has two phases. The request phase (`check`) decides before anything is forwarded.
//! The response phase (`hold` + `respond`, for the guards that have one) sees the answer —
//! the backend's, or a refusal from further in — before the client does, and may act on it or
//! replace it: the replay guard keeps or releases its reservation there.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Response;
use tower::{Layer, Service};

use super::Reject;
use crate::body::Body;
use crate::exchange::{Exchange, Outcome};
use crate::metrics::Metrics;
use crate::rescue::{rescue, Refusal, Stage};
use crate::rules::Mode;

/// A guard's answer: decided at once, or after waiting (a body to read, a shared store).
// Matched right where it is returned; boxing the exchange would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Verdict<F> {
    Now(Exchange, Result<(), Reject>),
    Later(F),
}

/// What the response phase does with an answer: done at once, or after waiting.
// Matched right where it is returned, like `Verdict`.
#[allow(clippy::large_enum_variant)]
pub enum Responded<F> {
    Now(Response<Body>),
    Later(F),
}

/// A guard: looks at a request and says whether it may go on. Synchronous guards without a
/// response phase implement [`Check`] instead and get this for free.
pub trait Guard: Clone + Send + Sync + 'static {
    const NAME: &'static str;
    type Future: Future<Output = (Exchange, Result<(), Reject>)> + Send + 'static;
    fn check(&self, ex: Exchange) -> Verdict<Self::Future>;

    /// The mode a refusal decided at once (`Verdict::Now`) is applied in: the route's, unless
    /// the guard's own setting says `monitor` (`card_data.request`, `injection.action`).
    fn mode(&self, ex: &Exchange) -> Mode {
        ex.mode()
    }

    /// Whether the guard has a response phase; the layer keeps nothing for one that has not.
    const RESPONDS: bool = false;
    /// What the response phase needs from a request that passed (`()` for guards without one).
    type Hold: Send + 'static;
    /// Takes it from the exchange that passed the check; `None`: no response phase for this
    /// request.
    fn hold(&self, _ex: &mut Exchange) -> Option<Self::Hold> {
        None
    }

    type Respond: Future<Output = Response<Body>> + Send + 'static;
    /// The response phase: acts on the answer, or replaces it.
    fn respond(&self, _hold: Self::Hold, res: Response<Body>) -> Responded<Self::Respond> {
        Responded::Now(res)
    }
}

/// The response-phase types of a guard that has none.
pub type NoHold = ();
pub type NoRespond = Ready<Response<Body>>;

/// A guard that decides without waiting.
pub trait Check: Clone + Send + Sync + 'static {
    const NAME: &'static str;
    fn check(&self, ex: &mut Exchange) -> Result<(), Reject>;
    /// See [`Guard::mode`].
    fn mode(&self, ex: &Exchange) -> Mode {
        ex.mode()
    }
}

impl<C: Check> Guard for C {
    const NAME: &'static str = C::NAME;
    // Never built: a check always answers `Verdict::Now`. `Pending` holds nothing, so the
    // layer's future is not an `Exchange` larger for it (every layer's future holds the inner
    // one: sizes add up, and so does the copying when the chain is built).
    type Future = std::future::Pending<(Exchange, Result<(), Reject>)>;
    type Hold = NoHold;
    type Respond = NoRespond;
    fn check(&self, mut ex: Exchange) -> Verdict<Self::Future> {
        let r = Check::check(self, &mut ex);
        Verdict::Now(ex, r)
    }
    fn mode(&self, ex: &Exchange) -> Mode {
        Check::mode(self, ex)
    }
}

/// Applies a guard's rejection through the rescue point: the response in enforce mode, `None`
/// (go on) in monitor mode; recorded either way, in the audit line and the exchange's trail.
pub fn apply(guard: &'static str, reject: &Reject, ex: &mut Exchange, metrics: &Metrics) -> Option<Response<Body>> {
    let mode = ex.mode();
    apply_in(mode, guard, reject, ex, metrics)
}

/// [`apply`] in `mode`: a guard's own `monitor` setting on an enforcing route.
pub fn apply_in(
    mode: Mode,
    guard: &'static str,
    reject: &Reject,
    ex: &mut Exchange,
    metrics: &Metrics,
) -> Option<Response<Body>> {
    let passed = ex.passed();
    let refusal = Refusal {
        stage: Stage::Guard,
        guard,
        reject,
        request_id: ex.request_id(),
        client_ip: ex.client.ip,
        route: ex.route_name(),
        mode,
        version: ex.req.version(),
        passed: Some(&passed),
        elapsed: Some(ex.started.elapsed()),
    };
    let response = rescue(&refusal, metrics);
    let code = reject.code();
    ex.record(guard, if response.is_some() { Outcome::Block(code) } else { Outcome::WouldBlock(code) });
    if response.is_some() {
        crate::body::discard(std::mem::replace(ex.req.body_mut(), Body::empty()));
    }
    response
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

impl<G, S> Service<Exchange> for GuardService<G, S>
where
    G: Guard,
    S: Service<Exchange, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<G, S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ex: Exchange) -> Self::Future {
        match self.guard.check(ex) {
            // Decided at once (the usual case): the inner service, made ready by poll_ready,
            // is called right here; nothing is cloned.
            Verdict::Now(mut ex, outcome) => {
                let hold = match outcome {
                    Ok(()) => {
                        ex.record_pass_now(G::NAME);
                        if G::RESPONDS {
                            self.guard.hold(&mut ex)
                        } else {
                            None
                        }
                    }
                    Err(reject) => {
                        let mode = self.guard.mode(&ex);
                        if let Some(response) = apply_in(mode, G::NAME, &reject, &mut ex, &self.metrics) {
                            return ResponseFuture::Rejected { response: Some(response) };
                        }
                        None
                    }
                };
                let after = hold.map(|h| (self.guard.clone(), h));
                ResponseFuture::Forwarding { fut: self.inner.call(ex), after }
            }
            Verdict::Later(check) => {
                // Called later: take the ready inner service and leave a clone.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::Checking {
                    check,
                    inner: Some(inner),
                    metrics: self.metrics.clone(),
                    guard: G::RESPONDS.then(|| self.guard.clone()),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    pub enum ResponseFuture<G: Guard, S: Service<Exchange>> {
        Checking { #[pin] check: G::Future, inner: Option<S>, metrics: Arc<Metrics>, guard: Option<G> },
        // `after`: the guard and what it holds, when the request has a response phase.
        Forwarding { #[pin] fut: S::Future, after: Option<(G, G::Hold)> },
        Responding { #[pin] fut: G::Respond },
        Rejected { response: Option<Response<Body>> },
    }
}

impl<G, S> Future for ResponseFuture<G, S>
where
    G: Guard,
    S: Service<Exchange, Response = Response<Body>, Error = Infallible>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                Proj::Checking { check, inner, metrics, guard } => {
                    let (mut ex, outcome) = ready!(check.poll(cx));
                    let after = match (outcome, guard.take()) {
                        (Ok(()), g) => {
                            ex.record(G::NAME, Outcome::Pass);
                            g.and_then(|g| g.hold(&mut ex).map(|h| (g, h)))
                        }
                        (Err(reject), _) => {
                            if let Some(res) = apply(G::NAME, &reject, &mut ex, metrics) {
                                return Poll::Ready(Ok(res));
                            }
                            None
                        }
                    };
                    let Some(mut svc) = inner.take() else {
                        return Poll::Ready(Ok(Reject::StateUnavailable.to_response(None, ex.request_id())));
                    };
                    let fut = svc.call(ex);
                    self.set(ResponseFuture::Forwarding { fut, after });
                }
                Proj::Forwarding { fut, after } => {
                    let Ok(res) = ready!(fut.poll(cx));
                    let Some((guard, hold)) = after.take() else { return Poll::Ready(Ok(res)) };
                    match guard.respond(hold, res) {
                        Responded::Now(res) => return Poll::Ready(Ok(res)),
                        Responded::Later(fut) => self.set(ResponseFuture::Responding { fut }),
                    }
                }
                Proj::Responding { fut } => return fut.poll(cx).map(Ok),
                Proj::Rejected { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .unwrap_or_else(|| Reject::StateUnavailable.to_response(None, "-"))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::path::PathBuf;
    use std::sync::Mutex;

    use http::Request;
    use tower::ServiceExt as _;

    use super::*;
    use crate::exchange::Step;
    use crate::rules::active::ActiveRules;

    #[derive(Clone)]
    struct Passes;
    impl Check for Passes {
        const NAME: &'static str = "passes";
        fn check(&self, _ex: &mut Exchange) -> Result<(), Reject> {
            Ok(())
        }
    }

    #[derive(Clone)]
    struct Denies;
    impl Check for Denies {
        const NAME: &'static str = "denies";
        fn check(&self, _ex: &mut Exchange) -> Result<(), Reject> {
            Err(Reject::IpDenied)
        }
    }

    /// `passes`, then `denies`, in front of a backend that keeps the trail it was handed.
    async fn run(mode: &str) -> (u16, Vec<Step>) {
        let rules = format!("[[route]]\nname = \"r\"\nmatch = {{ path = \"/*\" }}\nmode = \"{mode}\"\n");
        let set = crate::rules::load_sources(&[(PathBuf::from("r.toml"), rules)]).unwrap();
        let active = Arc::new(ActiveRules::new(set, 1));
        let mut ex = Exchange::for_test(Request::new(Body::empty()));
        ex.route = active.rules.routes().first().cloned();
        ex.active = active;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = seen.clone();
        let backend = tower::service_fn(move |ex: Exchange| {
            keep.lock().unwrap().clone_from(&ex.trail);
            std::future::ready(Ok::<_, Infallible>(Response::new(Body::empty())))
        });
        let m = Arc::new(Metrics::new());
        let svc = GuardLayer::new(Passes, m.clone()).layer(GuardLayer::new(Denies, m).layer(backend));
        let status = svc.oneshot(ex).await.unwrap().status().as_u16();
        let trail = seen.lock().unwrap().clone();
        (status, trail)
    }

    #[tokio::test]
    async fn the_trail_records_every_decision_in_order() {
        // Monitor mode: the refusal is recorded as would_block and the backend sees both steps.
        let (status, trail) = run("monitor").await;
        assert_eq!(status, 200);
        let outcomes: Vec<_> = trail.iter().map(|s| (s.guard, s.outcome)).collect();
        assert_eq!(outcomes, [("passes", Outcome::Pass), ("denies", Outcome::WouldBlock("ip_denied"))]);
        assert!(trail[0].at <= trail[1].at, "steps are stamped in order");
        // Enforce mode: refused, the backend never sees the request.
        let (status, trail) = run("enforce").await;
        assert_eq!((status, trail.len()), (403, 0));
    }
}
