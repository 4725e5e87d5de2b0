//! The values of a request as the backend will read them: the query's names and values
//! (percent-decoded, `+` a space), then the body by its content type: a JSON body's names,
//! strings and numbers (escapes decoded), a form body's names and values (decoded). The
//! content guards look at these, never at the encoded bytes alone.

use std::borrow::Cow;
use std::ops::ControlFlow;

use serde::de::DeserializeSeed as _;

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

/// Every member name, string and number of a JSON document, in document order, as the parser
/// reads it (no tree is built). `Err` when it does not parse before a visit stops the walk.
pub fn json<B>(body: &[u8], visit: &mut Visit<'_, B>) -> Result<ControlFlow<B>, serde_json::Error> {
    let mut pointer = String::new();
    let mut stop = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let walked = Walk { pointer: &mut pointer, visit, stop: &mut stop }.deserialize(&mut de);
    if let Some(b) = stop {
        return Ok(ControlFlow::Break(b));
    }
    walked?;
    de.end()?;
    Ok(ControlFlow::Continue(()))
}

/// The walk over one JSON value; a visit that breaks leaves its value in `stop` and ends the
/// parse with an error that [`json`] turns back into the break.
struct Walk<'a, 'v, B> {
    pointer: &'a mut String,
    visit: &'a mut Visit<'v, B>,
    stop: &'a mut Option<B>,
}

impl<'v, B> Walk<'_, 'v, B> {
    fn emit<E: serde::de::Error>(&mut self, place: Place<'_>, text: Text, value: &[u8]) -> Result<(), E> {
        match (self.visit)(place, text, value) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(b) => {
                *self.stop = Some(b);
                Err(E::custom("stopped"))
            }
        }
    }

    fn value<E: serde::de::Error>(mut self, text: Text, value: &[u8]) -> Result<(), E> {
        let pointer = std::mem::take(self.pointer);
        let emitted = self.emit(Place::Json(&pointer), text, value);
        *self.pointer = pointer;
        emitted
    }

    fn reborrow(&mut self) -> Walk<'_, 'v, B> {
        Walk { pointer: self.pointer, visit: self.visit, stop: self.stop }
    }
}

impl<'de, B> serde::de::DeserializeSeed<'de> for Walk<'_, '_, B> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, B> serde::de::Visitor<'de> for Walk<'_, '_, B> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.value(Text::String, v.as_bytes())
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<(), E> {
        self.value(Text::Number, itoa::Buffer::new().format(n).as_bytes())
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<(), E> {
        self.value(Text::Number, itoa::Buffer::new().format(n).as_bytes())
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<(), E> {
        let text = serde_json::Number::from_f64(n).map(|n| n.to_string()).unwrap_or_default();
        self.value(Text::Number, text.as_bytes())
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = itoa::Buffer::new();
        for i in 0usize.. {
            let len = self.pointer.len();
            self.pointer.push('/');
            self.pointer.push_str(index.format(i));
            let more = seq.next_element_seed(self.reborrow());
            self.pointer.truncate(len);
            if more?.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key_seed(Name)? {
            let pointer = std::mem::take(self.pointer);
            let emitted = self.emit(Place::JsonName(&pointer), Text::String, name.as_bytes());
            *self.pointer = pointer;
            emitted?;
            let len = self.pointer.len();
            self.pointer.push('/');
            self.pointer.push_str(&escape(&name));
            let walked = map.next_value_seed(self.reborrow());
            self.pointer.truncate(len);
            walked?;
        }
        Ok(())
    }
}

/// A member name, borrowed from the body when it has no escapes.
struct Name;

impl<'de> serde::de::DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
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
    fn json_numbers_as_written_and_a_stop_stops_the_parse() {
        let numbers = all_json(r#"[5555555555554444,-12,1.5,[{"k":[0]}]]"#);
        let texts: Vec<&str> = numbers.iter().map(|(_, _, v)| v.as_str()).collect();
        assert_eq!(texts, ["5555555555554444", "-12", "1.5", "k", "0"]);
        assert_eq!(numbers[4].0, "/3/0/k/0");
        assert!(json::<()>(br#"{"a":"x"} junk"#, &mut |_, _, _| ControlFlow::Continue(())).is_err());
        assert!(json::<()>(br#"{"a":"x""#, &mut |_, _, _| ControlFlow::Continue(())).is_err());
        let stopped = json(br#"{"a":"stop","b": nonsense"#, &mut |_, _, v| {
            if v == b"stop" {
                ControlFlow::Break(7)
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(stopped.unwrap(), ControlFlow::Break(7));
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
