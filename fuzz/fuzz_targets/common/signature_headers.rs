//! Provider signature verification (`payguard::signature`): every provider's header
//! and body parsing, key lookup, signature check, timestamp check and replay key, over
//! arbitrary requests.
//!
//! Verifiers are built once, through the public `build` + a `SecretResolver` that hands out
//! fixed test secrets; RSA/Ed25519 keys are generated at startup (nothing secret is stored in
//! the corpus or the repository).
//!
//! Input layout: a fixed 12-byte [`Knobs`] block (decoded with `arbitrary`), then the text
//! format of `common/mod.rs` whose first line is the request target (`/path?query`; the method
//! comes from the knobs), then header lines, an empty line and the body.
//!
//! With the knobs' `sign` flag the harness *signs* the fuzzed request itself (keys are known
//! here), so the code after the signature check (timestamp tolerance, WeChat Pay `resource`
//! decryption, Alipay `app_id`/`notify_id`/`notify_time`, Adyen batches, replay keys) is reached.
//!
//! Oracles, beyond "no panic":
//! - without `sign`, `verify` must never succeed: the fuzzer does not know any key, so `Ok` is
//!   a forged signature;
//! - an accepted request has a non-empty replay key, and a signed timestamp within the
//!   verifier's tolerance of the clock.
use std::path::Path;
use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method};
use payguard::signature::{build, SecretResolver, Signature, SignatureTable, SignedRequest};

// ---------------------------------------------------------------------------------------
// Fixed test material. These are throw-away values for fuzzing, not credentials.

const S1: &[u8] = b"fuzz-secret-one-not-a-real-secret";
const S2: &[u8] = b"fuzz-secret-two-not-a-real-secret";
/// Standard Webhooks secrets are `whsec_` + base64 of the key bytes.
const SW_KEY_1: &[u8] = b"fuzz-standard-webhooks-key-1";
const SW_KEY_2: &[u8] = b"fuzz-standard-webhooks-key-2";
/// Adyen keys are hex.
const ADYEN_KEY_1: &[u8] = b"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const ADYEN_KEY_2: &[u8] = b"FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100";
const APIV3: &[u8; 32] = b"fuzz-apiv3-key-32-bytes-long-xyz";

const PUB_ID: &str = "PUB_KEY_ID_0114000000000000000000000000";
const CERT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const URL_A: &str = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77";
const URL_B: &str = "https://api.paypal.com/v1/notifications/certs/CERT-next";
const WEBHOOK_ID: &str = "9XL90610J3647323C";
const DEFAULT_TS: &str = "1700000000";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign().as_ref().to_vec()
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = b64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

struct Rsa(RsaKeyPair);

impl Rsa {
    fn generate() -> Self {
        Rsa(RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa keygen"))
    }
    fn sign(&self, msg: &[u8]) -> String {
        let mut sig = vec![0; self.0.public_modulus_len()];
        self.0.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig).expect("rsa sign");
        b64(&sig)
    }
    fn spki_pem(&self) -> String {
        pem("PUBLIC KEY", self.0.public_key().as_der().expect("spki").as_ref())
    }
    fn cert_pem(&self, serial: &[u8]) -> String {
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&self.0).expect("pkcs8");
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256).expect("rcgen key");
        let mut params = rcgen::CertificateParams::new(vec!["payguard.fuzz".into()]).expect("params");
        params.serial_number = Some(rcgen::SerialNumber::from(serial.to_vec()));
        params.self_signed(&key).expect("self-signed").pem()
    }
}

/// Hands out the fixed secrets above for `env:NAME` specs.
struct FuzzSecrets;

impl SecretResolver for FuzzSecrets {
    fn resolve(&self, spec: &str, _base_dir: &Path) -> Result<Vec<u8>, String> {
        let bytes: Vec<u8> = match spec {
            "env:S1" => S1.to_vec(),
            "env:S2" => S2.to_vec(),
            "env:SW1" => format!("whsec_{}", b64(SW_KEY_1)).into_bytes(),
            "env:SW2" => format!("whsec_{}", b64(SW_KEY_2)).into_bytes(),
            "env:ADYEN1" => ADYEN_KEY_1.to_vec(),
            "env:ADYEN2" => ADYEN_KEY_2.to_vec(),
            "env:APIV3" => APIV3.to_vec(),
            _ => return Err(format!("{spec} is not a fuzz secret")),
        };
        Ok(bytes)
    }
}

// ---------------------------------------------------------------------------------------
// Verifiers.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    WechatPay { apiv3: bool },
    Alipay,
    Stripe,
    StandardWebhooks,
    Adyen,
    Paypal,
    HmacGithub,
    HmacClient,
    HmacSlack,
}

struct Fixture {
    verifiers: Vec<(Kind, Arc<Signature>)>,
    rsa_a: Rsa,
    rsa_b: Rsa,
    ed: Ed25519KeyPair,
    apiv3: LessSafeKey,
}

const WECHAT_HEADERS: &[&str] = &["wechatpay-signature", "wechatpay-serial", "wechatpay-timestamp", "wechatpay-nonce"];
const STRIPE_HEADERS: &[&str] = &["stripe-signature"];
const SW_HEADERS: &[&str] =
    &["webhook-id", "webhook-timestamp", "webhook-signature", "svix-id", "svix-timestamp", "svix-signature"];
const ADYEN_HEADERS: &[&str] = &["hmacsignature"];
const PAYPAL_HEADERS: &[&str] = &[
    "paypal-transmission-id",
    "paypal-transmission-time",
    "paypal-transmission-sig",
    "paypal-cert-url",
    "paypal-auth-algo",
];
const GITHUB_HEADERS: &[&str] = &["x-hub-signature-256"];
const CLIENT_HEADERS: &[&str] = &["x-signature", "x-timestamp", "x-nonce", "x-key-id"];
const SLACK_HEADERS: &[&str] = &["x-slack-signature", "x-slack-request-timestamp"];
const NO_HEADERS: &[&str] = &[];

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rsa_a = Rsa::generate();
        let rsa_b = Rsa::generate();
        let ed = Ed25519KeyPair::generate().expect("ed25519");
        let serial = hex::decode(CERT_SERIAL).expect("serial");
        let whpk = format!("whpk_{}", b64(ed.public_key().as_ref()));
        let wechat = |extra: &str| {
            format!(
                "provider = \"wechatpay-v3\"\ntolerance = \"5m\"\n{extra}\n[public_keys]\n\"{PUB_ID}\" = '''\n{}'''\n\"{CERT_SERIAL}\" = '''\n{}'''\n",
                rsa_a.spki_pem(),
                rsa_b.cert_pem(&serial)
            )
        };
        let configs: Vec<(Kind, String, &'static [&'static str])> = vec![
            (Kind::WechatPay { apiv3: true }, wechat("apiv3_key = \"env:APIV3\""), WECHAT_HEADERS),
            (Kind::WechatPay { apiv3: false }, wechat(""), WECHAT_HEADERS),
            (
                Kind::Alipay,
                format!(
                    "provider = \"alipay-rsa2\"\napp_id = \"2014072300007148\"\ntolerance = \"10m\"\npublic_key = '''\n{}'''\n",
                    rsa_a.spki_pem()
                ),
                NO_HEADERS,
            ),
            (
                Kind::Alipay,
                format!("provider = \"alipay-rsa2\"\npublic_key = '''\n{}'''\n", rsa_a.spki_pem()),
                NO_HEADERS,
            ),
            (
                Kind::Stripe,
                "provider = \"stripe\"\ntolerance = \"5m\"\nsecrets = [\"env:S1\", \"env:S2\"]".into(),
                STRIPE_HEADERS,
            ),
            (
                Kind::StandardWebhooks,
                format!(
                    "provider = \"standard-webhooks\"\ntolerance = \"5m\"\nsecrets = [\"env:SW1\", \"env:SW2\"]\npublic_keys = [\"{whpk}\"]"
                ),
                SW_HEADERS,
            ),
            (Kind::Adyen, "provider = \"adyen-hmac\"\nhmac_keys = [\"env:ADYEN1\", \"env:ADYEN2\"]".into(), ADYEN_HEADERS),
            (
                Kind::Paypal,
                format!(
                    "provider = \"paypal\"\nwebhook_id = \"{WEBHOOK_ID}\"\ntolerance = \"5m\"\n[certs]\n\"{URL_A}\" = '''\n{}'''\n\"{URL_B}\" = '''\n{}'''\n",
                    rsa_a.cert_pem(&[1]),
                    rsa_b.cert_pem(&[2])
                ),
                PAYPAL_HEADERS,
            ),
            (Kind::HmacGithub, "provider = \"hmac\"\nsecrets = [\"env:S1\", \"env:S2\"]".into(), GITHUB_HEADERS),
            (
                Kind::HmacClient,
                r#"
                provider = "hmac"
                header = "x-signature"
                prefix = ""
                encoding = "base64"
                timestamp_header = "x-timestamp"
                nonce_header = "x-nonce"
                key_id_header = "x-key-id"
                message = "{method}\n{path}\n{query}\n{timestamp}\n{nonce}\n{body}"
                tolerance = "300250ms"
                keys = { "client-2024" = "env:S1", "client-2025" = "env:S2" }
                "#
                .into(),
                CLIENT_HEADERS,
            ),
            (
                Kind::HmacSlack,
                r#"
                provider = "hmac"
                header = "x-slack-signature"
                prefix = "v0="
                timestamp_header = "x-slack-request-timestamp"
                message = "v0:{timestamp}:{body}"
                tolerance = "5m"
                secrets = ["env:S1"]
                "#
                .into(),
                SLACK_HEADERS,
            ),
        ];
        let verifiers = configs
            .into_iter()
            .map(|(kind, text, _names)| {
                let table: SignatureTable = toml::from_str(&text).expect("fixture toml");
                match build(&table, Path::new("/nonexistent"), &FuzzSecrets) {
                    Ok(v) => (kind, v),
                    Err(p) => panic!("fixture verifier {kind:?} does not build: {p:?}"),
                }
            })
            .collect();
        let apiv3 = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, APIV3).expect("aes key"));
        Fixture { verifiers, rsa_a, rsa_b, ed, apiv3 }
    })
}

// ---------------------------------------------------------------------------------------
// Input.

/// Fixed-size knobs (12 bytes), decoded with `arbitrary`.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Knobs {
    /// Which verifier (modulo the number of verifiers).
    verifier: u8,
    /// bit 0: sign the request; bit 1: Standard Webhooks uses `svix-*` names; bit 2: sign with
    /// the asymmetric / second key variant; bit 3: WeChat Pay: encrypt `resource`; bit 4:
    /// Standard Webhooks signs with the second secret.
    flags: u8,
    /// bit 0 clear: `now` is an offset (`i16`) from the request's timestamp; set: absolute.
    now_mode: u8,
    now: i64,
    /// Method (modulo the list below).
    method: u8,
}

#[derive(Debug)]
struct Input {
    knobs: Knobs,
    path: String,
    query: Option<String>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let knobs = Knobs::arbitrary(u)?;
        let text = super::parse(u.bytes(u.len())?);
        let (path, query) = match text.first_line.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (text.first_line, None),
        };
        Ok(Input { knobs, path, query, headers: text.headers, body: text.body })
    }
}

const METHODS: &[&str] = &["POST", "GET", "PUT", "PATCH", "DELETE", "X-FUZZ"];

// ---------------------------------------------------------------------------------------
// Self-signing: make the fuzzed request validly signed for the chosen verifier.

fn first(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The header's first value, or `default` (which is then set, so the verifier sees it).
fn value_or(h: &mut HeaderMap, name: &'static str, default: &str) -> String {
    match first(h, name) {
        Some(v) => v,
        None => {
            set(h, name, default);
            default.to_string()
        }
    }
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn json_scalar(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::Bool(b)) => b.to_string(),
        Some(other) => other.to_string(),
    }
}

fn json_str(v: &serde_json::Value, key: &str) -> String {
    v.get(key).and_then(serde_json::Value::as_str).unwrap_or_default().to_string()
}

struct Req<'r> {
    method: &'r str,
    path: &'r str,
    query: Option<&'r str>,
}

fn sign(f: &Fixture, kind: Kind, alt: bool, flags: u8, h: &mut HeaderMap, body: &mut Vec<u8>, req: &Req<'_>) {
    match kind {
        Kind::WechatPay { apiv3 } => {
            if apiv3 && flags & 8 != 0 {
                encrypt_resource(f, body);
            }
            let ts = value_or(h, "wechatpay-timestamp", DEFAULT_TS);
            let nonce = value_or(h, "wechatpay-nonce", "fuzz-nonce");
            let (key, serial) = if alt { (&f.rsa_b, CERT_SERIAL) } else { (&f.rsa_a, PUB_ID) };
            set(h, "wechatpay-serial", serial);
            let mut msg = format!("{ts}\n{nonce}\n").into_bytes();
            msg.extend_from_slice(body);
            msg.push(b'\n');
            set(h, "wechatpay-signature", &key.sign(&msg));
        }
        Kind::Alipay => {
            let mut fields: Vec<(String, String)> =
                form_urlencoded::parse(body).into_owned().filter(|(k, _)| k != "sign").collect();
            let mut sorted = fields.clone();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let content: Vec<String> = sorted
                .iter()
                .filter(|(k, _)| !k.is_empty() && k != "sign_type")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let sig = f.rsa_a.sign(content.join("&").as_bytes());
            fields.push(("sign".into(), sig));
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &fields {
                ser.append_pair(k, v);
            }
            *body = ser.finish().into_bytes();
        }
        Kind::Stripe => {
            let mut header = first(h, "stripe-signature").unwrap_or_default();
            let t = header.split(',').find_map(|item| item.strip_prefix("t=")).map(str::to_string);
            let t = match t {
                Some(t) => t,
                None => {
                    header =
                        if header.is_empty() { format!("t={DEFAULT_TS}") } else { format!("t={DEFAULT_TS},{header}") };
                    DEFAULT_TS.to_string()
                }
            };
            let key = if alt { S2 } else { S1 };
            let sig = hex::encode(hmac(key, &[t.as_bytes(), b".", body]));
            set(h, "stripe-signature", &format!("{header},v1={sig}"));
        }
        Kind::StandardWebhooks => {
            let svix = flags & 2 != 0;
            let (id_h, ts_h, sig_h) = if svix {
                ("svix-id", "svix-timestamp", "svix-signature")
            } else {
                ("webhook-id", "webhook-timestamp", "webhook-signature")
            };
            let id = value_or(h, id_h, "msg_fuzz");
            let ts = value_or(h, ts_h, DEFAULT_TS);
            let mut msg = format!("{id}.{ts}.").into_bytes();
            msg.extend_from_slice(body);
            let sig = if alt {
                format!("v1a,{}", b64(f.ed.sign(&msg).as_ref()))
            } else {
                let key = if flags & 16 != 0 { SW_KEY_2 } else { SW_KEY_1 };
                format!("v1,{}", b64(&hmac(key, &[&msg])))
            };
            let value = match first(h, sig_h) {
                Some(existing) if !existing.is_empty() => format!("{existing} {sig}"),
                _ => sig,
            };
            set(h, sig_h, &value);
        }
        Kind::Adyen => {
            let key = hex::decode(if alt { ADYEN_KEY_2 } else { ADYEN_KEY_1 }).unwrap_or_default();
            let mut json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
            let items =
                json.as_mut().and_then(|j| j.get_mut("notificationItems")).and_then(serde_json::Value::as_array_mut);
            match items {
                Some(items) if !items.is_empty() && !h.contains_key("hmacsignature") => {
                    for wrapper in items.iter_mut() {
                        let Some(item) = wrapper.get_mut("NotificationRequestItem") else { continue };
                        let amount = item.get("amount").cloned().unwrap_or_default();
                        let data = [
                            json_str(item, "pspReference"),
                            json_str(item, "originalReference"),
                            json_str(item, "merchantAccountCode"),
                            json_str(item, "merchantReference"),
                            json_scalar(amount.get("value")),
                            json_str(&amount, "currency"),
                            json_str(item, "eventCode"),
                            json_scalar(item.get("success")),
                        ]
                        .join(":");
                        let sig = b64(&hmac(&key, &[data.as_bytes()]));
                        if let Some(obj) = item.as_object_mut() {
                            let extra = obj.entry("additionalData").or_insert_with(|| serde_json::json!({}));
                            if !extra.is_object() {
                                *extra = serde_json::json!({});
                            }
                            if let Some(extra) = extra.as_object_mut() {
                                extra.insert("hmacSignature".into(), serde_json::Value::String(sig));
                            }
                        }
                    }
                    if let Some(j) = &json {
                        *body = serde_json::to_vec(j).unwrap_or_default();
                    }
                }
                _ => set(h, "hmacsignature", &b64(&hmac(&key, &[body]))),
            }
        }
        Kind::Paypal => {
            let id = value_or(h, "paypal-transmission-id", "d938e770-8046-11e6-8103-6b62a8a99ac4");
            let time = value_or(h, "paypal-transmission-time", "2023-11-14T22:13:20Z");
            let (key, url) = if alt { (&f.rsa_b, URL_B) } else { (&f.rsa_a, URL_A) };
            set(h, "paypal-cert-url", url);
            set(h, "paypal-auth-algo", "SHA256withRSA");
            let msg = format!("{id}|{time}|{WEBHOOK_ID}|{}", crc32fast::hash(body));
            set(h, "paypal-transmission-sig", &key.sign(msg.as_bytes()));
        }
        Kind::HmacGithub => {
            let key = if alt { S2 } else { S1 };
            set(h, "x-hub-signature-256", &format!("sha256={}", hex::encode(hmac(key, &[body]))));
        }
        Kind::HmacClient => {
            let ts = value_or(h, "x-timestamp", DEFAULT_TS);
            let nonce = value_or(h, "x-nonce", "fuzz-nonce");
            let (key, id) = if alt { (S2, "client-2025") } else { (S1, "client-2024") };
            set(h, "x-key-id", id);
            let q = req.query.unwrap_or("");
            let parts: [&[u8]; 11] = [
                req.method.as_bytes(),
                b"\n",
                req.path.as_bytes(),
                b"\n",
                q.as_bytes(),
                b"\n",
                ts.as_bytes(),
                b"\n",
                nonce.as_bytes(),
                b"\n",
                body,
            ];
            set(h, "x-signature", &b64(&hmac(key, &parts)));
        }
        Kind::HmacSlack => {
            let ts = value_or(h, "x-slack-request-timestamp", DEFAULT_TS);
            let sig = hex::encode(hmac(S1, &[b"v0:", ts.as_bytes(), b":", body]));
            set(h, "x-slack-signature", &format!("v0={sig}"));
        }
    }
}

/// WeChat Pay: if the body is JSON with a `resource` whose `nonce` is 12 bytes, replace its
/// `ciphertext` (taken as the plaintext) by its AES-256-GCM encryption under the APIv3 key.
fn encrypt_resource(f: &Fixture, body: &mut Vec<u8>) {
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(body) else { return };
    let Some(resource) = json.get_mut("resource").and_then(serde_json::Value::as_object_mut) else { return };
    let nonce_text = resource.get("nonce").and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
    let Ok(nonce) = Nonce::try_assume_unique_for_key(nonce_text.as_bytes()) else { return };
    let aad = resource.get("associated_data").and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
    let mut data =
        resource.get("ciphertext").and_then(serde_json::Value::as_str).unwrap_or_default().as_bytes().to_vec();
    if f.apiv3.seal_in_place_append_tag(nonce, Aad::from(aad.as_bytes()), &mut data).is_err() {
        return;
    }
    resource.insert("ciphertext".into(), serde_json::Value::String(b64(&data)));
    if let Ok(bytes) = serde_json::to_vec(&json) {
        *body = bytes;
    }
}

/// The request's own timestamp, for `now` offsets (a best guess per provider).
fn request_ts(h: &HeaderMap) -> i64 {
    for name in
        ["wechatpay-timestamp", "webhook-timestamp", "svix-timestamp", "x-timestamp", "x-slack-request-timestamp"]
    {
        if let Some(ts) = first(h, name).and_then(|v| v.parse::<i64>().ok()) {
            return ts;
        }
    }
    if let Some(t) = first(h, "stripe-signature")
        .and_then(|v| v.split(',').find_map(|i| i.strip_prefix("t=").and_then(|t| t.parse::<i64>().ok())))
    {
        return t;
    }
    DEFAULT_TS.parse().unwrap_or_default()
}

/// `PAYGUARD_FUZZ_DEBUG=1`: print each verification result (for checking seeds).
fn debug() -> bool {
    static D: OnceLock<bool> = OnceLock::new();
    *D.get_or_init(|| std::env::var_os("PAYGUARD_FUZZ_DEBUG").is_some())
}

pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let f = fixture();
    let k = input.knobs;
    let (kind, verifier) = &f.verifiers[usize::from(k.verifier) % f.verifiers.len()];
    let signing = k.flags & 1 != 0;

    let method = Method::from_bytes(METHODS[usize::from(k.method) % METHODS.len()].as_bytes()).unwrap_or(Method::POST);
    let signed_with = |alt: bool| {
        let mut headers = super::header_map(&input.headers);
        let mut body = input.body.clone();
        if signing {
            let req = Req { method: method.as_str(), path: &input.path, query: input.query.as_deref() };
            sign(f, *kind, alt, k.flags, &mut headers, &mut body, &req);
        }
        (headers, body)
    };
    let alt = k.flags & 4 != 0;
    let (headers, body) = signed_with(alt);
    let now = if k.now_mode & 1 == 0 { request_ts(&headers).saturating_add(i64::from(k.now as i16)) } else { k.now };

    let req = SignedRequest {
        method: &method,
        path: &input.path,
        query: input.query.as_deref(),
        headers: &headers,
        body: &body,
    };
    let result = verifier.verify(&req, now);
    if debug() {
        eprintln!("{kind:?} signed={signing} now={now} -> {result:?}");
    }
    let _ = (verifier.provider(), verifier.tolerance(), verifier.replay_ttl());
    match result {
        Ok(ok) => {
            assert!(signing, "{kind:?} accepted a request the harness did not sign: {ok:?}\nheaders: {headers:?}");
            assert!(!ok.replay.is_empty(), "{kind:?} accepted with no replay id: {ok:?}");
            // The same callback signed under the other key (another key id, serial or secret,
            // listed next to whatever the input's header held) is the same callback: its
            // replay ids must not change with the spelling of the signature.
            let (other_headers, other_body) = signed_with(!alt);
            let other = SignedRequest { headers: &other_headers, body: &other_body, ..req };
            if let Ok(again) = verifier.verify(&other, now) {
                assert_eq!(ok.replay, again.replay, "{kind:?}: replay ids depend on the signature's spelling");
            }
            if let (Some(ts), Some(tol)) = (ok.timestamp, verifier.tolerance()) {
                let skew = (i128::from(now) - i128::from(ts)).unsigned_abs();
                assert!(
                    skew * 1000 <= tol.as_millis(),
                    "{kind:?} accepted timestamp {ts} at now={now}, outside tolerance {tol:?}"
                );
            }
        }
        Err(e) => {
            let _ = (e.to_string(), e.code());
        }
    }
}
