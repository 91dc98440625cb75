//! The in-process view of revocations that the request path reads: jti → exp, and
//! (iss, sub) → "issued at or before". Entries stop counting once their expiry passes and
//! are swept on writes. Lookups borrow `&str` keys, so they never allocate.

use std::collections::HashMap;
use std::sync::RwLock;

use super::{RevocationStatus, TokenIdentity};

#[derive(Default)]
struct Entries {
    /// jti → unix time after which the entry is gone.
    jtis: HashMap<String, i64>,
    /// iss → sub → (revoke tokens with iat <= this, entry expiry).
    subjects: HashMap<String, HashMap<String, (i64, i64)>>,
    writes: u64,
}

#[derive(Default)]
pub struct LocalView {
    entries: RwLock<Entries>,
}

/// Sweep expired entries every this many writes, so memory follows the live set.
const SWEEP_EVERY: u64 = 1024;

impl LocalView {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn check(&self, t: &TokenIdentity<'_>, now: i64) -> RevocationStatus {
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        if let Some(jti) = t.jti {
            if e.jtis.get(jti).is_some_and(|&until| until > now) {
                return RevocationStatus::Revoked;
            }
        }
        if let Some(sub) = t.sub {
            if let Some(&(before, until)) = e.subjects.get(t.iss).and_then(|m| m.get(sub)) {
                // A token without `iat` cannot prove it is newer: it counts as revoked.
                if until > now && t.iat.is_none_or(|iat| iat <= before) {
                    return RevocationStatus::Revoked;
                }
            }
        }
        RevocationStatus::NotRevoked
    }

    pub fn insert_jti(&self, jti: &str, until: i64, now: i64) {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let slot = e.jtis.entry(jti.to_string()).or_insert(until);
        *slot = (*slot).max(until);
        Self::maybe_sweep(&mut e, now);
    }

    pub fn insert_subject(&self, iss: &str, sub: &str, before: i64, until: i64, now: i64) {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let slot = e.subjects.entry(iss.to_string()).or_default().entry(sub.to_string()).or_insert((before, until));
        // A later `before` revokes more; keep the widest.
        *slot = (slot.0.max(before), slot.1.max(until));
        Self::maybe_sweep(&mut e, now);
    }

    pub fn remove_jti(&self, jti: &str) {
        self.entries.write().unwrap_or_else(|p| p.into_inner()).jtis.remove(jti);
    }

    pub fn remove_subject(&self, iss: &str, sub: &str) {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = e.subjects.get_mut(iss) {
            m.remove(sub);
            if m.is_empty() {
                e.subjects.remove(iss);
            }
        }
    }

    /// Replaces everything (a full resync).
    pub fn clear(&self) {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        e.jtis.clear();
        e.subjects.clear();
    }

    /// (jti entries, subject entries), expired ones included until the next sweep.
    pub fn len(&self) -> (usize, usize) {
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        (e.jtis.len(), e.subjects.values().map(HashMap::len).sum())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    pub fn sweep(&self, now: i64) {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        Self::sweep_entries(&mut e, now);
    }

    fn maybe_sweep(e: &mut Entries, now: i64) {
        e.writes += 1;
        if e.writes.is_multiple_of(SWEEP_EVERY) {
            Self::sweep_entries(e, now);
        }
    }

    fn sweep_entries(e: &mut Entries, now: i64) {
        e.jtis.retain(|_, until| *until > now);
        e.subjects.retain(|_, subs| {
            subs.retain(|_, (_, until)| *until > now);
            !subs.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<'a>(jti: Option<&'a str>, sub: Option<&'a str>, iat: Option<i64>) -> TokenIdentity<'a> {
        TokenIdentity { iss: "https://i", sub, jti, iat }
    }

    #[test]
    fn jti_revocation_lasts_until_exp() {
        let v = LocalView::new();
        v.insert_jti("j1", 200, 100);
        assert_eq!(v.check(&id(Some("j1"), None, None), 150), RevocationStatus::Revoked);
        assert_eq!(v.check(&id(Some("j2"), None, None), 150), RevocationStatus::NotRevoked);
        assert_eq!(v.check(&id(Some("j1"), None, None), 200), RevocationStatus::NotRevoked);
        v.sweep(201);
        assert!(v.is_empty());
    }

    #[test]
    fn subject_revocation_covers_tokens_issued_at_or_before() {
        let v = LocalView::new();
        v.insert_subject("https://i", "alice", 1000, 5000, 900);
        assert_eq!(v.check(&id(None, Some("alice"), Some(999)), 1100), RevocationStatus::Revoked);
        assert_eq!(v.check(&id(None, Some("alice"), Some(1000)), 1100), RevocationStatus::Revoked);
        assert_eq!(v.check(&id(None, Some("alice"), Some(1001)), 1100), RevocationStatus::NotRevoked);
        assert_eq!(v.check(&id(None, Some("alice"), None), 1100), RevocationStatus::Revoked);
        assert_eq!(v.check(&id(None, Some("bob"), Some(1)), 1100), RevocationStatus::NotRevoked);
        let other_iss = TokenIdentity { iss: "https://other", sub: Some("alice"), jti: None, iat: Some(1) };
        assert_eq!(v.check(&other_iss, 1100), RevocationStatus::NotRevoked);
        v.remove_subject("https://i", "alice");
        assert!(v.is_empty());
    }
}
