//! Refresh tokens: opaque, rotated on every use, grouped in a family (one login session).
//! Only sha256(token) is stored. A spent token presented again means it was stolen (or the
//! client is broken): the whole family is revoked. Backends: memory (default) and Redis,
//! where rotation is one Lua script so two racing refreshes cannot both succeed.
//!
//! A token is `<family>.<secret>`: the family id in clear lets the Redis keys of one
//! family share a hash slot; the 256-bit secret is what makes it unguessable.

mod memory;
mod redis;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

pub use self::redis::RedisRefreshStore;
use hopauth_core::revocation::BoxFuture;
pub use memory::MemoryRefreshStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("refresh token store unavailable: {0}")]
    Unavailable(String),
    #[error("refresh token store answered something unexpected: {0}")]
    Protocol(String),
}

/// What a family (login session) grants; fixed at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub sub: String,
    /// Space-separated granted scopes.
    pub scope: String,
    /// Absolute end of the session (unix seconds): no refresh token outlives it.
    pub expires: i64,
}

impl Session {
    /// A refresh token's expiry, capped at the session's end: every store stores this.
    pub fn cap(&self, expires: i64) -> i64 {
        expires.min(self.expires)
    }
}

/// A refresh token about to be handed out, and the access token issued with it.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub hash: String,
    /// Unix seconds; the store caps it at the session's end.
    pub expires: i64,
    pub access_jti: String,
    pub access_exp: i64,
}

/// A family that has just been revoked: its subject and the access tokens still alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedFamily {
    pub sub: String,
    /// `(jti, exp)` of access tokens issued in this family that have not expired.
    pub live_access: Vec<(String, i64)>,
}

impl RevokedFamily {
    /// The family of `sub`, revoked at `now`, with those of `access` that are still alive.
    pub fn at(sub: &str, access: &[(String, i64)], now: i64) -> Self {
        RevokedFamily {
            sub: sub.to_string(),
            live_access: access.iter().filter(|(_, exp)| *exp > now).cloned().collect(),
        }
    }
}

/// Why a presented refresh token was refused; `as_str` is for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Unknown,
    Expired,
    Revoked,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Unknown => "unknown",
            Refused::Expired => "expired",
            Refused::Revoked => "family_revoked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token is now spent; `NewToken` is valid until the returned expiry.
    Rotated {
        session: Session,
        expires: i64,
    },
    /// The presented token was already spent: the family is now revoked.
    Reused(RevokedFamily),
    Refused(Refused),
}

pub trait RefreshStore: Send + Sync {
    /// Starts a family with its first token.
    fn create<'a>(
        &'a self,
        family: &'a str,
        session: &'a Session,
        first: &'a NewToken,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Spends `presented` (a hash) and stores `next`, atomically; see [`Rotation`]. The
    /// rules, in order (the memory store's `rotate` and the Redis store's `ROTATE` script
    /// are the two implementations, held to the same behaviour by tests/issuer/stores.rs):
    /// family unknown or past its end → `Refused(Unknown)`; revoked → `Refused(Revoked)`;
    /// token unknown → `Refused(Unknown)`; expired → `Refused(Expired)`; already spent for
    /// this `next` → `Rotated` (a retry); spent for another → `Reused` (and the family is
    /// revoked); else spent now, `next` stored with [`Session::cap`] of its expiry.
    ///
    /// Idempotent per request: the spent token remembers the hash of the successor it was
    /// spent for, and the same call again (same `presented`, same `next`: a retry after a
    /// lost reply) answers `Rotated` again instead of `Reused`. `next.hash` is the hash of
    /// 256 fresh random bits that never leave this process, so it works as a request id no
    /// one else can present; any other successor for a spent token is a reuse.
    fn rotate<'a>(
        &'a self,
        family: &'a str,
        presented: &'a str,
        next: &'a NewToken,
        now: i64,
    ) -> BoxFuture<'a, Result<Rotation, StoreError>>;
    /// Marks the family revoked if `presented` (a hash) is one of its refresh tokens, spent
    /// or not, and not expired: holding the token is the proof. `None` (and nothing
    /// revoked) for anything else, such as a forged `<family>.<random>`.
    fn revoke_with_token<'a>(
        &'a self,
        family: &'a str,
        presented: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<RevokedFamily>, StoreError>>;
    /// Marks the family revoked (idempotent); `None` if it does not exist. Only for a caller
    /// that has proved the session another way (a verified access token's `sid`).
    fn revoke_family<'a>(
        &'a self,
        family: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<RevokedFamily>, StoreError>>;
    /// Reachable (for `/readyz`).
    fn ping(&self) -> BoxFuture<'_, bool>;
    fn backend(&self) -> &'static str;
}

fn random_b64<const N: usize>() -> String {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    URL_SAFE_NO_PAD.encode(b)
}

/// A new family id (128 bits).
pub fn new_family() -> String {
    random_b64::<16>()
}

/// A new refresh token in `family`: the token for the client and the hash to store.
pub fn new_token(family: &str) -> (String, String) {
    let token = format!("{family}.{}", random_b64::<32>());
    let hash = hash(&token);
    (token, hash)
}

/// Hex sha256 of the whole token: what the store keeps instead of the token.
pub fn hash(token: &str) -> String {
    super::users::hex(&Sha256::digest(token.as_bytes()))
}

/// The family id and hash of a presented token, if it has the shape of one of ours.
pub fn parse(token: &str) -> Option<(&str, String)> {
    let (family, secret) = token.split_once('.')?;
    let b64 =
        |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (b64(family, 22) && b64(secret, 43)).then(|| (family, hash(token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape_round_trips() {
        let family = new_family();
        let (token, hash) = new_token(&family);
        assert_eq!(parse(&token), Some((family.as_str(), hash.clone())));
        assert_eq!(hash.len(), 64);
        assert!(!token.contains(&hash));
        assert_eq!(parse("abc"), None);
        assert_eq!(parse(&format!("{family}.short")), None);
        assert_eq!(parse(&format!("{}.{}", "a".repeat(22), "b+".repeat(21) + "c")), None);
    }
}
