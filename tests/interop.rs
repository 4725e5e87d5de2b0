//! Interop with the real SDKs: `tests/interop/sign.js` signs callbacks with each provider's
//! published npm package (keys and secrets generated now, in a temp dir; nothing is committed),
//! and every callback goes through a running payguard to a real backend.
//!
//! Valid callbacks must reach the backend byte for byte with `x-payguard-verified: <provider>`;
//! tampered, stale, wrong-key and replayed ones get 401 with the RULES.md error code and never
//! reach the backend. Each provider also has a `<provider>-retry` route at `/status/*` (the test
//! backend answers `/status/NNN…` with NNN): a delivery answered 500 releases its replay key so
//! the retry passes, and a delivery after the 2xx is a replay.
//!
//! The scenarios and their expected outcomes are listed in sign.js; the rule files are here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;
use common::*;

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// `npm ci` once per test binary when node_modules is missing (as .ci/run does), so that
/// `cargo test` works on a fresh checkout.
fn ensure_node_modules() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = interop_dir();
        if !dir.join("node_modules/.package-lock.json").exists() {
            let ok = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status();
            assert!(ok.is_ok_and(|s| s.success()), "npm ci in tests/interop failed");
        }
    });
}

#[derive(Debug, serde::Deserialize)]
struct Fixture {
    provider: String,
    vars: HashMap<String, String>,
    cases: Vec<Case>,
}

#[derive(Debug, serde::Deserialize)]
struct Case {
    name: String,
    route: String,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body_base64: String,
    http2: bool,
    expect: Expect,
}

#[derive(Debug, serde::Deserialize)]
struct Expect {
    status: u16,
    error: Option<String>,
    forwarded: bool,
}

/// Runs `node sign.js <provider> <dir>`: keys go to `dir`, the cases come back as JSON.
fn sign(provider: &str, dir: &Path) -> Fixture {
    ensure_node_modules();
    let out = Command::new("node")
        .arg("sign.js")
        .arg(provider)
        .arg(dir)
        .current_dir(interop_dir())
        .output()
        .expect("node is required for this test");
    assert!(out.status.success(), "sign.js {provider} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("sign.js {provider} printed no fixture: {e}"))
}

/// Signs the cases, writes `rules` (with `@DIR@` and `@VAR@` from the fixture substituted),
/// starts payguard and sends every case in order. All mismatches are reported together.
async fn run(provider: &str, rules: &str) {
    let keys = tempfile::tempdir().unwrap();
    let fixture = sign(provider, keys.path());
    assert_eq!(fixture.provider, provider);
    let mut rules = rules.replace("@DIR@", keys.path().to_str().unwrap());
    for (name, value) in &fixture.vars {
        rules = rules.replace(&format!("@{name}@"), value);
    }
    assert!(!rules.contains("@DIR@") && !rules.contains("@CERT") && !rules.contains("@PUB"), "{rules}");
    assert_covers_the_scenarios(&fixture);

    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("interop.toml", &rules)]).await;
    let h1 = h1_client(&proxy.cert);
    let h2 = h2_client(&proxy.cert);

    let mut failures = Vec::new();
    for case in &fixture.cases {
        let body = base64::engine::general_purpose::STANDARD.decode(&case.body_base64).unwrap();
        let client = if case.http2 { &h2 } else { &h1 };
        let method = http::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut req = client.request(method, proxy.url(&case.path)).body(body.clone());
        for (name, value) in &case.headers {
            req = req.header(name, value);
        }
        let before = backend.count();
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let answer = res.bytes().await.unwrap();
        let forwarded = backend.count() - before;

        let mut problems = Vec::new();
        if status != case.expect.status {
            problems.push(format!("status {status}, expected {}", case.expect.status));
        }
        if let Some(code) = &case.expect.error {
            match serde_json::from_slice::<serde_json::Value>(&answer) {
                Ok(v) if v["error"] == code.as_str() && v["rule"] == case.route.as_str() => {}
                _ => problems.push(format!(
                    "answer {}, expected error {code:?} from rule {:?}",
                    String::from_utf8_lossy(&answer),
                    case.route
                )),
            }
        }
        let expected_forwards = usize::from(case.expect.forwarded);
        if forwarded != expected_forwards {
            problems.push(format!("backend saw {forwarded} request(s), expected {expected_forwards}"));
        } else if case.expect.forwarded {
            let seen = backend.last();
            if seen.body != body {
                problems.push(format!("body changed: {} bytes sent, {} forwarded", body.len(), seen.body.len()));
            }
            if seen.header("x-payguard-verified") != Some(provider) {
                problems.push(format!("x-payguard-verified = {:?}", seen.header("x-payguard-verified")));
            }
            if seen.method != case.method || seen.path_and_query != case.path {
                problems.push(format!("forwarded as {} {}", seen.method, seen.path_and_query));
            }
            for (name, value) in &case.headers {
                if !seen.header_all(name).contains(value) {
                    problems.push(format!("header {name} not forwarded unchanged: {:?}", seen.header_all(name)));
                }
            }
        }
        let verdict = if problems.is_empty() { "ok" } else { "FAIL" };
        println!("[{provider}] {verdict:4} {} -> {status} ({})", case.name, if case.http2 { "h2" } else { "h1" });
        if !problems.is_empty() {
            failures.push(format!("[{provider}] {}: {}", case.name, problems.join("; ")));
        }
    }
    proxy.stop().await;
    if !failures.is_empty() {
        let mut report = format!("{} of {} cases failed:\n", failures.len(), fixture.cases.len());
        for f in &failures {
            writeln!(report, "  {f}").unwrap();
        }
        panic!("{report}");
    }
}

/// Every provider's fixture has at least: an accepted callback, one over HTTP/2, a replay, a
/// refused signature, a key-rotation case and the retry-after-500 sequence; timestamped
/// providers also a stale one.
fn assert_covers_the_scenarios(f: &Fixture) {
    let has = |pred: &dyn Fn(&Case) -> bool| f.cases.iter().any(pred);
    let error = |c: &Case, code: &str| c.expect.error.as_deref() == Some(code);
    assert!(has(&|c| c.expect.status == 200 && c.expect.forwarded), "{}: no accepted case", f.provider);
    assert!(has(&|c| c.http2 && c.expect.status == 200), "{}: no HTTP/2 case", f.provider);
    assert!(has(&|c| error(c, "replay")), "{}: no replay case", f.provider);
    assert!(has(&|c| error(c, "signature_invalid")), "{}: no refused signature", f.provider);
    assert!(has(&|c| c.name.contains("rotation") || f.provider == "alipay-rsa2"), "{}: no rotation case", f.provider);
    assert!(has(&|c| c.expect.status == 500 && c.expect.forwarded), "{}: no retry case", f.provider);
    if f.provider != "adyen-hmac" {
        assert!(has(&|c| error(c, "stale_timestamp")), "{}: no stale case", f.provider);
    }
}

/// The route every provider test has (`/cb/<x>`) plus its `-retry` twin at `/status/*`.
fn with_retry_route(name: &str, path: &str, signature: &str) -> String {
    format!(
        "[defaults]\naction = \"deny\"\nmax_body = \"256KiB\"\n\n\
         [[route]]\nname = \"{name}\"\nmatch = {{ path = \"{path}\", methods = [\"POST\"] }}\n[route.signature]\n{signature}\n\n\
         [[route]]\nname = \"{name}-retry\"\nmatch = {{ path = \"/status/*\", methods = [\"POST\"] }}\n[route.signature]\n{signature}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_sdk() {
    let signature = r#"provider = "stripe"
tolerance = "5m"
secrets = ['file:@DIR@/stripe-secret-0.txt', 'file:@DIR@/stripe-secret-1.txt']"#;
    run("stripe", &with_retry_route("stripe", "/cb/stripe", signature)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_sdk() {
    let signature = r#"provider = "standard-webhooks"
tolerance = "5m"
secrets = ['file:@DIR@/sw-secret-0.txt', 'file:@DIR@/sw-secret-1.txt']
public_keys = ['file:@DIR@/sw-ed25519.whpk']"#;
    run("standard-webhooks", &with_retry_route("standard-webhooks", "/cb/standard-webhooks", signature)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adyen_sdk() {
    let signature = r#"provider = "adyen-hmac"
hmac_keys = ['file:@DIR@/adyen-key-0.hex', 'file:@DIR@/adyen-key-1.hex']"#;
    run("adyen-hmac", &with_retry_route("adyen-hmac", "/cb/adyen", signature)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alipay_sdk() {
    // The main route has the key as Alipay's dashboard shows it (bare base64), the retry route as PEM.
    let rules = with_retry_route(
        "alipay-rsa2",
        "/cb/alipay",
        r#"provider = "alipay-rsa2"
tolerance = "5m"
app_id = "2021004100000001"
public_key = 'file:@DIR@/alipay-public.@FORM@'"#,
    )
    .replacen("@FORM@", "b64", 1)
    .replacen("@FORM@", "pem", 1);
    run("alipay-rsa2", &rules).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpay_sdk() {
    let signature = r#"provider = "wechatpay-v3"
tolerance = "5m"
apiv3_key = 'file:@DIR@/wechatpay-apiv3.key'
public_keys = { "@PUB_ID_A@" = 'file:@DIR@/wechatpay-pub-a.pem', "@PUB_ID_B@" = 'file:@DIR@/wechatpay-pub-b.pem', "@CERT_SERIAL@" = 'file:@DIR@/wechatpay-platform.crt' }"#;
    run("wechatpay-v3", &with_retry_route("wechatpay-v3", "/cb/wechatpay", signature)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paypal_signed_offline() {
    let signature = r#"provider = "paypal"
tolerance = "5m"
webhook_id = "@WEBHOOK_ID@"
certs = { "@CERT_URL_A@" = 'file:@DIR@/paypal-a.crt', "@CERT_URL_B@" = 'file:@DIR@/paypal-b.crt' }"#;
    run("paypal", &with_retry_route("paypal", "/cb/paypal", signature)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_github_and_signed_clients() {
    let github = r#"provider = "hmac"
secrets = ['file:@DIR@/github-secret-0.txt', 'file:@DIR@/github-secret-1.txt']"#;
    let client = r#"
[[route]]
name = "hmac-client"
match = { path = "/api/client/*", methods = ["POST", "PUT"] }
[route.signature]
provider = "hmac"
header = "x-signature"
prefix = "v1="
encoding = "base64"
timestamp_header = "x-timestamp"
nonce_header = "x-nonce"
key_id_header = "x-key-id"
tolerance = "5m"
message = "{method}\n{path}\n{query}\n{timestamp}\n{nonce}\n{body}"
keys = { "client-2024" = 'file:@DIR@/client-2024.key', "client-2025" = 'file:@DIR@/client-2025.key' }
"#;
    let rules = with_retry_route("hmac", "/cb/github", github) + client;
    run("hmac", &rules).await;
}
