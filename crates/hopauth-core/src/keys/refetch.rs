//! The unknown-`kid` refetch policy of a [`KeySet`]: a token naming a `kid` the set lacks
//! asks the host's refresh loop for a fetch (single-flight, and at most one per
//! `kid_refetch_interval`: a flood of random kids costs the IdP about one conditional
//! request per interval), then waits up to `kid_refetch_wait` for it, but only when a fetch
//! is running or may start within that wait; otherwise it answers at once and the fetch it
//! asked for runs when the interval allows, so a newly published key is seen within about
//! one interval, flood or not.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::KeySet;
use crate::clock::Instant;

/// A refetch worth waiting for: resolves when the next fetch attempt finishes, or after
/// `kid_refetch_wait`.
#[derive(Debug)]
pub struct RefetchWait {
    done: watch::Receiver<u64>,
    wait: Duration,
}

impl RefetchWait {
    /// The longest this wait lasts (`kid_refetch_wait`).
    pub fn limit(&self) -> Duration {
        self.wait
    }

    /// Whether a fetch attempt finished since the wait began (no blocking).
    pub fn finished(&self) -> bool {
        self.done.has_changed().unwrap_or(true)
    }

    /// Waits (on a tokio runtime with a timer) until a fetch attempt finishes or the limit
    /// passes. True when one finished, so the caller should look again.
    pub async fn wait(mut self) -> bool {
        tokio::time::timeout(self.wait, self.done.changed()).await.is_ok()
    }
}

impl KeySet {
    /// Asks the host's refresh loop for a fetch because a token named an unknown `kid`.
    /// `Some` when one is running or may start within `kid_refetch_wait`: wait on it, then
    /// look again; `None`: answer now (the fetch still runs when the interval allows).
    pub fn request_refetch(&self) -> Option<RefetchWait> {
        if !self.fetched {
            return None;
        }
        let done = self.attempts.subscribe();
        self.refetch.notify_one();
        let wait = self.settings.kid_refetch_wait;
        if !self.fetching.load(Ordering::Acquire) && self.until_fetch_allowed() > wait {
            return None;
        }
        Some(RefetchWait { done, wait })
    }

    /// [`request_refetch`](Self::request_refetch) and the wait, for hosts on tokio. True
    /// when a fetch completed meanwhile.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        match self.request_refetch() {
            Some(wait) => wait.wait().await,
            None => false,
        }
    }

    /// For the host's refresh loop: resolves when an unknown `kid` asked for a fetch (one
    /// permit however many asked).
    pub async fn refetch_requested(&self) {
        self.refetch.notified().await
    }

    /// How long until the interval allows an unknown-`kid` refetch.
    pub fn until_fetch_allowed(&self) -> Duration {
        let last = *self.last_kid_fetch.lock().unwrap_or_else(|p| p.into_inner());
        last.map_or(Duration::ZERO, |t| {
            (t + self.settings.kid_refetch_interval).saturating_duration_since(Instant::now())
        })
    }

    /// For the refresh loop: a fetch asked for by an unknown `kid` starts now.
    pub fn kid_fetch_started(&self) {
        *self.last_kid_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// For the refresh loop: a fetch attempt starts (requests may wait on it).
    pub fn fetch_started(&self) {
        self.fetching.store(true, Ordering::Release);
    }

    /// For the refresh loop: the attempt ended, well or not; wakes the requests waiting.
    pub fn fetch_finished(&self) {
        self.fetching.store(false, Ordering::Release);
        self.attempts.send_modify(|g| *g += 1);
    }
}
