//! The default refresh token store: in this process, lost on restart (every client logs in
//! again). One mutex makes each rotation atomic; it is never held across an await.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{NewToken, RefreshStore, Refused, RevokedFamily, Rotation, Session, StoreError};
use hopauth_core::revocation::BoxFuture;

/// Expired entries are swept every this many writes.
const SWEEP_EVERY: u64 = 1024;

struct TokenEntry {
    family: String,
    expires: i64,
    spent: bool,
    /// The hash of the successor this token was spent for: the same rotation again is a
    /// retry, not a reuse.
    successor: Option<String>,
}

struct FamilyEntry {
    session: Session,
    revoked: bool,
    access: Vec<(String, i64)>,
}

impl FamilyEntry {
    /// Marks the family revoked (idempotent) and says what was in it.
    fn revoke(&mut self, now: i64) -> RevokedFamily {
        self.revoked = true;
        RevokedFamily::at(&self.session.sub, &self.access, now)
    }
}

#[derive(Default)]
struct Inner {
    tokens: HashMap<String, TokenEntry>,
    families: HashMap<String, FamilyEntry>,
    writes: u64,
}

impl Inner {
    fn sweep(&mut self, now: i64) {
        self.writes += 1;
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            self.tokens.retain(|_, t| t.expires > now);
            self.families.retain(|_, f| f.session.expires > now);
        }
    }
}

#[derive(Default)]
pub struct MemoryRefreshStore {
    inner: Mutex<Inner>,
}

impl MemoryRefreshStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RefreshStore for MemoryRefreshStore {
    fn create<'a>(
        &'a self,
        family: &'a str,
        session: &'a Session,
        first: &'a NewToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            let now = hopauth_core::clock::unix_now();
            inner.sweep(now);
            inner.tokens.insert(
                first.hash.clone(),
                TokenEntry {
                    family: family.to_string(),
                    expires: session.cap(first.expires),
                    spent: false,
                    successor: None,
                },
            );
            inner.families.insert(
                family.to_string(),
                FamilyEntry {
                    session: session.clone(),
                    revoked: false,
                    access: vec![(first.access_jti.clone(), first.access_exp)],
                },
            );
            Ok(())
        })
    }

    fn rotate<'a>(
        &'a self,
        family: &'a str,
        presented: &'a str,
        next: &'a NewToken,
        now: i64,
    ) -> BoxFuture<'a, Result<Rotation, StoreError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            inner.sweep(now);
            let Inner { tokens, families, .. } = &mut *inner;
            let Some(fam) = families.get_mut(family).filter(|f| f.session.expires > now) else {
                return Ok(Rotation::Refused(Refused::Unknown));
            };
            if fam.revoked {
                return Ok(Rotation::Refused(Refused::Revoked));
            }
            let Some(token) = tokens.get_mut(presented).filter(|t| t.family == family) else {
                return Ok(Rotation::Refused(Refused::Unknown));
            };
            if token.expires <= now {
                return Ok(Rotation::Refused(Refused::Expired));
            }
            fam.access.retain(|(_, exp)| *exp > now);
            let expires = fam.session.cap(next.expires);
            if token.spent && token.successor.as_deref() == Some(next.hash.as_str()) {
                return Ok(Rotation::Rotated { session: fam.session.clone(), expires });
            }
            if token.spent {
                return Ok(Rotation::Reused(fam.revoke(now)));
            }
            token.spent = true;
            token.successor = Some(next.hash.clone());
            fam.access.push((next.access_jti.clone(), next.access_exp));
            let session = fam.session.clone();
            tokens.insert(
                next.hash.clone(),
                TokenEntry { family: family.to_string(), expires, spent: false, successor: None },
            );
            Ok(Rotation::Rotated { session, expires })
        })
    }

    fn revoke_with_token<'a>(
        &'a self,
        family: &'a str,
        presented: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<RevokedFamily>, StoreError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            let Inner { tokens, families, .. } = &mut *inner;
            // Looked up by sha256 of the whole token: timing can tell at most which hashes
            // are near, never the secret (a preimage).
            let held = tokens.get(presented).is_some_and(|t| t.family == family && t.expires > now);
            if !held {
                return Ok(None);
            }
            Ok(families.get_mut(family).map(|f| f.revoke(now)))
        })
    }

    fn revoke_family<'a>(
        &'a self,
        family: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<RevokedFamily>, StoreError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            Ok(inner.families.get_mut(family).map(|f| f.revoke(now)))
        })
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
