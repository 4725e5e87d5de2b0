//! The rule set that is serving right now, together with the state compiled from it (rate
//! limiters). Swapped as one unit so a request never sees rules from one version and limiters
//! from another.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Route, RuleSet};
use crate::guard::rate_limit::Limiter;

pub struct ActiveRules {
    pub rules: RuleSet,
    pub version: u64,
    /// Rate limiters by the fingerprint of their scope (route, or `[defaults]`).
    pub limiters: HashMap<u64, Arc<Limiter>>,
    defaults_fingerprint: u64,
}

pub type SharedRules = Arc<ArcSwap<ActiveRules>>;

impl ActiveRules {
    /// Builds the active set, reusing the limiters (and so the buckets) of `previous` wherever
    /// a scope's limit did not change.
    pub fn new(rules: RuleSet, version: u64, previous: Option<&ActiveRules>) -> ActiveRules {
        let mut limiters = HashMap::new();
        let scopes = rules
            .routes()
            .iter()
            .map(|r| (r.fingerprint, r.rate_limit.as_ref()))
            .chain(std::iter::once((rules.defaults().limit_fingerprint(), rules.defaults().rate_limit.as_ref())));
        for (fp, spec) in scopes {
            let Some(spec) = spec else { continue };
            if limiters.contains_key(&fp) {
                continue;
            }
            let reused = previous.and_then(|p| p.limiters.get(&fp)).cloned();
            limiters.insert(fp, reused.unwrap_or_else(|| Arc::new(Limiter::new(spec))));
        }
        let defaults_fingerprint = rules.defaults().limit_fingerprint();
        ActiveRules { rules, version, limiters, defaults_fingerprint }
    }

    /// The limiter for a route (or for requests that matched none).
    pub fn limiter(&self, route: Option<&Route>) -> Option<&Arc<Limiter>> {
        self.limiters.get(&self.limit_scope(route))
    }

    /// The fingerprint of a route's rate-limit scope (or of `[defaults]`): stable across
    /// processes, so instances sharing a store share the scope's buckets.
    pub fn limit_scope(&self, route: Option<&Route>) -> u64 {
        route.map_or(self.defaults_fingerprint, |r| r.fingerprint)
    }
}
