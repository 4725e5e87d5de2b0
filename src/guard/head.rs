//! Request-head hygiene, before routing: the ambiguities that let one request mean different
//! things to payguard and to the backend (request smuggling, routing bypass) are refused with
//! 400 instead of being passed on, and the head's size bounds are enforced to the byte.
//!
//! hyper refuses malformed HTTP/1 syntax itself, before this runs (400 with an empty body): NUL
//! and other control bytes, bad or conflicting Content-Length, obs-fold, a Transfer-Encoding
//! whose last coding is not `chunked`, Transfer-Encoding on HTTP/1.0, more than 100 header
//! lines (431), a head that outgrows its read buffer (431). What it accepts but a strict proxy
//! must not, is refused here. Two things hyper settles without telling (a Content-Length next to
//! a Transfer-Encoding is dropped, repeated identical Content-Length lines are merged into one)
//! are seen on the raw bytes by `crate::framing` and refused here too.

use http::header::{self, HeaderMap};
use http::uri::Authority;
use http::{request::Parts, Uri, Version};

use super::Reject;

/// The request-head bounds of `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// `max_uri_len`: the request target, in bytes.
    pub max_uri_len: usize,
    /// `max_header_size`: the HTTP/1 request head, in bytes.
    pub max_header_size: usize,
}

/// The HTTP/1 head's size ([`head_len`]) measured before payguard touched the headers; set by
/// the outermost layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHeadLen(pub usize);

fn invalid(msg: &str) -> Result<(), Reject> {
    Err(Reject::InvalidRequest(msg.into()))
}

/// The request target's length as the client sent it (a fragment never reaches us).
pub fn target_len(uri: &Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |pq| pq.as_str().len())
}

/// The HTTP/1 head's size in its usual form: `METHOD SP target SP HTTP/1.x CRLF`, one
/// `name: value CRLF` per header line, and the final CRLF. For a head written that way (every
/// client does) this is its exact size on the wire; optional whitespace around values and bare
/// LF line ends are not counted.
pub fn head_len(parts: &Parts) -> usize {
    let line = parts.method.as_str().len() + 1 + target_len(&parts.uri) + 1 + "HTTP/1.1\r\n".len();
    let fields: usize = parts.headers.iter().map(|(k, v)| k.as_str().len() + 2 + v.len() + 2).sum();
    line + fields + 2
}

pub fn check(parts: &Parts, limits: &HeadLimits) -> Result<(), Reject> {
    let h = &parts.headers;
    // HTTP/2 sends scheme and authority as pseudo-headers of their own: its target is `:path`.
    let uri_len = if parts.version <= Version::HTTP_11 {
        target_len(&parts.uri)
    } else {
        parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len())
    };
    if uri_len > limits.max_uri_len {
        return Err(Reject::UriTooLong { limit: limits.max_uri_len });
    }
    let len = || parts.extensions.get::<ClientHeadLen>().map_or_else(|| head_len(parts), |l| l.0);
    if parts.version <= Version::HTTP_11 && len() > limits.max_header_size {
        return Err(Reject::HeadersTooLarge { limit: limits.max_header_size });
    }
    // Header names with '_': nginx drops them, many frameworks fold them into '-': a rule on
    // `x-api-key` must not be bypassed by `x_api_key`.
    if h.keys().any(|k| k.as_str().contains('_')) {
        return invalid("header names must not contain '_'");
    }
    let mut hosts = h.get_all(header::HOST).iter();
    let host = hosts.next();
    if parts.version <= Version::HTTP_11 {
        check_http1(parts, h)?;
    } else if hosts.next().is_some() {
        return invalid("more than one host header");
    }
    // payguard routes on the authority and forwards it as Host: a Host header that names
    // another site would have the backend serve a request that passed another route's rules.
    // (HTTP/2 `:authority` next to `host`; HTTP/1.1 absolute-form target next to `Host`.)
    // Userinfo (`user@shop`) is no part of a host: backends disagree on what such a target
    // names, so it is refused whether or not a Host header stands next to it.
    if parts.uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return invalid("the request target carries userinfo ('@')");
    }
    if let (Some(authority), Some(host)) = (parts.uri.authority(), host) {
        if !same_authority(authority, parts.uri.scheme_str(), host.as_bytes()) {
            return invalid(if parts.version <= Version::HTTP_11 {
                "request target and Host header disagree"
            } else {
                ":authority and host header disagree"
            });
        }
    }
    Ok(())
}

/// The same host (ASCII case-insensitive) and the same port, an absent port being the scheme's
/// default (`shop:443` is `shop` under https). Read in place: this runs for every HTTP/2
/// request.
fn same_authority(authority: &Authority, scheme: Option<&str>, host: &[u8]) -> bool {
    let Some((name, port)) = split_host(host) else { return false };
    let default = match scheme {
        Some(s) if s.eq_ignore_ascii_case("https") => Some(443),
        Some(s) if s.eq_ignore_ascii_case("http") => Some(80),
        _ => None,
    };
    authority.host().as_bytes().eq_ignore_ascii_case(name)
        && authority.port_u16().or(default) == port.or(default)
        // Userinfo (`user@shop`) is no part of a host, on either side.
        && !authority.as_str().contains('@')
        && !host.contains(&b'@')
}

/// `host[:port]` (an IPv6 host in brackets) as host and port; `None` when the port is not a
/// number that fits 16 bits.
fn split_host(host: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let colon = host.iter().rposition(|&b| b == b':');
    match colon {
        // A colon inside `[…]` belongs to an IPv6 address, not to a port.
        Some(i) if !host[i..].contains(&b']') => {
            let digits = &host[i + 1..];
            if digits.is_empty() {
                return Some((&host[..i], None));
            }
            if digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let port = digits.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            Some((&host[..i], Some(u16::try_from(port).ok()?)))
        }
        _ => Some((host, None)),
    }
}

fn has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        // A value that is not text cannot be trusted to mean nothing.
        v.to_str().map_or(true, |s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn check_http1(parts: &Parts, h: &HeaderMap) -> Result<(), Reject> {
    // Seen on the raw bytes (crate::framing): hyper merged or dropped what made it ambiguous.
    if parts.extensions.get::<crate::framing::AmbiguousFraming>().is_some() {
        return invalid("ambiguous framing: Content-Length repeated or sent with Transfer-Encoding");
    }
    // Protocol switches (h2c, websocket) would tunnel past every guard; so would a backend that
    // acts on half of one.
    if h.contains_key(header::UPGRADE)
        || h.contains_key("http2-settings")
        || has_token(h, header::CONNECTION, "upgrade")
    {
        return invalid("protocol upgrades are not allowed");
    }
    let hosts = h.get_all(header::HOST).iter().count();
    if hosts > 1 {
        return invalid("more than one Host header");
    }
    if hosts == 0 && parts.version == Version::HTTP_11 {
        return invalid("missing Host header");
    }
    let mut te = h.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = te.next() {
        // hyper only asks that `chunked` comes last; like nginx, accept nothing but `chunked`
        // itself: a coding before it (`gzip, chunked`) would reach the backend undeclared.
        if te.next().is_some() || !first.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return invalid("Transfer-Encoding other than a single \"chunked\"");
        }
        if h.contains_key(header::CONTENT_LENGTH) {
            return invalid("both Content-Length and Transfer-Encoding");
        }
        if parts.version == Version::HTTP_10 {
            return invalid("Transfer-Encoding on HTTP/1.0");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http::Request;

    fn parts(version: Version, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().version(version).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn check_default(p: &Parts) -> Result<(), Reject> {
        let limits = HeadLimits {
            max_uri_len: crate::config::DEFAULT_MAX_URI_LEN,
            max_header_size: crate::config::DEFAULT_MAX_HEADER_SIZE,
        };
        check(p, &limits)
    }

    #[test]
    fn authority_and_host_compare_by_host_and_effective_port() {
        let same = |authority: &str, scheme: Option<&str>, host: &str| {
            same_authority(&Authority::try_from(authority).unwrap(), scheme, host.as_bytes())
        };
        let https = Some("https");
        assert!(same("shop", https, "shop"));
        assert!(same("shop", https, "SHOP:443"));
        assert!(same("shop:443", https, "Shop"));
        assert!(same("shop", None, "shop:"));
        assert!(same("[::1]:8443", https, "[::1]:8443"));
        assert!(same("[::1]", https, "[::1]:443"));
        assert!(!same("[::1]", https, "[::2]"));
        assert!(!same("shop", https, "shop:80"));
        assert!(!same("shop", Some("http"), "shop:443"));
        assert!(!same("shop", https, "evil"));
        assert!(!same("shop", https, "shop.evil"));
        for bad in ["shop:+443", "shop:0443x", "shop:65536", "shop:4430000", "user@shop", "shop:443:443"] {
            assert!(!same("shop", https, bad), "{bad}");
        }
        assert!(!same("user@shop", https, "shop"));
    }

    #[test]
    fn accepts_ordinary_requests() {
        assert!(check_default(&parts(Version::HTTP_11, "/a", &[("host", "shop")])).is_ok());
        assert!(check_default(&parts(Version::HTTP_10, "/a", &[])).is_ok());
        assert!(check_default(&parts(Version::HTTP_2, "https://shop/a", &[])).is_ok());
        assert!(check_default(&parts(Version::HTTP_11, "http://shop:8443/a", &[("host", "SHOP:8443")])).is_ok());
        assert!(check_default(&parts(Version::HTTP_11, "http://shop/a", &[("host", "shop:80")])).is_ok());
        assert!(check_default(&parts(Version::HTTP_2, "https://Shop.Test/a", &[("host", "shop.test:443")])).is_ok());
        assert!(
            check_default(&parts(Version::HTTP_2, "https://shop.test:8443/a", &[("host", "SHOP.test:8443")])).is_ok()
        );
        assert!(check_default(&parts(Version::HTTP_2, "https://[::1]:8443/a", &[("host", "[::1]:8443")])).is_ok());
        assert!(
            check_default(&parts(Version::HTTP_11, "/a", &[("host", "s"), ("transfer-encoding", "chunked")])).is_ok()
        );
        assert!(
            check_default(&parts(Version::HTTP_11, "/a", &[("host", "s"), ("transfer-encoding", " Chunked ")])).is_ok()
        );
        assert!(check_default(&parts(Version::HTTP_11, "/a", &[("host", "s"), ("connection", "keep-alive")])).is_ok());
    }

    #[test]
    fn sizes_are_counted_as_sent() {
        let p = parts(Version::HTTP_11, "/a?b=c", &[("host", "shop"), ("x-k", "v")]);
        assert_eq!(head_len(&p), "GET /a?b=c HTTP/1.1\r\nhost: shop\r\nx-k: v\r\n\r\n".len());
        assert_eq!(target_len(&parts(Version::HTTP_11, "http://shop:8443/a?q", &[]).uri), "http://shop:8443/a?q".len());
        let limits = |u, h| HeadLimits { max_uri_len: u, max_header_size: h };
        assert!(check(&p, &limits(6, head_len(&p))).is_ok());
        assert_eq!(check(&p, &limits(5, 1 << 20)), Err(Reject::UriTooLong { limit: 5 }));
        assert_eq!(check(&p, &limits(6, head_len(&p) - 1)), Err(Reject::HeadersTooLarge { limit: head_len(&p) - 1 }));
        // HTTP/2 heads are bounded by the HTTP/2 header list size instead.
        let p2 = parts(Version::HTTP_2, "https://shop/a?b=c", &[("x-k", "v")]);
        assert!(check(&p2, &limits(6, 1)).is_ok());
        assert_eq!(check(&p2, &limits(5, 1)), Err(Reject::UriTooLong { limit: 5 }));
    }

    #[test]
    fn refuses_ambiguous_heads() {
        for (v, uri, hs) in [
            (Version::HTTP_11, "/a", vec![("host", "s"), ("x_api_key", "1")]),
            (Version::HTTP_2, "/a", vec![("x_api_key", "1")]),
            (Version::HTTP_11, "/a", vec![("host", "s"), ("upgrade", "h2c"), ("connection", "upgrade")]),
            (Version::HTTP_11, "/a", vec![("host", "a"), ("host", "b")]),
            (Version::HTTP_11, "/a", vec![]),
            (Version::HTTP_11, "http://evil/a", vec![("host", "shop")]),
            (Version::HTTP_11, "http://shop/a", vec![("host", "shop:8443")]),
            (Version::HTTP_11, "http://shop:80/a", vec![("host", "user@shop")]),
            (Version::HTTP_11, "http://user@shop/a", vec![("host", "shop")]),
            (Version::HTTP_2, "https://www.shop.test/a", vec![("host", "admin.shop.test")]),
            (Version::HTTP_2, "https://shop.test/a", vec![("host", "shop.test:8443")]),
            (Version::HTTP_2, "https://shop.test:8443/a", vec![("host", "shop.test")]),
            (Version::HTTP_2, "https://shop.test/a", vec![("host", "shop.test"), ("host", "shop.test")]),
            (Version::HTTP_2, "https://shop.test/a", vec![("host", "shop test")]),
            (Version::HTTP_11, "/a", vec![("host", "s"), ("content-length", "3"), ("transfer-encoding", "chunked")]),
            (Version::HTTP_10, "/a", vec![("transfer-encoding", "chunked")]),
            (Version::HTTP_11, "/a", vec![("host", "s"), ("connection", "keep-alive, Upgrade")]),
            (Version::HTTP_11, "/a", vec![("host", "s"), ("http2-settings", "AAMAAABk")]),
            (Version::HTTP_11, "/a", vec![("host", "s"), ("transfer-encoding", "gzip, chunked")]),
            (
                Version::HTTP_11,
                "/a",
                vec![("host", "s"), ("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")],
            ),
        ] {
            let p = parts(v, uri, &hs);
            assert!(matches!(check_default(&p), Err(Reject::InvalidRequest(_))), "{v:?} {uri} {hs:?}");
        }
    }
}
