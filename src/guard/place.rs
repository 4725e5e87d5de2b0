//! Where a request value is, for an audit line, and what kind of value it is: shared by the
//! walks over a request's values (`values`, `json_doc`) and the guards that look at them.

use std::ops::ControlFlow;

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

/// Whether a value is a JSON number (written as digits, not a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    String,
    Number,
}

pub type Visit<'v, B> = dyn FnMut(Place<'_>, Text, &[u8]) -> ControlFlow<B> + 'v;
