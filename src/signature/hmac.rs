//! `hmac`: generic HMAC-SHA256 webhooks (GitHub-style by default) and our own clients'
//! signed requests.
//!
//! Defaults: header `x-hub-signature-256`, prefix `sha256=`, lowercase hex, message = the raw
//! body — exactly GitHub's `X-Hub-Signature-256`. Options:
//! - `encoding = "base64"` (standard base64);
//! - `timestamp_header` (unix seconds, checked against `tolerance`) and `nonce_header`;
//! - `key_id_header` + `keys` (key id -> secret) instead of trying every entry of `secrets`;
//! - `message`: a template over `{method} {path} {query} {timestamp} {nonce} {body}`
//!   (`{{`/`}}` for literal braces), compiled once at build time into segments that are fed
//!   straight into the MAC, so a request is never re-parsed or copied.
//!
//! A configured timestamp or nonce header must be part of the signed message: an unsigned
//! timestamp proves no freshness and an unsigned nonce would let a replay pass under a new
//! nonce, so such a configuration is rejected. Replay key: the nonce, else the signature.

use std::collections::HashMap;

use ::hmac::Mac;
use http::HeaderName;
use sha2::digest::Update;
use sha2::{Digest as _, Sha256};

use super::config::Fields;
use super::encoding::{ct_eq, decode_base64_array, decode_lower_hex_array, parse_unix_seconds};
use super::{list_key_id, single_header_named, ReplayId, Secret, SignatureError, SignedRequest, Verified, Verifier};

pub const PROVIDER: &str = "hmac";
const DEFAULT_HEADER: &str = "x-hub-signature-256";
const DEFAULT_PREFIX: &str = "sha256=";

const SIGNATURE_LABEL: &str = "signature header";
const TIMESTAMP_LABEL: &str = "timestamp header";
const NONCE_LABEL: &str = "nonce header";
const KEY_ID_LABEL: &str = "key id header";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Hex,
    Base64,
}

#[derive(Debug)]
enum Keys {
    /// Try every secret; the audit names `secrets[i]`.
    List(Vec<Secret>),
    /// The request names its key.
    ById { header: HeaderName, keys: HashMap<String, Secret> },
}

/// One piece of the signed message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<[u8]>),
    Method,
    Path,
    Query,
    Timestamp,
    Nonce,
    Body,
}

#[derive(Debug)]
pub struct GenericHmac {
    header: HeaderName,
    prefix: String,
    encoding: Encoding,
    keys: Keys,
    timestamp_header: Option<HeaderName>,
    nonce_header: Option<HeaderName>,
    message: Vec<Segment>,
}

/// Feeds the message `segments` lay out, for `req`, into a MAC or a hash: what a signer signs
/// and a verifier checks.
fn feed(segments: &[Segment], sink: &mut impl Update, req: &super::Unsigned<'_>, ts: &str, nonce: &str) {
    for segment in segments {
        match segment {
            Segment::Literal(bytes) => sink.update(bytes),
            Segment::Method => sink.update(req.method.as_bytes()),
            Segment::Path => sink.update(req.path.as_bytes()),
            Segment::Query => sink.update(req.query.unwrap_or("").as_bytes()),
            Segment::Timestamp => sink.update(ts.as_bytes()),
            Segment::Nonce => sink.update(nonce.as_bytes()),
            Segment::Body => sink.update(req.body),
        }
    }
}

/// Compiles a `message` template. Errors are user-facing messages.
fn compile_template(template: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") {
            literal.push('{');
            rest = &rest[2..];
        } else if rest.starts_with("}}") {
            literal.push('}');
            rest = &rest[2..];
        } else if c == '{' {
            let end = rest.find('}').ok_or("unclosed \"{\" in message template (use \"{{\" for a literal brace)")?;
            let segment = match &rest[1..end] {
                "method" => Segment::Method,
                "path" => Segment::Path,
                "query" => Segment::Query,
                "timestamp" => Segment::Timestamp,
                "nonce" => Segment::Nonce,
                "body" => Segment::Body,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}}; expected {{method}} {{path}} {{query}} {{timestamp}} {{nonce}} {{body}}"
                    ))
                }
            };
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal).into_bytes().into()));
            }
            segments.push(segment);
            rest = &rest[end + 1..];
        } else if c == '}' {
            return Err("unmatched \"}\" in message template (use \"}}\" for a literal brace)".into());
        } else {
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !literal.is_empty() {
        segments.push(Segment::Literal(literal.into_bytes().into()));
    }
    Ok(segments)
}

/// Reads an optional header-name key once: `(given?, parsed name)`.
fn header_name(f: &mut Fields<'_>, key: &'static str) -> (bool, Option<HeaderName>) {
    let Some(text) = f.opt_str(key) else {
        return (f.has_key(key), None);
    };
    match HeaderName::from_bytes(text.as_bytes()) {
        Ok(name) => (true, Some(name)),
        Err(_) => {
            f.problem(key, format!("{text:?} is not a valid header name"));
            (true, None)
        }
    }
}

impl GenericHmac {
    pub(crate) fn from_config(f: &mut Fields<'_>) -> Option<Self> {
        let before = f.problem_count();
        let header = match header_name(f, "header") {
            (false, _) => Some(HeaderName::from_static(DEFAULT_HEADER)),
            (true, name) => name,
        };
        let prefix = f.opt_str("prefix").unwrap_or(DEFAULT_PREFIX).to_string();
        let encoding = match f.opt_str("encoding") {
            None | Some("hex") => Encoding::Hex,
            Some("base64") => Encoding::Base64,
            Some(other) => {
                f.problem("encoding", format!("encoding must be \"hex\" or \"base64\", not {other:?}"));
                Encoding::Hex
            }
        };
        let (has_ts, timestamp_header) = header_name(f, "timestamp_header");
        let (has_nonce, nonce_header) = header_name(f, "nonce_header");
        let (has_key_id, key_id_header) = header_name(f, "key_id_header");

        let template = f.opt_str("message");
        let message = match template {
            None => vec![Segment::Body],
            Some(t) => compile_template(t).unwrap_or_else(|e| {
                f.problem("message", e);
                Vec::new()
            }),
        };
        let uses = |s: &Segment| message.contains(s);
        if template.is_some() {
            if uses(&Segment::Timestamp) && !has_ts {
                f.problem("message", "{timestamp} needs \"timestamp_header\"");
            }
            if uses(&Segment::Nonce) && !has_nonce {
                f.problem("message", "{nonce} needs \"nonce_header\"");
            }
        }
        if has_ts && !uses(&Segment::Timestamp) {
            f.problem("timestamp_header", "the timestamp is not signed: add {timestamp} to \"message\"");
        }
        if has_nonce && !uses(&Segment::Nonce) {
            f.problem("nonce_header", "the nonce is not signed: add {nonce} to \"message\"");
        }

        let secrets = f.opt_str_list("secrets");
        let key_map = f.opt_str_map("keys");
        let keys = match (has_key_id, secrets, key_map) {
            (false, Some(list), None) => {
                if list.is_empty() {
                    f.problem("secrets", "at least one secret is required");
                }
                let mut out = Vec::new();
                for (path, spec) in list {
                    out.extend(f.secret(&path, spec));
                }
                Some(Keys::List(out))
            }
            (true, None, Some(map)) => {
                if map.is_empty() {
                    f.problem("keys", "at least one key is required");
                }
                let mut out = HashMap::new();
                for (path, id, spec) in map {
                    if let Some(s) = f.secret(&path, spec) {
                        out.insert(id.to_string(), s);
                    }
                }
                key_id_header.map(|header| Keys::ById { header, keys: out })
            }
            (false, _, Some(_)) => {
                f.problem("keys", "\"keys\" needs \"key_id_header\"");
                None
            }
            (true, _, _) => {
                f.problem("key_id_header", "\"key_id_header\" needs \"keys\" (key id -> secret) and no \"secrets\"");
                None
            }
            (false, None, None) => {
                f.problem("secrets", "missing required key \"secrets\" (list of env:/file: secrets)");
                None
            }
        };
        match (header, keys) {
            (Some(header), Some(keys)) if f.problem_count() == before => {
                Some(Self { header, prefix, encoding, keys, timestamp_header, nonce_header, message })
            }
            _ => None,
        }
    }

    /// Feeds the signed message, segment by segment, into a MAC or a hash.
    fn feed(&self, sink: &mut impl Update, req: &SignedRequest<'_>, ts: &str, nonce: &str) {
        let parts = super::Unsigned { method: req.method.as_str(), path: req.path, query: req.query, body: req.body };
        feed(&self.message, sink, &parts, ts, nonce);
    }

    fn mac(&self, key: &Secret, req: &SignedRequest<'_>, ts: &str, nonce: &str) -> Option<[u8; 32]> {
        let mut mac = key.mac()?;
        self.feed(&mut mac, req, ts, nonce);
        Some(mac.finalize().into_bytes().into())
    }
}

/// The headers of a request signed as `table` (a route's `[route.signature]`, or GitHub's
/// defaults without one) would verify it, with `secret` (and `key_id` when the table names
/// keys by id).
pub(crate) fn sign(
    table: Option<&super::SignatureTable>,
    secret: &[u8],
    key_id: Option<&str>,
    req: &super::Unsigned<'_>,
    now: i64,
    nonce: &str,
) -> Result<Vec<(String, String)>, String> {
    let opt = |v: &Option<toml::Spanned<String>>| v.as_ref().map(|s| s.get_ref().clone());
    let (mut header, mut prefix, mut encoding, mut ts_header, mut nonce_header, mut key_id_header, mut message) =
        (None, None, None, None, None, None, None);
    if let Some(t) = table {
        (header, prefix, encoding) = (opt(&t.header), opt(&t.prefix), opt(&t.encoding));
        (ts_header, nonce_header, key_id_header, message) =
            (opt(&t.timestamp_header), opt(&t.nonce_header), opt(&t.key_id_header), opt(&t.message));
    }
    let segments = match &message {
        Some(m) => compile_template(m)?,
        None => vec![Segment::Body],
    };
    let key = Secret::new(secret.to_vec());
    let mut mac = key.mac().ok_or("unusable HMAC key")?;
    let ts = now.to_string();
    feed(&segments, &mut mac, req, &ts, nonce);
    let digest = mac.finalize().into_bytes();
    let encoded = match encoding.as_deref() {
        Some("base64") => base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest),
        _ => hex::encode(digest),
    };
    let mut headers = vec![(
        header.unwrap_or_else(|| DEFAULT_HEADER.to_string()),
        format!("{}{encoded}", prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_string())),
    )];
    if let Some(name) = ts_header {
        headers.push((name, ts));
    }
    if let Some(name) = nonce_header {
        headers.push((name, nonce.to_string()));
    }
    if let Some(name) = key_id_header {
        headers.push((name, key_id.ok_or("this route names its keys: give the key id")?.to_string()));
    }
    Ok(headers)
}

impl Verifier for GenericHmac {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn verify_signature(&self, req: &SignedRequest<'_>) -> Result<Verified, SignatureError> {
        let h = req.headers;
        let presented = single_header_named(h, &self.header, SIGNATURE_LABEL)?;
        let encoded = presented.strip_prefix(self.prefix.as_str()).ok_or(SignatureError::Malformed(SIGNATURE_LABEL))?;
        let signature = match self.encoding {
            Encoding::Hex => decode_lower_hex_array::<32>(encoded),
            Encoding::Base64 => decode_base64_array::<32>(encoded),
        }
        .ok_or(SignatureError::Malformed(SIGNATURE_LABEL))?;
        let (ts_text, ts) = match &self.timestamp_header {
            Some(name) => {
                let text = single_header_named(h, name, TIMESTAMP_LABEL)?;
                let ts = parse_unix_seconds(text).ok_or(SignatureError::Malformed(TIMESTAMP_LABEL))?;
                (text, Some(ts))
            }
            None => ("", None),
        };
        let nonce = match &self.nonce_header {
            Some(name) => Some(single_header_named(h, name, NONCE_LABEL)?),
            None => None,
        };
        let matches = |key: &Secret| {
            self.mac(key, req, ts_text, nonce.unwrap_or("")).is_some_and(|expected| ct_eq(&expected, &signature))
        };
        let key_id = match &self.keys {
            Keys::List(secrets) => {
                let mut matched = None;
                for (i, secret) in secrets.iter().enumerate() {
                    if matches(secret) && matched.is_none() {
                        matched = Some(i);
                    }
                }
                list_key_id("secrets", matched.ok_or(SignatureError::Invalid)?)
            }
            Keys::ById { header, keys } => {
                let id = single_header_named(h, header, KEY_ID_LABEL)?;
                let secret = keys.get(id).ok_or(SignatureError::UnknownKey)?;
                if !matches(secret) {
                    return Err(SignatureError::Invalid);
                }
                id.to_string()
            }
        };
        // The nonce is part of the signed message (checked at build time); without one, the
        // signed message itself is the callback's identity, whichever key signed it.
        let replay = match nonce {
            Some(nonce) => ReplayId::of(&[nonce.as_bytes()]),
            None => {
                let mut h = Sha256::new();
                self.feed(&mut h, req, ts_text, "");
                ReplayId::finish(h)
            }
        };
        Ok(Verified { key_id, timestamp: ts, replay: vec![replay] })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::signature::test_support::*;

    const S1: &[u8] = b"first-secret-generated-for-tests";
    const S2: &[u8] = b"second-secret-generated-for-tests";

    fn resolver() -> FakeResolver {
        FakeResolver::with(&[("env:S1", S1), ("env:S2", S2), ("file:k1.txt", S1)])
    }

    const GITHUB: &str = "provider = \"hmac\"\nsecrets = [\"env:S1\", \"env:S2\"]";

    #[test]
    fn github_style_default_with_rotation() {
        let v = must_build(GITHUB, &resolver());
        let body = br#"{"action":"opened"}"#;
        let sig = format!("sha256={}", hmac_hex(S2, body));
        let h = headers(&[("X-Hub-Signature-256", &sig)]);
        let ok = v.verify(&post(&h, body), 0).unwrap();
        assert_eq!(ok.key_id, "secrets[1]");
        // No nonce: the signed message (here the body) is the identity, whichever secret signed.
        let id = ReplayId::finish(sha2::Digest::chain_update(Sha256::default(), body));
        assert_eq!(ok.replay, vec![id]);
        let other = format!("sha256={}", hmac_hex(S1, body));
        let ok = v.verify(&post(&headers(&[("X-Hub-Signature-256", &other)]), body), 0).unwrap();
        assert_eq!((ok.key_id.as_str(), ok.replay), ("secrets[0]", vec![id]));
        assert_eq!(ok.timestamp, None);
        assert_eq!(v.tolerance(), None);
        assert_eq!(v.replay_ttl(), Duration::from_secs(48 * 3600));
    }

    #[test]
    fn github_documented_example() {
        // GitHub docs ("Validating webhook deliveries"): secret "It's a Secret to Everybody",
        // payload "Hello, World!".
        let r = FakeResolver::with(&[("env:GH", b"It's a Secret to Everybody")]);
        let v = must_build("provider = \"hmac\"\nsecrets = [\"env:GH\"]", &r);
        let h = headers(&[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        assert!(v.verify(&post(&h, b"Hello, World!"), 0).is_ok());
    }

    #[test]
    fn failures() {
        let v = must_build(GITHUB, &resolver());
        let body = b"payload";
        let sig = format!("sha256={}", hmac_hex(S1, body));
        let check = |h: &http::HeaderMap, b: &[u8]| v.verify(&post(h, b), 0);
        assert_eq!(check(&headers(&[("x-hub-signature-256", &sig)]), b"payloaD"), Err(SignatureError::Invalid));
        let wrong = format!("sha256={}", hmac_hex(b"wrong", body));
        assert_eq!(check(&headers(&[("x-hub-signature-256", &wrong)]), body), Err(SignatureError::Invalid));
        assert_eq!(check(&headers(&[]), body), Err(SignatureError::Missing(SIGNATURE_LABEL)));
        assert_eq!(
            check(&headers(&[("x-hub-signature-256", &sig), ("x-hub-signature-256", &sig)]), body),
            Err(SignatureError::Duplicate(SIGNATURE_LABEL))
        );
        let upper = format!("sha256={}", hmac_hex(S1, body).to_uppercase());
        for bad in [upper.as_str(), &sig[7..], "sha256=", "sha1=abcd", &format!("{sig}00")] {
            assert_eq!(
                check(&headers(&[("x-hub-signature-256", bad)]), body),
                Err(SignatureError::Malformed(SIGNATURE_LABEL)),
                "{bad}"
            );
        }
    }

    const CLIENT: &str = r#"
        provider = "hmac"
        header = "x-signature"
        prefix = ""
        encoding = "base64"
        timestamp_header = "x-timestamp"
        nonce_header = "x-nonce"
        key_id_header = "x-key-id"
        message = "{method}\n{path}\n{query}\n{timestamp}\n{nonce}\n{body}"
        tolerance = "300250ms"
        keys = { "client-2024" = "env:S1", "client-2025" = "file:k1.txt" }
    "#;

    fn client_request(key: &[u8], key_id: &str, ts: i64, nonce: &str, body: &[u8]) -> http::HeaderMap {
        let mut msg = format!("POST\n/webhook\n\n{ts}\n{nonce}\n").into_bytes();
        msg.extend_from_slice(body);
        let sig = b64(&hmac_raw(key, &msg));
        headers(&[("x-signature", &sig), ("x-timestamp", &ts.to_string()), ("x-nonce", nonce), ("x-key-id", key_id)])
    }

    #[test]
    fn template_key_ids_timestamp_and_nonce() {
        let v = must_build(CLIENT, &resolver());
        let h = client_request(S1, "client-2025", 1000, "n-1", b"{}");
        let ok = v.verify(&post(&h, b"{}"), 1000).unwrap();
        assert_eq!(ok.key_id, "client-2025");
        assert_eq!(ok.replay, vec![ReplayId::of(&[b"n-1"])]);
        assert_eq!(ok.timestamp, Some(1000));
        // Tolerance 300.25s: 300s skew passes, 301s does not, in both directions.
        assert!(v.verify(&post(&h, b"{}"), 1300).is_ok());
        assert!(v.verify(&post(&h, b"{}"), 700).is_ok());
        assert_eq!(v.verify(&post(&h, b"{}"), 1301), Err(SignatureError::Stale { skew_secs: 301 }));
        assert_eq!(v.verify(&post(&h, b"{}"), 699), Err(SignatureError::Stale { skew_secs: -301 }));
        // The query is signed.
        let q = SignedRequest { query: Some("a=1"), ..post(&h, b"{}") };
        assert_eq!(v.verify(&q, 1000), Err(SignatureError::Invalid));
        // Unknown key id, wrong key for the id, altered nonce.
        let h = client_request(S1, "client-1999", 1000, "n-1", b"{}");
        assert_eq!(v.verify(&post(&h, b"{}"), 1000), Err(SignatureError::UnknownKey));
        let h = client_request(S2, "client-2024", 1000, "n-1", b"{}");
        assert_eq!(v.verify(&post(&h, b"{}"), 1000), Err(SignatureError::Invalid));
        let mut h = client_request(S1, "client-2024", 1000, "n-1", b"{}");
        h.insert("x-nonce", http::HeaderValue::from_static("n-2"));
        assert_eq!(v.verify(&post(&h, b"{}"), 1000), Err(SignatureError::Invalid));
        h.remove("x-nonce");
        assert_eq!(v.verify(&post(&h, b"{}"), 1000), Err(SignatureError::Missing(NONCE_LABEL)));
    }

    #[test]
    fn templates_compile_once_into_segments() {
        assert_eq!(
            compile_template("{{x}} {timestamp}.{body}"),
            Ok(vec![
                Segment::Literal(b"{x} ".to_vec().into()),
                Segment::Timestamp,
                Segment::Literal(b".".to_vec().into()),
                Segment::Body
            ])
        );
        assert!(compile_template("{bogus}").is_err());
        assert!(compile_template("{body").is_err());
        assert!(compile_template("body}").is_err());
        assert_eq!(compile_template("é{body}"), Ok(vec![Segment::Literal("é".as_bytes().into()), Segment::Body]));
    }

    #[test]
    fn config_errors() {
        let p = problems(
            "provider = \"hmac\"\nsecrets = [\"inline\"]\ntimestamp_header = \"x-ts\"\nencoding = \"b32\"",
            &resolver(),
        );
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["encoding", "timestamp_header", "secrets.0"], "{p:?}");
        let p = problems("provider = \"hmac\"\nsecrets = [\"env:S1\"]\ntolerance = \"5m\"", &resolver());
        assert_eq!(p[0].key, "tolerance");
        let p = problems("provider = \"hmac\"\nsecrets = [\"env:S1\"]\nnonce_header = \"x-n\"", &resolver());
        assert_eq!(p[0].key, "nonce_header");
        let p = problems("provider = \"hmac\"\nsecrets = [\"env:S1\"]\nmessage = \"{nonce}{body}\"", &resolver());
        assert_eq!(p[0].key, "message");
        let p = problems("provider = \"hmac\"\nkeys = { a = \"env:S1\" }", &resolver());
        assert_eq!(p[0].key, "keys");
        let p = problems("provider = \"hmac\"\nheader = \"bad header\"\nsecrets = [\"env:S1\"]", &resolver());
        assert_eq!(p[0].key, "header");
        let p = problems("provider = \"hmac\"", &resolver());
        assert_eq!(p[0].key, "secrets");
        // A wrongly typed key is reported once, by the rule file parser, at the value.
        let text = "provider = \"hmac\"\nsecrets = [\"env:S1\"]\ntimestamp_header = 5\nmessage = \"{timestamp}{body}\"";
        let p = problems(text, &resolver());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].span.clone().map(|s| &text[s]), Some("5"), "{p:?}");
        let p = problems("provider = \"nope\"\nwhatever = 1", &resolver());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "provider");
    }
}
