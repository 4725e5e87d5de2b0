//! `card_data`, request side: a card number (PAN) in the query or the body, as the backend
//! will read it, is refused (422 `card_data`) or, in `monitor`, recorded. Values are looked at
//! decoded (percent-encoding, form `+`, JSON escapes), so `%34%31…` or `\u0034…` does not slip
//! through; the common request, whose raw bytes hold no card number and nothing encoded, is
//! decided by one pass over those bytes.
//!
//! Only the masked form of a number (first six, last four) reaches the audit line.

use std::ops::ControlFlow;

use super::json_doc::JsonDoc;
use super::layer::Check;
use super::values::{self, Kind, Place};
use super::Reject;
use crate::card::{self, Hit};
use crate::exchange::{Exchange, Parts};
use crate::rules::{Mode, OnRequest};

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
        if !ex.card_data().scans_requests() {
            return Ok(());
        }
        let Parts { req, route, json, content, .. } = &mut **ex;
        let content = values::content(content, req);
        let body = values::body_of(req, content, route.as_deref())?;
        match in_request_with(req.uri().query(), content.kind, &body, json.as_ref()) {
            None => Ok(()),
            Some(found) => Err(Reject::CardData {
                field: found.field,
                masked: found.hit.masked(),
                scheme: found.hit.scheme.name(),
            }),
        }
    }

    fn mode(&self, ex: &Exchange) -> Mode {
        match ex.card_data().request {
            OnRequest::Monitor => Mode::Monitor,
            _ => ex.mode(),
        }
    }
}

/// The first card number in a request as the backend will read it: the query's names and
/// values, then the body by its content type (JSON names, strings and numbers; form names and
/// values; any other body as bytes).
pub fn in_request(query: Option<&str>, content_type: Option<&[u8]>, body: &[u8]) -> Option<Found> {
    in_request_with(query, Kind::of(content_type), body, None)
}

/// [`in_request`], with the JSON body's document when a guard before parsed it.
fn in_request_with(query: Option<&str>, kind: Kind, body: &[u8], doc: Option<&JsonDoc>) -> Option<Found> {
    if let Some(q) = query {
        if let Some(found) = in_pairs(q.as_bytes(), true) {
            return Some(found);
        }
    }
    if body.is_empty() {
        return None;
    }
    match kind {
        Kind::Json => in_json(body, doc),
        Kind::Form => in_pairs(body, false),
        Kind::Other => card::first(body).map(|hit| Found::new("body".into(), hit)),
    }
}

/// Stops at the first value with a card number.
fn look(place: Place<'_>, _: values::Text, value: &[u8]) -> ControlFlow<Found> {
    match card::first(value) {
        Some(hit) => ControlFlow::Break(Found::new(place.describe(), hit)),
        None => ControlFlow::Continue(()),
    }
}

/// `name=value&…` (a query or a form body). Decoded only when the bytes hold a candidate or
/// something encoded.
fn in_pairs(data: &[u8], query: bool) -> Option<Found> {
    let encoded = data.iter().any(|&b| b == b'%' || b == b'+');
    if !encoded && card::first(data).is_none() {
        return None;
    }
    values::pairs(data, query, &mut look).break_value()
}

fn in_json(body: &[u8], doc: Option<&JsonDoc>) -> Option<Found> {
    let escaped = memchr::memchr_iter(b'\\', body).any(|i| body.get(i + 1) == Some(&b'u'));
    let raw = card::first(body);
    if !escaped && raw.is_none() {
        return None;
    }
    let parsed;
    let doc = match doc {
        Some(doc) => doc,
        None => {
            parsed = JsonDoc::parse(body);
            &parsed
        }
    };
    match doc.visit(&mut look) {
        ControlFlow::Break(found) => Some(found),
        // The raw bytes held one the decoded values do not, or they are not JSON after all
        // (the bytes are what the backend gets): refused either way.
        ControlFlow::Continue(()) => raw.map(|hit| Found::new("body".into(), hit)),
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
