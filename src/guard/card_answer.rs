//! `card_data.response`: a card number in the backend's answer. `mask` rewrites it as it streams
//! (first six and last four digits kept, the length and `content-length` unchanged); `block`
//! reads the answer (up to [`MAX_BLOCK_SCAN`]) and answers 502 `card_data_leak` instead.
//!
//! The innermost layer, so what idempotency keeps for replay is the masked answer: a card
//! number is never stored. A route that scans answers asks the backend for an uncompressed one
//! (`accept-encoding` removed). One that comes compressed anyway (gzip, deflate, br) is decoded
//! for the scan: `mask` sends it on decoded and masked, `block` passes it as it came when it is
//! clean. One that cannot be decoded (another coding, or corrupt) cannot be shown clean: `block`
//! refuses it, `mask` passes it with an audit line (a corrupt stream found while masking ends
//! the answer).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Response};

use super::layer::{Guard, Responded, Verdict};
use super::values::Kind;
use super::Reject;
use crate::body::{read_capped, read_capped_ready, Body, Capped, MaskReport};
use crate::card::{self, Hit, Masker, Scanner};
use crate::decoding::{Coding, Decoder, Pull, Unsupported};
use crate::exchange::Exchange;
use crate::metrics::{Metrics, RouteLabel};
use crate::rescue::{broken_answer, rescue, Refusal};
use crate::rules::OnResponse;

/// The largest answer `block` reads whole before deciding; a larger one is masked as it
/// streams instead (and the audit line says so): it is never passed unscanned.
pub const MAX_BLOCK_SCAN: usize = 1 << 20;

/// The most a compressed answer `block` read whole may decode to; past that it is refused as
/// one that cannot be scanned (a decompression bomb).
pub const MAX_DECODED_SCAN: usize = 64 << 20;

const NAME: &str = "card_data";

#[derive(Clone)]
pub struct CardAnswerGuard {
    metrics: Arc<Metrics>,
}

impl CardAnswerGuard {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        CardAnswerGuard { metrics }
    }
}

/// What the response phase needs.
pub struct Watch {
    action: OnResponse,
    /// `None`: no route matched (the defaults' `card_data` applies).
    route: Option<Arc<str>>,
    request_id: HeaderValue,
    client_ip: IpAddr,
}

impl Guard for CardAnswerGuard {
    const NAME: &'static str = "card_answer";
    type Future = std::future::Pending<(Exchange, Result<(), Reject>)>;

    fn check(&self, mut ex: Exchange) -> Verdict<Self::Future> {
        if ex.card_data().response != OnResponse::Allow {
            ex.req.headers_mut().remove(header::ACCEPT_ENCODING);
        }
        Verdict::Now(ex, Ok(()))
    }

    const RESPONDS: bool = true;
    type Hold = Box<Watch>;

    fn hold(&self, ex: &mut Exchange) -> Option<Box<Watch>> {
        let action = ex.card_data().response;
        if action == OnResponse::Allow {
            return None;
        }
        Some(Box::new(Watch {
            action,
            route: ex.route_name().cloned(),
            request_id: ex.request_id.clone(),
            client_ip: ex.client.ip,
        }))
    }

    type Respond = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

    fn respond(&self, watch: Box<Watch>, res: Response<Body>) -> Responded<Self::Respond> {
        let metrics = self.metrics.clone();
        let coding = match Coding::of(res.headers()) {
            // Nothing to decode: a HEAD, 204 or 304 answer.
            Ok(coding) => coding.filter(|_| !http_body::Body::is_end_stream(res.body())),
            Err(Unsupported(what)) => {
                let why = format!("the answer's content-encoding {what:?} cannot be decoded to be scanned");
                return Responded::Now(match watch.action {
                    OnResponse::Block => leak(&watch, res, &why, &metrics),
                    _ => {
                        audit(
                            watch.route.as_deref(),
                            &watch.request_id,
                            watch.client_ip,
                            "allow",
                            &format!("not scanned: {why}"),
                        );
                        res
                    }
                });
            }
        };
        let (parts, mut body) = res.into_parts();
        if watch.action != OnResponse::Block {
            let short = crate::body::declared_length(&parts.headers).is_some_and(|n| n <= MAX_BLOCK_SCAN as u64);
            if !(short && coding.is_none() && is_json(&parts.headers)) {
                let report = reporter(&watch, &metrics, "masked");
                return Responded::Now(masked(parts, body, coding, report));
            }
            // A JSON answer of known, modest length is masked whole, so that it keeps a true
            // `content-length` even when a number has to be quoted.
        }
        // A small answer usually came with its head: then it is judged without waiting (and
        // without a boxed future).
        let mut buf = BytesMut::new();
        if let Some(read) = read_capped_ready(&mut body, &mut buf, MAX_BLOCK_SCAN as u64) {
            return Responded::Now(judge(parts, read, coding, &watch, &metrics));
        }
        Responded::Later(Box::pin(async move {
            let read = read_capped(body, buf, MAX_BLOCK_SCAN as u64, None).await;
            judge(parts, read, coding, &watch, &metrics)
        }))
    }
}

/// The answer read whole (or up to the block limit) as `watch.action` says: blocked when it
/// holds a card number, or masked whole.
fn judge(
    parts: http::response::Parts,
    read: Capped,
    coding: Option<Coding>,
    watch: &Watch,
    metrics: &Arc<Metrics>,
) -> Response<Body> {
    if watch.action == OnResponse::Block {
        return match read {
            Capped::Whole(bytes) => {
                match first_in(&bytes, coding) {
                    Ok(Some(hit)) => {
                        let why = format!("{} {} in the answer", hit.scheme.name(), hit.masked());
                        leak(watch, Response::from_parts(parts, Body::empty()), &why, metrics)
                    }
                    // Clean: the answer as it came, compressed or not.
                    Ok(None) => Response::from_parts(parts, Body::full(bytes)),
                    Err(why) => leak(watch, Response::from_parts(parts, Body::empty()), &why, metrics),
                }
            }
            // No deadline is set: `Late` does not happen.
            Capped::TooLarge(head, rest) | Capped::Late(head, rest) => {
                let report = reporter(watch, metrics, "answer larger than the block limit, masked instead");
                masked(parts, Body::resumed(head.freeze(), rest), coding, report)
            }
            Capped::Broken(_) => broken_answer(watch.route.as_ref(), &watch.request_id, watch.client_ip, metrics),
        };
    }
    match read {
        // The usual answer holds no card number: sent as it came.
        Capped::Whole(bytes) if card::first(&bytes).is_none() => Response::from_parts(parts, Body::full(bytes)),
        Capped::Whole(bytes) => {
            let mut masker = Masker::json();
            let mut out = BytesMut::with_capacity(bytes.len());
            out.extend(masker.push(&bytes).unwrap_or_default());
            out.extend(masker.finish().unwrap_or_default());
            let (found, first) = masker.found();
            reporter(watch, metrics, "masked")(found, first);
            let mut parts = parts;
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
            Response::from_parts(parts, Body::full(out.freeze()))
        }
        Capped::TooLarge(head, rest) | Capped::Late(head, rest) => {
            masked(parts, Body::resumed(head.freeze(), rest), None, reporter(watch, metrics, "masked"))
        }
        Capped::Broken(_) => broken_answer(watch.route.as_ref(), &watch.request_id, watch.client_ip, metrics),
    }
}

/// The answer with its card numbers masked as it streams. A compressed one is decoded first and
/// goes on uncompressed: its `content-encoding` and `content-length` no longer apply, and its
/// `ETag`, if strong, becomes weak (the bytes changed, what they mean did not).
fn masked(mut parts: http::response::Parts, body: Body, coding: Option<Coding>, report: MaskReport) -> Response<Body> {
    let masker = if is_json(&parts.headers) {
        // A quoted number makes the answer longer than it says.
        parts.headers.remove(header::CONTENT_LENGTH);
        Masker::json()
    } else {
        Masker::new()
    };
    let body = match coding {
        None => body,
        Some(coding) => {
            parts.headers.remove(header::CONTENT_ENCODING);
            parts.headers.remove(header::CONTENT_LENGTH);
            if let Some(etag) = parts.headers.get_mut(header::ETAG) {
                if !etag.as_bytes().starts_with(b"W/") {
                    let mut weak = b"W/".to_vec();
                    weak.extend_from_slice(etag.as_bytes());
                    if let Ok(v) = HeaderValue::from_bytes(&weak) {
                        *etag = v;
                    }
                }
            }
            Body::decoded(body, coding)
        }
    };
    Response::from_parts(parts, Body::masked(body, masker, report))
}

fn is_json(headers: &http::HeaderMap) -> bool {
    Kind::of(headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes)) == Kind::Json
}

/// The first card number in a whole answer, decoded first if it is compressed. An error says
/// why it could not be scanned: it does not decode, or decodes to more than [`MAX_DECODED_SCAN`].
fn first_in(bytes: &Bytes, coding: Option<Coding>) -> Result<Option<Hit>, String> {
    let Some(coding) = coding else { return Ok(card::first(bytes)) };
    let mut decoder = Decoder::new(coding);
    decoder.push(bytes.clone());
    decoder.end();
    let (mut scanner, mut first, mut total) = (Scanner::new(), None, 0usize);
    loop {
        match decoder.pull().map_err(|e| e.to_string())? {
            Pull::Data(data) => {
                total += data.len();
                if total > MAX_DECODED_SCAN {
                    return Err(format!("the {} answer decodes to more than {MAX_DECODED_SCAN} bytes", coding.name()));
                }
                scanner.feed(&data, |h| {
                    first.get_or_insert(h);
                });
                if first.is_some() {
                    return Ok(first);
                }
            }
            Pull::Done => break,
            Pull::NeedInput => return Err(format!("the {} answer is truncated", coding.name())),
        }
    }
    scanner.finish(|h| {
        first.get_or_insert(h);
    });
    Ok(first)
}

/// The 502 that replaces a leaking answer. It keeps the answer's extensions (it is the
/// backend's answer, refused), so idempotency stores it rather than releasing the key: the
/// backend may have acted.
fn leak(watch: &Watch, res: Response<Body>, why: &str, metrics: &Metrics) -> Response<Body> {
    let reject = Reject::CardDataLeak { detail: why.to_owned() };
    let refusal = Refusal {
        guard: NAME,
        ..Refusal::of_proxy(&reject, &watch.request_id, watch.client_ip, watch.route.as_ref(), http::Version::HTTP_11)
    };
    let mut out = rescue(&refusal, metrics).unwrap_or_else(|| reject.to_response(None, "-"));
    if let Some(t) = res.extensions().get::<crate::context::GuardTime>() {
        out.extensions_mut().insert(*t);
    }
    out
}

fn reporter(watch: &Watch, metrics: &Arc<Metrics>, how: &'static str) -> MaskReport {
    let (route, request_id, client_ip, metrics) =
        (watch.route.clone(), watch.request_id.clone(), watch.client_ip, metrics.clone());
    Box::new(move |found: usize, first: Option<Hit>| {
        let Some(first) = first else { return };
        metrics.decision(&RouteLabel(route.clone().unwrap_or_else(|| Arc::from(""))), NAME, "mask");
        let detail = format!(
            "{how}: {found} card number(s) in the answer, the first {} {}",
            first.scheme.name(),
            first.masked()
        );
        audit(route.as_deref(), &request_id, client_ip, "mask", &detail);
    })
}

/// The audit line of an answer that was let through: masked, or not scanned.
fn audit(route: Option<&str>, request_id: &HeaderValue, client_ip: IpAddr, decision: &'static str, detail: &str) {
    crate::telemetry::audit(&crate::telemetry::Decision {
        request_id: request_id.to_str().unwrap_or("-"),
        route,
        client_ip,
        guard: NAME,
        decision,
        reason: "card_data_leak",
        detail,
        key_id: None,
        skew_secs: None,
        passed: None,
        elapsed: None,
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http::{HeaderMap, HeaderName, StatusCode};
    use http_body_util::BodyExt;
    use std::io::Write;

    const PAN: &[u8] = br#"{"pan":"4111111111111111","n":5555555555554444}"#;
    const CLEAN: &[u8] = br#"{"order":"A-1029","amount":1250}"#;

    fn answer(headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Body> {
        let mut res = Response::new(Body::full(body));
        for (name, value) in headers {
            res.headers_mut()
                .insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        res
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// The answer as the client gets it, and the metrics after.
    async fn respond(action: OnResponse, res: Response<Body>) -> (StatusCode, HeaderMap, Bytes, String) {
        let metrics = Arc::new(Metrics::new());
        let guard = CardAnswerGuard::new(metrics.clone());
        let watch = Box::new(Watch {
            action,
            route: Some(Arc::from("pay")),
            request_id: HeaderValue::from_static("req-1"),
            client_ip: "192.0.2.1".parse().unwrap(),
        });
        let res = match guard.respond(watch, res) {
            Responded::Now(res) => res,
            Responded::Later(f) => f.await,
        };
        let (parts, body) = res.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes(), metrics.encode())
    }

    const MASKED: &str = "payguard_decisions_total{route=\"pay\",guard=\"card_data\",decision=\"mask\"} 1";

    #[tokio::test]
    async fn a_json_answer_is_masked_whole_and_keeps_a_true_length() {
        let len = PAN.len().to_string();
        let res = answer(&[("content-type", "application/json"), ("content-length", &len)], PAN);
        let (status, headers, body, metrics) = respond(OnResponse::Mask, res).await;
        assert_eq!(status, 200);
        // The number written as a JSON number is quoted: two bytes longer, and so says the length.
        assert_eq!(&body[..], br#"{"pan":"411111******1111","n":"555555******4444"}"#);
        assert_eq!(headers[header::CONTENT_LENGTH], body.len().to_string().as_str());
        assert!(metrics.contains(MASKED), "{metrics}");
    }

    #[tokio::test]
    async fn a_clean_answer_passes_as_it_came() {
        for action in [OnResponse::Mask, OnResponse::Block] {
            let res = answer(&[("content-type", "application/json"), ("etag", "\"v1\"")], CLEAN);
            let (status, headers, body, metrics) = respond(action, res).await;
            assert_eq!((status, &body[..]), (StatusCode::OK, CLEAN));
            assert_eq!(headers[header::ETAG], "\"v1\"");
            assert!(!metrics.contains("decision=\"mask\""), "{metrics}");
        }
    }

    #[tokio::test]
    async fn block_withholds_an_answer_with_a_card_number_compressed_or_not() {
        for res in [
            answer(&[("content-type", "text/plain")], PAN),
            answer(&[("content-type", "application/json"), ("content-encoding", "gzip")], gzip(PAN)),
            // What cannot be decoded cannot be shown clean.
            answer(&[("content-encoding", "zstd")], &b"(zstd frame)"[..]),
            answer(&[("content-encoding", "gzip")], &b"not gzip"[..]),
        ] {
            let (status, _, body, _) = respond(OnResponse::Block, res).await;
            assert_eq!(status, 502);
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"], "card_data_leak");
        }
        // A clean compressed answer goes on compressed, as it came.
        let zipped = gzip(CLEAN);
        let res = answer(&[("content-encoding", "gzip")], zipped.clone());
        let (status, headers, body, _) = respond(OnResponse::Block, res).await;
        assert_eq!(
            (status, &body[..], headers[header::CONTENT_ENCODING].as_bytes()),
            (StatusCode::OK, &zipped[..], &b"gzip"[..])
        );
    }

    #[tokio::test]
    async fn mask_decodes_a_compressed_answer_and_passes_one_it_cannot_decode() {
        let res = answer(
            &[("content-type", "text/plain"), ("content-encoding", "gzip"), ("etag", "\"v1\"")],
            gzip(b"card 4111 1111 1111 1111 ok"),
        );
        let (status, headers, body, metrics) = respond(OnResponse::Mask, res).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"card 4111 11** **** 1111 ok"[..]));
        assert!(headers.get(header::CONTENT_ENCODING).is_none());
        assert_eq!(headers[header::ETAG], "W/\"v1\"");
        assert!(metrics.contains(MASKED), "{metrics}");
        let res = answer(&[("content-encoding", "zstd")], &b"(zstd frame)"[..]);
        let (status, headers, body, _) = respond(OnResponse::Mask, res).await;
        assert_eq!(
            (status, &body[..], headers[header::CONTENT_ENCODING].as_bytes()),
            (StatusCode::OK, &b"(zstd frame)"[..], &b"zstd"[..])
        );
    }
}
