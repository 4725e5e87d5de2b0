//! `defaults.hosts`: the names this shop answers to. A request for any other Host /
//! `:authority` is misdirected (421): a client that reached payguard with a stale DNS entry, a
//! coalesced HTTP/2 connection meant for another site, or a scanner trying names.

use std::collections::HashSet;

use super::diag::Ctx;
use super::raw::SpannedList;
use super::router::{normalize_host, valid_host};

/// Exact names and `*.` suffixes, lowercase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    exact: HashSet<String>,
    /// `.shop.example.com` for `*.shop.example.com`: any name below it, not the name itself.
    suffixes: Vec<String>,
}

impl Hosts {
    /// Whether `host` (as sent: any case, a port, a trailing dot) is one of the names. A
    /// request without a host is not.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return false };
        let host = normalize_host(host);
        self.exact.contains(host.as_ref())
            || self.suffixes.iter().any(|s| host.len() > s.len() && host.ends_with(s.as_str()))
    }
}

pub(super) fn compile(cx: &mut Ctx<'_>, list: &SpannedList) -> Hosts {
    let mut out = Hosts::default();
    if list.get_ref().is_empty() {
        cx.err(&list.span(), "hosts must not be empty (omit it to accept any host)");
    }
    for item in list.get_ref() {
        let raw = item.get_ref().as_str();
        let (wild, name) = match raw.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let norm = normalize_host(name);
        // No port, and a wildcard only over a name.
        let valid = valid_host(&norm)
            && norm.as_ref() == name.to_ascii_lowercase().trim_end_matches('.')
            && !(wild && norm.starts_with('['));
        if !valid {
            cx.err(
                &item.span(),
                format!(
                    "invalid host \"{raw}\" (expected a name such as \"shop.example.com\" or \"*.shop.example.com\", without scheme or port)"
                ),
            );
        } else if wild {
            out.suffixes.push(format!(".{norm}"));
        } else {
            out.exact.insert(norm.into_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn hosts(exact: &[&str], suffixes: &[&str]) -> Hosts {
        Hosts {
            exact: exact.iter().map(ToString::to_string).collect(),
            suffixes: suffixes.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn names_match_exactly_or_below_a_wildcard_ignoring_case_and_port() {
        let h = hosts(&["shop.example.com", "127.0.0.1", "[::1]"], &[".shop.example.com"]);
        for ok in [
            "shop.example.com",
            "SHOP.example.com:8443",
            "shop.example.com.",
            "api.shop.example.com",
            "a.b.shop.example.com:443",
            "127.0.0.1:8443",
            "[::1]:8443",
        ] {
            assert!(h.allows(Some(ok)), "{ok}");
        }
        for no in ["example.com", "evil.com", "shop.example.com.evil.com", "xshop.example.com", "127.0.0.2", ""] {
            assert!(!h.allows(Some(no)), "{no}");
        }
        assert!(!h.allows(None));
    }
}
