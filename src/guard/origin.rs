//! `[route.origin]`: a state-changing request from another site is refused (403
//! `cross_origin`), the way Go's `CrossOriginProtection` decides: `Sec-Fetch-Site` first (a
//! browser says where the request comes from), then `Origin` against the request's own host
//! and the route's `allow` list. A caller that is no browser (a provider's callback, a
//! server-to-server call) sends neither and passes, unless `require_browser_headers`.

use http::{header, HeaderMap, HeaderName, Method};

use super::layer::Check;
use super::Reject;
use crate::exchange::Exchange;
use crate::rules::origin::{serialize, Origin};

/// A name made once: a lookup by `&str` parses and lower-cases the name on every request.
static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// The decision for one request; `Err` says why it is refused.
pub fn check(method: &Method, headers: &HeaderMap, host: Option<&str>, rule: &Origin) -> Result<(), &'static str> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let site = headers.get(&SEC_FETCH_SITE).map(http::HeaderValue::as_bytes);
    if matches!(site, Some(b"same-origin" | b"none")) {
        return Ok(());
    }
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let (origin, more) = (origins.next(), origins.next());
    if more.is_some() {
        return Err("several Origin headers");
    }
    let Some(origin) = origin else {
        return match site {
            Some(_) => Err("Sec-Fetch-Site says cross-site and there is no Origin to allow"),
            None if rule.require_browser_headers => Err("neither Sec-Fetch-Site nor Origin (require_browser_headers)"),
            None => Ok(()),
        };
    };
    let Some(origin) = origin.to_str().ok().and_then(serialize) else {
        return Err("Origin is not an allowed origin (null or malformed)");
    };
    let own = host.and_then(|h| serialize(&format!("https://{h}")));
    if own.as_deref() == Some(origin.as_str()) || rule.allow.contains(&origin) {
        return Ok(());
    }
    Err("Origin is neither the request's host nor in the route's allow list")
}

#[derive(Clone, Copy, Default)]
pub struct OriginGuard;

impl Check for OriginGuard {
    const NAME: &'static str = "origin";

    fn check(&self, ex: &mut Exchange) -> Result<(), Reject> {
        let Some(rule) = ex.route.as_ref().and_then(|r| r.origin.as_ref()) else { return Ok(()) };
        let host = ex.req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        check(ex.req.method(), ex.req.headers(), host, rule).map_err(|reason| Reject::CrossOrigin { reason })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn decide(method: Method, pairs: &[(&'static str, &'static str)], rule: &Origin) -> Result<(), &'static str> {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, v.parse().unwrap());
        }
        check(&method, &h, Some("shop.example.com:443"), rule)
    }

    #[test]
    fn the_contract_in_order() {
        let open = Origin::default();
        let strict = Origin { allow: vec!["https://pay.example.net".into()], require_browser_headers: true };
        let post = || Method::POST;
        // Safe methods are never checked.
        assert!(decide(Method::GET, &[("sec-fetch-site", "cross-site")], &open).is_ok());
        // Sec-Fetch-Site first.
        assert!(decide(post(), &[("sec-fetch-site", "same-origin"), ("origin", "https://evil.com")], &open).is_ok());
        assert!(decide(post(), &[("sec-fetch-site", "none")], &strict).is_ok());
        assert!(decide(post(), &[("sec-fetch-site", "cross-site")], &open).is_err());
        assert!(decide(post(), &[("sec-fetch-site", "same-site")], &open).is_err());
        // Then Origin: the request's own host, or an allowed one.
        assert!(decide(post(), &[("origin", "https://shop.example.com")], &open).is_ok());
        assert!(decide(post(), &[("origin", "https://SHOP.example.com:443")], &open).is_ok());
        assert!(
            decide(post(), &[("sec-fetch-site", "cross-site"), ("origin", "https://pay.example.net")], &strict).is_ok()
        );
        assert!(
            decide(post(), &[("sec-fetch-site", "cross-site"), ("origin", "https://pay.example.net")], &open).is_err()
        );
        assert!(decide(post(), &[("origin", "https://evil.com")], &open).is_err());
        assert!(decide(post(), &[("origin", "http://shop.example.com")], &open).is_err());
        assert!(decide(post(), &[("origin", "null")], &open).is_err());
        assert!(
            decide(post(), &[("origin", "https://shop.example.com"), ("origin", "https://evil.com")], &open).is_err()
        );
        // Neither header: not a browser.
        assert!(decide(post(), &[], &open).is_ok());
        assert!(decide(Method::DELETE, &[], &strict).is_err());
    }
}
