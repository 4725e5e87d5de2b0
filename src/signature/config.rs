//! Reading a `[route.signature]` table: typed getters that record every problem with its
//! dotted key path, unknown-key detection, secrets (`env:`/`file:` only) and public key text
//! (inline or `file:`).

use std::path::Path;
use std::time::Duration;

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
    table: &'t toml::Table,
    base_dir: &'t Path,
    resolver: &'t dyn SecretResolver,
    provider: &'t str,
    seen: Vec<&'static str>,
    problems: Vec<ConfigProblem>,
    check_unknown: bool,
}

impl<'t> Fields<'t> {
    pub(crate) fn new(table: &'t toml::Table, base_dir: &'t Path, resolver: &'t dyn SecretResolver) -> Self {
        let provider = table.get("provider").and_then(|v| v.as_str()).unwrap_or("");
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

    pub(crate) fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem { key: key.into(), message: message.into() });
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
            let mut unknown: Vec<&String> = self.table.keys().filter(|k| !self.seen.contains(&k.as_str())).collect();
            unknown.sort();
            for key in unknown {
                self.problems.push(ConfigProblem {
                    key: toml_key(key),
                    message: format!("unknown key {key:?} for provider {:?}", self.provider),
                });
            }
        }
        self.problems
    }

    /// Whether the table has `key` at all (whatever its type).
    pub(crate) fn has_key(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    fn get(&mut self, key: &'static str) -> Option<&'t toml::Value> {
        if !self.seen.contains(&key) {
            self.seen.push(key);
        }
        self.table.get(key)
    }

    pub(crate) fn opt_str(&mut self, key: &'static str) -> Option<&'t str> {
        match self.get(key)? {
            toml::Value::String(s) => Some(s.as_str()),
            other => {
                let found = other.type_str();
                self.problem(key, format!("expected a string, found {found}"));
                None
            }
        }
    }

    pub(crate) fn req_str(&mut self, key: &'static str) -> Option<&'t str> {
        if self.table.contains_key(key) {
            self.opt_str(key)
        } else {
            self.get(key);
            self.problem(key, format!("missing required key {key:?}"));
            None
        }
    }

    /// An array of strings; `Some(empty)` is possible, callers decide whether that is allowed.
    pub(crate) fn opt_str_list(&mut self, key: &'static str) -> Option<Vec<(String, &'t str)>> {
        let value = self.get(key)?;
        let Some(items) = value.as_array() else {
            let found = value.type_str();
            self.problem(key, format!("expected an array of strings, found {found}"));
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = format!("{key}.{i}");
            match item.as_str() {
                Some(s) => out.push((path, s)),
                None => {
                    let found = item.type_str();
                    self.problem(path, format!("expected a string, found {found}"));
                }
            }
        }
        Some(out)
    }

    /// A table of strings, in key order. Entries are `(dotted path, key, value)`.
    pub(crate) fn opt_str_map(&mut self, key: &'static str) -> Option<Vec<(String, &'t str, &'t str)>> {
        let value = self.get(key)?;
        let Some(map) = value.as_table() else {
            let found = value.type_str();
            self.problem(key, format!("expected a table of strings, found {found}"));
            return None;
        };
        let mut out = Vec::with_capacity(map.len());
        for (k, v) in map {
            let path = format!("{key}.{}", toml_key(k));
            match v.as_str() {
                Some(s) => out.push((path, k.as_str(), s)),
                None => {
                    let found = v.type_str();
                    self.problem(path, format!("expected a string, found {found}"));
                }
            }
        }
        Some(out)
    }

    pub(crate) fn opt_bool(&mut self, key: &'static str) -> Option<bool> {
        match self.get(key)? {
            toml::Value::Boolean(b) => Some(*b),
            other => {
                let found = other.type_str();
                self.problem(key, format!("expected true or false, found {found}"));
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
