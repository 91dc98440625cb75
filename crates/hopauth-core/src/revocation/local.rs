//! The in-process view of revocations that the request path reads: jti → exp, and
//! (iss, sub) → "issued at or before". Entries stop counting once their expiry passes and
//! are swept on writes. Lookups borrow `&str` keys, so they never allocate.

use std::collections::HashMap;
use std::sync::RwLock;

use super::listing::{ListKey, Listed, Page};
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

    /// Whether there was an entry.
    pub fn remove_jti(&self, jti: &str) -> bool {
        self.entries.write().unwrap_or_else(|p| p.into_inner()).jtis.remove(jti).is_some()
    }

    /// Whether there was an entry.
    pub fn remove_subject(&self, iss: &str, sub: &str) -> bool {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let Some(m) = e.subjects.get_mut(iss) else { return false };
        let removed = m.remove(sub).is_some();
        if m.is_empty() {
            e.subjects.remove(iss);
        }
        removed
    }

    /// Up to `limit` live entries after `after`, in [`ListKey`] order. Only the page is
    /// copied out: the rest is compared in place, under the read lock.
    pub fn page(&self, now: i64, after: Option<&ListKey>, limit: usize) -> Page {
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        // (0, jti, "") or (1, iss, sub): the order of ListKey.
        let after: Option<(u8, &str, &str)> = after.map(|k| match k {
            ListKey::Jti(j) => (0, j.as_str(), ""),
            ListKey::Subject { iss, sub } => (1, iss.as_str(), sub.as_str()),
        });
        let jtis =
            e.jtis.iter().filter(|(_, &until)| until > now).map(|(j, &until)| ((0, j.as_str(), ""), None, until));
        let subjects = e.subjects.iter().flat_map(|(iss, subs)| {
            subs.iter()
                .filter(|(_, &(_, until))| until > now)
                .map(move |(sub, &(before, until))| ((1, iss.as_str(), sub.as_str()), Some(before), until))
        });
        let mut found: Vec<_> = jtis.chain(subjects).filter(|(k, _, _)| after.is_none_or(|a| *k > a)).collect();
        let more = found.len() > limit;
        if more {
            found.select_nth_unstable_by(limit, |a, b| a.0.cmp(&b.0));
            found.truncate(limit);
        }
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let entries = found
            .into_iter()
            .map(|((kind, a, b), before, until)| Listed {
                key: if kind == 0 {
                    ListKey::Jti(a.to_string())
                } else {
                    ListKey::Subject { iss: a.to_string(), sub: b.to_string() }
                },
                before,
                until,
            })
            .collect();
        Page { entries, more }
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
        assert!(v.remove_subject("https://i", "alice"));
        assert!(!v.remove_subject("https://i", "alice"));
        assert!(v.is_empty());
    }

    #[test]
    fn pages_follow_one_order_and_skip_expired_entries() {
        let v = LocalView::new();
        for j in ["c", "a", "b", "old"] {
            v.insert_jti(j, if j == "old" { 150 } else { 500 }, 100);
        }
        v.insert_subject("https://i", "bob", 90, 500, 100);
        v.insert_subject("https://a", "zed", 80, 500, 100);
        let keys = |p: &Page| p.entries.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
        let first = v.page(200, None, 2);
        assert_eq!(keys(&first), [ListKey::Jti("a".into()), ListKey::Jti("b".into())]);
        assert!(first.more);
        let second = v.page(200, first.entries.last().map(|e| &e.key), 2);
        let zed = ListKey::Subject { iss: "https://a".into(), sub: "zed".into() };
        assert_eq!(keys(&second), [ListKey::Jti("c".into()), zed.clone()]);
        assert_eq!(second.entries[1].before, Some(80));
        let last = v.page(200, Some(&zed), 2);
        assert_eq!(last.entries.len(), 1);
        assert!(!last.more, "the expired jti is not listed");
        assert!(v.remove_jti("a") && !v.remove_jti("a"));
    }
}
