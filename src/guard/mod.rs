//! Why a request was refused, and the single table that turns that into an HTTP answer.
//!
//! Every guard returns a [`Reject`]; nothing else in the proxy builds an error response. The
//! table is pinned by a unit test because providers, shops and dashboards depend on it.

pub mod body;
pub mod card_answer;
pub mod card_data;
pub mod chain;
pub mod failure_limit;
pub mod head;
pub mod idempotency;
pub mod injection;
pub mod ip;
pub mod json_doc;
pub mod layer;
pub mod origin;
pub mod place;
pub mod rate_limit;
pub mod replay;
pub mod signature;
pub mod validate;
pub mod values;

use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::Body;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("client address is not allowed on this route")]
    IpDenied,
    #[error("no route matches this request")]
    NoRoute,
    #[error("method not allowed on this route")]
    MethodNotAllowed { allow: Option<HeaderValue> },
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// `[server] body_read_timeout` passed before the whole body arrived.
    #[error("the request body was not received in time")]
    BodyTimeout,
    #[error("content type not allowed on this route")]
    UnsupportedMediaType,
    /// A compressed body on a route whose rules read the body: the rules would see the
    /// compressed bytes, the backend (Express inflates it) the content.
    #[error("content encoding not allowed on this route")]
    UnsupportedEncoding,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("request target longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("request head larger than {limit} bytes")]
    HeadersTooLarge { limit: usize },
    /// `reason` goes to the audit line only; the client sees the generic message.
    #[error("signature missing or invalid")]
    SignatureInvalid { reason: String },
    #[error("signed timestamp outside the allowed window")]
    StaleTimestamp { skew_secs: i64 },
    #[error("this request was already accepted once")]
    Replay,
    #[error("rate limit exceeded")]
    RateLimited { limit: u64, reset: Duration },
    /// `[[route.failure_limit]]`: the key failed too often and is banned for `left`.
    #[error("too many failed attempts; try again later")]
    TooManyFailures { left: Duration },
    /// `[route.idempotency]`: a required key is absent, or not 1–255 visible ASCII characters.
    #[error("idempotency key missing or malformed")]
    IdempotencyKeyMissing { reason: &'static str },
    /// An attempt with the same key and request is in flight. `key`: the first 8 hex digits of
    /// the stored key's digest (for the audit line).
    #[error("a request with this idempotency key is in progress; retry later")]
    IdempotencyInFlight { key: u32 },
    /// An attempt with the same key timed out at the backend, which may have acted on it.
    #[error("the outcome of the first request with this idempotency key is unknown")]
    IdempotencyIndeterminate { key: u32 },
    #[error("this idempotency key was used for a different request")]
    IdempotencyMismatch { key: u32 },
    /// Not a refusal: the answer to the first attempt with this key, replayed (the backend is
    /// not contacted). Its status is the stored one.
    #[error("the answer to an earlier request with this idempotency key, replayed")]
    IdempotentReplay(Box<Replayed>),
    #[error("the shop backend is unavailable")]
    UpstreamUnavailable,
    #[error("the shop backend did not answer in time")]
    UpstreamTimeout,
    #[error("a required state store is unavailable")]
    StateUnavailable,
    /// `card_data`: a card number in the request. `field`: where (never the number); `masked`:
    /// its first six and last four digits.
    #[error("a card number where none may be")]
    CardData { field: String, masked: String, scheme: &'static str },
    /// `[route.origin]`: a state-changing request from another site.
    #[error("cross-site request refused")]
    CrossOrigin { reason: &'static str },
    /// `[route.injection]`: a SQL injection or XSS pattern in a value (`kind`: sqli, xss).
    #[error("a request value looks like an injection attack")]
    InjectionDetected { field: String, kind: &'static str, fingerprint: String },
    /// `card_data.response = "block"`: the backend's answer carried a card number (or could
    /// not be scanned). `detail`: the masked number or why.
    #[error("the shop backend's answer was withheld")]
    CardDataLeak { detail: String },
    /// `defaults.hosts`: the request is for a name this shop does not answer to.
    #[error("this server does not answer for the requested host")]
    MisdirectedRequest,
}

impl Reject {
    pub fn status(&self) -> StatusCode {
        match self {
            Reject::IpDenied => StatusCode::FORBIDDEN,
            Reject::NoRoute => StatusCode::NOT_FOUND,
            Reject::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Reject::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reject::UnsupportedMediaType | Reject::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reject::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Reject::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Reject::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reject::SignatureInvalid { .. } | Reject::StaleTimestamp { .. } | Reject::Replay => {
                StatusCode::UNAUTHORIZED
            }
            Reject::RateLimited { .. } | Reject::TooManyFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
            Reject::IdempotencyKeyMissing { .. } => StatusCode::BAD_REQUEST,
            Reject::IdempotencyInFlight { .. } | Reject::IdempotencyIndeterminate { .. } => StatusCode::CONFLICT,
            Reject::IdempotencyMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Reject::IdempotentReplay(r) => {
                StatusCode::from_u16(r.answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Reject::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Reject::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Reject::StateUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Reject::CardData { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Reject::CrossOrigin { .. } | Reject::InjectionDetected { .. } => StatusCode::FORBIDDEN,
            Reject::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            Reject::CardDataLeak { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The stable machine-readable code in the JSON body and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Reject::IpDenied => "ip_denied",
            Reject::NoRoute => "no_route",
            Reject::MethodNotAllowed { .. } => "method_not_allowed",
            Reject::BodyTooLarge { .. } => "body_too_large",
            Reject::BodyTimeout => "request_timeout",
            Reject::UnsupportedMediaType | Reject::UnsupportedEncoding => "unsupported_media_type",
            Reject::InvalidRequest(_) => "invalid_request",
            Reject::UriTooLong { .. } => "uri_too_long",
            Reject::HeadersTooLarge { .. } => "headers_too_large",
            Reject::SignatureInvalid { .. } => "signature_invalid",
            Reject::StaleTimestamp { .. } => "stale_timestamp",
            Reject::Replay => "replay",
            Reject::RateLimited { .. } => "rate_limited",
            Reject::TooManyFailures { .. } => "too_many_failures",
            Reject::IdempotencyKeyMissing { .. } => "idempotency_key_missing",
            Reject::IdempotencyInFlight { .. } => "idempotency_in_flight",
            Reject::IdempotencyIndeterminate { .. } => "idempotency_indeterminate",
            Reject::IdempotencyMismatch { .. } => "idempotency_mismatch",
            Reject::IdempotentReplay(_) => "idempotent_replay",
            Reject::UpstreamUnavailable => "upstream_unavailable",
            Reject::UpstreamTimeout => "upstream_timeout",
            Reject::StateUnavailable => "state_unavailable",
            Reject::CardData { .. } => "card_data",
            Reject::CrossOrigin { .. } => "cross_origin",
            Reject::InjectionDetected { .. } => "injection_detected",
            Reject::MisdirectedRequest => "misdirected_request",
            Reject::CardDataLeak { .. } => "card_data_leak",
        }
    }

    /// What the audit line says: more than the client is told, never a request value.
    pub fn detail(&self) -> String {
        match self {
            Reject::SignatureInvalid { reason } => format!("{self}: {reason}"),
            Reject::StaleTimestamp { skew_secs } => format!("{self} (skew {skew_secs}s)"),
            Reject::IdempotencyKeyMissing { reason } => format!("{self}: {reason}"),
            Reject::IdempotencyInFlight { key }
            | Reject::IdempotencyIndeterminate { key }
            | Reject::IdempotencyMismatch { key } => format!("{self} (key #{key:08x})"),
            Reject::IdempotentReplay(r) => format!("{self} (key #{:08x}, status {})", r.key, r.answer.status),
            Reject::CardData { field, masked, scheme } => format!("{self}: {scheme} {masked} in {field}"),
            Reject::CrossOrigin { reason } => format!("{self}: {reason}"),
            Reject::CardDataLeak { detail } => format!("{self}: {detail}"),
            Reject::InjectionDetected { field, kind, fingerprint } if fingerprint.is_empty() => {
                format!("{self}: {kind} in {field}")
            }
            Reject::InjectionDetected { field, kind, fingerprint } => {
                format!("{self}: {kind} (fingerprint {fingerprint}) in {field}")
            }
            _ => self.to_string(),
        }
    }

    pub fn skew_secs(&self) -> Option<i64> {
        match self {
            Reject::StaleTimestamp { skew_secs } => Some(*skew_secs),
            _ => None,
        }
    }

    /// What the audit line and the decision metric call it: `block`, or `replay` for an
    /// idempotent replay (an answer, not a refusal).
    pub fn decision(&self) -> &'static str {
        match self {
            Reject::IdempotentReplay(_) => "replay",
            _ => "block",
        }
    }

    /// The response a client sees: status, small JSON body, no internal detail.
    pub fn to_response(&self, rule: Option<&str>, request_id: &str) -> Response<Body> {
        if let Reject::IdempotentReplay(r) = self {
            return r.to_response();
        }
        let body = serde_json::json!({
            "error": self.code(),
            "message": self.to_string(),
            "rule": rule,
            "request_id": request_id,
        });
        let mut res = Response::new(Body::full(body.to_string()));
        *res.status_mut() = self.status();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Reject::MethodNotAllowed { allow: Some(allow) } => {
                h.insert(header::ALLOW, allow.clone());
            }
            Reject::RateLimited { limit, reset } => {
                let secs = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                h.insert("ratelimit-limit", HeaderValue::from(*limit));
                h.insert("ratelimit-remaining", HeaderValue::from(0u64));
                h.insert("ratelimit-reset", HeaderValue::from(secs.max(1)));
            }
            Reject::TooManyFailures { left } => {
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            Reject::IdempotencyInFlight { .. } => {
                // The first attempt usually ends within the backend's answer time; a client that
                // retries after a second sees its answer.
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        res
    }
}

/// A stored answer, replayed under the key it was stored for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub answer: crate::state::StoredAnswer,
    /// The first 8 hex digits of the stored key's digest.
    pub key: u32,
}

impl Replayed {
    /// The stored status, `content-type` and body, marked `idempotent-replayed: true`.
    fn to_response(&self) -> Response<Body> {
        let mut res = Response::new(Body::full(self.answer.body.clone()));
        *res.status_mut() = StatusCode::from_u16(self.answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = res.headers_mut();
        if let Some(ct) = &self.answer.content_type {
            h.insert(header::CONTENT_TYPE, ct.clone());
        }
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
        res
    }
}

impl From<crate::signature::SignatureError> for Reject {
    fn from(e: crate::signature::SignatureError) -> Self {
        match e {
            crate::signature::SignatureError::Stale { skew_secs } => Reject::StaleTimestamp { skew_secs },
            other => Reject::SignatureInvalid { reason: other.to_string() },
        }
    }
}

/// A state store could not answer a guard: the route's `on_state_error` for that guard decides.
/// `fail_open` lets the request go on and counts `decision="fail_open"`; `fail_closed` refuses
/// with 503 `state_unavailable`. Logged per request at debug only: the health loop (or a full
/// store) reports the outage once.
pub(crate) fn store_unavailable(
    guard: &'static str,
    fail_mode: crate::rules::FailMode,
    error: &crate::state::StoreError,
    metrics: &crate::metrics::Metrics,
    route: &crate::metrics::RouteLabel,
) -> Result<(), Reject> {
    tracing::debug!(target: "payguard::state", guard, %error, ?fail_mode, "state store unavailable");
    match fail_mode {
        crate::rules::FailMode::Open => {
            metrics.decision(route, guard, "fail_open");
            Ok(())
        }
        crate::rules::FailMode::Closed => Err(Reject::StateUnavailable),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http_body_util::BodyExt;

    /// The contract table of RULES.md ("What a rejected request gets").
    #[test]
    fn status_and_code_table_is_pinned() {
        let table: &[(Reject, u16, &str)] = &[
            (Reject::IpDenied, 403, "ip_denied"),
            (Reject::NoRoute, 404, "no_route"),
            (Reject::MethodNotAllowed { allow: None }, 405, "method_not_allowed"),
            (Reject::BodyTooLarge { limit: 1 }, 413, "body_too_large"),
            (Reject::BodyTimeout, 408, "request_timeout"),
            (Reject::UnsupportedMediaType, 415, "unsupported_media_type"),
            (Reject::UnsupportedEncoding, 415, "unsupported_media_type"),
            (Reject::InvalidRequest("x".into()), 400, "invalid_request"),
            (Reject::UriTooLong { limit: 1 }, 414, "uri_too_long"),
            (Reject::HeadersTooLarge { limit: 1 }, 431, "headers_too_large"),
            (Reject::SignatureInvalid { reason: "x".into() }, 401, "signature_invalid"),
            (Reject::StaleTimestamp { skew_secs: 1 }, 401, "stale_timestamp"),
            (Reject::Replay, 401, "replay"),
            (Reject::RateLimited { limit: 1, reset: Duration::from_secs(1) }, 429, "rate_limited"),
            (Reject::TooManyFailures { left: Duration::from_secs(1) }, 429, "too_many_failures"),
            (Reject::IdempotencyKeyMissing { reason: "x" }, 400, "idempotency_key_missing"),
            (Reject::IdempotencyInFlight { key: 1 }, 409, "idempotency_in_flight"),
            (Reject::IdempotencyIndeterminate { key: 1 }, 409, "idempotency_indeterminate"),
            (Reject::IdempotencyMismatch { key: 1 }, 422, "idempotency_mismatch"),
            (Reject::IdempotentReplay(Box::new(replayed(201))), 201, "idempotent_replay"),
            (Reject::UpstreamUnavailable, 502, "upstream_unavailable"),
            (Reject::UpstreamTimeout, 504, "upstream_timeout"),
            (Reject::StateUnavailable, 503, "state_unavailable"),
            (Reject::CardData { field: "/pan".into(), masked: "x".into(), scheme: "visa" }, 422, "card_data"),
            (Reject::CrossOrigin { reason: "x" }, 403, "cross_origin"),
            (Reject::MisdirectedRequest, 421, "misdirected_request"),
            (Reject::CardDataLeak { detail: "x".into() }, 502, "card_data_leak"),
            (
                Reject::InjectionDetected { field: "/q".into(), kind: "sqli", fingerprint: "s&sos".into() },
                403,
                "injection_detected",
            ),
        ];
        for (r, status, code) in table {
            assert_eq!(r.status().as_u16(), *status, "{r:?}");
            assert_eq!(r.code(), *code);
        }
        // Every variant is in the table: a new one fails to compile here until it has an index,
        // and then fails this assertion until it has a row.
        fn index(r: &Reject) -> usize {
            match r {
                Reject::IpDenied => 0,
                Reject::NoRoute => 1,
                Reject::MethodNotAllowed { .. } => 2,
                Reject::BodyTooLarge { .. } => 3,
                Reject::BodyTimeout => 4,
                Reject::UnsupportedMediaType => 5,
                Reject::UnsupportedEncoding => 6,
                Reject::InvalidRequest(_) => 7,
                Reject::UriTooLong { .. } => 8,
                Reject::HeadersTooLarge { .. } => 9,
                Reject::SignatureInvalid { .. } => 10,
                Reject::StaleTimestamp { .. } => 11,
                Reject::Replay => 12,
                Reject::RateLimited { .. } => 13,
                Reject::UpstreamUnavailable => 14,
                Reject::UpstreamTimeout => 15,
                Reject::StateUnavailable => 16,
                Reject::TooManyFailures { .. } => 17,
                Reject::IdempotencyKeyMissing { .. } => 18,
                Reject::IdempotencyInFlight { .. } => 19,
                Reject::IdempotencyIndeterminate { .. } => 20,
                Reject::IdempotencyMismatch { .. } => 21,
                Reject::IdempotentReplay(_) => 22,
                Reject::CardData { .. } => 23,
                Reject::CrossOrigin { .. } => 24,
                Reject::MisdirectedRequest => 25,
                Reject::InjectionDetected { .. } => 26,
                Reject::CardDataLeak { .. } => 27,
            }
        }
        let mut covered: Vec<usize> = table.iter().map(|(r, _, _)| index(r)).collect();
        covered.sort_unstable();
        covered.dedup();
        assert_eq!(covered, (0..=27).collect::<Vec<_>>(), "every Reject has a row");
    }

    fn replayed(status: u16) -> Replayed {
        let answer = crate::state::StoredAnswer {
            status,
            content_type: Some(HeaderValue::from_static("application/json; charset=utf-8")),
            body: bytes::Bytes::from_static(b"{\"id\":7}"),
        };
        Replayed { answer, key: 0xabcd_0123 }
    }

    #[tokio::test]
    async fn a_replay_is_the_stored_answer_marked_as_such() {
        let r = Reject::IdempotentReplay(Box::new(replayed(500)));
        assert_eq!((r.decision(), Reject::Replay.decision()), ("replay", "block"));
        assert!(r.detail().contains("key #abcd0123, status 500"), "{}", r.detail());
        let res = r.to_response(Some("r"), "id");
        assert_eq!(res.status(), 500);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json; charset=utf-8");
        assert_eq!(res.headers()["idempotent-replayed"], "true");
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "{\"id\":7}");
        let res = Reject::IdempotencyInFlight { key: 1 }.to_response(Some("r"), "id");
        assert_eq!((res.status().as_u16(), &res.headers()[header::RETRY_AFTER]), (409, &HeaderValue::from(1u64)));
    }

    #[tokio::test]
    async fn body_is_small_json_with_rule_and_request_id() {
        let res = Reject::UpstreamTimeout.to_response(None, "abc");
        assert_eq!(res.status(), 504);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"], "upstream_timeout");
        assert_eq!(v["rule"], serde_json::Value::Null);
        assert_eq!(v["request_id"], "abc");
        assert!(v["message"].is_string());
    }

    #[tokio::test]
    async fn signature_reason_stays_out_of_the_response() {
        let r = Reject::from(crate::signature::SignatureError::Missing("Stripe-Signature"));
        assert_eq!(r.code(), "signature_invalid");
        assert!(r.detail().contains("Stripe-Signature"));
        let bytes = r.to_response(Some("s"), "id").into_body().collect().await.unwrap().to_bytes();
        assert!(!String::from_utf8_lossy(&bytes).contains("Stripe-Signature"));
        let stale = Reject::from(crate::signature::SignatureError::Stale { skew_secs: -301 });
        assert_eq!((stale.code(), stale.skew_secs()), ("stale_timestamp", Some(-301)));
    }

    #[test]
    fn rate_limited_carries_retry_after_and_ratelimit_headers() {
        let res = Reject::RateLimited { limit: 10, reset: Duration::from_millis(1500) }.to_response(Some("r"), "id");
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        assert_eq!(res.headers()["ratelimit-limit"], "10");
        assert_eq!(res.headers()["ratelimit-remaining"], "0");
        assert_eq!(res.headers()["ratelimit-reset"], "2");
        let res = Reject::TooManyFailures { left: Duration::from_millis(90_500) }.to_response(Some("r"), "id");
        assert_eq!((res.status().as_u16(), &res.headers()[header::RETRY_AFTER]), (429, &HeaderValue::from(91u64)));
    }
}
