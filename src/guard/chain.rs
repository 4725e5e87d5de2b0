//! The guard stack as one flat pipeline: every guard's request phase in order, the request
//! forwarded, then the response phases of the guards that hold something, innermost first.
//!
//! One future per request, whose size is that of its largest step, rather than thirteen
//! services each wrapping the next one's future (which built, copied and dropped the whole
//! nest on every request). The guards are plain values over the request's [`Exchange`];
//! nothing here knows about connections, only about a [`Forward`] that answers an exchange.
//!
//! How a decision is applied is the same for every guard: in `enforce` mode a rejection becomes
//! the answer (through the rescue point) and the response phases of the guards already passed
//! still see it; in `monitor` mode it is recorded as `would_block` and the request goes on.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Response;
use tower::Service;

use super::body::BufferGuard;
use super::card_answer::CardAnswerGuard;
use super::card_data::CardDataGuard;
use super::failure_limit::FailureLimitGuard;
use super::idempotency::IdempotencyGuard;
use super::injection::InjectionGuard;
use super::ip::IpGuard;
use super::layer::{apply_in, Guard, Responded, Verdict};
use super::origin::OriginGuard;
use super::rate_limit::RateLimitGuard;
use super::replay::ReplayGuard;
use super::signature::SignatureGuard;
use super::validate::{BodyGuard, HeaderGuard};
use crate::body::Body;
use crate::exchange::{Exchange, Outcome};
use crate::metrics::Metrics;
use crate::state::Stores;

/// What answers a request every guard let through: the proxy, or a stand-in in tests.
pub trait Forward: Send + Sync + 'static {
    fn forward(&self, ex: Exchange) -> impl Future<Output = Response<Body>> + Send;
}

/// The guards of the chain that keep state or metrics of their own.
pub struct Guards {
    rate_limit: RateLimitGuard,
    failure_limit: FailureLimitGuard,
    signature: SignatureGuard,
    replay: ReplayGuard,
    idempotency: IdempotencyGuard,
    card_answer: CardAnswerGuard,
}

impl Guards {
    /// Over the state stores (in memory, or on the shared store).
    pub fn new(stores: Stores, metrics: &Arc<Metrics>) -> Guards {
        Guards {
            rate_limit: RateLimitGuard::new(stores.buckets, metrics.clone()),
            failure_limit: FailureLimitGuard::new(stores.failures, metrics.clone()),
            signature: SignatureGuard::new(metrics.clone()),
            replay: ReplayGuard::new(stores.nonces, metrics.clone()),
            idempotency: IdempotencyGuard::new(stores.idempotency, metrics.clone()),
            card_answer: CardAnswerGuard::new(metrics.clone()),
        }
    }
}

/// The guards in the order a request meets them (see [`Inner::request`]), by the names of
/// their audit lines, metrics and trail steps. `payguard explain` lists them so; tests hold the
/// chain to it.
pub const GUARDS: [&str; 13] = [
    <IpGuard as Guard>::NAME,
    <RateLimitGuard as Guard>::NAME,
    <HeaderGuard as Guard>::NAME,
    <OriginGuard as Guard>::NAME,
    <BufferGuard as Guard>::NAME,
    <FailureLimitGuard as Guard>::NAME,
    <SignatureGuard as Guard>::NAME,
    <ReplayGuard as Guard>::NAME,
    <BodyGuard as Guard>::NAME,
    <CardDataGuard as Guard>::NAME,
    <InjectionGuard as Guard>::NAME,
    <IdempotencyGuard as Guard>::NAME,
    <CardAnswerGuard as Guard>::NAME,
];

// Only these four have a response phase, and `Held` has a place for each: a guard that gains
// one must be given its place (and its call in `Inner::run`), or this fails to compile.
const _: () = assert!(
    !<IpGuard as Guard>::RESPONDS
        && !<RateLimitGuard as Guard>::RESPONDS
        && !<HeaderGuard as Guard>::RESPONDS
        && !<OriginGuard as Guard>::RESPONDS
        && !<BufferGuard as Guard>::RESPONDS
        && <FailureLimitGuard as Guard>::RESPONDS
        && !<SignatureGuard as Guard>::RESPONDS
        && <ReplayGuard as Guard>::RESPONDS
        && !<BodyGuard as Guard>::RESPONDS
        && !<CardDataGuard as Guard>::RESPONDS
        && !<InjectionGuard as Guard>::RESPONDS
        && <IdempotencyGuard as Guard>::RESPONDS
        && <CardAnswerGuard as Guard>::RESPONDS
);

/// What the guards with a response phase took from a request that passed them.
struct Held {
    failure_limit: Option<<FailureLimitGuard as Guard>::Hold>,
    replay: Option<<ReplayGuard as Guard>::Hold>,
    idempotency: Option<<IdempotencyGuard as Guard>::Hold>,
    card_answer: Option<<CardAnswerGuard as Guard>::Hold>,
}

/// The service behind the router: cloning it is one reference count.
pub struct Chain<F>(Arc<Inner<F>>);

impl<F> Clone for Chain<F> {
    fn clone(&self) -> Self {
        Chain(self.0.clone())
    }
}

struct Inner<F> {
    guards: Guards,
    forward: F,
    metrics: Arc<Metrics>,
}

impl<F: Forward> Chain<F> {
    pub fn new(guards: Guards, forward: F, metrics: Arc<Metrics>) -> Self {
        Chain(Arc::new(Inner { guards, forward, metrics }))
    }
}

impl<F: Forward> Service<Exchange> for Chain<F> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ChainFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ex: Exchange) -> ChainFuture {
        let chain = self.0.clone();
        let http2 = ex.req.version() >= http::Version::HTTP_2;
        let mut run: Pin<Box<dyn Future<Output = Response<Body>> + Send>> =
            Box::pin(async move { chain.run(ex).await });
        if !http2 {
            // HTTP/1.1: one request at a time on a connection, polled by it right after it has
            // read what arrived of the body. Started here, a body that came with the head would
            // not be there yet, and a guard that buffers it would wait for a second poll.
            return ChainFuture::Running(run);
        }
        // HTTP/2: started here, as far as it goes without waiting: requests are judged in the order
        // they arrive. (The server runs each HTTP/2 stream's future as a task of its own, and
        // tasks need not run in the order they were made: two attempts with one idempotency
        // key, or the last token of a bucket, would otherwise go to whichever ran first.) The
        // task polls it again with its own waker, as every future's poll must allow.
        match run.as_mut().poll(&mut Context::from_waker(futures_util::task::noop_waker_ref())) {
            Poll::Ready(res) => ChainFuture::Done(Some(res)),
            Poll::Pending => ChainFuture::Running(run),
        }
    }
}

/// A request's way through the chain: decided at once, or still under way.
pub enum ChainFuture {
    Done(Option<Response<Body>>),
    Running(Pin<Box<dyn Future<Output = Response<Body>> + Send>>),
}

impl Future for ChainFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            ChainFuture::Done(res) => {
                Poll::Ready(Ok(res.take().unwrap_or_else(|| super::Reject::StateUnavailable.to_response(None, "-"))))
            }
            ChainFuture::Running(run) => run.as_mut().poll(cx).map(Ok),
        }
    }
}

impl<F: Forward> Inner<F> {
    async fn run(&self, ex: Exchange) -> Response<Body> {
        let mut held = Held { failure_limit: None, replay: None, idempotency: None, card_answer: None };
        let res = match self.request(ex, &mut held).await {
            Ok(ex) => self.forward.forward(ex).await,
            Err(refused) => *refused,
        };
        let g = &self.guards;
        // Innermost first: card numbers in the answer are masked before idempotency keeps it,
        // and the failure limit classifies what the client will get.
        let res = match held.card_answer {
            Some(hold) => respond(&g.card_answer, hold, res).await,
            None => res,
        };
        let res = match held.idempotency {
            Some(hold) => respond(&g.idempotency, hold, res).await,
            None => res,
        };
        let res = match held.replay {
            Some(hold) => respond(&g.replay, hold, res).await,
            None => res,
        };
        match held.failure_limit {
            Some(hold) => respond(&g.failure_limit, hold, res).await,
            None => res,
        }
    }

    /// Every guard's request phase, in the order of [`GUARDS`]: cheap checks before expensive
    /// ones, and nothing reads a body before every check that can refuse the request without
    /// it. The exchange to forward, or the answer of the guard that refused it.
    async fn request(&self, ex: Exchange, held: &mut Held) -> Result<Exchange, Refused> {
        let (g, m) = (&self.guards, &*self.metrics);
        // Cheapest refusal first: a set lookup on the client address.
        let (ex, _) = pass(&IpGuard, ex, m).await?;
        // Before any parsing work, so a flood costs one bucket check per request.
        let (ex, _) = pass(&g.rate_limit, ex, m).await?;
        // Headers only: Content-Length against the cap, content type, required headers, query.
        let (ex, _) = pass(&HeaderGuard, ex, m).await?;
        // Headers only: a state-changing request from another site, before any body is read.
        let (ex, _) = pass(&OriginGuard, ex, m).await?;
        // Read the body only now, and only for routes that need it; cap it either way.
        let (ex, _) = pass(&BufferGuard, ex, m).await?;
        // A key banned for repeated failures is refused before any verification work (its key
        // may be a body field, hence after the buffer); the answer is classified on the way
        // back and its failures counted.
        let (ex, hold) = pass(&g.failure_limit, ex, m).await?;
        held.failure_limit = hold;
        // Who sent it, proven on the exact raw bytes; refuses before any state is touched.
        let (ex, _) = pass(&g.signature, ex, m).await?;
        // Only authenticated requests may reserve a replay key (no store flooding by forgers);
        // the reservation is settled by the backend's answer, so this wraps the rest.
        let (ex, hold) = pass(&g.replay, ex, m).await?;
        held.replay = hold;
        // Schema and field rules: parsing untrusted JSON only for authentic requests.
        let (ex, _) = pass(&BodyGuard, ex, m).await?;
        // A card number must never reach the backend, whoever sent it; looked for in values
        // decoded as the backend decodes them, so after the cheaper body checks.
        let (ex, _) = pass(&CardDataGuard, ex, m).await?;
        // Injection patterns: a detector run over every decoded value, the dearest of the
        // content checks, last before the order's key is taken.
        let (ex, _) = pass(&InjectionGuard, ex, m).await?;
        // Last: only a request every other guard let through may take an order's key, and the
        // answer it settles on is the backend's (or the proxy's own 502/504), nothing else.
        let (ex, hold) = pass(&g.idempotency, ex, m).await?;
        held.idempotency = hold;
        // Innermost on the way back: card numbers in the backend's answer are masked (or the
        // answer refused) before idempotency keeps it for replay, so none is ever stored.
        let (ex, hold) = pass(&g.card_answer, ex, m).await?;
        held.card_answer = hold;
        Ok(ex)
    }
}

/// The answer to a refusal, boxed: a request passes thirteen guards, and the result of each
/// is moved a few times; a response is 200 bytes, a box one word.
type Refused = Box<Response<Body>>;

/// One guard's request phase: the exchange to go on with and what the guard holds for its
/// response phase, or the answer to a refusal it enforces.
async fn pass<G: Guard>(guard: &G, ex: Exchange, metrics: &Metrics) -> Result<(Exchange, Option<G::Hold>), Refused> {
    let (mut ex, outcome, waited) = match guard.check(ex) {
        Verdict::Now(ex, outcome) => (ex, outcome, false),
        Verdict::Later(check) => {
            let (ex, outcome) = check.await;
            (ex, outcome, true)
        }
    };
    match outcome {
        Ok(()) => {
            if waited {
                ex.record(G::NAME, Outcome::Pass);
            } else {
                ex.record_pass_now(G::NAME);
            }
            let hold = if G::RESPONDS { guard.hold(&mut ex) } else { None };
            Ok((ex, hold))
        }
        Err(reject) => match apply_in(guard.mode(&ex), G::NAME, &reject, &mut ex, metrics) {
            Some(refused) => Err(Box::new(refused)),
            None => Ok((ex, None)),
        },
    }
}

/// One guard's response phase, for a request it holds something of. (Called only then: a
/// response is 200 bytes, moved in and out of every call.)
async fn respond<G: Guard>(guard: &G, hold: G::Hold, res: Response<Body>) -> Response<Body> {
    match guard.respond(hold, res) {
        Responded::Now(res) => res,
        Responded::Later(fut) => fut.await,
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    #![allow(clippy::expect_used)]
    use super::*;

    /// Memory stores with the embedded configuration's caps.
    pub fn memory_stores() -> Stores {
        Stores::memory(&crate::config::Config::load(None).expect("the embedded configuration").state)
    }

    /// A [`Forward`] that answers from a function, for tests of the chain and its guards.
    pub struct ForwardFn<T>(pub T);

    impl<T: Fn(Exchange) -> Response<Body> + Send + Sync + 'static> Forward for ForwardFn<T> {
        async fn forward(&self, ex: Exchange) -> Response<Body> {
            (self.0)(ex)
        }
    }

    /// The chain over memory stores, in front of `answer`.
    pub fn chain<T: Fn(Exchange) -> Response<Body> + Send + Sync + 'static>(
        stores: Stores,
        answer: T,
    ) -> Chain<ForwardFn<T>> {
        let metrics = Arc::new(Metrics::new());
        Chain::new(Guards::new(stores, &metrics), ForwardFn(answer), metrics)
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

    /// A request from 192.0.2.1 through a route that denies it, in `mode`, in front of a
    /// backend that keeps the trail it was handed.
    async fn run(mode: &str) -> (u16, Vec<Step>) {
        let rules = format!(
            "[[route]]\nname = \"r\"\nmatch = {{ path = \"/*\" }}\nmode = \"{mode}\"\nip_deny = [\"192.0.2.0/24\"]\n"
        );
        let set = crate::rules::load_sources(&[(PathBuf::from("r.toml"), rules)]).unwrap();
        let active = Arc::new(ActiveRules::new(set, 1));
        let mut ex = Exchange::for_test(Request::new(Body::empty()));
        ex.route = active.rules.routes().first().cloned();
        ex.active = active;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = seen.clone();
        let chain = test_support::chain(test_support::memory_stores(), move |ex: Exchange| {
            keep.lock().unwrap().clone_from(&ex.trail);
            Response::new(Body::empty())
        });
        let status = chain.oneshot(ex).await.unwrap().status().as_u16();
        let trail = seen.lock().unwrap().clone();
        (status, trail)
    }

    #[tokio::test]
    async fn the_trail_records_every_decision_in_order() {
        // Monitor mode: the refusal is recorded as would_block, every later guard passes, in
        // the order of GUARDS, and the backend sees them all.
        let (status, trail) = run("monitor").await;
        assert_eq!(status, 200);
        let names: Vec<_> = trail.iter().map(|s| s.guard).collect();
        assert_eq!(names, GUARDS);
        assert_eq!(trail[0].outcome, Outcome::WouldBlock("ip_denied"));
        assert!(trail[1..].iter().all(|s| s.outcome == Outcome::Pass), "{trail:?}");
        assert!(trail.windows(2).all(|w| w[0].at <= w[1].at), "steps are stamped in order");
        // Enforce mode: refused, the backend never sees the request.
        let (status, trail) = run("enforce").await;
        assert_eq!((status, trail.len()), (403, 0));
    }
}
