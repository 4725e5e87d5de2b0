//! `card_data`, request side: a card number (PAN) in the query or the body, as the backend
//! will read it, is refused (422 `card_data`) or, in `monitor`, recorded. Values are looked at
//! decoded (percent-encoding, form `+`, JSON escapes), so `%34%31…` or `\u0034…` does not slip
//! through; the common request, whose raw bytes hold no card number and nothing encoded, is
//! decided by one pass over those bytes.
//!
//! Only the masked form of a number (first six, last four) reaches the audit line.

use std::borrow::Cow;

use http::header;
use serde_json::Value;

use super::layer::Check;
use super::Reject;
use crate::card::{self, Hit};
use crate::exchange::Exchange;

/// Longest field name an audit line repeats.
const MAX_FIELD: usize = 128;

/// A card number, and where the backend would read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `query:<name>`, `form:<name>`, a JSON pointer, or `body`.
    pub field: String,
    pub hit: Hit,
}

impl Found {
    fn new(field: String, hit: Hit) -> Found {
        let mut field = field;
        if field.len() > MAX_FIELD {
            let mut end = MAX_FIELD;
            while !field.is_char_boundary(end) {
                end -= 1;
            }
            field.truncate(end);
            field.push('…');
        }
        Found { field, hit }
    }
}

#[derive(Clone, Copy, Default)]
pub struct CardDataGuard;

impl Check for CardDataGuard {
    const NAME: &'static str = "card_data";

    fn check(&self, ex: &mut Exchange) -> Result<(), Reject> {
        if !ex.route.as_ref().is_some_and(|r| r.card_data.scans_requests()) {
            return Ok(());
        }
        let content_type = ex.req.headers().get(header::CONTENT_TYPE).map(http::HeaderValue::as_bytes);
        let body = ex.req.body().buffered().unwrap_or_default();
        match in_request(ex.req.uri().query(), content_type, body) {
            None => Ok(()),
            Some(found) => Err(Reject::CardData {
                field: found.field,
                masked: found.hit.masked(),
                scheme: found.hit.scheme.name(),
            }),
        }
    }
}

/// The first card number in a request as the backend will read it: the query's names and
/// values, then the body by its content type (JSON strings, keys and numbers; form names and
/// values; any other body as bytes).
pub fn in_request(query: Option<&str>, content_type: Option<&[u8]>, body: &[u8]) -> Option<Found> {
    if let Some(q) = query {
        if let Some(found) = in_pairs(q.as_bytes(), "query") {
            return Some(found);
        }
    }
    if body.is_empty() {
        return None;
    }
    match Kind::of(content_type) {
        Kind::Json => in_json(body),
        Kind::Form => in_pairs(body, "form"),
        Kind::Other => card::first(body).map(|hit| Found::new("body".into(), hit)),
    }
}

enum Kind {
    Json,
    Form,
    Other,
}

impl Kind {
    fn of(content_type: Option<&[u8]>) -> Kind {
        let Some(ct) = content_type else { return Kind::Other };
        let essence = ct.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        let essence = essence.to_ascii_lowercase();
        if essence == b"application/json" || essence.ends_with(b"+json") {
            Kind::Json
        } else if essence == b"application/x-www-form-urlencoded" {
            Kind::Form
        } else {
            Kind::Other
        }
    }
}

/// `name=value&…` (a query or a form body), decoded as the backend decodes it.
fn in_pairs(data: &[u8], kind: &str) -> Option<Found> {
    let encoded = data.iter().any(|&b| b == b'%' || b == b'+');
    if !encoded && card::first(data).is_none() {
        return None;
    }
    for (name, value) in form_urlencoded::parse(data) {
        if let Some(hit) = card::first(name.as_bytes()) {
            return Some(Found::new(format!("{kind} name"), hit));
        }
        if let Some(hit) = card::first(value.as_bytes()) {
            return Some(Found::new(format!("{kind}:{name}"), hit));
        }
    }
    None
}

fn in_json(body: &[u8]) -> Option<Found> {
    let escaped = body.windows(2).any(|w| w == b"\\u");
    let raw = card::first(body);
    if !escaped && raw.is_none() {
        return None;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            let mut pointer = String::new();
            walk(&value, &mut pointer)
                // The raw bytes held one the decoded values do not: still refused.
                .or_else(|| raw.map(|hit| Found::new("body".into(), hit)))
        }
        // Not JSON after all: the bytes are what the backend gets.
        Err(_) => raw.map(|hit| Found::new("body".into(), hit)),
    }
}

fn walk(value: &Value, pointer: &mut String) -> Option<Found> {
    match value {
        Value::String(s) => card::first(s.as_bytes()).map(|hit| Found::new(at(pointer), hit)),
        Value::Number(n) => card::first(n.to_string().as_bytes()).map(|hit| Found::new(at(pointer), hit)),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let len = pointer.len();
            pointer.push('/');
            pointer.push_str(&i.to_string());
            let found = walk(item, pointer);
            pointer.truncate(len);
            found
        }),
        Value::Object(fields) => fields.iter().find_map(|(name, item)| {
            if let Some(hit) = card::first(name.as_bytes()) {
                return Some(Found::new(format!("{} (a name)", at(pointer)), hit));
            }
            let len = pointer.len();
            pointer.push('/');
            pointer.push_str(&escape(name));
            let found = walk(item, pointer);
            pointer.truncate(len);
            found
        }),
        Value::Null | Value::Bool(_) => None,
    }
}

fn at(pointer: &str) -> String {
    if pointer.is_empty() {
        "/".into()
    } else {
        pointer.to_owned()
    }
}

/// A name as a JSON pointer token (RFC 6901): `~` → `~0`, `/` → `~1`.
fn escape(name: &str) -> Cow<'_, str> {
    if name.contains(['~', '/']) {
        Cow::Owned(name.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn field(query: Option<&str>, ct: &str, body: &str) -> Option<(String, String)> {
        in_request(query, Some(ct.as_bytes()), body.as_bytes()).map(|f| (f.field, f.hit.masked()))
    }

    fn found(f: &str, m: &str) -> Option<(String, String)> {
        Some((f.into(), m.into()))
    }

    #[test]
    fn json_strings_numbers_names_and_escapes() {
        let json = "application/json";
        assert_eq!(field(None, json, r#"{"amount":1250,"note":"hi"}"#), None);
        assert_eq!(
            field(None, json, r#"{"card":{"pan":"4111 1111 1111 1111"}}"#),
            found("/card/pan", "411111******1111")
        );
        assert_eq!(field(None, json, r#"{"items":[1,5555555555554444]}"#), found("/items/1", "555555******4444"));
        assert_eq!(field(None, json, r#"{"a/b":"\u0034111111111111111"}"#), found("/a~1b", "411111******1111"));
        assert_eq!(field(None, json, r#"{"4111111111111111":1}"#), found("/ (a name)", "411111******1111"));
        assert_eq!(
            field(None, "application/vnd.shop+json; charset=utf-8", r#"["378282246310005"]"#),
            found("/0", "378282*****0005")
        );
        // Not JSON: the bytes as they are.
        assert_eq!(field(None, json, "{4111111111111111"), found("body", "411111******1111"));
    }

    #[test]
    fn forms_queries_and_other_bodies_decoded() {
        let form = "application/x-www-form-urlencoded";
        assert_eq!(field(None, form, "a=1&b=2"), None);
        assert_eq!(field(None, form, "pan=4111+1111+1111+1111"), found("form:pan", "411111******1111"));
        assert_eq!(field(None, form, "pan=%34111111111111111"), found("form:pan", "411111******1111"));
        assert_eq!(field(Some("x=1&c=6011111111111117"), form, ""), found("query:c", "601111******1117"));
        assert_eq!(field(Some("c=6011%201111%201111%201117"), "", ""), found("query:c", "601111******1117"));
        assert_eq!(field(None, "text/plain", "card: 5555-5555-5555-4444"), found("body", "555555******4444"));
        assert_eq!(field(Some("order=20211203220014000512345"), "text/plain", "order 4111111111111112"), None);
    }

    #[test]
    fn long_field_names_are_cut() {
        let name = "n".repeat(300);
        let body = format!("{{\"{name}\":\"4111111111111111\"}}");
        let f = in_request(None, Some(b"application/json"), body.as_bytes()).unwrap();
        assert!(f.field.chars().count() <= MAX_FIELD + 1, "{}", f.field);
    }
}
