//! `adyen-hmac`: Adyen webhooks signed with the merchant's HMAC key (hex, HMAC-SHA256, base64).
//!
//! Two forms:
//! - Standard notifications `{"notificationItems":[{"NotificationRequestItem":{…}}]}`: every
//!   item's `additionalData.hmacSignature` must verify over
//!   `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`
//!   (missing fields are empty strings, `amount.value` in decimal). The fields are joined
//!   with `:` WITHOUT escaping: Adyen's libraries only escape `\` and `:` for the key/value
//!   (HPP) variant, not for notification items (adyen-node-api-library
//!   `src/utils/hmacValidator.ts` `getDataToSign`, adyen-php-api-library
//!   `Util/HmacSignature.php` `getNotificationDataToSign`). One bad item fails the batch.
//! - Newer webhooks (e.g. Balance Platform / Management): an `HmacSignature` header carrying
//!   the base64 HMAC of the raw body. When that header is present it is the one checked.
//!
//! Adyen signs no timestamp; the replay key is the item signatures (or the header signature).

use base64::Engine as _;
use serde::Deserialize;

use super::config::Fields;
use super::encoding::{ct_eq, decode_base64_array, hmac_parts};
use super::{list_key_id, single_header, ReplayId, Secret, SignatureError, SignedRequest, Verified, Verifier};

pub const PROVIDER: &str = "adyen-hmac";
const HEADER: &str = "hmacsignature";

#[derive(Debug)]
pub struct Adyen {
    keys: Vec<Secret>,
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "notificationItems")]
    items: Vec<ItemWrapper>,
}

#[derive(Deserialize)]
struct ItemWrapper {
    #[serde(rename = "NotificationRequestItem")]
    item: Item,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Item {
    psp_reference: Option<String>,
    original_reference: Option<String>,
    merchant_account_code: Option<String>,
    merchant_reference: Option<String>,
    amount: Option<Amount>,
    event_code: Option<String>,
    success: Option<serde_json::Value>,
    additional_data: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize, Default)]
struct Amount {
    value: Option<serde_json::Value>,
    currency: Option<String>,
}

/// One parsed item: the signed text and the presented signature.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SignedItem {
    pub data: String,
    pub signature_b64: String,
    pub signature: [u8; 32],
}

fn scalar(value: Option<&serde_json::Value>) -> Result<String, SignatureError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Ok(b.to_string()),
        Some(_) => Err(SignatureError::Malformed("notificationItems")),
    }
}

/// Parses a notification body into its signed items. Never panics on any input.
pub(crate) fn parse_notification(body: &[u8]) -> Result<Vec<SignedItem>, SignatureError> {
    let n: Notification = serde_json::from_slice(body).map_err(|_| SignatureError::Malformed("body"))?;
    if n.items.is_empty() {
        return Err(SignatureError::Malformed("notificationItems"));
    }
    n.items
        .into_iter()
        .map(|ItemWrapper { item }| {
            let signature_b64 = match item.additional_data.as_ref().and_then(|d| d.get("hmacSignature")) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(_) => return Err(SignatureError::Malformed("hmacSignature")),
                None => return Err(SignatureError::Missing("hmacSignature")),
            };
            let signature =
                decode_base64_array::<32>(&signature_b64).ok_or(SignatureError::Malformed("hmacSignature"))?;
            Ok(SignedItem { data: data_to_sign(item)?, signature_b64, signature })
        })
        .collect()
}

/// The signed text of one notification item.
fn data_to_sign(item: Item) -> Result<String, SignatureError> {
    let amount = item.amount.unwrap_or_default();
    let fields = [
        item.psp_reference.unwrap_or_default(),
        item.original_reference.unwrap_or_default(),
        item.merchant_account_code.unwrap_or_default(),
        item.merchant_reference.unwrap_or_default(),
        scalar(amount.value.as_ref())?,
        amount.currency.unwrap_or_default(),
        item.event_code.unwrap_or_default(),
        scalar(item.success.as_ref())?,
    ];
    Ok(fields.join(":"))
}

/// `body` with every notification item's `additionalData.hmacSignature` set for `key_hex`;
/// for a body that is not a standard notification, the `HmacSignature` header over it.
pub(crate) fn sign(body: &[u8], key_hex: &[u8]) -> Result<super::Signed, String> {
    let key = std::str::from_utf8(key_hex)
        .ok()
        .and_then(|t| hex::decode(t.trim()).ok())
        .filter(|k| !k.is_empty())
        .map(Secret::new)
        .ok_or("the Adyen HMAC key must be hex, as shown in the Customer Area")?;
    let mac = |data: &[u8]| hmac_parts(&key, &[data]).map(|m| base64::engine::general_purpose::STANDARD.encode(m));
    let mut doc: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Some(items) = doc.get_mut("notificationItems").and_then(serde_json::Value::as_array_mut) else {
        let sig = mac(body).ok_or("unusable HMAC key")?;
        return Ok(super::Signed { headers: vec![(HEADER.to_string(), sig)], body: None });
    };
    for wrapper in items {
        let item = wrapper.get_mut("NotificationRequestItem").ok_or("an item without NotificationRequestItem")?;
        let parsed: Item = serde_json::from_value(item.clone()).map_err(|e| format!("notification item: {e}"))?;
        let data = data_to_sign(parsed).map_err(|e| e.to_string())?;
        let sig = mac(data.as_bytes()).ok_or("unusable HMAC key")?;
        let object = item.as_object_mut().ok_or("a notification item must be an object")?;
        let extra = object.entry("additionalData").or_insert_with(|| serde_json::json!({}));
        extra
            .as_object_mut()
            .ok_or("additionalData must be an object")?
            .insert("hmacSignature".into(), serde_json::Value::String(sig));
    }
    let body = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
    Ok(super::Signed { headers: Vec::new(), body: Some(body) })
}

impl Adyen {
    pub(crate) fn from_config(f: &mut Fields<'_>) -> Option<Self> {
        let before = f.problem_count();
        let mut keys = Vec::new();
        match f.opt_str_list("hmac_keys") {
            None => f.problem("hmac_keys", "missing required key \"hmac_keys\" (list of env:/file: hex keys)"),
            Some(list) if list.is_empty() => f.problem("hmac_keys", "at least one key is required"),
            Some(list) => {
                for (path, spec) in list {
                    let Some(raw) = f.secret(&path, spec) else {
                        continue;
                    };
                    // Adyen shows the key as hex (uppercase); any case is accepted here.
                    match std::str::from_utf8(raw.expose()).ok().and_then(|t| hex::decode(t).ok()) {
                        Some(key) if !key.is_empty() => keys.push(Secret::new(key)),
                        _ => f.problem(path, "HMAC key must be hex, as shown in the Adyen Customer Area"),
                    }
                }
            }
        }
        (f.problem_count() == before).then_some(Self { keys })
    }

    /// Index of the first key whose HMAC over `parts` equals `signature`.
    fn matching_key(&self, parts: &[&[u8]], signature: &[u8; 32]) -> Option<usize> {
        let mut matched = None;
        for (i, key) in self.keys.iter().enumerate() {
            let Some(expected) = hmac_parts(key, parts) else {
                continue;
            };
            if ct_eq(&expected, signature) && matched.is_none() {
                matched = Some(i);
            }
        }
        matched
    }
}

impl Verifier for Adyen {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn verify_signature(&self, req: &SignedRequest<'_>) -> Result<Verified, SignatureError> {
        if req.headers.contains_key(HEADER) {
            let value = single_header(req.headers, HEADER)?;
            let sig = decode_base64_array::<32>(value).ok_or(SignatureError::Malformed(HEADER))?;
            let index = self.matching_key(&[req.body], &sig).ok_or(SignatureError::Invalid)?;
            return Ok(Verified {
                key_id: list_key_id("hmac_keys", index),
                timestamp: None,
                replay: vec![ReplayId::of(&[req.body])],
            });
        }
        let items = parse_notification(req.body)?;
        let mut used: Vec<usize> = Vec::new();
        for item in &items {
            let index = self.matching_key(&[item.data.as_bytes()], &item.signature).ok_or(SignatureError::Invalid)?;
            if !used.contains(&index) {
                used.push(index);
            }
        }
        let key_id = used.iter().map(|i| list_key_id("hmac_keys", *i)).collect::<Vec<_>>().join(",");
        // One id per signed item: the replay guard reserves them all or none, so neither a
        // repeated item nor a reordered batch is a new callback.
        let replay = items.iter().map(|i| ReplayId::of(&[i.data.as_bytes()])).collect();
        Ok(Verified { key_id, timestamp: None, replay })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::signature::test_support::*;
    use proptest::prelude::*;
    use serde_json::json;

    // Published in adyen-php-api-library tests/Adyen/Util/HmacSignatureTest.php
    // (testNotificationRequestItemHmac). A documentation test key, not a secret.
    const VECTOR_KEY: &[u8] = b"DFB1EB5485895CFA84146406857104ABB4CBCABDC8AAF103A624C8F6A3EAAB00";
    const VECTOR_SIG: &str = "Ny9gS2veKo5E4w8/OL6xz1/wvT/hYkAXy1xNc/QvO4I=";

    const KEY_OLD: &[u8] = b"0011223344556677889900aabbccddeeff00112233445566778899aabbccddee";

    fn resolver() -> FakeResolver {
        FakeResolver::with(&[("env:OLD", KEY_OLD), ("env:VECTOR", VECTOR_KEY), ("env:NOTHEX", b"not-hex")])
    }

    fn verifier() -> std::sync::Arc<Signature> {
        must_build("provider = \"adyen-hmac\"\nhmac_keys = [\"env:OLD\", \"env:VECTOR\"]", &resolver())
    }

    fn vector_item(sig: &str) -> serde_json::Value {
        json!({"NotificationRequestItem": {
            "pspReference": "7914073381342284",
            "merchantAccountCode": "TestMerchant",
            "merchantReference": "TestPayment-1407325143704",
            "amount": {"value": 1130, "currency": "EUR"},
            "eventCode": "AUTHORISATION",
            "success": "true",
            "additionalData": {"hmacSignature": sig}
        }})
    }

    /// Signs an item independently: 8 fields joined by ':' with the hex-decoded key.
    /// `fields[4]` (the amount value) is ignored: `value` is signed in decimal instead.
    fn signed_item(key_hex: &[u8], fields: [&str; 8], value: i64) -> serde_json::Value {
        let key = hex::decode(key_hex).unwrap();
        let value_text = value.to_string();
        let mut signed = fields;
        signed[4] = &value_text;
        let sig = b64(&hmac_raw(&key, signed.join(":").as_bytes()));
        json!({"NotificationRequestItem": {
            "pspReference": fields[0],
            "originalReference": fields[1],
            "merchantAccountCode": fields[2],
            "merchantReference": fields[3],
            "amount": {"value": value, "currency": fields[5]},
            "eventCode": fields[6],
            "success": fields[7],
            "additionalData": {"hmacSignature": sig, "other": "x"}
        }})
    }

    fn body(items: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({"live": "false", "notificationItems": items})).unwrap()
    }

    #[test]
    fn published_vector_verifies_with_second_key() {
        let b = body(vec![vector_item(VECTOR_SIG)]);
        let ok = verifier().verify(&post(&headers(&[]), &b), 0).unwrap();
        assert_eq!(ok.key_id, "hmac_keys[1]");
        let item = &parse_notification(&b).unwrap()[0];
        assert_eq!(ok.replay, vec![ReplayId::of(&[item.data.as_bytes()])]);
        assert_eq!(ok.timestamp, None);
    }

    #[test]
    fn batch_with_one_bad_item_fails() {
        let good = signed_item(KEY_OLD, ["psp1", "", "Merchant", "ref1", "", "EUR", "AUTHORISATION", "true"], 1000);
        let mut bad = signed_item(KEY_OLD, ["psp2", "", "Merchant", "ref2", "", "EUR", "AUTHORISATION", "true"], 2000);
        let b = body(vec![good.clone(), vector_item(VECTOR_SIG)]);
        let ok = verifier().verify(&post(&headers(&[]), &b), 0).unwrap();
        assert_eq!(ok.key_id, "hmac_keys[0],hmac_keys[1]");
        // Item 2 signed for amount 2000 but claims 9999.
        bad["NotificationRequestItem"]["amount"]["value"] = json!(9999);
        let b = body(vec![good, bad]);
        assert_eq!(verifier().verify(&post(&headers(&[]), &b), 0), Err(SignatureError::Invalid));
    }

    #[test]
    fn separators_are_not_escaped_like_adyens_libraries() {
        // A ':' or '\' inside a field is signed verbatim (no HPP-style escaping).
        let item = signed_item(KEY_OLD, ["psp:1", "", "Mer\\chant", "ref", "", "EUR", "CAPTURE", "false"], 5);
        let b = body(vec![item]);
        assert!(verifier().verify(&post(&headers(&[]), &b), 0).is_ok());
    }

    #[test]
    fn tampered_wrong_key_and_missing_signature() {
        let mut item = vector_item(VECTOR_SIG);
        item["NotificationRequestItem"]["success"] = json!("false");
        let b = body(vec![item]);
        assert_eq!(verifier().verify(&post(&headers(&[]), &b), 0), Err(SignatureError::Invalid));
        let only_old = must_build("provider = \"adyen-hmac\"\nhmac_keys = [\"env:OLD\"]", &resolver());
        let b = body(vec![vector_item(VECTOR_SIG)]);
        assert_eq!(only_old.verify(&post(&headers(&[]), &b), 0), Err(SignatureError::Invalid));
        let mut item = vector_item(VECTOR_SIG);
        item["NotificationRequestItem"]["additionalData"] = json!({});
        let b = body(vec![item]);
        assert_eq!(verifier().verify(&post(&headers(&[]), &b), 0), Err(SignatureError::Missing("hmacSignature")));
        let b = body(vec![vector_item("Ny9gS2veKo5E4w8_OL6xz1_wvT_hYkAXy1xNc_QvO4I=")]);
        assert_eq!(verifier().verify(&post(&headers(&[]), &b), 0), Err(SignatureError::Malformed("hmacSignature")));
        let b = body(vec![]);
        assert_eq!(verifier().verify(&post(&headers(&[]), &b), 0), Err(SignatureError::Malformed("notificationItems")));
        assert_eq!(verifier().verify(&post(&headers(&[]), b"not json"), 0), Err(SignatureError::Malformed("body")));
    }

    #[test]
    fn hmac_signature_header_over_raw_body() {
        let raw =
            br#"{"data":{"balancePlatform":"YOUR_BALANCE_PLATFORM"},"type":"balancePlatform.accountHolder.created"}"#;
        let sig = b64(&hmac_raw(&hex::decode(KEY_OLD).unwrap(), raw));
        let h = headers(&[("HmacSignature", &sig)]);
        let ok = verifier().verify(&post(&h, raw), 0).unwrap();
        assert_eq!(ok.key_id, "hmac_keys[0]");
        assert_eq!(ok.replay, vec![ReplayId::of(&[raw])]);
        assert_eq!(verifier().verify(&post(&h, b"{}"), 0), Err(SignatureError::Invalid));
        let h = headers(&[("HmacSignature", &sig), ("HmacSignature", &sig)]);
        assert_eq!(verifier().verify(&post(&h, raw), 0), Err(SignatureError::Duplicate(HEADER)));
        let h = headers(&[("HmacSignature", "zz")]);
        assert_eq!(verifier().verify(&post(&h, raw), 0), Err(SignatureError::Malformed(HEADER)));
    }

    #[test]
    fn config_errors() {
        let p = problems(
            "provider = \"adyen-hmac\"\nhmac_keys = [\"env:NOTHEX\", \"DFB1EB\"]\ntolerance = \"5m\"",
            &resolver(),
        );
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["tolerance", "hmac_keys.0", "hmac_keys.1"], "{p:?}");
        assert!(!format!("{p:?}").contains("not-hex"));
        assert_eq!(verifier().replay_ttl(), Duration::from_secs(48 * 3600));
    }

    proptest! {
        #[test]
        fn notification_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_notification(&body);
        }

        #[test]
        fn notification_parser_structured(psp in ".{0,20}", value in any::<i64>(), success in any::<bool>(), sig in "[A-Za-z0-9+/=]{0,50}") {
            let b = serde_json::to_vec(&json!({"notificationItems": [{"NotificationRequestItem": {
                "pspReference": psp, "amount": {"value": value}, "success": success,
                "additionalData": {"hmacSignature": sig}
            }}]})).unwrap();
            let _ = parse_notification(&b);
        }
    }
}
