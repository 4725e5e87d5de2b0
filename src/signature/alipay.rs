//! `alipay-rsa2`: Alipay asynchronous notifications (`application/x-www-form-urlencoded`).
//!
//! Canonicalisation (Alipay "异步通知验签", alipay-sdk-nodejs-all `checkNotifySignV2`, i.e.
//! `notifyRSACheck(.., raw = true)` over the body-parser's fields):
//! 1. form-decode the body exactly once (`+` is a space, `%XX` a byte; the result must be
//!    UTF-8), which is what the SDK's body parser does before the SDK sees the values;
//! 2. drop `sign` and `sign_type` (and, as the SDK does, pairs with an empty key);
//! 3. keep empty values;
//! 4. sort by key (byte order), join `key=value` with `&`;
//! 5. RSA PKCS#1 v1.5 SHA-256 over that text, `sign` being standard base64 (after form
//!    decoding, so a `+` that the sender did not escape as `%2B` became a space and the
//!    signature is malformed — the SDK would fail the same request too).
//!
//! Stricter than the SDK: a repeated field or an invalid `%` escape makes the body malformed
//! (a form parser would silently pick one value), and `sign_type` other than `RSA2` is refused.
//!
//! Alipay signs no timestamp meant for freshness; `notify_time` (Beijing time) is checked only
//! when `tolerance` is configured, and then reported as the timestamp.

use super::config::Fields;
use super::encoding::decode_base64;
use super::keys::{load_rsa, BareBase64, RsaKey};
use super::time::parse_alipay_time;
use super::{ReplayId, SignatureError, SignedRequest, Verified, Verifier};

pub const PROVIDER: &str = "alipay-rsa2";

#[derive(Debug)]
pub struct Alipay {
    key: RsaKey,
    app_id: Option<String>,
    /// The route sets `tolerance`: `notify_time` is then required, and checked.
    checks_time: bool,
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` → space, `%XX` → byte.
/// Invalid escapes or non-UTF-8 results are errors.
fn form_decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = hex_val(*raw.get(i + 1)?)?;
                let lo = hex_val(*raw.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The decoded fields of a notification, sorted by key; duplicate keys are an error.
/// Never panics on any input.
pub(crate) fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, SignatureError> {
    let mut fields = Vec::new();
    for pair in body.split(|b| *b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        let key = form_decode(k).ok_or(SignatureError::Malformed("body"))?;
        let value = form_decode(v).ok_or(SignatureError::Malformed("body"))?;
        // A pair without a name is in no signed content: forwarding it would forward bytes no
        // signature covers (`&=x`), which a backend's form parser may still read.
        if key.is_empty() {
            return Err(SignatureError::Malformed("body"));
        }
        fields.push((key, value));
    }
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    if fields.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(SignatureError::Malformed("body"));
    }
    Ok(fields)
}

/// The signed content: every field but `sign`/`sign_type`, `k=v` joined by `&`.
pub(crate) fn sign_content(fields: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in fields {
        if k == "sign" || k == "sign_type" {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

fn field<'f>(fields: &'f [(String, String)], name: &str) -> Option<&'f str> {
    fields.binary_search_by(|(k, _)| k.as_str().cmp(name)).ok().map(|i| fields[i].1.as_str())
}

impl Alipay {
    pub(crate) fn from_config(f: &mut Fields<'_>) -> Option<Self> {
        let before = f.problem_count();
        let key = f.req_str("public_key").and_then(|spec| {
            let text = f.public_text("public_key", spec)?;
            load_rsa(&text, BareBase64::Allowed).map_err(|e| f.problem("public_key", e)).ok()
        });
        let app_id = f.opt_str("app_id").map(str::to_string);
        if app_id.as_deref() == Some("") {
            f.problem("app_id", "app_id must not be empty");
        }
        match key {
            Some(loaded) if f.problem_count() == before => {
                Some(Self { key: loaded.key, app_id, checks_time: f.has_key("tolerance") })
            }
            _ => None,
        }
    }
}

impl Verifier for Alipay {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn verify_signature(&self, req: &SignedRequest<'_>) -> Result<Verified, SignatureError> {
        let fields = parse_form(req.body)?;
        let sign = field(&fields, "sign").ok_or(SignatureError::Missing("sign"))?;
        if let Some(sign_type) = field(&fields, "sign_type") {
            if sign_type != "RSA2" {
                return Err(SignatureError::Malformed("sign_type"));
            }
        }
        let signature = decode_base64(sign).ok_or(SignatureError::Malformed("sign"))?;
        if !self.key.verify(sign_content(&fields).as_bytes(), &signature) {
            return Err(SignatureError::Invalid);
        }
        if let Some(expected) = &self.app_id {
            if field(&fields, "app_id") != Some(expected.as_str()) {
                return Err(SignatureError::Mismatch("app_id"));
            }
        }
        let notify_id = match field(&fields, "notify_id") {
            Some(id) if !id.is_empty() => id,
            _ => return Err(SignatureError::Missing("notify_id")),
        };
        // `notify_time` is required only where the route checks freshness.
        let timestamp = if self.checks_time {
            let text = field(&fields, "notify_time").ok_or(SignatureError::Missing("notify_time"))?;
            Some(parse_alipay_time(text).ok_or(SignatureError::Malformed("notify_time"))?)
        } else {
            None
        };
        Ok(Verified { key_id: "public_key".into(), timestamp, replay: vec![ReplayId::of(&[notify_id.as_bytes()])] })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::signature::test_support::*;
    use proptest::prelude::*;

    fn config(extra: &str) -> String {
        format!("provider = \"alipay-rsa2\"\npublic_key = '''\n{}'''\n{extra}", rsa_a().spki_pem())
    }

    /// Builds a notification body from decoded fields the way Alipay does: sign the sorted
    /// `k=v` content (independent implementation), then form-encode every field.
    fn notification(fields: &[(&str, &str)], key: &RsaTestKey) -> Vec<u8> {
        let mut sorted: Vec<(&str, &str)> = fields.to_vec();
        sorted.sort();
        let content: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let sign = key.sign_b64(content.join("&").as_bytes());
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in fields {
            ser.append_pair(k, v);
        }
        ser.append_pair("sign", &sign);
        ser.append_pair("sign_type", "RSA2");
        ser.finish().into_bytes()
    }

    const FIELDS: &[(&str, &str)] = &[
        ("notify_time", "2023-11-15 06:13:20"),
        ("notify_type", "trade_status_sync"),
        ("notify_id", "ac05099524730693a8b330c5ecf72da9786"),
        ("app_id", "2014072300007148"),
        ("charset", "utf-8"),
        ("version", "1.0"),
        ("trade_no", "2013112011001004330000121536"),
        ("out_trade_no", "6823789339978248"),
        ("subject", "当面付 测试 + 50% off & more=yes"),
        ("total_amount", "20.00"),
        ("trade_status", "TRADE_SUCCESS"),
        ("passback_params", ""),
    ];

    // 2023-11-15 06:13:20 in Beijing is 2023-11-14T22:13:20Z.
    const NOTIFY_TS: i64 = 1_700_000_000;

    #[test]
    fn valid_notification_passes() {
        let v = must_build(&config("app_id = \"2014072300007148\""), &FakeResolver::default());
        let body = notification(FIELDS, rsa_a());
        let ok = v.verify(&post(&headers(&[]), &body), 0).unwrap();
        assert_eq!(ok.replay, vec![ReplayId::of(&[b"ac05099524730693a8b330c5ecf72da9786"])]);
        assert_eq!(ok.timestamp, None);
        assert_eq!(ok.key_id, "public_key");
        assert_eq!(v.tolerance(), None);
        assert_eq!(v.replay_ttl(), Duration::from_secs(48 * 3600));
    }

    #[test]
    fn bare_base64_key_as_the_dashboard_gives_it() {
        let cfg = format!("provider = \"alipay-rsa2\"\npublic_key = \"{}\"", rsa_a().spki_b64());
        let v = must_build(&cfg, &FakeResolver::default());
        let body = notification(FIELDS, rsa_a());
        assert!(v.verify(&post(&headers(&[]), &body), 0).is_ok());
    }

    #[test]
    fn empty_values_are_signed_and_values_decoded_once() {
        let v = must_build(&config(""), &FakeResolver::default());
        // The value "%41" is literal text: it arrives as %2541 and must be decoded once only.
        let fields = [("notify_id", "n1"), ("memo", "%41 a+b"), ("empty", "")];
        let body = notification(&fields, rsa_a());
        assert!(String::from_utf8_lossy(&body).contains("memo=%2541+a%2Bb"));
        assert!(String::from_utf8_lossy(&body).contains("empty=&"));
        assert!(v.verify(&post(&headers(&[]), &body), 0).is_ok());
        // A signer that omitted the empty field signed different content.
        let content = "memo=%41 a+b&notify_id=n1";
        let sign = rsa_a().sign_b64(content.as_bytes());
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, val) in [("notify_id", "n1"), ("memo", "%41 a+b"), ("empty", ""), ("sign", &sign)] {
            ser.append_pair(k, val);
        }
        let body = ser.finish().into_bytes();
        assert_eq!(v.verify(&post(&headers(&[]), &body), 0), Err(SignatureError::Invalid));
    }

    #[test]
    fn unescaped_plus_in_sign_is_malformed() {
        let v = must_build(&config(""), &FakeResolver::default());
        let body = String::from_utf8(notification(FIELDS, rsa_a())).unwrap();
        let raw_plus = body.replace("%2B", "+");
        if raw_plus != body {
            assert!(matches!(
                v.verify(&post(&headers(&[]), raw_plus.as_bytes()), 0),
                Err(SignatureError::Malformed("sign") | SignatureError::Invalid)
            ));
        }
    }

    #[test]
    fn tampering_wrong_key_and_app_id() {
        let v = must_build(&config("app_id = \"2014072300007148\""), &FakeResolver::default());
        let body = String::from_utf8(notification(FIELDS, rsa_a())).unwrap();
        let tampered = body.replace("total_amount=20.00", "total_amount=2000.00");
        assert_eq!(v.verify(&post(&headers(&[]), tampered.as_bytes()), 0), Err(SignatureError::Invalid));
        let other = notification(FIELDS, rsa_b());
        assert_eq!(v.verify(&post(&headers(&[]), &other), 0), Err(SignatureError::Invalid));
        let mut fields = FIELDS.to_vec();
        fields[3] = ("app_id", "2099999999999999");
        let foreign = notification(&fields, rsa_a());
        assert_eq!(v.verify(&post(&headers(&[]), &foreign), 0), Err(SignatureError::Mismatch("app_id")));
        // A nameless pair is covered by no signature: refused, not forwarded.
        for extra in ["&=2000.00", "&=", "&=&x=1"] {
            let smuggled = format!("{body}{extra}");
            let got = v.verify(&post(&headers(&[]), smuggled.as_bytes()), 0);
            assert_eq!(got, Err(SignatureError::Malformed("body")), "{extra}");
        }
    }

    #[test]
    fn body_errors() {
        let v = must_build(&config(""), &FakeResolver::default());
        let body = String::from_utf8(notification(FIELDS, rsa_a())).unwrap();
        let check = |b: &str| v.verify(&post(&headers(&[]), b.as_bytes()), 0);
        assert_eq!(check("notify_id=1&a=b"), Err(SignatureError::Missing("sign")));
        assert_eq!(check(&format!("{body}&sign=AAAA")), Err(SignatureError::Malformed("body")));
        assert_eq!(check(&format!("{body}&x=%zz")), Err(SignatureError::Malformed("body")));
        assert_eq!(check(&format!("{body}&x=%ff")), Err(SignatureError::Malformed("body")));
        assert_eq!(check("sign=%21%21&notify_id=1"), Err(SignatureError::Malformed("sign")));
        assert_eq!(
            check(&body.replace("sign_type=RSA2", "sign_type=RSA")),
            Err(SignatureError::Malformed("sign_type"))
        );
        let no_id: Vec<(&str, &str)> = FIELDS.iter().copied().filter(|(k, _)| *k != "notify_id").collect();
        let b = notification(&no_id, rsa_a());
        assert_eq!(v.verify(&post(&headers(&[]), &b), 0), Err(SignatureError::Missing("notify_id")));
    }

    #[test]
    fn opt_in_notify_time_tolerance() {
        let v = must_build(&config("tolerance = \"10m\""), &FakeResolver::default());
        let body = notification(FIELDS, rsa_a());
        let ok = v.verify(&post(&headers(&[]), &body), NOTIFY_TS + 600).unwrap();
        assert_eq!(ok.timestamp, Some(NOTIFY_TS));
        assert!(v.verify(&post(&headers(&[]), &body), NOTIFY_TS - 600).is_ok());
        assert_eq!(
            v.verify(&post(&headers(&[]), &body), NOTIFY_TS + 601),
            Err(SignatureError::Stale { skew_secs: 601 })
        );
        assert_eq!(
            v.verify(&post(&headers(&[]), &body), NOTIFY_TS - 601),
            Err(SignatureError::Stale { skew_secs: -601 })
        );
        assert_eq!(v.replay_ttl(), Duration::from_secs(1200));
    }

    #[test]
    fn config_errors() {
        let p = problems(
            "provider = \"alipay-rsa2\"\npublic_key = \"bm90IGEga2V5\"\napp_id = \"\"",
            &FakeResolver::default(),
        );
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["public_key", "app_id"], "{p:?}");
        // A wrong type is the rule file parser's error, at the value.
        let text = "provider = \"alipay-rsa2\"\npublic_key = \"k\"\napp_id = 5";
        let p = problems(text, &FakeResolver::default());
        assert_eq!(p[0].span.clone().map(|s| &text[s]), Some("5"), "{p:?}");
        let p = problems("provider = \"alipay-rsa2\"", &FakeResolver::default());
        assert_eq!(p[0].key, "public_key");
    }

    proptest! {
        #[test]
        fn form_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(fields) = parse_form(&body) {
                let _ = sign_content(&fields);
            }
        }

        #[test]
        fn form_parser_structured(s in "([a-z_]{0,6}(=[a-zA-Z0-9%+=]{0,8})?&?){0,8}") {
            let _ = parse_form(s.as_bytes());
        }
    }
}
