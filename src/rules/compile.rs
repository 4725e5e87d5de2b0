//! Raw mirrors → [`RuleSet`]: every value checked and reported at its span, `@set`s expanded,
//! defaults folded into each route so the request path never merges anything.

use super::diag::{self, Ctx, Diag, Source};
use super::fnv::Fnv;
use super::raw::{
    RawDefaults, RawField, RawMatch, RawNumber, RawOnStateError, RawRateLimit, RawRoute, RawRuleFile, RawValidate,
    SpannedList,
};
use super::validate::{valid_pointer, Bound, FieldAt, FieldRule, FieldType, Literal, Validate};
use super::{
    CardData, DefaultAction, Defaults, Diagnostic, FailMode, IpMatcher, Mode, OnStateError, PathPattern, RateKey,
    RateLimitSpec, RawSignature, Route, RuleSet, DEFAULT_MAX_BODY,
};
use crate::signature::Signature;
use crate::units::parse_rate;
use http::{HeaderName, Method};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

/// Largest JSON schema file read (schemas are config, but a typo pointing at a log file
/// should not load gigabytes).
const MAX_SCHEMA_BYTES: u64 = 4 << 20;
/// Compiled-regex size limit for `pattern` (bounds memory; matching is linear anyway).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

const STANDARD_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// A named `[ip_sets]` entry.
struct IpSet {
    nets: Vec<IpNet>,
    location: String,
}

type SchemaCache = HashMap<PathBuf, Result<Arc<jsonschema::Validator>, String>>;

pub(crate) fn compile(files: &[(PathBuf, String)], env: &super::Env) -> Result<RuleSet, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let sources: Vec<Source> =
        files.iter().enumerate().map(|(i, (p, t))| Source::new(i, p.clone(), t.clone())).collect();

    // 1. Parse: a syntax error stops that file only; unknown keys and wrong types are skipped
    //    over so that every one of them is reported (see `parse_recovering`).
    let mut parsed: Vec<(&Source, RawRuleFile)> = Vec::new();
    for src in &sources {
        if let Some(raw) = parse_recovering(src, &mut diags) {
            parsed.push((src, raw));
        }
    }

    // 2. ip_sets from every file, merged.
    let mut sets: HashMap<String, IpSet> = HashMap::new();
    for (src, raw) in &mut parsed {
        let mut cx = Ctx { src, diags: &mut diags };
        for (name, list) in raw.ip_sets.take().unwrap_or_default() {
            let key_span = name.span();
            let name = name.into_inner();
            if let Some(first) = sets.get(&name) {
                cx.err(&key_span, format!("duplicate ip set \"{name}\" (first defined at {})", first.location));
                continue;
            }
            if name.is_empty() || name.contains('@') || name.chars().any(char::is_whitespace) {
                cx.err(&key_span, format!("invalid ip set name \"{name}\""));
            }
            let nets = ip_list(&mut cx, &list, None);
            sets.insert(name, IpSet { nets, location: src.location(&key_span) });
        }
    }

    // 3. [defaults]: at most one file.
    let mut defaults = Defaults::default();
    let mut defaults_at: Option<String> = None;
    for (src, raw) in &mut parsed {
        let Some(d) = raw.defaults.take() else {
            continue;
        };
        let span = d.span();
        let mut cx = Ctx { src, diags: &mut diags };
        if let Some(first) = &defaults_at {
            cx.err(&span, format!("[defaults] may appear in only one rule file (first defined at {first})"));
            continue;
        }
        defaults_at = Some(src.location(&span));
        defaults = compile_defaults(&mut cx, d.into_inner(), &sets);
    }

    // 4. Routes.
    let mut routes: Vec<Route> = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut schemas: SchemaCache = HashMap::new();
    for (src, raw) in &mut parsed {
        let mut cx = Ctx { src, diags: &mut diags };
        for route in std::mem::take(&mut raw.routes) {
            let route = route.into_inner();
            let name_span = route.name.span();
            let name = route.name.get_ref().clone();
            if let Some(first) = names.get(&name) {
                cx.err(&name_span, format!("duplicate route name \"{name}\" (first defined at {first})"));
            } else {
                names.insert(name.clone(), src.location(&name_span));
            }
            if let Some(r) = compile_route(&mut cx, route, &defaults, &sets, &mut schemas, env) {
                routes.push(r);
            }
        }
    }

    if !diags.is_empty() {
        return Err(diag::finish(diags));
    }
    Ok(assemble(defaults, routes))
}

/// Deserializes a rule file, reporting every unknown key and wrong type
/// ([`crate::diag::from_toml_recovering`]). The recovered structure still goes through the
/// semantic checks, so their problems are reported too; the file is invalid either way.
fn parse_recovering(src: &Source, diags: &mut Vec<Diag>) -> Option<RawRuleFile> {
    let (raw, errors) = crate::diag::from_toml_recovering::<RawRuleFile>(&src.text);
    for (span, message) in errors {
        diags.push(src.diag(&span, message));
    }
    raw
}

/// Builds the router and gives each route the `Allow` union of its host + path slot.
fn assemble(defaults: Defaults, mut routes: Vec<Route>) -> RuleSet {
    let router = super::router::Router::build(routes.iter().map(|r| (r.host.as_deref(), &r.path)));
    for group in router.slot_groups() {
        let mut union: Option<Vec<Method>> = Some(Vec::new());
        for &i in &group {
            match (routes.get(i).and_then(|r| r.methods.as_ref()), union.as_mut()) {
                (Some(ms), Some(u)) => u.extend(ms.iter().cloned()),
                (None, _) => union = None,
                (Some(_), None) => {}
            }
        }
        if let Some(u) = union.as_mut() {
            u.sort_by_key(method_rank);
            u.dedup();
        }
        for &i in &group {
            if let Some(r) = routes.get_mut(i) {
                r.allow.clone_from(&union);
            }
        }
    }
    RuleSet::from_parts(defaults, routes.into_iter().map(Arc::new).collect(), router)
}

fn method_rank(m: &Method) -> (usize, String) {
    let rank = STANDARD_METHODS.iter().position(|s| *s == m.as_str()).unwrap_or(STANDARD_METHODS.len());
    (rank, m.as_str().to_owned())
}

fn compile_defaults(cx: &mut Ctx<'_>, d: RawDefaults, sets: &HashMap<String, IpSet>) -> Defaults {
    let mut out = Defaults::default();
    if let Some(a) = d.action {
        match a.get_ref().as_str() {
            "forward" => out.action = DefaultAction::Forward,
            "deny" => out.action = DefaultAction::Deny,
            other => cx.err(&a.span(), format!("unknown action \"{other}\" (expected \"forward\" or \"deny\")")),
        }
    }
    if let Some(s) = &d.max_body {
        out.max_body = cx.size(s).unwrap_or(DEFAULT_MAX_BODY);
    }
    if let Some(l) = &d.ip_deny {
        out.ip_deny = IpMatcher::new(ip_list(cx, l, Some(sets)));
    }
    if let Some(l) = &d.ip_allow {
        out.ip_allow = Some(IpMatcher::new(ip_list(cx, l, Some(sets))));
    }
    if let Some(r) = d.rate_limit {
        out.rate_limit = rate_limit(cx, r);
    }
    if let Some(c) = &d.card_data {
        out.card_data = super::card_data::compile(cx, CardData::OFF, c.get_ref());
    }
    if let Some(h) = &d.hosts {
        out.hosts = Some(super::hosts::compile(cx, h));
    }
    out
}

fn compile_route(
    cx: &mut Ctx<'_>,
    r: RawRoute,
    defaults: &Defaults,
    sets: &HashMap<String, IpSet>,
    schemas: &mut SchemaCache,
    env: &super::Env,
) -> Option<Route> {
    let name_span = r.name.span();
    let name = r.name.into_inner();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        cx.err(&name_span, "route name must be 1 to 128 characters without control characters");
    }
    let (host, path, methods) = compile_match(cx, r.matcher.into_inner());

    let mode = match &r.mode {
        None => Mode::Enforce,
        Some(m) => match m.get_ref().as_str() {
            "enforce" => Mode::Enforce,
            "monitor" => Mode::Monitor,
            other => {
                cx.err(&m.span(), format!("unknown mode \"{other}\" (expected \"enforce\" or \"monitor\")"));
                Mode::Enforce
            }
        },
    };

    let ip_allow = match &r.ip_allow {
        Some(l) => Some(IpMatcher::new(ip_list(cx, l, Some(sets)))),
        None => defaults.ip_allow.clone(),
    };
    let ip_deny = match &r.ip_deny {
        Some(l) => IpMatcher::new(ip_list(cx, l, Some(sets))),
        None => defaults.ip_deny.clone(),
    };
    // A route without its own limit shares the defaults' buckets (one budget across all such
    // routes), so it takes the defaults' fingerprint.
    let (rate_limit, limit_scope) = match r.rate_limit {
        Some(rl) => (rate_limit(cx, rl), name.as_str()),
        None => (defaults.rate_limit.clone(), DEFAULTS_SCOPE),
    };
    let on_state_error = r.on_state_error.map(|o| on_state_error(cx, o.into_inner())).unwrap_or_default();

    let mut max_body = match &r.max_body {
        Some(s) => cx.size(s).unwrap_or(defaults.max_body),
        None => defaults.max_body,
    };
    let validate = r.validate.map(|v| compile_validate(cx, v.into_inner(), schemas));
    if let Some(cap) = validate.as_ref().and_then(|v| v.max_body) {
        max_body = cap;
    }

    let (signature, verifier) = match r.signature.map(|s| signature(cx, s)) {
        Some(Some((raw, v))) => (Some(raw), Some(v)),
        Some(None) => return None,
        None => (None, None),
    };
    let failure_limits = r
        .failure_limit
        .map(|list| super::failure_limit::compile(cx, &name, methods.as_deref(), list))
        .unwrap_or_default();
    let idempotency =
        r.idempotency.map(|i| super::idempotency::compile(cx, methods.as_deref(), env.upstream_timeout, i));
    let idempotency = match idempotency {
        Some(None) => return None,
        Some(i) => i,
        None => None,
    };
    let card_data = match &r.card_data {
        Some(c) => super::card_data::compile(cx, defaults.card_data, c.get_ref()),
        None => defaults.card_data,
    };
    let origin = r.origin.as_ref().map(|o| super::origin::compile(cx, o.get_ref()));
    let injection = r.injection.as_ref().map(|i| super::injection::compile(cx, i.get_ref()));
    let fingerprint = fingerprint(limit_scope, rate_limit.as_ref());
    let name: Arc<str> = Arc::from(name);
    Some(Route {
        defined_at: Arc::from(cx.src.location(&name_span)),
        counters: Arc::new(crate::metrics::RouteCounters::new(name.clone())),
        name,
        host,
        path: path?,
        mode,
        ip_allow,
        ip_deny,
        rate_limit,
        on_state_error,
        max_body,
        validate,
        signature,
        verifier,
        failure_limits,
        idempotency,
        card_data,
        origin,
        injection,
        fingerprint,
        methods,
        allow: None,
    })
}

fn compile_match(cx: &mut Ctx<'_>, m: RawMatch) -> (Option<String>, Option<PathPattern>, Option<Vec<Method>>) {
    let path = path_pattern(cx, &m.path);
    let host = m.host.as_ref().and_then(|h| host(cx, h));
    let methods = m.methods.as_ref().map(|list| {
        if list.get_ref().is_empty() {
            cx.err(&list.span(), "methods must not be empty (omit it to allow any method)");
        }
        let mut out = Vec::new();
        for item in list.get_ref() {
            let s = item.get_ref().as_str();
            if STANDARD_METHODS.contains(&s) {
                if let Ok(method) = Method::from_bytes(s.as_bytes()) {
                    if !out.contains(&method) {
                        out.push(method);
                    }
                }
            } else {
                let hint = if STANDARD_METHODS.contains(&s.to_ascii_uppercase().as_str()) {
                    format!(" (methods are case-sensitive: write \"{}\")", s.to_ascii_uppercase())
                } else {
                    String::new()
                };
                cx.err(&item.span(), format!("unknown HTTP method \"{s}\"{hint}"));
            }
        }
        out
    });
    (host, path, methods)
}

fn path_pattern(cx: &mut Ctx<'_>, p: &Spanned<String>) -> Option<PathPattern> {
    let s = p.get_ref().as_str();
    let bad = |why: &str| format!("invalid path pattern \"{s}\": {why}");
    let problem = if !s.starts_with('/') {
        Some(bad("must start with '/'"))
    } else if s.len() > 2048 {
        Some(bad("longer than 2048 characters"))
    } else if s.bytes().any(|b| !b.is_ascii_graphic()) {
        Some(bad("only visible ASCII is allowed (percent-encode anything else)"))
    } else if s.contains(['?', '#']) {
        Some(bad("must not contain '?' or '#' (the query string is not matched)"))
    } else if s.trim_end_matches("/*").contains('*') {
        Some(bad("'*' is only allowed as a trailing \"/*\""))
    } else if s.contains("//") {
        Some(bad("must not contain \"//\""))
    } else if s.split('/').any(|seg| seg == "." || seg == "..") {
        Some(bad("must not contain \".\" or \"..\" segments"))
    } else {
        None
    };
    if let Some(msg) = problem {
        cx.err(&p.span(), msg);
        return None;
    }
    Some(match s.strip_suffix("/*") {
        Some(prefix) => PathPattern::Prefix(prefix.to_owned()),
        None => PathPattern::Exact(s.to_owned()),
    })
}

fn host(cx: &mut Ctx<'_>, h: &Spanned<String>) -> Option<String> {
    let raw = h.get_ref().as_str();
    let norm = super::router::normalize_host(raw).into_owned();
    if super::router::valid_host(&norm) {
        Some(norm)
    } else {
        cx.err(&h.span(), format!("invalid host \"{raw}\""));
        None
    }
}

/// Expands a CIDR list. `sets` is `None` inside `[ip_sets]` (no nesting).
fn ip_list(cx: &mut Ctx<'_>, list: &SpannedList, sets: Option<&HashMap<String, IpSet>>) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for item in list.get_ref() {
        let s = item.get_ref().trim();
        if let Some(set_name) = s.strip_prefix('@') {
            match sets {
                None => cx.err(&item.span(), "an ip set cannot reference another set"),
                Some(sets) => match sets.get(set_name) {
                    Some(set) => nets.extend(set.nets.iter().copied()),
                    None => cx.err(&item.span(), format!("unknown ip set \"@{set_name}\"")),
                },
            }
            continue;
        }
        match crate::units::parse_cidr(s) {
            Ok(net) => nets.push(net),
            Err(msg) => cx.err(&item.span(), msg),
        }
    }
    nets
}

/// `"10.0.0.0/8"`, `"2001:db8::/32"`, or a bare address (`/32`, `/128`). Host bits must be
/// zero: `"10.0.0.1/8"` is almost always a typo.
fn rate_limit(cx: &mut Ctx<'_>, rl: Spanned<RawRateLimit>) -> Option<RateLimitSpec> {
    let rl = rl.into_inner();
    let key = match &rl.key {
        None => Some(RateKey::Ip),
        Some(k) => {
            let s = k.get_ref().as_str();
            match s {
                "ip" => Some(RateKey::Ip),
                "route" => Some(RateKey::Route),
                _ => match s.strip_prefix("header:") {
                    Some(h) => match HeaderName::from_bytes(h.trim().as_bytes()) {
                        Ok(name) => Some(RateKey::Header(name)),
                        Err(_) => {
                            cx.err(&k.span(), format!("invalid header name \"{h}\" in rate-limit key"));
                            None
                        }
                    },
                    None => {
                        cx.err(
                            &k.span(),
                            format!("unknown rate-limit key \"{s}\" (expected \"ip\", \"route\" or \"header:<name>\")"),
                        );
                        None
                    }
                },
            }
        }
    };
    let rate = match parse_rate(rl.rate.get_ref()) {
        Ok(r) => Some(r),
        Err(e) => {
            cx.err(&rl.rate.span(), e.to_string());
            None
        }
    };
    let burst = match &rl.burst {
        None => rate.map(|r| r.count),
        Some(b) => match u32::try_from(*b.get_ref()) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                cx.err(&b.span(), "burst must be an integer from 1 to 4294967295");
                None
            }
        },
    };
    Some(RateLimitSpec { key: key?, rate: rate?, burst: burst? })
}

fn on_state_error(cx: &mut Ctx<'_>, o: RawOnStateError) -> OnStateError {
    let mut out = OnStateError::default();
    fail_mode(cx, o.replay.as_ref(), &mut out.replay);
    fail_mode(cx, o.rate_limit.as_ref(), &mut out.rate_limit);
    fail_mode(cx, o.failure_limit.as_ref(), &mut out.failure_limit);
    fail_mode(cx, o.idempotency.as_ref(), &mut out.idempotency);
    out
}

fn fail_mode(cx: &mut Ctx<'_>, v: Option<&Spanned<String>>, slot: &mut FailMode) {
    if let Some(v) = v {
        match v.get_ref().as_str() {
            "fail_closed" => *slot = FailMode::Closed,
            "fail_open" => *slot = FailMode::Open,
            other => {
                cx.err(&v.span(), format!("unknown value \"{other}\" (expected \"fail_closed\" or \"fail_open\")"))
            }
        }
    }
}

fn compile_validate(cx: &mut Ctx<'_>, v: RawValidate, schemas: &mut SchemaCache) -> Validate {
    let content_type = v.content_type.as_ref().map(|list| {
        if list.get_ref().is_empty() {
            cx.err(&list.span(), "content_type must not be empty (omit it to allow any)");
        }
        let mut out = Vec::new();
        for item in list.get_ref() {
            let s = item.get_ref().trim().to_ascii_lowercase();
            let valid = s.split_once('/').is_some_and(|(t, st)| {
                is_token(t) && is_token(st)
            });
            if valid {
                out.push(s);
            } else {
                cx.err(
                    &item.span(),
                    format!(
                        "invalid media type \"{}\" (expected type/subtype without parameters, e.g. \"application/json\")",
                        item.get_ref()
                    ),
                );
            }
        }
        out
    });
    let max_body = v.max_body.as_ref().and_then(|s| cx.size(s));
    let mut content_encoding = Vec::new();
    for item in v.content_encoding.iter().flat_map(|l| l.get_ref()) {
        let s = item.get_ref().trim().to_ascii_lowercase();
        if is_token(&s) {
            content_encoding.push(s);
        } else {
            cx.err(&item.span(), format!("invalid content coding \"{}\" (e.g. \"gzip\")", item.get_ref()));
        }
    }
    let mut required_headers = Vec::new();
    for item in v.required_headers.iter().flat_map(|l| l.get_ref()) {
        match HeaderName::from_bytes(item.get_ref().trim().as_bytes()) {
            Ok(h) => required_headers.push(h),
            Err(_) => cx.err(&item.span(), format!("invalid header name \"{}\"", item.get_ref())),
        }
    }
    let json_schema = v.json_schema.as_ref().and_then(|p| {
        let path = cx.src.dir().join(p.get_ref());
        let result = schemas.entry(path.clone()).or_insert_with(|| load_schema(&path)).clone();
        match result {
            Ok(v) => Some(v),
            Err(msg) => {
                cx.err(&p.span(), msg);
                None
            }
        }
    });
    let fields = v.fields.unwrap_or_default().into_iter().filter_map(|f| field(cx, f)).collect();
    Validate { content_type, max_body, required_headers, content_encoding, json_schema, fields }
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
}

fn load_schema(path: &Path) -> Result<Arc<jsonschema::Validator>, String> {
    let shown = path.display();
    let bytes = crate::files::read_limited(path, MAX_SCHEMA_BYTES)
        .map_err(|e| format!("cannot read JSON schema {shown}: {e}"))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("invalid JSON in schema {shown}:{}:{}: {e}", e.line(), e.column()))?;
    jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex().size_limit(REGEX_SIZE_LIMIT))
        .build(&value)
        .map(Arc::new)
        .map_err(|e| format!("invalid JSON schema {shown}: {e}"))
}

fn field(cx: &mut Ctx<'_>, f: Spanned<RawField>) -> Option<FieldRule> {
    let f = f.into_inner();
    let mut ok = true;
    let at_s = f.at.get_ref().clone();
    let at = if at_s.starts_with('/') {
        if !valid_pointer(&at_s) {
            cx.err(&f.at.span(), format!("invalid JSON pointer \"{at_s}\" ('~' must be followed by 0 or 1)"));
            ok = false;
        }
        FieldAt::Pointer(at_s)
    } else {
        if at_s.is_empty() {
            cx.err(&f.at.span(), "field `at` must be a JSON pointer (\"/a/b\") or a form/query name");
            ok = false;
        }
        FieldAt::Name(at_s)
    };
    let ty = match &f.ty {
        None => None,
        Some(t) => match t.get_ref().as_str() {
            "string" => Some(FieldType::String),
            "integer" => Some(FieldType::Integer),
            "number" => Some(FieldType::Number),
            "boolean" => Some(FieldType::Boolean),
            other => {
                cx.err(
                    &t.span(),
                    format!("unknown field type \"{other}\" (expected string, integer, number or boolean)"),
                );
                return None;
            }
        },
    };
    let mut bound = |cx: &mut Ctx<'_>, b: &Option<Spanned<RawNumber>>, which: &str| -> Option<Bound> {
        let b = b.as_ref()?;
        let out = match (ty, *b.get_ref()) {
            (Some(FieldType::Integer), RawNumber::Int(i)) => Some(Bound::Int(i)),
            (Some(FieldType::Integer), RawNumber::Float(_)) => {
                cx.err(&b.span(), format!("{which} must be an integer for type integer"));
                None
            }
            (Some(FieldType::Number), RawNumber::Int(i)) => Some(Bound::Int(i)),
            (Some(FieldType::Number), RawNumber::Float(x)) if x.is_finite() => Some(Bound::Float(x)),
            (Some(FieldType::Number), RawNumber::Float(_)) => {
                cx.err(&b.span(), format!("{which} must be a finite number"));
                None
            }
            _ => {
                cx.err(&b.span(), format!("{which} applies only to type \"integer\" or \"number\""));
                None
            }
        };
        if out.is_none() {
            ok = false;
        }
        out
    };
    let min = bound(cx, &f.min, "min");
    let max = bound(cx, &f.max, "max");
    if let (Some(lo), Some(hi), Some(max_span)) = (min, max, f.max.as_ref().map(Spanned::span)) {
        if lo.as_f64() > hi.as_f64() {
            cx.err(&max_span, format!("max ({hi}) is less than min ({lo})"));
            ok = false;
        }
    }
    let pattern = f.pattern.as_ref().and_then(|p| {
        if ty != Some(FieldType::String) {
            cx.err(&p.span(), "pattern applies only to type \"string\"");
            ok = false;
            return None;
        }
        match regex::RegexBuilder::new(p.get_ref())
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            Ok(r) => Some(r),
            Err(e) => {
                cx.err(&p.span(), format!("invalid regex: {}", regex_error_summary(&e)));
                ok = false;
                None
            }
        }
    });
    let max_len = f.max_len.as_ref().and_then(|m| {
        if ty != Some(FieldType::String) {
            cx.err(&m.span(), "max_len applies only to type \"string\"");
            ok = false;
            return None;
        }
        match usize::try_from(*m.get_ref()) {
            Ok(n) => Some(n),
            Err(_) => {
                cx.err(&m.span(), "max_len must not be negative");
                ok = false;
                None
            }
        }
    });
    let one_of = f.one_of.as_ref().map(|list| {
        if list.get_ref().is_empty() {
            cx.err(&list.span(), "one_of must not be empty");
            ok = false;
        }
        let mut out = Vec::new();
        for item in list.get_ref() {
            let lit = match (ty, item.get_ref()) {
                (None | Some(FieldType::String), toml::Value::String(s)) => Some(Literal::Str(s.clone())),
                (None | Some(FieldType::Integer) | Some(FieldType::Number), toml::Value::Integer(i)) => {
                    Some(Literal::Int(*i))
                }
                (None | Some(FieldType::Number), toml::Value::Float(x)) if x.is_finite() => Some(Literal::Float(*x)),
                (None | Some(FieldType::Boolean), toml::Value::Boolean(b)) => Some(Literal::Bool(*b)),
                _ => None,
            };
            match lit {
                Some(l) => out.push(l),
                None => {
                    let want = ty.map_or("a string, number or boolean", |t| match t {
                        FieldType::String => "a string",
                        FieldType::Integer => "an integer",
                        FieldType::Number => "a finite number",
                        FieldType::Boolean => "a boolean",
                    });
                    cx.err(&item.span(), format!("one_of value must be {want}"));
                    ok = false;
                }
            }
        }
        out
    });
    ok.then_some(FieldRule { at, ty, min, max, pattern, max_len, one_of })
}

fn regex_error_summary(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error:"))
        .map_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "), |l| l.trim().to_owned())
}

fn signature(cx: &mut Ctx<'_>, s: Spanned<crate::signature::SignatureTable>) -> Option<(RawSignature, Arc<Signature>)> {
    let span = s.span();
    let table = s.into_inner();
    let positions: BTreeMap<String, (usize, usize)> =
        table.present().into_iter().map(|(k, at)| (k.to_owned(), cx.src.pos(&at))).collect();
    match &table.provider {
        None => {
            cx.err(&span, "[route.signature] requires `provider`");
            return None;
        }
        Some(p) if !p.get_ref().is_str() => {
            cx.err(&p.span(), "provider must be a string");
            return None;
        }
        Some(_) => {}
    }
    let raw = RawSignature::new(
        table,
        cx.src.path.clone(),
        cx.src.dir().to_path_buf(),
        span.clone(),
        cx.src.pos(&span),
        positions,
    );
    // Keys are loaded now: a key that cannot be loaded makes the file invalid, so a route
    // whose signature cannot be checked never serves.
    match crate::signature::build(&raw.table, &raw.dir, &crate::signature::EnvFileResolver) {
        Ok(v) => Some((raw, v)),
        Err(problems) => {
            for p in problems {
                let at = p.span.clone().unwrap_or_else(|| span.clone());
                cx.err(&at, p.to_string());
            }
            None
        }
    }
}

/// The rate-limit scope of `[defaults]` (and of every route that inherits its limit).
pub(crate) const DEFAULTS_SCOPE: &str = "[defaults]";

/// FNV-1a over the route name and its effective rate-limit config: stable across processes
/// and Rust versions.
pub(crate) fn fingerprint(name: &str, rl: Option<&RateLimitSpec>) -> u64 {
    let mut h = Fnv::new();
    h.bytes(name.as_bytes());
    h.bytes(&[0xff]);
    match rl {
        None => h.bytes(b"none"),
        Some(rl) => {
            match &rl.key {
                RateKey::Ip => h.bytes(b"ip"),
                RateKey::Route => h.bytes(b"route"),
                RateKey::Header(n) => {
                    h.bytes(b"header:");
                    h.bytes(n.as_str().as_bytes());
                }
            }
            h.bytes(&[0xff]);
            h.bytes(&rl.rate.count.to_le_bytes());
            h.bytes(&rl.rate.per.as_nanos().to_le_bytes());
            h.bytes(&rl.burst.to_le_bytes());
        }
    }
    h.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::rules::load_sources;
    use std::time::Duration;

    fn load(files: &[(&str, &str)]) -> Result<RuleSet, Vec<String>> {
        let files: Vec<_> = files.iter().map(|(p, t)| (PathBuf::from(p), (*t).to_owned())).collect();
        load_sources(&files).map_err(|d| d.iter().map(ToString::to_string).collect())
    }

    fn errors(src: &str) -> Vec<String> {
        load(&[("r.toml", src)]).err().unwrap_or_default()
    }

    const ROUTE: &str = "[[route]]\nname = \"a\"\nmatch = { path = \"/a\" }\n";

    #[test]
    fn every_semantic_problem_in_a_file_is_reported_at_its_value() {
        let src = r#"[ip_sets]
good = ["10.0.0.0/8"]
bad = ["10.0.0.1/8", "nope"]

[defaults]
action = "block"
max_body = "1 parsec"
ip_deny = ["@missing"]
rate_limit = { key = "cookie", rate = "10/fortnight", burst = 0 }

[[route]]
name = "a"
match = { path = "pay", methods = ["post", "FETCH"], host = "bad host" }
mode = "audit"
ip_allow = ["@good", "300.1.1.1"]
on_state_error = { replay = "fail_maybe" }

[route.validate]
content_type = ["json"]
required_headers = ["bad header"]
json_schema = "missing.json"
fields = [
  { at = "/x", type = "integer", min = 1.5 },
  { at = "/y", type = "text" },
  { at = "/z~2", type = "string" },
  { at = "/p", type = "string", pattern = "(" },
  { at = "/q", type = "integer", pattern = "x", max_len = 3 },
  { at = "/r", type = "integer", min = 5, max = 1 },
  { at = "/s", type = "boolean", one_of = ["yes"] },
]

[route.signature]
provider = 7
"#;
        let e = errors(src);
        let expect = [
            "r.toml:3:8: invalid CIDR \"10.0.0.1/8\": host bits are set (did you mean \"10.0.0.0/8\"?)",
            "r.toml:3:22: invalid CIDR \"nope\"",
            "r.toml:6:10: unknown action \"block\" (expected \"forward\" or \"deny\")",
            "r.toml:7:12: invalid size \"1 parsec\": unknown unit \"parsec\"",
            "r.toml:8:12: unknown ip set \"@missing\"",
            "r.toml:9:22: unknown rate-limit key \"cookie\"",
            "r.toml:9:39: invalid rate \"10/fortnight\": unknown unit \"fortnight\"",
            "r.toml:9:63: burst must be an integer from 1 to 4294967295",
            "r.toml:13:18: invalid path pattern \"pay\": must start with '/'",
            "r.toml:13:36: unknown HTTP method \"post\" (methods are case-sensitive: write \"POST\")",
            "r.toml:13:44: unknown HTTP method \"FETCH\"",
            "r.toml:13:61: invalid host \"bad host\"",
            "r.toml:14:8: unknown mode \"audit\" (expected \"enforce\" or \"monitor\")",
            "r.toml:15:22: invalid CIDR \"300.1.1.1\"",
            "r.toml:16:29: unknown value \"fail_maybe\" (expected \"fail_closed\" or \"fail_open\")",
            "r.toml:19:17: invalid media type \"json\"",
            "r.toml:20:21: invalid header name \"bad header\"",
            "r.toml:21:15: cannot read JSON schema missing.json:",
            "r.toml:23:40: min must be an integer for type integer",
            "r.toml:24:23: unknown field type \"text\"",
            "r.toml:25:10: invalid JSON pointer \"/z~2\"",
            "r.toml:26:43: invalid regex: unclosed group",
            "r.toml:27:44: pattern applies only to type \"string\"",
            "r.toml:27:59: max_len applies only to type \"string\"",
            "r.toml:28:49: max (1) is less than min (5)",
            "r.toml:29:44: one_of value must be a boolean",
            "r.toml:33:12: provider must be a string",
        ];
        for (got, want) in e.iter().zip(expect.iter()) {
            assert!(got.starts_with(want), "\n got: {got}\nwant: {want}");
        }
        assert_eq!(e.len(), expect.len(), "{e:#?}");
    }

    #[test]
    fn syntax_and_serde_errors_stop_only_that_file() {
        let e = load(&[
            ("a.toml", "[[route]\nname = 1\n"),
            ("b.toml", &format!("{ROUTE}colour = \"red\"\n")),
            ("c.toml", "[[route]]\nname = 5\nmatch = { path = \"/c\" }\n"),
            ("d.toml", "[defaults]\naction = \"nope\"\n"),
        ])
        .unwrap_err();
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e[0].starts_with("a.toml:1:"), "{}", e[0]);
        assert!(e[1].starts_with("b.toml:4:1: unknown field `colour`"), "{}", e[1]);
        assert!(e[2].starts_with("c.toml:2:8: invalid type: integer `5`, expected a string"), "{}", e[2]);
        assert!(e[3].starts_with("d.toml:2:10: unknown action"), "{}", e[3]);
    }

    #[test]
    fn duplicates_across_files_name_the_first() {
        let e = load(&[
            ("rules/a.toml", &format!("[ip_sets]\nx = [\"1.2.3.4\"]\n[defaults]\naction = \"deny\"\n{ROUTE}")),
            ("rules/b.toml", &format!("[ip_sets]\nx = [\"1.2.3.5\"]\n[defaults]\nmax_body = \"1KiB\"\n{ROUTE}")),
        ])
        .unwrap_err();
        assert_eq!(
            e,
            [
                "rules/b.toml:2:1: duplicate ip set \"x\" (first defined at rules/a.toml:2:1)",
                "rules/b.toml:3:1: [defaults] may appear in only one rule file (first defined at rules/a.toml:3:1)",
                "rules/b.toml:6:8: duplicate route name \"a\" (first defined at rules/a.toml:6:8)",
            ]
        );
    }

    #[test]
    fn sets_are_merged_across_files_and_cannot_nest() {
        let set = load(&[
            (
                "a.toml",
                "[[route]]\nname = \"a\"\nmatch = { path = \"/a\" }\nip_allow = [\"@pay\", \"2001:db8::/32\"]\n",
            ),
            ("b.toml", "[ip_sets]\npay = [\"101.226.103.0/24\", \"192.0.2.1\"]\n"),
        ])
        .unwrap();
        let allow = set.routes()[0].ip_allow.as_ref().unwrap();
        assert!(allow.contains("101.226.103.9".parse().unwrap()));
        assert!(allow.contains("192.0.2.1".parse().unwrap()));
        assert!(!allow.contains("192.0.2.2".parse().unwrap()));
        assert!(allow.contains("2001:db8::1".parse().unwrap()));
        let e = errors("[ip_sets]\na = [\"1.1.1.1\"]\nb = [\"@a\"]\n");
        assert_eq!(e, ["r.toml:3:6: an ip set cannot reference another set"]);
    }

    #[test]
    fn route_keys_replace_defaults_and_validate_max_body_wins() {
        let set = load(&[(
            "r.toml",
            r#"[defaults]
action = "deny"
max_body = "2MiB"
ip_deny = ["203.0.113.0/24"]
ip_allow = ["0.0.0.0/0"]
rate_limit = { key = "ip", rate = "50/s", burst = 100 }

[[route]]
name = "inherits"
match = { path = "/i" }

[[route]]
name = "own"
match = { path = "/o" }
max_body = 1000
ip_deny = []
ip_allow = ["10.0.0.0/8"]
rate_limit = { key = "header:X-Api-Key", rate = "600/min" }
on_state_error = { replay = "fail_open", rate_limit = "fail_closed" }
mode = "monitor"

[[route]]
name = "validated"
match = { path = "/v" }
max_body = "1KiB"
[route.validate]
max_body = "64KiB"
"#,
        )])
        .unwrap();
        let d = set.defaults();
        assert_eq!(d.action, DefaultAction::Deny);
        assert_eq!(d.max_body, 2 << 20);
        let [i, o, v] = set.routes() else { panic!() };
        assert_eq!(i.max_body, 2 << 20);
        assert!(i.ip_deny.contains("203.0.113.1".parse().unwrap()));
        assert!(i.ip_allow.as_ref().unwrap().contains("8.8.8.8".parse().unwrap()));
        assert_eq!(i.rate_limit, d.rate_limit);
        assert_eq!(i.rate_limit.as_ref().unwrap().burst, 100);
        assert_eq!(i.mode, Mode::Enforce);
        assert_eq!(
            i.on_state_error,
            OnStateError { replay: FailMode::Closed, rate_limit: FailMode::Open, ..Default::default() }
        );
        assert_eq!(o.max_body, 1000);
        assert!(o.ip_deny.is_empty());
        assert!(!o.ip_allow.as_ref().unwrap().contains("8.8.8.8".parse().unwrap()));
        let rl = o.rate_limit.as_ref().unwrap();
        assert_eq!(rl.key, RateKey::Header(HeaderName::from_static("x-api-key")));
        assert_eq!(rl.rate.per, Duration::from_secs(60));
        assert_eq!(rl.burst, 600, "burst defaults to the rate's count");
        assert_eq!(
            o.on_state_error,
            OnStateError { replay: FailMode::Open, rate_limit: FailMode::Closed, ..Default::default() }
        );
        assert_eq!(o.mode, Mode::Monitor);
        assert_eq!(v.max_body, 64 * 1024);
        assert!(!v.needs_body());
    }

    #[test]
    fn fingerprint_tracks_name_and_effective_limit_only() {
        let mk = |rl: &str, body: &str| {
            let src = format!("[[route]]\nname = \"a\"\nmatch = {{ path = \"/a\" }}\nmax_body = \"{body}\"\n{rl}\n");
            load(&[("r.toml", &src)]).unwrap().routes()[0].fingerprint
        };
        let base = mk("rate_limit = { rate = \"10/s\" }", "1KiB");
        assert_eq!(base, mk("rate_limit = { key = \"ip\", rate = \"10/s\", burst = 10 }", "2KiB"));
        assert_ne!(base, mk("rate_limit = { rate = \"10/s\", burst = 11 }", "1KiB"));
        assert_ne!(base, mk("rate_limit = { rate = \"600/min\" }", "1KiB"));
        assert_ne!(base, mk("rate_limit = { key = \"route\", rate = \"10/s\" }", "1KiB"));
        assert_ne!(base, mk("", "1KiB"));
        // Without its own limit a route shares the defaults' buckets.
        let inherit =
            "[defaults]\nrate_limit = { rate = \"5/s\" }\n[[route]]\nname = \"x\"\nmatch = { path = \"/x\" }\n";
        let set = load(&[("r.toml", inherit)]).unwrap();
        assert_eq!(set.routes()[0].fingerprint, set.defaults().limit_fingerprint());
        // Stable across runs and builds: pinned.
        assert_eq!(fingerprint("a", None), 0xfd5c_accb_fcdb_fb6f);
        assert_ne!(fingerprint("a", None), fingerprint("b", None));
    }

    #[test]
    fn every_unknown_key_and_wrong_type_in_a_file_is_reported() {
        let src = "[defaults]\nactoin = \"deny\"\nmax_body = \"1MiB\"\n\n[[route]]\nname = \"a\"\nmatch = { path = \"/a\" }\nmode = 5\nrate_limt = { rate = \"1/s\" }\nip_allow = [\"10.0.0.0/33\"]\n";
        let e = errors(src);
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e[0].starts_with("r.toml:2:1: ") && e[0].contains("actoin"), "{e:?}");
        assert!(e[1].starts_with("r.toml:8:8: "), "{e:?}");
        assert!(e[2].starts_with("r.toml:9:1: ") && e[2].contains("rate_limt"), "{e:?}");
        assert!(e[3].starts_with("r.toml:10:13: ") && e[3].contains("10.0.0.0/33"), "{e:?}");
        // An error inside an inline table is reported, and no misleading follow-on error.
        let e = errors("[[route]]\nname = \"a\"\nmatch = { path = \"/a\", bogus = 1 }\n");
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn signature_requires_provider() {
        let e = errors(&format!("{ROUTE}[route.signature]\ntolerance = \"5m\"\n"));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("r.toml:"), "{e:?}");
        assert!(e[0].ends_with("[route.signature] requires `provider`"), "{e:?}");
    }

    #[test]
    fn path_patterns() {
        for bad in ["/a*", "/a/*/b", "/a?b", "/a b", "/a//b", "/a/../b", "/./a", "/ü", "*"] {
            let e = errors(&format!("[[route]]\nname = \"a\"\nmatch = {{ path = \"{bad}\" }}\n"));
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert!(e[0].contains("invalid path pattern"), "{e:?}");
        }
        let set = load(&[("r.toml", "[[route]]\nname = \"a\"\nmatch = { path = \"/api/*\" }\n[[route]]\nname = \"b\"\nmatch = { path = \"/\" }\n")]).unwrap();
        assert_eq!(set.routes()[0].path, PathPattern::Prefix("/api".into()));
        assert_eq!(set.routes()[1].path, PathPattern::Exact("/".into()));
        let e = errors("[[route]]\nname = \"a\"\nmatch = { path = \"/a\", methods = [] }\n");
        assert!(e[0].contains("methods must not be empty"), "{e:?}");
        let e = errors("[[route]]\nname = \"\"\nmatch = { path = \"/a\" }\n");
        assert!(e[0].contains("route name must be"), "{e:?}");
    }

    #[test]
    fn schema_files_resolve_against_the_rule_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("schemas")).unwrap();
        std::fs::write(dir.path().join("schemas/ok.json"), r#"{"type":"object"}"#).unwrap();
        std::fs::write(dir.path().join("schemas/bad.json"), "{\n  \"type\": }").unwrap();
        std::fs::write(dir.path().join("schemas/invalid.json"), r#"{"type": 12}"#).unwrap();
        std::fs::write(dir.path().join("schemas/remote.json"), r#"{"$ref": "https://example.com/s.json"}"#).unwrap();
        let route = |n: &str, s: &str| {
            format!("[[route]]\nname = \"{n}\"\nmatch = {{ path = \"/{n}\" }}\n[route.validate]\njson_schema = \"schemas/{s}\"\n")
        };
        let ok = [("ok1", "ok.json"), ("ok2", "ok.json")].map(|(n, s)| route(n, s)).concat();
        let set = load_sources(&[(dir.path().join("r.toml"), ok)]).unwrap();
        let (a, b) = (&set.routes()[0], &set.routes()[1]);
        let (sa, sb) = (
            a.validate.as_ref().unwrap().json_schema.as_ref().unwrap(),
            b.validate.as_ref().unwrap().json_schema.as_ref().unwrap(),
        );
        assert!(Arc::ptr_eq(sa, sb), "one schema file is compiled once");
        assert!(a.needs_body());
        let bad = [("b", "bad.json"), ("i", "invalid.json"), ("r", "remote.json"), ("m", "missing.json")]
            .map(|(n, s)| route(n, s))
            .concat();
        let e = load_sources(&[(dir.path().join("r.toml"), bad)]).unwrap_err();
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e[0].message.contains("invalid JSON in schema") && e[0].message.contains("bad.json:2:11"), "{}", e[0]);
        assert!(e[1].message.starts_with("invalid JSON schema"), "{}", e[1]);
        assert!(e[2].message.starts_with("invalid JSON schema"), "{}", e[2]);
        assert!(e[3].message.starts_with("cannot read JSON schema"), "{}", e[3]);
        assert_eq!((e[0].line, e[0].col), (5, 15));
    }

    #[test]
    fn header_names_and_media_types_normalised() {
        let set = load(&[("r.toml", &format!("{ROUTE}[route.validate]\ncontent_type = [\"Application/JSON\"]\nrequired_headers = [\"Wechatpay-Serial\"]\n"))]).unwrap();
        let v = set.routes()[0].validate.as_ref().unwrap();
        assert_eq!(v.content_type.as_deref(), Some(&["application/json".to_owned()][..]));
        assert_eq!(v.required_headers, [HeaderName::from_static("wechatpay-serial")]);
        let e = errors(&format!("{ROUTE}[route.validate]\ncontent_type = [\"application/json; charset=utf-8\"]\n"));
        assert!(e[0].contains("invalid media type"), "{e:?}");
    }

    #[test]
    fn empty_input_is_an_empty_valid_rule_set() {
        let set = load(&[]).unwrap();
        assert!(set.routes().is_empty());
        let set = load(&[("r.toml", "# only comments\n")]).unwrap();
        assert_eq!(set.defaults().action, DefaultAction::Forward);
    }
}
