//! `[route.origin]`: serialising an origin never panics and is idempotent (a serialised origin
//! serialises to itself, so `allow` entries and a request's `Origin` compare as equals), and the
//! cross-origin decision never panics on any headers. Input: the format of `common::parse`, its
//! first line the request's host.
use http::Method;
use payguard::guard::origin::check;
use payguard::rules::origin::{serialize, Origin};

pub fn run(data: &[u8]) {
    let text = super::parse(data);
    for (_, value) in &text.headers {
        let value = String::from_utf8_lossy(value);
        if let Some(once) = serialize(&value) {
            assert_eq!(serialize(&once).as_deref(), Some(once.as_str()), "not idempotent for {value:?}");
        }
    }
    let headers = super::header_map(&text.headers);
    let rule = Origin {
        allow: vec!["https://pay.example.net".into()],
        require_browser_headers: text.body.first() == Some(&b'1'),
    };
    let host = (!text.first_line.is_empty()).then_some(text.first_line.as_str());
    let _ = check(&Method::POST, &headers, host, &rule);
}
