//! How the issuer writes revocations (RFC 7009 revocation, logout, refresh reuse): in the
//! core's Redis key layout (`hopauth_core::revocation::layout`), over the connection its
//! refresh store already holds, so every sidecar syncing that Redis enforces them; or into
//! a process-local memory store (which no sidecar sees: the memory backend warns).

use std::sync::Arc;
use std::time::Duration;

use hopauth_core::clock::unix_now;
use hopauth_core::revocation::layout::{jti_write, subject_write};
use hopauth_core::revocation::{BoxFuture, MemoryStore, RevocationError, RevocationStore};

use crate::refresh::RedisRefreshStore;

/// The write half of a revocation store: all the issuer needs.
pub trait RevocationWriter: Send + Sync {
    /// Revokes one token until its `exp` (unix seconds).
    fn revoke_jti<'a>(&'a self, jti: &'a str, exp: i64) -> BoxFuture<'a, Result<(), RevocationError>>;
    /// Revokes every token of `iss`/`sub` issued at or before `before` (unix seconds).
    fn revoke_subject<'a>(
        &'a self,
        iss: &'a str,
        sub: &'a str,
        before: i64,
    ) -> BoxFuture<'a, Result<(), RevocationError>>;
}

impl RevocationWriter for MemoryStore {
    fn revoke_jti<'a>(&'a self, jti: &'a str, exp: i64) -> BoxFuture<'a, Result<(), RevocationError>> {
        RevocationStore::revoke_jti(self, jti, exp)
    }

    fn revoke_subject<'a>(
        &'a self,
        iss: &'a str,
        sub: &'a str,
        before: i64,
    ) -> BoxFuture<'a, Result<(), RevocationError>> {
        RevocationStore::revoke_subject(self, iss, sub, before)
    }
}

/// Revocations written to the refresh store's Redis.
pub struct RedisRevocations {
    store: Arc<RedisRefreshStore>,
    /// A subject revocation is kept this long: no token outlives it.
    max_token_lifetime: Duration,
}

impl RedisRevocations {
    pub fn new(store: Arc<RedisRefreshStore>, max_token_lifetime: Duration) -> Self {
        RedisRevocations { store, max_token_lifetime }
    }
}

impl RevocationWriter for RedisRevocations {
    fn revoke_jti<'a>(&'a self, jti: &'a str, exp: i64) -> BoxFuture<'a, Result<(), RevocationError>> {
        Box::pin(async move {
            let w = jti_write(jti, exp, unix_now())?;
            self.store.set_ex(&w).await.map_err(|e| RevocationError::Unavailable(Box::new(e)))
        })
    }

    fn revoke_subject<'a>(
        &'a self,
        iss: &'a str,
        sub: &'a str,
        before: i64,
    ) -> BoxFuture<'a, Result<(), RevocationError>> {
        Box::pin(async move {
            let w = subject_write(iss, sub, before, self.max_token_lifetime)?;
            self.store.set_ex(&w).await.map_err(|e| RevocationError::Unavailable(Box::new(e)))
        })
    }
}
