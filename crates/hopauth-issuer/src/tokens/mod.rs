//! The grants and revocations, free of HTTP types: password login, refresh with rotation
//! and reuse detection, RFC 7009 revocation and logout. Errors are RFC 6749 codes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::config::IssuerConfig;
use super::keys::KeyStore;
use super::metrics::IssuerMetrics;
use super::refresh::{self, NewToken, RefreshStore, Rotation, Session};
use super::throttle::Throttle;
use super::users::UserDb;
use crate::revocation::RevocationWriter;
use hopauth_core::clock::unix_now;

// Revocation and logout, the other half of `TokenService`.
mod revoke;

/// An RFC 6749 §5.2 error (plus `slow_down`, RFC 8628, for rate limits). The description
/// is short and safe to show; the detail goes to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("{0}")]
    InvalidScope(&'static str),
    #[error("grant_type must be password or refresh_token")]
    UnsupportedGrantType,
    #[error("too many requests; retry later")]
    SlowDown { retry_after: Duration },
    #[error("the bearer token is not a valid access token from this issuer")]
    InvalidToken,
    #[error("the service is temporarily unavailable")]
    TemporarilyUnavailable,
}

impl OAuthError {
    /// The `error` value, also the `result` metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::SlowDown { .. } => "slow_down",
            OAuthError::InvalidToken => "invalid_token",
            OAuthError::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub scope: String,
}

/// What logout revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoggedOut {
    pub access_tokens: usize,
    pub sessions: usize,
}

/// Claims of one of this issuer's own access tokens, signature checked.
#[derive(Debug, Clone)]
pub struct OwnToken {
    pub jti: String,
    pub exp: i64,
    pub sid: Option<String>,
}

pub struct TokenService {
    issuer: String,
    audiences: Vec<String>,
    access_lifetime: Duration,
    refresh_lifetime: Duration,
    session_lifetime: Duration,
    users: Arc<UserDb>,
    keys: Arc<KeyStore>,
    refresh: Arc<dyn RefreshStore>,
    revocation: Arc<dyn RevocationWriter>,
    per_user: Throttle,
    per_address: Throttle,
    per_family: Throttle,
    refresh_per_address: Throttle,
    revoke_per_address: Throttle,
    /// Refresh grants being worked on; a request that finds none free is shed (429).
    refreshing: Semaphore,
    /// argon2 runs on blocking threads; at most this many at once, so a login burst queues
    /// instead of taking every core.
    hashing: Semaphore,
    metrics: IssuerMetrics,
}

/// `retry-after` of a refresh shed because too many are in flight: they take milliseconds,
/// so a second later there is room.
pub const REFRESH_SHED_RETRY_AFTER: Duration = Duration::from_secs(1);

fn random_id() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    URL_SAFE_NO_PAD.encode(b)
}

/// `requested` (space-separated) if every scope in it is in `allowed`; all of `allowed` if
/// nothing was requested.
fn grant_scope(requested: Option<&str>, allowed: &[&str]) -> Result<String, OAuthError> {
    match requested.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(allowed.join(" ")),
        Some(req) => {
            let mut out: Vec<&str> = Vec::new();
            for s in req.split(' ').filter(|s| !s.is_empty()) {
                if !allowed.contains(&s) {
                    return Err(OAuthError::InvalidScope("the requested scope exceeds what may be granted"));
                }
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            Ok(out.join(" "))
        }
    }
}

impl TokenService {
    pub fn new(
        config: &IssuerConfig,
        users: Arc<UserDb>,
        keys: Arc<KeyStore>,
        refresh: Arc<dyn RefreshStore>,
        revocation: Arc<dyn RevocationWriter>,
        metrics: IssuerMetrics,
    ) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        TokenService {
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            access_lifetime: config.access_token_lifetime,
            refresh_lifetime: config.refresh_token_lifetime,
            session_lifetime: config.session_lifetime,
            users,
            keys,
            refresh,
            revocation,
            per_user: Throttle::new(config.throttle.login_per_user),
            per_address: Throttle::new(config.throttle.login_per_address),
            per_family: Throttle::new(config.throttle.refresh_per_family),
            refresh_per_address: Throttle::new(config.throttle.refresh_per_address),
            revoke_per_address: Throttle::new(config.throttle.revoke_per_address),
            refreshing: Semaphore::new(config.throttle.refresh_in_flight as usize),
            hashing: Semaphore::new(cores),
            metrics,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    pub fn refresh_store(&self) -> &Arc<dyn RefreshStore> {
        &self.refresh
    }

    pub fn metrics(&self) -> &IssuerMetrics {
        &self.metrics
    }

    fn throttled(&self, limit: &'static str, retry_after: Duration) -> OAuthError {
        self.metrics.record_throttled(limit);
        OAuthError::SlowDown { retry_after }
    }

    /// `grant_type=password` (RFC 6749 §4.3).
    pub async fn password_grant(
        &self,
        username: &str,
        password: &str,
        scope: Option<&str>,
        client: IpAddr,
    ) -> Result<Issued, OAuthError> {
        self.per_address.take(&client.to_string()).map_err(|w| self.throttled("address", w))?;
        // Taken before the argon2 check, so parallel guesses cannot all pass an unspent
        // bucket; given back when the password was right (a user who types well is never
        // locked out) or when no check happened.
        self.per_user.take(username).map_err(|w| self.throttled("user", w))?;
        let checked = async {
            let _permit = self.hashing.acquire().await.map_err(|_| OAuthError::TemporarilyUnavailable)?;
            let (users, name, pw) = (self.users.clone(), username.to_string(), password.to_string());
            self.metrics.record_password_check();
            tokio::task::spawn_blocking(move || users.authenticate(&name, &pw).cloned())
                .await
                .map_err(|_| OAuthError::TemporarilyUnavailable)
        }
        .await;
        let user = match checked {
            Ok(Some(user)) => {
                self.per_user.refund(username);
                user
            }
            Ok(None) => {
                tracing::info!(client = %client, "login failed");
                return Err(OAuthError::InvalidGrant("invalid username or password"));
            }
            Err(e) => {
                self.per_user.refund(username);
                return Err(e);
            }
        };
        let allowed: Vec<&str> = user.scopes.iter().map(String::as_str).collect();
        let scope = grant_scope(scope, &allowed)?;
        let now = unix_now();
        let session =
            Session { sub: user.username.clone(), scope, expires: now + self.session_lifetime.as_secs() as i64 };
        let family = refresh::new_family();
        let (refresh_token, hash) = refresh::new_token(&family);
        let jti = random_id();
        let access_exp = now + self.access_lifetime.as_secs() as i64;
        let first = NewToken {
            hash,
            expires: now + self.refresh_lifetime.as_secs() as i64,
            access_jti: jti.clone(),
            access_exp,
        };
        self.refresh.create(&family, &session, &first).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot store the refresh token");
            OAuthError::TemporarilyUnavailable
        })?;
        let access_token = self.sign_access(&session.sub, &session.scope, &user.roles, &family, &jti, now)?;
        tracing::info!(sub = %session.sub, "login");
        Ok(Issued { access_token, refresh_token, expires_in: self.access_lifetime.as_secs(), scope: session.scope })
    }

    /// `grant_type=refresh_token` (RFC 6749 §6): the presented token is spent and a new one
    /// issued; a spent token presented again revokes the family and the subject.
    ///
    /// Limits, cheapest first: refreshes in flight (shed, not queued), per client address,
    /// and per family, which only a genuine token spends (the family id is no secret).
    pub async fn refresh_grant(
        &self,
        presented: &str,
        scope: Option<&str>,
        client: IpAddr,
    ) -> Result<Issued, OAuthError> {
        let _working =
            self.refreshing.try_acquire().map_err(|_| self.throttled("refresh_in_flight", REFRESH_SHED_RETRY_AFTER))?;
        self.refresh_per_address.take(&client.to_string()).map_err(|w| self.throttled("refresh_address", w))?;
        let invalid = OAuthError::InvalidGrant("the refresh token is invalid, expired or revoked");
        let Some((family, hash)) = refresh::parse(presented) else { return Err(invalid) };
        // Checked now, taken once the store has recognised the token: a forged
        // `<sid>.<random>` costs the session nothing. Racing genuine refreshes may overrun
        // the bucket by one each, and only one of them can win.
        self.per_family.check(family).map_err(|w| self.throttled("family", w))?;
        let now = unix_now();
        let (next_token, next_hash) = refresh::new_token(family);
        let jti = random_id();
        let next = NewToken {
            hash: next_hash,
            expires: now + self.refresh_lifetime.as_secs() as i64,
            access_jti: jti.clone(),
            access_exp: now + self.access_lifetime.as_secs() as i64,
        };
        let rotation = self.refresh.rotate(family, &hash, &next, now).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot rotate the refresh token");
            OAuthError::TemporarilyUnavailable
        })?;
        let session = match rotation {
            Rotation::Rotated { session, .. } => {
                let _ = self.per_family.take(family);
                session
            }
            Rotation::Refused(why) => {
                tracing::info!(reason = why.as_str(), "refresh refused");
                return Err(invalid);
            }
            Rotation::Reused(revoked) => {
                self.metrics.record_reuse();
                tracing::warn!(sub = %revoked.sub, "spent refresh token reused: revoking the session and the subject");
                self.revoke_access(&revoked.live_access).await;
                let ok = self.revocation.revoke_subject(&self.issuer, &revoked.sub, now).await;
                if let Err(e) = &ok {
                    tracing::error!(error = %e, "cannot revoke the subject after refresh token reuse");
                }
                self.metrics.record_revocation("subject", ok.is_ok());
                return Err(invalid);
            }
        };
        // The user may have been removed or lost scopes since login.
        let Some(user) = self.users.get(&session.sub) else {
            let _ = self.revoke_family(family, now).await;
            return Err(invalid);
        };
        let still: Vec<&str> = session.scope.split(' ').filter(|s| user.scopes.iter().any(|u| u == s)).collect();
        let scope = grant_scope(scope, &still)?;
        let access_token = self.sign_access(&session.sub, &scope, &user.roles, family, &jti, now)?;
        Ok(Issued { access_token, refresh_token: next_token, expires_in: self.access_lifetime.as_secs(), scope })
    }

    fn sign_access(
        &self,
        sub: &str,
        scope: &str,
        roles: &[String],
        family: &str,
        jti: &str,
        now: i64,
    ) -> Result<String, OAuthError> {
        let aud: Value =
            if self.audiences.len() == 1 { self.audiences[0].clone().into() } else { json!(self.audiences) };
        let claims = json!({
            "iss": self.issuer, "sub": sub, "aud": aud,
            "iat": now, "nbf": now, "exp": now + self.access_lifetime.as_secs() as i64,
            "jti": jti, "scope": scope, "roles": roles, "sid": family,
        });
        self.keys.current().active.sign_jwt(&claims).map_err(|e| {
            tracing::error!(error = %e, "signing failed");
            OAuthError::TemporarilyUnavailable
        })
    }

    /// Checks that `token` is an access token this issuer signed (any published key);
    /// `exp` is not checked: logging out with an expired token still ends the session.
    pub fn verify_own(&self, token: &str) -> Option<OwnToken> {
        if token.len() > 8192 {
            return None;
        }
        let parsed = hopauth_core::jws::parse(token).ok()?;
        let keys = self.keys.current();
        let kid = parsed.header.kid.as_deref()?;
        let ok = keys.verify.iter().any(|k| {
            k.kid.as_deref() == Some(kid)
                && k.alg == parsed.header.alg
                && k.verify(parsed.signing_input.as_bytes(), &parsed.signature)
        });
        if !ok || parsed.claims.iss.as_deref() != Some(self.issuer.as_str()) {
            return None;
        }
        Some(OwnToken {
            jti: parsed.claims.jti?,
            exp: parsed.claims.exp?,
            sid: parsed.claims.all.get("sid").and_then(Value::as_str).map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_is_a_subset_of_what_is_allowed() {
        let allowed = ["orders:read", "profile"];
        assert_eq!(grant_scope(None, &allowed).unwrap(), "orders:read profile");
        assert_eq!(grant_scope(Some("  "), &allowed).unwrap(), "orders:read profile");
        assert_eq!(grant_scope(Some("profile profile"), &allowed).unwrap(), "profile");
        assert_eq!(grant_scope(Some("admin"), &allowed).unwrap_err().as_str(), "invalid_scope");
    }
}
