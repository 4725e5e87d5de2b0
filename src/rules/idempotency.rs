//! `[route.idempotency]`: compiled to plain data (the guard is `guard/idempotency.rs`, the keys
//! and stored answers live in `state/`).

use std::time::Duration;

use http::{HeaderName, Method};
use toml::Spanned;

use super::diag::Ctx;
use super::raw::RawIdempotency;
use super::validate::valid_pointer;

const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_LEASE: Duration = Duration::from_secs(60);
const DEFAULT_MAX_RESPONSE: u64 = 64 * 1024;
/// The largest `max_response`: every stored answer is held in memory (or Redis) for `retention`.
pub const MAX_MAX_RESPONSE: u64 = 1024 * 1024;
/// The longest key, as the IETF draft's examples and payment APIs allow.
pub const MAX_KEY_LEN: usize = 255;

/// Where an attempt's idempotency key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Header(HeaderName),
    /// A field of the JSON request body (a JSON pointer).
    Json(String),
    /// A field of the form-encoded request body.
    Form(String),
    /// A parameter of the query string.
    Query(String),
}

impl KeySource {
    /// Whether the key is read from the request body.
    pub fn needs_body(&self) -> bool {
        matches!(self, KeySource::Json(_) | KeySource::Form(_))
    }

    /// As written in the rule file (`json:/order_id`), for messages.
    pub fn spec(&self) -> String {
        match self {
            KeySource::Header(h) => format!("header:{h}"),
            KeySource::Json(p) => format!("json:{p}"),
            KeySource::Form(f) => format!("form:{f}"),
            KeySource::Query(q) => format!("query:{q}"),
        }
    }
}

/// Whose key it is: an answer is only ever replayed within its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyScope {
    /// The resolved client IP (IPv6 by its /64).
    Ip,
    /// The value(s) of a request header (e.g. `authorization`); a request without it is scoped
    /// to its client IP.
    Header(HeaderName),
    /// Every client of the route shares one key space (the key is an order number the shop
    /// issued).
    Route,
}

/// What becomes of the key when the backend did not answer in time (it may have charged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// Held as indeterminate for `retention`: later attempts get 409.
    Hold,
    /// Freed: the next attempt is forwarded.
    Release,
}

/// One compiled `[route.idempotency]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: KeySource,
    pub required: bool,
    pub scope: KeyScope,
    pub retention: Duration,
    pub lease: Duration,
    pub on_timeout: OnTimeout,
    pub max_response: u64,
}

pub(super) fn compile(
    cx: &mut Ctx<'_>,
    methods: Option<&[Method]>,
    upstream_timeout: Duration,
    raw: Spanned<RawIdempotency>,
) -> Option<Idempotency> {
    let span = raw.span();
    let r = raw.into_inner();
    let key = match &r.key {
        None => Some(KeySource::Header(HeaderName::from_static("idempotency-key"))),
        Some(k) => key_source(cx, k),
    };
    if let (Some(k), Some(methods)) = (&key, methods) {
        let bodiless = [Method::GET, Method::HEAD, Method::OPTIONS];
        if k.needs_body() && methods.iter().all(|m| bodiless.contains(m)) {
            let at = r.key.as_ref().map_or(span.clone(), Spanned::span);
            cx.err(&at, format!("key \"{}\" is read from the request body, but the route only takes requests without one (match.methods)", k.spec()));
        }
    }
    let scope = match &r.scope {
        None => Some(KeyScope::Ip),
        Some(s) => key_scope(cx, s),
    };
    let retention = r.retention.as_ref().map_or(Some(DEFAULT_RETENTION), |v| cx.positive_duration(v, "retention"));
    let lease = r.lease.as_ref().map_or(Some(DEFAULT_LEASE), |v| cx.positive_duration(v, "lease"));
    if let Some(l) = lease {
        // The known failure of idempotency layers: a lease that runs out while the first attempt
        // still waits for the backend lets a duplicate through.
        if l < upstream_timeout {
            let at = r.lease.as_ref().map_or(span.clone(), Spanned::span);
            cx.err(
                &at,
                format!(
                    "lease ({l:?}) is shorter than the upstream response_timeout ({upstream_timeout:?}): a second attempt could be forwarded while the first still waits for the backend"
                ),
            );
        }
    }
    let on_timeout = match &r.on_timeout {
        None => Some(OnTimeout::Hold),
        Some(v) => match v.get_ref().as_str() {
            "hold" => Some(OnTimeout::Hold),
            "release" => Some(OnTimeout::Release),
            other => {
                cx.err(&v.span(), format!("unknown on_timeout \"{other}\" (expected \"hold\" or \"release\")"));
                None
            }
        },
    };
    let max_response = match &r.max_response {
        None => Some(DEFAULT_MAX_RESPONSE),
        Some(s) => match cx.size(s) {
            Some(n @ 1..=MAX_MAX_RESPONSE) => Some(n),
            Some(_) => {
                cx.err(&s.span(), format!("max_response must be 1 byte to {}KiB", MAX_MAX_RESPONSE / 1024));
                None
            }
            None => None,
        },
    };
    Some(Idempotency {
        key: key?,
        required: r.required.unwrap_or(true),
        scope: scope?,
        retention: retention?,
        lease: lease?,
        on_timeout: on_timeout?,
        max_response: max_response?,
    })
}

fn header_name(cx: &mut Ctx<'_>, at: &Spanned<String>, h: &str, what: &str) -> Option<HeaderName> {
    match HeaderName::from_bytes(h.trim().as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            cx.err(&at.span(), format!("invalid header name \"{h}\" in idempotency {what}"));
            None
        }
    }
}

fn key_source(cx: &mut Ctx<'_>, k: &Spanned<String>) -> Option<KeySource> {
    let s = k.get_ref().as_str();
    match s.split_once(':') {
        Some(("header", h)) => header_name(cx, k, h, "key").map(KeySource::Header),
        Some(("json", p)) if p.starts_with('/') && valid_pointer(p) => Some(KeySource::Json(p.to_owned())),
        Some(("json", p)) => {
            cx.err(&k.span(), format!("invalid JSON pointer \"{p}\" (it starts with '/': \"json:/order_id\")"));
            None
        }
        Some(("form", f)) if !f.is_empty() => Some(KeySource::Form(f.to_owned())),
        Some(("query", q)) if !q.is_empty() => Some(KeySource::Query(q.to_owned())),
        _ => {
            cx.err(
                &k.span(),
                format!("unknown idempotency key \"{s}\" (expected \"header:<name>\", \"json:<pointer>\", \"form:<field>\" or \"query:<name>\")"),
            );
            None
        }
    }
}

fn key_scope(cx: &mut Ctx<'_>, s: &Spanned<String>) -> Option<KeyScope> {
    match s.get_ref().as_str() {
        "ip" => Some(KeyScope::Ip),
        "route" => Some(KeyScope::Route),
        v => match v.split_once(':') {
            Some(("header", h)) => header_name(cx, s, h, "scope").map(KeyScope::Header),
            _ => {
                cx.err(
                    &s.span(),
                    format!("unknown idempotency scope \"{v}\" (expected \"ip\", \"header:<name>\" or \"route\")"),
                );
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::path::PathBuf;

    use super::*;

    fn load(body: &str, env: &crate::rules::Env) -> Result<crate::rules::RuleSet, Vec<String>> {
        let src = format!("[[route]]\nname = \"pay\"\nmatch = {{ path = \"/pay\", methods = [\"POST\"] }}\n[route.idempotency]\n{body}");
        crate::rules::load_sources_with(&[(PathBuf::from("r.toml"), src)], env)
            .map_err(|d| d.into_iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn defaults_and_every_key() {
        let env = crate::rules::Env::default();
        let set = load("", &env).unwrap();
        let i = set.routes()[0].idempotency.clone().unwrap();
        assert_eq!(i.key, KeySource::Header(HeaderName::from_static("idempotency-key")));
        assert!(i.required);
        assert_eq!((i.scope, i.retention, i.lease), (KeyScope::Ip, DEFAULT_RETENTION, DEFAULT_LEASE));
        assert_eq!((i.on_timeout, i.max_response), (OnTimeout::Hold, 64 * 1024));
        assert!(set.routes()[0].needs_body(), "the fingerprint covers the body");

        let set = load(
            "key = \"json:/order_id\"\nrequired = false\nscope = \"header:Authorization\"\nretention = \"1h\"\nlease = \"45s\"\non_timeout = \"release\"\nmax_response = \"1KiB\"\n",
            &env,
        )
        .unwrap();
        let i = set.routes()[0].idempotency.clone().unwrap();
        assert_eq!(i.key, KeySource::Json("/order_id".into()));
        assert_eq!(i.scope, KeyScope::Header(HeaderName::from_static("authorization")));
        assert_eq!((i.required, i.retention, i.lease), (false, Duration::from_secs(3600), Duration::from_secs(45)));
        assert_eq!((i.on_timeout, i.max_response), (OnTimeout::Release, 1024));
        for (k, want) in [
            ("form:order", KeySource::Form("order".into())),
            ("query:o", KeySource::Query("o".into())),
            ("header:x-order", KeySource::Header(HeaderName::from_static("x-order"))),
        ] {
            let set = load(&format!("key = \"{k}\"\n"), &env).unwrap();
            assert_eq!(set.routes()[0].idempotency.as_ref().unwrap().key, want);
        }
    }

    #[test]
    fn problems_are_reported_at_their_value() {
        let env = crate::rules::Env::default();
        let errs = load(
            "key = \"cookie:x\"\nscope = \"user\"\nretention = \"0s\"\non_timeout = \"retry\"\nmax_response = \"2MiB\"\n",
            &env,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 5, "{errs:?}");
        assert!(errs[0].starts_with("r.toml:5:7: unknown idempotency key \"cookie:x\""), "{errs:?}");
        assert!(errs[1].starts_with("r.toml:6:9: unknown idempotency scope \"user\""), "{errs:?}");
        assert!(errs[2].starts_with("r.toml:7:13: retention must be greater than zero"), "{errs:?}");
        assert!(errs[3].starts_with("r.toml:8:14: unknown on_timeout \"retry\""), "{errs:?}");
        assert!(errs[4].starts_with("r.toml:9:16: max_response must be"), "{errs:?}");
        let errs = load("key = \"json:order\"\n", &env).unwrap_err();
        assert!(errs[0].contains("invalid JSON pointer"), "{errs:?}");
    }

    #[test]
    fn a_lease_shorter_than_the_upstream_timeout_is_refused() {
        let slow = crate::rules::Env { upstream_timeout: Duration::from_secs(90) };
        let errs = load("lease = \"60s\"\n", &slow).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("r.toml:5:9: lease (60s) is shorter than the upstream response_timeout (90s)"),
            "{errs:?}"
        );
        // The default lease too, reported at the table.
        let errs = load("", &slow).unwrap_err();
        assert!(errs[0].starts_with("r.toml:4:1: lease (60s)"), "{errs:?}");
        assert!(load("lease = \"90s\"\n", &slow).is_ok());
    }

    #[test]
    fn a_body_key_on_a_bodiless_route_is_refused() {
        let src = "[[route]]\nname = \"g\"\nmatch = { path = \"/g\", methods = [\"GET\"] }\n[route.idempotency]\nkey = \"form:order\"\n";
        let errs = crate::rules::load_sources(&[(PathBuf::from("r.toml"), src.into())]).unwrap_err();
        assert!(
            errs[0].to_string().starts_with("r.toml:5:7: key \"form:order\" is read from the request body"),
            "{errs:?}"
        );
    }
}
