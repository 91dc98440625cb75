//! The verbs of each metric handle: what the components call.

use std::time::Duration;

use hopauth_core::decision::DenyReason;
use hopauth_core::keys::KeyRejection;
use hopauth_core::revocation::layout::BadKey;

use super::{AdminMetrics, AdminRefusal, CheckMetrics, JwksMetrics, RevocationKind, RevocationMetrics};

impl CheckMetrics {
    pub fn allowed(&self, anonymous: bool, took: Duration) {
        if anonymous { &self.allow_anonymous } else { &self.allow_verified }.inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn denied(&self, reason: &DenyReason, took: Duration) {
        self.deny[reason.index()].inc();
        if *reason == DenyReason::Revoked {
            self.revocations_enforced.inc();
        }
        self.duration.observe(took.as_secs_f64());
    }

    pub fn verify_cache(&self, hit: bool) {
        if hit { &self.cache_hits } else { &self.cache_misses }.inc();
    }

    pub fn fail_open(&self) {
        self.fail_open.inc();
    }

    /// `hopauth_revocation_fail_open_total` so far (tests).
    pub fn fail_opens(&self) -> u64 {
        self.fail_open.get()
    }

    /// `hopauth_verify_cache_hits_total` so far (tests, benches).
    pub fn verify_cache_hits(&self) -> u64 {
        self.cache_hits.get()
    }

    /// `hopauth_verify_cache_misses_total` so far (tests).
    pub fn verify_cache_misses(&self) -> u64 {
        self.cache_misses.get()
    }

    /// The verified-token cache's size: (entries, bytes).
    pub fn cache_usage(&self, (entries, bytes): (u64, u64)) {
        self.cache_entries.set(entries as i64);
        self.cache_bytes.set(bytes as i64);
    }
}

impl JwksMetrics {
    /// A fetch attempt: `Some(keys held)` after a success, `None` after a failure.
    pub fn refreshed(&self, keys: Option<usize>) {
        match keys {
            Some(n) => {
                self.refresh_ok.inc();
                self.keys.set(n as i64);
                self.last_success.set(hopauth_core::clock::unix_now());
            }
            None => self.refresh_error.inc(),
        }
    }

    pub fn key_rejected(&self, reason: KeyRejection) {
        if let Some(i) = KeyRejection::ALL.iter().position(|r| *r == reason) {
            self.rejected[i].inc();
        }
    }

    /// Time since the keys were last fetched (`None`: never, or no fetched keys).
    pub fn key_age(&self, age: Option<Duration>) {
        self.key_age.set(age.map_or(-1.0, |a| a.as_secs_f64()));
    }
}

impl RevocationMetrics {
    pub fn store_up(&self, up: bool) {
        self.store_up.set(i64::from(up));
    }

    /// Entries in the local view: (jti, subject).
    pub fn entries(&self, (jtis, subjects): (usize, usize)) {
        self.entries_jti.set(jtis as i64);
        self.entries_subject.set(subjects as i64);
    }

    pub fn synced(&self, ok: bool) {
        if ok { &self.syncs_ok } else { &self.syncs_error }.inc();
    }

    pub fn push_message(&self) {
        self.push_messages.inc();
    }

    pub fn sync_age(&self, age: Duration) {
        self.sync_age.set(age.as_secs_f64());
    }

    /// One key under the revocation prefix that could not be read as the layout says.
    pub fn bad_key(&self, reason: BadKey) {
        self.bad_keys[reason.index()].inc();
    }

    pub fn connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    /// 1: a master evicts keys; 0: none does; -1: unknown (`CONFIG` refused).
    pub fn evicting(&self, value: i64) {
        self.evicting.set(value);
    }
}

impl AdminMetrics {
    pub fn refused(&self, why: AdminRefusal) {
        match why {
            AdminRefusal::WrongToken => self.wrong_token.inc(),
            AdminRefusal::Throttled => self.throttled.inc(),
        }
    }

    pub fn revocation(&self, kind: RevocationKind, ok: bool) {
        self.revocations[kind as usize][usize::from(!ok)].inc();
    }

    /// An undo: `Some(found)` when the store answered, `None` when it failed.
    pub fn unrevocation(&self, kind: RevocationKind, found: Option<bool>) {
        let result = match found {
            Some(true) => 0,
            Some(false) => 1,
            None => 2,
        };
        self.unrevocations[kind as usize][result].inc();
    }
}
