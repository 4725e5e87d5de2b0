//! Host/path/method → route, in a bounded number of hash probes.
//!
//! Routes are grouped by host (one table per host, plus one for host-less routes). Each table
//! has a map of exact paths and a map of prefixes (keyed without the trailing `/*`). A prefix
//! lookup probes the path's `/` boundaries from the longest to the shortest, starting no deeper
//! than the deepest configured prefix, so its cost depends on the path and the rules' shape,
//! never on the number of routes.

use super::{PathPattern, Route};
use http::Method;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Route indices sharing one host + path, in declaration order.
#[derive(Debug, Default)]
struct Slot {
    routes: Vec<usize>,
}

#[derive(Debug, Default)]
struct PathTable {
    exact: HashMap<Box<str>, Slot>,
    prefix: HashMap<Box<str>, Slot>,
    /// Number of `/` in the deepest prefix key.
    max_prefix_depth: usize,
    /// Length of the longest prefix key.
    max_prefix_len: usize,
}

/// Index into the route list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    Matched(usize),
    MethodNotAllowed(usize),
    None,
}

#[derive(Debug, Default)]
pub(crate) struct Router {
    hosts: HashMap<Box<str>, PathTable>,
    any_host: PathTable,
}

/// Lowercases ASCII, strips trailing slashes (keeping a lone `/`). Borrows when already normal.
pub(crate) fn normalize_path(path: &str) -> Cow<'_, str> {
    let trimmed = path.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() && path.starts_with('/') { "/" } else { trimmed };
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// Whether a normalised host (see [`normalize_host`]) is a DNS name or a bracketed IPv6 address.
pub(crate) fn valid_host(norm: &str) -> bool {
    if let Some(inner) = norm.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !norm.is_empty()
            && norm.len() <= 253
            && norm.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
            && !norm.starts_with('.')
            && !norm.contains("..")
    }
}

/// Lowercases, strips the port (`host:8443`, `[::1]:8443`) and a trailing dot.
pub(crate) fn normalize_host(host: &str) -> Cow<'_, str> {
    let no_port = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => host.get(..=end).unwrap_or(host),
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            // A single colon: host:port. Several: a bare IPv6 address, leave it.
            Some((h, _)) if !h.contains(':') => h,
            _ => host,
        }
    };
    let h = no_port.strip_suffix('.').unwrap_or(no_port);
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

impl PathTable {
    fn insert(&mut self, pattern: &PathPattern, index: usize) {
        match pattern {
            PathPattern::Exact(p) => {
                let key = normalize_path(p).into_owned().into_boxed_str();
                self.exact.entry(key).or_default().routes.push(index);
            }
            PathPattern::Prefix(p) => {
                let key = normalize_prefix(p);
                self.max_prefix_depth = self.max_prefix_depth.max(key.matches('/').count());
                self.max_prefix_len = self.max_prefix_len.max(key.len());
                self.prefix.entry(key.into_boxed_str()).or_default().routes.push(index);
            }
        }
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.exact.values().chain(self.prefix.values())
    }

    fn lookup(&self, routes: &[Arc<Route>], path: &str, method: &Method, probes: &mut usize) -> Found {
        if !self.exact.is_empty() {
            *probes += 1;
            if let Some(slot) = self.exact.get(path) {
                return resolve(routes, slot, method);
            }
        }
        if self.prefix.is_empty() {
            return Found::None;
        }
        // The deepest useful candidate ends before the (max_prefix_depth + 1)-th slash.
        let limit = path.match_indices('/').nth(self.max_prefix_depth).map_or(path.len(), |(i, _)| i);
        let mut candidate_end = Some(limit);
        let mut search_end = limit;
        while let Some(end) = candidate_end {
            if end <= self.max_prefix_len {
                if let Some(candidate) = path.get(..end) {
                    *probes += 1;
                    if let Some(slot) = self.prefix.get(candidate) {
                        return resolve(routes, slot, method);
                    }
                }
            }
            candidate_end = path.get(..search_end).and_then(|p| p.rfind('/'));
            if let Some(i) = candidate_end {
                search_end = i;
            }
        }
        Found::None
    }
}

/// `"/api/"` (from `"/api/*"`) → `"/api"`; root → `""`.
fn normalize_prefix(prefix: &str) -> String {
    prefix.trim_end_matches('/').to_ascii_lowercase()
}

fn resolve(routes: &[Arc<Route>], slot: &Slot, method: &Method) -> Found {
    for &i in &slot.routes {
        if routes.get(i).is_some_and(|r| r.allows_method(method)) {
            return Found::Matched(i);
        }
    }
    slot.routes.first().map_or(Found::None, |&i| Found::MethodNotAllowed(i))
}

impl Router {
    /// Builds from each route's (host, path), indexed in declaration order.
    pub(crate) fn build<'a>(routes: impl Iterator<Item = (Option<&'a str>, &'a PathPattern)>) -> Router {
        let mut router = Router::default();
        for (i, (host, path)) in routes.enumerate() {
            let table = match host {
                Some(h) => router.hosts.entry(normalize_host(h).into_owned().into_boxed_str()).or_default(),
                None => &mut router.any_host,
            };
            table.insert(path, i);
        }
        router
    }

    /// Route indices grouped by host + path, for computing each slot's `Allow` union.
    pub(crate) fn slot_groups(&self) -> Vec<Vec<usize>> {
        self.hosts
            .values()
            .chain(std::iter::once(&self.any_host))
            .flat_map(PathTable::slots)
            .map(|s| s.routes.clone())
            .collect()
    }

    pub(crate) fn lookup(
        &self,
        routes: &[Arc<Route>],
        host: Option<&str>,
        path: &str,
        method: &Method,
        probes: &mut usize,
    ) -> Found {
        let path = normalize_path(path);
        if let Some(host) = host.filter(|_| !self.hosts.is_empty()) {
            let host = normalize_host(host);
            *probes += 1;
            if let Some(table) = self.hosts.get(host.as_ref()) {
                let found = table.lookup(routes, &path, method, probes);
                if found != Found::None {
                    return found;
                }
            }
        }
        self.any_host.lookup(routes, &path, method, probes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate::rules::{load_sources, RouteLookup, RuleSet};
    use http::Method;
    use std::fmt::Write as _;
    use std::path::PathBuf;

    fn set(src: &str) -> RuleSet {
        load_sources(&[(PathBuf::from("r.toml"), src.to_owned())])
            .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())
            .unwrap()
    }

    fn name(set: &RuleSet, host: Option<&str>, path: &str, m: &Method) -> String {
        match set.route(host, path, m) {
            RouteLookup::Matched(r) => r.name.to_string(),
            RouteLookup::MethodNotAllowed(r) => format!("405:{}", r.name),
            RouteLookup::NoRoute => "none".into(),
        }
    }

    fn route(name: &str, m: &str) -> String {
        format!("[[route]]\nname = \"{name}\"\nmatch = {{ {m} }}\n")
    }

    #[test]
    fn exact_beats_prefix_and_longest_prefix_wins() {
        let s = set(&[
            route("root", "path = \"/*\""),
            route("api", "path = \"/api/*\""),
            route("v1", "path = \"/api/v1/*\""),
            route("pay", "path = \"/api/v1/pay\""),
        ]
        .concat());
        let g = Method::GET;
        assert_eq!(name(&s, None, "/api/v1/pay", &g), "pay");
        assert_eq!(name(&s, None, "/api/v1/pay/x", &g), "v1");
        assert_eq!(name(&s, None, "/api/v1", &g), "v1");
        assert_eq!(name(&s, None, "/api/v1/", &g), "v1");
        assert_eq!(name(&s, None, "/api/v2", &g), "api");
        assert_eq!(name(&s, None, "/api", &g), "api");
        assert_eq!(name(&s, None, "/apix", &g), "root");
        assert_eq!(name(&s, None, "/", &g), "root");
        assert_eq!(name(&s, None, "", &g), "root");
    }

    #[test]
    fn case_and_trailing_slash_do_not_bypass() {
        let s = set(&[route("n", "path = \"/pay/Notify\""), route("p", "path = \"/Admin/*\"")].concat());
        let p = Method::POST;
        assert_eq!(name(&s, None, "/PAY/notify", &p), "n");
        assert_eq!(name(&s, None, "/pay/notify/", &p), "n");
        assert_eq!(name(&s, None, "/pay/notify//", &p), "n");
        assert_eq!(name(&s, None, "/admin/USERS", &p), "p");
        assert_eq!(name(&s, None, "/pay/notify2", &p), "none");
    }

    #[test]
    fn no_prefix_match_without_routes() {
        let s = set(&route("a", "path = \"/a\""));
        assert_eq!(name(&s, None, "/b", &Method::GET), "none");
        assert_eq!(name(&s, Some("x.com"), "/a", &Method::GET), "a");
    }

    #[test]
    fn host_specific_beats_host_less() {
        let s = set(&[
            route("any-exact", "path = \"/pay\""),
            route("shop-prefix", "path = \"/*\", host = \"Shop.Example.com\""),
            route("shop-pay", "path = \"/pay\", host = \"shop.example.com:8443\""),
        ]
        .concat());
        let g = Method::GET;
        assert_eq!(name(&s, Some("shop.example.com"), "/pay", &g), "shop-pay");
        assert_eq!(name(&s, Some("SHOP.example.com:443"), "/other", &g), "shop-prefix");
        assert_eq!(name(&s, Some("shop.example.com."), "/pay", &g), "shop-pay");
        assert_eq!(name(&s, Some("other.example.com"), "/pay", &g), "any-exact");
        assert_eq!(name(&s, None, "/pay", &g), "any-exact");
        assert_eq!(name(&s, None, "/other", &g), "none");
    }

    #[test]
    fn methods_first_declared_and_405() {
        let s = set(&[
            route("get", "path = \"/o\", methods = [\"GET\"]"),
            route("post", "path = \"/o\", methods = [\"POST\"]"),
            route("post2", "path = \"/o\", methods = [\"POST\", \"PUT\"]"),
            route("pre", "path = \"/o/*\""),
        ]
        .concat());
        assert_eq!(name(&s, None, "/o", &Method::GET), "get");
        assert_eq!(name(&s, None, "/o", &Method::POST), "post");
        assert_eq!(name(&s, None, "/o", &Method::PUT), "post2");
        // No fall-through to the less specific prefix route.
        assert_eq!(name(&s, None, "/o", &Method::DELETE), "405:get");
        let RouteLookup::MethodNotAllowed(r) = s.route(None, "/o", &Method::DELETE) else {
            panic!("expected 405");
        };
        assert_eq!(r.methods_allowed().unwrap(), &[Method::GET, Method::POST, Method::PUT]);
        assert_eq!(r.allow_header().unwrap(), "GET, POST, PUT");
        assert_eq!(r.methods().unwrap(), &[Method::GET]);
        assert_eq!(name(&s, None, "/o/x", &Method::DELETE), "pre");
        let RouteLookup::Matched(pre) = s.route(None, "/o/x", &Method::GET) else {
            panic!("expected match");
        };
        assert!(pre.methods_allowed().is_none() && pre.allow_header().is_none());
    }

    /// Builds `n` routes: exact, prefix and host-specific mixed, at most 3 segments deep.
    fn many(n: usize) -> RuleSet {
        let mut src = String::new();
        for i in 0..n {
            let m = match i % 4 {
                0 => format!("path = \"/svc{i}/pay\""),
                1 => format!("path = \"/svc{i}/api/*\""),
                2 => format!("path = \"/svc{i}/*\", host = \"h{i}.example\""),
                _ => format!("path = \"/svc{i}/x/y\", methods = [\"POST\"]"),
            };
            src.push_str(&route(&format!("r{i}"), &m));
        }
        src.push_str(&route("root", "path = \"/*\""));
        set(&src)
    }

    #[test]
    fn thousand_routes_all_reachable() {
        let s = many(1000);
        assert_eq!(s.routes().len(), 1001);
        for i in 0..1000 {
            let (host, path) = match i % 4 {
                0 => (None, format!("/svc{i}/pay")),
                1 => (None, format!("/svc{i}/api/deep/er/path")),
                2 => (Some(format!("H{i}.example:443")), format!("/svc{i}/any")),
                _ => (None, format!("/svc{i}/x/y")),
            };
            assert_eq!(name(&s, host.as_deref(), &path, &Method::POST), format!("r{i}"));
        }
        assert_eq!(name(&s, None, "/svc3/x/y", &Method::GET), "405:r3");
        assert_eq!(name(&s, Some("h2.example"), "/nope", &Method::GET), "root");
        assert_eq!(name(&s, None, "/svc2/any", &Method::GET), "root");
    }

    #[test]
    fn lookup_cost_does_not_depend_on_route_count() {
        let mut counts = Vec::new();
        for n in [4, 40, 400, 4000] {
            let s = many(n);
            let mut per_path = String::new();
            for (host, path) in [
                (None, "/svc1/api/a/b/c/d/e/f/g"),
                (Some("h2.example"), "/svc2/q"),
                (None, "/unknown/deep/path/with/many/segments/a/b/c/d"),
                (None, "/svc0/pay"),
            ] {
                let mut probes = 0;
                let _ = s.route_counting(host, path, &Method::POST, &mut probes);
                write!(per_path, "{probes},").unwrap();
                // exact + host + at most max_prefix_depth (3) + 1 boundaries per table, 2 tables.
                assert!(probes <= 1 + 2 * (1 + 4), "{probes} probes for {path} with {n} routes");
            }
            counts.push(per_path);
        }
        assert!(counts.windows(2).all(|w| w[0] == w[1]), "{counts:?}");
    }

    #[test]
    fn deep_paths_probe_only_to_the_deepest_prefix() {
        let s = set(&route("a", "path = \"/a/*\""));
        let deep = "/a".to_owned() + &"/x".repeat(10_000);
        let mut probes = 0;
        let found = s.route_counting(None, &deep, &Method::GET, &mut probes);
        assert!(matches!(found, RouteLookup::Matched(r) if &*r.name == "a"));
        assert!(probes <= 3, "{probes}");
    }
}
