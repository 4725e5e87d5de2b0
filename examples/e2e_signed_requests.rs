//! Generates what benches/e2e/run.sh needs to measure signed vs unsigned routes end to end:
//! a rules directory (an unsigned route, a GitHub-style `hmac` route and a `wechatpay-v3`
//! route, with a generated secret and an RSA-2048 platform certificate), and files of raw
//! HTTP/1.1 POST requests, NUL-separated, each with a ~1 KiB JSON body that is unique (so every
//! signed request carries a different signature / nonce and none is refused as a replay):
//!
//! - `unsigned.req`: `POST /unsigned`, no signature;
//! - `hmac.req`: `POST /hook/hmac` with `x-hub-signature-256`;
//! - `wechat.req`: `POST /hook/wechat` with the four `Wechatpay-*` headers (timestamp = now;
//!   the route's tolerance is 1h so the file stays valid for an hour);
//! - `hmac-replay.req`, `wechat-replay.req`: one request each, for the replay-refusal mode.
//!
//! Usage: `cargo run --release --example e2e_signed_requests -- OUT_DIR HOST:PORT N_HMAC N_WECHAT`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::Engine as _;

const BODY_LEN: usize = 1024;
const SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const HMAC_SECRET: &[u8] = b"e2e-bench-secret-0123456789abcdef";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn body(i: usize) -> String {
    let head = format!(
        r#"{{"id":"evt_{i:016}","object":"event","type":"payment_intent.succeeded","created":1777608000,"data":{{"object":{{"id":"pi_{i:016}","amount":2000,"currency":"usd","status":"succeeded","metadata":{{"order_id":"ord_{i:016x}"}},"description":""#
    );
    let tail = r#""}}}"#;
    let pad = BODY_LEN.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

fn request(path: &str, host: &str, extra: &[(&str, String)], body: &str) -> String {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        let _ = write!(r, "{k}: {v}\r\n");
    }
    r.push_str("\r\n");
    r.push_str(body);
    r
}

fn write_requests(path: &Path, reqs: &[String]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for r in reqs {
        f.write_all(r.as_bytes()).unwrap();
        f.write_all(b"\0").unwrap();
    }
    f.flush().unwrap();
}

fn hmac_req(i: usize, host: &str) -> String {
    let b = body(i);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, HMAC_SECRET);
    let sig = hex::encode(aws_lc_rs::hmac::sign(&key, b.as_bytes()).as_ref());
    request("/hook/hmac", host, &[("x-hub-signature-256", format!("sha256={sig}"))], &b)
}

fn wechat_req(kp: &KeyPair, i: usize, host: &str, ts: u64) -> String {
    let b = body(i);
    let nonce = format!("N{i:031}");
    let message = format!("{ts}\n{nonce}\n{b}\n");
    let mut sig = vec![0; kp.public_modulus_len()];
    kp.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message.as_bytes(), &mut sig).unwrap();
    request(
        "/hook/wechat",
        host,
        &[
            ("Wechatpay-Timestamp", ts.to_string()),
            ("Wechatpay-Nonce", nonce),
            ("Wechatpay-Signature", b64(&sig)),
            ("Wechatpay-Serial", SERIAL.into()),
        ],
        &b,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() == 5, "usage: e2e_signed_requests OUT_DIR HOST:PORT N_HMAC N_WECHAT");
    let out = Path::new(&args[1]);
    let host = args[2].as_str();
    let n_hmac: usize = args[3].parse().unwrap();
    let n_wechat: usize = args[4].parse().unwrap();
    std::fs::create_dir_all(out.join("rules/keys")).unwrap();

    let kp = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp).unwrap();
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
    let rk = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["wechatpay.bench".into()]).unwrap();
    params.serial_number = Some(rcgen::SerialNumber::from(hex::decode(SERIAL).unwrap()));
    std::fs::write(out.join("rules/keys/wechat.pem"), params.self_signed(&rk).unwrap().pem()).unwrap();
    std::fs::write(out.join("rules/keys/hmac.secret"), HMAC_SECRET).unwrap();
    std::fs::write(
        out.join("rules/10-e2e.toml"),
        format!(
            r#"[[route]]
name = "unsigned"
match = {{ path = "/unsigned", methods = ["POST"] }}

[[route]]
name = "hmac"
match = {{ path = "/hook/hmac", methods = ["POST"] }}
[route.signature]
provider = "hmac"
secrets = ["file:keys/hmac.secret"]

[[route]]
name = "wechat"
match = {{ path = "/hook/wechat", methods = ["POST"] }}
[route.signature]
provider = "wechatpay-v3"
tolerance = "1h"
public_keys = {{ "{SERIAL}" = "file:keys/wechat.pem" }}
"#
        ),
    )
    .unwrap();

    let unsigned: Vec<String> = (0..1000).map(|i| request("/unsigned", host, &[], &body(i))).collect();
    write_requests(&out.join("unsigned.req"), &unsigned);
    let hmac: Vec<String> = (0..n_hmac).map(|i| hmac_req(i, host)).collect();
    write_requests(&out.join("hmac.req"), &hmac);
    write_requests(&out.join("hmac-replay.req"), &hmac[..1]);

    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let per = n_wechat.div_ceil(threads);
    let wechat: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let kp = &kp;
                s.spawn(move || {
                    (t * per..((t + 1) * per).min(n_wechat)).map(|i| wechat_req(kp, i, host, ts)).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    write_requests(&out.join("wechat.req"), &wechat);
    write_requests(&out.join("wechat-replay.req"), &wechat[..1]);
    println!(
        "wrote {} unsigned, {} hmac, {} wechat requests ({} bytes each, body {BODY_LEN}) to {}",
        unsigned.len(),
        hmac.len(),
        wechat.len(),
        hmac[0].len(),
        out.display()
    );
}
