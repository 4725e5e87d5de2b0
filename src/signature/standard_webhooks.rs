//! `standard-webhooks` (and Svix, which uses the same scheme under `svix-*` header names).
//!
//! Headers `webhook-id`, `webhook-timestamp`, `webhook-signature` (or the `svix-*` trio).
//! Signed content `"{id}.{timestamp}.{raw body}"`. The signature header is a space-separated
//! list of `version,base64`: `v1` = HMAC-SHA256 keyed with the base64-decoded part of the
//! `whsec_…` secret; `v1a` = Ed25519, verified against `whpk_…` public keys. Unknown versions
//! are ignored. Confirmed against standard-webhooks `libraries/javascript/src/index.ts`
//! (`sign`, `verify`, secret prefix handling) and the spec's published test vector.
//!
//! The timestamp must be canonical decimal, so the signed text equals the integer the
//! reference library formats back into the message.

use super::config::Fields;
use super::encoding::{ct_eq, decode_base64, decode_base64_array, hmac_parts, parse_unix_seconds};
use super::keys::{load_whpk, Ed25519Key};
use super::{list_key_id, single_header, ReplayId, Secret, SignatureError, SignedRequest, Verified, Verifier};

pub const PROVIDER: &str = "standard-webhooks";

struct HeaderNames {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

const WEBHOOK: HeaderNames =
    HeaderNames { id: "webhook-id", timestamp: "webhook-timestamp", signature: "webhook-signature" };
const SVIX: HeaderNames = HeaderNames { id: "svix-id", timestamp: "svix-timestamp", signature: "svix-signature" };

#[derive(Debug)]
pub struct StandardWebhooks {
    secrets: Vec<Secret>,
    public_keys: Vec<Ed25519Key>,
}

/// The signatures of a `webhook-signature` list that this verifier understands.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SignatureList {
    pub v1: Vec<[u8; 32]>,
    pub v1a: Vec<[u8; 64]>,
}

/// Parses a `webhook-signature` value. Entries that are not `v1`/`v1a` or do not decode are
/// skipped; an empty result is `Malformed`. Never panics on any input.
pub(crate) fn parse_signature_list(value: &str, header: &'static str) -> Result<SignatureList, SignatureError> {
    let mut list = SignatureList::default();
    for entry in value.split(' ') {
        let Some((version, sig)) = entry.split_once(',') else {
            continue;
        };
        match version {
            "v1" => list.v1.extend(decode_base64_array::<32>(sig)),
            "v1a" => list.v1a.extend(decode_base64_array::<64>(sig)),
            _ => {}
        }
    }
    if list.v1.is_empty() && list.v1a.is_empty() {
        return Err(SignatureError::Malformed(header));
    }
    Ok(list)
}

/// The HMAC key of a `whsec_…` secret (the prefix is optional, as in the reference library).
pub(crate) fn decode_secret(raw: &[u8]) -> Result<Secret, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "secret is not text".to_string())?;
    let b64 = text.strip_prefix("whsec_").unwrap_or(text);
    match decode_base64(b64) {
        Some(key) if !key.is_empty() => Ok(Secret::new(key)),
        _ => Err("secret must be \"whsec_\" followed by standard base64".into()),
    }
}

impl StandardWebhooks {
    pub(crate) fn from_config(f: &mut Fields<'_>) -> Option<Self> {
        let before = f.problem_count();
        let mut secrets = Vec::new();
        for (path, spec) in f.opt_str_list("secrets").unwrap_or_default() {
            if let Some(raw) = f.secret(&path, spec) {
                match decode_secret(raw.expose()) {
                    Ok(s) => secrets.push(s),
                    Err(e) => f.problem(path, e),
                }
            }
        }
        let mut public_keys = Vec::new();
        for (path, spec) in f.opt_str_list("public_keys").unwrap_or_default() {
            let Some(text) = f.public_text(&path, spec) else {
                continue;
            };
            let text = String::from_utf8_lossy(&text);
            match load_whpk(text.trim()) {
                Ok(k) => public_keys.push(k),
                Err(e) => f.problem(path, e),
            }
        }
        if f.problem_count() == before && secrets.is_empty() && public_keys.is_empty() {
            f.problem("secrets", "at least one of \"secrets\" or \"public_keys\" is required");
        }
        (f.problem_count() == before).then_some(Self { secrets, public_keys })
    }
}

impl Verifier for StandardWebhooks {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn verify_signature(&self, req: &SignedRequest<'_>) -> Result<Verified, SignatureError> {
        let h = req.headers;
        let names = if [WEBHOOK.id, WEBHOOK.timestamp, WEBHOOK.signature].iter().any(|n| h.contains_key(*n)) {
            &WEBHOOK
        } else {
            &SVIX
        };
        let signatures = single_header(h, names.signature)?;
        let id = single_header(h, names.id)?;
        let ts_text = single_header(h, names.timestamp)?;
        let ts = parse_unix_seconds(ts_text).ok_or(SignatureError::Malformed(names.timestamp))?;
        let list = parse_signature_list(signatures, names.signature)?;

        let prefix = [id.as_bytes(), b".", ts_text.as_bytes(), b"."];
        let mut key_id = None;
        if !list.v1.is_empty() {
            for (i, secret) in self.secrets.iter().enumerate() {
                let Some(expected) = hmac_parts(secret, &[prefix[0], prefix[1], prefix[2], prefix[3], req.body]) else {
                    continue;
                };
                let hit = list.v1.iter().fold(false, |acc, sig| acc | ct_eq(&expected, sig));
                if hit && key_id.is_none() {
                    key_id = Some(list_key_id("secrets", i));
                }
            }
        }
        if key_id.is_none() && !list.v1a.is_empty() && !self.public_keys.is_empty() {
            let mut message = Vec::with_capacity(id.len() + ts_text.len() + 2 + req.body.len());
            for part in prefix {
                message.extend_from_slice(part);
            }
            message.extend_from_slice(req.body);
            'keys: for (i, key) in self.public_keys.iter().enumerate() {
                for sig in &list.v1a {
                    if key.verify(&message, sig) {
                        key_id = Some(list_key_id("public_keys", i));
                        break 'keys;
                    }
                }
            }
        }
        let key_id = key_id.ok_or(SignatureError::Invalid)?;
        Ok(Verified { key_id, timestamp: Some(ts), replay: vec![ReplayId::of(&[id.as_bytes(), ts_text.as_bytes()])] })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::signature::test_support::*;
    use aws_lc_rs::signature::Ed25519KeyPair;
    use proptest::prelude::*;

    // The Standard Webhooks specification's published test vector.
    const VECTOR_SECRET: &[u8] = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TS: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn resolver() -> FakeResolver {
        FakeResolver::with(&[
            ("env:OLD", b"whsec_b2xkLXNlY3JldC1mb3ItdGVzdHM="),
            ("env:VECTOR", VECTOR_SECRET),
            ("env:BAD", b"whsec_not base64"),
        ])
    }

    fn config(extra: &str) -> String {
        format!(
            "provider = \"standard-webhooks\"\ntolerance = \"5m\"\nsecrets = [\"env:OLD\", \"env:VECTOR\"]\n{extra}"
        )
    }

    fn request(prefix: &str, id: &str, ts: &str, sig: &str) -> http::HeaderMap {
        headers(&[
            (&format!("{prefix}-id"), id),
            (&format!("{prefix}-timestamp"), ts),
            (&format!("{prefix}-signature"), sig),
        ])
    }

    fn v1(key_b64: &str, id: &str, ts: i64, body: &[u8]) -> String {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.decode(key_b64).unwrap();
        let mut msg = format!("{id}.{ts}.").into_bytes();
        msg.extend_from_slice(body);
        format!("v1,{}", b64(&hmac_raw(&key, &msg)))
    }

    fn v1a(kp: &Ed25519KeyPair, id: &str, ts: i64, body: &[u8]) -> String {
        let mut msg = format!("{id}.{ts}.").into_bytes();
        msg.extend_from_slice(body);
        format!("v1a,{}", b64(kp.sign(&msg).as_ref()))
    }

    #[test]
    fn published_test_vector_with_injected_clock() {
        let v = must_build(&config(""), &resolver());
        let h = request("webhook", VECTOR_ID, &VECTOR_TS.to_string(), VECTOR_SIG);
        let ok = v.verify(&post(&h, VECTOR_BODY), VECTOR_TS).unwrap();
        assert_eq!(ok.key_id, "secrets[1]");
        assert_eq!(ok.timestamp, Some(VECTOR_TS));
        assert_eq!(ok.replay, vec![ReplayId::of(&[VECTOR_ID.as_bytes(), VECTOR_TS.to_string().as_bytes()])]);
        // Our independent signer reproduces the vector too.
        assert_eq!(v1("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", VECTOR_ID, VECTOR_TS, VECTOR_BODY), VECTOR_SIG);
        // Same vector through the svix-* names.
        let h = request("svix", VECTOR_ID, &VECTOR_TS.to_string(), VECTOR_SIG);
        assert!(v.verify(&post(&h, VECTOR_BODY), VECTOR_TS + 300).is_ok());
        assert_eq!(v.verify(&post(&h, VECTOR_BODY), VECTOR_TS + 301), Err(SignatureError::Stale { skew_secs: 301 }));
        assert_eq!(v.verify(&post(&h, VECTOR_BODY), VECTOR_TS - 301), Err(SignatureError::Stale { skew_secs: -301 }));
        assert!(v.verify(&post(&h, VECTOR_BODY), VECTOR_TS - 300).is_ok());
    }

    #[test]
    fn rotation_list_and_unknown_versions() {
        let v = must_build(&config(""), &resolver());
        let good = v1("b2xkLXNlY3JldC1mb3ItdGVzdHM=", "msg_1", 1000, b"{}");
        let sig = format!("v2,whatever v1,AAAA {good} v1,notbase64");
        let h = request("webhook", "msg_1", "1000", &sig);
        assert_eq!(v.verify(&post(&h, b"{}"), 1000).unwrap().key_id, "secrets[0]");
    }

    #[test]
    fn tampering_and_wrong_key_fail() {
        let v = must_build(&config(""), &resolver());
        let h = request("webhook", VECTOR_ID, &VECTOR_TS.to_string(), VECTOR_SIG);
        assert_eq!(v.verify(&post(&h, b"{\"test\": 1}"), VECTOR_TS), Err(SignatureError::Invalid));
        let h = request("webhook", "msg_other", &VECTOR_TS.to_string(), VECTOR_SIG);
        assert_eq!(v.verify(&post(&h, VECTOR_BODY), VECTOR_TS), Err(SignatureError::Invalid));
        let only_old = must_build("provider = \"standard-webhooks\"\nsecrets = [\"env:OLD\"]", &resolver());
        let h = request("webhook", VECTOR_ID, &VECTOR_TS.to_string(), VECTOR_SIG);
        assert_eq!(only_old.verify(&post(&h, VECTOR_BODY), VECTOR_TS), Err(SignatureError::Invalid));
    }

    #[test]
    fn header_errors() {
        let v = must_build(&config(""), &resolver());
        let ts = VECTOR_TS.to_string();
        let h = headers(&[("webhook-id", VECTOR_ID), ("webhook-timestamp", &ts)]);
        assert_eq!(v.verify(&post(&h, VECTOR_BODY), VECTOR_TS), Err(SignatureError::Missing("webhook-signature")));
        let h = headers(&[
            ("webhook-id", VECTOR_ID),
            ("webhook-timestamp", &ts),
            ("webhook-signature", VECTOR_SIG),
            ("webhook-signature", VECTOR_SIG),
        ]);
        assert_eq!(v.verify(&post(&h, VECTOR_BODY), VECTOR_TS), Err(SignatureError::Duplicate("webhook-signature")));
        for bad in [
            "v1,g0hM9SsE-OTPJTGt_tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v1,",
            "v1,AAAA",
        ] {
            let h = request("webhook", VECTOR_ID, &ts, bad);
            assert_eq!(
                v.verify(&post(&h, VECTOR_BODY), VECTOR_TS),
                Err(SignatureError::Malformed("webhook-signature")),
                "{bad}"
            );
        }
        let h = request("webhook", VECTOR_ID, "0x10", VECTOR_SIG);
        assert_eq!(v.verify(&post(&h, VECTOR_BODY), VECTOR_TS), Err(SignatureError::Malformed("webhook-timestamp")));
        let h = headers(&[]);
        assert_eq!(v.verify(&post(&h, VECTOR_BODY), VECTOR_TS), Err(SignatureError::Missing("svix-signature")));
    }

    #[test]
    fn ed25519_v1a_with_rotation() {
        let old = ed25519();
        let new = ed25519();
        let cfg = format!("provider = \"standard-webhooks\"\npublic_keys = [\"{}\", \"{}\"]", whpk(&old), whpk(&new));
        let v = must_build(&cfg, &resolver());
        let sig = v1a(&new, "msg_ed", 5000, b"payload");
        let h = request("webhook", "msg_ed", "5000", &sig);
        assert_eq!(v.verify(&post(&h, b"payload"), 5000).unwrap().key_id, "public_keys[1]");
        assert_eq!(v.verify(&post(&h, b"payloaD"), 5000), Err(SignatureError::Invalid));
        let stranger = ed25519();
        let h = request("webhook", "msg_ed", "5000", &v1a(&stranger, "msg_ed", 5000, b"payload"));
        assert_eq!(v.verify(&post(&h, b"payload"), 5000), Err(SignatureError::Invalid));
    }

    #[test]
    fn config_errors() {
        let p = problems(
            "provider = \"standard-webhooks\"\nsecrets = [\"env:BAD\", \"whsec_inline\"]\npublic_keys = [\"whpk_AAAA\"]",
            &resolver(),
        );
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["secrets.0", "secrets.1", "public_keys.0"], "{p:?}");
        let p = problems("provider = \"standard-webhooks\"", &resolver());
        assert_eq!(p[0].key, "secrets");
    }

    proptest! {
        #[test]
        fn signature_list_parser_never_panics(s in ".{0,300}") {
            let _ = parse_signature_list(&s, "webhook-signature");
        }

        #[test]
        fn signature_list_parser_structured(entries in proptest::collection::vec("(v1|v1a|v2|)(,)?[A-Za-z0-9+/=]{0,90}", 0..5)) {
            let _ = parse_signature_list(&entries.join(" "), "webhook-signature");
        }
    }
}
