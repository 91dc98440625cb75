//! `hopauth revoke`: one revocation written straight to Redis, where every hopauth on that
//! Redis enforces it. The binary parses the flags; this writes and says what it wrote.

use std::path::PathBuf;

use anyhow::Context;

use hopauth_core::clock::unix_now;
use hopauth_core::revocation::layout::{jti_key, subject_key};
use hopauth_core::revocation::{RevocationError, RevocationStore};

use crate::config::{Config, RevocationConfig, DEFAULT_LEEWAY};
use crate::metrics::Metrics;
use crate::revocation::redis::{RedisSettings, RedisStore};

/// What to revoke, and where: one token (`jti` until `exp`) or every token of a subject
/// (`iss`/`sub`, issued at or before `before`), in the Redis of `redis_url` or `config`.
#[derive(Debug, Default)]
pub struct RevokeRequest {
    pub redis_url: Option<String>,
    pub config: Option<PathBuf>,
    pub jti: Option<String>,
    pub exp: Option<i64>,
    pub sub: Option<String>,
    pub iss: Option<String>,
    pub before: Option<i64>,
}

/// Writes one revocation through the Redis backend and says what it wrote.
pub async fn revoke(t: RevokeRequest) -> anyhow::Result<String> {
    let (url, revocation, config) = match (&t.redis_url, &t.config) {
        (Some(url), _) => (url.clone(), RevocationConfig::default(), None),
        (None, Some(path)) => {
            let c = Config::load(path)?;
            let url = c.revocation.resolved_redis_url().map_err(anyhow::Error::msg)?.with_context(|| {
                format!(
                    "{}: revocation.redis_url is not set (the memory backend cannot be written from outside)",
                    path.display()
                )
            })?;
            (url, c.revocation.clone(), Some(c))
        }
        (None, None) => anyhow::bail!("give --redis-url or --config"),
    };
    let metrics = Metrics::standalone().revocation().clone();
    let store = RedisStore::new(&url, RedisSettings::from(&revocation), metrics)?;
    let now = unix_now();
    if let Some(jti) = &t.jti {
        let exp = t.exp.context("--jti needs --exp")?;
        store.revoke_jti(jti, exp).await.map_err(|e| not_redis(&url, e))?;
        Ok(format!("revoked jti {jti:?} until {exp}: SET {} 1 EX {}", jti_key(jti), exp - now))
    } else {
        let (iss, sub) = (t.iss.context("--sub needs --iss")?, t.sub.context("--iss needs --sub")?);
        // `iat` is the issuer's clock: cover the skew its provider allows (the default leeway
        // when no config says which).
        let skew = config
            .as_ref()
            .and_then(|c| c.providers.iter().find(|p| p.issuer == iss))
            .map_or(DEFAULT_LEEWAY, |p| p.leeway);
        let before = t.before.unwrap_or(now + skew.as_secs() as i64);
        store.revoke_subject(&iss, &sub, before).await.map_err(|e| not_redis(&url, e))?;
        Ok(format!(
            "revoked every token of {sub:?} from {iss:?} issued at or before {before}: SET {} {before} EX {}",
            subject_key(&iss, &sub),
            revocation.max_token_lifetime.as_secs()
        ))
    }
}

/// A revocation write error, in one line when the address answered but not as Redis (an
/// HTTP port, a database of another kind), instead of the client's repeated parse errors.
fn not_redis(url: &str, e: RevocationError) -> anyhow::Error {
    let chain = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| e.source());
    let protocol = chain
        .filter_map(|e| e.downcast_ref::<redis::RedisError>())
        .any(|r| matches!(r.kind(), redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType))
        || e.to_string().contains("Parse error");
    if protocol {
        let shown = crate::config::redact_url(url);
        anyhow::anyhow!("{shown} answered, but not as Redis: check the host and port (an HTTP port, perhaps?)")
    } else {
        e.into()
    }
}
