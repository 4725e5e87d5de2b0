//! Request validation from `[route.validate]`: pure checks, no I/O, no async.
//!
//! - [`check_headers`] runs before the body is read: content type, required headers, and the
//!   field rules named without a leading `/` against query parameters that are present.
//! - [`check_body`] runs on the buffered body: JSON bodies (`application/json`, `*/*+json`) are
//!   parsed once, checked against the schema and the JSON-pointer rules; form bodies
//!   (`application/x-www-form-urlencoded`) against the named rules. Every rule is required when
//!   the body is of the kind it applies to. When a route has body rules and the body is of a kind
//!   none of them applies to, the answer is 415 (a client cannot skip the rules by sending
//!   `text/plain`), except that a request with no Content-Type and no body on a route with only
//!   named rules passes (those rules then apply to the query string only).
//! - A name that appears more than once in a form body or query string is rejected when a rule
//!   checks it: the backend might read the other copy.
//!
//! Error messages name the field or pointer and the broken rule, never the submitted value.

use super::json_doc::{Json, JsonDoc};
use crate::rules::{Bound, FieldAt, FieldRule, FieldType, Literal, Validate};
use http::{HeaderMap, HeaderName};
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

/// Longest schema instance path echoed in an error.
const MAX_AT_LEN: usize = 128;

/// Which part of the request was malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A JSON body.
    Json,
    /// An `application/x-www-form-urlencoded` body.
    Form,
    /// The query string.
    Query,
}

impl fmt::Display for BodyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyKind::Json => "JSON body",
            BodyKind::Form => "form body",
            BodyKind::Query => "query string",
        })
    }
}

/// What is wrong with one field. Bounds and lengths come from the rule, never from the request.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldProblem {
    /// Absent.
    Missing,
    /// Given more than once (form or query).
    Duplicate,
    /// Wrong type.
    Type(FieldType),
    /// Below `min`.
    BelowMin(FieldType, Bound),
    /// Above `max`.
    AboveMax(FieldType, Bound),
    /// Longer than `max_len` characters.
    TooLong(usize),
    /// Does not match `pattern`.
    Pattern,
    /// Not in `one_of`.
    NotOneOf,
    /// Undecodable (invalid UTF-8 after percent-decoding).
    Undecodable,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldProblem::Missing => f.write_str("is required"),
            FieldProblem::Duplicate => f.write_str("must appear only once"),
            FieldProblem::Type(t) => f.write_str(t.must_be()),
            FieldProblem::BelowMin(t, b) => write!(f, "{} >= {b}", t.must_be()),
            FieldProblem::AboveMax(t, b) => write!(f, "{} <= {b}", t.must_be()),
            FieldProblem::TooLong(n) => write!(f, "must be at most {n} characters"),
            FieldProblem::Pattern => f.write_str("does not match the required pattern"),
            FieldProblem::NotOneOf => f.write_str("is not one of the allowed values"),
            FieldProblem::Undecodable => f.write_str("is not valid UTF-8"),
        }
    }
}

/// A failed validation. `Display` is safe to send to the client and to log.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    /// Content type missing or not allowed (415).
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// A `Content-Encoding` other than `identity` or the route's `content_encoding` (415).
    #[error("unsupported content encoding")]
    UnsupportedEncoding,
    /// A `required_headers` entry is absent (400).
    #[error("missing required header {0}")]
    MissingHeader(HeaderName),
    /// The body or query string could not be parsed (400).
    #[error("malformed {kind}")]
    Malformed {
        /// What could not be parsed.
        kind: BodyKind,
    },
    /// A field rule failed (400).
    #[error("{at}: {problem}")]
    Field {
        /// The rule's `at` (pointer or name), as configured.
        at: String,
        /// What is wrong.
        problem: FieldProblem,
    },
    /// The JSON schema rejected the body (400).
    #[error("{}: does not satisfy the schema's \"{keyword}\" rule", if .at.is_empty() { "body" } else { .at.as_str() })]
    Schema {
        /// JSON pointer to the failing instance (`""` = the whole body), truncated.
        at: String,
        /// The schema keyword that failed (`type`, `required`, …).
        keyword: String,
    },
}

impl ValidationError {
    /// Whether this maps to 415 `unsupported_media_type` (everything else is 400).
    pub fn is_media_type(&self) -> bool {
        matches!(self, ValidationError::UnsupportedMediaType | ValidationError::UnsupportedEncoding)
    }
}

/// The one mapping to the reject table: 415 for the media type and encoding, 400 for
/// everything else.
impl From<ValidationError> for super::Reject {
    fn from(e: ValidationError) -> Self {
        match e {
            ValidationError::UnsupportedMediaType => super::Reject::UnsupportedMediaType,
            ValidationError::UnsupportedEncoding => super::Reject::UnsupportedEncoding,
            e => super::Reject::InvalidRequest(e.to_string()),
        }
    }
}

/// Header-level checks: content type, required headers, query-parameter field rules.
pub fn check_headers(v: &Validate, headers: &HeaderMap, query: Option<&str>) -> Result<(), ValidationError> {
    if let Some(allowed) = &v.content_type {
        let mut values = headers.get_all(http::header::CONTENT_TYPE).iter();
        let ct = match (values.next(), values.next()) {
            (Some(one), None) => one.to_str().ok(),
            // Absent, or sent twice (ambiguous): not an allowed media type.
            _ => None,
        };
        let media = ct.map(media_type).ok_or(ValidationError::UnsupportedMediaType)?;
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(media)) {
            return Err(ValidationError::UnsupportedMediaType);
        }
    }
    if v.needs_body() {
        check_encoding(&v.content_encoding, headers)?;
    }
    for h in &v.required_headers {
        if !headers.contains_key(h) {
            return Err(ValidationError::MissingHeader(h.clone()));
        }
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        if v.has_form_checks() {
            check_named(v, q.as_bytes(), BodyKind::Query, false)?;
        }
    }
    Ok(())
}

/// Every coding of every `Content-Encoding` line is `identity` or one the route allows: body
/// rules read the bytes as sent, so a body they cannot read must not pass them unread.
fn check_encoding(allowed: &[String], headers: &HeaderMap) -> Result<(), ValidationError> {
    for value in headers.get_all(http::header::CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| ValidationError::UnsupportedEncoding)?;
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("identity") && !allowed.iter().any(|a| a.eq_ignore_ascii_case(coding)) {
                return Err(ValidationError::UnsupportedEncoding);
            }
        }
    }
    Ok(())
}

/// Body checks: JSON schema and pointer rules for JSON bodies, named rules for form bodies.
/// `content_type` is the request's Content-Type header value, if any.
pub fn check_body(v: &Validate, content_type: Option<&str>, body: &[u8]) -> Result<(), ValidationError> {
    let json_checks = v.has_json_checks();
    let form_checks = v.has_form_checks();
    if !json_checks && !form_checks {
        return Ok(());
    }
    match content_type.map(classify) {
        Some(Kind::Json) if json_checks => check_json(v, body),
        Some(Kind::Form) if form_checks => check_named(v, body, BodyKind::Form, true),
        None if body.is_empty() && !json_checks => Ok(()),
        _ => Err(ValidationError::UnsupportedMediaType),
    }
}

enum Kind {
    Json,
    Form,
    Other,
}

/// `"Application/JSON; charset=utf-8"` → `"Application/JSON"` (compare case-insensitively).
fn media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or_default().trim()
}

fn classify(ct: &str) -> Kind {
    let m = media_type(ct);
    let is_json = m.eq_ignore_ascii_case("application/json")
        || (m.contains('/') && m.len() > 5 && m.get(m.len() - 5..).is_some_and(|s| s.eq_ignore_ascii_case("+json")));
    if is_json {
        Kind::Json
    } else if m.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Kind::Form
    } else {
        Kind::Other
    }
}

/// A JSON body: against the schema (on a `serde_json::Value`, which the schema validator
/// reads), else the pointer rules alone on a [`JsonDoc`], which the other body guards share.
fn check_json(v: &Validate, body: &[u8]) -> Result<(), ValidationError> {
    let Some(schema) = &v.json_schema else { return check_json_doc(v, &JsonDoc::parse(body)) };
    let value: Value = serde_json::from_slice(body).map_err(|_| ValidationError::Malformed { kind: BodyKind::Json })?;
    if let Err(e) = schema.validate(&value) {
        return Err(ValidationError::Schema {
            at: safe_path(&e.instance_path().to_string()),
            keyword: e.kind().keyword().to_owned(),
        });
    }
    check_pointers(v, |p| value.pointer(p).map(Json::from))
}

/// The pointer rules of a route without a schema, on the parsed body.
fn check_json_doc(v: &Validate, doc: &JsonDoc) -> Result<(), ValidationError> {
    if doc.error().is_some() {
        return Err(ValidationError::Malformed { kind: BodyKind::Json });
    }
    check_pointers(v, |p| doc.get(p))
}

fn check_pointers<'a>(v: &Validate, get: impl Fn(&str) -> Option<Json<'a>>) -> Result<(), ValidationError> {
    for rule in &v.fields {
        let FieldAt::Pointer(p) = &rule.at else {
            continue;
        };
        let problem = match get(p) {
            None => Some(FieldProblem::Missing),
            Some(found) => json_problem(rule, found),
        };
        if let Some(problem) = problem {
            return Err(ValidationError::Field { at: p.clone(), problem });
        }
    }
    Ok(())
}

/// Truncates and strips control characters from an instance path (it may hold client keys).
fn safe_path(p: &str) -> String {
    p.chars().map(|c| if c.is_control() { '?' } else { c }).take(MAX_AT_LEN).collect()
}

/// A number from the request, kept exact when it is an integer.
#[derive(Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

fn num_cmp(n: Num, b: Bound) -> Ordering {
    match (n, b) {
        (Num::Int(i), Bound::Int(j)) => i.cmp(&i128::from(j)),
        (Num::Int(i), Bound::Float(y)) => (i as f64).partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Num::Float(x), b) => x.partial_cmp(&b.as_f64()).unwrap_or(Ordering::Equal),
    }
}

fn num_eq_literal(n: Num, l: &Literal) -> bool {
    match l {
        Literal::Int(j) => num_cmp(n, Bound::Int(*j)) == Ordering::Equal,
        Literal::Float(y) => num_cmp(n, Bound::Float(*y)) == Ordering::Equal,
        _ => false,
    }
}

fn bounds(rule: &FieldRule, ty: FieldType, n: Num) -> Option<FieldProblem> {
    if let Some(min) = rule.min {
        if num_cmp(n, min) == Ordering::Less {
            return Some(FieldProblem::BelowMin(ty, min));
        }
    }
    if let Some(max) = rule.max {
        if num_cmp(n, max) == Ordering::Greater {
            return Some(FieldProblem::AboveMax(ty, max));
        }
    }
    None
}

fn string_rules(rule: &FieldRule, s: &str) -> Option<FieldProblem> {
    if let Some(n) = rule.max_len {
        if s.chars().nth(n).is_some() {
            return Some(FieldProblem::TooLong(n));
        }
    }
    if let Some(re) = &rule.pattern {
        if !re.is_match(s) {
            return Some(FieldProblem::Pattern);
        }
    }
    None
}

fn one_of(rule: &FieldRule, matches: impl Fn(&Literal) -> bool) -> Option<FieldProblem> {
    match &rule.one_of {
        Some(list) if !list.iter().any(matches) => Some(FieldProblem::NotOneOf),
        _ => None,
    }
}

fn json_num(v: Json<'_>) -> Option<Num> {
    match v {
        Json::PosInt(u) => Some(Num::Int(i128::from(u))),
        Json::NegInt(i) => Some(Num::Int(i128::from(i))),
        Json::Float(f) => Some(Num::Float(f)),
        _ => None,
    }
}

fn json_literal_eq(v: Json<'_>, l: &Literal) -> bool {
    match (v, l) {
        (Json::String(s), Literal::Str(t)) => s == t,
        (Json::Bool(b), Literal::Bool(c)) => b == *c,
        _ => json_num(v).is_some_and(|n| num_eq_literal(n, l)),
    }
}

fn json_problem(rule: &FieldRule, v: Json<'_>) -> Option<FieldProblem> {
    match rule.ty {
        None => {}
        Some(FieldType::String) => {
            let Json::String(s) = v else {
                return Some(FieldProblem::Type(FieldType::String));
            };
            if let Some(p) = string_rules(rule, s) {
                return Some(p);
            }
        }
        Some(ty @ FieldType::Integer) => {
            let Some(n @ Num::Int(_)) = json_num(v) else {
                return Some(FieldProblem::Type(ty));
            };
            if let Some(p) = bounds(rule, ty, n) {
                return Some(p);
            }
        }
        Some(ty @ FieldType::Number) => {
            let Some(n) = json_num(v) else {
                return Some(FieldProblem::Type(ty));
            };
            if let Some(p) = bounds(rule, ty, n) {
                return Some(p);
            }
        }
        Some(ty @ FieldType::Boolean) if !matches!(v, Json::Bool(_)) => {
            return Some(FieldProblem::Type(ty));
        }
        Some(FieldType::Boolean) => {}
    }
    one_of(rule, |l| json_literal_eq(v, l))
}

/// `-?[0-9]+` only (no `+`, no spaces), as an exact integer.
fn parse_int(s: &str) -> Option<i128> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || digits.len() > 38 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A finite decimal number: digits, optional sign, point and exponent. No `inf`/`NaN`.
fn parse_float(s: &str) -> Option<f64> {
    if !s.bytes().any(|b| b.is_ascii_digit())
        || !s.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

fn text_literal_eq(s: &str, l: &Literal) -> bool {
    match l {
        Literal::Str(t) => s == t,
        Literal::Bool(b) => s == if *b { "true" } else { "false" },
        Literal::Int(_) | Literal::Float(_) => {
            let n = parse_int(s).map(Num::Int).or_else(|| parse_float(s).map(Num::Float));
            n.is_some_and(|n| num_eq_literal(n, l))
        }
    }
}

fn text_problem(rule: &FieldRule, s: &str) -> Option<FieldProblem> {
    match rule.ty {
        None => {}
        Some(FieldType::String) => {
            if let Some(p) = string_rules(rule, s) {
                return Some(p);
            }
        }
        Some(ty @ FieldType::Integer) => {
            let Some(n) = parse_int(s) else {
                return Some(FieldProblem::Type(ty));
            };
            if let Some(p) = bounds(rule, ty, Num::Int(n)) {
                return Some(p);
            }
        }
        Some(ty @ FieldType::Number) => {
            let n = parse_int(s).map(Num::Int).or_else(|| parse_float(s).map(Num::Float));
            let Some(n) = n else {
                return Some(FieldProblem::Type(ty));
            };
            if let Some(p) = bounds(rule, ty, n) {
                return Some(p);
            }
        }
        Some(ty @ FieldType::Boolean) if s != "true" && s != "false" => {
            return Some(FieldProblem::Type(ty));
        }
        Some(FieldType::Boolean) => {}
    }
    one_of(rule, |l| text_literal_eq(s, l))
}

/// Every `%` starts a two-hex-digit escape and the raw bytes are UTF-8.
fn well_formed_urlencoded(b: &[u8]) -> bool {
    if std::str::from_utf8(b).is_err() {
        return false;
    }
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// Named rules against a form body or query string. `required`: absent names are errors.
fn check_named(v: &Validate, input: &[u8], kind: BodyKind, required: bool) -> Result<(), ValidationError> {
    if !well_formed_urlencoded(input) {
        return Err(ValidationError::Malformed { kind });
    }
    let rules: Vec<(&str, &FieldRule)> = v
        .fields
        .iter()
        .filter_map(|r| match &r.at {
            FieldAt::Name(n) => Some((n.as_str(), r)),
            FieldAt::Pointer(_) => None,
        })
        .collect();
    // Per rule: how often its name appeared, and the first value.
    let mut seen: Vec<(usize, Option<Cow<'_, str>>)> = vec![(0, None); rules.len()];
    for (name, value) in form_urlencoded::parse(input) {
        for (i, (rule_name, _)) in rules.iter().enumerate() {
            if name == *rule_name {
                if let Some(slot) = seen.get_mut(i) {
                    slot.0 += 1;
                    if slot.1.is_none() {
                        slot.1 = Some(value.clone());
                    }
                }
            }
        }
    }
    for ((name, rule), (count, value)) in rules.iter().zip(seen) {
        let problem = match (count, value) {
            (0, _) if !required => None,
            (0, _) | (_, None) => Some(FieldProblem::Missing),
            (1, Some(val)) if val.contains('\u{FFFD}') => Some(FieldProblem::Undecodable),
            (1, Some(val)) => text_problem(rule, &val),
            _ => Some(FieldProblem::Duplicate),
        };
        if let Some(problem) = problem {
            return Err(ValidationError::Field { at: (*name).to_owned(), problem });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::rules::load_sources;
    use http::HeaderValue;
    use http::StatusCode;

    /// Compiles a `[route.validate]` body (and optional schema file) into a `Validate`.
    fn compile_with_schema(section: &str, schema: Option<&str>) -> Validate {
        let dir = tempfile::tempdir().unwrap();
        let mut section = section.to_owned();
        if let Some(s) = schema {
            std::fs::write(dir.path().join("s.json"), s).unwrap();
            section.push_str("\njson_schema = \"s.json\"\n");
        }
        let src = format!("[[route]]\nname = \"t\"\nmatch = {{ path = \"/t\" }}\n[route.validate]\n{section}\n");
        let set = load_sources(&[(dir.path().join("r.toml"), src)])
            .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())
            .unwrap();
        set.routes()[0].validate.clone().unwrap()
    }

    fn compile(section: &str) -> Validate {
        compile_with_schema(section, None)
    }

    fn field(spec: &str) -> Validate {
        compile(&format!("fields = [ {spec} ]"))
    }

    fn json(v: &Validate, body: &str) -> Result<(), ValidationError> {
        check_body(v, Some("application/json"), body.as_bytes())
    }

    fn form(v: &Validate, body: &str) -> Result<(), ValidationError> {
        check_body(v, Some("application/x-www-form-urlencoded"), body.as_bytes())
    }

    fn problem(r: Result<(), ValidationError>) -> FieldProblem {
        match r {
            Err(ValidationError::Field { problem, .. }) => problem,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn content_type_allowed_ignores_params_and_case() {
        let v = compile("content_type = [\"application/json\", \"Application/Vnd.Api+JSON\"]");
        assert_eq!(v.content_type.as_deref().unwrap()[1], "application/vnd.api+json");
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON;charset=UTF-8",
            "application/vnd.api+json",
        ] {
            assert_eq!(check_headers(&v, &headers(&[("content-type", ok)]), None), Ok(()), "{ok}");
        }
        for bad in ["text/plain", "application/jsonx", "application/json2; x=1", ""] {
            let e = check_headers(&v, &headers(&[("content-type", bad)]), None).unwrap_err();
            assert!(e.is_media_type(), "{bad}");
            assert_eq!(super::super::Reject::from(e.clone()).status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        assert_eq!(check_headers(&v, &HeaderMap::new(), None), Err(ValidationError::UnsupportedMediaType));
        let twice = headers(&[("content-type", "application/json"), ("content-type", "text/plain")]);
        assert_eq!(check_headers(&v, &twice, None), Err(ValidationError::UnsupportedMediaType));
        // No list: anything goes.
        let any = compile("required_headers = []");
        assert_eq!(check_headers(&any, &HeaderMap::new(), None), Ok(()));
    }

    #[test]
    fn compressed_bodies_are_refused_where_body_rules_apply() {
        let v = field("{ at = \"/amount\", type = \"integer\" }");
        for ok in [&[][..], &[("content-encoding", "identity")], &[("content-encoding", "Identity, identity")]] {
            assert_eq!(check_headers(&v, &headers(ok), None), Ok(()), "{ok:?}");
        }
        for bad in ["gzip", "deflate", "br", "identity, gzip", "x-gzip", "GZIP"] {
            let e = check_headers(&v, &headers(&[("content-encoding", bad)]), None).unwrap_err();
            assert_eq!(e, ValidationError::UnsupportedEncoding, "{bad}");
            let r = super::super::Reject::from(e);
            assert_eq!((r.status(), r.code()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"));
        }
        let twice = headers(&[("content-encoding", "identity"), ("content-encoding", "gzip")]);
        assert_eq!(check_headers(&v, &twice, None), Err(ValidationError::UnsupportedEncoding));
        // The route may accept a coding; a route that reads no body does not care.
        let gzip = compile("content_encoding = [\"GZip\"]\nfields = [ { at = \"/a\", type = \"integer\" } ]");
        assert_eq!(check_headers(&gzip, &headers(&[("content-encoding", "gzip")]), None), Ok(()));
        assert!(check_headers(&gzip, &headers(&[("content-encoding", "br")]), None).is_err());
        let headers_only = compile("required_headers = []");
        assert_eq!(check_headers(&headers_only, &headers(&[("content-encoding", "br")]), None), Ok(()));
    }

    #[test]
    fn required_headers_present() {
        let v = compile("required_headers = [\"Wechatpay-Serial\", \"x-a\"]");
        let ok = headers(&[("wechatpay-serial", "1"), ("x-a", "")]);
        assert_eq!(check_headers(&v, &ok, None), Ok(()));
        let e = check_headers(&v, &headers(&[("x-a", "1")]), None).unwrap_err();
        assert_eq!(e, ValidationError::MissingHeader(HeaderName::from_static("wechatpay-serial")));
        assert_eq!(e.to_string(), "missing required header wechatpay-serial");
        assert!(!e.is_media_type());
        assert_eq!(super::super::Reject::from(e.clone()).status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn integer_bounds_inclusive() {
        let v = field("{ at = \"/amount/total\", type = \"integer\", min = 1, max = 100000000 }");
        assert_eq!(json(&v, r#"{"amount":{"total":1}}"#), Ok(()));
        assert_eq!(json(&v, r#"{"amount":{"total":100000000}}"#), Ok(()));
        let e = json(&v, r#"{"amount":{"total":0}}"#).unwrap_err();
        assert_eq!(e.to_string(), "/amount/total: must be an integer >= 1");
        let e = json(&v, r#"{"amount":{"total":100000001}}"#).unwrap_err();
        assert_eq!(e.to_string(), "/amount/total: must be an integer <= 100000000");
        assert_eq!(problem(json(&v, r#"{"amount":{"total":1.5}}"#)), FieldProblem::Type(FieldType::Integer));
        assert_eq!(problem(json(&v, r#"{"amount":{"total":1.0}}"#)), FieldProblem::Type(FieldType::Integer));
        assert_eq!(problem(json(&v, r#"{"amount":{"total":"5"}}"#)), FieldProblem::Type(FieldType::Integer));
        assert_eq!(problem(json(&v, r#"{"amount":{}}"#)), FieldProblem::Missing);
        assert!(matches!(
            problem(json(&v, r#"{"amount":{"total":18446744073709551615}}"#)),
            FieldProblem::AboveMax(..)
        ));
        let neg = field("{ at = \"/n\", type = \"integer\", min = -5, max = -1 }");
        assert_eq!(json(&neg, r#"{"n":-5}"#), Ok(()));
        assert_eq!(json(&neg, r#"{"n":-1}"#), Ok(()));
        assert!(matches!(problem(json(&neg, r#"{"n":-6}"#)), FieldProblem::BelowMin(..)));
        assert!(matches!(problem(json(&neg, r#"{"n":0}"#)), FieldProblem::AboveMax(..)));
    }

    #[test]
    fn number_accepts_integers_and_floats() {
        let v = field("{ at = \"/x\", type = \"number\", min = 0.5, max = 10 }");
        assert_eq!(json(&v, r#"{"x":0.5}"#), Ok(()));
        assert_eq!(json(&v, r#"{"x":10}"#), Ok(()));
        assert_eq!(json(&v, r#"{"x":10.0}"#), Ok(()));
        assert_eq!(json(&v, r#"{"x":1}"#), Ok(()));
        assert_eq!(json(&v, r#"{"x":5e-1}"#), Ok(()));
        let e = json(&v, r#"{"x":0.49}"#).unwrap_err();
        assert_eq!(e.to_string(), "/x: must be a number >= 0.5");
        assert!(matches!(problem(json(&v, r#"{"x":10.000001}"#)), FieldProblem::AboveMax(..)));
        assert_eq!(problem(json(&v, r#"{"x":"1"}"#)), FieldProblem::Type(FieldType::Number));
        assert_eq!(problem(json(&v, r#"{"x":true}"#)), FieldProblem::Type(FieldType::Number));
    }

    #[test]
    fn boolean_and_one_of() {
        let b = field("{ at = \"/ok\", type = \"boolean\" }");
        assert_eq!(json(&b, r#"{"ok":false}"#), Ok(()));
        assert_eq!(problem(json(&b, r#"{"ok":"true"}"#)), FieldProblem::Type(FieldType::Boolean));
        assert_eq!(problem(json(&b, r#"{"ok":1}"#)), FieldProblem::Type(FieldType::Boolean));
        let s = field("{ at = \"/cur\", type = \"string\", one_of = [\"CNY\", \"USD\"] }");
        assert_eq!(json(&s, r#"{"cur":"USD"}"#), Ok(()));
        let e = json(&s, r#"{"cur":"usd"}"#).unwrap_err();
        assert_eq!(e.to_string(), "/cur: is not one of the allowed values");
        let n = field("{ at = \"/n\", type = \"number\", one_of = [1, 2.5] }");
        assert_eq!(json(&n, r#"{"n":1.0}"#), Ok(()));
        assert_eq!(json(&n, r#"{"n":2.5}"#), Ok(()));
        assert_eq!(problem(json(&n, r#"{"n":2}"#)), FieldProblem::NotOneOf);
        let any = field("{ at = \"/a\", one_of = [\"x\", 3, true] }");
        assert_eq!(json(&any, r#"{"a":true}"#), Ok(()));
        assert_eq!(json(&any, r#"{"a":3}"#), Ok(()));
        assert_eq!(problem(json(&any, r#"{"a":"3"}"#)), FieldProblem::NotOneOf);
        // No type, no one_of: presence only, any JSON value.
        let present = field("{ at = \"/p\" }");
        assert_eq!(json(&present, r#"{"p":null}"#), Ok(()));
        assert_eq!(problem(json(&present, r#"{}"#)), FieldProblem::Missing);
    }

    #[test]
    fn max_len_counts_chars_and_pattern_matches() {
        let v = field("{ at = \"/s\", type = \"string\", max_len = 3 }");
        assert_eq!(json(&v, r#"{"s":"abc"}"#), Ok(()));
        assert_eq!(json(&v, r#"{"s":"日本語"}"#), Ok(()));
        assert_eq!(json(&v, r#"{"s":""}"#), Ok(()));
        let e = json(&v, r#"{"s":"日本語x"}"#).unwrap_err();
        assert_eq!(e.to_string(), "/s: must be at most 3 characters");
        let p = field("{ at = \"/out_trade_no\", type = \"string\", pattern = \"^[A-Za-z0-9_-]{6,32}$\" }");
        assert_eq!(json(&p, r#"{"out_trade_no":"abc_123"}"#), Ok(()));
        let e = json(&p, r#"{"out_trade_no":"abc"}"#).unwrap_err();
        assert_eq!(e.to_string(), "/out_trade_no: does not match the required pattern");
        assert_eq!(problem(json(&p, r#"{"out_trade_no":123456}"#)), FieldProblem::Type(FieldType::String));
    }

    #[test]
    fn nested_pointers_and_arrays() {
        let v = compile(
            "fields = [ { at = \"/items/1/price\", type = \"integer\", min = 0 },\n\
             { at = \"/a~1b/c~0d\", type = \"string\" } ]",
        );
        assert_eq!(json(&v, r#"{"items":[{"price":-1},{"price":0}],"a/b":{"c~d":"x"}}"#), Ok(()));
        let e = json(&v, r#"{"items":[{"price":0},{"price":-1}],"a/b":{"c~d":"x"}}"#).unwrap_err();
        assert_eq!(e.to_string(), "/items/1/price: must be an integer >= 0");
        let e = json(&v, r#"{"items":[{"price":0}],"a/b":{"c~d":"x"}}"#).unwrap_err();
        assert_eq!(e.to_string(), "/items/1/price: is required");
        let e = json(&v, r#"{"items":[{"price":1},{"price":1}],"a/b":{"c~d":[]}}"#).unwrap_err();
        assert_eq!(e.to_string(), "/a~1b/c~0d: must be a string");
    }

    #[test]
    fn malformed_bodies() {
        let v = field("{ at = \"/x\" }");
        for bad in ["", "{", "{\"x\":1}}", "\u{feff}{}", "nul"] {
            assert_eq!(json(&v, bad), Err(ValidationError::Malformed { kind: BodyKind::Json }), "{bad:?}");
        }
        assert_eq!(
            check_body(&v, Some("application/json"), b"{\"x\":\"\xff\"}"),
            Err(ValidationError::Malformed { kind: BodyKind::Json })
        );
        let f = field("{ at = \"x\" }");
        for bad in ["x=%zz", "x=%4", "x=1&y=%"] {
            let e = form(&f, bad).unwrap_err();
            assert_eq!(e, ValidationError::Malformed { kind: BodyKind::Form }, "{bad}");
            assert_eq!(e.to_string(), "malformed form body");
        }
        assert_eq!(
            check_body(&f, Some("application/x-www-form-urlencoded"), b"x=\xff"),
            Err(ValidationError::Malformed { kind: BodyKind::Form })
        );
        assert_eq!(problem(form(&f, "x=%ff")), FieldProblem::Undecodable);
    }

    #[test]
    fn body_kind_selection() {
        let j = field("{ at = \"/x\" }");
        assert_eq!(check_body(&j, Some("application/problem+json; charset=utf-8"), b"{\"x\":1}"), Ok(()));
        assert_eq!(check_body(&j, Some("text/plain"), b"{}"), Err(ValidationError::UnsupportedMediaType));
        assert_eq!(check_body(&j, None, b""), Err(ValidationError::UnsupportedMediaType));
        assert_eq!(
            check_body(&j, Some("application/x-www-form-urlencoded"), b"x=1"),
            Err(ValidationError::UnsupportedMediaType)
        );
        let f = field("{ at = \"x\" }");
        assert_eq!(check_body(&f, Some("application/json"), b"{}"), Err(ValidationError::UnsupportedMediaType));
        assert_eq!(check_body(&f, None, b""), Ok(()));
        assert_eq!(check_body(&f, None, b"x=1"), Err(ValidationError::UnsupportedMediaType));
        let none = compile("max_body = \"1KiB\"");
        assert_eq!(check_body(&none, Some("text/plain"), b"anything"), Ok(()));
        assert!(!none.needs_body());
        assert!(j.needs_body() && f.needs_body());
    }

    #[test]
    fn form_fields_decoded_and_required() {
        let v = compile(
            "fields = [ { at = \"subject\", type = \"string\", max_len = 5 },\n\
             { at = \"total_amount\", type = \"number\", min = 0.01, max = 100 },\n\
             { at = \"count\", type = \"integer\", min = 1 },\n\
             { at = \"paid\", type = \"boolean\" },\n\
             { at = \"status\", one_of = [\"TRADE_SUCCESS\", \"TRADE_FINISHED\"] } ]",
        );
        let good = "subject=a%20b+c&total_amount=0.01&count=1&paid=true&status=TRADE_SUCCESS&extra=%41";
        assert_eq!(form(&v, good), Ok(()));
        assert_eq!(form(&v, &good.replace("a%20b+c", "%E6%97%A5%E6%9C%AC%E8%AA%9E%E8%AA%9E%E8%AA%9E")), Ok(()));
        assert_eq!(problem(form(&v, &good.replace("a%20b+c", "abcdef"))), FieldProblem::TooLong(5));
        assert_eq!(form(&v, &good.replace("0.01", "100")), Ok(()));
        assert!(matches!(problem(form(&v, &good.replace("0.01", "0.009"))), FieldProblem::BelowMin(..)));
        assert!(matches!(problem(form(&v, &good.replace("0.01", "100.5"))), FieldProblem::AboveMax(..)));
        assert_eq!(problem(form(&v, &good.replace("0.01", "NaN"))), FieldProblem::Type(FieldType::Number));
        assert_eq!(problem(form(&v, &good.replace("0.01", "inf"))), FieldProblem::Type(FieldType::Number));
        assert_eq!(problem(form(&v, &good.replace("count=1", "count=%2B1"))), FieldProblem::Type(FieldType::Integer));
        assert_eq!(problem(form(&v, &good.replace("count=1", "count=1.0"))), FieldProblem::Type(FieldType::Integer));
        assert!(matches!(problem(form(&v, &good.replace("count=1", "count=0"))), FieldProblem::BelowMin(..)));
        assert_eq!(problem(form(&v, &good.replace("paid=true", "paid=1"))), FieldProblem::Type(FieldType::Boolean));
        assert_eq!(problem(form(&v, &good.replace("TRADE_SUCCESS", "WAIT"))), FieldProblem::NotOneOf);
        let e = form(&v, &good.replace("&paid=true", "")).unwrap_err();
        assert_eq!(e.to_string(), "paid: is required");
        let e = form(&v, &format!("{good}&count=2")).unwrap_err();
        assert_eq!(e.to_string(), "count: must appear only once");
        // Percent-encoded names match too.
        assert_eq!(form(&v, &good.replace("paid=", "p%61id=")), Ok(()));
    }

    #[test]
    fn query_fields_checked_only_when_present() {
        let v = compile("fields = [ { at = \"page\", type = \"integer\", min = 1, max = 100 }, { at = \"/x\" } ]");
        let h = HeaderMap::new();
        assert_eq!(check_headers(&v, &h, Some("page=1")), Ok(()));
        assert_eq!(check_headers(&v, &h, Some("page=100&q=x")), Ok(()));
        assert_eq!(check_headers(&v, &h, Some("other=1")), Ok(()));
        assert_eq!(check_headers(&v, &h, None), Ok(()));
        assert_eq!(check_headers(&v, &h, Some("")), Ok(()));
        let e = check_headers(&v, &h, Some("page=101")).unwrap_err();
        assert_eq!(e.to_string(), "page: must be an integer <= 100");
        assert!(matches!(problem(check_headers(&v, &h, Some("page=0"))), FieldProblem::BelowMin(..)));
        assert_eq!(problem(check_headers(&v, &h, Some("page=1&page=2"))), FieldProblem::Duplicate);
        assert_eq!(check_headers(&v, &h, Some("page=%G1")), Err(ValidationError::Malformed { kind: BodyKind::Query }));
        assert_eq!(ValidationError::Malformed { kind: BodyKind::Query }.to_string(), "malformed query string");
    }

    const SCHEMA: &str = r#"{
        "type": "object",
        "required": ["amount", "id"],
        "properties": {
            "id": { "type": "string", "maxLength": 8 },
            "amount": { "type": "object", "properties": { "total": { "type": "integer", "minimum": 1 } }, "required": ["total"] },
            "tags": { "type": "array", "items": { "type": "string", "pattern": "^[a-z]+$" } }
        }
    }"#;

    #[test]
    fn schema_errors_name_the_path_and_keyword() {
        let v = compile_with_schema("content_type = [\"application/json\"]", Some(SCHEMA));
        assert!(v.json_schema.is_some() && v.needs_body());
        assert_eq!(json(&v, r#"{"id":"a","amount":{"total":5},"tags":["x"]}"#), Ok(()));
        let e = json(&v, r#"{"id":"a","amount":{"total":0}}"#).unwrap_err();
        assert_eq!(e.to_string(), "/amount/total: does not satisfy the schema's \"minimum\" rule");
        let e = json(&v, r#"{"id":"a"}"#).unwrap_err();
        assert_eq!(e, ValidationError::Schema { at: String::new(), keyword: "required".into() });
        assert_eq!(e.to_string(), "body: does not satisfy the schema's \"required\" rule");
        let e = json(&v, r#"{"id":"a","amount":{"total":1},"tags":["ok","NOT-OK"]}"#).unwrap_err();
        assert_eq!(e.to_string(), "/tags/1: does not satisfy the schema's \"pattern\" rule");
        assert_eq!(json(&v, "[1,2"), Err(ValidationError::Malformed { kind: BodyKind::Json }));
    }

    #[test]
    fn no_error_echoes_the_submitted_value() {
        const SECRET: &str = "4111111111111111";
        let v = compile_with_schema(
            "fields = [ { at = \"/card\", type = \"integer\", max = 5 },\n\
             { at = \"/s\", type = \"string\", pattern = \"^x$\", max_len = 2 },\n\
             { at = \"/o\", one_of = [\"a\"] },\n\
             { at = \"name\", type = \"integer\" } ]",
            Some(
                r#"{"properties":{"id":{"enum":["a"]},"z":{"const":1},"n":{"maximum":1},"q":{"format":"email","maxLength":3}}}"#,
            ),
        );
        let bodies = [
            format!(r#"{{"id":"{SECRET}"}}"#),
            format!(r#"{{"z":"{SECRET}"}}"#),
            format!(r#"{{"n":{SECRET}}}"#),
            format!(r#"{{"q":"{SECRET}"}}"#),
            format!(r#"{{"card":{SECRET},"s":"x","o":"a"}}"#),
            format!(r#"{{"card":"{SECRET}","s":"x","o":"a"}}"#),
            format!(r#"{{"card":1,"s":"{SECRET}","o":"a"}}"#),
            format!(r#"{{"card":1,"s":"x","o":"{SECRET}"}}"#),
            r#"{"card":1,"s":"x","o":"a","#.to_owned(),
        ];
        let mut errors = 0;
        for b in &bodies {
            if let Err(e) = json(&v, b) {
                errors += 1;
                let text = format!("{e} {e:?}");
                assert!(!text.contains(SECRET), "{text}");
                assert!(!text.contains("411111"), "{text}");
            }
        }
        assert_eq!(errors, bodies.len());
        for q in [format!("name={SECRET}x"), format!("name={SECRET}&name=1")] {
            let e = check_headers(&v, &HeaderMap::new(), Some(&q)).unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(!text.contains(SECRET), "{text}");
        }
        let e = form(&v, &format!("name={SECRET}.5")).unwrap_err();
        assert!(!format!("{e} {e:?}").contains(SECRET));
    }

    #[test]
    fn schema_path_is_sanitised() {
        assert_eq!(safe_path("/a\u{0}b"), "/a?b");
        assert_eq!(safe_path(&"x".repeat(500)).len(), MAX_AT_LEN);
    }
}

/// Header-level validation (before any body byte is read): the declared Content-Length
/// against the body cap, then `[route.validate]`'s content type, required headers and query
/// fields.
#[derive(Clone, Copy, Default)]
pub struct HeaderGuard;

impl super::layer::Check for HeaderGuard {
    const NAME: &'static str = "validate";

    fn check(&self, ex: &mut crate::exchange::Exchange) -> Result<(), super::Reject> {
        let limit = ex.max_body();
        let req = &ex.req;
        let declared = crate::body::declared_length(req.headers());
        if declared.is_some_and(|n| n > limit) {
            return Err(super::Reject::BodyTooLarge { limit });
        }
        match ex.route.as_ref().and_then(|r| r.validate.as_ref()) {
            Some(v) => Ok(check_headers(v, req.headers(), req.uri().query())?),
            None => Ok(()),
        }
    }
}

/// Body validation on the buffered body (JSON schema, field rules).
#[derive(Clone, Copy, Default)]
pub struct BodyGuard;

impl super::layer::Check for BodyGuard {
    const NAME: &'static str = "validate_body";

    fn check(&self, ex: &mut crate::exchange::Exchange) -> Result<(), super::Reject> {
        let crate::exchange::Parts { req, route, json, content, .. } = &mut **ex;
        let Some(v) = route.as_ref().and_then(|r| r.validate.as_ref()) else { return Ok(()) };
        if !v.needs_body() {
            return Ok(());
        }
        let content_type = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let Some(body) = req.body().buffered() else {
            return Err(super::Reject::InvalidRequest("body could not be read for validation".into()));
        };
        // The common case, a JSON body as sent with pointer rules only: on the document the
        // content guards after this one read too (one parse per request). A body with a
        // content coding is read as sent (see `content_encoding`), the shared document decoded.
        let content = super::values::content(content, req);
        let is_json = content_type.map(classify).is_some_and(|k| matches!(k, Kind::Json));
        if content.coding == Ok(None) && is_json && v.json_schema.is_none() && v.has_json_checks() {
            return Ok(check_json_doc(v, super::values::json_doc(json, req, content, route.as_deref())?)?);
        }
        Ok(check_body(v, content_type, body)?)
    }
}
