//! Reading a `[route.signature]` table ([`SignatureTable`], as the rule file's parser typed it):
//! getters that record which keys the provider takes and every problem with its dotted key path
//! and span, unknown-key detection per provider, secrets (`env:`/`file:` only) and public key
//! text (inline or `file:`).

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use super::table::{SignatureTable, StrItems, Value};
use super::{ConfigProblem, ReplayPolicy, Secret, SecretResolver};

/// Keys every provider table may carry besides its own.
const COMMON_KEYS: &[&str] = &["provider"];

/// Durations as everywhere else in the rule files.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::units::parse_duration(text).map_err(|e| e.to_string())
}

/// A table key as it would appear in a TOML dotted key: bare when possible, else quoted.
pub(crate) fn toml_key(key: &str) -> String {
    let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_string()
    } else {
        let escaped = key.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    }
}

/// Whether a provider signs a timestamp, which decides what `tolerance` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timestamped {
    /// Always signed: `tolerance` defaults to [`DEFAULT_TOLERANCE`].
    Always,
    /// Signed but freshness is opt-in: no check unless `tolerance` is set (Alipay `notify_time`).
    OptIn,
    /// Nothing signed: `tolerance` is a configuration error.
    Never,
}

pub(crate) const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
pub(crate) const DEFAULT_UNSIGNED_REPLAY_TTL: Duration = Duration::from_secs(48 * 3600);

/// The common timing keys after validation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub tolerance: Option<Duration>,
    pub replay: ReplayPolicy,
}

pub(crate) struct Fields<'t> {
    table: &'t SignatureTable,
    base_dir: &'t Path,
    resolver: &'t dyn SecretResolver,
    provider: &'t str,
    seen: Vec<&'static str>,
    problems: Vec<ConfigProblem>,
    check_unknown: bool,
}

impl<'t> Fields<'t> {
    pub(crate) fn new(table: &'t SignatureTable, base_dir: &'t Path, resolver: &'t dyn SecretResolver) -> Self {
        let provider = table.provider.as_ref().and_then(|p| p.get_ref().as_str()).unwrap_or_default();
        Self {
            table,
            base_dir,
            resolver,
            provider,
            seen: COMMON_KEYS.to_vec(),
            problems: Vec::new(),
            check_unknown: true,
        }
    }

    /// A problem at a key path (`secrets.1`), located at its top-level key's value.
    pub(crate) fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let top = key.split('.').next().unwrap_or_default();
        let span = self.table.value(top).map(|v| v.span());
        self.problems.push(ConfigProblem { key, message: message.into(), span });
    }

    pub(crate) fn skip_unknown_key_check(&mut self) {
        self.check_unknown = false;
    }

    /// Number of problems so far; lets a builder tell whether its own part added any.
    pub(crate) fn problem_count(&self) -> usize {
        self.problems.len()
    }

    pub(crate) fn finish(mut self) -> Vec<ConfigProblem> {
        if self.check_unknown {
            let mut unknown: Vec<(String, Range<usize>)> = self
                .table
                .present()
                .into_iter()
                .filter(|(k, _)| !self.seen.contains(k))
                .map(|(k, span)| (k.to_string(), span))
                .chain(self.table.unknown.iter().cloned())
                .collect();
            unknown.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, span) in unknown {
                self.problems.push(ConfigProblem {
                    key: toml_key(&key),
                    message: format!("unknown key {key:?} for provider {:?}", self.provider),
                    span: Some(span),
                });
            }
        }
        self.problems
    }

    /// Whether the table has `key` at all.
    pub(crate) fn has_key(&self, key: &str) -> bool {
        self.table.value(key).is_some()
    }

    fn get(&mut self, key: &'static str) -> Option<Value<'t>> {
        if !self.seen.contains(&key) {
            self.seen.push(key);
        }
        self.table.value(key)
    }

    fn wrong_type(&mut self, key: &str, expected: &str, found: Value<'_>) {
        self.problem(key, format!("expected {expected}, found {}", found.type_str()));
    }

    pub(crate) fn opt_str(&mut self, key: &'static str) -> Option<&'t str> {
        match self.get(key)? {
            Value::Str(s) => Some(s.get_ref().as_str()),
            Value::Any(v) if v.get_ref().is_str() => v.get_ref().as_str(),
            other => {
                self.wrong_type(key, "a string", other);
                None
            }
        }
    }

    pub(crate) fn req_str(&mut self, key: &'static str) -> Option<&'t str> {
        if self.has_key(key) {
            self.opt_str(key)
        } else {
            self.get(key);
            self.problem(key, format!("missing required key {key:?}"));
            None
        }
    }

    /// An array of strings; `Some(empty)` is possible, callers decide whether that is allowed.
    pub(crate) fn opt_str_list(&mut self, key: &'static str) -> Option<Vec<(String, &'t str)>> {
        let items = match self.get(key)? {
            Value::Items(v) => match v.get_ref() {
                StrItems::List(items) => items,
                StrItems::Table(_) => {
                    self.wrong_type(key, "an array of strings", Value::Items(v));
                    return None;
                }
            },
            other => {
                self.wrong_type(key, "an array of strings", other);
                return None;
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push((format!("{key}.{i}"), item.get_ref().as_str()));
        }
        Some(out)
    }

    /// A table of strings, in key order. Entries are `(dotted path, key, value)`.
    pub(crate) fn opt_str_map(&mut self, key: &'static str) -> Option<Vec<(String, &'t str, &'t str)>> {
        let entries = match self.get(key)? {
            Value::Items(v) => match v.get_ref() {
                StrItems::Table(entries) => entries,
                StrItems::List(_) => {
                    self.wrong_type(key, "a table of strings", Value::Items(v));
                    return None;
                }
            },
            other => {
                self.wrong_type(key, "a table of strings", other);
                return None;
            }
        };
        let mut sorted: Vec<_> = entries.iter().collect();
        sorted.sort_by(|a, b| a.0.get_ref().cmp(b.0.get_ref()));
        let mut out = Vec::with_capacity(sorted.len());
        for (k, v) in sorted {
            out.push((format!("{key}.{}", toml_key(k.get_ref())), k.get_ref().as_str(), v.get_ref().as_str()));
        }
        Some(out)
    }

    pub(crate) fn opt_bool(&mut self, key: &'static str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b.get_ref()),
            other => {
                self.wrong_type(key, "true or false", other);
                None
            }
        }
    }

    pub(crate) fn opt_duration(&mut self, key: &'static str) -> Option<Duration> {
        let text = self.opt_str(key)?;
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(key, e);
                None
            }
        }
    }

    /// `tolerance` and `replay_ttl`, validated for a provider of the given kind.
    pub(crate) fn timing(&mut self, kind: Timestamped) -> Timing {
        let given = self.opt_duration("tolerance");
        let tolerance = match (kind, given) {
            (Timestamped::Never, Some(_)) => {
                self.problem(
                    "tolerance",
                    format!("provider {:?} signs no timestamp; remove \"tolerance\"", self.provider),
                );
                None
            }
            (Timestamped::Never, None) | (Timestamped::OptIn, None) => None,
            (Timestamped::Always, None) => Some(DEFAULT_TOLERANCE),
            (_, Some(d)) if d.is_zero() => {
                self.problem("tolerance", "tolerance must be greater than zero");
                None
            }
            (_, Some(d)) => Some(d),
        };
        let default_ttl = tolerance.and_then(|t| t.checked_mul(2)).unwrap_or(DEFAULT_UNSIGNED_REPLAY_TTL);
        let replay_ttl = match self.opt_duration("replay_ttl") {
            None => default_ttl,
            Some(ttl) => {
                if let Some(t) = tolerance {
                    // A timestamp is accepted for a window of 2 x tolerance; a shorter
                    // reservation would let a capture be replayed inside that window.
                    if ttl < t.saturating_mul(2) {
                        self.problem(
                            "replay_ttl",
                            "replay_ttl must be at least twice the tolerance, or a replay \
                             inside the accepted timestamp window would pass",
                        );
                    }
                }
                ttl
            }
        };
        let release_on_4xx = self.opt_bool("replay_release_on_4xx").unwrap_or(false);
        Timing { tolerance, replay: ReplayPolicy { ttl: replay_ttl, release_on_4xx } }
    }

    /// A secret reference (`env:NAME` / `file:path`), resolved now. Inline values are errors.
    pub(crate) fn secret(&mut self, path: &str, spec: &str) -> Option<Secret> {
        if !(spec.starts_with("env:") || spec.starts_with("file:")) {
            self.problem(path, "secrets are never written inline: use \"env:NAME\" or \"file:path\"");
            return None;
        }
        match self.resolver.resolve(spec, self.base_dir) {
            Ok(bytes) if bytes.is_empty() => {
                self.problem(path, format!("secret {spec} is empty"));
                None
            }
            Ok(bytes) => Some(Secret::new(bytes)),
            Err(e) => {
                self.problem(path, format!("cannot load secret {spec}: {e}"));
                None
            }
        }
    }

    /// Public key / certificate text: inline, or `file:path` relative to the rule file.
    pub(crate) fn public_text(&mut self, path: &str, spec: &'t str) -> Option<Vec<u8>> {
        if spec.starts_with("env:") {
            self.problem(path, "public keys are given inline or as \"file:path\", not env:");
            return None;
        }
        let Some(file) = spec.strip_prefix("file:") else {
            return Some(spec.as_bytes().to_vec());
        };
        let full = self.base_dir.join(file);
        match crate::files::read(&full) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.problem(path, format!("cannot read {}: {e}", full.display()));
                None
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_any_unit() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("300250ms"), Ok(Duration::from_millis(300_250)));
        for bad in ["", "5 parsecs", "m", "-5s", "1.5s", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
