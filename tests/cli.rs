//! The `payguard` binary itself: `check`, `run`, signals, memory while streaming, log hygiene.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_payguard");

fn check(args: &[&str], cwd: &std::path::Path) -> (i32, String) {
    let out = Command::new(BIN).arg("check").args(args).current_dir(cwd).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn check_accepts_a_valid_config_and_reports_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    write_config(dir.path(), &cert, "127.0.0.1:3000".parse().unwrap(), "", OPEN_RULES);
    let (code, out) = check(&["--config", "payguard.toml"], dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok"), "{out}");

    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nlisten = \"localhost\"\ntls_cert = \"missing.crt\"\ntls_key = \"server.key\"\nbogus = 1\n",
    )
    .unwrap();
    let (code, out) = check(&["--config", "bad.toml"], dir.path());
    assert_eq!(code, 1, "{out}");
    // Every problem, each with its position: bad address, unreadable cert, unknown key.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("bad.toml:2:10: listen"), "{out}");
    assert!(lines[1].starts_with("bad.toml:3:12: tls_cert: cannot read"), "{out}");
    assert!(lines[2].starts_with("bad.toml:5:1: ") && lines[2].contains("bogus"), "{out}");

    std::fs::write(
        dir.path().join("bad2.toml"),
        "[server]\nlisten = \"localhost\"\ntls_cert = \"missing.crt\"\ntls_key = \"server.key\"\n",
    )
    .unwrap();
    let (code, out) = check(&["--config", "bad2.toml"], dir.path());
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("bad2.toml:2:10: listen"), "{out}");
    assert!(lines[1].starts_with("bad2.toml:3:12: tls_cert: cannot read"), "{out}");

    // A certificate that does not parse is caught by check too.
    std::fs::write(dir.path().join("server.crt"), "not a pem").unwrap();
    let (code, out) = check(&["--config", "payguard.toml"], dir.path());
    assert_eq!(code, 1);
    assert!(out.contains("server.crt"), "{out}");
}

#[test]
fn check_holds_an_idempotency_lease_against_the_upstream_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let rules = "[[route]]\nname = \"pay\"\nmatch = { path = \"/pay\" }\n[route.idempotency]\nlease = \"5s\"\n";
    write_config(dir.path(), &cert, "127.0.0.1:3000".parse().unwrap(), "", &[("pay.toml", rules)]);
    // write_config sets a 10 s response timeout: a 5 s lease could let a duplicate through.
    let (code, out) = check(&["--config", "payguard.toml"], dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("pay.toml:5:9: lease (5s) is shorter than the upstream response_timeout (10s)"), "{out}");
    std::fs::write(dir.path().join("rules/pay.toml"), rules.replace("5s", "10s")).unwrap();
    let (code, out) = check(&["--config", "payguard.toml"], dir.path());
    assert_eq!(code, 0, "{out}");
}

#[test]
fn check_reports_bad_content_guard_values_where_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let rules = r#"[defaults]
card_data = { request = "refuse" }
hosts = ["shop.example.com", "https://x.example"]

[[route]]
name = "pay"
match = { path = "/pay" }
[route.card_data]
response = "hide"
extra = 1
[route.origin]
allow = ["https://shop.example.com/", "null"]

[[route]]
name = "note"
match = { path = "/note" }
[route.injection]
action = "block"
fields = ["/a~2b", "", "/ok"]

[[route]]
name = "empty"
match = { path = "/empty" }
[route.injection]
fields = []
"#;
    write_config(dir.path(), &cert, "127.0.0.1:3000".parse().unwrap(), "", &[("pay.toml", rules)]);
    let (code, out) = check(&["--config", "payguard.toml"], dir.path());
    assert_eq!(code, 1, "{out}");
    for expected in [
        "pay.toml:2:25: unknown card_data.request \"refuse\"",
        "pay.toml:3:30: invalid host \"https://x.example\"",
        "pay.toml:9:12: unknown card_data.response \"hide\"",
        "pay.toml:12:10: invalid origin \"https://shop.example.com/\"",
        "pay.toml:12:39: invalid origin \"null\"",
        "pay.toml:18:10: unknown injection action \"block\"",
        "pay.toml:19:11: invalid field \"/a~2b\"",
        "pay.toml:19:20: invalid field \"\"",
        "pay.toml:25:10: fields must not be empty",
    ] {
        assert!(out.contains(expected), "{expected}\n{out}");
    }
    assert!(out.contains("pay.toml:10:1: ") && out.contains("extra"), "{out}");
}

/// A request with a card number: the audit line names the field and the masked number; no log
/// line holds the number itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_card_number_is_audited_masked() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let rules =
        "[defaults]\ncard_data = { request = \"reject\" }\n\n[[route]]\nname = \"pay\"\nmatch = { path = \"/pay\" }\n";
    let cfg = write_config(dir.path(), &cert, backend.addr, "", &[("00-r.toml", rules)]);
    let pg = Child_::spawn(&cfg);
    let client = h2_client(&cert);
    let res = client
        .post(url(pg.addr, "/pay"))
        .header("content-type", "application/json")
        .body(r#"{"payment":{"pan":"4111 1111 1111 1111"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let lines = log_lines_for(&pg, &id).await;
    let audit = lines.iter().find(|l| l["target"] == "payguard::audit").expect("an audit line");
    assert_eq!(audit["guard"], "card_data");
    assert_eq!(audit["reason"], "card_data");
    let detail = audit["detail"].as_str().unwrap();
    assert!(detail.contains("visa 411111******1111 in /payment/pan"), "{audit}");
    assert_eq!(backend.count(), 0);
    for leaked in ["4111 1111 1111 1111", "4111111111111111", "1111 1111 1111"] {
        assert!(!pg.log().iter().any(|l| l.contains(leaked)), "{leaked} leaked into the log");
    }
}

#[test]
fn help_lists_both_commands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("run") && text.contains("check"), "{text}");
}

/// A payguard child process whose stdout (the JSON log) is collected.
struct Child_ {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
}

impl Child_ {
    fn spawn(config: &std::path::Path) -> Child_ {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .args(["--threads", "2"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("payguard listening") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let ready = rx.recv_timeout(Duration::from_secs(30)).expect("payguard did not start");
        let v: serde_json::Value = serde_json::from_str(&ready).unwrap();
        let addr = v["listen"].as_str().unwrap().parse().unwrap();
        let admin = v["admin"].as_str().unwrap().parse().unwrap();
        Child_ { child, lines, reader: Some(reader), addr, admin }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args(["-s", sig, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap()
    }

    fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for the process to exit and its log to be read to the end.
    fn wait(&mut self) -> std::process::ExitStatus {
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        status
    }
}

impl Drop for Child_ {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url(addr: std::net::SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{}", addr.port(), path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_and_exits_zero() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let cfg = write_config(dir.path(), &cert, backend.addr, "", OPEN_RULES);
    let mut pg = Child_::spawn(&cfg);
    let client = h1_client(&cert);
    let in_flight = tokio::spawn(client.get(url(pg.addr, "/gate")).send());
    backend.arrived.notified().await;
    pg.signal("TERM");
    let addr = pg.addr;
    assert!(
        eventually(Duration::from_secs(5), || async move { tokio::net::TcpStream::connect(addr).await.is_err() }).await
    );
    backend.open_gate();
    let res = in_flight.await.unwrap().unwrap_or_else(|e| panic!("in-flight request failed: {e:?}"));
    assert_eq!(res.status(), 200);
    let status = tokio::task::spawn_blocking(move || {
        let s = pg.wait();
        (s, pg)
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0));
    let log = status.1.log();
    assert!(log.iter().any(|l| l.contains("draining")), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_upload_streams_with_flat_memory() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let cfg = write_config(dir.path(), &cert, backend.addr, "", OPEN_RULES);
    let pg = Child_::spawn(&cfg);
    let client = h1_client(&cert);
    // Warm up (TLS, pools), then take the baseline peak.
    client.get(url(pg.addr, "/warm")).send().await.unwrap();
    let before = pg.vm_hwm_kib();
    const TOTAL: u64 = 100 * 1024 * 1024;
    let chunk = Bytes::from(vec![1u8; 256 * 1024]);
    let stream = futures_util::stream::iter(
        (0..TOTAL / chunk.len() as u64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let res = client
        .post(url(pg.addr, "/upload"))
        .header("content-length", TOTAL.to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(backend.last().body_len, TOTAL);
    let after = pg.vm_hwm_kib();
    let growth_mib = (after.saturating_sub(before)) / 1024;
    assert!(
        growth_mib < 32,
        "peak RSS grew by {growth_mib} MiB while streaming 100 MiB (before {before} KiB, after {after} KiB)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let cfg = write_config(dir.path(), &cert, backend.addr, "", OPEN_RULES);
    let pg = Child_::spawn(&cfg);
    let client = h2_client(&cert);
    let res = client
        .post(url(pg.addr, "/pay?token=QUERYSECRET123"))
        .header("authorization", "Bearer AUTHSECRET123")
        .header("cookie", "session=COOKIESECRET123")
        .header("stripe-signature", "t=1,v1=SIGSECRET123")
        .body("card=4111111111111111")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    // The access line is written when the response body ends; wait for it.
    let log = loop {
        let log = pg.log();
        if log.iter().any(|l| l.contains(&id)) {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let access: serde_json::Value = serde_json::from_str(log.iter().find(|l| l.contains(&id)).unwrap()).unwrap();
    assert_eq!(access["target"], "payguard::access");
    assert_eq!(access["status"], 200);
    assert_eq!(access["path"], "/pay");
    assert_eq!(access["method"], "POST");
    assert_eq!(access["client_ip"], "127.0.0.1");
    assert!(access["duration_ms"].is_number());
    for secret in ["QUERYSECRET123", "AUTHSECRET123", "COOKIESECRET123", "SIGSECRET123", "4111111111111111"] {
        assert!(!log.iter().any(|l| l.contains(secret)), "{secret} leaked into the log");
    }
}

/// The log lines, once one names `id`: the access line is written when the response body ends.
async fn log_lines_for(pg: &Child_, id: &str) -> Vec<serde_json::Value> {
    loop {
        let lines: Vec<serde_json::Value> =
            pg.log().iter().filter(|l| l.contains(id)).filter_map(|l| serde_json::from_str(l).ok()).collect();
        if lines.iter().any(|l| l["target"] == "payguard::access") {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_guards_passed_and_access_lines_the_time_guards_took() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let rules = "[defaults]\nip_allow = [\"127.0.0.0/8\"]\nrate_limit = { rate = \"1000/s\" }\n\n\
                 [[route]]\nname = \"pay\"\nmatch = { path = \"/pay\" }\n\
                 [route.validate]\nrequired_headers = [\"x-order\"]\n";
    let cfg = write_config(dir.path(), &cert, backend.addr, "", &[("00-r.toml", rules)]);
    let pg = Child_::spawn(&cfg);
    let client = h2_client(&cert);

    let res = client.post(url(pg.addr, "/pay")).body("{}").send().await.unwrap();
    assert_eq!(res.status(), 400);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let lines = log_lines_for(&pg, &id).await;
    let audit = lines.iter().find(|l| l["target"] == "payguard::audit").expect("an audit line");
    assert_eq!(audit["guard"], "validate");
    assert_eq!(audit["passed"], "ip,rate_limit");
    assert!(audit["elapsed_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{audit}");
    let access = lines.iter().find(|l| l["target"] == "payguard::access").unwrap();
    assert!(access.get("guards_ms").is_none(), "a refused request was not forwarded: {access}");

    let res = client.post(url(pg.addr, "/pay")).header("x-order", "1").body("{}").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let _ = res.bytes().await.unwrap();
    let lines = log_lines_for(&pg, &id).await;
    let access = lines.iter().find(|l| l["target"] == "payguard::access").unwrap();
    let (guards, total) = (access["guards_ms"].as_f64().unwrap(), access["duration_ms"].as_f64().unwrap());
    assert!(guards >= 0.0 && guards <= total, "guards_ms {guards} within duration_ms {total}");
}

#[test]
fn shipped_rules_pass_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN).arg("check").current_dir(root).env_remove("PAYGUARD_CONFIG").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("route(s) in rules"), "{text}");
}

/// Rules for `explain`: a Stripe callback route, and a storefront route in monitor mode.
const EXPLAIN_RULES: &[(&str, &str)] = &[
    (
        "10-pay.toml",
        r#"# The payment callbacks.

[[route]]
name = "stripe"
match = { path = "/stripe", methods = ["POST"] }
[route.signature]
provider = "stripe"
secrets = ["env:PG_EXPLAIN_STRIPE"]
"#,
    ),
    (
        "20-shop.toml",
        r#"[[route]]
name = "search"
mode = "monitor"
match = { path = "/search" }
[route.injection]
"#,
    ),
];

/// `payguard COMMAND --config payguard.toml ARGS` in `dir`, with the Stripe route's secret set:
/// exit code, stdout, stderr.
fn offline(command: &str, dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg(command)
        .args(["--config", "payguard.toml"])
        .args(args)
        .current_dir(dir)
        .env("PG_EXPLAIN_STRIPE", "whsec_explain")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn explain(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    offline("explain", dir, args)
}

fn explain_json(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let (code, out, err) = explain(dir, &[&["--json"], args].concat());
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn explain_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // The upstream is never contacted: a closed port proves it.
    write_config(dir.path(), &make_cert(), "127.0.0.1:9".parse().unwrap(), "", EXPLAIN_RULES);
    dir
}

fn stripe_header(secret: &str, body: &str) -> String {
    use hmac::Mac;
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("stripe-signature: t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn explain_shows_route_guards_and_answer_of_a_verified_callback() {
    let dir = explain_dir();
    let body = r#"{"id":"evt_1"}"#;
    std::fs::write(dir.path().join("evt.json"), body).unwrap();
    let sig = stripe_header("whsec_explain", body);
    let v = explain_json(dir.path(), &["POST", "https://shop.test/stripe", "-H", &sig, "--body", "evt.json"]);
    assert_eq!(v["route"], "stripe", "{v:#}");
    assert!(v["defined_at"].as_str().unwrap().ends_with("10-pay.toml:4:8"), "{v:#}");
    assert_eq!((v["status"].as_u64(), v["forwarded"].as_bool()), (Some(200), Some(true)), "{v:#}");
    assert!(v["error"].is_null());
    // Every guard, in stack order, after the router.
    let guards: Vec<&str> = v["guards"].as_array().unwrap().iter().map(|g| g["guard"].as_str().unwrap()).collect();
    assert_eq!(guards[0], "route");
    assert_eq!(guards[1..], payguard::stack::GUARDS);
    let signature = v["guards"].as_array().unwrap().iter().find(|g| g["guard"] == "signature").unwrap();
    assert_eq!(signature["decision"], "pass");
    assert!(signature["reason"].as_str().unwrap().contains("secrets[0]"), "{signature}");
    assert_eq!(v["added_headers"]["x-payguard-verified"], "stripe", "{v:#}");
    assert_eq!(v["added_headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(v["backend_request"]["path"], "/stripe");

    // The same callback, signed with another secret: refused, nothing after the signature ran.
    let bad = stripe_header("whsec_other", body);
    let v = explain_json(dir.path(), &["POST", "/stripe", "-H", &bad, "--body", "evt.json", "--from", "203.0.113.9"]);
    assert_eq!((v["status"].as_u64(), v["error"].as_str()), (Some(401), Some("signature_invalid")), "{v:#}");
    assert_eq!(v["forwarded"], false);
    let decision = |g: &str| {
        v["guards"].as_array().unwrap().iter().find(|s| s["guard"] == g).unwrap()["decision"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(decision("signature"), "block");
    assert_eq!(decision("replay"), "not_reached");
    assert_eq!(decision("ip"), "pass");
}

#[test]
fn explain_shows_monitor_decisions_and_a_readable_report() {
    let dir = explain_dir();
    let v = explain_json(dir.path(), &["GET", "/search?q=1%27%20OR%20%271%27%3D%271"]);
    assert_eq!((v["route"].as_str(), v["mode"].as_str()), (Some("search"), Some("monitor")));
    let injection = v["guards"].as_array().unwrap().iter().find(|g| g["guard"] == "injection").unwrap();
    assert_eq!(injection["decision"], "would_block", "{v:#}");
    assert!(injection["reason"].as_str().unwrap().contains("sqli"), "{injection}");
    assert_eq!((v["status"].as_u64(), v["forwarded"].as_bool()), (Some(200), Some(true)));

    let (code, out, _) = explain(dir.path(), &["POST", "/nowhere"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("route    none matched"), "{out}");
    assert!(out.contains("answer   200"), "{out}");

    let (code, out, _) = explain(dir.path(), &["POST", "/stripe"]);
    assert_eq!(code, 0);
    assert!(out.contains("route    stripe (rules/10-pay.toml:4:8, enforce)"), "{out}");
    assert!(out.contains("signature_invalid") && out.contains("not forwarded"), "{out}");
    assert!(out.contains("empty at start"), "{out}");
}

#[test]
fn explain_refuses_bad_arguments_with_exit_2() {
    let dir = explain_dir();
    for args in [&["GET"][..], &["GET", "/", "-H", "no colon"], &["GET", "/", "--from", "nowhere"], &["G ET", "/"]] {
        let (code, out, err) = explain(dir.path(), args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
    }
}

/// `payguard explain` lists the guards in `stack::GUARDS` order: it is the order a request
/// really meets them, as the proxy's own refusal after the last of them says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_order_explain_shows_is_the_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let cfg = write_config(dir.path(), &cert, closed_port().await, "", OPEN_RULES);
    let pg = Child_::spawn(&cfg);
    let res = h1_client(&cert).get(url(pg.addr, "/anything")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let lines = log_lines_for(&pg, &id).await;
    let audit = lines.iter().find(|l| l["target"] == "payguard::audit").expect("an audit line");
    assert_eq!(audit["guard"], "proxy");
    assert_eq!(audit["passed"], payguard::stack::GUARDS.join(","), "{audit}");
}

/// The value of an unlabelled metric, or of one labelled series (`name{labels}`).
async fn metric(admin: std::net::SocketAddr, series: &str) -> Option<f64> {
    let text = admin_get(admin, "/metrics").await.text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// SIGHUP (`systemctl reload`) loads rules and certificates again, even with `[rules] watch`
/// off and files that look unchanged; a bad rule file is refused and the old rules serve on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_rules_and_certificates_and_the_expiry_is_exported() {
    use x509_cert::der::Decode;
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let deny = ("00-r.toml", "[defaults]\naction = \"deny\"\n");
    let cfg = write_config(dir.path(), &cert, backend.addr, "[rules]\nwatch = false\n", &[deny]);
    let pg = Child_::spawn(&cfg);
    let client = h1_client(&cert);
    let status = |path: &'static str| {
        let (client, addr) = (client.clone(), pg.addr);
        async move { client.get(url(addr, path)).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/a").await, 404);

    let leaf = x509_cert::Certificate::from_der(&cert.der).unwrap();
    let not_after = leaf.tbs_certificate.validity.not_after.to_unix_duration().as_secs() as f64;
    assert_eq!(metric(pg.admin, "payguard_certificate_expiry_timestamp_seconds").await, Some(not_after));

    let rules = dir.path().join("rules");
    std::fs::write(rules.join("10-a.toml"), "[[route]]\nname = \"a\"\nmatch = { path = \"/a\" }\n").unwrap();
    pg.signal("HUP");
    assert!(eventually(Duration::from_secs(10), || async { status("/a").await == 200 }).await, "rules reloaded");
    let reloaded =
        || async { metric(pg.admin, "payguard_certificate_reloads_total{result=\"ok\"}").await == Some(1.0) };
    assert!(eventually(Duration::from_secs(10), reloaded).await, "the unchanged certificate was loaded again");

    std::fs::write(rules.join("10-a.toml"), "[[route]]\nname = 1\n").unwrap();
    pg.signal("HUP");
    let refused = || async { metric(pg.admin, "payguard_rule_reloads_total{result=\"error\"}").await == Some(1.0) };
    assert!(eventually(Duration::from_secs(10), refused).await);
    assert_eq!(status("/a").await, 200, "the last good rules keep serving");
    // The log is written and read on other threads: it may trail the metric.
    let reported = || async { pg.log().iter().any(|l| l.contains("10-a.toml:2:")) };
    assert!(eventually(Duration::from_secs(10), reported).await, "the problem is reported with file:line");
}

/// Every metric the shipped alerts and dashboard (contrib/) query exists on a running payguard,
/// once the events they watch have happened: a series labelled by route appears with its first
/// event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_shipped_alerts_and_dashboard_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("contrib/metric_names.py"))
        .arg(root.join("contrib/prometheus/alerts.yml"))
        .arg(root.join("contrib/grafana/payguard.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    assert!(names.len() >= 8, "{names:?}");

    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    // A route that bans a client after one declined payment.
    let rules = "[[route]]\nname = \"pay\"\nmatch = { path = \"/pay/*\" }\n\
                 [[route.failure_limit]]\nfailure = { status = [\"402\"] }\nthreshold = 1\nwindow = \"1m\"\nban = \"1m\"\n";
    let cfg = write_config(dir.path(), &cert, backend.addr, "", &[("00-r.toml", rules)]);
    let pg = Child_::spawn(&cfg);
    let client = h1_client(&cert);
    assert_eq!(client.get(url(pg.addr, "/pay/status/402")).send().await.unwrap().status(), 402);
    assert_eq!(client.get(url(pg.addr, "/pay/x")).send().await.unwrap().status(), 429);

    let text = admin_get(pg.admin, "/metrics").await.text().await.unwrap();
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| {
            !text.lines().any(|l| l.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with(['{', ' '])))
        })
        .collect();
    assert!(missing.is_empty(), "not on /metrics: {missing:?}\n{text}");
}

fn sign(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(BIN).arg("sign").args(args).envs(env.iter().copied()).current_dir(dir).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The header lines and the body `payguard sign` printed, as `explain` arguments.
fn signed_args(out: &str) -> (Vec<String>, Option<String>) {
    let (head, body) = match out.split_once("\n\n") {
        Some((h, b)) => (h, Some(b.trim_end_matches('\n').to_string())),
        None => (out.trim_end(), None),
    };
    (head.lines().flat_map(|l| ["-H".to_string(), l.to_string()]).collect(), body)
}

/// What `payguard sign` prints passes the real verifier: a Stripe callback (secret from the
/// environment) and an Alipay notification (form body signed with an RSA key made here).
#[test]
fn sign_makes_callbacks_that_verify() {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair as _;
    let dir = explain_dir();
    let body = r#"{"id":"evt_2","type":"payment_intent.succeeded"}"#;
    std::fs::write(dir.path().join("evt.json"), body).unwrap();
    let (code, out, err) = sign(
        &["--provider", "stripe", "--secret", "env:PG_S", "--body", "evt.json"],
        &[("PG_S", "whsec_explain")],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("stripe-signature: t="), "{out}");
    let (headers, none) = signed_args(&out);
    assert!(none.is_none());
    let args: Vec<&str> = headers.iter().map(String::as_str).collect();
    let v = explain_json(dir.path(), &[&["POST", "/stripe", "--body", "evt.json"], &args[..]].concat());
    assert_eq!((v["status"].as_u64(), v["forwarded"].as_bool()), (Some(200), Some(true)), "{v:#}");

    // Alipay: an RSA key pair made now; payguard holds the public half.
    let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pem = |label: &str, der: &[u8]| {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    };
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp).unwrap();
    std::fs::write(dir.path().join("alipay.key"), pem("PRIVATE KEY", pkcs8.as_ref())).unwrap();
    let spki = kp.public_key().as_der().unwrap();
    std::fs::write(dir.path().join("rules/alipay.pub"), pem("PUBLIC KEY", spki.as_ref())).unwrap();
    std::fs::write(
        dir.path().join("rules/30-alipay.toml"),
        "[[route]]\nname = \"alipay\"\nmatch = { path = \"/alipay\" }\n[route.signature]\nprovider = \"alipay-rsa2\"\n\
         public_key = \"file:alipay.pub\"\ntolerance = \"5m\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("form.txt"),
        "out_trade_no=20261207001&total_amount=88.00&trade_status=TRADE_SUCCESS",
    )
    .unwrap();
    let (code, out, err) =
        sign(&["--provider", "alipay-rsa2", "--private-key", "alipay.key", "--body", "form.txt"], &[], dir.path());
    assert_eq!(code, 0, "{err}");
    let (headers, body) = signed_args(&out);
    let body = body.expect("the signed body after a blank line");
    assert!(body.contains("sign_type=RSA2&sign=") && body.contains("notify_id="), "{body}");
    std::fs::write(dir.path().join("signed.txt"), &body).unwrap();
    let args: Vec<&str> = headers.iter().map(String::as_str).collect();
    let v = explain_json(dir.path(), &[&["POST", "/alipay", "--body", "signed.txt"], &args[..]].concat());
    assert_eq!((v["route"].as_str(), v["status"].as_u64()), (Some("alipay"), Some(200)), "{v:#}");
    assert_eq!(v["added_headers"]["x-payguard-verified"], "alipay-rsa2");

    // The wrong kind of key, an unknown provider, PayPal: refused with a reason, exit 2.
    for (args, says) in [
        (&["--provider", "alipay-rsa2", "--secret", "env:PG_X"][..], "--private-key"),
        (&["--provider", "nope", "--secret", "env:PG_X"][..], "unknown provider"),
        (&["--provider", "paypal", "--secret", "env:PG_X"][..], "own certificate"),
        (&["--provider", "stripe"][..], "--secret"),
        (&["--provider", "stripe", "--secret", "whsec_in_the_clear"][..], "env:NAME"),
    ] {
        let (code, _, err) = sign(args, &[("PG_X", "x")], dir.path());
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

fn rule_test(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    offline("test", dir, args)
}

/// Rule tests: cases signed at run time, state carried from request to request within a case
/// (a replay, a ban) and fresh for the next case; failures with file:line, expected and got.
#[test]
fn rule_tests_run_in_order_with_fresh_state_per_case() {
    let dir = explain_dir();
    std::fs::write(
        dir.path().join("rules/30-pay.toml"),
        "[[route]]\nname = \"charge\"\nmatch = { path = \"/charge\", methods = [\"POST\"] }\n\
         [[route.failure_limit]]\nfailure = { status = [\"402\"] }\nthreshold = 2\nwindow = \"10m\"\nban = \"15m\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("rules/tests")).unwrap();
    let cases = r#"
[[case]]
name = "a replayed Stripe callback is refused"
[[case.request]]
method = "POST"
url = "/stripe"
headers = { "content-type" = "application/json" }
body = '{"id": "evt_1", "type": "payment_intent.succeeded"}'
from = "203.0.113.7"
sign = { secret = "env:PG_EXPLAIN_STRIPE" }
expect = { status = 200, forwarded = true, route = "stripe", headers = { "x-payguard-verified" = "stripe", "x-forwarded-for" = "203.0.113.7" } }
[[case.request]]
same_as = 1
expect = { status = 401, error = "replay", forwarded = false }

[[case]]
name = "the third declined payment is banned"
[[case.request]]
method = "POST"
url = "/charge"
backend = { status = 402, body = '{"error":"card_declined"}' }
expect = { status = 402, forwarded = true }
[[case.request]]
same_as = 1
backend = { status = 402 }
expect = { status = 402 }
[[case.request]]
same_as = 1
expect = { status = 429, error = "too_many_failures", forwarded = false }

[[case]]
name = "each case starts from an empty state"
[[case.request]]
method = "POST"
url = "/charge"
expect = { status = 200, error = "" }
"#;
    std::fs::write(dir.path().join("rules/tests/pay.toml"), cases).unwrap();
    let (code, out, err) = rule_test(dir.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim_end(), "3 passed, 0 failed", "{out}");

    // Wrong expectations: each reported at its request's line, with what happened instead.
    let wrong = "[[case]]\nname = \"wrong\"\n[[case.request]]\nurl = \"/stripe\"\nmethod = \"POST\"\n\
                 expect = { status = 200, forwarded = true }\n\n[[case]]\nname = \"right\"\n[[case.request]]\n\
                 url = \"/nowhere\"\nexpect = { status = 200 }\n";
    std::fs::write(dir.path().join("wrong.toml"), wrong).unwrap();
    let (code, out, _) = rule_test(dir.path(), &["wrong.toml"]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("wrong.toml:3: case \"wrong\", request 1: expected status 200, got 401"), "{out}");
    assert!(lines[0].contains("signature"), "the refusing guard is named: {out}");
    assert!(lines[1].starts_with("wrong.toml:3: case \"wrong\", request 1: expected forwarded = true, got false"));
    assert_eq!(lines[2], "1 passed, 1 failed");

    // A test file that does not parse is a failure at its line; the rules directory never reads
    // rules/tests/ as rules (the broken file there does not stop `check`).
    std::fs::write(dir.path().join("rules/tests/broken.toml"), "[[case]]\nname = 1\n").unwrap();
    let (code, out, _) = rule_test(dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(out.contains("broken.toml:2: "), "{out}");
    assert!(out.ends_with("3 passed, 1 failed\n"), "{out}");
    let (code, out, _) = offline("check", dir.path(), &[]);
    assert_eq!(code, 0, "{out}");
}

/// The shipped rules come with tests of every route (rules/tests/), and they pass.
#[test]
fn shipped_rule_tests_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN).arg("test").current_dir(root).env_remove("PAYGUARD_CONFIG").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let passed: usize = text.trim_end().strip_suffix(" passed, 0 failed").and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(passed >= 20, "{text}");
}

/// docs/rules.md shows the shipped rule files verbatim (its "Complete example" section).
#[test]
fn the_documented_rule_files_are_the_shipped_ones() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/rules.md")).unwrap();
    for name in ["00-defaults.toml", "10-shop.toml", "20-callbacks.toml"] {
        let shipped = std::fs::read_to_string(root.join("rules").join(name)).unwrap();
        let copy = format!("```toml\n# rules/{name}\n{shipped}```");
        assert!(docs.contains(&copy), "docs/rules.md's copy of rules/{name} differs from the file");
    }
}
