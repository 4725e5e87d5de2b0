//! What a guard is: the [`Guard`] trait (and [`Check`] for those that decide without
//! waiting), and how a refusal is applied (`apply`, `apply_in`): in `enforce` mode it becomes
//! the response (through the rescue point), in `monitor` mode it is recorded as `would_block`
//! and the request goes on. `guard::chain` runs the guards in order.
//!
//! Every guard works on the request's [`Exchange`], which the router made: the context is a
//! value the guard is handed, never something it looks up and might miss.
//!
//! A guard has two phases. The request phase (`check`) decides before anything is forwarded.
//! The response phase (`hold` + `respond`, for the guards that have one) sees the answer —
//! the backend's, or a refusal from further in — before the client does, and may act on it or
//! replace it: the replay guard keeps or releases its reservation there.

use std::future::{Future, Ready};

use http::Response;

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
