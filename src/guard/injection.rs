//! `[route.injection]`: SQL injection and XSS patterns in a request's values, as the backend
//! will read them (percent- and form-decoded, JSON escapes decoded), found by libinjection's
//! detectors (`libinjectionrs`: a Rust port checked against the C library over its corpus).
//! Every string value by default, or the route's `fields`. 403 `injection_detected`, or in
//! `monitor` recorded and forwarded.
//!
//! libinjection reads one value at a time and reports a pattern (its SQLi fingerprint); it is
//! built to keep false positives low on ordinary text, which the corpus tests hold it to.

use std::ops::ControlFlow;

use http::header;

use super::layer::Check;
use super::values::{self, Kind, Place, Text};
use super::Reject;
use crate::exchange::Exchange;
use crate::rules::injection::{Fields, InjectionAction};
use crate::rules::Mode;

/// What was found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub field: String,
    /// `sqli` or `xss`.
    pub kind: &'static str,
    /// libinjection's SQLi fingerprint (`s&sos`), empty for XSS.
    pub fingerprint: String,
}

/// The pattern in one value, if any.
pub fn detect(value: &[u8]) -> Option<(&'static str, String)> {
    let sqli = libinjectionrs::detect_sqli(value);
    if sqli.is_injection() {
        let fingerprint = sqli.fingerprint.map(|f| f.as_str().to_owned()).unwrap_or_default();
        return Some(("sqli", fingerprint));
    }
    libinjectionrs::detect_xss(value).is_injection().then(|| ("xss", String::new()))
}

/// The first value of the request with a pattern: the query's values, then a JSON or form
/// body's (other bodies are not looked at: no field to decode).
pub fn in_request(
    query: Option<&str>,
    content_type: Option<&[u8]>,
    body: &[u8],
    fields: Option<&Fields>,
) -> Option<Finding> {
    let mut look = |place: Place<'_>, text: Text, value: &[u8]| {
        let wanted = text == Text::String
            && match (fields, place) {
                (None, Place::Query(_) | Place::Form(_) | Place::Json(_)) => true,
                (Some(f), Place::Query(n) | Place::Form(n)) => f.has_name(n),
                (Some(f), Place::Json(p)) => f.has_pointer(p),
                (_, Place::QueryName | Place::FormName | Place::JsonName(_)) => false,
            };
        match wanted.then(|| detect(value)).flatten() {
            Some((kind, fingerprint)) => ControlFlow::Break(Finding { field: place.describe(), kind, fingerprint }),
            None => ControlFlow::Continue(()),
        }
    };
    if let Some(q) = query {
        if let ControlFlow::Break(f) = values::pairs(q.as_bytes(), true, &mut look) {
            return Some(f);
        }
    }
    if body.is_empty() {
        return None;
    }
    match Kind::of(content_type) {
        Kind::Json => values::json(body, &mut look).ok()?.break_value(),
        Kind::Form => values::pairs(body, false, &mut look).break_value(),
        Kind::Other => None,
    }
}

#[derive(Clone, Copy, Default)]
pub struct InjectionGuard;

impl Check for InjectionGuard {
    const NAME: &'static str = "injection";

    fn check(&self, ex: &mut Exchange) -> Result<(), Reject> {
        let Some(rule) = ex.route.as_ref().and_then(|r| r.injection.as_ref()) else { return Ok(()) };
        if rule.action == InjectionAction::Off {
            return Ok(());
        }
        let content_type = ex.req.headers().get(header::CONTENT_TYPE).map(http::HeaderValue::as_bytes);
        let body = values::body(ex)?;
        match in_request(ex.req.uri().query(), content_type, &body, rule.fields.as_ref()) {
            None => Ok(()),
            Some(f) => Err(Reject::InjectionDetected { field: f.field, kind: f.kind, fingerprint: f.fingerprint }),
        }
    }

    fn mode(&self, ex: &Exchange) -> Mode {
        match ex.route.as_ref().and_then(|r| r.injection.as_ref()).map(|i| i.action) {
            Some(InjectionAction::Monitor) => Mode::Monitor,
            _ => ex.mode(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn find(query: Option<&str>, ct: &str, body: &str) -> Option<(String, &'static str)> {
        in_request(query, Some(ct.as_bytes()), body.as_bytes(), None).map(|f| (f.field, f.kind))
    }

    #[test]
    fn patterns_in_decoded_values_with_their_place() {
        let json = "application/json";
        assert_eq!(find(None, json, r#"{"name":"Ana"}"#), None);
        assert_eq!(find(None, json, r#"{"q":"1' OR '1'='1"}"#), Some(("/q".into(), "sqli")));
        assert_eq!(find(None, json, r#"{"a":{"b":"<script>alert(1)</script>"}}"#), Some(("/a/b".into(), "xss")));
        assert_eq!(find(None, json, r#"{"a":"\u003cscript>alert(1)\u003c/script>"}"#), Some(("/a".into(), "xss")));
        assert_eq!(find(Some("id=1%27%20OR%20%271%27%3D%271"), "", ""), Some(("query:id".into(), "sqli")));
        assert_eq!(
            find(None, "application/x-www-form-urlencoded", "note=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E"),
            Some(("form:note".into(), "xss"))
        );
        // Other bodies have no fields to decode.
        assert_eq!(find(None, "text/plain", "1' OR '1'='1"), None);
    }

    #[test]
    fn only_the_listed_fields_when_there_are_fields() {
        let body = r#"{"shipping":{"name":"1' OR '1'='1"},"note":"<script>alert(1)</script>"}"#;
        let fields = Fields::of;
        let only_shipping = fields(&["/shipping/*"]);
        let f = in_request(None, Some(b"application/json"), body.as_bytes(), Some(&only_shipping)).unwrap();
        assert_eq!((f.field.as_str(), f.kind), ("/shipping/name", "sqli"));
        let only_q = fields(&["q"]);
        assert_eq!(in_request(None, Some(b"application/json"), body.as_bytes(), Some(&only_q)), None);
        assert!(in_request(Some("q=%3Cscript%3Ealert(1)%3C/script%3E"), None, b"", Some(&only_q)).is_some());
    }
}
