//! The replay key of every provider comes from signed material only, never from how the
//! signature material is spelled. For each provider a list of *spellings* of one signed
//! callback (byte-level forms the verifier accepts: a signature list with extra or repeated
//! entries, the other key of a rotation, reordered form fields, reformatted JSON, header
//! whitespace, ...) is sent end to end: for each spelling k, a FRESH callback is sent as k
//! (it must be forwarded: this proves k is really accepted), then every other spelling and k
//! itself again must be 401 `replay` and never reach the backend. Adyen batches are checked
//! too: an item accepted once is spent inside any batch, and a refused batch consumes nothing.
//!
//! Everything runs twice: with the in-memory replay store and with a real `redis-server`.
//! Keys and secrets are generated at run time; secrets are written next to the rule file and
//! referenced as `file:NAME`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;
use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const WECHAT_PUB_KEY_ID: &str = "PUB_KEY_ID_0114000000000000000000000000";
const WECHAT_CERT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const PAYPAL_WEBHOOK_ID: &str = "8PT597110X687430LKGECATA";
const PAYPAL_CERT_A: &str = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77";
const PAYPAL_CERT_B: &str = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-next0001";

/// One route per provider; every provider that takes a key list gets two keys (rotation).
const RULES: &str = r#"
[defaults]
action = "deny"

[[route]]
name = "stripe"
match = { path = "/wh/stripe", methods = ["POST"] }
[route.signature]
provider = "stripe"
tolerance = "5m"
secrets = ["file:stripe-1.secret", "file:stripe-2.secret"]

[[route]]
name = "standard-webhooks"
match = { path = "/wh/standard-webhooks", methods = ["POST"] }
[route.signature]
provider = "standard-webhooks"
tolerance = "5m"
secrets = ["file:whsec-1.secret", "file:whsec-2.secret"]

[[route]]
name = "adyen"
match = { path = "/wh/adyen", methods = ["POST"] }
[route.signature]
provider = "adyen-hmac"
hmac_keys = ["file:adyen-1.secret", "file:adyen-2.secret"]

[[route]]
name = "wechatpay"
match = { path = "/wh/wechatpay", methods = ["POST"] }
[route.signature]
provider = "wechatpay-v3"
tolerance = "5m"
public_keys = { "PUB_KEY_ID_0114000000000000000000000000" = "file:wechatpay-pub.pem", "5157F09EFDC096DE15EBE81A47057A7232F1B8E1" = "file:wechatpay-platform.pem" }

[[route]]
name = "alipay"
match = { path = "/wh/alipay", methods = ["POST"] }
[route.signature]
provider = "alipay-rsa2"
public_key = "file:alipay-pub.pem"

[[route]]
name = "paypal"
match = { path = "/wh/paypal", methods = ["POST"] }
[route.signature]
provider = "paypal"
tolerance = "5m"
webhook_id = "8PT597110X687430LKGECATA"
certs = { "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77" = "file:paypal-a.pem", "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-next0001" = "file:paypal-b.pem" }

[[route]]
name = "github"
match = { path = "/wh/github", methods = ["POST"] }
[route.signature]
provider = "hmac"
secrets = ["file:hmac-1.secret", "file:hmac-2.secret"]

[[route]]
name = "hmac-template"
match = { path = "/wh/hmac-template", methods = ["POST"] }
[route.signature]
provider = "hmac"
header = "x-signature"
prefix = ""
timestamp_header = "x-timestamp"
nonce_header = "x-nonce"
tolerance = "5m"
message = "{method}\n{path}\n{query}\n{timestamp}\n{nonce}\n{body}"
secrets = ["file:hmac-1.secret", "file:hmac-2.secret"]
"#;

// ---------------------------------------------------------------------------------------------
// Keys, generated once per test binary run.

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    aws_lc_rs::rand::fill(&mut buf).unwrap();
    buf
}

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

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

struct Rsa {
    kp: KeyPair,
}

impl Rsa {
    fn generate() -> Rsa {
        Rsa { kp: KeyPair::generate(KeySize::Rsa2048).unwrap() }
    }

    /// RSA PKCS#1 v1.5 SHA-256, base64.
    fn sign_b64(&self, msg: &[u8]) -> String {
        let mut sig = vec![0; self.kp.public_modulus_len()];
        self.kp.sign(&RSA_PKCS1_SHA256, &aws_lc_rs::rand::SystemRandom::new(), msg, &mut sig).unwrap();
        b64(&sig)
    }

    fn spki_pem(&self) -> String {
        pem("PUBLIC KEY", self.kp.public_key().as_der().unwrap().as_ref())
    }

    /// A self-signed certificate for this key with the given serial number.
    fn cert_pem(&self, serial: &[u8]) -> String {
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&self.kp).unwrap();
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["payguard.test".into()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(serial.to_vec()));
        params.self_signed(&key).unwrap().pem()
    }
}

struct Keys {
    /// `whsec_…` strings, used as UTF-8 HMAC keys by Stripe.
    stripe: [String; 2],
    /// Standard Webhooks: the file text (`whsec_` + base64) and the decoded HMAC key.
    whsec: [(String, Vec<u8>); 2],
    /// Adyen: the file text (uppercase hex, as the Customer Area shows it) and the key bytes.
    adyen: [(String, Vec<u8>); 2],
    /// Generic HMAC secrets (text).
    hmac: [String; 2],
    rsa: [Rsa; 2],
    /// Files next to the rule file: (name, contents).
    files: Vec<(&'static str, String)>,
    /// A random tag so ids of one run never meet those of another.
    run: String,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let text_secret = |prefix: &str| format!("{prefix}{}", hex::encode(random_bytes(24)));
        let stripe = [text_secret("whsec_"), text_secret("whsec_")];
        let whsec = [(), ()].map(|()| {
            let key = random_bytes(32);
            (format!("whsec_{}", b64(&key)), key)
        });
        let adyen = [(), ()].map(|()| {
            let key = random_bytes(32);
            (hex::encode_upper(&key), key)
        });
        let hmac = [text_secret("hmac-"), text_secret("hmac-")];
        let rsa = [Rsa::generate(), Rsa::generate()];
        let files = vec![
            ("stripe-1.secret", stripe[0].clone()),
            ("stripe-2.secret", stripe[1].clone()),
            ("whsec-1.secret", whsec[0].0.clone()),
            ("whsec-2.secret", whsec[1].0.clone()),
            ("adyen-1.secret", adyen[0].0.clone()),
            ("adyen-2.secret", adyen[1].0.clone()),
            ("hmac-1.secret", hmac[0].clone()),
            ("hmac-2.secret", hmac[1].clone()),
            // WeChat Pay: key A as a public key (PUB_KEY_ID mode), key B as a platform certificate.
            ("wechatpay-pub.pem", rsa[0].spki_pem()),
            ("wechatpay-platform.pem", rsa[1].cert_pem(&hex::decode(WECHAT_CERT_SERIAL).unwrap())),
            ("alipay-pub.pem", rsa[0].spki_pem()),
            ("paypal-a.pem", rsa[0].cert_pem(&[0x0a])),
            ("paypal-b.pem", rsa[1].cert_pem(&[0x0b])),
            ("callbacks.toml", RULES.to_string()),
        ];
        let run = hex::encode(random_bytes(4));
        Keys { stripe, whsec, adyen, hmac, rsa, files, run }
    })
}

/// A new id for a fresh callback (event id, nonce, notify_id, transmission id...).
fn fresh_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{}x{}", keys().run, NEXT.fetch_add(1, Ordering::Relaxed))
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

// ---------------------------------------------------------------------------------------------
// The harness: one proxy (memory or Redis store) and a record of every failed expectation.

#[derive(Clone, Copy, Debug)]
enum Store {
    Memory,
    Redis,
}

/// One request: route path, headers, raw body.
#[derive(Clone)]
struct Call {
    path: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Call {
    fn new(path: &'static str, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Call {
        let headers = headers.iter().map(|(n, v)| ((*n).to_string(), (*v).to_string())).collect();
        Call { path, headers, body: body.into() }
    }
}

/// One byte-level form of a signed callback.
struct Spelling {
    name: String,
    call: Call,
}

fn spelling(name: impl Into<String>, call: Call) -> Spelling {
    Spelling { name: name.into(), call }
}

struct Outcome {
    status: u16,
    error: String,
    forwarded: usize,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} error={:?}, reached the backend {} time(s)", self.status, self.error, self.forwarded)
    }
}

struct Env {
    store: Store,
    backend: Backend,
    proxy: Proxy,
    client: reqwest::Client,
    failures: Vec<String>,
    _rules: tempfile::TempDir,
    _redis: Option<RedisServer>,
}

async fn env(store: Store) -> Env {
    let k = keys();
    let redis = match store {
        Store::Memory => None,
        Store::Redis => Some(RedisServer::start().await),
    };
    let backend = Backend::start().await;
    let rules = tempfile::tempdir().unwrap();
    for (name, text) in &k.files {
        std::fs::write(rules.path().join(name), text).unwrap();
    }
    let state = redis.as_ref().map(RedisServer::state_config).unwrap_or_default();
    let extra = format!("[rules]\ndir = \"{}\"\n\n{state}", rules.path().display());
    let proxy = start_proxy_with_rules(backend.addr, &extra, &[]).await;
    let client = h1_client(&proxy.cert);
    Env { store, backend, proxy, client, failures: Vec::new(), _rules: rules, _redis: redis }
}

impl Env {
    async fn send(&self, call: &Call) -> Outcome {
        let before = self.backend.count();
        let mut req = self.client.post(self.proxy.url(call.path)).body(call.body.clone());
        for (name, value) in &call.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.bytes().await.unwrap();
        let error = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default();
        Outcome { status, error, forwarded: self.backend.count() - before }
    }

    fn fail(&mut self, provider: &str, what: &str, got: &Outcome, want: &str) {
        self.failures.push(format!("[{:?}] {provider}: {what}: got {got}; want {want}", self.store));
    }

    /// A fresh callback must be forwarded once (answer 200 from the backend).
    async fn expect_forwarded(&mut self, provider: &str, what: &str, call: &Call) -> bool {
        let got = self.send(call).await;
        let ok = got.status == 200 && got.forwarded == 1;
        if !ok {
            self.fail(provider, what, &got, "200, forwarded once");
        }
        ok
    }

    /// A replay must be 401 `replay` and never reach the backend.
    async fn expect_replay(&mut self, provider: &str, what: &str, call: &Call) {
        let got = self.send(call).await;
        if !(got.status == 401 && got.error == "replay" && got.forwarded == 0) {
            self.fail(provider, what, &got, "401 \"replay\", not forwarded");
        }
    }

    /// Refused either way (a replay, or a signature the verifier does not accept), never forwarded.
    async fn expect_refused(&mut self, provider: &str, what: &str, call: &Call) {
        let got = self.send(call).await;
        let refused = got.status == 401 && (got.error == "replay" || got.error == "signature_invalid");
        if !(refused && got.forwarded == 0) {
            self.fail(provider, what, &got, "401 \"replay\" (or \"signature_invalid\"), not forwarded");
        }
    }

    /// For each spelling k of a fresh callback: k is forwarded, then every other spelling and
    /// k itself again are replays. `fresh` builds every spelling of one new callback, in the
    /// same order each time. `replay_only` spellings (same callback) are checked after each
    /// accepted k but never sent first (see their callers for why).
    async fn matrix(&mut self, provider: &str, fresh: impl Fn() -> (Vec<Spelling>, Vec<Spelling>)) {
        let count = fresh().0.len();
        for k in 0..count {
            let (spellings, replay_only) = fresh();
            assert_eq!(spellings.len(), count, "{provider}: spelling list changed length");
            let first = &spellings[k];
            if !self.expect_forwarded(provider, &format!("fresh callback spelled `{}`", first.name), &first.call).await
            {
                continue;
            }
            let others = spellings.iter().enumerate().filter(|(j, _)| *j != k).map(|(_, s)| s);
            for other in others.chain(std::iter::once(first)) {
                let what = format!("`{}` after `{}` was accepted", other.name, first.name);
                self.expect_replay(provider, &what, &other.call).await;
            }
            for other in &replay_only {
                let what = format!("`{}` after `{}` was accepted", other.name, first.name);
                self.expect_refused(provider, &what, &other.call).await;
            }
        }
    }

    async fn finish(self) {
        let Env { proxy, failures, store, .. } = self;
        proxy.stop().await;
        assert!(failures.is_empty(), "[{store:?}] {} expectation(s) failed:\n{}", failures.len(), failures.join("\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// Stripe: `Stripe-Signature: t=…,v1=…`; only one v1 has to verify, v0 and unknown schemes are
// ignored.

fn stripe_spellings() -> (Vec<Spelling>, Vec<Spelling>) {
    let k = keys();
    let id = fresh_id();
    let body = format!("{{\"id\":\"evt_{id}\",\"object\":\"event\",\"type\":\"payment_intent.succeeded\"}}");
    let t = now().to_string();
    let sign = |secret: &str| hex::encode(hmac_sha256(secret.as_bytes(), &[t.as_bytes(), b".", body.as_bytes()]));
    let s = sign(&k.stripe[0]);
    let s2 = sign(&k.stripe[1]);
    let junk = hex::encode(random_bytes(32));
    let v0 = hex::encode(random_bytes(32));
    let call = |header: String| {
        Call::new("/wh/stripe", &[("content-type", "application/json"), ("stripe-signature", &header)], body.clone())
    };
    let list = vec![
        spelling("t=T,v1=S", call(format!("t={t},v1={s}"))),
        spelling("t=T,v1=S,v1=S", call(format!("t={t},v1={s},v1={s}"))),
        spelling("t=T,v1=S,v1=<junk hex>", call(format!("t={t},v1={s},v1={junk}"))),
        spelling("t=T,v1=<junk hex>,v1=S", call(format!("t={t},v1={junk},v1={s}"))),
        spelling("v1=S,t=T", call(format!("v1={s},t={t}"))),
        spelling("t=T,v1=S,v0=<hex>", call(format!("t={t},v1={s},v0={v0}"))),
        spelling("t=T,v1=S2 (second secret)", call(format!("t={t},v1={s2}"))),
        spelling("t=T,v1=S,v1=S2", call(format!("t={t},v1={s},v1={s2}"))),
        // A v1 the parser skips (uppercase hex) and an unknown scheme.
        spelling("t=T,v1=S,v1=<JUNK HEX uppercase>", call(format!("t={t},v1={s},v1={}", junk.to_uppercase()))),
        spelling("t=T,v1=S,v9=x", call(format!("t={t},v1={s},v9=x"))),
    ];
    (list, Vec::new())
}

async fn stripe(store: Store) {
    let mut env = env(store).await;
    env.matrix("stripe", stripe_spellings).await;
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Standard Webhooks: `webhook-id/-timestamp/-signature` or the `svix-*` trio; a space-separated
// list of `v1,<base64>` of which one has to verify.

fn standard_webhooks_spellings() -> (Vec<Spelling>, Vec<Spelling>) {
    let k = keys();
    let id = format!("msg_{}", fresh_id());
    let ts = now().to_string();
    let body = format!("{{\"type\":\"invoice.paid\",\"data\":{{\"id\":\"{id}\"}}}}");
    let sign = |key: &[u8]| b64(&hmac_sha256(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()]));
    let s = sign(&k.whsec[0].1);
    let s2 = sign(&k.whsec[1].1);
    let junk = b64(&random_bytes(32));
    let mut list = Vec::new();
    for prefix in ["webhook", "svix"] {
        let call = |sigs: String| {
            Call::new(
                "/wh/standard-webhooks",
                &[
                    ("content-type", "application/json"),
                    (&format!("{prefix}-id"), &id),
                    (&format!("{prefix}-timestamp"), &ts),
                    (&format!("{prefix}-signature"), &sigs),
                ],
                body.clone(),
            )
        };
        list.push(spelling(format!("{prefix}-*: v1,S"), call(format!("v1,{s}"))));
        list.push(spelling(format!("{prefix}-*: v1,S v1,S"), call(format!("v1,{s} v1,{s}"))));
        list.push(spelling(format!("{prefix}-*: v1,<junk b64> v1,S"), call(format!("v1,{junk} v1,{s}"))));
        list.push(spelling(format!("{prefix}-*: v1,S2 (second secret)"), call(format!("v1,{s2}"))));
        list.push(spelling(format!("{prefix}-*: v1,S v1,S2"), call(format!("v1,{s} v1,{s2}"))));
    }
    (list, Vec::new())
}

async fn standard_webhooks(store: Store) {
    let mut env = env(store).await;
    env.matrix("standard-webhooks", standard_webhooks_spellings).await;
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Adyen: every notification item's `hmacSignature` over its 8 signed fields, or the
// `HmacSignature` header over the raw body.

/// The signed fields of one notification item.
struct AdyenItem {
    psp: String,
    merchant_ref: String,
    value: i64,
}

impl AdyenItem {
    fn fresh() -> AdyenItem {
        let id = fresh_id();
        AdyenItem { psp: format!("PSP{id}"), merchant_ref: format!("order-{id}"), value: 1130 }
    }

    /// pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success
    fn sign(&self, key: usize) -> String {
        let data = format!("{}::PayguardShop:{}:{}:EUR:AUTHORISATION:true", self.psp, self.merchant_ref, self.value);
        b64(&hmac_sha256(&keys().adyen[key].1, &[data.as_bytes()]))
    }

    /// The item as compact JSON.
    fn json(&self, sig: &str) -> String {
        format!(
            r#"{{"NotificationRequestItem":{{"additionalData":{{"hmacSignature":"{sig}"}},"amount":{{"currency":"EUR","value":{}}},"eventCode":"AUTHORISATION","merchantAccountCode":"PayguardShop","merchantReference":"{}","pspReference":"{}","success":"true"}}}}"#,
            self.value, self.merchant_ref, self.psp
        )
    }

    /// The same item reformatted: other key order, whitespace and line breaks.
    fn json_pretty(&self, sig: &str) -> String {
        format!(
            "{{\n    \"NotificationRequestItem\" : {{\n      \"success\" : \"true\",\n      \"pspReference\" : \"{}\",\n      \"merchantReference\" : \"{}\",\n      \"merchantAccountCode\" : \"PayguardShop\",\n      \"eventCode\" : \"AUTHORISATION\",\n      \"amount\" : {{ \"value\" : {}, \"currency\" : \"EUR\" }},\n      \"additionalData\" : {{ \"hmacSignature\" : \"{sig}\" }}\n    }}\n  }}",
            self.psp, self.merchant_ref, self.value
        )
    }

    /// The same signed values with other JSON types: `success` a boolean, `amount.value` a string.
    fn json_typed(&self, sig: &str) -> String {
        format!(
            r#"{{"NotificationRequestItem":{{"additionalData":{{"hmacSignature":"{sig}"}},"amount":{{"currency":"EUR","value":"{}"}},"eventCode":"AUTHORISATION","merchantAccountCode":"PayguardShop","merchantReference":"{}","pspReference":"{}","success":true}}}}"#,
            self.value, self.merchant_ref, self.psp
        )
    }

    /// The same signed values with unsigned fields added (eventDate, reason, more additionalData).
    fn json_unsigned_extras(&self, sig: &str) -> String {
        format!(
            r#"{{"NotificationRequestItem":{{"additionalData":{{"authCode":"058705","hmacSignature":"{sig}"}},"amount":{{"currency":"EUR","value":{}}},"eventCode":"AUTHORISATION","eventDate":"2024-01-01T12:00:00+01:00","merchantAccountCode":"PayguardShop","merchantReference":"{}","pspReference":"{}","reason":"058705:1111:03/2030","success":"true"}}}}"#,
            self.value, self.merchant_ref, self.psp
        )
    }
}

fn adyen_body(items: &[String]) -> String {
    format!("{{\"live\":\"false\",\"notificationItems\":[{}]}}", items.join(","))
}

fn adyen_body_pretty(items: &[String]) -> String {
    format!("{{\n  \"notificationItems\" : [ {} ],\n  \"live\" : \"false\"\n}}\n", items.join(", "))
}

/// The signature string with its first character written as a JSON `\u00XX` escape.
fn json_escaped_first_char(sig: &str) -> String {
    let first = sig.as_bytes()[0];
    format!("\\u{:04x}{}", first, &sig[1..])
}

fn adyen_call(body: String) -> Call {
    Call::new("/wh/adyen", &[("content-type", "application/json")], body)
}

fn adyen_item_spellings() -> (Vec<Spelling>, Vec<Spelling>) {
    let a = AdyenItem::fresh();
    let s = a.sign(0);
    let s2 = a.sign(1);
    let list = vec![
        spelling("[A] compact JSON", adyen_call(adyen_body(&[a.json(&s)]))),
        spelling("[A] reformatted JSON (whitespace, key order)", adyen_call(adyen_body_pretty(&[a.json_pretty(&s)]))),
        spelling(
            "[A] hmacSignature with a JSON \\u escape",
            adyen_call(adyen_body(&[a.json(&json_escaped_first_char(&s))])),
        ),
        spelling("[A] success as JSON true, amount.value as a string", adyen_call(adyen_body(&[a.json_typed(&s)]))),
        spelling("[A] unsigned fields added", adyen_call(adyen_body(&[a.json_unsigned_extras(&s)]))),
        spelling("[A] signed with hmac_keys[1]", adyen_call(adyen_body(&[a.json(&s2)]))),
    ];
    (list, Vec::new())
}

async fn adyen_items(store: Store) {
    let mut env = env(store).await;
    env.matrix("adyen-hmac", adyen_item_spellings).await;
    env.finish().await;
}

/// An item accepted once is spent in any batch; a refused batch consumes nothing.
async fn adyen_batches(store: Store) {
    let mut env = env(store).await;
    let p = "adyen-hmac batch";
    let (a, b) = (AdyenItem::fresh(), AdyenItem::fresh());
    let (sa, sa2, sb) = (a.sign(0), a.sign(1), b.sign(0));
    if env.expect_forwarded(p, "fresh [A]", &adyen_call(adyen_body(&[a.json(&sa)]))).await {
        env.expect_replay(p, "[A, A] after [A] was accepted", &adyen_call(adyen_body(&[a.json(&sa), a.json(&sa)])))
            .await;
        env.expect_replay(
            p,
            "[A, A signed with hmac_keys[1]] after [A] was accepted",
            &adyen_call(adyen_body(&[a.json(&sa), a.json(&sa2)])),
        )
        .await;
        env.expect_replay(
            p,
            "[B, A] (B fresh) after [A] was accepted",
            &adyen_call(adyen_body(&[b.json(&sb), a.json(&sa)])),
        )
        .await;
        env.expect_replay(
            p,
            "[A, B] (B fresh) after [A] was accepted",
            &adyen_call(adyen_body(&[a.json(&sa), b.json(&sb)])),
        )
        .await;
        // All or nothing: the refused batches reserved nothing, so B alone is still new.
        if env
            .expect_forwarded(
                p,
                "[B] alone after [B, A] and [A, B] were refused",
                &adyen_call(adyen_body(&[b.json(&sb)])),
            )
            .await
        {
            env.expect_replay(p, "[B] again after [B] was accepted", &adyen_call(adyen_body(&[b.json(&sb)]))).await;
        }
    }

    // Every item of an accepted batch is spent, alone or in any order.
    let (c, d) = (AdyenItem::fresh(), AdyenItem::fresh());
    let (sc, sd, sd2) = (c.sign(0), d.sign(0), d.sign(1));
    if env.expect_forwarded(p, "fresh [C, D]", &adyen_call(adyen_body(&[c.json(&sc), d.json(&sd)]))).await {
        env.expect_replay(p, "[C] after [C, D] was accepted", &adyen_call(adyen_body(&[c.json(&sc)]))).await;
        env.expect_replay(p, "[D] after [C, D] was accepted", &adyen_call(adyen_body(&[d.json(&sd)]))).await;
        env.expect_replay(
            p,
            "[D signed with hmac_keys[1]] after [C, D] was accepted",
            &adyen_call(adyen_body(&[d.json(&sd2)])),
        )
        .await;
        env.expect_replay(
            p,
            "[D, C] reformatted after [C, D] was accepted",
            &adyen_call(adyen_body_pretty(&[d.json_pretty(&sd), c.json_pretty(&sc)])),
        )
        .await;
        env.expect_replay(
            p,
            "[C, D] again after [C, D] was accepted",
            &adyen_call(adyen_body(&[c.json(&sc), d.json(&sd)])),
        )
        .await;
    }
    env.finish().await;
}

/// The `HmacSignature` header mode: HMAC over the raw body.
fn adyen_header_spellings() -> (Vec<Spelling>, Vec<Spelling>) {
    let k = keys();
    let id = fresh_id();
    let body = format!(
        "{{\"data\":{{\"balancePlatform\":\"PayguardPlatform\",\"id\":\"AH{id}\"}},\"environment\":\"test\",\"type\":\"balancePlatform.accountHolder.created\"}}"
    );
    let sign = |key: &[u8]| b64(&hmac_sha256(key, &[body.as_bytes()]));
    let call = |sig: &str| {
        Call::new("/wh/adyen", &[("content-type", "application/json"), ("hmacsignature", sig)], body.clone())
    };
    let s = sign(&k.adyen[0].1);
    let list = vec![
        spelling("HmacSignature under hmac_keys[0]", call(&s)),
        spelling("HmacSignature under hmac_keys[1]", call(&sign(&k.adyen[1].1))),
        spelling("HmacSignature with surrounding whitespace", call(&format!("  {s}\t"))),
    ];
    (list, Vec::new())
}

async fn adyen_header(store: Store) {
    let mut env = env(store).await;
    env.matrix("adyen-hmac HmacSignature header", adyen_header_spellings).await;
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// WeChat Pay v3: RSA-SHA256 over `ts\nnonce\nbody\n`, key chosen by `Wechatpay-Serial`.

fn wechatpay_spellings() -> (Vec<Spelling>, Vec<Spelling>) {
    let k = keys();
    let nonce = format!("N{}", fresh_id());
    let ts = now().to_string();
    let body = format!(
        "{{\"id\":\"EV-{nonce}\",\"create_time\":\"2024-01-01T12:00:00+08:00\",\"event_type\":\"TRANSACTION.SUCCESS\",\"resource_type\":\"encrypt-resource\"}}"
    );
    let msg = format!("{ts}\n{nonce}\n{body}\n");
    let sig_a = k.rsa[0].sign_b64(msg.as_bytes());
    let sig_b = k.rsa[1].sign_b64(msg.as_bytes());
    let call = |serial: &str, sig: &str, ts: &str, nonce: &str| {
        Call::new(
            "/wh/wechatpay",
            &[
                ("content-type", "application/json"),
                ("wechatpay-serial", serial),
                ("wechatpay-signature", sig),
                ("wechatpay-timestamp", ts),
                ("wechatpay-nonce", nonce),
            ],
            body.clone(),
        )
    };
    let ws = |v: &str| format!(" \t{v}  ");
    let list = vec![
        spelling("serial PUB_KEY_ID, signed with its key", call(WECHAT_PUB_KEY_ID, &sig_a, &ts, &nonce)),
        spelling("platform certificate serial, signed with its key", call(WECHAT_CERT_SERIAL, &sig_b, &ts, &nonce)),
        spelling(
            "header values with surrounding whitespace",
            call(&ws(WECHAT_PUB_KEY_ID), &ws(&sig_a), &ws(&ts), &ws(&nonce)),
        ),
    ];
    (list, Vec::new())
}

async fn wechatpay(store: Store) {
    let mut env = env(store).await;
    env.matrix("wechatpay-v3", wechatpay_spellings).await;
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Alipay RSA2: form body; drop sign/sign_type; decode once; sort; `k=v&…` (empty values kept).

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn join_pairs(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

fn alipay_spellings() -> (Vec<Spelling>, Vec<Spelling>) {
    let k = keys();
    let id = fresh_id();
    // Decoded fields in the order Alipay sends them. `subject` has an `A` and spaces;
    // `passback_params` is empty (signed as `passback_params=`).
    let fields: Vec<(&str, String)> = vec![
        ("gmt_create", "2024-01-01 12:00:00".into()),
        ("charset", "utf-8".into()),
        ("seller_email", "shop@example.com".into()),
        ("subject", "A box of tea".into()),
        ("buyer_id", "2088102000000000".into()),
        ("passback_params", String::new()),
        ("notify_id", format!("2024010100222{id}")),
        ("notify_type", "trade_status_sync".into()),
        ("total_amount", "88.88".into()),
        ("trade_status", "TRADE_SUCCESS".into()),
        ("trade_no", format!("2024010122001{id}")),
        ("auth_app_id", "2021000000000000".into()),
        ("app_id", "2021000000000000".into()),
        ("out_trade_no", format!("order_{id}")),
        ("notify_time", "2024-01-01 12:00:01".into()),
        ("version", "1.0".into()),
    ];
    let mut sorted: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    sorted.sort();
    let sign = k.rsa[0].sign_b64(sorted.join("&").as_bytes());
    assert!(sign.ends_with("=="), "a 2048-bit signature in base64 ends with ==");

    let encoded: Vec<(String, String)> = fields.iter().map(|(k, v)| (enc(k), enc(v))).collect();
    let with_sign = |mut pairs: Vec<(String, String)>, sign_value: String, sign_type: bool| {
        pairs.push(("sign".into(), sign_value));
        if sign_type {
            pairs.push(("sign_type".into(), "RSA2".into()));
        }
        pairs
    };
    let canonical = with_sign(encoded.clone(), enc(&sign), true);
    let body = |pairs: &[(String, String)]| join_pairs(pairs);
    let call = |text: String| {
        Call::new("/wh/alipay", &[("content-type", "application/x-www-form-urlencoded; charset=utf-8")], text)
    };
    let map_value = |name: &str, f: &dyn Fn(&str) -> String| -> Vec<(String, String)> {
        canonical.iter().map(|(k, v)| (k.clone(), if k == name { f(v) } else { v.clone() })).collect()
    };

    let mut reordered = canonical.clone();
    reordered.reverse();
    let percent_a = map_value("subject", &|_| "%41+box+of+tea".into());
    let percent_20 = map_value("subject", &|v| v.replace('+', "%20"));
    let no_sign_type = with_sign(encoded.clone(), enc(&sign), false);
    let lower_escapes = map_value("sign", &|v| v.replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d"));
    // `/` and `=` need no escape in a form value (`+` does: it would decode to a space).
    let raw_sign = map_value("sign", &|_| sign.replace('+', "%2B"));
    let bare_empty: String = canonical
        .iter()
        .map(|(k, v)| if k == "passback_params" { k.clone() } else { format!("{k}={v}") })
        .collect::<Vec<_>>()
        .join("&");
    let extra_ampersands =
        format!("&{}&&", canonical.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&&"));
    let escaped_key: Vec<(String, String)> = canonical
        .iter()
        .map(|(k, v)| (if k == "notify_id" { "%6Eotify_id".into() } else { k.clone() }, v.clone()))
        .collect();

    let list = vec![
        spelling("canonical, sign_type=RSA2", call(body(&canonical))),
        spelling("parameters reordered", call(body(&reordered))),
        spelling("`%41` for `A` in subject", call(body(&percent_a))),
        spelling("`%20` instead of `+` for spaces", call(body(&percent_20))),
        spelling("sign_type absent", call(body(&no_sign_type))),
        spelling("lowercase percent escapes in sign", call(body(&lower_escapes))),
        spelling("`/` and `=` of sign unescaped", call(body(&raw_sign))),
        spelling("empty value written as a bare key (`passback_params`)", call(bare_empty)),
        spelling("empty `&` separators", call(extra_ampersands)),
        spelling("percent-encoded key name (`%6Eotify_id`)", call(body(&escaped_key))),
    ];
    // An extra pair with an empty key is dropped from the signed content (as the SDK does),
    // so it is unsigned bytes the verifier accepts today. Checked only as a replay (refused
    // either way), so that refusing it as signature_invalid later stays a valid fix.
    let empty_key = format!("{}&=unsigned", body(&canonical));
    (list, vec![spelling("an extra empty-key pair `=unsigned`", call(empty_key))])
}

async fn alipay(store: Store) {
    let mut env = env(store).await;
    env.matrix("alipay-rsa2", alipay_spellings).await;
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// PayPal: RSA-SHA256 over `id|time|webhook_id|crc32(body)` with the certificate pinned for
// `PAYPAL-CERT-URL`.

/// Unix seconds as RFC 3339 UTC (`2024-01-01T12:00:00Z`), H. Hinnant's `civil_from_days`.
fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Four bytes which, appended to `body`, give the result the CRC-32 `target`. CRC-32 is affine
/// over GF(2) in the appended bits, so this is a 32x32 linear system.
fn crc32_forcing_suffix(body: &[u8], target: u32) -> [u8; 4] {
    let crc_with = |x: u32| {
        let mut d = body.to_vec();
        d.extend_from_slice(&x.to_le_bytes());
        crc32fast::hash(&d)
    };
    let base = crc_with(0);
    // Basis of (image, combination of suffix bits, pivot bit), each reduced by the earlier ones.
    let mut basis: Vec<(u32, u32, u32)> = Vec::new();
    for i in 0..32 {
        let (mut v, mut c) = (crc_with(1 << i) ^ base, 1u32 << i);
        for (bv, bc, pivot) in &basis {
            if v & (1 << pivot) != 0 {
                v ^= bv;
                c ^= bc;
            }
        }
        if v != 0 {
            basis.push((v, c, 31 - v.leading_zeros()));
        }
    }
    let (mut t, mut x) = (target ^ base, 0u32);
    for (bv, bc, pivot) in &basis {
        if t & (1 << pivot) != 0 {
            t ^= bv;
            x ^= bc;
        }
    }
    assert_eq!(crc_with(x), target, "CRC-32 forcing failed");
    x.to_le_bytes()
}

fn paypal_spellings() -> (Vec<Spelling>, Vec<Spelling>) {
    let k = keys();
    let id = fresh_id();
    let tid = format!("d938e770-8046-11e6-{id}");
    let time = rfc3339(now());
    let body = format!("{{\"id\":\"WH-{id}\",\"event_type\":\"PAYMENT.CAPTURE.COMPLETED\",\"resource\":{{\"amount\":{{\"value\":\"10.00\"}}}}}}");
    let crc = crc32fast::hash(body.as_bytes());
    let msg = format!("{tid}|{time}|{PAYPAL_WEBHOOK_ID}|{crc}");
    let sig_a = k.rsa[0].sign_b64(msg.as_bytes());
    let sig_b = k.rsa[1].sign_b64(msg.as_bytes());
    let call = |tid: &str, time: &str, sig: &str, url: &str, algo: &str, body: Vec<u8>| {
        Call::new(
            "/wh/paypal",
            &[
                ("content-type", "application/json"),
                ("paypal-transmission-id", tid),
                ("paypal-transmission-time", time),
                ("paypal-transmission-sig", sig),
                ("paypal-cert-url", url),
                ("paypal-auth-algo", algo),
            ],
            body,
        )
    };
    let ws = |v: &str| format!("  {v} ");
    let list = vec![
        spelling("certificate A", call(&tid, &time, &sig_a, PAYPAL_CERT_A, "SHA256withRSA", body.clone().into())),
        spelling(
            "certificate B (the other pinned URL)",
            call(&tid, &time, &sig_b, PAYPAL_CERT_B, "SHA256withRSA", body.clone().into()),
        ),
        spelling(
            "header values with surrounding whitespace",
            call(&ws(&tid), &ws(&time), &ws(&sig_a), &ws(PAYPAL_CERT_A), &ws("SHA256withRSA"), body.clone().into()),
        ),
    ];
    // PayPal signs only the CRC-32 of the body: a body changed with its CRC-32 kept still
    // verifies. Checked only as a replay (refused either way).
    let mut forged = body.clone().into_bytes();
    forged.extend_from_slice(b" {\"amount\":\"99999.00\"}");
    let suffix = crc32_forcing_suffix(&forged, crc);
    forged.extend_from_slice(&suffix);
    let replay_only =
        vec![spelling("body changed, CRC-32 kept", call(&tid, &time, &sig_a, PAYPAL_CERT_A, "SHA256withRSA", forged))];
    (list, replay_only)
}

async fn paypal(store: Store) {
    let mut env = env(store).await;
    env.matrix("paypal", paypal_spellings).await;
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Generic HMAC: GitHub-style `x-hub-signature-256: sha256=<hex>` over the body, and a template
// route with a signed nonce and timestamp.

fn github_spellings() -> (Vec<Spelling>, Vec<Spelling>) {
    let k = keys();
    let id = fresh_id();
    let body = format!("{{\"action\":\"completed\",\"check_run\":{{\"id\":\"{id}\"}}}}");
    let sign = |secret: &str| format!("sha256={}", hex::encode(hmac_sha256(secret.as_bytes(), &[body.as_bytes()])));
    let call = |sig: &str| {
        Call::new("/wh/github", &[("content-type", "application/json"), ("x-hub-signature-256", sig)], body.clone())
    };
    let s = sign(&k.hmac[0]);
    let list = vec![
        spelling("sha256=<hex> under secrets[0]", call(&s)),
        spelling("sha256=<hex> under secrets[1]", call(&sign(&k.hmac[1]))),
        spelling("header value with surrounding whitespace", call(&format!("\t{s}  "))),
    ];
    (list, Vec::new())
}

async fn github(store: Store) {
    let mut env = env(store).await;
    env.matrix("hmac (GitHub-style)", github_spellings).await;
    env.finish().await;
}

fn hmac_template_spellings() -> (Vec<Spelling>, Vec<Spelling>) {
    let k = keys();
    let nonce = format!("n-{}", fresh_id());
    let ts = now().to_string();
    let body = format!("{{\"order\":\"{nonce}\",\"amount\":100}}");
    let msg = format!("POST\n/wh/hmac-template\n\n{ts}\n{nonce}\n{body}");
    let sign = |secret: &str| hex::encode(hmac_sha256(secret.as_bytes(), &[msg.as_bytes()]));
    let call = |sig: &str, ts: &str, nonce: &str| {
        Call::new(
            "/wh/hmac-template",
            &[("content-type", "application/json"), ("x-signature", sig), ("x-timestamp", ts), ("x-nonce", nonce)],
            body.clone(),
        )
    };
    let s = sign(&k.hmac[0]);
    let ws = |v: &str| format!(" {v}\t");
    let list = vec![
        spelling("under secrets[0]", call(&s, &ts, &nonce)),
        spelling("same nonce under secrets[1]", call(&sign(&k.hmac[1]), &ts, &nonce)),
        spelling("header values with surrounding whitespace", call(&ws(&s), &ws(&ts), &ws(&nonce))),
    ];
    (list, Vec::new())
}

async fn hmac_template(store: Store) {
    let mut env = env(store).await;
    env.matrix("hmac (template, nonce)", hmac_template_spellings).await;
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------

/// One test per (provider, store): `stripe::memory`, `stripe::redis`, ...
macro_rules! per_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn memory() {
                super::$name(super::Store::Memory).await;
            }
            #[tokio::test]
            async fn redis() {
                super::$name(super::Store::Redis).await;
            }
        }
    )*};
}

per_store!(
    stripe,
    standard_webhooks,
    adyen_items,
    adyen_batches,
    adyen_header,
    wechatpay,
    alipay,
    paypal,
    github,
    hmac_template
);
