//! Hot reload: the rule directory is checked every `every`; when any file in it changed, the
//! whole set is loaded again. A valid set replaces the active one atomically (in-flight requests
//! keep the `Arc` they hold); an invalid one is reported as `file:line:col` lines, counted, and
//! the last good set keeps serving.
//!
//! Polling file contents instead of inotify: rule directories are often mounted config maps
//! whose files change by swapping a symlinked directory, which inotify on the old files misses.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::active::{ActiveRules, SharedRules};
use crate::admin::Health;
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

/// Loads `dir` and, when valid, makes it the active set. Returns whether it was applied.
pub fn reload(dir: &Path, shared: &SharedRules, health: &Health, metrics: &Metrics) -> bool {
    match super::load_dir(dir) {
        Ok(rules) => {
            let previous = shared.load_full();
            let version = previous.version + 1;
            let routes = rules.routes().len();
            shared.store(Arc::new(ActiveRules::new(rules, version, Some(&previous))));
            health.rules_version.store(version, Ordering::Relaxed);
            health.rules_loaded.store(true, Ordering::Relaxed);
            metrics.rule_reload(true);
            tracing::info!(target: "payguard::rules", version, routes, dir = %dir.display(), "rules loaded");
            true
        }
        Err(problems) => {
            metrics.rule_reload(false);
            for p in &problems {
                tracing::error!(target: "payguard::rules", location = %p, "invalid rule file; the previous rules keep serving");
            }
            false
        }
    }
}

pub async fn watch(dir: PathBuf, shared: SharedRules, health: Arc<Health>, metrics: Arc<Metrics>, every: Duration) {
    let mut last = fingerprint(&dir);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = fingerprint(&dir);
        if now == last {
            continue;
        }
        last = now;
        reload(&dir, &shared, &health, &metrics);
    }
}

/// Evicts idle rate-limit buckets of the active set, periodically.
pub async fn evict_idle(shared: SharedRules, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let active = shared.load_full();
        // A pass over a million keys takes tens of milliseconds: not on a runtime thread.
        let _ = tokio::task::spawn_blocking(move || {
            for l in active.limiters.values() {
                l.evict_idle();
            }
        })
        .await;
    }
}
