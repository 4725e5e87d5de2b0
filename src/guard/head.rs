//! Request-head hygiene, before routing: the ambiguities that let one request mean different
//! things to payguard and to the backend (request smuggling, routing bypass) are refused with
//! 400 instead of being passed on. hyper already refuses malformed syntax (NUL bytes, bad or
//! duplicate Content-Length, chunk-size overflow, obs-fold); this covers what it accepts.

use http::header::{self, HeaderMap};
use http::{request::Parts, Version};

use super::Reject;

fn invalid(msg: &str) -> Result<(), Reject> {
    Err(Reject::InvalidRequest(msg.into()))
}

pub fn check(parts: &Parts) -> Result<(), Reject> {
    let h = &parts.headers;
    // Header names with '_': nginx drops them, many frameworks fold them into '-': a rule on
    // `x-api-key` must not be bypassed by `x_api_key`.
    if h.keys().any(|k| k.as_str().contains('_')) {
        return invalid("header names must not contain '_'");
    }
    if parts.version <= Version::HTTP_11 {
        check_http1(parts, h)?;
    }
    Ok(())
}

fn check_http1(parts: &Parts, h: &HeaderMap) -> Result<(), Reject> {
    // Protocol switches (h2c, websocket) would tunnel past every guard.
    if h.contains_key(header::UPGRADE) {
        return invalid("protocol upgrades are not allowed");
    }
    let hosts = h.get_all(header::HOST).iter().count();
    if hosts > 1 {
        return invalid("more than one Host header");
    }
    if hosts == 0 && parts.version == Version::HTTP_11 {
        return invalid("missing Host header");
    }
    // Absolute-form target (`GET http://other/ HTTP/1.1`): it must name the Host it is sent to.
    if let (Some(authority), Some(host)) = (parts.uri.authority(), h.get(header::HOST)) {
        if !authority.as_str().eq_ignore_ascii_case(host.to_str().unwrap_or("")) {
            return invalid("request target and Host header disagree");
        }
    }
    let te = h.contains_key(header::TRANSFER_ENCODING);
    if te && h.contains_key(header::CONTENT_LENGTH) {
        return invalid("both Content-Length and Transfer-Encoding");
    }
    if te && parts.version == Version::HTTP_10 {
        return invalid("Transfer-Encoding on HTTP/1.0");
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

    #[test]
    fn accepts_ordinary_requests() {
        assert!(check(&parts(Version::HTTP_11, "/a", &[("host", "shop")])).is_ok());
        assert!(check(&parts(Version::HTTP_10, "/a", &[])).is_ok());
        assert!(check(&parts(Version::HTTP_2, "https://shop/a", &[])).is_ok());
        assert!(check(&parts(Version::HTTP_11, "http://shop:8443/a", &[("host", "SHOP:8443")])).is_ok());
        assert!(check(&parts(Version::HTTP_11, "/a", &[("host", "s"), ("transfer-encoding", "chunked")])).is_ok());
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
            (Version::HTTP_11, "/a", vec![("host", "s"), ("content-length", "3"), ("transfer-encoding", "chunked")]),
            (Version::HTTP_10, "/a", vec![("transfer-encoding", "chunked")]),
        ] {
            let p = parts(v, uri, &hs);
            assert!(matches!(check(&p), Err(Reject::InvalidRequest(_))), "{v:?} {uri} {hs:?}");
        }
    }
}
