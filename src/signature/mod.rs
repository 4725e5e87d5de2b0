//! Provider signature verification for `[route.signature]` (see RULES.md, providers table).
//!
//! Every provider implements [`Verifier`]: it extracts the signature material from the
//! headers/body, rebuilds the provider's canonical signed message over the exact raw bytes,
//! verifies it against the configured key list and returns which key matched, the signed
//! timestamp and the replay key for the replay guard.
//!
//! Order of checks inside `verify`, the same for every provider:
//! 1. header/body syntax (missing, duplicated, undecodable signature material),
//! 2. key lookup (unknown serial / key id / certificate URL),
//! 3. the signature itself,
//! 4. only then the signed timestamp against the injected clock.
//!
//! The timestamp is checked *after* the signature so that an unauthenticated caller cannot
//! use `stale_timestamp` vs `signature_invalid` to probe anything: an unsigned request always
//! gets [`SignatureError::Invalid`] (or a syntax error), and only a validly signed but old (or
//! future) callback gets [`SignatureError::Stale`]. The clock is passed in (`now_unix`); no
//! verifier reads wall time.
//!
//! Keys are parsed once, at [`build`] time; a key that cannot be loaded is a configuration
//! error (fail closed). Secret bytes never appear in `Debug` output or in errors.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub mod adyen;
pub mod alipay;
mod config;
mod encoding;
pub mod hmac;
mod keys;
pub mod paypal;
pub mod sign;
pub mod standard_webhooks;
pub mod stripe;
mod table;
mod time;
pub mod wechatpay;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod test_support;

pub use config::parse_duration;
pub use table::{SignatureTable, StrItems};

/// The parts of an HTTP request a verifier may look at. `body` is the exact raw body.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a http::Method,
    /// Request path as received (no query).
    pub path: &'a str,
    /// Raw query string without the leading `?`, if any.
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

/// What a successful verification proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Which configured key matched, for the audit line: a serial / key id as configured,
    /// a certificate URL, or a list position such as `secrets[1]`. Never key material.
    pub key_id: String,
    /// The provider-signed timestamp (unix seconds), when the provider signs one.
    pub timestamp: Option<i64>,
    /// What the replay guard reserves: one id per signed item (a batch of Adyen notification
    /// items has several; every other callback has one). Scoped to route + provider by the
    /// caller.
    pub replay: Vec<ReplayId>,
}

/// Identifies one verified callback (or one signed item of a batch) for the replay guard.
///
/// It is a SHA-256 over material the verified signature covers — a signed event id or nonce,
/// or the signed bytes themselves — and never over how the signature is spelled (which `v1`
/// values were listed, in which order, under which key id): every spelling of one signed
/// callback gives the same id, so a captured callback cannot be re-sent under a new one.
/// Fixed-size, so a client-chosen nonce of any length costs the store the same.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayId([u8; 32]);

impl ReplayId {
    /// Every part must be covered by the signature that verified. Parts are length-prefixed,
    /// so `("ab", "c")` and `("a", "bc")` differ.
    pub(crate) fn of(parts: &[&[u8]]) -> Self {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for part in parts {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        Self::finish(h)
    }

    /// From a SHA-256 the caller fed with exactly the signed message.
    pub(crate) fn finish(h: sha2::Sha256) -> Self {
        use sha2::Digest as _;
        Self(h.finalize().into())
    }

    /// Lowercase hex, as stored.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for ReplayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplayId({})", self.to_hex())
    }
}

/// A request to sign ([`sign`]).
#[derive(Debug, Clone, Copy)]
pub struct Unsigned<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
}

/// A signed request: the headers to send, and the body when signing changed it (form and
/// notification providers carry the signature in the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// A provider's part of a signature check: one per `[route.signature]` table, built once by
/// [`build`] and held by a [`Signature`].
pub trait Verifier: Send + Sync + fmt::Debug {
    /// The `provider` name as written in the rule file, e.g. `"stripe"`.
    fn provider(&self) -> &'static str;

    /// Checks the signature material and the signature itself against the configured keys,
    /// and returns the signed timestamp unchecked: freshness is [`Signature::verify`]'s.
    fn verify_signature(&self, req: &SignedRequest<'_>) -> Result<Verified, SignatureError>;
}

/// A route's signature check: the provider's [`Verifier`], and the freshness and replay
/// settings (`tolerance`, `replay_ttl`, `replay_release_on_4xx`) that every provider shares,
/// validated once in [`build`] and applied here once.
#[derive(Debug)]
pub struct Signature {
    verifier: Box<dyn Verifier>,
    tolerance: Option<Duration>,
    replay: ReplayPolicy,
}

impl Signature {
    /// The `provider` name as written in the rule file.
    pub fn provider(&self) -> &'static str {
        self.verifier.provider()
    }

    /// Verifies `req`: the signature, then — only for a validly signed request — its signed
    /// timestamp against `tolerance`. `now_unix` is the injected clock.
    pub fn verify(&self, req: &SignedRequest<'_>, now_unix: i64) -> Result<Verified, SignatureError> {
        let verified = self.verifier.verify_signature(req)?;
        if let (Some(ts), Some(tolerance)) = (verified.timestamp, self.tolerance) {
            check_tolerance(ts, now_unix, tolerance)?;
        }
        Ok(verified)
    }

    /// Max distance of the signed timestamp from the clock; `None` when the route checks no
    /// signed timestamp.
    pub fn tolerance(&self) -> Option<Duration> {
        self.tolerance
    }

    /// How the replay guard keeps this route's reservations.
    pub fn replay_policy(&self) -> ReplayPolicy {
        self.replay
    }

    /// How long an accepted replay key stays reserved: `replay_ttl`, else twice the tolerance,
    /// else 48h for providers without a signed timestamp.
    pub fn replay_ttl(&self) -> Duration {
        self.replay.ttl
    }
}

/// `replay_ttl` and `replay_release_on_4xx` of a `[route.signature]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayPolicy {
    /// How long a kept reservation lasts.
    pub ttl: Duration,
    /// Whether the backend's 4xx answer (other than 408 and 429, always released) frees the
    /// key for another delivery. Off by default: a 4xx is the backend's considered answer to
    /// this very callback, and a replay would only ask it again.
    pub release_on_4xx: bool,
}

/// What the replay guard does with a reservation once the answer is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Keep the key for the policy's ttl: the backend acted, or may have.
    Keep,
    /// Free the key so the provider's retry passes: nothing was done.
    Release,
}

impl ReplayPolicy {
    /// The settlement for an answer with `status` (the backend's, or payguard's own 502/504).
    ///
    /// - 2xx: accepted, keep.
    /// - 504 (payguard's `upstream_timeout`, or a backend's gateway timeout): the backend may
    ///   have acted on the callback and only been slow to say so; keep.
    /// - 408, 429: the backend says it did not take the request; release.
    /// - other 4xx: keep, unless `replay_release_on_4xx`.
    /// - anything else (5xx, payguard's own 502 when the backend is unreachable, 1xx/3xx):
    ///   release, so the provider's retry after a backend failure passes.
    pub fn settle(&self, status: http::StatusCode) -> Settle {
        let code = status.as_u16();
        match code {
            200..=299 | 504 => Settle::Keep,
            408 | 429 => Settle::Release,
            400..=499 if !self.release_on_4xx => Settle::Keep,
            _ => Settle::Release,
        }
    }
}

/// Why a request's signature was not accepted. Every variant maps to 401: [`Self::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header (or, for form/JSON providers, a required signed field) is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// The signature-bearing header appears more than once.
    #[error("{0} appears more than once")]
    Duplicate(&'static str),
    /// The header/field/body cannot be parsed or decoded (bad hex/base64, bad timestamp, ...).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The serial / key id / certificate URL names no configured key.
    #[error("unknown key id, serial or certificate")]
    UnknownKey,
    /// No configured key verifies the signature.
    #[error("signature does not verify")]
    Invalid,
    /// Validly signed, but the signed timestamp is outside the tolerance. `skew_secs` is
    /// `now - timestamp` (positive: too old; negative: from the future).
    #[error("signed timestamp outside tolerance (skew {skew_secs}s)")]
    Stale { skew_secs: i64 },
    /// WeChat Pay APIv3: validly signed, but `resource` does not decrypt with the APIv3 key.
    #[error("encrypted resource does not decrypt")]
    Undecryptable,
    /// A signed field differs from the configured value (Alipay `app_id`).
    #[error("signed {0} does not match the configured value")]
    Mismatch(&'static str),
}

impl SignatureError {
    /// The public error code (RULES.md "What a rejected request gets").
    pub fn code(&self) -> &'static str {
        match self {
            Self::Stale { .. } => "stale_timestamp",
            _ => "signature_invalid",
        }
    }
}

/// A problem in a `[route.signature]` table. `key` is the dotted path inside that table
/// (`"public_keys.PUB_KEY_ID_01"`, `"secrets.1"`; list items by index) so the rules loader
/// can attach `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
    /// Where in the rule file: the value at `key`, when the table came from one.
    pub span: Option<std::ops::Range<usize>>,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Resolves a secret reference (`env:NAME`, `file:path`) to its bytes. Errors must not
/// contain secret material.
pub trait SecretResolver {
    fn resolve(&self, spec: &str, base_dir: &Path) -> Result<Vec<u8>, String>;
}

/// `env:NAME` (the variable's value) and `file:path` (the file's contents, trimmed; relative
/// paths resolve against `base_dir`, the directory of the rule file). Both are trimmed of
/// surrounding ASCII whitespace.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvFileResolver;

impl SecretResolver for EnvFileResolver {
    fn resolve(&self, spec: &str, base_dir: &Path) -> Result<Vec<u8>, String> {
        crate::files::resolve_secret(spec, base_dir)
    }
}

/// Builds the verifier for one `[route.signature]` table (including its `provider`,
/// `tolerance` and `replay_ttl` keys). Every problem found is returned, not just the first.
pub fn build(
    table: &SignatureTable,
    base_dir: &Path,
    secrets: &dyn SecretResolver,
) -> Result<Arc<Signature>, Vec<ConfigProblem>> {
    use config::Timestamped::{Always, Never, OptIn};
    let mut f = config::Fields::new(table, base_dir, secrets);
    // Each provider with what its signature covers of time, which decides what `tolerance`
    // means for it.
    let built = match f.req_str("provider") {
        Some(wechatpay::PROVIDER) => signature(&mut f, Always, wechatpay::WechatPay::from_config),
        Some(alipay::PROVIDER) => signature(&mut f, OptIn, alipay::Alipay::from_config),
        Some(stripe::PROVIDER) => signature(&mut f, Always, stripe::Stripe::from_config),
        Some(standard_webhooks::PROVIDER) => {
            signature(&mut f, Always, standard_webhooks::StandardWebhooks::from_config)
        }
        Some(adyen::PROVIDER) => signature(&mut f, Never, adyen::Adyen::from_config),
        Some(paypal::PROVIDER) => signature(&mut f, Always, paypal::Paypal::from_config),
        Some(hmac::PROVIDER) => {
            let kind = if f.has_key("timestamp_header") { Always } else { Never };
            signature(&mut f, kind, hmac::GenericHmac::from_config)
        }
        Some(other) => {
            f.problem("provider", format!("unknown provider {other:?}; expected one of {}", PROVIDERS.join(", ")));
            f.skip_unknown_key_check();
            None
        }
        None => {
            f.skip_unknown_key_check();
            None
        }
    };
    let problems = f.finish();
    match built {
        Some(v) if problems.is_empty() => Ok(v),
        _ if problems.is_empty() => Err(vec![ConfigProblem {
            key: String::new(),
            message: "signature configuration could not be built".into(),
            span: None,
        }]),
        _ => Err(problems),
    }
}

/// Every provider name [`build`] accepts.
pub const PROVIDERS: &[&str] = &[
    wechatpay::PROVIDER,
    alipay::PROVIDER,
    stripe::PROVIDER,
    standard_webhooks::PROVIDER,
    adyen::PROVIDER,
    paypal::PROVIDER,
    hmac::PROVIDER,
];

/// The common keys, validated for a provider of `kind`, then the provider's own.
fn signature<V: Verifier + 'static>(
    f: &mut config::Fields<'_>,
    kind: config::Timestamped,
    from_config: fn(&mut config::Fields<'_>) -> Option<V>,
) -> Option<Arc<Signature>> {
    let timing = f.timing(kind);
    let verifier = from_config(f)?;
    Some(Arc::new(Signature { verifier: Box::new(verifier), tolerance: timing.tolerance, replay: timing.replay }))
}

/// A secret (HMAC key, APIv3 key). Its `Debug` never shows the bytes. The HMAC-SHA256 key
/// schedule is computed once here, so a request only clones it instead of hashing the key again.
#[derive(Clone)]
pub(crate) struct Secret {
    bytes: Box<[u8]>,
    mac: Option<encoding::HmacSha256>,
}

impl Secret {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        let mac = encoding::hmac_sha256(&bytes);
        Self { bytes: bytes.into_boxed_slice(), mac }
    }
    pub(crate) fn expose(&self) -> &[u8] {
        &self.bytes
    }
    /// A fresh HMAC-SHA256 keyed with this secret.
    pub(crate) fn mac(&self) -> Option<encoding::HmacSha256> {
        self.mac.clone()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<redacted {} bytes>)", self.bytes.len())
    }
}

/// `secrets[1]`-style audit name for the n-th entry of a key list.
pub(crate) fn list_key_id(list: &str, index: usize) -> String {
    format!("{list}[{index}]")
}

/// Shared by every provider: |now - ts| <= tolerance is accepted, one second more is stale.
pub(crate) fn check_tolerance(ts: i64, now_unix: i64, tolerance: Duration) -> Result<(), SignatureError> {
    let skew = i128::from(now_unix) - i128::from(ts);
    if skew.unsigned_abs() * 1000 <= tolerance.as_millis() {
        Ok(())
    } else {
        let skew_secs = i64::try_from(skew).unwrap_or(if skew < 0 { i64::MIN } else { i64::MAX });
        Err(SignatureError::Stale { skew_secs })
    }
}

/// Exactly one header value, as visible ASCII/UTF-8 text, non-empty.
pub(crate) fn single_header<'r>(headers: &'r http::HeaderMap, name: &'static str) -> Result<&'r str, SignatureError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().ok_or(SignatureError::Missing(name))?;
    if values.next().is_some() {
        return Err(SignatureError::Duplicate(name));
    }
    let text = first.to_str().map_err(|_| SignatureError::Malformed(name))?;
    if text.is_empty() {
        return Err(SignatureError::Malformed(name));
    }
    Ok(text)
}

/// Like [`single_header`] but with a configured (non-static) header name; errors carry `label`.
pub(crate) fn single_header_named<'r>(
    headers: &'r http::HeaderMap,
    name: &http::HeaderName,
    label: &'static str,
) -> Result<&'r str, SignatureError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().ok_or(SignatureError::Missing(label))?;
    if values.next().is_some() {
        return Err(SignatureError::Duplicate(label));
    }
    let text = first.to_str().map_err(|_| SignatureError::Malformed(label))?;
    if text.is_empty() {
        return Err(SignatureError::Malformed(label));
    }
    Ok(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn tolerance_boundaries_and_extremes() {
        let five_min = Duration::from_secs(300);
        assert_eq!(check_tolerance(1000, 1300, five_min), Ok(()));
        assert_eq!(check_tolerance(1000, 700, five_min), Ok(()));
        assert_eq!(check_tolerance(1000, 1301, five_min), Err(SignatureError::Stale { skew_secs: 301 }));
        assert_eq!(check_tolerance(1000, 699, five_min), Err(SignatureError::Stale { skew_secs: -301 }));
        // Sub-second tolerances: 300.25s accepts 300s and rejects 301s.
        let ms = Duration::from_millis(300_250);
        assert_eq!(check_tolerance(0, 300, ms), Ok(()));
        assert!(check_tolerance(0, 301, ms).is_err());
        // No overflow at the extremes.
        assert_eq!(check_tolerance(i64::MIN, i64::MAX, five_min), Err(SignatureError::Stale { skew_secs: i64::MAX }));
        assert_eq!(check_tolerance(i64::MAX, i64::MIN, five_min), Err(SignatureError::Stale { skew_secs: i64::MIN }));
    }

    #[test]
    fn error_codes() {
        assert_eq!(SignatureError::Stale { skew_secs: 1 }.code(), "stale_timestamp");
        for e in [
            SignatureError::Missing("x"),
            SignatureError::Duplicate("x"),
            SignatureError::Malformed("x"),
            SignatureError::UnknownKey,
            SignatureError::Invalid,
            SignatureError::Undecryptable,
            SignatureError::Mismatch("app_id"),
        ] {
            assert_eq!(e.code(), "signature_invalid", "{e}");
        }
    }

    #[test]
    fn env_file_resolver() {
        let dir = std::env::temp_dir().join(format!("payguard-sig-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret.txt"), b"  value-from-file\n").unwrap();
        let r = EnvFileResolver;
        assert_eq!(r.resolve("file:secret.txt", &dir).unwrap(), b"value-from-file");
        let err = r.resolve("file:missing.txt", &dir).unwrap_err();
        assert!(err.contains("missing.txt"), "{err}");
        assert!(r.resolve("env:PAYGUARD_SIG_TEST_SURELY_UNSET_VARIABLE", &dir).is_err());
        if let Some(path) = std::env::var_os("PATH") {
            let expected = path.into_encoded_bytes();
            assert_eq!(r.resolve("env:PATH", &dir).unwrap(), expected.trim_ascii());
        }
        assert!(r.resolve("inline-secret", &dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn build_reports_provider_problems() {
        let r = FakeResolver::default();
        let p = problems("tolerance = \"5m\"", &r);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "provider");
        let p = problems("provider = 3", &r);
        assert_eq!(p[0].key, "provider");
        let p = problems("provider = \"Stripe\"", &r);
        assert!(p[0].message.contains("stripe"), "{p:?}");
        let p = problems(
            "provider = \"stripe\"\nsecrets = [\"env:X\"]\n\"odd.key\" = 1",
            &FakeResolver::with(&[("env:X", b"k")]),
        );
        assert_eq!(p[0].key, "\"odd.key\"");
        assert_eq!(p[0].to_string(), format!("\"odd.key\": {}", p[0].message));
    }

    #[test]
    fn providers_are_listed_and_built_verifiers_report_them() {
        assert_eq!(PROVIDERS.len(), 7);
        let r = FakeResolver::with(&[("env:K", b"0011")]);
        let v = must_build("provider = \"adyen-hmac\"\nhmac_keys = [\"env:K\"]", &r);
        assert_eq!(v.provider(), "adyen-hmac");
    }
}
