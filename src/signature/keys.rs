//! Public key loading, done once at build time: PEM public keys (SPKI), PEM certificates (the
//! SPKI is extracted, nothing else of the certificate is used), bare base64 SPKI (Alipay's
//! dashboard format) and `whpk_` Ed25519 keys.

use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{ParsedPublicKey, ED25519, RSA_PKCS1_2048_8192_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use x509_cert::der::{Decode, Encode};

use super::encoding::decode_base64;

/// An RSA public key for PKCS#1 v1.5 SHA-256 verification, parsed once.
pub(crate) struct RsaKey {
    key: ParsedPublicKey,
    bits: usize,
}

impl RsaKey {
    /// `true` when `signature` is a valid RSA-PKCS1-v1.5-SHA256 signature of `message`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }

    /// Like [`Self::verify`] for a message given in parts: the parts are hashed in place
    /// (SHA-256) instead of being copied into one buffer, which matters for large bodies.
    pub(crate) fn verify_parts(&self, parts: &[&[u8]], signature: &[u8]) -> bool {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for part in parts {
            ctx.update(part);
        }
        self.key.verify_digest_sig(&ctx.finish(), signature).is_ok()
    }
}

impl fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaKey({} bits)", self.bits)
    }
}

/// An Ed25519 public key, parsed once.
pub(crate) struct Ed25519Key(ParsedPublicKey);

impl Ed25519Key {
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.0.verify_sig(message, signature).is_ok()
    }
}

impl fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ed25519Key")
    }
}

/// What an RSA key was loaded from.
#[derive(Debug)]
pub(crate) struct LoadedRsa {
    pub key: RsaKey,
    /// The certificate's serial number (big-endian, as encoded) when loaded from a certificate.
    pub cert_serial: Option<Vec<u8>>,
}

/// Which text forms [`load_rsa`] accepts besides PEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BareBase64 {
    Allowed,
    Rejected,
}

/// Loads an RSA public key from PEM text: `PUBLIC KEY` (SPKI) or `CERTIFICATE` (its SPKI);
/// with [`BareBase64::Allowed`] also the base64 of a DER SPKI without PEM armour.
pub(crate) fn load_rsa(text: &[u8], bare: BareBase64) -> Result<LoadedRsa, String> {
    if contains(text, b"-----BEGIN CERTIFICATE-----") {
        let cert = CertificateDer::from_pem_slice(text).map_err(|e| format!("cannot read PEM certificate: {e}"))?;
        let (spki, serial) = cert_spki(cert.as_ref())?;
        Ok(LoadedRsa { key: rsa_from_spki(&spki)?, cert_serial: Some(serial) })
    } else if contains(text, b"-----BEGIN PUBLIC KEY-----") {
        let spki =
            SubjectPublicKeyInfoDer::from_pem_slice(text).map_err(|e| format!("cannot read PEM public key: {e}"))?;
        Ok(LoadedRsa { key: rsa_from_spki(spki.as_ref())?, cert_serial: None })
    } else if contains(text, b"-----BEGIN") {
        Err("expected a PEM \"PUBLIC KEY\" or \"CERTIFICATE\"".into())
    } else if bare == BareBase64::Allowed {
        let compact: String = String::from_utf8_lossy(text).chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = decode_base64(&compact).ok_or("expected PEM or the base64 of a DER SubjectPublicKeyInfo")?;
        Ok(LoadedRsa { key: rsa_from_spki(&der)?, cert_serial: None })
    } else {
        Err("expected a PEM \"PUBLIC KEY\" or \"CERTIFICATE\"".into())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The DER SubjectPublicKeyInfo and serial number of a DER certificate.
fn cert_spki(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| format!("cannot parse certificate: {e}"))?;
    let tbs = &cert.tbs_certificate;
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("cannot re-encode the certificate's public key: {e}"))?;
    Ok((spki, tbs.serial_number.as_bytes().to_vec()))
}

fn rsa_from_spki(spki: &[u8]) -> Result<RsaKey, String> {
    // Size check at load time: aws-lc-rs only enforces 2048..=8192 at verification time,
    // which would turn a misconfigured key into a route that rejects everything.
    let bits = aws_lc_rs::rsa::PublicEncryptingKey::from_der(spki)
        .map_err(|_| "not an RSA public key".to_string())?
        .key_size_bits();
    if !(2048..=8192).contains(&bits) {
        return Err(format!("RSA key is {bits} bits; 2048 to 8192 required"));
    }
    let key =
        ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, spki).map_err(|e| format!("unusable RSA public key: {e}"))?;
    Ok(RsaKey { key, bits })
}

/// `whpk_<base64 of the 32-byte Ed25519 public key>` (Standard Webhooks).
pub(crate) fn load_whpk(text: &str) -> Result<Ed25519Key, String> {
    let b64 = text.strip_prefix("whpk_").ok_or("expected \"whpk_\" followed by the base64 Ed25519 public key")?;
    let raw = decode_base64(b64).ok_or("the part after \"whpk_\" is not standard base64")?;
    if raw.len() != 32 {
        return Err(format!("Ed25519 public key is {} bytes; 32 required", raw.len()));
    }
    ParsedPublicKey::new(&ED25519, &raw).map(Ed25519Key).map_err(|e| format!("unusable Ed25519 public key: {e}"))
}

/// Uppercase hex of a certificate serial without leading zero bytes/digits, for comparing
/// with WeChat Pay's `Wechatpay-Serial` spelling.
pub(crate) fn serial_hex(serial: &[u8]) -> String {
    let hex = hex::encode_upper(serial);
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::signature::test_support::*;

    #[test]
    fn loads_spki_pem_cert_pem_and_bare_base64() {
        let k = rsa_a();
        assert!(load_rsa(k.spki_pem().as_bytes(), BareBase64::Rejected).is_ok());
        let cert = k.cert_pem(&[0x01, 0x23]);
        let loaded = load_rsa(cert.as_bytes(), BareBase64::Rejected).unwrap();
        assert_eq!(loaded.cert_serial.as_deref(), Some(&[0x01, 0x23][..]));
        assert!(load_rsa(k.spki_b64().as_bytes(), BareBase64::Rejected).is_err());
        assert!(load_rsa(k.spki_b64().as_bytes(), BareBase64::Allowed).is_ok());
        let msg = b"hello";
        assert!(loaded.key.verify(msg, &k.sign(msg)));
        assert!(!loaded.key.verify(b"hellO", &k.sign(msg)));
        assert!(loaded.key.verify_parts(&[b"he", b"", b"llo"], &k.sign(msg)));
        assert!(!loaded.key.verify_parts(&[b"he", b"llO"], &k.sign(msg)));
    }

    #[test]
    fn rejects_non_rsa_and_garbage() {
        assert!(
            load_rsa(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", BareBase64::Allowed).is_err()
        );
        assert!(load_rsa(b"not a key", BareBase64::Allowed).is_err());
        let ed = ed25519_spki_pem();
        assert!(load_rsa(ed.as_bytes(), BareBase64::Rejected).is_err());
    }

    #[test]
    fn serial_hex_trims_leading_zeros() {
        assert_eq!(serial_hex(&[0x00, 0x51, 0x57]), "5157");
        assert_eq!(serial_hex(&[0x0a]), "A");
        assert_eq!(serial_hex(&[0]), "0");
    }
}
