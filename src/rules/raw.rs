//! Serde mirrors of `rules/*.toml`, exactly as written. Every leaf keeps its byte span so that
//! compile-time problems are reported at the offending value. Unknown keys and wrong types are
//! rejected here by serde (`deny_unknown_fields`); everything else is checked in `compile.rs`.

use crate::units::de::SizeValue;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// A list of strings, each with its span; the list has a span too.
pub type SpannedList = Spanned<Vec<Spanned<String>>>;

/// One rule file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleFile {
    /// `[ip_sets]`: name → CIDR list.
    #[serde(default)]
    pub ip_sets: Option<BTreeMap<Spanned<String>, SpannedList>>,
    /// `[defaults]`.
    #[serde(default)]
    pub defaults: Option<Spanned<RawDefaults>>,
    /// `[[route]]`.
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RawRoute>>,
}

/// `[defaults]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// `"forward"` or `"deny"`.
    pub action: Option<Spanned<String>>,
    /// Body cap.
    pub max_body: Option<Spanned<SizeValue>>,
    /// CIDRs or `@set`s.
    pub ip_deny: Option<SpannedList>,
    /// CIDRs or `@set`s.
    pub ip_allow: Option<SpannedList>,
    /// Default rate limit.
    pub rate_limit: Option<Spanned<RawRateLimit>>,
    /// `card_data = { request, response }`.
    pub card_data: Option<Spanned<super::card_data::RawCardData>>,
    /// Names requests may be for: exact or `*.` suffix.
    pub hosts: Option<SpannedList>,
}

/// `rate_limit = { key, rate, burst }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// `"ip"`, `"route"` or `"header:<name>"`; defaults to `"ip"`.
    pub key: Option<Spanned<String>>,
    /// `"10/s"`.
    pub rate: Spanned<String>,
    /// Bucket size; defaults to the rate's count.
    pub burst: Option<Spanned<i64>>,
}

/// `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique name.
    pub name: Spanned<String>,
    /// `match = { path, methods, host }`.
    #[serde(rename = "match")]
    pub matcher: Spanned<RawMatch>,
    /// `"enforce"` (default) or `"monitor"`.
    pub mode: Option<Spanned<String>>,
    /// Replaces `defaults.max_body`.
    pub max_body: Option<Spanned<SizeValue>>,
    /// Replaces `defaults.ip_allow`.
    pub ip_allow: Option<SpannedList>,
    /// Replaces `defaults.ip_deny`.
    pub ip_deny: Option<SpannedList>,
    /// Replaces `defaults.rate_limit`.
    pub rate_limit: Option<Spanned<RawRateLimit>>,
    /// `{ replay, rate_limit }`.
    pub on_state_error: Option<Spanned<RawOnStateError>>,
    /// `[route.validate]`.
    pub validate: Option<Spanned<RawValidate>>,
    /// `[route.signature]`: every provider's keys, typed, with spans.
    pub signature: Option<Spanned<crate::signature::SignatureTable>>,
    /// `[[route.failure_limit]]`.
    pub failure_limit: Option<Spanned<Vec<Spanned<RawFailureLimit>>>>,
    /// `[route.idempotency]`.
    pub idempotency: Option<Spanned<RawIdempotency>>,
    /// `[route.card_data]`: replaces `defaults.card_data` key by key.
    pub card_data: Option<Spanned<super::card_data::RawCardData>>,
    /// `[route.origin]`.
    pub origin: Option<Spanned<super::origin::RawOrigin>>,
    /// `[route.injection]`.
    pub injection: Option<Spanned<super::injection::RawInjection>>,
}

/// `[route.idempotency]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdempotency {
    /// `"header:<name>"` (default `header:idempotency-key`), `"json:<pointer>"`,
    /// `"form:<field>"`, `"query:<name>"`.
    pub key: Option<Spanned<String>>,
    /// No key → 400 (default true).
    pub required: Option<bool>,
    /// `"ip"` (default), `"header:<name>"`, `"route"`.
    pub scope: Option<Spanned<String>>,
    /// How long a finished answer is replayed (default 24h).
    pub retention: Option<Spanned<String>>,
    /// How long an attempt in flight holds the key at most (default 60s).
    pub lease: Option<Spanned<String>>,
    /// `"hold"` (default) or `"release"`.
    pub on_timeout: Option<Spanned<String>>,
    /// The largest answer stored (default 64KiB).
    pub max_response: Option<Spanned<SizeValue>>,
}

/// One `[[route.failure_limit]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailureLimit {
    /// `"ip"` (default), `"header:<name>"`, `"json:<pointer>"`, `"form:<field>"`.
    pub key: Option<Spanned<String>>,
    /// What makes an answer a failed attempt.
    pub failure: Spanned<RawFailure>,
    /// Failures within `window` that ban the key.
    pub threshold: Spanned<i64>,
    /// The sliding window.
    pub window: Spanned<String>,
    /// The first ban.
    pub ban: Spanned<String>,
    /// Each further ban is this many times longer (default 2).
    pub ban_factor: Option<Spanned<i64>>,
    /// The longest ban (default 24h).
    pub max_ban: Option<Spanned<String>>,
}

/// `failure = { status, json }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailure {
    /// `"402"` or a class such as `"4xx"`.
    pub status: Option<SpannedList>,
    /// A field of the backend's JSON answer.
    pub json: Option<Spanned<RawJsonMatch>>,
}

/// `json = { at, equals | not }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJsonMatch {
    /// JSON pointer into the answer.
    pub at: Spanned<String>,
    /// A failure when the field equals this.
    pub equals: Option<Spanned<toml::Value>>,
    /// A failure when the field is present and differs from this.
    pub not: Option<Spanned<toml::Value>>,
}

/// `match = { … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Exact path or prefix ending in `/*`.
    pub path: Spanned<String>,
    /// Allowed methods; absent = any.
    pub methods: Option<SpannedList>,
    /// Host (case-insensitive, port ignored); absent = any.
    pub host: Option<Spanned<String>>,
}

/// `on_state_error = { … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnStateError {
    /// `"fail_closed"` (default) or `"fail_open"`.
    pub replay: Option<Spanned<String>>,
    /// `"fail_open"` (default) or `"fail_closed"`.
    pub rate_limit: Option<Spanned<String>>,
    /// `"fail_open"` (default) or `"fail_closed"`.
    pub failure_limit: Option<Spanned<String>>,
    /// `"fail_closed"` (default) or `"fail_open"`.
    pub idempotency: Option<Spanned<String>>,
}

/// `[route.validate]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawValidate {
    /// Allowed media types.
    pub content_type: Option<SpannedList>,
    /// Body cap for this route.
    pub max_body: Option<Spanned<SizeValue>>,
    /// Header names that must be present.
    pub required_headers: Option<SpannedList>,
    /// Content codings allowed besides `identity` when body rules apply.
    pub content_encoding: Option<SpannedList>,
    /// Path to a JSON schema file, relative to the rule file.
    pub json_schema: Option<Spanned<String>>,
    /// Field rules.
    pub fields: Option<Vec<Spanned<RawField>>>,
}

/// One entry of `fields = [ … ]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    /// JSON pointer (`/a/b`) or form/query name.
    pub at: Spanned<String>,
    /// `string`, `integer`, `number`, `boolean`; absent = any present value.
    #[serde(rename = "type")]
    pub ty: Option<Spanned<String>>,
    /// Inclusive lower bound (numbers).
    pub min: Option<Spanned<RawNumber>>,
    /// Inclusive upper bound (numbers).
    pub max: Option<Spanned<RawNumber>>,
    /// Regex the whole string value must match (anchor it yourself).
    pub pattern: Option<Spanned<String>>,
    /// Maximum length in characters (strings).
    pub max_len: Option<Spanned<i64>>,
    /// Allowed values.
    pub one_of: Option<Spanned<Vec<Spanned<toml::Value>>>>,
}

/// A TOML integer or float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawNumber {
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
}

impl<'de> Deserialize<'de> for RawNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawNumber;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawNumber, E> {
                Ok(RawNumber::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawNumber, E> {
                i64::try_from(v).map(RawNumber::Int).map_err(|_| E::custom("number too large"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawNumber, E> {
                Ok(RawNumber::Float(v))
            }
        }
        d.deserialize_any(V)
    }
}
