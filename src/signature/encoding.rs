//! Strict decoders and the MAC primitives shared by the providers.
//!
//! Hex is lowercase only (as providers send it); base64 is the standard alphabet with
//! canonical padding. Anything else does not decode.

use base64::Engine as _;
use subtle::ConstantTimeEq;

use ::hmac::{Hmac, Mac};
use sha2::Sha256;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Lowercase hex only; uppercase or odd length does not decode.
pub(crate) fn decode_lower_hex(text: &str) -> Option<Vec<u8>> {
    if !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    hex::decode(text).ok()
}

/// Standard base64 (RFC 4648 §4) with padding; non-canonical trailing bits are rejected.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Decodes into a fixed-size array (signature lengths are fixed per algorithm).
pub(crate) fn decode_base64_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    decode_base64(text)?.try_into().ok()
}

pub(crate) fn decode_lower_hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    decode_lower_hex(text)?.try_into().ok()
}

/// A keyed HMAC-SHA256 ready to be fed. HMAC accepts keys of any length, so this is always
/// `Some`; callers still treat `None` as "no match" (fail closed) instead of panicking.
pub(crate) fn hmac_sha256(key: &[u8]) -> Option<HmacSha256> {
    <HmacSha256 as Mac>::new_from_slice(key).ok()
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub(crate) fn hmac_parts(key: &super::Secret, parts: &[&[u8]]) -> Option<[u8; 32]> {
    let mut mac = key.mac()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac.finalize().into_bytes().into())
}

/// Constant-time equality (length is not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A non-negative unix timestamp in canonical decimal (no sign, no leading zeros).
pub(crate) fn parse_unix_seconds(text: &str) -> Option<i64> {
    let canonical = !text.is_empty()
        && text.len() <= 18
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical {
        text.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_only() {
        assert_eq!(decode_lower_hex("00ff"), Some(vec![0, 255]));
        assert_eq!(decode_lower_hex("00FF"), None);
        assert_eq!(decode_lower_hex("0f0"), None);
        assert_eq!(decode_lower_hex(" 00"), None);
    }

    #[test]
    fn base64_is_standard_and_canonical() {
        assert_eq!(decode_base64("+/8="), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_base64("-_8="), None, "url-safe alphabet");
        assert_eq!(decode_base64("+/8"), None, "missing padding");
        assert_eq!(decode_base64("+/9="), None, "non-canonical trailing bits");
        assert_eq!(decode_base64("+/8= "), None);
    }

    #[test]
    fn unix_seconds_are_canonical() {
        assert_eq!(parse_unix_seconds("1614265330"), Some(1_614_265_330));
        assert_eq!(parse_unix_seconds("0"), Some(0));
        for bad in ["", "01", "+1", "-1", "1.0", " 1", "1e3", "9999999999999999999"] {
            assert_eq!(parse_unix_seconds(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac =
            hmac_parts(&super::super::Secret::new(b"Jefe".to_vec()), &[b"what do ya want ", b"for nothing?"]).unwrap();
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
