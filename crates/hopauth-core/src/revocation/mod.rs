//! Revocation: the `RevocationStore` seam, checked on every request after the verified-token
//! cache. The check is local and synchronous (no I/O on the request path); writes go
//! through the store so that every instance sharing it enforces them. The core holds the
//! local view, the in-process backend and the Redis key layout ([`layout`]); the Redis
//! sync itself is the sidecar's.

pub mod layout;
pub mod listing;
mod local;
mod memory;

use std::future::Future;
use std::pin::Pin;

pub use layout::KEY_PREFIX;
pub use listing::{ListKey, Listed, Page};
pub use local::LocalView;
pub use memory::MemoryStore;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the local view says about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationStatus {
    NotRevoked,
    Revoked,
    /// The view is stale: the store has been out of reach longer than allowed.
    Unknown,
}

/// The identity a revocation can name.
#[derive(Debug, Clone, Copy)]
pub struct TokenIdentity<'a> {
    pub iss: &'a str,
    pub sub: Option<&'a str>,
    pub jti: Option<&'a str>,
    pub iat: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("revocation store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("invalid revocation: {0}")]
    Invalid(&'static str),
}

pub trait RevocationStore: Send + Sync {
    /// Hot path: local, non-blocking, allocation-free.
    fn check(&self, token: &TokenIdentity<'_>) -> RevocationStatus;
    /// Revokes one token until its `exp` (unix seconds).
    fn revoke_jti<'a>(&'a self, jti: &'a str, exp: i64) -> BoxFuture<'a, Result<(), RevocationError>>;
    /// Revokes every token of `iss`/`sub` issued at or before `before` (unix seconds).
    fn revoke_subject<'a>(
        &'a self,
        iss: &'a str,
        sub: &'a str,
        before: i64,
    ) -> BoxFuture<'a, Result<(), RevocationError>>;
    /// Undoes a revocation of one token; whether the store had it.
    fn unrevoke_jti<'a>(&'a self, jti: &'a str) -> BoxFuture<'a, Result<bool, RevocationError>>;
    /// Undoes a revocation of `iss`/`sub` (whatever its `before`); whether the store had it.
    fn unrevoke_subject<'a>(&'a self, iss: &'a str, sub: &'a str) -> BoxFuture<'a, Result<bool, RevocationError>>;
    /// Up to `limit` live revocations of the local view after `after` (see [`listing`]).
    fn list(&self, after: Option<&ListKey>, limit: usize) -> Page;
    /// Synced and fresh.
    fn ready(&self) -> bool;
    /// Entries in the local view: (jti, subject).
    fn entries(&self) -> (usize, usize);
    /// Time since the view was last confirmed current (`None`: not applicable or never).
    fn sync_age(&self) -> Option<std::time::Duration> {
        None
    }
    /// Backend name for logs.
    fn backend(&self) -> &'static str;
}

/// Checks a write before it reaches any backend.
pub fn validate_jti(jti: &str, exp: i64, now: i64) -> Result<(), RevocationError> {
    validate_jti_name(jti)?;
    if exp <= now {
        return Err(RevocationError::Invalid("exp is in the past: the token has already expired"));
    }
    Ok(())
}

/// A jti a revocation may name (also for undoing one).
pub fn validate_jti_name(jti: &str) -> Result<(), RevocationError> {
    if jti.is_empty() || jti.len() > 512 {
        return Err(RevocationError::Invalid("jti must be 1 to 512 bytes"));
    }
    Ok(())
}

pub fn validate_subject(iss: &str, sub: &str) -> Result<(), RevocationError> {
    if iss.is_empty() || sub.is_empty() || iss.len() + sub.len() > 1024 {
        return Err(RevocationError::Invalid("iss and sub must be non-empty and short"));
    }
    if iss.contains('|') {
        return Err(RevocationError::Invalid("iss must not contain '|'"));
    }
    Ok(())
}
