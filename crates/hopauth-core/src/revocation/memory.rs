//! The embedded default backend: revocations live in this process only.

use super::{
    validate_jti, validate_jti_name, validate_subject, BoxFuture, ListKey, LocalView, Page, RevocationError,
    RevocationStatus, RevocationStore, TokenIdentity,
};
use crate::clock::unix_now;

pub struct MemoryStore {
    view: LocalView,
    /// How long a subject revocation is kept: no token outlives it.
    max_token_lifetime_secs: i64,
}

impl MemoryStore {
    pub fn new(max_token_lifetime: std::time::Duration) -> Self {
        MemoryStore { view: LocalView::new(), max_token_lifetime_secs: max_token_lifetime.as_secs() as i64 }
    }
}

impl RevocationStore for MemoryStore {
    fn check(&self, token: &TokenIdentity<'_>) -> RevocationStatus {
        self.view.check(token, unix_now())
    }

    fn revoke_jti<'a>(&'a self, jti: &'a str, exp: i64) -> BoxFuture<'a, Result<(), RevocationError>> {
        Box::pin(async move {
            let now = unix_now();
            validate_jti(jti, exp, now)?;
            self.view.insert_jti(jti, exp, now);
            Ok(())
        })
    }

    fn revoke_subject<'a>(
        &'a self,
        iss: &'a str,
        sub: &'a str,
        before: i64,
    ) -> BoxFuture<'a, Result<(), RevocationError>> {
        Box::pin(async move {
            validate_subject(iss, sub)?;
            let now = unix_now();
            self.view.insert_subject(iss, sub, before, now + self.max_token_lifetime_secs, now);
            Ok(())
        })
    }

    fn unrevoke_jti<'a>(&'a self, jti: &'a str) -> BoxFuture<'a, Result<bool, RevocationError>> {
        Box::pin(async move {
            validate_jti_name(jti)?;
            Ok(self.view.remove_jti(jti))
        })
    }

    fn unrevoke_subject<'a>(&'a self, iss: &'a str, sub: &'a str) -> BoxFuture<'a, Result<bool, RevocationError>> {
        Box::pin(async move {
            validate_subject(iss, sub)?;
            Ok(self.view.remove_subject(iss, sub))
        })
    }

    fn list(&self, after: Option<&ListKey>, limit: usize) -> Page {
        self.view.page(unix_now(), after, limit)
    }

    fn ready(&self) -> bool {
        true
    }

    fn entries(&self) -> (usize, usize) {
        self.view.len()
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
