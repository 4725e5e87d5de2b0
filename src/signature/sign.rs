//! Signing as the providers do: the inverse of each verifier, for `payguard sign` (a test
//! callback by hand) and `payguard test` (rule tests signed at run time). The tests below hold
//! every signer to the real verifier.
//!
//! Only what the operator can sign: shared secrets (Stripe, Standard Webhooks, Adyen, generic
//! HMAC) and RSA private keys (WeChat Pay, Alipay). PayPal signs with its own certificate, which
//! no operator holds.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use super::SignatureTable;
pub use super::{Signed, Unsigned};

/// What to sign with.
pub enum SigningKey {
    /// A shared secret, as the rule file's secret holds it (`whsec_…` for Standard Webhooks,
    /// hex for Adyen, the bytes themselves for Stripe and HMAC).
    Secret(Vec<u8>),
    /// An RSA private key (PEM, PKCS#8 or PKCS#1).
    Rsa(RsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningKey::Secret(_) => "SigningKey::Secret(..)",
            SigningKey::Rsa(_) => "SigningKey::Rsa(..)",
        })
    }
}

impl SigningKey {
    /// An RSA private key from PEM text.
    pub fn rsa_pem(pem: &[u8]) -> Result<SigningKey, SignError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| SignError::Key(format!("cannot read PEM: {e}")))?;
        let pair = match &der {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err(SignError::Key("expected an RSA private key".into())),
        };
        pair.map(SigningKey::Rsa).map_err(|e| SignError::Key(format!("not a usable RSA private key: {e}")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("unknown provider {0:?} (stripe, standard-webhooks, hmac, adyen-hmac, wechatpay-v3, alipay-rsa2)")]
    UnknownProvider(String),
    #[error("{0} callbacks are signed with the provider's own certificate; they cannot be signed here")]
    Unsupported(&'static str),
    #[error("{provider} signs with {needs}")]
    WrongKey { provider: String, needs: &'static str },
    #[error("{0} needs a key id (the certificate serial or public key id)")]
    KeyIdRequired(&'static str),
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Body(String),
}

/// A fresh nonce: 32 hex digits.
fn nonce() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// Signs `req` for `provider` as of `now` (Unix seconds). `table`: the route's
/// `[route.signature]`, when signing for a route (header names and message layout of `hmac`).
pub fn sign(
    provider: &str,
    table: Option<&SignatureTable>,
    key: &SigningKey,
    key_id: Option<&str>,
    req: &Unsigned<'_>,
    now: i64,
) -> Result<Signed, SignError> {
    let nonce = nonce();
    let headers = |headers: Vec<(&str, String)>| Signed {
        headers: headers.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
        body: None,
    };
    match (provider, key) {
        (super::stripe::PROVIDER, SigningKey::Secret(secret)) => {
            let mac = hmac(secret, &[now.to_string().as_bytes(), b".", req.body])?;
            Ok(headers(vec![("stripe-signature", format!("t={now},v1={}", hex::encode(mac)))]))
        }
        (super::standard_webhooks::PROVIDER, SigningKey::Secret(secret)) => {
            let key = super::standard_webhooks::decode_secret(secret).map_err(SignError::Key)?;
            let id = format!("msg_{nonce}");
            let ts = now.to_string();
            let mac = hmac(key.expose(), &[id.as_bytes(), b".", ts.as_bytes(), b".", req.body])?;
            let signature = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac));
            Ok(headers(vec![("webhook-id", id), ("webhook-timestamp", ts), ("webhook-signature", signature)]))
        }
        (super::hmac::PROVIDER, SigningKey::Secret(secret)) => {
            let signed = super::hmac::sign(table, secret, key_id, req, now, &nonce).map_err(SignError::Key)?;
            Ok(Signed { headers: signed, body: None })
        }
        (super::adyen::PROVIDER, SigningKey::Secret(secret)) => {
            super::adyen::sign(req.body, secret).map_err(SignError::Body)
        }
        (super::wechatpay::PROVIDER, SigningKey::Rsa(pair)) => {
            let serial = key_id.ok_or(SignError::KeyIdRequired(super::wechatpay::PROVIDER))?;
            let ts = now.to_string();
            let message = [ts.as_bytes(), b"\n", nonce.as_bytes(), b"\n", req.body, b"\n"].concat();
            Ok(headers(vec![
                ("wechatpay-timestamp", ts),
                ("wechatpay-nonce", nonce),
                ("wechatpay-signature", rsa_sha256(pair, &message)?),
                ("wechatpay-serial", serial.to_string()),
            ]))
        }
        (super::alipay::PROVIDER, SigningKey::Rsa(pair)) => {
            let mut fields = super::alipay::parse_form(req.body)
                .map_err(|e| SignError::Body(format!("the body must be a form (a=1&b=2): {e}")))?;
            fields.retain(|(k, _)| k != "sign" && k != "sign_type");
            // A notification carries its id and time; a fresh pair unless the body has its own.
            if !fields.iter().any(|(k, _)| k == "notify_id") {
                fields.push(("notify_id".into(), nonce));
            }
            if !fields.iter().any(|(k, _)| k == "notify_time") {
                fields.push(("notify_time".into(), super::time::format_alipay_time(now)));
            }
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            let sign = rsa_sha256(pair, super::alipay::sign_content(&fields).as_bytes())?;
            let mut body = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &fields {
                body.append_pair(k, v);
            }
            body.append_pair("sign_type", "RSA2");
            body.append_pair("sign", &sign);
            let form = ("content-type".to_string(), "application/x-www-form-urlencoded; charset=utf-8".to_string());
            Ok(Signed { headers: vec![form], body: Some(body.finish().into_bytes()) })
        }
        (super::paypal::PROVIDER, _) => Err(SignError::Unsupported(super::paypal::PROVIDER)),
        (super::stripe::PROVIDER | super::standard_webhooks::PROVIDER | super::hmac::PROVIDER, _)
        | (super::adyen::PROVIDER, _) => {
            Err(SignError::WrongKey { provider: provider.to_string(), needs: "a shared secret (--secret)" })
        }
        (super::wechatpay::PROVIDER | super::alipay::PROVIDER, _) => {
            Err(SignError::WrongKey { provider: provider.to_string(), needs: "an RSA private key (--private-key)" })
        }
        (other, _) => Err(SignError::UnknownProvider(other.to_string())),
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], SignError> {
    super::encoding::hmac_parts(&super::Secret::new(key.to_vec()), parts)
        .ok_or_else(|| SignError::Key("unusable HMAC key".into()))
}

fn rsa_sha256(pair: &RsaKeyPair, message: &[u8]) -> Result<String, SignError> {
    let mut sig = vec![0; pair.public_modulus_len()];
    pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig)
        .map_err(|_| SignError::Key("RSA signing failed".into()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(sig))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::signature::test_support::*;
    use aws_lc_rs::encoding::AsDer;

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    /// Signs `body` for the verifier built from `config` and verifies it there.
    fn round_trip(config: &str, resolver: &FakeResolver, key: &SigningKey, key_id: Option<&str>, body: &[u8]) {
        let sig = must_build(config, resolver);
        let table: SignatureTable = toml::from_str(config).unwrap();
        let req = Unsigned { method: "POST", path: "/webhook", query: Some("a=1"), body };
        let signed = sign(sig.provider(), Some(&table), key, key_id, &req, now()).unwrap();
        let pairs: Vec<(&str, &str)> = signed.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let h = headers(&pairs);
        let body = signed.body.as_deref().unwrap_or(body);
        let r =
            crate::signature::SignedRequest { method: &POST, path: "/webhook", query: Some("a=1"), headers: &h, body };
        if let Err(e) = sig.verify(&r, now()) {
            panic!("{config}: {e}; signed {signed:?}");
        }
    }

    fn secret(s: &str) -> SigningKey {
        SigningKey::Secret(s.as_bytes().to_vec())
    }

    #[test]
    fn every_shared_secret_provider_verifies_what_it_signs() {
        let r = FakeResolver::with(&[
            ("env:S", b"whsec_stripe"),
            ("env:W", b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ("env:H", b"hub-secret"),
            ("env:A", b"44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"),
        ]);
        let body = br#"{"id":"evt_1","amount":100}"#;
        round_trip("provider = \"stripe\"\nsecrets = [\"env:S\"]\n", &r, &secret("whsec_stripe"), None, body);
        let whsec = secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        round_trip("provider = \"standard-webhooks\"\nsecrets = [\"env:W\"]\n", &r, &whsec, None, body);
        round_trip("provider = \"hmac\"\nsecrets = [\"env:H\"]\n", &r, &secret("hub-secret"), None, body);
        let layout = "provider = \"hmac\"\nheader = \"x-sig\"\nprefix = \"\"\nencoding = \"base64\"\n\
                      timestamp_header = \"x-ts\"\nnonce_header = \"x-nonce\"\nkey_id_header = \"x-key\"\n\
                      message = \"{method} {path}?{query}\\n{timestamp}.{nonce}.{body}\"\n\
                      [keys]\nk1 = \"env:H\"\n";
        round_trip(layout, &r, &secret("hub-secret"), Some("k1"), body);
        let adyen_key = secret("44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056");
        let notification = br#"{"live":"false","notificationItems":[{"NotificationRequestItem":{"pspReference":"7914073381342284","merchantAccountCode":"Shop","merchantReference":"order-1","amount":{"value":1130,"currency":"EUR"},"eventCode":"AUTHORISATION","success":"true"}},{"NotificationRequestItem":{"pspReference":"2","eventCode":"REFUND","success":"false","additionalData":{"x":"y"}}}]}"#;
        round_trip("provider = \"adyen-hmac\"\nhmac_keys = [\"env:A\"]\n", &r, &adyen_key, None, notification);
        round_trip("provider = \"adyen-hmac\"\nhmac_keys = [\"env:A\"]\n", &r, &adyen_key, None, body);
    }

    #[test]
    fn rsa_providers_verify_what_they_sign() {
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&rsa_a().kp).unwrap();
        let key = SigningKey::rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap();
        let r = FakeResolver::default();
        let public = rsa_a().spki_pem();
        let wechat = format!("provider = \"wechatpay-v3\"\n[public_keys]\nPUB_KEY_ID_1 = '''\n{public}'''\n");
        round_trip(&wechat, &r, &key, Some("PUB_KEY_ID_1"), br#"{"id":"n1"}"#);
        let alipay = format!("provider = \"alipay-rsa2\"\ntolerance = \"5m\"\npublic_key = '''\n{public}'''\n");
        round_trip(&alipay, &r, &key, None, "out_trade_no=20261207&total_amount=8.80&subject=Tea+%26+cake".as_bytes());
    }

    #[test]
    fn the_wrong_kind_of_key_and_unsupported_providers_are_told_apart() {
        let req = Unsigned { method: "POST", path: "/", query: None, body: b"{}" };
        let e = sign("alipay-rsa2", None, &secret("x"), None, &req, 0).unwrap_err();
        assert!(e.to_string().contains("--private-key"), "{e}");
        assert_eq!(sign("paypal", None, &secret("x"), None, &req, 0).unwrap_err(), SignError::Unsupported("paypal"));
        assert!(matches!(sign("nope", None, &secret("x"), None, &req, 0), Err(SignError::UnknownProvider(_))));
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&rsa_a().kp).unwrap();
        let key = SigningKey::rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap();
        assert_eq!(
            sign("wechatpay-v3", None, &key, None, &req, 0).unwrap_err(),
            SignError::KeyIdRequired("wechatpay-v3")
        );
        assert!(SigningKey::rsa_pem(b"not a key").is_err());
    }
}
