//! Signature verification cost per provider, against the bare primitives.
//!
//! For every provider a verifier is built through the public `signature::build` (keys
//! generated at start: RSA-2048 and Ed25519 with aws-lc-rs, certificates with rcgen; secrets
//! from an in-memory resolver), a realistic ~1 KiB callback is signed once, and
//! `Signature::verify` is timed with `now` equal to the signed timestamp. Each verification is
//! checked to succeed before it is timed.
//!
//! The `primitive/*` group times the crypto alone (RSA-2048 PKCS#1 v1.5 verify of a digest and
//! of a 1 KiB message, Ed25519 verify of 1 KiB, HMAC-SHA256 of 1 KiB with the RustCrypto crates
//! payguard uses and with aws-lc), so per-provider overhead = provider − primitive.
//!
//! Run pinned (see benches/MICRO.md):
//! `taskset -c 1 cargo bench --bench signatures -- --measurement-time 5`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    Ed25519KeyPair, KeyPair as _, ParsedPublicKey, ED25519, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hmac::Mac as _;
use payguard::signature::{build, SecretResolver, Signature, SignatureTable, SignedRequest};

/// 2026-05-01T04:00:00Z, the signed timestamp of every callback and the injected clock.
const TS: i64 = 1_777_608_000;
const TS_RFC3339: &str = "2026-05-01T04:00:00Z";
/// The same instant in Beijing time, as Alipay writes `notify_time`.
const TS_BEIJING: &str = "2026-05-01 12:00:00";
const BODY_LEN: usize = 1024;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = b64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::sign(&key, msg).as_ref().to_vec()
}

/// Secrets by spec (`env:NAME`), fixed test bytes.
struct FixedResolver(HashMap<String, Vec<u8>>);

impl SecretResolver for FixedResolver {
    fn resolve(&self, spec: &str, _base_dir: &Path) -> Result<Vec<u8>, String> {
        self.0.get(spec).cloned().ok_or_else(|| format!("{spec} not configured in the bench"))
    }
}

struct Rsa(RsaKeyPair);

impl Rsa {
    fn generate() -> Self {
        Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
    }
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; self.0.public_modulus_len()];
        self.0.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig).unwrap();
        sig
    }
    fn spki_der(&self) -> Vec<u8> {
        self.0.public_key().as_der().unwrap().as_ref().to_vec()
    }
    fn cert_pem(&self, serial: &[u8]) -> String {
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&self.0).unwrap();
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["payguard.bench".into()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(serial.to_vec()));
        params.self_signed(&key).unwrap().pem()
    }
}

/// A JSON event padded (in `description`) to exactly `BODY_LEN` bytes.
fn json_event(kind: &str) -> Vec<u8> {
    let head = format!(
        r#"{{"id":"evt_1PqRstUvWxYz0123","object":"event","type":"{kind}","created":{TS},"livemode":false,"data":{{"object":{{"id":"pi_3PqRstUvWxYz4567","object":"payment_intent","amount":2000,"currency":"usd","status":"succeeded","customer":"cus_Qabcdef012345","metadata":{{"order_id":"ord_0123456789abcdef","shop":"demo"}},"description":""#
    );
    let tail = r#""}}}"#;
    let pad = BODY_LEN.saturating_sub(head.len() + tail.len());
    let body = format!("{head}{}{tail}", "x".repeat(pad));
    assert_eq!(body.len(), BODY_LEN);
    body.into_bytes()
}

fn headers(pairs: &[(&str, String)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in pairs {
        map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), http::HeaderValue::from_str(v).unwrap());
    }
    map
}

/// One provider case: a built verifier and a request it accepts.
struct Case {
    name: &'static str,
    verifier: Arc<Signature>,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

fn verifier(toml_text: &str, resolver: &FixedResolver) -> Arc<Signature> {
    let table: SignatureTable = toml::from_str(toml_text).unwrap();
    match build(&table, Path::new("/nonexistent"), resolver) {
        Ok(v) => v,
        Err(problems) => panic!("config problems: {problems:?}\n{toml_text}"),
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

struct Keys {
    rsa_wechat: Rsa,
    rsa_alipay: Rsa,
    rsa_paypal: Rsa,
    ed25519: Ed25519KeyPair,
}

fn cases(keys: &Keys) -> Vec<Case> {
    let stripe_secret = b"whsec_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH".to_vec();
    let sw_key: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    let sw_secret = format!("whsec_{}", b64(&sw_key)).into_bytes();
    let hmac_secret = b"It's a Secret to Everybody".to_vec();
    let adyen_key: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(91).wrapping_add(3)).collect();
    let adyen_secret = hex::encode_upper(&adyen_key).into_bytes();
    let apiv3_key = b"0123456789abcdefghijklmnopqrstuv".to_vec();
    let resolver = FixedResolver(
        [
            ("env:STRIPE", stripe_secret.clone()),
            ("env:SW", sw_secret),
            ("env:HMAC", hmac_secret.clone()),
            ("env:ADYEN", adyen_secret),
            ("env:APIV3", apiv3_key.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    );
    let mut out = Vec::new();

    // stripe
    {
        let body = json_event("payment_intent.succeeded");
        let mut signed = format!("{TS}.").into_bytes();
        signed.extend_from_slice(&body);
        let sig = hex::encode(hmac_sha256(&stripe_secret, &signed));
        out.push(Case {
            name: "stripe",
            verifier: verifier("provider = \"stripe\"\nsecrets = [\"env:STRIPE\"]", &resolver),
            headers: headers(&[("stripe-signature", format!("t={TS},v1={sig}"))]),
            body,
        });
    }

    // standard-webhooks v1 (HMAC) and v1a (Ed25519)
    {
        let body = json_event("invoice.paid");
        let id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
        let mut signed = format!("{id}.{TS}.").into_bytes();
        signed.extend_from_slice(&body);
        let v1 = b64(&hmac_sha256(&sw_key, &signed));
        out.push(Case {
            name: "standard-webhooks-v1",
            verifier: verifier("provider = \"standard-webhooks\"\nsecrets = [\"env:SW\"]", &resolver),
            headers: headers(&[
                ("webhook-id", id.into()),
                ("webhook-timestamp", TS.to_string()),
                ("webhook-signature", format!("v1,{v1}")),
            ]),
            body: body.clone(),
        });
        let v1a = b64(keys.ed25519.sign(&signed).as_ref());
        let whpk = format!("whpk_{}", b64(keys.ed25519.public_key().as_ref()));
        out.push(Case {
            name: "standard-webhooks-v1a",
            verifier: verifier(
                &format!("provider = \"standard-webhooks\"\npublic_keys = [{}]", toml_str(&whpk)),
                &resolver,
            ),
            headers: headers(&[
                ("webhook-id", id.into()),
                ("webhook-timestamp", TS.to_string()),
                ("webhook-signature", format!("v1a,{v1a}")),
            ]),
            body,
        });
    }

    // hmac (GitHub-style defaults)
    {
        let body = json_event("push");
        let sig = hex::encode(hmac_sha256(&hmac_secret, &body));
        out.push(Case {
            name: "hmac",
            verifier: verifier("provider = \"hmac\"\nsecrets = [\"env:HMAC\"]", &resolver),
            headers: headers(&[("x-hub-signature-256", format!("sha256={sig}"))]),
            body,
        });
    }

    // adyen-hmac: one NotificationRequestItem (JSON parse + per-item HMAC), and the header form
    {
        let (psp, merchant, reference, value, currency, event, success) =
            ("QFQTPCQ8HXSKGK82", "TestMerchant", "ord_0123456789abcdef", 1130, "EUR", "AUTHORISATION", "true");
        let data = format!("{psp}::{merchant}:{reference}:{value}:{currency}:{event}:{success}");
        let sig = b64(&hmac_sha256(&adyen_key, data.as_bytes()));
        let build_body = |pad: usize| {
            format!(
                r#"{{"live":"false","notificationItems":[{{"NotificationRequestItem":{{"additionalData":{{"hmacSignature":"{sig}","authCode":"058705","avsResult":"5 No AVS data provided","cardSummary":"1111","expiryDate":"03/2030","cardBin":"411111","checkout.cardAddedBrand":"visa","paymentMethodVariant":"visa","shopperReference":"{}","threeDAuthenticated":"false"}},"amount":{{"currency":"{currency}","value":{value}}},"eventCode":"{event}","eventDate":"2026-05-01T06:00:00+02:00","merchantAccountCode":"{merchant}","merchantReference":"{reference}","operations":["CANCEL","CAPTURE","REFUND"],"paymentMethod":"visa","pspReference":"{psp}","reason":"058705:1111:03/2030","success":"{success}"}}}}]}}"#,
                "s".repeat(pad)
            )
        };
        let base = build_body(0).len();
        let body = build_body(BODY_LEN.saturating_sub(base)).into_bytes();
        assert_eq!(body.len(), BODY_LEN);
        out.push(Case {
            name: "adyen-hmac-item",
            verifier: verifier("provider = \"adyen-hmac\"\nhmac_keys = [\"env:ADYEN\"]", &resolver),
            headers: http::HeaderMap::new(),
            body: body.clone(),
        });
        let header_sig = b64(&hmac_sha256(&adyen_key, &body));
        out.push(Case {
            name: "adyen-hmac-header",
            verifier: verifier("provider = \"adyen-hmac\"\nhmac_keys = [\"env:ADYEN\"]", &resolver),
            headers: headers(&[("hmacsignature", header_sig)]),
            body,
        });
    }

    // alipay-rsa2: form body, sorted canonical content, RSA-2048
    {
        let app_id = "2021000117600000";
        let mut fields: Vec<(&str, String)> = vec![
            ("gmt_create", "2026-05-01 11:59:58".into()),
            ("charset", "utf-8".into()),
            ("seller_email", "merchant@example.com".into()),
            ("subject", "订单支付 ord_0123456789abcdef".into()),
            ("buyer_id", "2088102122524333".into()),
            ("invoice_amount", "20.00".into()),
            ("notify_id", "2026050100222115958018911471234567".into()),
            ("fund_bill_list", r#"[{"amount":"20.00","fundChannel":"ALIPAYACCOUNT"}]"#.into()),
            ("notify_type", "trade_status_sync".into()),
            ("trade_status", "TRADE_SUCCESS".into()),
            ("receipt_amount", "20.00".into()),
            ("app_id", app_id.into()),
            ("buyer_pay_amount", "20.00".into()),
            ("seller_id", "2088102119685838".into()),
            ("gmt_payment", "2026-05-01 11:59:59".into()),
            ("notify_time", TS_BEIJING.into()),
            ("version", "1.0".into()),
            ("out_trade_no", "ord_0123456789abcdef".into()),
            ("total_amount", "20.00".into()),
            ("trade_no", "2026050122001424330501234567".into()),
            ("auth_app_id", app_id.into()),
            ("buyer_logon_id", "csq***@sandbox.com".into()),
            ("point_amount", "0.00".into()),
        ];
        let encode = |fields: &[(&str, String)], sign: &str| {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in fields {
                ser.append_pair(k, v);
            }
            ser.append_pair("sign", sign).append_pair("sign_type", "RSA2");
            ser.finish()
        };
        // Pad with a `body` field so the encoded form is ~1 KiB.
        let probe = encode(&fields, &b64(&[0u8; 256]));
        fields.push(("body", "p".repeat(BODY_LEN.saturating_sub(probe.len() + 6))));
        let mut sorted: Vec<&(&str, String)> = fields.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let content = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let sign = b64(&keys.rsa_alipay.sign(content.as_bytes()));
        let body = encode(&fields, &sign).into_bytes();
        let pem_text = pem("PUBLIC KEY", &keys.rsa_alipay.spki_der());
        out.push(Case {
            name: "alipay-rsa2",
            verifier: verifier(
                &format!(
                    "provider = \"alipay-rsa2\"\ntolerance = \"5m\"\napp_id = \"{app_id}\"\npublic_key = {}",
                    toml_str(&pem_text)
                ),
                &resolver,
            ),
            headers: headers(&[("content-type", "application/x-www-form-urlencoded; charset=utf-8".into())]),
            body,
        });
    }

    // wechatpay-v3: RSA-2048 over "ts\nnonce\nbody\n", platform certificate by serial; with and
    // without the APIv3 resource decryption.
    {
        let serial_hex = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
        let cert = keys.rsa_wechat.cert_pem(&hex::decode(serial_hex).unwrap());
        let res_nonce = "fdasflkja484";
        let plaintext = format!(
            r#"{{"mchid":"1900000109","appid":"wxdace645e0bc2cXXX","out_trade_no":"ord_0123456789abcdef","transaction_id":"4200000000000000000000000001","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"CMC","attach":"","success_time":"2026-05-01T12:00:00+08:00","payer":{{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}},"amount":{{"total":2000,"payer_total":2000,"currency":"CNY","payer_currency":"CNY"}},"promotion_detail":[],"scene_info":{{"device_id":"013467007045764"}},"pad":"{}"}}"#,
            "q".repeat(180)
        );
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &apiv3_key).unwrap());
        let mut data = plaintext.into_bytes();
        key.seal_in_place_append_tag(
            Nonce::try_assume_unique_for_key(res_nonce.as_bytes()).unwrap(),
            Aad::from(b"transaction"),
            &mut data,
        )
        .unwrap();
        let body = format!(
            r#"{{"id":"EV-2018022511223320873","create_time":"2026-05-01T12:00:00+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"支付成功","resource":{{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"{}","associated_data":"transaction","nonce":"{res_nonce}"}}}}"#,
            b64(&data)
        )
        .into_bytes();
        let nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
        let mut message = format!("{TS}\n{nonce}\n").into_bytes();
        message.extend_from_slice(&body);
        message.push(b'\n');
        let sig = b64(&keys.rsa_wechat.sign(&message));
        let hdrs = headers(&[
            ("wechatpay-timestamp", TS.to_string()),
            ("wechatpay-nonce", nonce.into()),
            ("wechatpay-signature", sig),
            ("wechatpay-serial", serial_hex.into()),
        ]);
        let base = format!("provider = \"wechatpay-v3\"\npublic_keys = {{ \"{serial_hex}\" = {} }}", toml_str(&cert));
        out.push(Case {
            name: "wechatpay-v3",
            verifier: verifier(&base, &resolver),
            headers: hdrs.clone(),
            body: body.clone(),
        });
        out.push(Case {
            name: "wechatpay-v3+apiv3",
            verifier: verifier(&format!("{base}\napiv3_key = \"env:APIV3\""), &resolver),
            headers: hdrs,
            body,
        });
    }

    // paypal: RSA-2048 over "id|time|webhook_id|crc32(body)", pinned certificate by URL
    {
        let body = json_event("PAYMENT.CAPTURE.COMPLETED");
        let url = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77";
        let webhook_id = "1JE4291016473214C";
        let id = "69cd13f0-d67a-11e5-baa3-778b53f4ae55";
        let message = format!("{id}|{TS_RFC3339}|{webhook_id}|{}", crc32fast::hash(&body));
        let sig = b64(&keys.rsa_paypal.sign(message.as_bytes()));
        let cert = keys.rsa_paypal.cert_pem(&[0x01, 0x7a, 0x3c]);
        out.push(Case {
            name: "paypal",
            verifier: verifier(
                &format!(
                    "provider = \"paypal\"\nwebhook_id = \"{webhook_id}\"\ncerts = {{ \"{url}\" = {} }}",
                    toml_str(&cert)
                ),
                &resolver,
            ),
            headers: headers(&[
                ("paypal-transmission-id", id.into()),
                ("paypal-transmission-time", TS_RFC3339.into()),
                ("paypal-transmission-sig", sig),
                ("paypal-cert-url", url.into()),
                ("paypal-auth-algo", "SHA256withRSA".into()),
            ]),
            body,
        });
    }
    out
}

fn bench_providers(c: &mut Criterion, keys: &Keys) {
    let method = http::Method::POST;
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));
    for case in cases(keys) {
        let req =
            SignedRequest { method: &method, path: "/webhook", query: None, headers: &case.headers, body: &case.body };
        let verified = case.verifier.verify(&req, TS);
        assert!(verified.is_ok(), "{}: {verified:?}", case.name);
        eprintln!("{}: body {} bytes, {:?}", case.name, case.body.len(), verified);
        group.bench_function(case.name, |b| {
            b.iter(|| black_box(case.verifier.verify(black_box(&req), TS)).is_ok());
        });
    }
    group.finish();
}

fn bench_primitives(c: &mut Criterion, keys: &Keys) {
    let msg = json_event("primitive");
    let mut group = c.benchmark_group("primitive");
    group.throughput(Throughput::Elements(1));

    let rsa = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, keys.rsa_wechat.spki_der()).unwrap();
    let sig = keys.rsa_wechat.sign(&msg);
    let d = digest::digest(&digest::SHA256, &msg);
    assert!(rsa.verify_digest_sig(&d, &sig).is_ok());
    assert!(rsa.verify_sig(&msg, &sig).is_ok());
    group.bench_function("rsa2048_verify_digest", |b| b.iter(|| rsa.verify_digest_sig(black_box(&d), &sig).is_ok()));
    group.bench_function("rsa2048_verify_1KiB", |b| b.iter(|| rsa.verify_sig(black_box(&msg), &sig).is_ok()));

    let ed = ParsedPublicKey::new(&ED25519, keys.ed25519.public_key().as_ref()).unwrap();
    let ed_sig = keys.ed25519.sign(&msg);
    assert!(ed.verify_sig(&msg, ed_sig.as_ref()).is_ok());
    group.bench_function("ed25519_verify_1KiB", |b| b.iter(|| ed.verify_sig(black_box(&msg), ed_sig.as_ref()).is_ok()));

    let key = b"It's a Secret to Everybody";
    group.bench_function("hmac_sha256_1KiB_rustcrypto", |b| {
        b.iter(|| {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(black_box(key)).unwrap();
            mac.update(black_box(&msg));
            mac.finalize().into_bytes()
        });
    });
    // The keyed state (inner/outer pad blocks hashed) computed once, cloned per message.
    let keyed = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    group.bench_function("hmac_sha256_1KiB_rustcrypto_prekeyed", |b| {
        b.iter(|| {
            let mut mac = keyed.clone();
            mac.update(black_box(&msg));
            mac.finalize().into_bytes()
        });
    });
    group.bench_function("hmac_sha256_1KiB_awslc", |b| {
        b.iter(|| {
            let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, black_box(key));
            aws_lc_rs::hmac::sign(&k, black_box(&msg))
        });
    });
    let prepared = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    group.bench_function("hmac_sha256_1KiB_awslc_prekeyed", |b| {
        b.iter(|| aws_lc_rs::hmac::sign(&prepared, black_box(&msg)));
    });
    group.bench_function("sha256_1KiB_rustcrypto", |b| {
        b.iter(|| <sha2::Sha256 as sha2::Digest>::digest(black_box(&msg)));
    });
    group.bench_function("sha256_1KiB_awslc", |b| b.iter(|| digest::digest(&digest::SHA256, black_box(&msg))));
    group.finish();
}

fn bench(c: &mut Criterion) {
    let keys = Keys {
        rsa_wechat: Rsa::generate(),
        rsa_alipay: Rsa::generate(),
        rsa_paypal: Rsa::generate(),
        ed25519: Ed25519KeyPair::generate().unwrap(),
    };
    bench_providers(c, &keys);
    bench_primitives(c, &keys);
}

criterion_group!(benches, bench);
criterion_main!(benches);
