//! Test helpers: keys generated at run time (nothing secret lives in the repository),
//! PEM encoding, a fake secret resolver and request builders.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock, OnceLock};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;

pub(crate) use std::time::Duration;

pub(crate) use super::Signature;
use super::{build, ConfigProblem, SecretResolver, SignatureTable, SignedRequest};

pub(crate) static POST: LazyLock<http::Method> = LazyLock::new(|| http::Method::POST);

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let body = b64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub(crate) struct RsaTestKey {
    pub(crate) kp: KeyPair,
}

impl RsaTestKey {
    fn generate() -> Self {
        Self { kp: KeyPair::generate(KeySize::Rsa2048).unwrap() }
    }
    pub(crate) fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; self.kp.public_modulus_len()];
        self.kp.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig).unwrap();
        sig
    }
    pub(crate) fn sign_b64(&self, msg: &[u8]) -> String {
        b64(&self.sign(msg))
    }
    pub(crate) fn spki_der(&self) -> Vec<u8> {
        self.kp.public_key().as_der().unwrap().as_ref().to_vec()
    }
    pub(crate) fn spki_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki_der())
    }
    pub(crate) fn spki_b64(&self) -> String {
        b64(&self.spki_der())
    }
    /// A self-signed certificate for this key with the given serial number.
    pub(crate) fn cert_pem(&self, serial: &[u8]) -> String {
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&self.kp).unwrap();
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["payguard.test".into()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(serial.to_vec()));
        params.self_signed(&key).unwrap().pem()
    }
}

pub(crate) fn rsa_a() -> &'static RsaTestKey {
    static KEY: OnceLock<RsaTestKey> = OnceLock::new();
    KEY.get_or_init(RsaTestKey::generate)
}

pub(crate) fn rsa_b() -> &'static RsaTestKey {
    static KEY: OnceLock<RsaTestKey> = OnceLock::new();
    KEY.get_or_init(RsaTestKey::generate)
}

pub(crate) fn ed25519() -> Ed25519KeyPair {
    Ed25519KeyPair::generate().unwrap()
}

pub(crate) fn ed25519_spki_pem() -> String {
    let kp = ed25519();
    pem("PUBLIC KEY", kp.public_key().as_der().unwrap().as_ref())
}

pub(crate) fn whpk(kp: &Ed25519KeyPair) -> String {
    format!("whpk_{}", b64(kp.public_key().as_ref()))
}

/// Resolves `env:`/`file:` specs from an in-memory map.
#[derive(Default)]
pub(crate) struct FakeResolver(pub HashMap<String, Vec<u8>>);

impl FakeResolver {
    pub(crate) fn with(pairs: &[(&str, &[u8])]) -> Self {
        Self(pairs.iter().map(|(k, v)| ((*k).to_string(), v.to_vec())).collect())
    }
}

impl SecretResolver for FakeResolver {
    fn resolve(&self, spec: &str, _base_dir: &Path) -> Result<Vec<u8>, String> {
        self.0.get(spec).cloned().ok_or_else(|| format!("{spec} not found"))
    }
}

pub(crate) fn build_from(toml_text: &str, resolver: &FakeResolver) -> Result<Arc<Signature>, Vec<ConfigProblem>> {
    // A wrong type is the rule file parser's error, as it would be in a rule file.
    let table: SignatureTable = toml::from_str(toml_text)
        .map_err(|e| vec![ConfigProblem { key: "(type)".into(), message: e.message().to_owned(), span: e.span() }])?;
    build(&table, Path::new("/nonexistent"), resolver)
}

pub(crate) fn must_build(toml_text: &str, resolver: &FakeResolver) -> Arc<Signature> {
    match build_from(toml_text, resolver) {
        Ok(v) => v,
        Err(problems) => panic!("config problems: {problems:?}"),
    }
}

pub(crate) fn problems(toml_text: &str, resolver: &FakeResolver) -> Vec<ConfigProblem> {
    match build_from(toml_text, resolver) {
        Ok(v) => panic!("expected config problems, built {v:?}"),
        Err(p) => p,
    }
}

/// Header map from pairs; repeated names are appended (to test duplicates).
pub(crate) fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in pairs {
        map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), http::HeaderValue::from_str(v).unwrap());
    }
    map
}

pub(crate) fn post<'a>(headers: &'a http::HeaderMap, body: &'a [u8]) -> SignedRequest<'a> {
    SignedRequest { method: &POST, path: "/webhook", query: None, headers, body }
}

/// Lowercase hex HMAC-SHA256, computed independently of the code under test.
pub(crate) fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    hex::encode(hmac_raw(key, msg))
}

pub(crate) fn hmac_raw(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::sign(&key, msg).as_ref().to_vec()
}
