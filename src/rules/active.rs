//! The rule set that is serving right now. Swapped as one unit, so a request sees one
//! version throughout. Pure data: the state that goes with it (rate-limit buckets, replay keys)
//! lives in `state`, keyed by what is here (a limit's scope fingerprint).

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{RateLimitSpec, Route, RuleSet};

pub struct ActiveRules {
    pub rules: RuleSet,
    pub version: u64,
    defaults_fingerprint: u64,
}

pub type SharedRules = Arc<ArcSwap<ActiveRules>>;

impl ActiveRules {
    /// Rate-limit buckets carry over from the set this one replaces by themselves, wherever a
    /// scope's fingerprint (its name and limit) did not change.
    pub fn new(rules: RuleSet, version: u64) -> ActiveRules {
        let defaults_fingerprint = rules.defaults().limit_fingerprint();
        ActiveRules { rules, version, defaults_fingerprint }
    }

    /// The rate limit of a route (its own or the defaults' it inherits), or of a request that
    /// matched none, with the fingerprint of its scope: stable across processes, so instances
    /// sharing a store share the scope's buckets, and a reload that keeps a limit keeps them.
    pub fn rate_limit<'a>(&'a self, route: Option<&'a Route>) -> Option<(&'a RateLimitSpec, u64)> {
        match route {
            Some(r) => r.rate_limit.as_ref().map(|spec| (spec, r.fingerprint)),
            None => self.rules.defaults().rate_limit.as_ref().map(|spec| (spec, self.defaults_fingerprint)),
        }
    }
}
