//! Secrets and card data never reach a log line or a metric label: the real binary, its real
//! stdout and stderr, at log level `info` and `debug`, with requests that carry card numbers,
//! CVV-like fields, signature headers, bearer tokens and cookies, both forwarded and refused
//! (401, 400, 403, 404, 405, 413, 429). Every secret carries a marker made up for this run, so
//! finding it anywhere means it leaked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bin_harness;
mod common;

use std::time::Duration;

use bin_harness::{Payguard, Stdout};
use common::*;

const RULES: &str = r#"
[defaults]
action = "deny"
max_body = "1KiB"

[[route]]
name = "pay"
match = { path = "/pay/*", methods = ["GET", "POST"] }

[[route]]
name = "stripe"
match = { path = "/stripe", methods = ["POST"] }
[route.signature]
provider = "stripe"
tolerance = "5m"
secrets = ["file:stripe.secret"]

[[route]]
name = "checkout-json"
match = { path = "/checkout/json", methods = ["POST"] }
[route.validate]
content_type = ["application/json"]
fields = [{ at = "/card/number", type = "string", pattern = "^tok_[a-z0-9]+$" }]

[[route]]
name = "checkout-form"
match = { path = "/checkout/form", methods = ["POST"] }
[route.validate]
content_type = ["application/x-www-form-urlencoded"]
fields = [{ at = "card", type = "string", pattern = "^tok_[a-z0-9]+$" }]

[[route]]
name = "lookup"
match = { path = "/lookup", methods = ["GET"] }
[route.validate]
fields = [{ at = "card", type = "string", pattern = "^tok_[a-z0-9]+$" }]

[[route]]
name = "admin"
match = { path = "/admin/*" }
ip_deny = ["127.0.0.0/8"]

[[route]]
name = "limited"
match = { path = "/limited" }
rate_limit = { key = "ip", rate = "1/min", burst = 1 }
"#;

const ROUTES: &[&str] = &["", "pay", "stripe", "checkout-json", "checkout-form", "lookup", "admin", "limited"];

/// A random Luhn-valid 16-digit card number starting with `prefix`.
fn random_pan(prefix: &str) -> String {
    loop {
        let mut digits: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
        while digits.len() < 15 {
            digits.push(fastrand::u8(0..10));
        }
        let sum: u32 = digits
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &d)| {
                let d = u32::from(d);
                if i % 2 == 0 {
                    let x = d * 2;
                    if x > 9 {
                        x - 9
                    } else {
                        x
                    }
                } else {
                    d
                }
            })
            .sum();
        digits.push(((10 - sum % 10) % 10) as u8);
        let s: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
        // Avoid a number whose middle could be confused with anything else in a line.
        if !s.contains("0000") {
            return s;
        }
    }
}

fn marker(kind: &str) -> String {
    format!("{kind}{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

fn grouped(pan: &str, sep: &str) -> String {
    pan.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(sep)
}

struct Secrets {
    pans: Vec<String>,
    bearer: String,
    cookie: String,
    stripe_sig: String,
    wechat_sig: String,
    webhook_sig: String,
    query_token: String,
    cvv: String,
}

impl Secrets {
    fn new() -> Secrets {
        Secrets {
            pans: vec![
                random_pan("4"),
                random_pan("51"),
                "4111111111111111".into(),
                "5500005555555559".into(),
                "378282246310005".into(),
            ],
            bearer: marker("bearer"),
            cookie: marker("cookie"),
            stripe_sig: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            wechat_sig: marker("wechat"),
            webhook_sig: marker("webhook"),
            query_token: marker("query"),
            cvv: format!("cvv{}", marker("")),
        }
    }

    /// Every string that must appear nowhere.
    fn needles(&self) -> Vec<String> {
        let mut v = vec![
            self.bearer.clone(),
            self.cookie.clone(),
            self.stripe_sig.clone(),
            self.wechat_sig.clone(),
            self.webhook_sig.clone(),
            self.query_token.clone(),
            self.cvv.clone(),
            "cvv=123".into(),
            "\"cvc\":\"987\"".into(),
            "\\\"cvc\\\"".into(),
        ];
        for p in &self.pans {
            v.push(p.clone());
            v.push(grouped(p, "-"));
            v.push(grouped(p, " "));
            v.push(grouped(p, "%20"));
        }
        v
    }

    /// Adds every secret header to a request.
    fn headers(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.header("authorization", format!("Bearer {}", self.bearer))
            .header("cookie", format!("session={}; pan={}", self.cookie, self.pans[0]))
            .header("stripe-signature", format!("t=1700000000,v1={}", self.stripe_sig))
            .header("wechatpay-signature", self.wechat_sig.clone())
            .header("wechatpay-serial", self.pans[1].clone())
            .header("webhook-signature", format!("v1,{}", self.webhook_sig))
            .header("x-card-number", self.pans[2].clone())
            .header("x-cvv", self.cvv.clone())
    }

    fn json_body(&self, i: usize) -> String {
        format!(r#"{{"card":{{"number":"{}","cvc":"987","exp":"12/30"}},"note":"{}"}}"#, self.pans[i], self.cvv)
    }

    fn form_body(&self, i: usize) -> String {
        format!("card={}&cvv=123&secret={}", self.pans[i], self.cvv)
    }
}

/// Sends the whole set, checks each status, and returns how many requests were sent.
async fn send_all(pg: &Payguard, cert: &TestCert, s: &Secrets) -> usize {
    let mut sent = 0;
    for h2 in [false, true] {
        let c = bin_harness::client(cert, h2);
        let q = format!("card={}&token={}&cvv=123", s.pans[0], s.query_token);
        let mut expect = |status: u16, res: reqwest::Response, what: &str| {
            assert_eq!(res.status(), status, "{what} (h2={h2})");
            sent += 1;
        };
        // Forwarded: card numbers in the path (plain, grouped by dashes and by %20), the query,
        // the headers and a JSON body.
        for (i, p) in s.pans.iter().enumerate() {
            for path in [p.clone(), grouped(p, "-"), grouped(p, "%20")] {
                let res = s
                    .headers(c.post(pg.url(&format!("/pay/{path}?{q}"))))
                    .header("content-type", "application/json")
                    .body(s.json_body(i))
                    .send()
                    .await
                    .unwrap();
                expect(200, res, "forwarded");
            }
        }
        // 401: a Stripe route with a made-up signature.
        let res = s.headers(c.post(pg.url(&format!("/stripe?{q}")))).body(s.json_body(0)).send().await.unwrap();
        expect(401, res, "stripe");
        // 400: a card number where a token belongs (JSON, form, query).
        let res = s
            .headers(c.post(pg.url(&format!("/checkout/json?{q}"))))
            .header("content-type", "application/json")
            .body(s.json_body(1))
            .send()
            .await
            .unwrap();
        expect(400, res, "json validation");
        let res = s
            .headers(c.post(pg.url("/checkout/form")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(s.form_body(2))
            .send()
            .await
            .unwrap();
        expect(400, res, "form validation");
        let res = s.headers(c.get(pg.url(&format!("/lookup?{q}")))).send().await.unwrap();
        expect(400, res, "query validation");
        // 403, 404, 405, 413.
        let res = s.headers(c.get(pg.url(&format!("/admin/{}?{q}", s.pans[3])))).send().await.unwrap();
        expect(403, res, "ip");
        let res = s.headers(c.get(pg.url(&format!("/nothing/{}?{q}", s.pans[4])))).send().await.unwrap();
        expect(404, res, "no route");
        let res = s.headers(c.delete(pg.url(&format!("/pay/{}?{q}", s.pans[0])))).send().await.unwrap();
        expect(405, res, "method");
        let big = format!("{}{}", s.form_body(0), "x".repeat(4096));
        let res = s.headers(c.post(pg.url(&format!("/pay/{}?{q}", s.pans[1])))).body(big).send().await.unwrap();
        expect(413, res, "body too large");
        // 429: the second request within the minute.
        let path = format!("/limited?{q}");
        let first = s.headers(c.get(pg.url(&path))).send().await.unwrap();
        let want = if h2 { 429 } else { 200 };
        expect(want, first, "rate limit, first");
        let res = s.headers(c.get(pg.url(&path))).send().await.unwrap();
        expect(429, res, "rate limit");
    }
    sent
}

/// Every label of every sample on `/metrics` is a route name from the rules or a fixed word.
fn assert_labels_bounded(page: &str) {
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some(labels) = line.split_once('{').and_then(|(_, r)| r.split_once('}')).map(|(l, _)| l) else {
            continue;
        };
        for pair in labels.split(',') {
            let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("odd label in {line}"));
            let v = v.trim_matches('"');
            match k {
                "route" => assert!(ROUTES.contains(&v), "route label {v:?} is not a route name: {line}"),
                "status" => assert!(v.len() == 3 && v.bytes().all(|b| b.is_ascii_digit()), "{line}"),
                "le" => assert!(v.parse::<f64>().is_ok() || v == "+Inf", "{line}"),
                "kind" | "result" | "guard" | "decision" => assert!(
                    !v.is_empty() && v.len() <= 16 && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{line}"
                ),
                // An error code of the contract's table.
                "reason" => assert!(
                    !v.is_empty() && v.len() <= 32 && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{line}"
                ),
                other => panic!("unexpected label {other} in {line}"),
            }
        }
    }
}

async fn run_at(level: &str) {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let rules = [("00-rules.toml", RULES), ("stripe.secret", "whsec_secrets_test")];
    let cfg = write_config(dir.path(), &cert, backend.addr, &format!("[log]\nlevel = \"{level}\"\n"), &rules);
    let pg = Payguard::spawn(&cfg, Stdout::Captured, &[]).await;
    let s = Secrets::new();
    let sent = send_all(&pg, &cert, &s).await;
    // The access lines are written when each response ends: wait for all of them.
    let all_logged =
        || async { pg.log().iter().filter(|l| l.contains("\"target\":\"payguard::access\"")).count() >= sent };
    assert!(eventually(Duration::from_secs(10), all_logged).await, "not every request was logged");
    let metrics = pg.metrics().await;
    let lines = pg.lines.clone();
    let (code, stderr) = pg.terminate(Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{stderr:?}");
    // Everything the process wrote, after its exit: stdout and stderr.
    let stdout = lines.lock().unwrap().clone();
    let all: Vec<&String> = stdout.iter().chain(stderr.iter()).collect();
    assert!(all.len() > sent, "the log is missing lines");
    for needle in s.needles() {
        if let Some(l) = all.iter().find(|l| l.contains(&needle)) {
            panic!("{needle:?} leaked into the log at level {level}: {l}");
        }
        assert!(!metrics.contains(&needle), "{needle:?} leaked into /metrics");
    }
    // The header names themselves are fine to log; their values never are. And the access line
    // does record the path, with the card number masked.
    let masked = format!("/pay/{}******{}", &s.pans[0][..6], &s.pans[0][12..]);
    assert!(stdout.iter().any(|l| l.contains(&masked)), "no access line with the masked path {masked}");
    let masked_dashes = format!("{}-{}**-****-{}", &s.pans[0][..4], &s.pans[0][4..6], &s.pans[0][12..]);
    assert!(stdout.iter().any(|l| l.contains(&masked_dashes)), "no access line with {masked_dashes}");
    assert_labels_bounded(&metrics);
    eprintln!(
        "level {level}: {sent} requests, {} stdout lines, {} stderr lines, no secret found",
        stdout.len(),
        stderr.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_log_or_metrics_at_info() {
    run_at("info").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_log_or_metrics_at_debug() {
    run_at("debug").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_log_or_metrics_at_trace() {
    run_at("trace").await;
}
