//! The bare forward both floors share: the request as the backend wants it (HTTP/1.1, an
//! origin-form target, a Host header), sent by payguard's upstream client over its pool; 502 when that fails.

use std::sync::Arc;

use http::{header, Request, Response, StatusCode, Uri, Version};
use payguard::body::Body;
use payguard::pool::Pool;
use payguard::upstream::{self, Outgoing};

pub async fn forward(pool: Arc<Pool>, req: Request<Body>) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    if let Some(authority) = parts.uri.authority().cloned() {
        if !parts.headers.contains_key(header::HOST) {
            if let Ok(v) = authority.as_str().parse() {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    if let Some(pq) = parts.uri.path_and_query().cloned() {
        parts.uri = Uri::from(pq);
    }
    parts.version = Version::HTTP_11;
    match upstream::send(&pool, Outgoing::new(Request::from_parts(parts, body))).await {
        Ok(mut res) => {
            res.headers_mut().remove(header::CONNECTION);
            res.headers_mut().remove("keep-alive");
            res
        }
        Err(_) => bad_gateway(),
    }
}

fn bad_gateway() -> Response<Body> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::BAD_GATEWAY;
    res
}
