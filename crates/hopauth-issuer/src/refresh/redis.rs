//! Refresh tokens in Redis (one node, `redis://` or `rediss://`). Keys of one family share
//! the hash tag `{<family>}`:
//!
//! - `hopauth:issuer:family:{F}`: hash `sub`, `scope`, `exp`, `revoked`; expires with the session
//! - `hopauth:issuer:family:{F}:access`: sorted set of access-token `jti`s scored by `exp`
//! - `hopauth:issuer:rt:{F}:<sha256>`: hash `exp`, `spent`; expires with the token
//!
//! Rotation and revocation are Lua scripts: Redis runs each one alone, so of two requests
//! racing with the same token exactly one rotates and the other is a reuse.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::{NewToken, RefreshStore, Refused, RevokedFamily, Rotation, Session, StoreError};
use hopauth_core::revocation::layout::KeyWrite;
use hopauth_core::revocation::BoxFuture;

fn family_key(family: &str) -> String {
    format!("hopauth:issuer:family:{{{family}}}")
}

fn access_key(family: &str) -> String {
    format!("hopauth:issuer:family:{{{family}}}:access")
}

fn token_key(family: &str, hash: &str) -> String {
    format!("hopauth:issuer:rt:{{{family}}}:{hash}")
}

/// `RefreshStore::rotate`'s rules, run inside Redis so a rotation is atomic.
/// KEYS: family, access, presented, next. ARGV: now, next exp, access jti, access exp.
/// The spent token keeps `next` (the successor's key): the same call again, a retry whose
/// first reply was lost, answers `rotated` again instead of `reused`.
const ROTATE: &str = r#"
local now = tonumber(ARGV[1])
local fam = redis.call('HMGET', KEYS[1], 'sub', 'scope', 'exp', 'revoked')
if not fam[1] or tonumber(fam[3]) <= now then return {'refused', 'unknown'} end
if fam[4] == '1' then return {'refused', 'revoked'} end
local tok = redis.call('HMGET', KEYS[3], 'exp', 'spent', 'next')
if not tok[1] then return {'refused', 'unknown'} end
if tonumber(tok[1]) <= now then return {'refused', 'expired'} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local exp = math.min(tonumber(ARGV[2]), tonumber(fam[3]))
if tok[2] == '1' and tok[3] == KEYS[4] then
  return {'rotated', fam[1], fam[2], fam[3], tostring(exp)}
end
if tok[2] == '1' then
  redis.call('HSET', KEYS[1], 'revoked', '1')
  local out = {'reused', fam[1]}
  for _, v in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')) do out[#out + 1] = v end
  return out
end
redis.call('HSET', KEYS[3], 'spent', '1', 'next', KEYS[4])
redis.call('HSET', KEYS[4], 'exp', exp, 'spent', '0')
redis.call('EXPIREAT', KEYS[4], exp)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('EXPIREAT', KEYS[2], fam[3])
return {'rotated', fam[1], fam[2], fam[3], tostring(exp)}
"#;

/// KEYS: family, access. ARGV: now. With a third key (a presented refresh token), only
/// when that token exists: a forged `<family>.<random>` revokes nothing.
const REVOKE: &str = r#"
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 0 then return {} end
local sub = redis.call('HGET', KEYS[1], 'sub')
if not sub then return {} end
redis.call('HSET', KEYS[1], 'revoked', '1')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local out = {'revoked', sub}
for _, v in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')) do out[#out + 1] = v end
return out
"#;

/// A Lua script run with EVALSHA, loaded with EVAL when the server does not have it yet
/// (first use, restart, SCRIPT FLUSH).
struct LuaScript {
    code: &'static str,
    sha1: String,
}

impl LuaScript {
    fn new(code: &'static str) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, code.as_bytes());
        LuaScript { code, sha1: crate::users::hex(digest.as_ref()) }
    }

    async fn run(
        &self,
        con: &mut MultiplexedConnection,
        keys: &[String],
        args: &[String],
    ) -> redis::RedisResult<Vec<String>> {
        let call = |verb: &str, body: &str| {
            let mut cmd = redis::cmd(verb);
            cmd.arg(body).arg(keys.len()).arg(keys).arg(args);
            cmd
        };
        match call("EVALSHA", &self.sha1).query_async(con).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                call("EVAL", self.code).query_async(con).await
            }
            other => other,
        }
    }
}

pub struct RedisRefreshStore {
    client: redis::Client,
    config: AsyncConnectionConfig,
    command_timeout: Duration,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    rotate: LuaScript,
    revoke: LuaScript,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A script's revoked family: its `sub`, then the live access tokens as a flat
/// `jti, score, jti, score…` list (the script dropped the expired ones).
fn revoked_family(sub: &str, flat: &[String]) -> Result<RevokedFamily, StoreError> {
    let live_access = flat
        .chunks(2)
        .map(|c| match c {
            [jti, exp] => exp
                .parse::<f64>()
                .map(|e| (jti.clone(), e as i64))
                .map_err(|_| StoreError::Protocol(format!("score {exp:?}"))),
            _ => Err(StoreError::Protocol("odd jti list".into())),
        })
        .collect::<Result<_, _>>()?;
    Ok(RevokedFamily { sub: sub.to_string(), live_access })
}

fn int(s: &str) -> Result<i64, StoreError> {
    s.parse().map_err(|_| StoreError::Protocol(format!("not an integer: {s:?}")))
}

impl RedisRefreshStore {
    pub fn new(url: &str, connect_timeout: Duration, command_timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(command_timeout));
        Ok(RedisRefreshStore {
            client,
            config,
            command_timeout,
            conn: tokio::sync::Mutex::new(None),
            rotate: LuaScript::new(ROTATE),
            revoke: LuaScript::new(REVOKE),
        })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.client.get_multiplexed_async_connection_with_config(&self.config).await.map_err(unavailable)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `op` on the shared connection, reconnecting once if it has gone away or timed
    /// out. A timed-out first run may still have happened (only its reply lost, or it runs
    /// late), so every `op` here must be safe to run twice: `create` writes the same values,
    /// `ROTATE` recognises its own retry, `REVOKE` is idempotent.
    async fn with_retry<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut last = None;
        for _ in 0..2 {
            let conn = self.connection().await?;
            match tokio::time::timeout(self.command_timeout, op(conn)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => last = Some(e.to_string()),
                Err(_) => last = Some("command timed out".into()),
            }
            *self.conn.lock().await = None;
        }
        Err(StoreError::Unavailable(last.unwrap_or_default()))
    }
}

impl RedisRefreshStore {
    /// `SET key value EX ttl` on the shared connection (idempotent, so safe to retry): how
    /// the issuer's revocations reach Redis, in the layout the sidecars read.
    pub(crate) async fn set_ex(&self, w: &KeyWrite) -> Result<(), StoreError> {
        self.with_retry(|mut c| async move {
            redis::cmd("SET").arg(&w.key).arg(w.value).arg("EX").arg(w.ttl_secs).query_async::<()>(&mut c).await
        })
        .await
    }

    async fn run_revoke(&self, keys: Vec<String>, now: i64) -> Result<Option<RevokedFamily>, StoreError> {
        let args = [now.to_string()];
        let (keys, args) = (&keys, &args);
        let out = self.with_retry(|mut c| async move { self.revoke.run(&mut c, keys, args).await }).await?;
        match out.first().map(String::as_str) {
            None => Ok(None),
            Some("revoked") if out.len() >= 2 => Ok(Some(revoked_family(&out[1], &out[2..])?)),
            _ => Err(StoreError::Protocol(format!("revoke returned {out:?}"))),
        }
    }
}

impl RefreshStore for RedisRefreshStore {
    fn create<'a>(
        &'a self,
        family: &'a str,
        session: &'a Session,
        first: &'a NewToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let expires = session.cap(first.expires);
            let mut pipe = redis::pipe();
            pipe.atomic()
                .hset_multiple(
                    family_key(family),
                    &[
                        ("sub", session.sub.as_str()),
                        ("scope", session.scope.as_str()),
                        ("exp", &session.expires.to_string()),
                        ("revoked", "0"),
                    ],
                )
                .ignore()
                .expire_at(family_key(family), session.expires)
                .ignore()
                .zadd(access_key(family), &first.access_jti, first.access_exp)
                .ignore()
                .expire_at(access_key(family), session.expires)
                .ignore()
                .hset_multiple(token_key(family, &first.hash), &[("exp", expires.to_string()), ("spent", "0".into())])
                .ignore()
                .expire_at(token_key(family, &first.hash), expires)
                .ignore();
            self.with_retry(|mut c| {
                let pipe = pipe.clone();
                async move { pipe.query_async::<()>(&mut c).await }
            })
            .await
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
            let keys =
                [family_key(family), access_key(family), token_key(family, presented), token_key(family, &next.hash)];
            let args =
                [now.to_string(), next.expires.to_string(), next.access_jti.clone(), next.access_exp.to_string()];
            let (keys, args) = (&keys, &args);
            let out = self.with_retry(|mut c| async move { self.rotate.run(&mut c, keys, args).await }).await?;
            match out.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["refused", "unknown"] => Ok(Rotation::Refused(Refused::Unknown)),
                ["refused", "expired"] => Ok(Rotation::Refused(Refused::Expired)),
                ["refused", "revoked"] => Ok(Rotation::Refused(Refused::Revoked)),
                ["reused", sub, ..] => Ok(Rotation::Reused(revoked_family(sub, &out[2..])?)),
                ["rotated", sub, scope, session_exp, exp] => Ok(Rotation::Rotated {
                    session: Session { sub: sub.to_string(), scope: scope.to_string(), expires: int(session_exp)? },
                    expires: int(exp)?,
                }),
                other => Err(StoreError::Protocol(format!("rotate returned {other:?}"))),
            }
        })
    }

    fn revoke_with_token<'a>(
        &'a self,
        family: &'a str,
        presented: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<RevokedFamily>, StoreError>> {
        // A token key exists until the token expires (EXPIREAT), spent or not.
        Box::pin(self.run_revoke(vec![family_key(family), access_key(family), token_key(family, presented)], now))
    }

    fn revoke_family<'a>(
        &'a self,
        family: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<RevokedFamily>, StoreError>> {
        Box::pin(self.run_revoke(vec![family_key(family), access_key(family)], now))
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            self.with_retry(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await }).await.is_ok()
        })
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
