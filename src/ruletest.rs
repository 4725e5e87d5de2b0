//! `payguard test`: rule tests in TOML files, run against the configured rules offline
//! ([`crate::offline`]). Each case runs its requests in order in one fresh state, so "the
//! second identical callback is a replay" and "the sixth declined payment is banned" can be
//! written down next to the rules they test. The format is RULES.md's ("Command line for rule
//! authors"); docs/rules.md shows it with examples.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use toml::Spanned;

use crate::offline::{Answer, Decision, Offline, Probe};
use crate::signature::sign::{self, SigningKey, Unsigned};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    case: Vec<Spanned<Case>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    request: Vec<Spanned<Request>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Request {
    method: Option<String>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    body_file: Option<String>,
    from: Option<String>,
    sign: Option<SignWith>,
    /// Repeat request N (1-based) of this case exactly: same bytes, same signature.
    same_as: Option<usize>,
    backend: Option<Backend>,
    #[serde(default)]
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignWith {
    secret: Option<String>,
    private_key: Option<String>,
    key_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Backend {
    status: Option<u16>,
    body: Option<String>,
    content_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: Option<u16>,
    /// payguard's error code; `""`: none (the backend's answer).
    error: Option<String>,
    route: Option<String>,
    forwarded: Option<bool>,
    /// Headers the backend must have received, with these values.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    /// One line per failure: `file:line: case "name", request N: expected …, got …`.
    pub lines: Vec<String>,
}

impl Report {
    /// The closing line: `N passed, N failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed)
    }
}

/// The test files under `paths` (a directory: its `*.toml` files, sorted, sub-directories
/// included), or an error line for a path that does not exist.
pub fn collect(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let (mut files, mut errors) = (Vec::new(), Vec::new());
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, 0, &mut found);
            found.sort();
            files.extend(found);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            errors.push(format!("{}: no such file or directory", p.display()));
        }
    }
    (files, errors)
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() && depth < 4 {
            walk(&path, depth + 1, out);
        } else if path.extension().is_some_and(|x| x == "toml") {
            out.push(path);
        }
    }
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// Runs every case of every file; a file that does not parse counts as one failed case.
pub async fn run(offline: &Offline, files: &[PathBuf]) -> Report {
    let mut report = Report::default();
    for file in files {
        let shown = file.display().to_string();
        let text = match crate::files::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                report.failed += 1;
                report.lines.push(format!("{shown}: cannot read: {e}"));
                continue;
            }
        };
        let parsed: TestFile = match toml::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                report.failed += 1;
                let line = e.span().map_or(1, |s| line_of(&text, s.start));
                report.lines.push(format!("{shown}:{line}: {}", e.message().trim_end()));
                continue;
            }
        };
        let dir = file.parent().unwrap_or(Path::new("."));
        for case in &parsed.case {
            let failures = run_case(offline, case.get_ref(), dir).await;
            if failures.is_empty() {
                report.passed += 1;
                continue;
            }
            report.failed += 1;
            let name = &case.get_ref().name;
            for (index, message) in failures {
                let line = match index {
                    Some(i) => line_of(&text, case.get_ref().request[i].span().start),
                    None => line_of(&text, case.span().start),
                };
                let at = index.map_or(String::new(), |i| format!(", request {}", i + 1));
                report.lines.push(format!("{shown}:{line}: case {name:?}{at}: {message}"));
            }
        }
    }
    report
}

/// The failures of one case: (request index, message).
async fn run_case(offline: &Offline, case: &Case, dir: &Path) -> Vec<(Option<usize>, String)> {
    if case.request.is_empty() {
        return vec![(None, "a case needs at least one [[case.request]]".into())];
    }
    let mut session = offline.session();
    let mut sent: Vec<Probe> = Vec::new();
    let mut failures = Vec::new();
    for (i, spanned) in case.request.iter().enumerate() {
        let req = spanned.get_ref();
        let probe = match probe_for(offline, req, &sent, dir) {
            Ok(p) => p,
            Err(e) => {
                failures.push((Some(i), e));
                // Later requests may depend on this one: stop the case here.
                break;
            }
        };
        match session.decide(&probe).await {
            Ok(decision) => failures.extend(compare(&req.expect, &decision).into_iter().map(|m| (Some(i), m))),
            Err(e) => failures.push((Some(i), e.to_string())),
        }
        sent.push(probe);
    }
    failures
}

fn probe_for(offline: &Offline, req: &Request, sent: &[Probe], dir: &Path) -> Result<Probe, String> {
    let backend = backend(req.backend.as_ref())?;
    if let Some(n) = req.same_as {
        let own = req.method.is_some()
            || req.url.is_some()
            || !req.headers.is_empty()
            || req.body.is_some()
            || req.body_file.is_some()
            || req.from.is_some()
            || req.sign.is_some();
        if own {
            return Err(format!("same_as = {n} repeats request {n} exactly; give only expect and backend with it"));
        }
        let earlier =
            n.checked_sub(1).and_then(|i| sent.get(i)).ok_or(format!("same_as = {n}: no such earlier request"))?;
        return Ok(Probe { backend, ..earlier.clone() });
    }
    let method = req.method.as_deref().unwrap_or("GET");
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| format!("invalid method {method:?}"))?;
    let url = req.url.clone().ok_or("a request needs url (or same_as)")?;
    let mut headers = Vec::new();
    for (name, value) in &req.headers {
        let n = HeaderName::try_from(name.as_str()).map_err(|_| format!("invalid header name {name:?}"))?;
        let v = HeaderValue::try_from(value.as_str()).map_err(|_| format!("invalid value of header {name}"))?;
        headers.push((n, v));
    }
    let body: Bytes = match (&req.body, &req.body_file) {
        (Some(_), Some(_)) => return Err("give body or body_file, not both".into()),
        (Some(b), None) => Bytes::from(b.clone()),
        (None, Some(f)) => {
            let path = dir.join(f);
            std::fs::read(&path).map_err(|e| format!("body_file {}: {e}", path.display()))?.into()
        }
        (None, None) => Bytes::new(),
    };
    let from: IpAddr = match &req.from {
        Some(ip) => ip.parse().map_err(|_| format!("from = {ip:?} is not an IP address"))?,
        None => IpAddr::from([127, 0, 0, 1]),
    };
    let mut probe = Probe { method, url, headers, body, from, backend };
    if let Some(with) = &req.sign {
        sign_probe(offline, &mut probe, with, dir)?;
    }
    Ok(probe)
}

fn backend(b: Option<&Backend>) -> Result<Answer, String> {
    let mut answer = Answer::default();
    let Some(b) = b else { return Ok(answer) };
    if let Some(s) = b.status {
        answer.status = StatusCode::from_u16(s).map_err(|_| format!("backend.status {s} is not an HTTP status"))?;
    }
    if let Some(body) = &b.body {
        answer.body = Bytes::from(body.clone());
    }
    if let Some(ct) = &b.content_type {
        answer.content_type = HeaderValue::try_from(ct.as_str()).map_err(|_| "invalid backend.content_type")?;
    }
    Ok(answer)
}

/// Signs `probe` with the provider of the route it matches, as of now.
fn sign_probe(offline: &Offline, probe: &mut Probe, with: &SignWith, dir: &Path) -> Result<(), String> {
    let route = offline.route_for(probe).ok_or("sign: the request matches no route")?;
    let (Some(raw), Some(verifier)) = (&route.signature, &route.verifier) else {
        return Err(format!("sign: route {:?} has no [route.signature]", &*route.name));
    };
    let resolve = |spec: &str| {
        if spec.starts_with("env:") || spec.starts_with("file:") {
            crate::files::resolve_secret(spec, dir)
        } else {
            std::fs::read(dir.join(spec)).map_err(|e| format!("{spec}: {e}"))
        }
    };
    let key = match (&with.secret, &with.private_key) {
        (Some(spec), None) if spec.starts_with("env:") || spec.starts_with("file:") => {
            SigningKey::Secret(resolve(spec).map_err(|e| format!("sign.secret: {e}"))?)
        }
        (Some(_), None) => return Err("sign.secret must be \"env:NAME\" or \"file:path\"".into()),
        (None, Some(spec)) => {
            let pem = resolve(spec).map_err(|e| format!("sign.private_key: {e}"))?;
            SigningKey::rsa_pem(&pem).map_err(|e| format!("sign.private_key: {e}"))?
        }
        _ => return Err("sign needs one of secret and private_key".into()),
    };
    let target = http::Uri::try_from(probe.url.as_str()).map_err(|e| format!("url: {e}"))?;
    let unsigned =
        Unsigned { method: probe.method.as_str(), path: target.path(), query: target.query(), body: &probe.body };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let signed = sign::sign(verifier.provider(), Some(&raw.table), &key, with.key_id.as_deref(), &unsigned, now)
        .map_err(|e| format!("sign: {e}"))?;
    for (name, value) in signed.headers {
        let n = HeaderName::try_from(name).map_err(|e| e.to_string())?;
        let v = HeaderValue::try_from(value).map_err(|e| e.to_string())?;
        probe.headers.retain(|(h, _)| *h != n);
        probe.headers.push((n, v));
    }
    if let Some(body) = signed.body {
        probe.body = body.into();
    }
    Ok(())
}

/// Every way `decision` differs from `expect`.
fn compare(expect: &Expect, d: &Decision) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(s) = expect.status {
        if s != d.status {
            out.push(format!("expected status {s}, got {}{}", d.status, why(d)));
        }
    }
    if let Some(e) = &expect.error {
        let got = d.error.as_deref().unwrap_or("");
        if e != got {
            let got = if got.is_empty() { "none" } else { got };
            out.push(format!("expected error {e:?}, got {got}"));
        }
    }
    if let Some(r) = &expect.route {
        if Some(r.as_str()) != d.route.as_deref() {
            out.push(format!(
                "expected route {r:?}, got {}",
                d.route.as_deref().map_or("none".into(), |n| format!("{n:?}"))
            ));
        }
    }
    if let Some(f) = expect.forwarded {
        if f != d.forwarded {
            out.push(format!("expected forwarded = {f}, got {}{}", d.forwarded, why(d)));
        }
    }
    for (name, want) in &expect.headers {
        let got = d.backend_request.as_ref().and_then(|s| s.headers.get(&name.to_ascii_lowercase()));
        match got {
            Some(v) if v == want => {}
            Some(v) => out.push(format!("expected header {name}: {want:?} at the backend, got {v:?}")),
            None if d.forwarded => out.push(format!("expected header {name}: {want:?} at the backend, got none")),
            None => out.push(format!("expected header {name} at the backend, but the request was not forwarded")),
        }
    }
    out
}

/// ` (reason)` of the guard that refused, if one did.
fn why(d: &Decision) -> String {
    d.guards
        .iter()
        .find(|g| g.decision == "block" || g.decision == "replay")
        .map_or(String::new(), |g| format!(" ({})", g.reason))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn lines_are_counted_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = toml::from_str::<TestFile>("[[case]]\nname = \"x\"\n[[case.request]]\nurl = \"/\"\nexpct = {}\n")
            .err()
            .unwrap();
        assert!(e.message().contains("expct"), "{e}");
    }
}
