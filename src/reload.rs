//! Reloads on request (SIGHUP, `systemctl reload`): rules and certificates are loaded again
//! whether or not their files look changed. Each watcher holds its own [`Requests`], so a
//! request made while a watcher is busy is seen when it next waits, not lost.

use std::sync::Arc;

use tokio::sync::watch;

/// Asks every watcher to reload.
#[derive(Clone, Debug)]
pub struct Reloader(Arc<watch::Sender<u64>>);

impl Default for Reloader {
    fn default() -> Self {
        Reloader(Arc::new(watch::channel(0).0))
    }
}

impl Reloader {
    pub fn request(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A watcher's view: the requests made from now on.
    pub fn requests(&self) -> Requests {
        Requests(self.0.subscribe())
    }
}

/// The reload requests one watcher has not handled yet.
#[derive(Debug)]
pub struct Requests(watch::Receiver<u64>);

impl Requests {
    /// Waits for the next request (cancel-safe); never returns once the [`Reloader`] is gone.
    pub async fn next(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_request_made_while_busy_is_seen_later_and_only_once() {
        let reloader = Reloader::default();
        let mut a = reloader.requests();
        let mut b = reloader.requests();
        reloader.request();
        reloader.request();
        // Both watchers see it, though neither was waiting when it came; two requests before a
        // watcher looked are one reload.
        tokio::time::timeout(Duration::from_secs(5), a.next()).await.unwrap_or_else(|_| panic!("a missed it"));
        tokio::time::timeout(Duration::from_secs(5), b.next()).await.unwrap_or_else(|_| panic!("b missed it"));
        assert!(tokio::time::timeout(Duration::from_millis(20), a.next()).await.is_err());
    }
}
