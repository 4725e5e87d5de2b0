//! `wechatpay-v3`: WeChat Pay API v3 callbacks.
//!
//! Headers `Wechatpay-Timestamp`, `Wechatpay-Nonce`, `Wechatpay-Signature` (base64),
//! `Wechatpay-Serial`. Signed message `"{timestamp}\n{nonce}\n{raw body}\n"`, RSA PKCS#1 v1.5
//! SHA-256. The key is chosen by `Wechatpay-Serial` from `public_keys`, whose values are either
//! a WeChat Pay public key (`PUB_KEY_ID_…` mode, PEM `PUBLIC KEY`) or a platform certificate
//! (PEM `CERTIFICATE`, its SubjectPublicKeyInfo is used and its serial must equal the
//! configured serial); both modes may be configured side by side during migration.
//!
//! WeChat Pay sends "signature probe" callbacks whose `Wechatpay-Signature` starts with
//! `WECHATPAY/SIGNTEST/` to check that merchants verify; they are always invalid.
//!
//! With `apiv3_key`, the body's `resource` (`AEAD_AES_256_GCM`, base64 `ciphertext` with the
//! 16-byte tag appended, UTF-8 `nonce`, optional `associated_data`) must also decrypt; the body
//! is still forwarded unchanged. Follows the APIv3 "verify a response/callback signature"
//! and "decrypt callback resource" documentation; the SDK sources were not re-read for this
//! provider (see the hand-over notes).

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use super::config::Fields;
use super::encoding::{decode_base64, parse_unix_seconds};
use super::keys::{load_rsa, serial_hex, BareBase64, RsaKey};
use super::{single_header, ReplayId, SignatureError, SignedRequest, Verified, Verifier};

pub const PROVIDER: &str = "wechatpay-v3";
const TIMESTAMP: &str = "wechatpay-timestamp";
const NONCE: &str = "wechatpay-nonce";
const SIGNATURE: &str = "wechatpay-signature";
const SERIAL: &str = "wechatpay-serial";
const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

#[derive(Debug)]
pub struct WechatPay {
    keys: HashMap<String, RsaKey>,
    apiv3: Option<ApiV3Key>,
}

/// The APIv3 AES-256-GCM key; `Debug` never shows it.
struct ApiV3Key(LessSafeKey);

impl fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV3Key(<redacted>)")
    }
}

#[derive(serde::Deserialize)]
struct Notification {
    resource: Resource,
}

#[derive(serde::Deserialize)]
struct Resource {
    algorithm: String,
    ciphertext: String,
    nonce: String,
    #[serde(default)]
    associated_data: Option<String>,
}

impl ApiV3Key {
    /// Decrypts (and so authenticates) `resource`; the plaintext is dropped.
    fn check_resource(&self, body: &[u8]) -> Result<(), SignatureError> {
        let n: Notification = serde_json::from_slice(body).map_err(|_| SignatureError::Malformed("resource"))?;
        let r = n.resource;
        if r.algorithm != "AEAD_AES_256_GCM" {
            return Err(SignatureError::Malformed("resource.algorithm"));
        }
        let nonce = Nonce::try_assume_unique_for_key(r.nonce.as_bytes())
            .map_err(|_| SignatureError::Malformed("resource.nonce"))?;
        let mut data = decode_base64(&r.ciphertext).ok_or(SignatureError::Malformed("resource.ciphertext"))?;
        let aad = Aad::from(r.associated_data.as_deref().unwrap_or("").as_bytes());
        self.0.open_in_place(nonce, aad, &mut data).map(|_| ()).map_err(|_| SignatureError::Undecryptable)
    }
}

impl WechatPay {
    pub(crate) fn from_config(f: &mut Fields<'_>) -> Option<Self> {
        let before = f.problem_count();
        let mut keys = HashMap::new();
        match f.opt_str_map("public_keys") {
            None => f.problem("public_keys", "missing required key \"public_keys\" (serial -> PEM)"),
            Some(map) if map.is_empty() => f.problem("public_keys", "at least one key is required"),
            Some(map) => {
                for (path, serial, spec) in map {
                    let Some(text) = f.public_text(&path, spec) else {
                        continue;
                    };
                    match load_rsa(&text, BareBase64::Rejected) {
                        Ok(loaded) => {
                            if let Some(cert_serial) = loaded.cert_serial {
                                let expected = serial.trim_start_matches('0').to_ascii_uppercase();
                                let actual = serial_hex(&cert_serial);
                                if expected != actual {
                                    f.problem(
                                        path,
                                        format!("certificate serial {actual} does not match key {serial:?}"),
                                    );
                                    continue;
                                }
                            }
                            keys.insert(serial.to_string(), loaded.key);
                        }
                        Err(e) => f.problem(path, e),
                    }
                }
            }
        }
        let apiv3 = f.opt_str("apiv3_key").and_then(|spec| {
            let secret = f.secret("apiv3_key", spec)?;
            if secret.expose().len() != 32 {
                f.problem("apiv3_key", "the APIv3 key must be exactly 32 bytes");
                return None;
            }
            match UnboundKey::new(&AES_256_GCM, secret.expose()) {
                Ok(k) => Some(ApiV3Key(LessSafeKey::new(k))),
                Err(_) => {
                    f.problem("apiv3_key", "unusable AES-256-GCM key");
                    None
                }
            }
        });
        (f.problem_count() == before).then_some(Self { keys, apiv3 })
    }
}

impl Verifier for WechatPay {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn verify_signature(&self, req: &SignedRequest<'_>) -> Result<Verified, SignatureError> {
        let h = req.headers;
        let signature = single_header(h, SIGNATURE)?;
        let serial = single_header(h, SERIAL)?;
        let ts_text = single_header(h, TIMESTAMP)?;
        let nonce = single_header(h, NONCE)?;
        if signature.starts_with(SIGNTEST_PREFIX) {
            return Err(SignatureError::Invalid);
        }
        let ts = parse_unix_seconds(ts_text).ok_or(SignatureError::Malformed(TIMESTAMP))?;
        let sig = decode_base64(signature).ok_or(SignatureError::Malformed(SIGNATURE))?;
        let key = self.keys.get(serial).ok_or(SignatureError::UnknownKey)?;

        let message: [&[u8]; 6] = [ts_text.as_bytes(), b"\n", nonce.as_bytes(), b"\n", req.body, b"\n"];
        if !key.verify_parts(&message, &sig) {
            return Err(SignatureError::Invalid);
        }
        if let Some(apiv3) = &self.apiv3 {
            apiv3.check_resource(req.body)?;
        }
        Ok(Verified {
            key_id: serial.to_string(),
            timestamp: Some(ts),
            replay: vec![ReplayId::of(&[nonce.as_bytes()])],
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::signature::test_support::*;
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

    const PUB_ID: &str = "PUB_KEY_ID_0114000000000000000000000000";
    const CERT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
    const TS: i64 = 1_700_000_000;
    const APIV3: &[u8; 32] = b"apiv3-key-generated-for-tests-32";

    fn cert_serial_bytes() -> Vec<u8> {
        hex::decode(CERT_SERIAL).unwrap()
    }

    fn config(extra: &str) -> String {
        let pem_a = rsa_a().spki_pem();
        let cert_b = rsa_b().cert_pem(&cert_serial_bytes());
        format!(
            "provider = \"wechatpay-v3\"\ntolerance = \"5m\"\n{extra}\n[public_keys]\n\"{PUB_ID}\" = '''\n{pem_a}'''\n\"{CERT_SERIAL}\" = '''\n{cert_b}'''\n"
        )
    }

    fn resolver() -> FakeResolver {
        FakeResolver::with(&[("env:APIV3", APIV3), ("env:SHORT", b"too-short")])
    }

    fn message(ts: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
        let mut m = format!("{ts}\n{nonce}\n").into_bytes();
        m.extend_from_slice(body);
        m.push(b'\n');
        m
    }

    fn signed(key: &RsaTestKey, serial: &str, nonce: &str, body: &[u8]) -> http::HeaderMap {
        let ts = TS.to_string();
        let sig = key.sign_b64(&message(&ts, nonce, body));
        headers(&[
            ("Wechatpay-Timestamp", &ts),
            ("Wechatpay-Nonce", nonce),
            ("Wechatpay-Signature", &sig),
            ("Wechatpay-Serial", serial),
        ])
    }

    const BODY: &[u8] = br#"{"id":"EV-2018022511223320873","event_type":"TRANSACTION.SUCCESS"}"#;

    #[test]
    fn both_key_modes_verify_and_name_the_serial() {
        let v = must_build(&config(""), &resolver());
        let h = signed(rsa_a(), PUB_ID, "nonce-a", BODY);
        let ok = v.verify(&post(&h, BODY), TS).unwrap();
        assert_eq!(ok.key_id, PUB_ID);
        assert_eq!(ok.replay, vec![ReplayId::of(&[b"nonce-a"])]);
        assert_eq!(ok.timestamp, Some(TS));
        let h = signed(rsa_b(), CERT_SERIAL, "nonce-b", BODY);
        assert_eq!(v.verify(&post(&h, BODY), TS).unwrap().key_id, CERT_SERIAL);
    }

    #[test]
    fn tampered_wrong_key_unknown_serial_and_probe() {
        let v = must_build(&config(""), &resolver());
        let h = signed(rsa_a(), PUB_ID, "n", BODY);
        assert_eq!(v.verify(&post(&h, b"{}"), TS), Err(SignatureError::Invalid));
        // Signed by key B but claims key A's serial.
        let h = signed(rsa_b(), PUB_ID, "n", BODY);
        assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::Invalid));
        let h = signed(rsa_a(), "PUB_KEY_ID_UNKNOWN", "n", BODY);
        assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::UnknownKey));
        let mut h = signed(rsa_a(), PUB_ID, "n", BODY);
        h.insert("wechatpay-signature", http::HeaderValue::from_static("WECHATPAY/SIGNTEST/AAAA"));
        assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::Invalid));
    }

    #[test]
    fn tolerance_is_inclusive_in_both_directions() {
        let v = must_build(&config(""), &resolver());
        let h = signed(rsa_a(), PUB_ID, "n", BODY);
        assert!(v.verify(&post(&h, BODY), TS + 300).is_ok());
        assert!(v.verify(&post(&h, BODY), TS - 300).is_ok());
        assert_eq!(v.verify(&post(&h, BODY), TS + 301), Err(SignatureError::Stale { skew_secs: 301 }));
        assert_eq!(v.verify(&post(&h, BODY), TS - 301), Err(SignatureError::Stale { skew_secs: -301 }));
    }

    #[test]
    fn header_errors() {
        let v = must_build(&config(""), &resolver());
        let good = signed(rsa_a(), PUB_ID, "n", BODY);
        for name in [TIMESTAMP, NONCE, SIGNATURE, SERIAL] {
            let mut h = good.clone();
            h.remove(name);
            assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::Missing(name)));
            let mut h = good.clone();
            let value = h.get(name).unwrap().clone();
            h.append(name, value);
            assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::Duplicate(name)));
        }
        let mut h = good.clone();
        h.insert(SIGNATURE, http::HeaderValue::from_static("not*base64"));
        assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::Malformed(SIGNATURE)));
        let mut h = good;
        h.insert(TIMESTAMP, http::HeaderValue::from_static("17e8"));
        assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::Malformed(TIMESTAMP)));
    }

    fn encrypted_body(key: &[u8; 32], plaintext: &[u8], nonce: &str, aad: &str) -> Vec<u8> {
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
        let mut buf = plaintext.to_vec();
        k.seal_in_place_append_tag(
            Nonce::try_assume_unique_for_key(nonce.as_bytes()).unwrap(),
            Aad::from(aad.as_bytes()),
            &mut buf,
        )
        .unwrap();
        serde_json::to_vec(&serde_json::json!({
            "id": "EV-1",
            "resource_type": "encrypt-resource",
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": b64(&buf),
                "associated_data": aad,
                "nonce": nonce,
            }
        }))
        .unwrap()
    }

    #[test]
    fn apiv3_resource_must_decrypt() {
        let v = must_build(&config("apiv3_key = \"env:APIV3\""), &resolver());
        let body =
            encrypted_body(APIV3, br#"{"out_trade_no":"1217752501201407033233368018"}"#, "fdasflkja484", "transaction");
        let h = signed(rsa_a(), PUB_ID, "n1", &body);
        assert!(v.verify(&post(&h, &body), TS).is_ok());

        let wrong_key = encrypted_body(b"another-key-that-is-32-bytes-lng", b"{}", "fdasflkja484", "transaction");
        let h = signed(rsa_a(), PUB_ID, "n2", &wrong_key);
        assert_eq!(v.verify(&post(&h, &wrong_key), TS), Err(SignatureError::Undecryptable));

        // Associated data is authenticated too.
        let mut value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        value["resource"]["associated_data"] = "certificate".into();
        let altered = serde_json::to_vec(&value).unwrap();
        let h = signed(rsa_a(), PUB_ID, "n3", &altered);
        assert_eq!(v.verify(&post(&h, &altered), TS), Err(SignatureError::Undecryptable));

        let h = signed(rsa_a(), PUB_ID, "n4", BODY);
        assert_eq!(v.verify(&post(&h, BODY), TS), Err(SignatureError::Malformed("resource")));
    }

    #[test]
    fn config_errors() {
        let wrong_serial = rsa_b().cert_pem(&[0x12, 0x34]);
        let cfg = format!(
            "provider = \"wechatpay-v3\"\napiv3_key = \"env:SHORT\"\n[public_keys]\n\"{CERT_SERIAL}\" = '''\n{wrong_serial}'''\n\"PUB_KEY_ID_X\" = \"file:does-not-exist.pem\"\n\"PUB_KEY_ID_Y\" = \"not a pem\"\n"
        );
        let p = problems(&cfg, &resolver());
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                format!("public_keys.{CERT_SERIAL}").as_str(),
                "public_keys.PUB_KEY_ID_X",
                "public_keys.PUB_KEY_ID_Y",
                "apiv3_key"
            ],
            "{p:?}"
        );
        let p = problems(&config("apiv3_key = \"inline-key-is-never-allowed-here\""), &resolver());
        assert_eq!(p[0].key, "apiv3_key");
        assert!(!format!("{p:?}").contains("inline-key-is-never"), "{p:?}");
    }

    #[test]
    fn debug_redacts_apiv3_key() {
        let v = must_build(&config("apiv3_key = \"env:APIV3\""), &resolver());
        let debug = format!("{v:?}");
        assert!(!debug.contains("apiv3-key-generated"), "{debug}");
    }
}
