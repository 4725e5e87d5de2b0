//! `paypal`: PayPal REST webhooks verified offline against pinned certificates.
//!
//! Headers `PAYPAL-TRANSMISSION-ID`, `PAYPAL-TRANSMISSION-TIME` (RFC 3339),
//! `PAYPAL-TRANSMISSION-SIG` (base64), `PAYPAL-CERT-URL`, `PAYPAL-AUTH-ALGO` (must be
//! `SHA256withRSA`). Signed message `"{id}|{time}|{webhook_id}|{crc32(raw body) as unsigned
//! decimal}"`, RSA PKCS#1 v1.5 SHA-256 with the public key of the certificate at
//! `PAYPAL-CERT-URL`. Only URLs listed in `certs` are accepted, each with its pinned PEM
//! certificate; nothing is ever fetched. The `time` text is signed as sent and must be within
//! `tolerance`. Per PayPal's webhook signature documentation (header set, `SHA256withRSA`) and
//! the well-known offline recipe `transmissionId|timeStamp|webhookId|crc32(body)` (PHP
//! `crc32()`, i.e. IEEE CRC-32 as an unsigned decimal).

use std::collections::HashMap;

use super::config::Fields;
use super::encoding::decode_base64;
use super::keys::{load_rsa, BareBase64, RsaKey};
use super::time::parse_rfc3339;
use super::{single_header, ReplayId, SignatureError, SignedRequest, Verified, Verifier};

pub const PROVIDER: &str = "paypal";
const ID: &str = "paypal-transmission-id";
const TIME: &str = "paypal-transmission-time";
const SIG: &str = "paypal-transmission-sig";
const CERT_URL: &str = "paypal-cert-url";
const ALGO: &str = "paypal-auth-algo";

#[derive(Debug)]
pub struct Paypal {
    webhook_id: String,
    certs: HashMap<String, RsaKey>,
}

impl Paypal {
    pub(crate) fn from_config(f: &mut Fields<'_>) -> Option<Self> {
        let before = f.problem_count();
        let webhook_id = f.req_str("webhook_id").unwrap_or_default().to_string();
        if f.problem_count() == before && (webhook_id.is_empty() || webhook_id.contains('|')) {
            f.problem("webhook_id", "webhook_id must be the non-empty id shown in the PayPal dashboard");
        }
        let mut certs = HashMap::new();
        match f.opt_str_map("certs") {
            None => f.problem("certs", "missing required key \"certs\" (cert URL -> pinned PEM certificate)"),
            Some(map) if map.is_empty() => f.problem("certs", "at least one certificate is required"),
            Some(map) => {
                for (path, url, spec) in map {
                    if !url.starts_with("https://") {
                        f.problem(path, "certificate URLs must be https:// URLs");
                        continue;
                    }
                    let Some(text) = f.public_text(&path, spec) else {
                        continue;
                    };
                    match load_rsa(&text, BareBase64::Rejected) {
                        Ok(loaded) if loaded.cert_serial.is_some() => {
                            certs.insert(url.to_string(), loaded.key);
                        }
                        Ok(_) => f.problem(path, "expected a PEM CERTIFICATE, as served at the URL"),
                        Err(e) => f.problem(path, e),
                    }
                }
            }
        }
        (f.problem_count() == before).then_some(Self { webhook_id, certs })
    }
}

impl Verifier for Paypal {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn verify_signature(&self, req: &SignedRequest<'_>) -> Result<Verified, SignatureError> {
        let h = req.headers;
        let sig_text = single_header(h, SIG)?;
        let id = single_header(h, ID)?;
        let time_text = single_header(h, TIME)?;
        let url = single_header(h, CERT_URL)?;
        let algo = single_header(h, ALGO)?;
        if algo != "SHA256withRSA" {
            return Err(SignatureError::Malformed(ALGO));
        }
        let ts = parse_rfc3339(time_text).ok_or(SignatureError::Malformed(TIME))?;
        let sig = decode_base64(sig_text).ok_or(SignatureError::Malformed(SIG))?;
        let key = self.certs.get(url).ok_or(SignatureError::UnknownKey)?;
        let crc = crc32fast::hash(req.body);
        let message = format!("{id}|{time_text}|{}|{crc}", self.webhook_id);
        if !key.verify(message.as_bytes(), &sig) {
            return Err(SignatureError::Invalid);
        }
        Ok(Verified { key_id: url.to_string(), timestamp: Some(ts), replay: vec![ReplayId::of(&[id.as_bytes()])] })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::signature::test_support::*;

    const URL_A: &str = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77";
    const URL_B: &str = "https://api.paypal.com/v1/notifications/certs/CERT-next";
    const WEBHOOK_ID: &str = "9XL90610J3647323C";
    const TID: &str = "d938e770-8046-11e6-8103-6b62a8a99ac4";
    const TIME_TEXT: &str = "2016-09-21T22:00:46Z";
    const TS: i64 = 1_474_495_246;
    const BODY: &[u8] = br#"{"id":"WH-9UG43882HX7271132-6E0871324L7949614","event_type":"PAYMENT.SALE.COMPLETED"}"#;

    fn config() -> String {
        format!(
            "provider = \"paypal\"\nwebhook_id = \"{WEBHOOK_ID}\"\ntolerance = \"5m\"\n[certs]\n\"{URL_A}\" = '''\n{}'''\n\"{URL_B}\" = '''\n{}'''\n",
            rsa_a().cert_pem(&[1]),
            rsa_b().cert_pem(&[2])
        )
    }

    /// Independent message construction: crc32 (IEEE) of the body as unsigned decimal.
    fn signed(key: &RsaTestKey, url: &str, body: &[u8]) -> http::HeaderMap {
        let mut crc = crc32fast::Hasher::new();
        crc.update(body);
        let msg = format!("{TID}|{TIME_TEXT}|{WEBHOOK_ID}|{}", u64::from(crc.finalize()));
        headers(&[
            ("PAYPAL-TRANSMISSION-ID", TID),
            ("PAYPAL-TRANSMISSION-TIME", TIME_TEXT),
            ("PAYPAL-TRANSMISSION-SIG", &key.sign_b64(msg.as_bytes())),
            ("PAYPAL-CERT-URL", url),
            ("PAYPAL-AUTH-ALGO", "SHA256withRSA"),
        ])
    }

    #[test]
    fn crc32_is_the_ieee_checksum() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn valid_and_rotated_certificates() {
        let v = must_build(&config(), &FakeResolver::default());
        let ok = v.verify(&post(&signed(rsa_a(), URL_A, BODY), BODY), TS).unwrap();
        assert_eq!(ok.key_id, URL_A);
        assert_eq!(ok.replay, vec![ReplayId::of(&[TID.as_bytes()])]);
        assert_eq!(ok.timestamp, Some(TS));
        assert_eq!(v.verify(&post(&signed(rsa_b(), URL_B, BODY), BODY), TS).unwrap().key_id, URL_B);
    }

    #[test]
    fn tampered_wrong_cert_and_unknown_url() {
        let v = must_build(&config(), &FakeResolver::default());
        let h = signed(rsa_a(), URL_A, BODY);
        assert_eq!(v.verify(&post(&h, b"{}"), TS), Err(SignatureError::Invalid));
        let h = signed(rsa_b(), URL_A, BODY);
        assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::Invalid));
        let h = signed(rsa_a(), "https://evil.example/cert.pem", BODY);
        assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::UnknownKey));
    }

    #[test]
    fn tolerance_is_inclusive_in_both_directions() {
        let v = must_build(&config(), &FakeResolver::default());
        let h = signed(rsa_a(), URL_A, BODY);
        assert!(v.verify(&post(&h, BODY), TS + 300).is_ok());
        assert!(v.verify(&post(&h, BODY), TS - 300).is_ok());
        assert_eq!(v.verify(&post(&h, BODY), TS + 301), Err(SignatureError::Stale { skew_secs: 301 }));
        assert_eq!(v.verify(&post(&h, BODY), TS - 301), Err(SignatureError::Stale { skew_secs: -301 }));
    }

    #[test]
    fn header_errors() {
        let v = must_build(&config(), &FakeResolver::default());
        let good = signed(rsa_a(), URL_A, BODY);
        for name in [ID, TIME, SIG, CERT_URL, ALGO] {
            let mut h = good.clone();
            h.remove(name);
            assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::Missing(name)));
            let mut h = good.clone();
            let value = h.get(name).unwrap().clone();
            h.append(name, value);
            assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::Duplicate(name)));
        }
        let mut h = good.clone();
        h.insert(ALGO, http::HeaderValue::from_static("SHA1withRSA"));
        assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::Malformed(ALGO)));
        let mut h = good.clone();
        h.insert(TIME, http::HeaderValue::from_static("1474495246"));
        assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::Malformed(TIME)));
        let mut h = good;
        h.insert(SIG, http::HeaderValue::from_static("a-b_c"));
        assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::Malformed(SIG)));
    }

    #[test]
    fn config_errors() {
        let cfg = format!(
            "provider = \"paypal\"\n[certs]\n\"http://api.paypal.com/cert\" = \"x\"\n\"{URL_A}\" = '''\n{}'''\n\"{URL_B}\" = \"file:missing.pem\"\n",
            rsa_a().spki_pem()
        );
        let p = problems(&cfg, &FakeResolver::default());
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "webhook_id",
                "certs.\"http://api.paypal.com/cert\"",
                format!("certs.\"{URL_A}\"").as_str(),
                format!("certs.\"{URL_B}\"").as_str()
            ],
            "{p:?}"
        );
    }
}
