//! The sample rule set under tests/fixtures/rules covers every key; these tests load it from
//! disk and check that each key has its effect, then that the invalid set reports every problem.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{HeaderMap, HeaderValue, Method};
use payguard::guard::validate::{check_body, check_headers, ValidationError};
use payguard::rules::{
    load_dir, DefaultAction, FailMode, FieldAt, FieldType, Mode, PathPattern, RateKey, Route, RouteLookup, RuleSet,
};
use payguard::signature::StrItems;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn fixtures() -> RuleSet {
    load_dir(Path::new("tests/fixtures/rules"), &Default::default())
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn matched<'a>(set: &'a RuleSet, host: Option<&str>, path: &str, m: Method) -> &'a Arc<Route> {
    match set.route(host, path, &m) {
        RouteLookup::Matched(r) => r,
        other => panic!("{path}: expected a match, got {other:?}"),
    }
}

#[test]
fn defaults_and_ip_sets() {
    let set = fixtures();
    let d = set.defaults();
    assert_eq!(d.action, DefaultAction::Forward);
    assert_eq!(d.max_body, 1 << 20);
    assert!(d.ip_deny.contains(ip("203.0.113.9")));
    assert!(d.ip_deny.contains(ip("::ffff:203.0.113.9")));
    assert!(d.ip_deny.contains(ip("2001:db8:bad::1")));
    assert!(!d.ip_deny.contains(ip("198.51.100.1")));
    assert!(d.ip_allow.as_ref().unwrap().contains(ip("8.8.8.8")));
    let rl = d.rate_limit.as_ref().unwrap();
    assert_eq!((rl.key.clone(), rl.rate.count, rl.burst), (RateKey::Ip, 50, 100));
    let names: Vec<_> = set.routes().iter().map(|r| r.name.to_string()).collect();
    assert_eq!(names, ["wechatpay-notify", "alipay-notify", "admin", "api"]);
}

#[test]
fn wechat_route_has_every_key() {
    let set = fixtures();
    let r = matched(&set, None, "/pay/wechat/notify", Method::POST);
    assert_eq!(&*r.name, "wechatpay-notify");
    assert_eq!(r.mode, Mode::Enforce);
    assert_eq!(r.path, PathPattern::Exact("/pay/wechat/notify".into()));
    let allow = r.ip_allow.as_ref().unwrap();
    assert!(allow.contains(ip("101.226.103.1")) && allow.contains(ip("140.207.54.200")));
    assert!(allow.contains(ip("2001:db8:1::1")));
    assert!(!allow.contains(ip("8.8.8.8")));
    assert!(r.ip_deny.is_empty(), "route's ip_deny = [] replaces the default");
    let rl = r.rate_limit.as_ref().unwrap();
    assert_eq!((rl.rate.count, rl.rate.per, rl.burst), (10, Duration::from_secs(1), 20));
    assert_eq!(r.on_state_error.replay, FailMode::Closed);
    assert_eq!(r.on_state_error.rate_limit, FailMode::Open);
    assert_eq!(r.max_body, 64 * 1024);
    assert!(r.needs_body());
    let v = r.validate.as_ref().unwrap();
    assert_eq!(v.content_type.as_deref().unwrap(), ["application/json"]);
    assert_eq!(v.required_headers.len(), 2);
    assert!(v.json_schema.is_some());
    assert_eq!(v.fields.len(), 5);
    assert_eq!(v.fields[0].at, FieldAt::Pointer("/amount/total".into()));
    assert_eq!(v.fields[4].ty, Some(FieldType::Boolean));
    let sig = r.signature.as_ref().unwrap();
    assert_eq!(sig.provider(), "wechatpay-v3");
    // The table is typed by the rule file's parser (it was a `toml::Table`).
    assert_eq!(sig.table.tolerance.as_ref().map(|v| v.get_ref().as_str()), Some("5m"));
    assert!(matches!(sig.table.public_keys.as_ref().map(|v| v.get_ref()), Some(StrItems::Table(_))));
    assert_eq!(sig.dir, Path::new("tests/fixtures/rules"));
    assert_eq!(
        sig.diagnostic(Some("public_keys"), "cannot load key").to_string(),
        "tests/fixtures/rules/10-wechat.toml:28:15: cannot load key"
    );
    assert_eq!(r.methods_allowed().unwrap(), [Method::POST]);
    match set.route(None, "/pay/wechat/notify", &Method::GET) {
        RouteLookup::MethodNotAllowed(r) => assert_eq!(r.allow_header().unwrap(), "POST"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn wechat_validation_end_to_end() {
    let set = fixtures();
    let r = matched(&set, None, "/pay/wechat/notify", Method::POST);
    let v = r.validate.as_ref().unwrap();
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
    h.insert("wechatpay-serial", HeaderValue::from_static("PUB_KEY_ID"));
    assert_eq!(
        check_headers(v, &h, None),
        Err(ValidationError::MissingHeader(http::HeaderName::from_static("wechatpay-signature")))
    );
    h.insert("wechatpay-signature", HeaderValue::from_static("sig"));
    assert_eq!(check_headers(v, &h, None), Ok(()));
    let body = r#"{"id":"EV-1","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"x","nonce":"abc"},
        "amount":{"total":100,"currency":"CNY"},"out_trade_no":"order_123","rate":1.5,"test":false}"#;
    assert_eq!(check_body(v, Some("application/json"), body.as_bytes()), Ok(()));
    let e =
        check_body(v, Some("application/json"), body.replace("\"total\":100", "\"total\":0").as_bytes()).unwrap_err();
    assert_eq!(e.to_string(), "/amount/total: must be an integer >= 1");
    let e = check_body(v, Some("application/json"), body.replace("AEAD_AES_256_GCM", "NONE").as_bytes()).unwrap_err();
    assert_eq!(e.to_string(), "/resource/algorithm: does not satisfy the schema's \"const\" rule");
}

#[test]
fn shop_routes_hosts_modes_and_forms() {
    let set = fixtures();
    let a = matched(&set, Some("PAY.example.com"), "/pay/alipay/notify", Method::POST);
    assert_eq!(&*a.name, "alipay-notify");
    assert_eq!(a.host.as_deref(), Some("pay.example.com"));
    assert!(matches!(set.route(Some("other.example"), "/pay/alipay/notify", &Method::POST), RouteLookup::NoRoute));
    assert_eq!(a.max_body, 128 * 1024);
    assert!(a.ip_allow.as_ref().unwrap().contains(ip("192.0.2.10")));
    assert!(a.ip_allow.as_ref().unwrap().contains(ip("110.75.130.1")));
    assert!(a.ip_deny.contains(ip("203.0.113.1")), "default ip_deny inherited");
    let rl = a.rate_limit.as_ref().unwrap();
    assert_eq!((rl.key.clone(), rl.burst), (RateKey::Route, 600));
    assert_eq!(a.on_state_error.replay, FailMode::Open);
    assert_eq!(a.on_state_error.rate_limit, FailMode::Open);
    let v = a.validate.as_ref().unwrap();
    let form = "total_amount=88.88&trade_status=TRADE_SUCCESS&sign=abc%3D";
    assert_eq!(check_body(v, Some("application/x-www-form-urlencoded; charset=utf-8"), form.as_bytes()), Ok(()));
    let e = check_body(v, Some("application/x-www-form-urlencoded"), b"total_amount=0&trade_status=TRADE_SUCCESS")
        .unwrap_err();
    assert_eq!(e.to_string(), "total_amount: must be a number >= 0.01");
    assert_eq!(a.signature.as_ref().unwrap().provider(), "alipay-rsa2");

    let admin = matched(&set, Some("pay.example.com:443"), "/Admin/users/1", Method::DELETE);
    assert_eq!(admin.mode, Mode::Monitor);
    assert_eq!(admin.path, PathPattern::Prefix("/admin".into()));
    let rl = admin.rate_limit.as_ref().unwrap();
    assert_eq!(rl.key, RateKey::Header(http::HeaderName::from_static("x-api-key")));
    assert_eq!((rl.rate.count, rl.rate.per, rl.burst), (5000, Duration::from_secs(3600), 50));
    assert_eq!(admin.on_state_error.rate_limit, FailMode::Closed);
    assert!(!admin.needs_body());
    assert!(matches!(set.route(None, "/admin/users", &Method::GET), RouteLookup::NoRoute));

    let api = matched(&set, None, "/api/v1/orders", Method::GET);
    assert_eq!(api.rate_limit, set.defaults().rate_limit, "default rate limit inherited");
    let v = api.validate.as_ref().unwrap();
    assert_eq!(check_headers(v, &HeaderMap::new(), Some("page=3")), Ok(()));
    assert!(check_headers(v, &HeaderMap::new(), Some("page=0")).is_err());
    assert_eq!(check_body(v, None, b""), Ok(()));
    assert!(matches!(set.route(None, "/api/x", &Method::PUT), RouteLookup::MethodNotAllowed(_)));
}

#[test]
fn invalid_set_reports_every_problem_with_paths_as_given() {
    let errors: Vec<String> = load_dir(Path::new("tests/fixtures/invalid"), &Default::default())
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    let expect = [
        "tests/fixtures/invalid/a-syntax.toml:1:",
        "tests/fixtures/invalid/b-semantic.toml:4:13: unknown ip set \"@nowhere\"",
        "tests/fixtures/invalid/b-semantic.toml:4:25: invalid CIDR \"10.0.0.0/33\"",
        "tests/fixtures/invalid/b-semantic.toml:5:23: invalid rate \"ten per second\"",
        "tests/fixtures/invalid/b-semantic.toml:8:12: invalid size \"64 KiBs\": unknown unit \"KiBs\"",
        "tests/fixtures/invalid/b-semantic.toml:9:51: invalid regex:",
        "tests/fixtures/invalid/b-semantic.toml:12:8: duplicate route name \"one\" (first defined at tests/fixtures/invalid/b-semantic.toml:2:8)",
        "tests/fixtures/invalid/b-semantic.toml:13:18: invalid path pattern \"/two/*/x\"",
        "tests/fixtures/invalid/b-semantic.toml:14:8: unknown mode \"observe\"",
        "tests/fixtures/invalid/c-unknown-key.toml:3:1: unknown field `max_bodyy`",
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    for (got, want) in errors.iter().zip(expect) {
        assert!(got.starts_with(want), "\n got: {got}\nwant: {want}");
    }
}
