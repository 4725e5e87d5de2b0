//! `[route.validate]`, compiled: media types lowercased, header names parsed, the JSON schema
//! and every regex compiled once. The checks themselves live in `crate::guard::validate`.

use http::HeaderName;
use regex::Regex;
use std::fmt;
use std::sync::Arc;

/// Compiled `[route.validate]`.
#[derive(Debug, Clone)]
pub struct Validate {
    /// Allowed media types, lowercased, without parameters (`None`: any).
    pub content_type: Option<Vec<String>>,
    /// `validate.max_body` as written (already folded into `Route::max_body`).
    pub max_body: Option<u64>,
    /// Headers that must be present.
    pub required_headers: Vec<HeaderName>,
    /// Content codings besides `identity` that a body-reading route accepts, lowercased.
    pub content_encoding: Vec<String>,
    /// Compiled schema for JSON bodies.
    pub json_schema: Option<Arc<jsonschema::Validator>>,
    /// Field rules in declaration order.
    pub fields: Vec<FieldRule>,
}

impl Validate {
    /// Checks that apply to a JSON body: a schema or any JSON-pointer field.
    pub fn has_json_checks(&self) -> bool {
        self.json_schema.is_some() || self.fields.iter().any(|f| f.at.is_pointer())
    }

    /// Checks that apply to a form body: any named field.
    pub fn has_form_checks(&self) -> bool {
        self.fields.iter().any(|f| !f.at.is_pointer())
    }

    /// Whether any check reads the body.
    pub fn needs_body(&self) -> bool {
        self.json_schema.is_some() || !self.fields.is_empty()
    }
}

/// Where a field rule looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldAt {
    /// `at = "/a/b"`: a JSON pointer into a JSON body.
    Pointer(String),
    /// `at = "name"`: a form body field or query parameter.
    Name(String),
}

impl FieldAt {
    /// As written in the rule.
    pub fn as_str(&self) -> &str {
        match self {
            FieldAt::Pointer(s) | FieldAt::Name(s) => s,
        }
    }

    /// Whether this is a JSON pointer.
    pub fn is_pointer(&self) -> bool {
        matches!(self, FieldAt::Pointer(_))
    }
}

/// `type = …` of a field rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A string (in form/query: any value).
    String,
    /// A whole number (JSON: an integer literal without fraction or exponent).
    Integer,
    /// Any finite number.
    Number,
    /// `true` or `false`.
    Boolean,
}

impl FieldType {
    /// `"must be an integer"`-style phrase.
    pub fn must_be(self) -> &'static str {
        match self {
            FieldType::String => "must be a string",
            FieldType::Integer => "must be an integer",
            FieldType::Number => "must be a number",
            FieldType::Boolean => "must be a boolean",
        }
    }
}

/// A numeric bound from the rule file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// Integer bound.
    Int(i64),
    /// Float bound (type `number` only; finite).
    Float(f64),
}

impl Bound {
    /// As `f64` (for `number` comparisons).
    pub fn as_f64(self) -> f64 {
        match self {
            Bound::Int(i) => i as f64,
            Bound::Float(f) => f,
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Int(i) => write!(f, "{i}"),
            Bound::Float(x) => write!(f, "{x}"),
        }
    }
}

/// One allowed value of `one_of`.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// String.
    Str(String),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Bool(bool),
}

/// One compiled `fields = [ … ]` entry. Every rule is required when the request carries the
/// body kind it applies to (pointer → JSON body, name → form body); a name rule also applies to
/// a query parameter of that name when one is present.
#[derive(Debug, Clone)]
pub struct FieldRule {
    /// Pointer or name.
    pub at: FieldAt,
    /// Expected type (`None`: any value, only presence and `one_of` are checked).
    pub ty: Option<FieldType>,
    /// Inclusive minimum (integer/number).
    pub min: Option<Bound>,
    /// Inclusive maximum (integer/number).
    pub max: Option<Bound>,
    /// Regex the string must match (compiled with size limits; anchor it yourself).
    pub pattern: Option<Regex>,
    /// Maximum length in characters (string).
    pub max_len: Option<usize>,
    /// Allowed values.
    pub one_of: Option<Vec<Literal>>,
}

/// RFC 6901: a JSON pointer escapes `~` only as `~0` or `~1`.
pub(crate) fn valid_pointer(p: &str) -> bool {
    let b = p.as_bytes();
    b.iter().enumerate().all(|(i, &c)| c != b'~' || matches!(b.get(i + 1), Some(b'0' | b'1')))
}
