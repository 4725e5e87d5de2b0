//! `stripe`: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]`.
//!
//! Signed payload `"{t}.{raw body}"`, HMAC-SHA256 keyed with the whole `whsec_…` string as
//! UTF-8 bytes, lowercase hex. Any `v1` may match any configured secret (rotation); other
//! schemes (`v0`, test-mode extras) are ignored. Confirmed against stripe-node
//! `src/Webhooks.ts` (`parseHeader`, `makeHMACContent`, `validateComputedSignature`).
//!
//! Stricter than the SDK, never looser: `t` must appear once and be canonical decimal (so the
//! signed `t` text and the parsed integer agree), and a header without a well-formed `v1` is
//! malformed.

use super::config::Fields;
use super::encoding::{ct_eq, decode_lower_hex_array, hmac_parts, parse_unix_seconds};
use super::{list_key_id, single_header, ReplayId, Secret, SignatureError, SignedRequest, Verified, Verifier};

pub const PROVIDER: &str = "stripe";
const HEADER: &str = "stripe-signature";

#[derive(Debug)]
pub struct Stripe {
    secrets: Vec<Secret>,
}

/// The parts of a `Stripe-Signature` header this verifier uses.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StripeHeader<'h> {
    pub t: &'h str,
    pub timestamp: i64,
    /// `(hex as sent, decoded)` for every well-formed `v1`.
    pub v1: Vec<(&'h str, [u8; 32])>,
}

/// Parses a `Stripe-Signature` value. Never panics on any input.
pub(crate) fn parse_header(value: &str) -> Result<StripeHeader<'_>, SignatureError> {
    let mut t = None;
    let mut v1 = Vec::new();
    for item in value.split(',') {
        let (key, val) = item.split_once('=').ok_or(SignatureError::Malformed(HEADER))?;
        match key {
            "t" => {
                if t.is_some() {
                    return Err(SignatureError::Malformed(HEADER));
                }
                let ts = parse_unix_seconds(val).ok_or(SignatureError::Malformed(HEADER))?;
                t = Some((val, ts));
            }
            "v1" => {
                // Uppercase or wrong-length hex is not a Stripe signature: skip it; if no
                // usable v1 remains the header is malformed.
                if let Some(sig) = decode_lower_hex_array::<32>(val) {
                    v1.push((val, sig));
                }
            }
            _ => {}
        }
    }
    let (t, timestamp) = t.ok_or(SignatureError::Malformed(HEADER))?;
    if v1.is_empty() {
        return Err(SignatureError::Malformed(HEADER));
    }
    Ok(StripeHeader { t, timestamp, v1 })
}

impl Stripe {
    pub(crate) fn from_config(f: &mut Fields<'_>) -> Option<Self> {
        let before = f.problem_count();
        let mut secrets = Vec::new();
        match f.opt_str_list("secrets") {
            None => f.problem("secrets", "missing required key \"secrets\" (list of env:/file: secrets)"),
            Some(list) if list.is_empty() => f.problem("secrets", "at least one secret is required"),
            Some(list) => {
                for (path, spec) in list {
                    if let Some(s) = f.secret(&path, spec) {
                        secrets.push(s);
                    }
                }
            }
        }
        (f.problem_count() == before).then_some(Self { secrets })
    }
}

impl Verifier for Stripe {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn verify_signature(&self, req: &SignedRequest<'_>) -> Result<Verified, SignatureError> {
        let header = parse_header(single_header(req.headers, HEADER)?)?;
        let mut matched = None;
        for (i, secret) in self.secrets.iter().enumerate() {
            let Some(expected) = hmac_parts(secret, &[header.t.as_bytes(), b".", req.body]) else {
                continue;
            };
            // Every presented v1 is compared (no early exit on the candidates).
            let hit = header.v1.iter().fold(false, |acc, (_, sig)| acc | ct_eq(&expected, sig));
            if hit && matched.is_none() {
                matched = Some(i);
            }
        }
        let index = matched.ok_or(SignatureError::Invalid)?;
        Ok(Verified {
            key_id: list_key_id("secrets", index),
            timestamp: Some(header.timestamp),
            // The signed payload, not the v1 list: only one v1 has to verify, so the list is
            // the sender's to spell.
            replay: vec![ReplayId::of(&[header.t.as_bytes(), b".", req.body])],
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::signature::test_support::*;
    use proptest::prelude::*;

    const CONFIG: &str = r#"
        provider = "stripe"
        tolerance = "5m"
        secrets = ["env:STRIPE_OLD", "env:STRIPE_NEW"]
    "#;
    const OLD: &[u8] = b"whsec_old_secret_generated_for_tests";
    const NEW: &[u8] = b"whsec_new_secret_generated_for_tests";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;
    const T: i64 = 1_700_000_000;

    fn resolver() -> FakeResolver {
        FakeResolver::with(&[("env:STRIPE_OLD", OLD), ("env:STRIPE_NEW", NEW)])
    }

    /// Signature computed from the spec, independently of the verifier.
    fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
        let mut msg = format!("{t}.").into_bytes();
        msg.extend_from_slice(body);
        hmac_hex(secret, &msg)
    }

    fn check(header: &str, body: &[u8], now: i64) -> Result<Verified, SignatureError> {
        let v = must_build(CONFIG, &resolver());
        let h = headers(&[("stripe-signature", header)]);
        v.verify(&post(&h, body), now)
    }

    #[test]
    fn valid_signature_passes_and_names_the_key() {
        let sig = sign(OLD, T, BODY);
        let ok = check(&format!("t={T},v1={sig}"), BODY, T).unwrap();
        assert_eq!(ok.key_id, "secrets[0]");
        assert_eq!(ok.timestamp, Some(T));
        let id = ReplayId::of(&[T.to_string().as_bytes(), b".", BODY]);
        assert_eq!(ok.replay, vec![id]);
        // Other spellings of the same signed callback are the same callback.
        let junk = "0".repeat(64);
        for header in [
            format!("t={T},v1={sig},v1={sig}"),
            format!("t={T},v1={sig},v1={junk}"),
            format!("t={T},v1={junk},v1={sig}"),
            format!("v1={sig},t={T},v0={junk}"),
        ] {
            assert_eq!(check(&header, BODY, T).unwrap().replay, vec![id], "{header}");
        }
    }

    #[test]
    fn rotation_second_secret_and_any_v1() {
        let good = sign(NEW, T, BODY);
        let other = sign(b"whsec_unrelated", T, BODY);
        let header = format!("t={T},v1={other},v1={good},v0={other}");
        assert_eq!(check(&header, BODY, T).unwrap().key_id, "secrets[1]");
    }

    #[test]
    fn tampered_body_and_wrong_key_fail() {
        let sig = sign(OLD, T, BODY);
        assert_eq!(check(&format!("t={T},v1={sig}"), b"{\"id\":\"evt_2\"}", T), Err(SignatureError::Invalid));
        let wrong = sign(b"whsec_wrong", T, BODY);
        assert_eq!(check(&format!("t={T},v1={wrong}"), BODY, T), Err(SignatureError::Invalid));
        // A signature for another timestamp does not verify with this t.
        let shifted = sign(OLD, T + 1, BODY);
        assert_eq!(check(&format!("t={T},v1={shifted}"), BODY, T), Err(SignatureError::Invalid));
    }

    #[test]
    fn tolerance_is_inclusive_in_both_directions() {
        let header = format!("t={T},v1={}", sign(OLD, T, BODY));
        assert!(check(&header, BODY, T + 300).is_ok());
        assert!(check(&header, BODY, T - 300).is_ok());
        assert_eq!(check(&header, BODY, T + 301), Err(SignatureError::Stale { skew_secs: 301 }));
        assert_eq!(check(&header, BODY, T - 301), Err(SignatureError::Stale { skew_secs: -301 }));
    }

    #[test]
    fn badly_signed_and_stale_is_invalid_not_stale() {
        let header = format!("t={T},v1={}", sign(b"whsec_wrong", T, BODY));
        assert_eq!(check(&header, BODY, T + 10_000), Err(SignatureError::Invalid));
    }

    #[test]
    fn header_errors() {
        let v = must_build(CONFIG, &resolver());
        let sig = sign(OLD, T, BODY);
        let value = format!("t={T},v1={sig}");
        let h = headers(&[]);
        assert_eq!(v.verify(&post(&h, BODY), T), Err(SignatureError::Missing(HEADER)));
        let h = headers(&[("stripe-signature", &value), ("stripe-signature", &value)]);
        assert_eq!(v.verify(&post(&h, BODY), T), Err(SignatureError::Duplicate(HEADER)));
        let upper = format!("t={T},v1={}", sig.to_uppercase());
        for bad in [
            upper.as_str(),
            "t=abc,v1=00",
            &format!("v1={sig}"),
            &format!("t={T}"),
            &format!("t={T},t={T},v1={sig}"),
            &format!("t=0{T},v1={sig}"),
            &format!("t={T},v1={}", &sig[..62]),
            "garbage",
        ] {
            assert_eq!(check(bad, BODY, T), Err(SignatureError::Malformed(HEADER)), "{bad}");
        }
    }

    #[test]
    fn config_errors() {
        let p = problems(
            r#"provider = "stripe"
               secrets = ["whsec_inline", "env:MISSING"]
               tolerance = "5 minutes"
               extra = 1"#,
            &resolver(),
        );
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["tolerance", "secrets.0", "secrets.1", "extra"], "{p:?}");
        let p = problems(r#"provider = "stripe""#, &resolver());
        assert_eq!(p[0].key, "secrets");
        let p = problems(
            r#"provider = "stripe"
               secrets = ["env:STRIPE_OLD"]
               tolerance = "5m"
               replay_ttl = "9m""#,
            &resolver(),
        );
        assert_eq!(p[0].key, "replay_ttl");
    }

    #[test]
    fn defaults_and_debug_redacts_secrets() {
        let v = must_build(
            r#"provider = "stripe"
               secrets = ["env:STRIPE_OLD"]"#,
            &resolver(),
        );
        assert_eq!(v.tolerance(), Some(Duration::from_secs(300)));
        assert_eq!(v.replay_ttl(), Duration::from_secs(600));
        let debug = format!("{v:?}");
        assert!(!debug.contains("whsec"), "{debug}");
        assert!(debug.contains("redacted"), "{debug}");
    }

    proptest! {
        #[test]
        fn header_parser_never_panics(s in ".{0,200}") {
            let _ = parse_header(&s);
        }

        #[test]
        fn header_parser_structured(t in "[0-9]{0,12}", sigs in proptest::collection::vec("[0-9a-fA-F]{0,70}", 0..4)) {
            let mut value = format!("t={t}");
            for s in &sigs { value.push_str(",v1="); value.push_str(s); }
            let _ = parse_header(&value);
        }
    }
}
