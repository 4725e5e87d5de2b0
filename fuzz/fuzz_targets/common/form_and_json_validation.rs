//! `payguard::guard::validate::{check_headers, check_body}` with `Validate`s compiled from a
//! fixed rule set (every field type, bounds, patterns, `one_of`, JSON pointers with `~0`/`~1`
//! and array indices, named form/query fields, required headers, and JSON schemas written to
//! a temporary directory once), over arbitrary content types, bodies, query strings and
//! headers. Errors are rendered with `Display` as the proxy does. A panic is a bug.
//!
//! Input: a 2-byte [`Knobs`] block (decoded with `arbitrary`), then the text format of
//! `common/mod.rs`: first line = the raw query string, header lines (`Content-Type`,
//! `Idempotency-Key`, ...), an empty line, the body.
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use payguard::guard::validate::{check_body, check_headers};
use payguard::rules::Validate;

const CHECKOUT_SCHEMA: &str = include_str!("../../../rules/schemas/checkout.json");

/// Exercises more schema keywords than the shipped checkout schema.
const RICH_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["amount", "items"],
  "properties": {
    "amount": { "type": "object", "required": ["total", "currency"],
                "properties": { "total": { "type": "number", "minimum": 0, "exclusiveMaximum": 1e9 },
                                "currency": { "enum": ["CNY", "USD", "EUR"] } } },
    "items": { "type": "array", "minItems": 1, "maxItems": 50,
               "items": { "type": "object", "required": ["sku"],
                          "properties": { "sku": { "type": "string", "pattern": "^[A-Z0-9-]{3,20}$" },
                                          "qty": { "type": "integer", "minimum": 1, "multipleOf": 1 } } } },
    "note": { "type": ["string", "null"], "maxLength": 200 },
    "meta": { "type": "object", "additionalProperties": { "type": "string" }, "propertyNames": { "maxLength": 16 } }
  },
  "additionalProperties": false
}"#;

const RULES: &str = r#"
[[route]]
name = "json-schema"
match = { path = "/checkout", methods = ["POST"] }
[route.validate]
content_type = ["application/json"]
required_headers = ["Idempotency-Key"]
json_schema = "checkout.json"
fields = [
  { at = "/order_id", type = "string", pattern = "^ord_[0-9a-f]{16}$" },
  { at = "/card/number", type = "string", pattern = "^[0-9]{12,19}$" },
  { at = "/card/cvc", type = "string", max_len = 4 },
]

[[route]]
name = "json-rich"
match = { path = "/orders", methods = ["POST"] }
[route.validate]
content_type = ["application/json", "application/merge-patch+json"]
json_schema = "rich.json"
fields = [
  { at = "/amount/total", type = "number", min = 0.01, max = 100000000 },
  { at = "/items/0/qty", type = "integer", min = 1, max = 20 },
  { at = "/items/0/sku", type = "string", max_len = 20, one_of = ["SKU-1", "SKU-2", "大"] },
  { at = "/a~1b/c~0d", type = "boolean", one_of = [true] },
  { at = "/", one_of = ["x", 1, 2.5, false] },
  { at = "/email", type = "string", max_len = 254, pattern = '^[^@\s]+@[^@\s]+\.[^@\s]+$' },
]

[[route]]
name = "form"
match = { path = "/login", methods = ["POST"] }
[route.validate]
content_type = ["application/x-www-form-urlencoded"]
fields = [
  { at = "username", type = "string", max_len = 64, pattern = '^\w+$' },
  { at = "amount", type = "number", min = -1.5, max = 1e6 },
  { at = "count", type = "integer", min = -9223372036854775808, max = 9223372036854775807 },
  { at = "remember", type = "boolean" },
  { at = "currency", type = "string", one_of = ["CNY", "USD"] },
  { at = "status", one_of = ["pending", 1, true, 0.5] },
]

[[route]]
name = "mixed"
match = { path = "/mixed" }
[route.validate]
fields = [
  { at = "/id", type = "integer", min = 0 },
  { at = "id", type = "integer", min = 0 },
  { at = "q", type = "string", max_len = 8 },
]

[[route]]
name = "query-only"
match = { path = "/search", methods = ["GET"] }
[route.validate]
required_headers = ["x-request-id", "authorization"]
fields = [
  { at = "page", type = "integer", min = 1, max = 1000 },
  { at = "status", one_of = ["pending", "paid"] },
  { at = "price", type = "number" },
]
"#;

fn validators() -> &'static [Validate] {
    static V: OnceLock<Vec<Validate>> = OnceLock::new();
    V.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("payguard-fuzz-validate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("checkout.json"), CHECKOUT_SCHEMA).expect("write schema");
        std::fs::write(dir.join("rich.json"), RICH_SCHEMA).expect("write schema");
        let files = vec![(dir.join("f.toml"), RULES.to_string())];
        let set = match payguard::rules::load_sources(&files) {
            Ok(set) => set,
            Err(d) => panic!("fixed rule set does not compile: {d:?}"),
        };
        let _ = std::fs::remove_dir_all(&dir);
        let out: Vec<Validate> = set.routes().iter().filter_map(|r| r.validate.clone()).collect();
        assert_eq!(out.len(), 5);
        out
    })
}

/// Fixed-size knobs, decoded with `arbitrary`; the rest of the input is the text format of
/// `common/mod.rs`.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Knobs {
    /// Which compiled `Validate` (modulo the number of routes).
    route: u8,
    /// bit 0: no query string at all (`None`, not `Some("")`); bit 1: give `check_body` no
    /// content type even when the headers carry one; bit 2: give `check_body` the raw
    /// `Content-Type` bytes lossily decoded even when `HeaderValue` would reject them.
    flags: u8,
}

#[derive(Debug)]
struct Input {
    knobs: Knobs,
    /// First line: the raw query string (without `?`).
    query: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let knobs = Knobs::arbitrary(u)?;
        let text = super::parse(u.bytes(u.len())?);
        Ok(Input { knobs, query: text.first_line, headers: text.headers, body: text.body })
    }
}

pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let vs = validators();
    let v = &vs[usize::from(input.knobs.route) % vs.len()];
    let flags = input.knobs.flags;
    let headers = super::header_map(&input.headers);
    let query = (flags & 1 == 0).then_some(input.query.as_str());

    if let Err(e) = check_headers(v, &headers, query) {
        let _ = e.to_string();
        let _ = e.is_media_type();
    }

    let raw_ct: Option<String> = input
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    let ct: Option<&str> = if flags & 2 != 0 {
        None
    } else if flags & 4 != 0 {
        raw_ct.as_deref()
    } else {
        headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
    };
    if let Err(e) = check_body(v, ct, &input.body) {
        let _ = e.to_string();
        let _ = payguard::guard::Reject::from(e).status();
    }
}
