//! The Redis backend: every instance keeps a complete local view of the `hopauth:revoked:*`
//! keys, kept current by RESP3 client-side-caching invalidations in broadcast mode
//! (`CLIENT TRACKING ON BCAST PREFIX hopauth:revoked:`), rebuilt by SCAN at start and after
//! every reconnect. The request path reads only the local view; see docs/revocation.md.

mod sync;
mod target;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::{ConnectionLike, MultiplexedConnection};

pub use sync::run;
/// For the fuzz target only (fuzz/fuzz_targets/cluster_nodes.rs): not an API.
#[doc(hidden)]
pub use target::parse_cluster_nodes;
pub use target::RedisTarget;

use super::{
    validate_jti, validate_subject, BoxFuture, LocalView, RevocationError, RevocationStatus, RevocationStore,
    TokenIdentity, KEY_PREFIX,
};
use crate::metrics::Metrics;
use crate::verify::unix_now;

/// `hopauth:revoked:jti:<jti>`.
pub fn jti_key(jti: &str) -> String {
    format!("{KEY_PREFIX}jti:{jti}")
}

/// `hopauth:revoked:sub:<iss>|<sub>`.
pub fn subject_key(iss: &str, sub: &str) -> String {
    format!("{KEY_PREFIX}sub:{iss}|{sub}")
}

/// What a revocation key names.
#[derive(Debug, PartialEq, Eq)]
pub enum RevokedKey<'a> {
    Jti(&'a str),
    Subject { iss: &'a str, sub: &'a str },
}

pub fn parse_key(key: &str) -> Option<RevokedKey<'_>> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    if let Some(jti) = rest.strip_prefix("jti:") {
        return (!jti.is_empty()).then_some(RevokedKey::Jti(jti));
    }
    let (iss, sub) = rest.strip_prefix("sub:")?.split_once('|')?;
    (!iss.is_empty() && !sub.is_empty()).then_some(RevokedKey::Subject { iss, sub })
}

/// Connection settings for the backend.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub max_staleness: Duration,
    pub max_token_lifetime: Duration,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

enum Writer {
    Node(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Writer {
    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Writer::Node(c) => cmd.query_async(c).await,
            Writer::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

pub struct RedisStore {
    target: RedisTarget,
    settings: RedisSettings,
    view: ArcSwap<LocalView>,
    synced: AtomicBool,
    /// Milliseconds after `epoch` of the last moment the view was confirmed current.
    confirmed_ms: AtomicU64,
    epoch: Instant,
    writer: tokio::sync::Mutex<Option<Writer>>,
    metrics: Metrics,
}

impl RedisStore {
    pub fn new(url: &str, settings: RedisSettings, metrics: Metrics) -> Result<Self, RevocationError> {
        let target = RedisTarget::parse(url).map_err(RevocationError::Unavailable)?;
        Ok(RedisStore {
            target,
            settings,
            view: ArcSwap::from_pointee(LocalView::new()),
            synced: AtomicBool::new(false),
            confirmed_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            writer: tokio::sync::Mutex::new(None),
            metrics,
        })
    }

    /// The store's background task; see [`run`].
    pub fn start(self: &Arc<Self>) -> impl std::future::Future<Output = ()> + Send + 'static {
        run(self.clone())
    }

    fn mark_confirmed(&self) {
        self.confirmed_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// Time since the view was last confirmed current; `None` before the first sync.
    pub fn sync_age(&self) -> Option<Duration> {
        if self.confirmed_ms.load(Ordering::Acquire) == 0 && !self.synced.load(Ordering::Acquire) {
            return None;
        }
        let confirmed = Duration::from_millis(self.confirmed_ms.load(Ordering::Acquire));
        Some(self.epoch.elapsed().saturating_sub(confirmed))
    }

    fn fresh(&self) -> bool {
        self.synced.load(Ordering::Acquire) && self.sync_age().is_some_and(|age| age <= self.settings.max_staleness)
    }

    async fn writer(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Writer>>, RevocationError> {
        let mut slot = self.writer.lock().await;
        if slot.is_none() {
            let unavailable = |e: String| RevocationError::Unavailable(e);
            let t = self.settings.connect_timeout;
            let w = if let RedisTarget::Cluster { seeds } = &self.target {
                let client = redis::cluster::ClusterClient::builder(seeds.clone())
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .connection_timeout(t)
                    .response_timeout(self.settings.command_timeout)
                    .build()
                    .map_err(|e| unavailable(e.to_string()))?;
                Writer::Cluster(client.get_async_connection().await.map_err(|e| unavailable(e.to_string()))?)
            } else {
                let masters = self.target.masters(t).await.map_err(unavailable)?;
                let master = masters.into_iter().next().ok_or_else(|| unavailable("no master".into()))?;
                Writer::Node(target::connect_node(&master, t).await.map_err(unavailable)?)
            };
            *slot = Some(w);
        }
        Ok(slot)
    }

    /// Runs one write, reconnecting once if the cached connection has gone away.
    async fn write(&self, cmd: redis::Cmd) -> Result<(), RevocationError> {
        for attempt in 0..2 {
            let mut guard = self.writer().await?;
            let result: redis::RedisResult<()> = match guard.as_mut() {
                Some(w) => tokio::time::timeout(self.settings.command_timeout, w.query(&cmd))
                    .await
                    .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "command timed out")))),
                None => continue,
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    *guard = None;
                    if attempt == 1 {
                        return Err(RevocationError::Unavailable(e.to_string()));
                    }
                }
            }
        }
        Err(RevocationError::Unavailable("write failed".into()))
    }
}

impl RevocationStore for RedisStore {
    fn check(&self, token: &TokenIdentity<'_>) -> RevocationStatus {
        match self.view.load().check(token, unix_now()) {
            // A revocation we know of holds even while the store is out of reach.
            RevocationStatus::Revoked => RevocationStatus::Revoked,
            _ if self.fresh() => RevocationStatus::NotRevoked,
            _ => RevocationStatus::Unknown,
        }
    }

    fn revoke_jti<'a>(&'a self, jti: &'a str, exp: i64) -> BoxFuture<'a, Result<(), RevocationError>> {
        Box::pin(async move {
            let now = unix_now();
            validate_jti(jti, exp, now)?;
            let mut cmd = redis::cmd("SET");
            cmd.arg(jti_key(jti)).arg(1).arg("EX").arg(exp - now);
            self.write(cmd).await?;
            self.view.load().insert_jti(jti, exp, now);
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
            let ttl = self.settings.max_token_lifetime.as_secs() as i64;
            let mut cmd = redis::cmd("SET");
            cmd.arg(subject_key(iss, sub)).arg(before).arg("EX").arg(ttl);
            self.write(cmd).await?;
            self.view.load().insert_subject(iss, sub, before, now + ttl, now);
            Ok(())
        })
    }

    fn ready(&self) -> bool {
        self.fresh()
    }

    fn entries(&self) -> (usize, usize) {
        self.view.load().len()
    }

    fn sync_age(&self) -> Option<Duration> {
        RedisStore::sync_age(self)
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

/// Applies one key's current value (from GET and PTTL) to `view`.
fn apply(view: &LocalView, key: &str, value: Option<String>, pttl_ms: i64, now: i64) {
    let Some(parsed) = parse_key(key) else { return };
    let Some(value) = value else {
        match parsed {
            RevokedKey::Jti(jti) => view.remove_jti(jti),
            RevokedKey::Subject { iss, sub } => view.remove_subject(iss, sub),
        }
        return;
    };
    // No TTL (-1): the writer forgot EX; keep the entry as long as anything could use it.
    let until = if pttl_ms >= 0 { now + (pttl_ms + 999) / 1000 } else { i64::MAX / 2 };
    match parsed {
        RevokedKey::Jti(jti) => view.insert_jti(jti, until, now),
        RevokedKey::Subject { iss, sub } => {
            // An unreadable time fails closed: every token of the subject is refused.
            let before = value.trim().parse::<i64>().unwrap_or_else(|_| {
                tracing::warn!(
                    key,
                    "subject revocation value is not unix seconds; revoking every token of the subject"
                );
                i64::MAX / 2
            });
            view.insert_subject(iss, sub, before, until, now);
        }
    }
}

/// GET and PTTL for `keys` in one round trip, applied to `view`.
async fn load_keys<C: ConnectionLike + Send>(con: &mut C, keys: &[String], view: &LocalView) -> redis::RedisResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("GET").arg(k).cmd("PTTL").arg(k);
    }
    let values: Vec<redis::Value> = pipe.query_async(con).await?;
    let now = unix_now();
    for (k, pair) in keys.iter().zip(values.chunks(2)) {
        let value: Option<String> = redis::from_redis_value_ref(&pair[0]).ok().flatten();
        let pttl: i64 = redis::from_redis_value_ref(&pair[1]).unwrap_or(-2);
        apply(view, k, value, pttl, now);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout_round_trips() {
        assert_eq!(jti_key("abc"), "hopauth:revoked:jti:abc");
        assert_eq!(subject_key("https://i", "alice"), "hopauth:revoked:sub:https://i|alice");
        assert_eq!(parse_key(&jti_key("abc")), Some(RevokedKey::Jti("abc")));
        assert_eq!(
            parse_key(&subject_key("https://i", "a|b")),
            Some(RevokedKey::Subject { iss: "https://i", sub: "a|b" })
        );
        assert_eq!(parse_key("hopauth:revoked:jti:"), None);
        assert_eq!(parse_key("other:key"), None);
    }

    #[test]
    fn applied_values_follow_redis() {
        let view = LocalView::new();
        let id = TokenIdentity { iss: "https://i", sub: Some("alice"), jti: Some("j"), iat: Some(100) };
        apply(&view, &jti_key("j"), Some("1".into()), 60_000, 1000);
        assert_eq!(view.check(&id, 1000), RevocationStatus::Revoked);
        apply(&view, &jti_key("j"), None, -2, 1000);
        assert_eq!(view.check(&id, 1000), RevocationStatus::NotRevoked);
        apply(&view, &subject_key("https://i", "alice"), Some("150".into()), 60_000, 1000);
        assert_eq!(view.check(&id, 1000), RevocationStatus::Revoked);
        apply(&view, &subject_key("https://i", "alice"), Some("50".into()), 60_000, 1000);
        assert_eq!(view.check(&id, 1000), RevocationStatus::Revoked, "the widest revocation is kept");
    }
}
