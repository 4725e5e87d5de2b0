//! `[route.origin]`: cross-site request forgery on browser-facing routes.

use serde::Deserialize;
use toml::Spanned;

use super::diag::Ctx;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// Origins allowed besides the request's own, serialised as browsers send them
    /// (`https://shop.example.com`, lowercase, default port left out).
    pub allow: Vec<String>,
    /// A state-changing request with neither `Sec-Fetch-Site` nor `Origin` is refused too.
    pub require_browser_headers: bool,
}

/// `[route.origin]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrigin {
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub require_browser_headers: Option<Spanned<bool>>,
}

pub(super) fn compile(cx: &mut Ctx<'_>, raw: &RawOrigin) -> Origin {
    let mut out = Origin {
        allow: Vec::new(),
        require_browser_headers: raw.require_browser_headers.as_ref().is_some_and(|b| *b.get_ref()),
    };
    for item in raw.allow.iter().flat_map(|l| l.get_ref()) {
        match serialize(item.get_ref()) {
            Some(o) => out.allow.push(o),
            None => cx.err(
                &item.span(),
                format!(
                    "invalid origin \"{}\" (expected scheme://host[:port] without a path, such as \"https://shop.example.com\")",
                    item.get_ref()
                ),
            ),
        }
    }
    out
}

/// An origin as a browser serialises it (RFC 6454): lowercase scheme and host, the scheme's
/// default port left out, no path. `None` for anything else, `null` included.
pub fn serialize(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "https" | "http") || rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let authority: http::uri::Authority = rest.parse().ok()?;
    let host = authority.host().to_ascii_lowercase();
    let valid_host = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    if !valid_host || (rest.contains(':') && authority.port_u16().is_none() && !rest.ends_with(']')) {
        return None;
    }
    let default = if scheme == "https" { 443 } else { 80 };
    Some(match authority.port_u16() {
        Some(p) if p != default => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_serialised_as_browsers_send_them() {
        assert_eq!(serialize("https://Shop.Example.com").as_deref(), Some("https://shop.example.com"));
        assert_eq!(serialize("https://shop.example.com:443").as_deref(), Some("https://shop.example.com"));
        assert_eq!(serialize("https://shop.example.com:8443").as_deref(), Some("https://shop.example.com:8443"));
        assert_eq!(serialize("http://localhost:80").as_deref(), Some("http://localhost"));
        assert_eq!(serialize("https://[::1]:8443").as_deref(), Some("https://[::1]:8443"));
        for bad in [
            "null",
            "",
            "shop.example.com",
            "https://",
            "https://shop.example.com/",
            "https://a/b",
            "ftp://x",
            "https://u@x",
            "https://x:abc",
            "https://sh op",
        ] {
            assert_eq!(serialize(bad), None, "{bad}");
        }
    }
}
