//! Signed callbacks end to end: verification on the raw bytes, `x-payguard-verified`, fail
//! closed, freshness, and replay semantics (reserve after verify, commit on 2xx, release
//! otherwise, concurrent duplicates refused). Provider-by-provider interop with the providers'
//! own SDKs lives in tests/interop.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET: &str = "it's-a-test-secret";

fn sign_hex(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for p in parts {
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A GitHub-style route, a template route for our own clients, and a Stripe route; secrets come
/// from files next to the rules (written before payguard starts).
async fn setup() -> (Backend, Proxy) {
    let backend = Backend::start().await;
    let rules = r#"
[defaults]
action = "deny"

[[route]]
name = "github"
match = { path = "/cb/*", methods = ["POST"] }
[route.signature]
provider = "hmac"
secrets = ["file:old.secret", "file:hook.secret"]

[[route]]
name = "clients"
match = { path = "/api/*", methods = ["POST"] }
[route.signature]
provider = "hmac"
header = "x-signature"
prefix = ""
timestamp_header = "x-timestamp"
nonce_header = "x-nonce"
tolerance = "5m"
message = "{method}\n{path}\n{timestamp}\n{nonce}\n{body}"
secrets = ["file:hook.secret"]

[[route]]
name = "lenient"
match = { path = "/lenient/*", methods = ["POST"] }
[route.signature]
provider = "hmac"
secrets = ["file:hook.secret"]
replay_release_on_4xx = true

[[route]]
name = "stripe"
match = { path = "/stripe", methods = ["POST"] }
mode = "enforce"
[route.signature]
provider = "stripe"
tolerance = "5m"
secrets = ["file:stripe.secret"]
"#;
    // Secrets must exist before the rules load: write them via a first rule-less start dir.
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(rules_dir.join("hook.secret"), SECRET).unwrap();
    std::fs::write(rules_dir.join("old.secret"), "retired-secret").unwrap();
    std::fs::write(rules_dir.join("stripe.secret"), "whsec_stripetest").unwrap();
    let extra = format!("[rules]\ndir = \"{}\"\n", rules_dir.display());
    std::fs::write(rules_dir.join("sig.toml"), rules).unwrap();
    let proxy = start_proxy_with_rules(backend.addr, &extra, &[]).await;
    // keep the secret dir alive as long as the proxy
    std::mem::forget(dir);
    (backend, proxy)
}

fn github(c: &reqwest::Client, proxy: &Proxy, path: &str, body: &'static str, sig: &str) -> reqwest::RequestBuilder {
    c.post(proxy.url(path)).header("x-hub-signature-256", format!("sha256={sig}")).body(body)
}

#[tokio::test]
async fn verified_callback_reaches_backend_byte_identical_and_marked() {
    let (backend, proxy) = setup().await;
    let c = h1_client(&proxy.cert);
    let body = "{\"action\":\"paid\",\"amount\": 100}\n";
    let sig = sign_hex(SECRET, &[body.as_bytes()]);
    let res = github(&c, &proxy, "/cb/paid", body, &sig).header("x-payguard-verified", "forged").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = backend.last();
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.header_all("x-payguard-verified"), vec!["hmac".to_string()]);
    let m = proxy.metrics().await;
    assert!(m.contains("payguard_decisions_total{route=\"github\"") || !m.contains("decision=\"block\""));
    proxy.stop().await;
}

#[tokio::test]
async fn bad_signatures_fail_closed_with_401() {
    let (backend, proxy) = setup().await;
    let c = h2_client(&proxy.cert);
    let body = "{\"a\":1}";
    let sig = sign_hex(SECRET, &[body.as_bytes()]);
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("tampered", github(&c, &proxy, "/cb/x", "{\"a\":2}", &sig)),
        ("missing", c.post(proxy.url("/cb/x")).body(body)),
        ("uppercase hex", github(&c, &proxy, "/cb/x", body, &sig.to_uppercase())),
        ("wrong key", github(&c, &proxy, "/cb/x", body, &sign_hex("nope", &[body.as_bytes()]))),
        (
            "duplicate header",
            github(&c, &proxy, "/cb/x", body, &sig).header("x-hub-signature-256", format!("sha256={sig}")),
        ),
        ("not hex", github(&c, &proxy, "/cb/x", body, "zz")),
    ];
    for (name, req) in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{name}");
        let v = json(res).await;
        assert_eq!(v["error"], "signature_invalid", "{name}");
        assert_eq!(v["rule"], "github");
    }
    assert_eq!(backend.count(), 0, "nothing unverified may reach the backend");
    proxy.stop().await;
}

#[tokio::test]
async fn replay_is_refused_and_backend_failure_releases_the_key() {
    let (backend, proxy) = setup().await;
    let c = h1_client(&proxy.cert);
    let body = "{\"event\":\"charge.succeeded\"}";
    let sig = sign_hex(SECRET, &[body.as_bytes()]);

    // First delivery: the backend fails → the key is released → the provider's retry passes.
    let res = github(&c, &proxy, "/cb/status/500", body, &sig).send().await.unwrap();
    assert_eq!(res.status(), 500);
    let res = github(&c, &proxy, "/cb/ok", body, &sig).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // Accepted once: every replay is refused and never reaches the backend.
    for _ in 0..3 {
        let res = github(&c, &proxy, "/cb/ok", body, &sig).send().await.unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(json(res).await["error"], "replay");
    }
    assert_eq!(backend.count(), 2);
    proxy.stop().await;
}

/// What the backend's answer does to the reservation: kept when the backend acted or may have
/// (2xx, a timeout, a considered 4xx), released when it did nothing (429, 5xx), and 4xx released
/// only where the route says so.
#[tokio::test]
async fn replay_reservation_is_kept_on_timeout_and_4xx_released_on_429_and_5xx() {
    let (backend, proxy) = setup().await;
    // A second instance on the same files with a short response timeout: a hanging backend
    // answers 504 upstream_timeout within the test.
    let path = proxy.dir.path().join("payguard.toml");
    let text =
        std::fs::read_to_string(&path).unwrap().replace("response_timeout = \"10s\"", "response_timeout = \"300ms\"");
    let slow = payguard::start(payguard::config::Config::parse(&text, Some(&path)).unwrap()).await.unwrap();
    let c = h1_client(&proxy.cert);
    let url = |p: &str| format!("https://localhost:{}{p}", slow.addr.port());
    let send = |p: &str, body: &'static str| {
        let sig = sign_hex(SECRET, &[body.as_bytes()]);
        c.post(url(p)).header("x-hub-signature-256", format!("sha256={sig}")).body(body).send()
    };
    for (first, body, then) in [
        ("/cb/hang", "{\"n\":1}", 401),
        ("/cb/status/504", "{\"n\":2}", 401),
        ("/cb/status/409", "{\"n\":3}", 401),
        ("/cb/status/400", "{\"n\":4}", 401),
        ("/cb/status/429", "{\"n\":5}", 200),
        ("/cb/status/408", "{\"n\":6}", 200),
        ("/cb/status/500", "{\"n\":7}", 200),
        ("/cb/status/503", "{\"n\":8}", 200),
        ("/lenient/status/409", "{\"n\":9}", 200),
        ("/lenient/status/504", "{\"n\":10}", 401),
    ] {
        let res = send(first, body).await.unwrap();
        let want = first.rsplit('/').next().and_then(|s| s.parse().ok()).unwrap_or(504);
        assert_eq!(res.status().as_u16(), want, "{first}");
        let retry = if first.starts_with("/lenient") { "/lenient/ok" } else { "/cb/ok" };
        let res = send(retry, body).await.unwrap();
        assert_eq!(res.status().as_u16(), then, "retry after {first}");
        if then == 401 {
            assert_eq!(json(res).await["error"], "replay", "retry after {first}");
        }
    }
    // Every first delivery but /hang (which the backend records only once it answers) and
    // every released retry reached the backend; no kept one did.
    assert_eq!(backend.count(), 9 + 5);
    slow.shutdown().await;
    proxy.stop().await;
}

#[tokio::test]
async fn concurrent_duplicate_is_refused_while_the_first_is_in_flight() {
    let (backend, proxy) = setup().await;
    let c = h2_client(&proxy.cert);
    let body = "{\"id\":\"evt_1\"}";
    let sig = sign_hex(SECRET, &[body.as_bytes()]);
    let first = tokio::spawn(github(&c, &proxy, "/cb/gate", body, &sig).send());
    backend.arrived.notified().await;
    let dup = github(&c, &proxy, "/cb/other", body, &sig).send().await.unwrap();
    assert_eq!(dup.status(), 401);
    assert_eq!(json(dup).await["error"], "replay");
    backend.open_gate();
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(backend.count(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn signed_client_requests_check_freshness_and_nonce() {
    let (backend, proxy) = setup().await;
    let c = h1_client(&proxy.cert);
    let send = |ts: i64, nonce: &'static str| {
        let body = "{\"amount\":1}";
        let ts = ts.to_string();
        let msg = format!("POST\n/api/pay\n{ts}\n{nonce}\n{body}");
        let sig = sign_hex(SECRET, &[msg.as_bytes()]);
        c.post(proxy.url("/api/pay"))
            .header("x-signature", sig)
            .header("x-timestamp", ts)
            .header("x-nonce", nonce)
            .body(body)
            .send()
    };
    assert_eq!(send(now(), "n-1").await.unwrap().status(), 200);
    let res = send(now(), "n-1").await.unwrap();
    assert_eq!(json(res).await["error"], "replay");
    for ts in [now() - 600, now() + 600] {
        let res = send(ts, "n-2").await.unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(json(res).await["error"], "stale_timestamp");
    }
    assert_eq!(send(now() - 200, "n-3").await.unwrap().status(), 200);
    assert_eq!(backend.count(), 2);
    let m = proxy.metrics().await;
    // Every verified signature is measured, the replayed one included.
    assert!(m.contains("payguard_signature_clock_skew_seconds_count{route=\"clients\"} 3"), "{m}");
    proxy.stop().await;
}

#[tokio::test]
async fn stripe_signature_with_rotation_of_v1_entries() {
    let (backend, proxy) = setup().await;
    let c = h1_client(&proxy.cert);
    let body = "{\"id\":\"evt_9\",\"type\":\"payment_intent.succeeded\"}";
    let t = now().to_string();
    let good = sign_hex("whsec_stripetest", &[t.as_bytes(), b".", body.as_bytes()]);
    let bad = sign_hex("whsec_other", &[t.as_bytes(), b".", body.as_bytes()]);
    let header = format!("t={t},v1={bad},v1={good},v0=ignored");
    let res = c.post(proxy.url("/stripe")).header("stripe-signature", header).body(body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(backend.last().header("x-payguard-verified"), Some("stripe"));
    let old = (now() - 301).to_string();
    let sig = sign_hex("whsec_stripetest", &[old.as_bytes(), b".", body.as_bytes()]);
    let res = c
        .post(proxy.url("/stripe"))
        .header("stripe-signature", format!("t={old},v1={sig}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["error"], "stale_timestamp");
    proxy.stop().await;
}

#[test]
fn a_route_whose_key_is_missing_is_an_invalid_rule_file() {
    let text = "[[route]]\nname = \"s\"\nmatch = { path = \"/s\" }\n[route.signature]\nprovider = \"stripe\"\nsecrets = [\"file:/nonexistent/stripe.secret\"]\n";
    let err = payguard::rules::load_sources(&[(std::path::PathBuf::from("r.toml"), text.to_string())]).unwrap_err();
    assert_eq!(err.len(), 1);
    assert!(err[0].to_string().starts_with("r.toml:6:11: secrets"), "{}", err[0]);
    // Inline secrets are refused too: secrets live in env: or file: only.
    let inline = text.replace("file:/nonexistent/stripe.secret", "whsec_inline");
    let err = payguard::rules::load_sources(&[(std::path::PathBuf::from("r.toml"), inline)]).unwrap_err();
    assert!(!err[0].to_string().contains("whsec_inline"), "secret echoed: {}", err[0]);
}
