//! The values of a request as the backend will read them: the query's names and values
//! (percent-decoded, `+` a space), then the body by its content type: a JSON body's names,
//! strings and numbers (escapes decoded), a form body's names and values (decoded). The
//! content guards look at these, never at the encoded bytes alone.

use std::borrow::Cow;
use std::ops::ControlFlow;

use serde_json::Value;

use super::Reject;
use crate::decoding::{Coding, Decoder, Pull};
use crate::exchange::Exchange;

/// A request's buffered body as the backend will read it: decoded when it came compressed
/// (`content-encoding` gzip, deflate or br, which Express and most frameworks inflate before
/// the application sees the body), so that a compressed body does not slip past a content
/// guard. A coding payguard cannot decode is 415, a corrupt body 400, one that decodes to more
/// than the route's body cap 413: what cannot be looked at is not passed.
pub fn body(ex: &Exchange) -> Result<Cow<'_, [u8]>, Reject> {
    let raw = ex.req.body().buffered().unwrap_or_default();
    let coding = Coding::of(ex.req.headers()).map_err(|_| Reject::UnsupportedEncoding)?;
    let Some(coding) = coding.filter(|_| !raw.is_empty()) else { return Ok(Cow::Borrowed(raw)) };
    let cap = ex.route.as_ref().map_or(u64::MAX, |r| r.max_body);
    let mut decoder = Decoder::new(coding);
    decoder.push(bytes::Bytes::copy_from_slice(raw));
    decoder.end();
    let mut out = Vec::new();
    loop {
        match decoder.pull() {
            Ok(Pull::Data(d)) => {
                out.extend_from_slice(&d);
                if out.len() as u64 > cap {
                    return Err(Reject::BodyTooLarge { limit: cap });
                }
            }
            Ok(Pull::Done) => return Ok(Cow::Owned(out)),
            Ok(Pull::NeedInput) => return Err(Reject::InvalidRequest(format!("body: truncated {}", coding.name()))),
            Err(e) => return Err(Reject::InvalidRequest(format!("body: {e}"))),
        }
    }
}

/// Where a value is, for an audit line: `query:<name>`, `form:<name>`, a JSON pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place<'a> {
    Query(&'a str),
    QueryName,
    Form(&'a str),
    FormName,
    /// A JSON pointer (`""` is the whole document).
    Json(&'a str),
    /// A member name inside the object at this pointer.
    JsonName(&'a str),
}

impl Place<'_> {
    /// `query:q`, `form name`, `/shipping/name`, `/shipping (a name)`.
    pub fn describe(&self) -> String {
        match self {
            Place::Query(n) => format!("query:{n}"),
            Place::QueryName => "query name".into(),
            Place::Form(n) => format!("form:{n}"),
            Place::FormName => "form name".into(),
            Place::Json("") => "/".into(),
            Place::Json(p) => (*p).to_owned(),
            Place::JsonName(p) => format!("{} (a name)", if p.is_empty() { "/" } else { p }),
        }
    }
}

/// A body's kind by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Json,
    Form,
    Other,
}

impl Kind {
    pub fn of(content_type: Option<&[u8]>) -> Kind {
        let Some(ct) = content_type else { return Kind::Other };
        let essence = ct.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        let ends_json = essence.len() >= 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json");
        if essence.eq_ignore_ascii_case(b"application/json") || ends_json {
            Kind::Json
        } else if essence.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
            Kind::Form
        } else {
            Kind::Other
        }
    }
}

/// Whether a value is a JSON number (written as digits, not a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    String,
    Number,
}

pub type Visit<'v, B> = dyn FnMut(Place<'_>, Text, &[u8]) -> ControlFlow<B> + 'v;

/// Every name and value of `name=value&…` (a query when `query`, else a form body).
pub fn pairs<B>(data: &[u8], query: bool, visit: &mut Visit<'_, B>) -> ControlFlow<B> {
    for (name, value) in form_urlencoded::parse(data) {
        visit(if query { Place::QueryName } else { Place::FormName }, Text::String, name.as_bytes())?;
        let place = if query { Place::Query(&name) } else { Place::Form(&name) };
        visit(place, Text::String, value.as_bytes())?;
    }
    ControlFlow::Continue(())
}

/// Every member name, string and number of a JSON document. `Err` when it does not parse.
pub fn json<B>(body: &[u8], visit: &mut Visit<'_, B>) -> Result<ControlFlow<B>, serde_json::Error> {
    let value: Value = serde_json::from_slice(body)?;
    let mut pointer = String::new();
    Ok(walk(&value, &mut pointer, visit))
}

fn walk<B>(value: &Value, pointer: &mut String, visit: &mut Visit<'_, B>) -> ControlFlow<B> {
    match value {
        Value::String(s) => visit(Place::Json(pointer), Text::String, s.as_bytes()),
        Value::Number(n) => visit(Place::Json(pointer), Text::Number, n.to_string().as_bytes()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                let flow = walk(item, pointer, visit);
                pointer.truncate(len);
                flow?;
            }
            ControlFlow::Continue(())
        }
        Value::Object(fields) => {
            for (name, item) in fields {
                visit(Place::JsonName(pointer), Text::String, name.as_bytes())?;
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&escape(name));
                let flow = walk(item, pointer, visit);
                pointer.truncate(len);
                flow?;
            }
            ControlFlow::Continue(())
        }
        Value::Null | Value::Bool(_) => ControlFlow::Continue(()),
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

    fn all_json(body: &str) -> Vec<(String, Text, String)> {
        let mut out = Vec::new();
        let _ = json::<()>(body.as_bytes(), &mut |p, t, v| {
            out.push((p.describe(), t, String::from_utf8_lossy(v).into_owned()));
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    #[test]
    fn json_values_with_their_pointers() {
        assert_eq!(
            all_json(r#"{"a/b":{"c":"\u0041"},"n":[1,"x"],"t":true}"#),
            [
                ("/ (a name)".into(), Text::String, "a/b".into()),
                ("/a~1b (a name)".into(), Text::String, "c".into()),
                ("/a~1b/c".into(), Text::String, "A".into()),
                ("/ (a name)".into(), Text::String, "n".into()),
                ("/n/0".into(), Text::Number, "1".into()),
                ("/n/1".into(), Text::String, "x".into()),
                ("/ (a name)".into(), Text::String, "t".into()),
            ]
        );
    }

    #[test]
    fn pairs_decoded_and_a_stop_stops() {
        let mut seen = Vec::new();
        let flow = pairs(b"a=1+2&b=%27x&c=3", true, &mut |p, _, v| {
            seen.push((p.describe(), String::from_utf8_lossy(v).into_owned()));
            if v == b"'x" {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(flow, ControlFlow::Break(()));
        assert_eq!(seen.last().unwrap(), &("query:b".to_string(), "'x".to_string()));
        assert!(seen.contains(&("query:a".into(), "1 2".into())));
    }

    #[test]
    fn kinds_by_content_type() {
        assert_eq!(Kind::of(Some(b"Application/JSON; charset=utf-8")), Kind::Json);
        assert_eq!(Kind::of(Some(b"application/vnd.api+json")), Kind::Json);
        assert_eq!(Kind::of(Some(b"application/x-www-form-urlencoded")), Kind::Form);
        assert_eq!(Kind::of(Some(b"text/plain")), Kind::Other);
        assert_eq!(Kind::of(None), Kind::Other);
    }
}
