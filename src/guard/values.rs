//! The values of a request as the backend will read them: the query's names and values
//! (percent-decoded, `+` a space), then the body by its content type: a JSON body's names,
//! strings and numbers (escapes decoded), a form body's names and values (decoded). The
//! content guards look at these, never at the encoded bytes alone.

use std::borrow::Cow;
use std::ops::ControlFlow;

use super::json_doc::JsonDoc;
pub use super::place::{Place, Text, Visit};
use super::Reject;
use crate::body::Body;
use crate::decoding::{Coding, Decoder, Pull};
use crate::rules::Route;
use http::Request;

/// A request's buffered body as the backend will read it (`content`: its [`Content`]): decoded
/// when it came compressed (`content-encoding` gzip, deflate or br, which Express and most
/// frameworks inflate before the application sees the body), so that a compressed body does
/// not slip past a content guard. A coding payguard cannot decode is 415, a corrupt body 400, one that decodes to more
/// than the route's body cap 413: what cannot be looked at is not passed.
pub fn body_of<'a>(req: &'a Request<Body>, content: Content, route: Option<&Route>) -> Result<Cow<'a, [u8]>, Reject> {
    let raw = req.body().buffered().unwrap_or_default();
    let coding = content.coding.map_err(|Undecodable| Reject::UnsupportedEncoding)?;
    let Some(coding) = coding.filter(|_| !raw.is_empty()) else { return Ok(Cow::Borrowed(raw)) };
    let cap = route.map_or(u64::MAX, |r| r.max_body);
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

/// The request's JSON body (decoded as [`body_of`] decodes it), parsed once per request: the
/// first call parses it into the exchange's `json`, later ones find it there. A body that does
/// not parse is kept too, with its error. Refusals as [`body_of`]'s. Takes the exchange's fields,
/// so that a guard can hold its route's rules meanwhile.
pub fn json_doc<'a>(
    json: &'a mut Option<JsonDoc>,
    req: &Request<Body>,
    content: Content,
    route: Option<&Route>,
) -> Result<&'a JsonDoc, Reject> {
    if json.is_none() {
        *json = Some(JsonDoc::parse(&body_of(req, content, route)?));
    }
    Ok(json.get_or_insert_default())
}

/// The request's JSON body as sent, for a guard that reads one field of it (a key source): the
/// shared document when the body has no content coding (it was then parsed from the bytes as
/// sent), else a document of the raw bytes, kept in `own`. Never refuses: a body that does not
/// parse has no field.
pub fn json_as_sent<'a>(
    json: &'a mut Option<JsonDoc>,
    own: &'a mut Option<JsonDoc>,
    req: &Request<Body>,
    content: Content,
) -> &'a JsonDoc {
    let slot = if content.coding == Ok(None) { json } else { own };
    if slot.is_none() {
        *slot = Some(JsonDoc::parse(req.body().buffered().unwrap_or_default()));
    }
    slot.get_or_insert_default()
}

/// What a request's headers say of its body: its kind, and its content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Content {
    pub kind: Kind,
    pub coding: Result<Option<Coding>, Undecodable>,
}

/// A `content-encoding` payguard cannot decode ([`Coding::of`]'s error): 415 from a guard that
/// reads the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undecodable;

impl Content {
    pub fn of(headers: &http::HeaderMap) -> Content {
        Content {
            kind: Kind::of(headers.get(http::header::CONTENT_TYPE).map(http::HeaderValue::as_bytes)),
            coding: Coding::of(headers).map_err(|_| Undecodable),
        }
    }
}

/// The request's [`Content`], read from its headers once per request (`slot`: the exchange's
/// `content`), not by every guard that looks at the body.
pub fn content(slot: &mut Option<Content>, req: &Request<Body>) -> Content {
    *slot.get_or_insert_with(|| Content::of(req.headers()))
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

/// Every name and value of `name=value&…` (a query when `query`, else a form body).
pub fn pairs<B>(data: &[u8], query: bool, visit: &mut Visit<'_, B>) -> ControlFlow<B> {
    for (name, value) in form_urlencoded::parse(data) {
        visit(if query { Place::QueryName } else { Place::FormName }, Text::String, name.as_bytes())?;
        let place = if query { Place::Query(&name) } else { Place::Form(&name) };
        visit(place, Text::String, value.as_bytes())?;
    }
    ControlFlow::Continue(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

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
