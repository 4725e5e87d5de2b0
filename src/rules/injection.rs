//! `[route.injection]`: SQL injection and XSS patterns in the values of a request.

use serde::Deserialize;
use toml::Spanned;

use super::diag::Ctx;
use super::validate::valid_pointer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectionAction {
    /// 403 `injection_detected`.
    Reject,
    /// Recorded (`would_block`) and forwarded.
    Monitor,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    pub action: InjectionAction,
    /// `None`: every string value of the request.
    pub fields: Option<Fields>,
}

/// The values `fields` names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// JSON pointers, exactly.
    pointers: Vec<String>,
    /// `"/shipping/*"` as `"/shipping/"`: every value below.
    below: Vec<String>,
    /// Form or query names.
    names: Vec<String>,
}

impl Fields {
    /// Adds one entry of `fields`; false when it is not a valid one.
    fn add(&mut self, f: &str) -> bool {
        if f.starts_with('/') {
            let (base, below) = match f.strip_suffix("/*") {
                Some(base) => (base, true),
                None => (f, false),
            };
            if !valid_pointer(base) || base.contains('*') {
                return false;
            }
            if below {
                self.below.push(format!("{base}/"));
            } else {
                self.pointers.push(base.to_owned());
            }
        } else {
            if f.is_empty() || f.chars().any(char::is_control) {
                return false;
            }
            self.names.push(f.to_owned());
        }
        true
    }

    /// `fields` from a list known to be valid.
    #[cfg(test)]
    pub fn of(list: &[&str]) -> Fields {
        let mut out = Fields::default();
        for f in list {
            assert!(out.add(f), "{f}");
        }
        out
    }

    pub fn has_pointer(&self, pointer: &str) -> bool {
        self.pointers.iter().any(|p| p == pointer) || self.below.iter().any(|p| pointer.starts_with(p.as_str()))
    }

    pub fn has_name(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }
}

/// `[route.injection]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInjection {
    /// `"reject"` (default), `"monitor"` or `"off"`.
    pub action: Option<Spanned<String>>,
    pub fields: Option<Spanned<Vec<Spanned<String>>>>,
}

pub(super) fn compile(cx: &mut Ctx<'_>, raw: &RawInjection) -> Injection {
    let action = match raw.action.as_ref().map(|a| (a, a.get_ref().as_str())) {
        None | Some((_, "reject")) => InjectionAction::Reject,
        Some((_, "monitor")) => InjectionAction::Monitor,
        Some((_, "off")) => InjectionAction::Off,
        Some((a, other)) => {
            cx.err(
                &a.span(),
                format!("unknown injection action \"{other}\" (expected \"reject\", \"monitor\" or \"off\")"),
            );
            InjectionAction::Reject
        }
    };
    let fields = raw.fields.as_ref().map(|list| {
        if list.get_ref().is_empty() {
            cx.err(&list.span(), "fields must not be empty (omit it to check every string value)");
        }
        let mut out = Fields::default();
        for item in list.get_ref() {
            let f = item.get_ref().as_str();
            if !out.add(f) {
                let what = if f.starts_with('/') {
                    "a JSON pointer such as \"/shipping/name\", or \"/shipping/*\" for every value below"
                } else {
                    "a form or query name, or a JSON pointer starting with /"
                };
                cx.err(&item.span(), format!("invalid field \"{f}\" ({what})"));
            }
        }
        out
    });
    Injection { action, fields }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn fields_match_pointers_below_and_names() {
        let f = Fields::of(&["/note", "/shipping/*", "q"]);
        assert!(f.has_pointer("/note") && f.has_pointer("/shipping/name") && f.has_pointer("/shipping/lines/0"));
        assert!(!f.has_pointer("/notes") && !f.has_pointer("/shipping") && !f.has_pointer("/billing/name"));
        assert!(f.has_name("q") && !f.has_name("query"));
    }
}
