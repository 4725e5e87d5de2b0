//! `[route.signature]` as the rule file's one parser (serde over TOML, with spans) reads it:
//! every key any provider takes, typed, each value with its byte span in the rule file. A wrong
//! type is serde's error, reported at the value like any other in the file. Which keys a
//! provider takes, and what the values mean, is `config::Fields`'; a key no provider knows is
//! kept (with its span) so that it can be reported as unknown *for that provider*.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// A list of strings, or a table of strings, each string with its span.
#[derive(Debug, Clone)]
pub enum StrItems {
    List(Vec<Spanned<String>>),
    Table(Vec<(Spanned<String>, Spanned<String>)>),
}

impl<'de> Deserialize<'de> for StrItems {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrItems;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array or a table of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrItems, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(StrItems::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrItems, A::Error> {
                let mut items = Vec::new();
                while let Some(entry) = map.next_entry::<Spanned<String>, Spanned<String>>()? {
                    items.push(entry);
                }
                Ok(StrItems::Table(items))
            }
        }
        d.deserialize_any(V)
    }
}

/// A typed value of the table, as [`SignatureTable::value`] hands it out.
#[derive(Debug, Clone, Copy)]
pub enum Value<'t> {
    Str(&'t Spanned<String>),
    Bool(&'t Spanned<bool>),
    Items(&'t Spanned<StrItems>),
    /// `provider`, taken as any value so that a wrong type gets its own message.
    Any(&'t Spanned<toml::Value>),
}

impl Value<'_> {
    pub fn span(&self) -> Range<usize> {
        match self {
            Value::Str(v) => v.span(),
            Value::Bool(v) => v.span(),
            Value::Items(v) => v.span(),
            Value::Any(v) => v.span(),
        }
    }

    /// The TOML type, for "expected …, found …".
    pub fn type_str(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Bool(_) => "boolean",
            Value::Items(v) => match v.get_ref() {
                StrItems::List(_) => "array",
                StrItems::Table(_) => "table",
            },
            Value::Any(v) => v.get_ref().type_str(),
        }
    }
}

trait AsValue {
    fn as_value(&self) -> Value<'_>;
}

impl AsValue for Spanned<String> {
    fn as_value(&self) -> Value<'_> {
        Value::Str(self)
    }
}

impl AsValue for Spanned<bool> {
    fn as_value(&self) -> Value<'_> {
        Value::Bool(self)
    }
}

impl AsValue for Spanned<toml::Value> {
    fn as_value(&self) -> Value<'_> {
        Value::Any(self)
    }
}

impl AsValue for Spanned<StrItems> {
    fn as_value(&self) -> Value<'_> {
        Value::Items(self)
    }
}

macro_rules! signature_table {
    ($($(#[$doc:meta])* $key:ident: $ty:ty,)*) => {
        /// `[route.signature]`: the union of every provider's keys (RULES.md, providers table).
        #[derive(Debug, Clone, Default)]
        pub struct SignatureTable {
            $($(#[$doc])* pub $key: Option<Spanned<$ty>>,)*
            /// Keys no provider takes, with their spans: reported per provider by `Fields`.
            pub unknown: Vec<(String, Range<usize>)>,
        }

        impl SignatureTable {
            /// The value of `key`, if it is one of the known keys and set.
            pub fn value(&self, key: &str) -> Option<Value<'_>> {
                match key {
                    $(stringify!($key) => self.$key.as_ref().map(AsValue::as_value),)*
                    _ => None,
                }
            }

            /// Every known key that is set, with its value's span, in declaration order.
            pub fn present(&self) -> Vec<(&'static str, Range<usize>)> {
                let mut out = Vec::new();
                $(if let Some(v) = &self.$key {
                    out.push((stringify!($key), v.span()));
                })*
                out
            }
        }

        impl<'de> Deserialize<'de> for SignatureTable {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = SignatureTable;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a [route.signature] table")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SignatureTable, A::Error> {
                        let mut t = SignatureTable::default();
                        while let Some(key) = map.next_key::<Spanned<String>>()? {
                            match key.get_ref().as_str() {
                                $(stringify!($key) => t.$key = Some(map.next_value()?),)*
                                _ => {
                                    let value = map.next_value::<Spanned<de::IgnoredAny>>()?;
                                    t.unknown.push((key.into_inner(), value.span()));
                                }
                            }
                        }
                        Ok(t)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

signature_table! {
    /// Which provider's scheme (RULES.md): `stripe`, `wechatpay-v3`, …; a string.
    provider: toml::Value,
    /// Max distance of a signed timestamp from now.
    tolerance: String,
    /// How long an accepted callback's replay key is kept.
    replay_ttl: String,
    /// Whether a backend's 4xx frees the replay key.
    replay_release_on_4xx: bool,
    /// WeChat Pay: serial → PEM; Standard Webhooks: `whpk_` keys.
    public_keys: StrItems,
    /// WeChat Pay: the APIv3 key that decrypts `resource`.
    apiv3_key: String,
    /// Alipay: the platform public key.
    public_key: String,
    /// Alipay: the app id every callback must name.
    app_id: String,
    /// Adyen: hex HMAC keys.
    hmac_keys: StrItems,
    /// Stripe, Standard Webhooks, hmac: shared secrets.
    secrets: StrItems,
    /// hmac: key id → secret.
    keys: StrItems,
    /// PayPal: the webhook id.
    webhook_id: String,
    /// PayPal: certificate URL → pinned PEM certificate.
    certs: StrItems,
    /// hmac: the signature header.
    header: String,
    /// hmac: text before the signature in the header.
    prefix: String,
    /// hmac: `hex` or `base64`.
    encoding: String,
    /// hmac: the signed message template.
    message: String,
    /// hmac: the signed timestamp's header.
    timestamp_header: String,
    /// hmac: the signed nonce's header.
    nonce_header: String,
    /// hmac: the key id's header.
    key_id_header: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_value_keeps_its_span_and_unknown_keys_are_kept() {
        let text = "provider = \"stripe\"\nsecrets = [\"env:A\", \"env:B\"]\nextra = 5\n[keys]\nk1 = \"env:C\"\n";
        let t: SignatureTable = toml::from_str(text).unwrap();
        assert_eq!(t.provider.as_ref().and_then(|p| p.get_ref().as_str()), Some("stripe"));
        let Some(Value::Items(secrets)) = t.value("secrets") else { panic!("secrets") };
        let StrItems::List(items) = secrets.get_ref() else { panic!("a list") };
        assert_eq!(&text[items[1].span()], "\"env:B\"");
        let Some(Value::Items(keys)) = t.value("keys") else { panic!("keys") };
        let StrItems::Table(entries) = keys.get_ref() else { panic!("a table") };
        assert_eq!((&text[entries[0].0.span()], &text[entries[0].1.span()]), ("k1", "\"env:C\""));
        assert_eq!(t.unknown.len(), 1);
        assert_eq!((t.unknown[0].0.as_str(), &text[t.unknown[0].1.clone()]), ("extra", "5"));
        let keys: Vec<_> = t.present().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["provider", "secrets", "keys"]);
    }

    #[test]
    fn a_wrong_type_is_an_error_at_the_value() {
        let text = "provider = \"stripe\"\nsecrets = [\"env:A\", 7]\n";
        let e = toml::from_str::<SignatureTable>(text).unwrap_err();
        assert_eq!(&text[e.span().unwrap()], "7");
        let text = "provider = \"hmac\"\nreplay_release_on_4xx = \"yes\"\n";
        let e = toml::from_str::<SignatureTable>(text).unwrap_err();
        assert_eq!(&text[e.span().unwrap()], "\"yes\"");
    }
}
