//! `[[route.failure_limit]]`: compiled to plain data (the guard is `guard/failure_limit.rs`, the
//! counts and bans live in `state/`).

use std::time::Duration;

use http::{HeaderName, Method};
use toml::Spanned;

use super::diag::Ctx;
use super::fnv::Fnv;
use super::raw::{RawFailure, RawFailureLimit, RawJsonMatch};
use super::validate::valid_pointer;

/// The most failures one rule may count before banning: the memory store keeps that many
/// times per key.
pub const MAX_THRESHOLD: i64 = 1_000;
/// The largest `ban_factor`.
pub const MAX_BAN_FACTOR: i64 = 1_000;
const DEFAULT_BAN_FACTOR: u32 = 2;
const DEFAULT_MAX_BAN: Duration = Duration::from_secs(24 * 3600);

/// Whose failures are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailureKey {
    /// The resolved client IP (IPv6 by its /64).
    Ip,
    /// The value(s) of a request header.
    Header(HeaderName),
    /// A field of the JSON request body (a JSON pointer).
    Json(String),
    /// A field of the form-encoded request body.
    Form(String),
}

impl FailureKey {
    /// Whether the key is read from the request body.
    pub fn needs_body(&self) -> bool {
        matches!(self, FailureKey::Json(_) | FailureKey::Form(_))
    }

    /// As written in the rule file, in two parts (`("json:", "/user_id")`): hashed per request
    /// without building the string.
    pub fn spec_parts(&self) -> (&'static str, &str) {
        match self {
            FailureKey::Ip => ("ip", ""),
            FailureKey::Header(h) => ("header:", h.as_str()),
            FailureKey::Json(p) => ("json:", p),
            FailureKey::Form(f) => ("form:", f),
        }
    }

    /// As written in the rule file (`json:/user_id`), for labels and logs.
    pub fn spec(&self) -> String {
        let (kind, name) = self.spec_parts();
        format!("{kind}{name}")
    }
}

/// One status of `failure.status`: an exact code or a class (`4` for `"4xx"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    Class(u16),
}

impl StatusMatch {
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Code(c) => status == c,
            StatusMatch::Class(c) => status / 100 == c,
        }
    }
}

/// `failure.json`: a failure when the field at `at` equals (or, with `not`, differs from) the
/// value. A missing field is no failure either way.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonMatch {
    pub at: String,
    pub value: serde_json::Value,
    /// `not = …` rather than `equals = …`.
    pub negated: bool,
}

impl JsonMatch {
    /// Whether the backend's answer `doc` is a failure by this rule.
    pub fn matches(&self, doc: &serde_json::Value) -> bool {
        match doc.pointer(&self.at) {
            None => false,
            Some(v) => (*v == self.value) != self.negated,
        }
    }
}

/// One compiled `[[route.failure_limit]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureLimit {
    pub key: FailureKey,
    pub status: Vec<StatusMatch>,
    pub json: Option<JsonMatch>,
    pub threshold: u32,
    pub window: Duration,
    pub ban: Duration,
    pub ban_factor: u32,
    pub max_ban: Duration,
    /// Stable across reloads while the route name, the rule's position and its key stay the
    /// same: the counts and bans belong to it.
    pub scope: u64,
}

impl FailureLimit {
    /// Whether the backend's answer status alone makes it a failure.
    pub fn status_fails(&self, status: u16) -> bool {
        self.status.iter().any(|s| s.matches(status))
    }
}

pub(super) fn compile(
    cx: &mut Ctx<'_>,
    route: &str,
    methods: Option<&[Method]>,
    list: Spanned<Vec<Spanned<RawFailureLimit>>>,
) -> Vec<FailureLimit> {
    let mut out = Vec::new();
    for (index, raw) in list.into_inner().into_iter().enumerate() {
        let span = raw.span();
        if let Some(rule) = compile_one(cx, route, index, methods, raw.into_inner(), &span) {
            out.push(rule);
        }
    }
    out
}

fn compile_one(
    cx: &mut Ctx<'_>,
    route: &str,
    index: usize,
    methods: Option<&[Method]>,
    r: RawFailureLimit,
    span: &std::ops::Range<usize>,
) -> Option<FailureLimit> {
    let key = match &r.key {
        None => Some(FailureKey::Ip),
        Some(k) => key(cx, k),
    };
    if let (Some(k), Some(methods)) = (&key, methods) {
        let bodiless = [Method::GET, Method::HEAD, Method::OPTIONS];
        if k.needs_body() && methods.iter().all(|m| bodiless.contains(m)) {
            let at = r.key.as_ref().map_or(span.clone(), Spanned::span);
            cx.err(&at, format!("key \"{}\" is read from the request body, but the route only takes requests without one (match.methods)", k.spec()));
        }
    }
    let (status, json) = failure(cx, r.failure);
    let threshold = match *r.threshold.get_ref() {
        n @ 1..=MAX_THRESHOLD => u32::try_from(n).ok(),
        _ => {
            cx.err(&r.threshold.span(), format!("threshold must be 1 to {MAX_THRESHOLD}"));
            None
        }
    };
    let window = cx.positive_duration(&r.window, "window");
    let ban = cx.positive_duration(&r.ban, "ban");
    let ban_factor = match &r.ban_factor {
        None => Some(DEFAULT_BAN_FACTOR),
        Some(f) => match *f.get_ref() {
            n @ 1..=MAX_BAN_FACTOR => u32::try_from(n).ok(),
            _ => {
                cx.err(
                    &f.span(),
                    format!("ban_factor must be 1 to {MAX_BAN_FACTOR} (1: every ban as long as the first)"),
                );
                None
            }
        },
    };
    let max_ban = match &r.max_ban {
        None => Some(DEFAULT_MAX_BAN.max(ban.unwrap_or_default())),
        Some(m) => {
            let d = cx.positive_duration(m, "max_ban");
            if let (Some(d), Some(b)) = (d, ban) {
                if d < b {
                    cx.err(&m.span(), "max_ban must not be shorter than ban");
                }
            }
            d
        }
    };
    let key = key?;
    let scope = scope(route, index, &key);
    Some(FailureLimit {
        key,
        status: status?,
        json: json?,
        threshold: threshold?,
        window: window?,
        ban: ban?,
        ban_factor: ban_factor?,
        max_ban: max_ban?,
        scope,
    })
}

fn key(cx: &mut Ctx<'_>, k: &Spanned<String>) -> Option<FailureKey> {
    let s = k.get_ref().as_str();
    if s == "ip" {
        return Some(FailureKey::Ip);
    }
    let bad = |cx: &mut Ctx<'_>, msg: String| {
        cx.err(&k.span(), msg);
        None
    };
    match s.split_once(':') {
        Some(("header", h)) => match HeaderName::from_bytes(h.trim().as_bytes()) {
            Ok(name) => Some(FailureKey::Header(name)),
            Err(_) => bad(cx, format!("invalid header name \"{h}\" in failure_limit key")),
        },
        Some(("json", p)) if p.starts_with('/') && valid_pointer(p) => Some(FailureKey::Json(p.to_owned())),
        Some(("json", p)) => bad(cx, format!("invalid JSON pointer \"{p}\" (it starts with '/': \"json:/user_id\")")),
        Some(("form", f)) if !f.is_empty() => Some(FailureKey::Form(f.to_owned())),
        _ => bad(
            cx,
            format!(
                "unknown failure_limit key \"{s}\" (expected \"ip\", \"header:<name>\", \"json:<pointer>\" or \"form:<field>\")"
            ),
        ),
    }
}

/// `(status, json)`; `None` for a part that has a problem (reported).
#[allow(clippy::type_complexity)]
fn failure(cx: &mut Ctx<'_>, f: Spanned<RawFailure>) -> (Option<Vec<StatusMatch>>, Option<Option<JsonMatch>>) {
    let span = f.span();
    let f = f.into_inner();
    if f.status.is_none() && f.json.is_none() {
        cx.err(&span, "failure needs `status` or `json` (or both): what makes an answer a failed attempt");
        return (None, None);
    }
    let mut ok = true;
    let mut status = Vec::new();
    if let Some(list) = &f.status {
        if list.get_ref().is_empty() {
            cx.err(&list.span(), "status must not be empty (omit it to classify by `json` alone)");
            ok = false;
        }
        for item in list.get_ref() {
            let s = item.get_ref().trim();
            let parsed = match s.as_bytes() {
                [c @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => Some(StatusMatch::Class(u16::from(c - b'0'))),
                _ => s.parse::<u16>().ok().filter(|c| (100..=599).contains(c)).map(StatusMatch::Code),
            };
            match parsed {
                Some(m) => status.push(m),
                None => {
                    cx.err(&item.span(), format!("\"{s}\" is not a status (100-599) or a class (\"4xx\")"));
                    ok = false;
                }
            }
        }
    }
    let json = match f.json {
        None => Some(None),
        Some(j) => json_match(cx, j).map(Some),
    };
    (ok.then_some(status), json)
}

fn json_match(cx: &mut Ctx<'_>, j: Spanned<RawJsonMatch>) -> Option<JsonMatch> {
    let span = j.span();
    let j = j.into_inner();
    let at = j.at.get_ref();
    let pointer_ok = at.starts_with('/') && valid_pointer(at);
    if !pointer_ok {
        cx.err(&j.at.span(), format!("invalid JSON pointer \"{at}\" (it starts with '/': \"/code\")"));
    }
    let (value, negated) = match (j.equals, j.not) {
        (Some(v), None) => (v, false),
        (None, Some(v)) => (v, true),
        _ => {
            cx.err(&span, "json needs exactly one of `equals` or `not`");
            return None;
        }
    };
    let value_span = value.span();
    let value = match serde_json::to_value(value.into_inner()) {
        Ok(v @ (serde_json::Value::String(_) | serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v,
        _ => {
            cx.err(&value_span, "the value to compare must be a string, a number or a boolean");
            return None;
        }
    };
    pointer_ok.then(|| JsonMatch { at: at.clone(), value, negated })
}

/// FNV-1a over the route name, the rule's position and its key: stable across processes.
fn scope(route: &str, index: usize, key: &FailureKey) -> u64 {
    let mut h = Fnv::new();
    h.bytes(b"failure_limit\xff");
    h.bytes(route.as_bytes());
    h.bytes(&[0xff]);
    h.bytes(&(index as u64).to_le_bytes());
    h.bytes(key.spec().as_bytes());
    h.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::path::PathBuf;

    use super::*;

    fn compile_text(rule: &str) -> Result<Vec<FailureLimit>, Vec<String>> {
        let text = format!("[[route]]\nname = \"pay\"\nmatch = {{ path = \"/pay\" }}\n{rule}");
        crate::rules::load_sources(&[(PathBuf::from("r.toml"), text)])
            .map(|set| set.routes()[0].failure_limits.clone())
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_full_rule_compiles() {
        let rules = compile_text(
            "[[route.failure_limit]]\nkey = \"json:/user_id\"\n\
             failure = { status = [\"402\", \"4xx\"], json = { at = \"/code\", equals = \"FAIL\" } }\n\
             threshold = 5\nwindow = \"10m\"\nban = \"15m\"\nban_factor = 3\nmax_ban = \"24h\"\n\
             [[route.failure_limit]]\nfailure = { status = [\"402\"] }\nthreshold = 20\nwindow = \"1h\"\nban = \"1h\"\n",
        )
        .unwrap();
        assert_eq!(rules.len(), 2);
        let r = &rules[0];
        assert_eq!(r.key, FailureKey::Json("/user_id".into()));
        assert_eq!(r.status, [StatusMatch::Code(402), StatusMatch::Class(4)]);
        assert!(r.status_fails(402) && r.status_fails(404) && !r.status_fails(200) && !r.status_fails(502));
        let j = r.json.as_ref().unwrap();
        assert!(j.matches(&serde_json::json!({"code": "FAIL"})));
        assert!(!j.matches(&serde_json::json!({"code": "SUCCESS"})));
        assert!(!j.matches(&serde_json::json!({})), "a missing field is no failure");
        assert_eq!(
            (r.threshold, r.window, r.ban, r.ban_factor),
            (5, Duration::from_secs(600), Duration::from_secs(900), 3)
        );
        // Defaults: keyed by IP, bans doubling up to a day.
        let d = &rules[1];
        assert_eq!((&d.key, d.ban_factor, d.max_ban), (&FailureKey::Ip, 2, Duration::from_secs(86_400)));
        assert_ne!(r.scope, d.scope);
    }

    #[test]
    fn not_compares_present_fields_only() {
        let rules = compile_text(
            "[[route.failure_limit]]\nfailure = { json = { at = \"/result/ok\", not = true } }\n\
             threshold = 3\nwindow = \"1m\"\nban = \"1m\"\n",
        )
        .unwrap();
        let j = rules[0].json.as_ref().unwrap();
        assert!(j.matches(&serde_json::json!({"result": {"ok": false}})));
        assert!(!j.matches(&serde_json::json!({"result": {"ok": true}})));
        assert!(!j.matches(&serde_json::json!({"result": {}})));
    }

    #[test]
    fn every_problem_is_reported_at_its_value() {
        let e = compile_text(
            "[[route.failure_limit]]\nkey = \"cookie:sid\"\nfailure = { status = [\"4xy\", \"600\"], json = { at = \"code\", equals = \"F\", not = \"G\" } }\n\
             threshold = 0\nwindow = \"0s\"\nban = \"10m\"\nban_factor = 0\nmax_ban = \"5m\"\n\
             [[route.failure_limit]]\nfailure = {}\nthreshold = 1\nwindow = \"1m\"\nban = \"1m\"\n",
        )
        .unwrap_err();
        let want = [
            "r.toml:5:7: unknown failure_limit key \"cookie:sid\"",
            "r.toml:6:23: \"4xy\" is not a status",
            "r.toml:6:30: \"600\" is not a status",
            "r.toml:6:45: json needs exactly one of `equals` or `not`",
            "r.toml:6:52: invalid JSON pointer \"code\"",
            "r.toml:7:13: threshold must be 1 to 1000",
            "r.toml:8:10: window must be greater than zero",
            "r.toml:10:14: ban_factor must be 1 to 1000",
            "r.toml:11:11: max_ban must not be shorter than ban",
            "r.toml:13:11: failure needs `status` or `json`",
        ];
        for (got, want) in e.iter().zip(want.iter()) {
            assert!(got.starts_with(want), "\n got: {got}\nwant: {want}\n all: {e:#?}");
        }
        assert_eq!(e.len(), want.len(), "{e:#?}");
    }

    #[test]
    fn a_body_key_on_a_route_without_bodies_is_refused() {
        let text = "[[route]]\nname = \"r\"\nmatch = { path = \"/r\", methods = [\"GET\"] }\n\
                    [[route.failure_limit]]\nkey = \"form:card_bin\"\nfailure = { status = [\"402\"] }\n\
                    threshold = 3\nwindow = \"1m\"\nban = \"1m\"\n";
        let e = crate::rules::load_sources(&[(PathBuf::from("r.toml"), text.to_owned())]).unwrap_err();
        assert!(e[0].to_string().contains("is read from the request body"), "{e:?}");
    }
}
