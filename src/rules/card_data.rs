//! `card_data` (in `[defaults]` and `[route.card_data]`): what to do with a card number (PAN)
//! in a request, and in the backend's answer.

use serde::Deserialize;
use toml::Spanned;

use super::diag::Ctx;

/// A card number in a request (query or body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRequest {
    /// 422 `card_data`.
    Reject,
    /// Recorded (`would_block`) and forwarded.
    Monitor,
    Allow,
}

/// A card number in the backend's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnResponse {
    /// Every digit but the first six and the last four becomes `*`, the length kept.
    Mask,
    /// 502 `card_data_leak`.
    Block,
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardData {
    pub request: OnRequest,
    pub response: OnResponse,
}

impl CardData {
    /// Without any `card_data` in the rules: nothing is scanned (the shipped rules turn it on).
    pub const OFF: CardData = CardData { request: OnRequest::Allow, response: OnResponse::Allow };

    pub fn scans_requests(&self) -> bool {
        self.request != OnRequest::Allow
    }
}

/// `card_data = { request, response }`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCardData {
    /// `"reject"`, `"monitor"` or `"allow"`.
    pub request: Option<Spanned<String>>,
    /// `"mask"`, `"block"` or `"allow"`.
    pub response: Option<Spanned<String>>,
}

/// The setting `raw` makes of `base` (the defaults' for a route): a key left out keeps the
/// base's value, so a route that only relaxes requests still masks its answers.
pub(super) fn compile(cx: &mut Ctx<'_>, base: CardData, raw: &RawCardData) -> CardData {
    let mut out = base;
    if let Some(r) = &raw.request {
        match r.get_ref().as_str() {
            "reject" => out.request = OnRequest::Reject,
            "monitor" => out.request = OnRequest::Monitor,
            "allow" => out.request = OnRequest::Allow,
            other => cx.err(
                &r.span(),
                format!("unknown card_data.request \"{other}\" (expected \"reject\", \"monitor\" or \"allow\")"),
            ),
        }
    }
    if let Some(r) = &raw.response {
        match r.get_ref().as_str() {
            "mask" => out.response = OnResponse::Mask,
            "block" => out.response = OnResponse::Block,
            "allow" => out.response = OnResponse::Allow,
            other => cx.err(
                &r.span(),
                format!("unknown card_data.response \"{other}\" (expected \"mask\", \"block\" or \"allow\")"),
            ),
        }
    }
    out
}
