//! Hot reload: the rule directory is checked every `poll` (`[rules] watch`), and loaded again
//! on request (SIGHUP); when any file in it changed, or on request, the whole set is loaded. A valid set replaces the active one atomically (in-flight requests
//! keep the `Arc` they hold); an invalid one is reported as `file:line:col` lines, counted, and
//! the last good set keeps serving.
//!
//! A directory that is gone, or holds no rule file at all, is refused the same way: that is
//! what a `rm -rf` or a config-map swap looks like half-way through, and loading it would
//! replace every rule with an empty set that enforces nothing. (An operator who really wants no
//! rules leaves an empty `.toml` file.)
//!
//! Polling file contents instead of inotify: rule directories are often mounted config maps
//! whose files change by swapping a symlinked directory, which inotify on the old files misses.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::active::{ActiveRules, SharedRules};
use crate::metrics::Metrics;

/// Upper bounds on what one fingerprint pass reads.
const MAX_FILES: usize = 2_000;
const MAX_DEPTH: usize = 4;

/// A hash of every file name and content under `dir` (bounded); `None` when the directory
/// cannot be read.
pub fn fingerprint(dir: &Path) -> Option<u64> {
    let mut files = Vec::new();
    collect(dir, 0, &mut files);
    if std::fs::read_dir(dir).is_err() {
        return None;
    }
    files.sort();
    let mut h = DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        std::fs::read(&f).ok().hash(&mut h);
    }
    Some(h.finish())
}

fn collect(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if out.len() >= MAX_FILES {
            return;
        }
        let path = e.path();
        // Follows symlinks, as mounted config maps need.
        if path.is_dir() {
            if depth < MAX_DEPTH {
                collect(&path, depth + 1, out);
            }
        } else {
            out.push(path);
        }
    }
}

/// Loads `dir` and, when valid, makes it the active set. Returns the version applied, if any.
pub fn reload(dir: &Path, env: &super::Env, shared: &SharedRules, metrics: &Metrics) -> Option<u64> {
    let loaded = if has_rule_files(dir) {
        super::load_dir(dir, env)
    } else {
        Err(vec![crate::diag::Diagnostic::at_start(
            dir,
            "rules directory is missing or holds no rule file (being deleted or replaced?)",
        )])
    };
    match loaded {
        Ok(rules) => {
            let previous = shared.load_full();
            let version = previous.version + 1;
            let routes = rules.routes().len();
            shared.store(Arc::new(ActiveRules::new(rules, version)));
            metrics.rule_reload(true);
            tracing::info!(target: "payguard::rules", version, routes, dir = %dir.display(), "rules loaded");
            Some(version)
        }
        Err(problems) => {
            metrics.rule_reload(false);
            for p in &problems {
                tracing::error!(target: "payguard::rules", location = %p, "invalid rule file; the previous rules keep serving");
            }
            None
        }
    }
}

/// Whether `dir` can be read and holds at least one `*.toml` file (an empty directory that is
/// readable but has no rule file is what a deletion in progress looks like).
fn has_rule_files(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        // Let load_dir report the precise read error.
        return dir.exists();
    };
    entries.flatten().any(|e| e.path().extension().is_some_and(|x| x == "toml"))
}

/// Polls `dir` every `poll` (when set) and [`reload`]s it on a change, and whenever a reload is
/// requested; tells `applied` each new version.
pub async fn watch(
    dir: PathBuf,
    env: super::Env,
    shared: SharedRules,
    metrics: Arc<Metrics>,
    poll: Option<Duration>,
    mut requests: crate::reload::Requests,
    applied: impl Fn(u64) + Send + 'static,
) {
    let mut last = fingerprint(&dir);
    let mut tick = tokio::time::interval(poll.unwrap_or(Duration::from_secs(3600)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let asked = tokio::select! {
            _ = tick.tick(), if poll.is_some() => false,
            () = requests.next() => true,
        };
        let now = fingerprint(&dir);
        if now == last && !asked {
            continue;
        }
        last = now;
        if asked {
            tracing::info!(target: "payguard::rules", dir = %dir.display(), "reload requested");
        }
        if let Some(version) = reload(&dir, &env, &shared, &metrics) {
            applied(version);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::super::Env;
    use super::*;

    #[test]
    fn a_reload_is_checked_against_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00.toml"), "").unwrap();
        let shared: SharedRules = Arc::new(arc_swap::ArcSwap::from_pointee(ActiveRules::new(
            super::super::load_dir(dir.path(), &Env::default()).unwrap(),
            1,
        )));
        let metrics = Metrics::new();
        let rule = "[[route]]\nname = \"pay\"\nmatch = { path = \"/pay\" }\n[route.idempotency]\nlease = \"60s\"\n";
        std::fs::write(dir.path().join("00.toml"), rule).unwrap();
        let slow = Env { upstream_timeout: Duration::from_secs(90) };
        assert_eq!(reload(dir.path(), &slow, &shared, &metrics), None, "a lease shorter than the upstream timeout");
        assert_eq!(shared.load().version, 1, "the old rules keep serving");
        assert_eq!(reload(dir.path(), &Env::default(), &shared, &metrics), Some(2));
    }

    #[test]
    fn a_missing_or_empty_directory_never_replaces_the_rules() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir(&rules).unwrap();
        std::fs::write(rules.join("00.toml"), "[defaults]\naction = \"deny\"\n").unwrap();
        let shared: SharedRules = Arc::new(arc_swap::ArcSwap::from_pointee(ActiveRules::new(
            super::super::load_dir(&rules, &Env::default()).unwrap(),
            1,
        )));
        let metrics = Metrics::new();

        std::fs::remove_dir_all(&rules).unwrap();
        assert!(reload(&rules, &Env::default(), &shared, &metrics).is_none());
        std::fs::create_dir(&rules).unwrap();
        assert!(reload(&rules, &Env::default(), &shared, &metrics).is_none(), "an empty directory must not load");
        std::fs::create_dir(rules.join("schemas")).unwrap();
        assert!(reload(&rules, &Env::default(), &shared, &metrics).is_none(), "sub-directories are not rule files");
        assert_eq!(shared.load().version, 1);
        assert!(metrics.encode().contains("payguard_rule_reloads_total{result=\"error\"} 3"));

        std::fs::write(rules.join("00.toml"), "").unwrap();
        assert_eq!(
            reload(&rules, &Env::default(), &shared, &metrics),
            Some(2),
            "an empty rule file is a deliberate empty set"
        );
        assert_eq!(shared.load().version, 2);
    }
}
