//! Rule files (`rules/*.toml`): parsed with spans into serde mirrors ([`raw`]), compiled into a
//! [`RuleSet`] whose routes carry their effective, fully resolved settings ([`compile`]), and
//! matched by host/path/method without scanning every route ([`router`]).
//!
//! Loading collects every problem across every file and reports each as
//! `file:line:col: message` ([`Diagnostic`]). A TOML syntax error, an unknown key or a wrong
//! type stops that one file (serde stops there); once a file deserializes, every semantic
//! problem in it is reported at the offending value.
//!
//! Path matching is ASCII case-insensitive and ignores trailing slashes (`/Pay/Notify/` matches
//! a route for `/pay/notify`): a backend that routes case-insensitively (Express does by default)
//! must not be reachable around a rule by changing case. The caller passes a path without its
//! query string, and should normalise dot segments and duplicate slashes before matching.

pub mod active;
pub mod card_data;
pub mod compile;
pub mod diag;
pub mod failure_limit;
mod fnv;
pub mod hosts;
pub mod idempotency;
pub mod injection;
pub mod ipmatch;
pub mod origin;
pub mod raw;
pub mod router;
pub mod validate;
pub mod watch;

pub use card_data::{CardData, OnRequest, OnResponse};
pub use diag::Diagnostic;
pub use failure_limit::{FailureKey, FailureLimit, JsonMatch, StatusMatch};
pub use hosts::Hosts;
pub use idempotency::{Idempotency, KeyScope, KeySource, OnTimeout};
pub use ipmatch::IpMatcher;
pub use origin::Origin;
pub use validate::{Bound, FieldAt, FieldRule, FieldType, Literal, Validate};

use crate::units::Rate;
use http::{HeaderName, HeaderValue, Method};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default body cap when neither `[defaults]` nor the route sets one: 1 MiB.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

/// What to do with a request that matches no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DefaultAction {
    /// Forward it (`"forward"`, the default).
    Forward,
    /// Answer 404 `no_route` (`"deny"`).
    Deny,
}

/// Whether a route's decisions are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Reject what fails (`"enforce"`, the default).
    Enforce,
    /// Run every check, record `would_block`, forward anyway (`"monitor"`).
    Monitor,
}

/// What to do when a shared state store is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailMode {
    /// Reject with 503 `state_unavailable` (`"fail_closed"`).
    Closed,
    /// Let the request through (`"fail_open"`).
    Open,
}

/// `on_state_error = { replay, rate_limit }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OnStateError {
    /// Replay store unreachable; default [`FailMode::Closed`].
    pub replay: FailMode,
    /// Rate-limit store unreachable; default [`FailMode::Open`].
    pub rate_limit: FailMode,
    /// Failure-limit store unreachable or full; default [`FailMode::Open`].
    pub failure_limit: FailMode,
    /// Idempotency store unreachable or full; default [`FailMode::Closed`].
    pub idempotency: FailMode,
}

impl Default for OnStateError {
    fn default() -> Self {
        OnStateError {
            replay: FailMode::Closed,
            rate_limit: FailMode::Open,
            failure_limit: FailMode::Open,
            idempotency: FailMode::Closed,
        }
    }
}

/// What rules are checked against besides themselves: the settings of `payguard.toml` a rule
/// must agree with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Env {
    /// `[upstream] response_timeout`: an idempotency `lease` may not be shorter.
    pub upstream_timeout: std::time::Duration,
}

impl Default for Env {
    /// The configuration's defaults.
    fn default() -> Self {
        Env { upstream_timeout: std::time::Duration::from_secs(30) }
    }
}

impl Env {
    pub fn of(config: &crate::config::Config) -> Env {
        Env { upstream_timeout: config.upstream.response_timeout }
    }
}

/// What a rate-limit bucket is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// The resolved client IP (`"ip"`).
    Ip,
    /// One bucket for the whole route (`"route"`).
    Route,
    /// The value of a request header (`"header:<name>"`).
    Header(HeaderName),
}

/// An effective rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimitSpec {
    /// Bucket key.
    pub key: RateKey,
    /// Sustained rate.
    pub rate: Rate,
    /// Bucket size (≥ 1); defaults to `rate.count`.
    pub burst: u32,
}

/// `[defaults]`, resolved.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// For requests that match no route.
    pub action: DefaultAction,
    /// Body cap (default 1 MiB).
    pub max_body: u64,
    /// Denied client addresses.
    pub ip_deny: IpMatcher,
    /// When set, only these addresses may call.
    pub ip_allow: Option<IpMatcher>,
    /// Default rate limit.
    pub rate_limit: Option<RateLimitSpec>,
    /// `card_data`: every route's, unless it says otherwise.
    pub card_data: CardData,
    /// `hosts`: when set, the only names requests may be for (421 otherwise).
    pub hosts: Option<Hosts>,
}

impl Defaults {
    /// Identifies the defaults' rate-limit buckets, shared with every route that inherits them.
    pub fn limit_fingerprint(&self) -> u64 {
        compile::fingerprint(compile::DEFAULTS_SCOPE, self.rate_limit.as_ref())
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            action: DefaultAction::Forward,
            max_body: DEFAULT_MAX_BODY,
            ip_deny: IpMatcher::empty(),
            ip_allow: None,
            rate_limit: None,
            card_data: CardData::OFF,
            hosts: None,
        }
    }
}

/// The path half of `match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// `"/pay/notify"`: that path only (case-insensitive, trailing slashes ignored).
    Exact(String),
    /// `"/api/*"`: `/api` and everything below it. Holds the prefix without `/*`
    /// (`""` for `"/*"`).
    Prefix(String),
}

/// `[route.signature]` as written, for the signature module to compile. Keeps the rule file's
/// path and directory (relative key files resolve against it) and each top-level key's
/// position, so that module can report `file:line:col` problems too.
#[derive(Debug, Clone)]
pub struct RawSignature {
    /// The table as written; `provider` is set.
    pub table: crate::signature::SignatureTable,
    /// The rule file that holds it (as given).
    pub file: PathBuf,
    /// That file's directory.
    pub dir: PathBuf,
    /// Byte span of the table in the rule file.
    pub span: Range<usize>,
    /// 1-based line and column of the table.
    pub line: usize,
    /// 1-based column of the table.
    pub col: usize,
    positions: BTreeMap<String, (usize, usize)>,
}

impl RawSignature {
    pub(crate) fn new(
        table: crate::signature::SignatureTable,
        file: PathBuf,
        dir: PathBuf,
        span: Range<usize>,
        (line, col): (usize, usize),
        positions: BTreeMap<String, (usize, usize)>,
    ) -> Self {
        RawSignature { table, file, dir, span, line, col, positions }
    }

    /// The `provider` value.
    pub fn provider(&self) -> &str {
        self.table.provider.as_ref().and_then(|p| p.get_ref().as_str()).unwrap_or_default()
    }

    /// 1-based (line, col) of a top-level key's value, or of the table when absent.
    pub fn position(&self, key: &str) -> (usize, usize) {
        self.positions.get(key).copied().unwrap_or((self.line, self.col))
    }

    /// A diagnostic at a key's value (or at the table when `key` is `None` or absent).
    pub fn diagnostic(&self, key: Option<&str>, message: impl Into<String>) -> Diagnostic {
        let (line, col) = key.map_or((self.line, self.col), |k| self.position(k));
        Diagnostic { file: self.file.clone(), line, col, message: message.into() }
    }

    /// Resolves a relative path (e.g. `file:../certs/x.pem`) against the rule file's directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        self.dir.join(path)
    }
}

/// One compiled route with its effective settings (defaults already applied).
#[derive(Debug)]
pub struct Route {
    /// Unique name, for logs and metrics.
    pub name: Arc<str>,
    /// Where it is defined: `file:line:col` of its name.
    pub defined_at: Arc<str>,
    /// Host to match (lowercase, no port), or any.
    pub host: Option<String>,
    /// Path to match.
    pub path: PathPattern,
    /// Enforce or monitor.
    pub mode: Mode,
    /// Effective allow list (`None`: everyone).
    pub ip_allow: Option<IpMatcher>,
    /// Effective deny list.
    pub ip_deny: IpMatcher,
    /// Effective rate limit.
    pub rate_limit: Option<RateLimitSpec>,
    /// Fail modes when a shared store is unreachable.
    pub on_state_error: OnStateError,
    /// Effective body cap: `validate.max_body`, else the route's `max_body`, else the default.
    pub max_body: u64,
    /// `[route.validate]`.
    pub validate: Option<Validate>,
    /// `[route.signature]`, raw.
    pub signature: Option<RawSignature>,
    /// The compiled verifier for `signature` (keys loaded at rule load).
    pub verifier: Option<Arc<crate::signature::Signature>>,
    /// `[[route.failure_limit]]`, in file order.
    pub failure_limits: Vec<FailureLimit>,
    /// `[route.idempotency]`.
    pub idempotency: Option<Idempotency>,
    /// `[route.card_data]` over `defaults.card_data`.
    pub card_data: CardData,
    /// `[route.origin]`.
    pub origin: Option<Origin>,
    /// `[route.injection]`.
    pub injection: Option<injection::Injection>,
    /// Stable hash of the route name and its effective rate-limit config: unchanged across a
    /// reload exactly when limiter state can be kept.
    pub fingerprint: u64,
    /// The route's metric handles that requests bump.
    pub counters: Arc<crate::metrics::RouteCounters>,
    pub(crate) methods: Option<Vec<Method>>,
    /// Union of the methods of every route sharing this host + path (for `Allow`).
    pub(crate) allow: Option<Vec<Method>>,
}

impl Route {
    /// Whether this route accepts `method` (`match.methods` absent = any).
    pub fn allows_method(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    /// This route's own `match.methods` (`None` = any).
    pub fn methods(&self) -> Option<&[Method]> {
        self.methods.as_deref()
    }

    /// The methods accepted at this route's host + path by any route (several routes may share
    /// a path with different methods), sorted; `None` = any. For the `Allow` header of a 405.
    pub fn methods_allowed(&self) -> Option<&[Method]> {
        self.allow.as_deref()
    }

    /// [`Self::methods_allowed`] as an `Allow` header value (`"GET, POST"`); `None` = any.
    pub fn allow_header(&self) -> Option<HeaderValue> {
        let methods = self.allow.as_ref()?;
        let joined = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
        HeaderValue::from_str(&joined).ok()
    }

    /// Whether the body must be buffered: body validation (schema or fields), a signature, a
    /// failure limit keyed by a body field, idempotency (its fingerprint covers the body), or
    /// card numbers looked for in requests.
    pub fn needs_body(&self) -> bool {
        self.signature.is_some()
            || self.idempotency.is_some()
            || self.card_data.scans_requests()
            || self.injection.as_ref().is_some_and(|i| i.action != injection::InjectionAction::Off)
            || self.validate.as_ref().is_some_and(Validate::needs_body)
            || self.failure_limits.iter().any(|f| f.key.needs_body())
    }
}

/// Result of [`RuleSet::route`].
#[derive(Debug, Clone, Copy)]
pub enum RouteLookup<'a> {
    /// A route matched host, path and method.
    Matched(&'a Arc<Route>),
    /// The most specific route(s) for host + path do not accept the method: 405.
    MethodNotAllowed(&'a Arc<Route>),
    /// Nothing matched: apply `defaults.action`.
    NoRoute,
}

/// A compiled, immutable rule set. Hold it in an `Arc` (behind an `ArcSwap`).
#[derive(Debug)]
pub struct RuleSet {
    defaults: Defaults,
    routes: Vec<Arc<Route>>,
    router: router::Router,
}

impl RuleSet {
    /// No routes, forward everything, no limits.
    pub fn empty() -> RuleSet {
        RuleSet { defaults: Defaults::default(), routes: Vec::new(), router: router::Router::default() }
    }

    pub(crate) fn from_parts(defaults: Defaults, routes: Vec<Arc<Route>>, router: router::Router) -> RuleSet {
        RuleSet { defaults, routes, router }
    }

    /// `[defaults]`, resolved.
    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    /// Every route in declaration order (file-name order, then order in the file).
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Finds the route for a request. `host` is the Host header or `:authority` (any case,
    /// port allowed); `path` has no query string.
    ///
    /// Host-specific routes are tried first, then host-less ones. Within each, an exact path
    /// beats a prefix and a longer prefix beats a shorter one; among routes with the same
    /// host and path the first declared that accepts the method wins, and when none does the
    /// result is [`RouteLookup::MethodNotAllowed`] (no fall-through to a shorter prefix).
    /// Costs a bounded number of hash probes, whatever the number of routes.
    pub fn route(&self, host: Option<&str>, path: &str, method: &Method) -> RouteLookup<'_> {
        let mut probes = 0;
        self.route_counting(host, path, method, &mut probes)
    }

    pub(crate) fn route_counting(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        probes: &mut usize,
    ) -> RouteLookup<'_> {
        match self.router.lookup(&self.routes, host, path, method, probes) {
            router::Found::Matched(i) => self.routes.get(i).map_or(RouteLookup::NoRoute, RouteLookup::Matched),
            router::Found::MethodNotAllowed(i) => {
                self.routes.get(i).map_or(RouteLookup::NoRoute, RouteLookup::MethodNotAllowed)
            }
            router::Found::None => RouteLookup::NoRoute,
        }
    }
}

/// Loads every `*.toml` file directly in `dir`, in file-name order. A missing or unreadable
/// directory is one diagnostic at `dir:1:1`; an unreadable file is one at `file:1:1`.
pub fn load_dir(dir: &Path, env: &Env) -> Result<RuleSet, Vec<Diagnostic>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| vec![Diagnostic::at_start(dir, format!("cannot read rules directory: {e}"))])?;
    let mut paths = Vec::new();
    let mut problems = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                let is_toml = path.extension().is_some_and(|e| e == "toml");
                // Follows symlinks: a linked rule file is still a rule file.
                if is_toml && path.is_file() {
                    paths.push(path);
                }
            }
            Err(e) => problems.push(Diagnostic::at_start(dir, format!("cannot list rules directory: {e}"))),
        }
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        match crate::files::read_to_string(&path) {
            Ok(text) => files.push((path, text)),
            Err(e) => problems.push(Diagnostic::at_start(&path, format!("cannot read: {e}"))),
        }
    }
    match load_sources_with(&files, env) {
        Ok(set) if problems.is_empty() => Ok(set),
        Ok(_) => Err(problems),
        Err(mut diags) => {
            problems.append(&mut diags);
            Err(problems)
        }
    }
}

/// Compiles rule files given as `(path, text)`, in the given order. Relative paths inside a
/// file (`json_schema`, signature keys) resolve against the path's parent directory.
pub fn load_sources(files: &[(PathBuf, String)]) -> Result<RuleSet, Vec<Diagnostic>> {
    load_sources_with(files, &Env::default())
}

/// [`load_sources`], checked against the configuration's `env`.
pub fn load_sources_with(files: &[(PathBuf, String)], env: &Env) -> Result<RuleSet, Vec<Diagnostic>> {
    compile::compile(files, env)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn ruleset_is_send_sync_and_empty_forwards() {
        assert_send_sync::<RuleSet>();
        assert_send_sync::<Arc<Route>>();
        let e = RuleSet::empty();
        assert!(e.routes().is_empty());
        assert_eq!(e.defaults().action, DefaultAction::Forward);
        assert_eq!(e.defaults().max_body, 1 << 20);
        assert!(e.defaults().ip_deny.is_empty());
        assert!(e.defaults().ip_allow.is_none());
        assert!(e.defaults().rate_limit.is_none());
        assert!(matches!(e.route(None, "/x", &Method::GET), RouteLookup::NoRoute));
    }

    #[test]
    fn load_dir_missing_is_one_diagnostic_at_dir() {
        let err = load_dir(Path::new("no/such/rules"), &Env::default()).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].to_string().starts_with("no/such/rules:1:1: cannot read rules directory"));
    }

    #[test]
    fn load_dir_reads_toml_files_in_name_order_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.toml"), "[[route]]\nname = \"b\"\nmatch = { path = \"/b\" }\n").unwrap();
        std::fs::write(dir.path().join("a.toml"), "[[route]]\nname = \"a\"\nmatch = { path = \"/a\" }\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not toml [[[").unwrap();
        std::fs::create_dir(dir.path().join("sub.toml")).unwrap();
        let set = load_dir(dir.path(), &Env::default()).unwrap();
        let names: Vec<_> = set.routes().iter().map(|r| r.name.to_string()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn load_dir_reports_errors_from_every_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), "[[route]]\nname = \n").unwrap();
        std::fs::write(dir.path().join("b.toml"), "[defaults]\nmax_body = \"1XB\"\n").unwrap();
        let err = load_dir(dir.path(), &Env::default()).unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(err[0].file.ends_with("a.toml"));
        assert!(err[1].file.ends_with("b.toml"));
        assert_eq!((err[1].line, err[1].col), (2, 12));
    }

    #[test]
    fn raw_signature_positions_and_resolve() {
        std::env::set_var("PAYGUARD_TEST_RAW_SIG", "whsec_test");
        let set = load_sources(&[(
            PathBuf::from("rules/pay.toml"),
            "[[route]]\nname = \"s\"\nmatch = { path = \"/s\" }\n[route.signature]\nprovider = \"stripe\"\nsecrets = [\"env:PAYGUARD_TEST_RAW_SIG\"]\n"
                .to_owned(),
        )])
        .unwrap();
        let sig = set.routes()[0].signature.as_ref().unwrap();
        assert_eq!(sig.provider(), "stripe");
        assert_eq!(sig.position("secrets"), (6, 11));
        assert_eq!(set.routes()[0].verifier.as_ref().unwrap().provider(), "stripe");
        assert_eq!(sig.position("provider"), (5, 12));
        assert_eq!(sig.diagnostic(Some("secrets"), "bad").to_string(), "rules/pay.toml:6:11: bad");
        assert_eq!(sig.resolve("k.pem"), PathBuf::from("rules/k.pem"));
        assert!(set.routes()[0].needs_body());
    }
}
