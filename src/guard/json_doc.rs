//! A JSON body read once and kept, in document order, for every body guard of a request:
//! `[route.validate]`'s `fields` look values up by pointer, `card_data` and `injection` visit
//! every name, string and number. One parse instead of one per guard, and unlike a
//! `serde_json::Value`, a member repeated in an object is kept each time it appears (a lookup
//! takes the last, as `Value` and the backend's `JSON.parse` do; a visit sees them all).
//!
//! Nodes are flat and small (16 bytes of value, 12 of key, 4 of extent): no string per pointer is
//! stored, so a deeply nested body costs what a `Value` of it would, not its depth times more.

use std::borrow::Cow;
use std::ops::ControlFlow;

use serde::de::DeserializeSeed as _;

use super::place::{Place, Text, Visit};

/// One JSON value of a document, as read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// A non-negative integer.
    PosInt(u64),
    /// A negative integer.
    NegInt(i64),
    Float(f64),
    String(&'a str),
    Array,
    Object,
}

impl<'a> From<&'a serde_json::Value> for Json<'a> {
    fn from(v: &'a serde_json::Value) -> Json<'a> {
        use serde_json::Value;
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Json::PosInt(u),
                (None, Some(i)) => Json::NegInt(i),
                _ => Json::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Json::String(s),
            Value::Array(_) => Json::Array,
            Value::Object(_) => Json::Object,
        }
    }
}

impl Json<'_> {
    /// A number as serde_json writes it (`1250`, `-3`, `1.5`); `None` for any other value.
    pub fn number_text(self) -> Option<String> {
        match self {
            Json::PosInt(u) => Some(itoa::Buffer::new().format(u).to_owned()),
            Json::NegInt(i) => Some(itoa::Buffer::new().format(i).to_owned()),
            Json::Float(f) => Some(float_text(f)),
            _ => None,
        }
    }
}

fn float_text(f: f64) -> String {
    serde_json::Number::from_f64(f).map(|n| n.to_string()).unwrap_or_default()
}

/// Where a node sits in its parent.
#[derive(Debug, Clone, Copy)]
enum Key {
    Root,
    /// A member of an object: its name, decoded, in [`JsonDoc::text`].
    Name(u32, u32),
    /// An element of an array.
    Index(u32),
}

/// A value as stored: strings point into [`JsonDoc::text`].
#[derive(Debug, Clone, Copy)]
enum Stored {
    Null,
    Bool(bool),
    PosInt(u64),
    NegInt(i64),
    Float(f64),
    String(u32, u32),
    Array,
    Object,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    key: Key,
    value: Stored,
    /// The index after this node's last descendant (its next sibling's, if it has one).
    end: u32,
}

/// A parsed JSON body. When the body does not parse, the nodes read before the error are kept
/// (a visit sees them, as the backend's streaming parsers would) and [`JsonDoc::error`] says why.
#[derive(Debug, Default)]
pub struct JsonDoc {
    nodes: Vec<Node>,
    /// Every decoded string and member name, one after another.
    text: String,
    error: Option<serde_json::Error>,
}

impl JsonDoc {
    /// Parses `body` (the whole of it must be one JSON value).
    pub fn parse(body: &[u8]) -> JsonDoc {
        // Room for an ordinary order's values at once (no regrowth on the common path), at most
        // 2 KiB before the body shows it needs more.
        let nodes = Vec::with_capacity((body.len() / 8).min(64));
        let mut doc = JsonDoc { nodes, text: String::with_capacity(body.len() / 2), error: None };
        if u32::try_from(body.len()).is_err() {
            doc.error = Some(serde::de::Error::custom("body too large to index"));
            return doc;
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let parsed = Build { doc: &mut doc, key: Key::Root }.deserialize(&mut de).and_then(|()| de.end());
        if let Err(e) = parsed {
            // Containers the error cut short end where the nodes end.
            let len = doc.len();
            for node in doc.nodes.iter_mut().filter(|n| n.end == u32::MAX) {
                node.end = len;
            }
            doc.error = Some(e);
        }
        doc
    }

    /// Why the body is not one JSON value, if it is not.
    pub fn error(&self) -> Option<&serde_json::Error> {
        self.error.as_ref()
    }

    fn len(&self) -> u32 {
        // At most one node per byte of a body that fits in u32 (checked in `parse`).
        u32::try_from(self.nodes.len()).unwrap_or(u32::MAX)
    }

    fn str(&self, start: u32, end: u32) -> &str {
        self.text.get(start as usize..end as usize).unwrap_or_default()
    }

    fn json(&self, node: &Node) -> Json<'_> {
        match node.value {
            Stored::Null => Json::Null,
            Stored::Bool(b) => Json::Bool(b),
            Stored::PosInt(u) => Json::PosInt(u),
            Stored::NegInt(i) => Json::NegInt(i),
            Stored::Float(f) => Json::Float(f),
            Stored::String(s, e) => Json::String(self.str(s, e)),
            Stored::Array => Json::Array,
            Stored::Object => Json::Object,
        }
    }

    /// The value at an RFC 6901 pointer, as `serde_json::Value::pointer` finds it: of a name
    /// repeated in an object, the last. `pointer` is one `payguard check` accepted (every `~`
    /// followed by `0` or `1`). `None` when it is not there, or the body did not parse.
    pub fn get(&self, pointer: &str) -> Option<Json<'_>> {
        if self.error.is_some() {
            return None;
        }
        let mut at = 0usize;
        if !pointer.is_empty() {
            let rest = pointer.strip_prefix('/')?;
            for token in rest.split('/') {
                at = self.child(at, token)?;
            }
        }
        self.nodes.get(at).map(|n| self.json(n))
    }

    /// The child of the container at `at` that `token` (still escaped) names.
    fn child(&self, at: usize, token: &str) -> Option<usize> {
        let parent = self.nodes.get(at)?;
        let index = match parent.value {
            Stored::Array => Some(array_index(token)?),
            Stored::Object => None,
            _ => return None,
        };
        let mut found = None;
        let mut i = at + 1;
        while i < parent.end as usize {
            let node = self.nodes.get(i)?;
            match node.key {
                Key::Index(n) if index == Some(n as usize) => return Some(i),
                Key::Name(s, e) if token_names(token, self.str(s, e)) => found = Some(i),
                _ => {}
            }
            i = node.end as usize;
        }
        found
    }

    /// Every string value (not names, not numbers) in document order, with what
    /// [`JsonDoc::pointer`] takes to say where it is: for a caller that needs a place rarely.
    pub fn strings(&self) -> impl Iterator<Item = (usize, &str)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| match n.value {
            Stored::String(s, e) => Some((i, self.str(s, e))),
            _ => None,
        })
    }

    /// The pointer of the `index`th node, built by descending from the root.
    pub fn pointer(&self, index: usize) -> String {
        let mut pointer = String::new();
        let mut at = 0usize;
        while at < index {
            let Some(parent) = self.nodes.get(at) else { break };
            // The child whose subtree holds `index`.
            let mut child = at + 1;
            while let Some(node) =
                self.nodes.get(child).filter(|n| n.end as usize <= index && child < parent.end as usize)
            {
                child = node.end as usize;
            }
            match self.nodes.get(child).map(|n| n.key) {
                Some(Key::Name(s, e)) => {
                    pointer.push('/');
                    pointer.push_str(&escape(self.str(s, e)));
                }
                Some(Key::Index(n)) => {
                    pointer.push('/');
                    pointer.push_str(itoa::Buffer::new().format(n));
                }
                Some(Key::Root) | None => break,
            }
            at = child;
        }
        pointer
    }

    /// Every member name, string and number in document order (booleans and nulls are not
    /// visited), each with its place; numbers as serde_json writes them.
    pub fn visit<B>(&self, visit: &mut Visit<'_, B>) -> ControlFlow<B> {
        let mut pointer = String::new();
        // The containers around the node visited: where each ends, and its pointer's length.
        let mut open: Vec<(u32, usize)> = Vec::new();
        let mut number = itoa::Buffer::new();
        for (i, node) in self.nodes.iter().enumerate() {
            while open.last().is_some_and(|&(end, _)| end as usize <= i) {
                open.pop();
            }
            pointer.truncate(open.last().map_or(0, |&(_, len)| len));
            match node.key {
                Key::Root => {}
                Key::Name(s, e) => {
                    let name = self.str(s, e);
                    visit(Place::JsonName(&pointer), Text::String, name.as_bytes())?;
                    pointer.push('/');
                    pointer.push_str(&escape(name));
                }
                Key::Index(n) => {
                    pointer.push('/');
                    pointer.push_str(number.format(n));
                }
            }
            let place = Place::Json(&pointer);
            match node.value {
                Stored::String(s, e) => visit(place, Text::String, self.str(s, e).as_bytes())?,
                Stored::PosInt(u) => visit(place, Text::Number, number.format(u).as_bytes())?,
                Stored::NegInt(n) => visit(place, Text::Number, number.format(n).as_bytes())?,
                Stored::Float(f) => visit(place, Text::Number, float_text(f).as_bytes())?,
                Stored::Array | Stored::Object => open.push((node.end, pointer.len())),
                Stored::Null | Stored::Bool(_) => {}
            }
        }
        ControlFlow::Continue(())
    }
}

/// An array index as `serde_json::Value::pointer` reads one: digits, no `+`, no leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// Whether a pointer token (`~0` for `~`, `~1` for `/`) names `name`, without unescaping it
/// into a new string.
fn token_names(token: &str, name: &str) -> bool {
    let (mut t, mut n) = (token.as_bytes().iter(), name.as_bytes().iter());
    loop {
        let want = match t.next() {
            None => return n.next().is_none(),
            Some(b'~') => match t.next() {
                Some(b'0') => b'~',
                Some(b'1') => b'/',
                _ => return false,
            },
            Some(&b) => b,
        };
        if n.next() != Some(&want) {
            return false;
        }
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

/// Reads one value into the document.
struct Build<'a> {
    doc: &'a mut JsonDoc,
    key: Key,
}

impl Build<'_> {
    fn push(&mut self, value: Stored) -> usize {
        let at = self.doc.nodes.len();
        let end = if matches!(value, Stored::Array | Stored::Object) { u32::MAX } else { self.doc.len() + 1 };
        self.doc.nodes.push(Node { key: self.key, value, end });
        at
    }

    fn close(&mut self, at: usize) {
        let end = self.doc.len();
        if let Some(node) = self.doc.nodes.get_mut(at) {
            node.end = end;
        }
    }
}

/// Appends `s` to the document's text; where it lies.
fn keep(text: &mut String, s: &str) -> (u32, u32) {
    let start = text.len();
    text.push_str(s);
    // The text is at most the body's length, which `parse` checked fits in u32.
    (u32::try_from(start).unwrap_or(u32::MAX), u32::try_from(text.len()).unwrap_or(u32::MAX))
}

impl<'de> serde::de::DeserializeSeed<'de> for Build<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Build<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E: serde::de::Error>(mut self, v: &str) -> Result<(), E> {
        let (s, e) = keep(&mut self.doc.text, v);
        self.push(Stored::String(s, e));
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(mut self, n: u64) -> Result<(), E> {
        self.push(Stored::PosInt(n));
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(mut self, n: i64) -> Result<(), E> {
        self.push(if n < 0 { Stored::NegInt(n) } else { Stored::PosInt(n.unsigned_abs()) });
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(mut self, n: f64) -> Result<(), E> {
        self.push(Stored::Float(n));
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(mut self, b: bool) -> Result<(), E> {
        self.push(Stored::Bool(b));
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(mut self) -> Result<(), E> {
        self.push(Stored::Null);
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let at = self.push(Stored::Array);
        for i in 0u32.. {
            if seq.next_element_seed(Build { doc: &mut *self.doc, key: Key::Index(i) })?.is_none() {
                break;
            }
        }
        self.close(at);
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let at = self.push(Stored::Object);
        while let Some(name) = map.next_key_seed(Name(&mut self.doc.text))? {
            map.next_value_seed(Build { doc: &mut *self.doc, key: Key::Name(name.0, name.1) })?;
        }
        self.close(at);
        Ok(())
    }
}

/// Reads a member name into the document's text.
struct Name<'a>(&'a mut String);

impl<'de> serde::de::DeserializeSeed<'de> for Name<'_> {
    type Value = (u32, u32);

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(u32, u32), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Name<'_> {
    type Value = (u32, u32);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(u32, u32), E> {
        Ok(keep(self.0, v))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::Value;

    fn visited(body: &str) -> Vec<(String, Text, String)> {
        let mut out = Vec::new();
        let _ = JsonDoc::parse(body.as_bytes()).visit::<()>(&mut |p, t, v| {
            out.push((p.describe(), t, String::from_utf8_lossy(v).into_owned()));
            ControlFlow::Continue(())
        });
        out
    }

    #[test]
    fn visits_names_strings_and_numbers_in_document_order_with_their_pointers() {
        assert_eq!(
            visited(r#"{"a/b":{"c":"\u0041"},"n":[1,"x",null],"t":true,"n":-2}"#),
            [
                ("/ (a name)".into(), Text::String, "a/b".into()),
                ("/a~1b (a name)".into(), Text::String, "c".into()),
                ("/a~1b/c".into(), Text::String, "A".into()),
                ("/ (a name)".into(), Text::String, "n".into()),
                ("/n/0".into(), Text::Number, "1".into()),
                ("/n/1".into(), Text::String, "x".into()),
                ("/ (a name)".into(), Text::String, "t".into()),
                ("/ (a name)".into(), Text::String, "n".into()),
                ("/n".into(), Text::Number, "-2".into()),
            ]
        );
        let numbers = visited(r#"[5555555555554444,-12,1.5,[{"k":[0]}],"s"]"#);
        let texts: Vec<&str> = numbers.iter().map(|(_, _, v)| v.as_str()).collect();
        assert_eq!(texts, ["5555555555554444", "-12", "1.5", "k", "0", "s"]);
        assert_eq!(numbers[4].0, "/3/0/k/0");
        assert_eq!(numbers[5].0, "/4");
    }

    #[test]
    fn strings_with_the_pointer_each_is_at() {
        for body in [
            r#"{"a/b":{"c":"\u0041","d":[{},"x",["y"]]},"n":[1,"z"],"s":"w","":{"~":"v"}}"#,
            r#"["a",["b",[],{"c":["d"]}],"e"]"#,
            r#""top""#,
        ] {
            let doc = JsonDoc::parse(body.as_bytes());
            let mut expected = Vec::new();
            let _ = doc.visit::<()>(&mut |p, t, v| {
                if t == Text::String && matches!(p, Place::Json(_)) {
                    let at = match p {
                        Place::Json(at) => at.to_owned(),
                        _ => unreachable!(),
                    };
                    expected.push((at, String::from_utf8_lossy(v).into_owned()));
                }
                ControlFlow::Continue(())
            });
            let found: Vec<(String, String)> = doc.strings().map(|(i, s)| (doc.pointer(i), s.to_owned())).collect();
            assert_eq!(found, expected, "{body}");
            assert!(!found.is_empty());
        }
    }

    #[test]
    fn a_body_that_does_not_parse_keeps_what_came_before_the_error() {
        let doc = JsonDoc::parse(br#"{"a":"x","b":["y", nonsense"#);
        assert!(doc.error().is_some());
        assert_eq!(doc.get("/a"), None);
        let mut seen = Vec::new();
        let _ = doc.visit::<()>(&mut |p, _, v| {
            seen.push((p.describe(), String::from_utf8_lossy(v).into_owned()));
            ControlFlow::Continue(())
        });
        assert_eq!(seen.last().unwrap(), &("/b/0".to_string(), "y".to_string()));
        assert!(JsonDoc::parse(br#"{"a":"x"} junk"#).error().is_some());
        assert!(JsonDoc::parse(b"").error().is_some());
        let stopped =
            doc.visit(&mut |_, _, v| if v == b"x" { ControlFlow::Break(7) } else { ControlFlow::Continue(()) });
        assert_eq!(stopped, ControlFlow::Break(7));
    }

    /// Pointers that `payguard check` accepts, into documents with repeated names, nesting,
    /// escapes and every kind of value: the same answer as `serde_json::Value::pointer`.
    #[test]
    fn lookups_agree_with_serde_json_values() {
        let bodies = [
            r#"{"amount":1250,"currency":"EUR","items":[{"sku":"A","qty":2},{"sku":"B"}],"x":null,"t":false}"#,
            r#"{"a":{"b":1},"a":2}"#,
            r#"{"a":2,"a":{"b":1}}"#,
            r#"{"a":{"b":{"c":1}},"a":{"b":3},"a":{"d":[1,2]}}"#,
            r#"{"a~b":1,"a/b":2,"~1":3,"":4,"0":5}"#,
            r#"[[1,2,[3]],{"0":"zero"},-7,1.5,18446744073709551615,-9223372036854775808,1e300]"#,
            r#""just a string""#,
            r#"{"":{"":{"":"deep"}},"e":{},"f":[]}"#,
        ];
        let pointers = [
            "",
            "/amount",
            "/currency",
            "/items",
            "/items/0",
            "/items/1/sku",
            "/items/01",
            "/items/2",
            "/items/-1",
            "/items/+1",
            "/x",
            "/t",
            "/a",
            "/a/b",
            "/a/b/c",
            "/a/d/1",
            "/a~0b",
            "/a~1b",
            "/~01",
            "/",
            "/0",
            "/0/0",
            "/0/2/0",
            "/1/0",
            "/2",
            "/3",
            "/4",
            "/5",
            "/6",
            "//",
            "///",
            "/e",
            "/f",
            "/f/0",
            "/nope",
        ];
        for body in bodies {
            let value: Value = serde_json::from_str(body).unwrap();
            let doc = JsonDoc::parse(body.as_bytes());
            assert!(doc.error().is_none(), "{body}");
            for p in pointers {
                assert_eq!(doc.get(p), value.pointer(p).map(Json::from), "{body} at {p:?}");
            }
        }
    }

    #[test]
    fn a_node_is_32_bytes() {
        // What a deeply nested or long body costs: no more than a `serde_json::Value` of it.
        assert_eq!(std::mem::size_of::<Node>(), 32);
        assert_eq!(std::mem::size_of::<Value>(), 32);
    }

    #[test]
    fn tokens_name_their_unescaped_names() {
        assert!(token_names("a~1b", "a/b"));
        assert!(token_names("a~0b", "a~b"));
        assert!(token_names("~01", "~1"));
        assert!(!token_names("a~1b", "a~1b"));
        assert!(!token_names("ab", "abc"));
        assert!(!token_names("abc", "ab"));
        assert!(token_names("", ""));
    }
}
