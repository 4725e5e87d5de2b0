//! `card_data`, request side, through the real proxy: real TLS, HTTP/1.1 and HTTP/2 clients, a
//! real hyper backend that counts what reaches it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;

use common::*;

const RULES: &str = r#"
[defaults]
card_data = { request = "reject", response = "mask" }

[[route]]
name = "pay"
match = { path = "/pay/*" }

[[route]]
name = "watch"
match = { path = "/watch/*" }
mode = "monitor"

[[route]]
name = "note"
match = { path = "/note/*" }
[route.card_data]
request = "monitor"

[[route]]
name = "vault"
match = { path = "/vault/*" }
[route.card_data]
request = "allow"
"#;

async fn send(c: &reqwest::Client, p: &Proxy, path: &str, ct: &str, body: &str) -> (u16, serde_json::Value) {
    let res = c.post(p.url(path)).header("content-type", ct).body(body.to_owned()).send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn a_card_number_never_reaches_the_backend_however_it_is_written() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("pay.toml", RULES)]).await;
    let json = "application/json";
    let form = "application/x-www-form-urlencoded";
    for client in [h1_client(&proxy.cert), h2_client(&proxy.cert)] {
        let before = backend.count();
        for (path, ct, body) in [
            ("/pay/a", json, r#"{"card":{"number":"4111 1111 1111 1111"}}"#),
            ("/pay/a", json, r#"{"n":5555555555554444}"#),
            ("/pay/a", json, r#"{"n":"\u0034111111111111111"}"#),
            ("/pay/a", form, "pan=4111-1111-1111-1111"),
            ("/pay/a", form, "pan=%34111+1111+1111+1111"),
            ("/pay/a?card=378282246310005", "text/plain", ""),
            ("/pay/a", "text/plain", "card 6011111111111117"),
        ] {
            let (status, body_json) = send(&client, &proxy, path, ct, body).await;
            assert_eq!(status, 422, "{path} {body}");
            assert_eq!(body_json["error"], "card_data", "{body_json}");
            assert_eq!(body_json["rule"], "pay");
            assert!(body_json["request_id"].is_string());
        }
        assert_eq!(backend.count(), before, "nothing was forwarded");

        // What is not a card number passes: order numbers, amounts, a failed Luhn check.
        let (status, _) = send(
            &client,
            &proxy,
            "/pay/a",
            json,
            r#"{"order":"20211203220014000512345","amount":1250,"n":"4111111111111112"}"#,
        )
        .await;
        assert_eq!(status, 200);
        // A route that allows card data, and a route in monitor mode, forward it.
        let (status, _) = send(&client, &proxy, "/vault/a", json, r#"{"pan":"4111111111111111"}"#).await;
        assert_eq!(status, 200);
        let (status, _) = send(&client, &proxy, "/watch/a", json, r#"{"pan":"4111111111111111"}"#).await;
        assert_eq!(status, 200);
        // `request = "monitor"` on an enforcing route: recorded, forwarded.
        let (status, _) = send(&client, &proxy, "/note/a", json, r#"{"pan":"4111111111111111"}"#).await;
        assert_eq!(status, 200);
        assert_eq!(backend.count(), before + 4);
    }
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("payguard_decisions_total{route=\"pay\",guard=\"card_data\",decision=\"block\"} 14"),
        "{metrics}"
    );
    assert!(
        metrics.contains("payguard_decisions_total{route=\"watch\",guard=\"card_data\",decision=\"would_block\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("payguard_decisions_total{route=\"note\",guard=\"card_data\",decision=\"would_block\"} 2"),
        "{metrics}"
    );
}

const ANSWERS: &str = r#"
[defaults]
card_data = { request = "allow", response = "mask" }

[[route]]
name = "orders"
match = { path = "/orders/*" }
[route.idempotency]
key = "header:idempotency-key"

[[route]]
name = "strict"
match = { path = "/strict/*" }
[route.card_data]
response = "block"

[[route]]
name = "raw"
match = { path = "/raw/*" }
[route.card_data]
response = "allow"
"#;

#[tokio::test]
async fn card_numbers_in_answers_are_masked_in_place_or_the_answer_is_withheld() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("answers.toml", ANSWERS)]).await;
    let leaking = r#"{"order":42,"card":"4111 1111 1111 1111","alt":5555555555554444,"ref":"20211203220014000512345"}"#;
    // A card number written as a JSON number comes back a string, so the answer still parses.
    let masked =
        r#"{"order":42,"card":"4111 11** **** 1111","alt":"555555******4444","ref":"20211203220014000512345"}"#;
    for c in [h1_client(&proxy.cert), h2_client(&proxy.cert)] {
        // mask: the digits gone, a true content-length; the backend was asked for an
        // uncompressed answer.
        let res = c
            .post(proxy.url("/orders/echo"))
            .header("accept-encoding", "gzip, br")
            .header("idempotency-key", format!("k-{}", backend.count()))
            .body(leaking)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-length"], masked.len().to_string().as_str());
        let asked = backend.last().headers.get("accept-encoding").cloned();
        assert_eq!(asked, None, "accept-encoding reached the backend");
        assert_eq!(res.text().await.unwrap(), masked);
        // block: 502 card_data_leak instead of the answer; a clean answer passes.
        let res = c.post(proxy.url("/strict/echo")).body(leaking).send().await.unwrap();
        assert_eq!(res.status(), 502);
        let body: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
        assert_eq!(body["error"], "card_data_leak");
        let res = c.post(proxy.url("/strict/echo")).body("{\"amount\":1250}").send().await.unwrap();
        assert_eq!((res.status().as_u16(), res.text().await.unwrap()), (200, "{\"amount\":1250}".into()));
        // allow: untouched.
        let res = c.post(proxy.url("/raw/echo")).body(leaking).send().await.unwrap();
        assert_eq!(res.text().await.unwrap(), leaking);
    }
    // What idempotency keeps is the masked answer: the replay is masked too.
    let c = h2_client(&proxy.cert);
    let first = c.post(proxy.url("/orders/echo")).header("idempotency-key", "same").body(leaking).send().await.unwrap();
    assert_eq!(first.text().await.unwrap(), masked);
    let again = c.post(proxy.url("/orders/echo")).header("idempotency-key", "same").body(leaking).send().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), masked);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("payguard_decisions_total{route=\"orders\",guard=\"card_data\",decision=\"mask\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("payguard_decisions_total{route=\"strict\",guard=\"card_data\",decision=\"block\"} 2"),
        "{metrics}"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn br(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
    w.write_all(data).unwrap();
    drop(w);
    out
}

#[tokio::test]
async fn a_compressed_request_body_is_decoded_for_the_scan() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("pay.toml", RULES)]).await;
    let pan = br#"{"card":{"number":"4111111111111111"}}"#;
    let clean = br#"{"token":"tok_visa"}"#;
    for c in [h1_client(&proxy.cert), h2_client(&proxy.cert)] {
        let post = |encoding: &'static str, body: Vec<u8>| {
            c.post(proxy.url("/pay/a"))
                .header("content-type", "application/json")
                .header("content-encoding", encoding)
                .body(body)
                .send()
        };
        let before = backend.count();
        for (encoding, body) in [("gzip", gzip(pan)), ("deflate", zlib(pan)), ("br", br(pan))] {
            let res = post(encoding, body).await.unwrap();
            assert_eq!(res.status(), 422, "{encoding}");
            assert_eq!(json(res).await["error"], "card_data");
        }
        // What cannot be decoded cannot be shown clean.
        let res = post("zstd", b"(zstd frame)".to_vec()).await.unwrap();
        assert_eq!(res.status(), 415);
        let res = post("gzip", b"not gzip".to_vec()).await.unwrap();
        assert_eq!(res.status(), 400);
        assert_eq!(backend.count(), before, "a refused body reached the backend");
        // A clean compressed body goes on as it came.
        let res = post("gzip", gzip(clean)).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(backend.last().body, gzip(clean));
    }
}

#[tokio::test]
async fn a_compressed_answer_is_decoded_for_the_scan() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("answers.toml", ANSWERS)]).await;
    // A long answer, so the card number is deep inside the compressed stream.
    let leaking =
        "{\"pad\":\"".to_owned() + &"ab".repeat(40_000) + "\",\"card\":\"4111111111111111\",\"alt\":5555555555554444}";
    // Streamed decoded: no content-length to keep, and the JSON number quoted.
    let masked =
        leaking.replace("4111111111111111", "411111******1111").replace("5555555555554444", "\"555555******4444\"");
    let clean = r#"{"amount":1250}"#;
    let encoded =
        [("gzip", gzip(leaking.as_bytes())), ("deflate", zlib(leaking.as_bytes())), ("br", br(leaking.as_bytes()))];
    for c in [h1_client(&proxy.cert), h2_client(&proxy.cert)] {
        for (coding, body) in &encoded {
            // mask: decoded, masked, sent on uncompressed.
            let res = c
                .post(proxy.url(&format!("/orders/echo?encoding={coding}")))
                .header("idempotency-key", format!("z-{}", backend.count()))
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{coding}");
            assert!(res.headers().get("content-encoding").is_none(), "{coding}");
            assert_eq!(res.headers()["etag"], "W/\"v1\"");
            assert_eq!(res.text().await.unwrap(), masked, "{coding}");
            // block: refused; a clean compressed answer passes as it came.
            let res =
                c.post(proxy.url(&format!("/strict/echo?encoding={coding}"))).body(body.clone()).send().await.unwrap();
            assert_eq!(res.status(), 502, "{coding}");
            let clean_encoded = match *coding {
                "gzip" => gzip(clean.as_bytes()),
                "deflate" => zlib(clean.as_bytes()),
                _ => br(clean.as_bytes()),
            };
            let res = c
                .post(proxy.url(&format!("/strict/echo?encoding={coding}")))
                .body(clean_encoded.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(res.headers()["content-encoding"], *coding);
            assert_eq!(res.bytes().await.unwrap(), clean_encoded);
        }
        // Corrupt, or a coding payguard cannot decode: block refuses it, mask passes it with an
        // audit line (a corrupt stream found while masking cuts the answer short).
        let mut corrupt = gzip(leaking.as_bytes());
        corrupt.truncate(corrupt.len() / 2);
        corrupt.extend_from_slice(&[0xff; 64]);
        for (coding, body) in [("gzip", corrupt.clone()), ("zstd", b"(zstd frame)".to_vec())] {
            let res = c.post(proxy.url(&format!("/strict/echo?encoding={coding}"))).body(body).send().await.unwrap();
            assert_eq!(res.status(), 502, "{coding}");
            assert_eq!(json(res).await["error"], "card_data_leak");
        }
        let res = c
            .post(proxy.url("/orders/echo?encoding=zstd"))
            .header("idempotency-key", format!("z-{}", backend.count()))
            .body("(zstd frame)")
            .send()
            .await
            .unwrap();
        assert_eq!((res.status().as_u16(), res.text().await.unwrap()), (200, "(zstd frame)".to_owned()));
        let res = c
            .post(proxy.url("/orders/echo?encoding=gzip"))
            .header("idempotency-key", format!("z-{}", backend.count()))
            .body(corrupt.clone())
            .send()
            .await;
        let got = match res {
            Ok(res) => res.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        assert!(!String::from_utf8_lossy(&got).contains("4111111111111111"), "a card number got through");
    }
}

#[tokio::test]
async fn a_card_number_split_across_chunks_of_a_streamed_answer_is_masked() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("answers.toml", ANSWERS)]).await;
    // A 140 KB answer reaches payguard in several reads; wherever they split the number, it is
    // masked (every split point: src/card/stream.rs).
    let mut body = "x".repeat(70_000);
    body.push_str("4111111111111111");
    body.push_str(&"y".repeat(70_000));
    let c = h1_client(&proxy.cert);
    let res =
        c.post(proxy.url("/orders/echo")).header("idempotency-key", "big").body(body.clone()).send().await.unwrap();
    let text = res.text().await.unwrap();
    assert_eq!(text.len(), body.len());
    assert!(text.contains("411111******1111") && !text.contains("4111111111111111"));
}

/// `[defaults] card_data` covers requests that match no route: they are forwarded too.
#[tokio::test]
async fn the_defaults_scan_requests_that_match_no_route() {
    let backend = Backend::start().await;
    let proxy = start_proxy_with_rules(backend.addr, "", &[("pay.toml", RULES)]).await;
    for client in [h1_client(&proxy.cert), h2_client(&proxy.cert)] {
        let before = backend.count();
        let (status, body) = send(&client, &proxy, "/elsewhere?card=4111-1111-1111-1111", "text/plain", "").await;
        assert_eq!((status, body["error"].as_str(), &body["rule"]), (422, Some("card_data"), &serde_json::Value::Null));
        let (status, _) =
            send(&client, &proxy, "/elsewhere", "application/json", r#"{"pan":"4111111111111111"}"#).await;
        assert_eq!(status, 422);
        assert_eq!(backend.count(), before, "nothing was forwarded");
        let (status, _) = send(&client, &proxy, "/elsewhere", "application/json", r#"{"order":42}"#).await;
        assert_eq!((status, backend.count()), (200, before + 1));
    }
}
