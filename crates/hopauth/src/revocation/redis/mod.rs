//! The Redis backend: every instance keeps a complete local view of the `hopauth:revoked:*`
//! keys, kept current by RESP3 client-side-caching invalidations in broadcast mode
//! (`CLIENT TRACKING ON BCAST PREFIX hopauth:revoked:`), rebuilt by SCAN at start and after
//! every reconnect. The request path reads only the local view; see docs/revocation.md.

mod error;
mod eviction;
mod sync;
mod target;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::{ConnectionLike, MultiplexedConnection};

pub use error::RedisStoreError;
pub use sync::run;
/// For the fuzz target only (fuzz/fuzz_targets/cluster_nodes.rs): not an API.
#[doc(hidden)]
pub use target::parse_cluster_nodes;
pub use target::RedisTarget;

use hopauth_core::clock::unix_now;
pub use hopauth_core::revocation::layout::{jti_key, parse_key, subject_key, BadKey, RevokedKey};
use hopauth_core::revocation::layout::{jti_write, subject_write};
use hopauth_core::revocation::{
    validate_jti_name, validate_subject, BoxFuture, ListKey, LocalView, Page, RevocationError, RevocationStatus,
    RevocationStore, TokenIdentity, KEY_PREFIX,
};

use crate::metrics::RevocationMetrics;

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
    /// A full sync has completed: the view is worth answering from. Never cleared, since
    /// freshness is `confirmed_ms`'s business: a lost connection does not by itself make
    /// the view wrong, only old.
    synced: AtomicBool,
    /// Milliseconds after `epoch` of the last moment the view was confirmed current (when
    /// the last full scan or heartbeat that succeeded began). Only moves forward.
    confirmed_ms: AtomicU64,
    epoch: Instant,
    writer: tokio::sync::Mutex<Option<Writer>>,
    metrics: RevocationMetrics,
    bad_key_log: std::sync::Mutex<BadKeyLog>,
    /// The eviction policies last reported, so the log speaks once per change.
    eviction_seen: std::sync::Mutex<Option<Vec<(String, eviction::Policy)>>>,
}

impl RedisStore {
    pub fn new(url: &str, settings: RedisSettings, metrics: RevocationMetrics) -> Result<Self, RevocationError> {
        let target = RedisTarget::parse(url).map_err(|why| RevocationError::Unavailable(why.into()))?;
        Ok(RedisStore {
            target,
            settings,
            view: ArcSwap::from_pointee(LocalView::new()),
            synced: AtomicBool::new(false),
            confirmed_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            writer: tokio::sync::Mutex::new(None),
            metrics,
            bad_key_log: std::sync::Mutex::new(BadKeyLog::default()),
            eviction_seen: std::sync::Mutex::new(None),
        })
    }

    /// The store's background task; see [`run`].
    pub fn start(self: &Arc<Self>) -> impl std::future::Future<Output = ()> + Send + 'static {
        run(self.clone())
    }

    /// Records that the view held everything Redis held at `at` (the moment the command
    /// that proved it was sent, so the time spent waiting for the answer is not counted).
    fn mark_confirmed(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.epoch).as_millis() as u64;
        self.confirmed_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// Time since the view was last confirmed current; `None` before the first sync.
    pub fn sync_age(&self) -> Option<Duration> {
        if !self.synced.load(Ordering::Acquire) {
            return None;
        }
        let confirmed = Duration::from_millis(self.confirmed_ms.load(Ordering::Acquire));
        Some(self.epoch.elapsed().saturating_sub(confirmed))
    }

    /// The view may answer "not revoked": synced once, and confirmed within
    /// `max_staleness`, whether or not a connection is up right now (a Redis restart within
    /// it is invisible; the resync on reconnect applies what was written meanwhile).
    fn fresh(&self) -> bool {
        self.sync_age().is_some_and(|age| age <= self.settings.max_staleness)
    }

    async fn writer(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Writer>>, RevocationError> {
        let mut slot = self.writer.lock().await;
        if slot.is_none() {
            let unavailable = |e: RedisStoreError| RevocationError::Unavailable(Box::new(e));
            let t = self.settings.connect_timeout;
            let w = if let RedisTarget::Cluster { seeds } = &self.target {
                let client = redis::cluster::ClusterClient::builder(seeds.clone())
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .connection_timeout(t)
                    .response_timeout(self.settings.command_timeout)
                    .build()
                    .map_err(|e| unavailable(RedisStoreError::command("cluster client")(e)))?;
                let con = client.get_async_connection().await;
                Writer::Cluster(con.map_err(|e| unavailable(RedisStoreError::command("cluster connect")(e)))?)
            } else {
                let masters = self.target.masters(t).await.map_err(unavailable)?;
                let master = masters.into_iter().next().ok_or_else(|| unavailable(RedisStoreError::NoMaster))?;
                Writer::Node(target::connect_node(&master, t).await.map_err(unavailable)?)
            };
            *slot = Some(w);
        }
        Ok(slot)
    }

    /// Runs one write, reconnecting once if the cached connection has gone away.
    async fn write<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, RevocationError> {
        for attempt in 0..2 {
            let mut guard = self.writer().await?;
            let result: redis::RedisResult<T> = match guard.as_mut() {
                Some(w) => tokio::time::timeout(self.settings.command_timeout, w.query(&cmd))
                    .await
                    .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "command timed out")))),
                None => continue,
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    *guard = None;
                    if attempt == 1 {
                        return Err(RevocationError::Unavailable(Box::new(e)));
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
            let w = jti_write(jti, exp, now)?;
            let mut cmd = redis::cmd("SET");
            cmd.arg(&w.key).arg(w.value).arg("EX").arg(w.ttl_secs);
            self.write::<()>(cmd).await?;
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
            let w = subject_write(iss, sub, before, self.settings.max_token_lifetime)?;
            let now = unix_now();
            let mut cmd = redis::cmd("SET");
            cmd.arg(&w.key).arg(w.value).arg("EX").arg(w.ttl_secs);
            self.write::<()>(cmd).await?;
            self.view.load().insert_subject(iss, sub, before, now + w.ttl_secs, now);
            Ok(())
        })
    }

    /// DEL of the key: Redis's invalidation push takes it out of every sidecar's view (and
    /// a resync after an outage finds it gone); this one's view drops it at once.
    fn unrevoke_jti<'a>(&'a self, jti: &'a str) -> BoxFuture<'a, Result<bool, RevocationError>> {
        Box::pin(async move {
            validate_jti_name(jti)?;
            let mut cmd = redis::cmd("DEL");
            cmd.arg(jti_key(jti));
            let deleted: i64 = self.write(cmd).await?;
            self.view.load().remove_jti(jti);
            Ok(deleted > 0)
        })
    }

    fn unrevoke_subject<'a>(&'a self, iss: &'a str, sub: &'a str) -> BoxFuture<'a, Result<bool, RevocationError>> {
        Box::pin(async move {
            validate_subject(iss, sub)?;
            let mut cmd = redis::cmd("DEL");
            cmd.arg(subject_key(iss, sub));
            let deleted: i64 = self.write(cmd).await?;
            self.view.load().remove_subject(iss, sub);
            Ok(deleted > 0)
        })
    }

    fn list(&self, after: Option<&ListKey>, limit: usize) -> Page {
        self.view.load().page(unix_now(), after, limit)
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

/// What GET said about a key.
#[derive(Debug, Clone, Copy)]
enum Read<'a> {
    Absent,
    Value(&'a [u8]),
    /// The key exists but holds something other than a string.
    WrongType,
}

/// Applies one key's current state (from GET and PTTL) to `view`; returns what was wrong
/// with it, if anything. Everything that names a revocation fails closed.
fn apply(view: &LocalView, key: &[u8], read: Read<'_>, pttl_ms: i64, now: i64) -> Option<BadKey> {
    let Some(parsed) = std::str::from_utf8(key).ok().and_then(parse_key) else { return Some(BadKey::BadKey) };
    let value = match read {
        Read::Absent => {
            match parsed {
                RevokedKey::Jti(jti) => view.remove_jti(jti),
                RevokedKey::Subject { iss, sub } => view.remove_subject(iss, sub),
            };
            return None;
        }
        Read::Value(v) => Some(v),
        Read::WrongType => None,
    };
    // No TTL (-1): the writer forgot EX; keep the entry as long as anything could use it.
    let until = if pttl_ms >= 0 { now + (pttl_ms + 999) / 1000 } else { i64::MAX / 2 };
    match parsed {
        // Existence alone revokes: whatever the value (or type), the token is refused.
        RevokedKey::Jti(jti) => {
            view.insert_jti(jti, until, now);
            value.is_none().then_some(BadKey::WrongType)
        }
        RevokedKey::Subject { iss, sub } => {
            let before = value.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.trim().parse::<i64>().ok());
            // An unreadable time fails closed: every token of the subject is refused.
            view.insert_subject(iss, sub, before.unwrap_or(i64::MAX / 2), until, now);
            match (value, before) {
                (None, _) => Some(BadKey::WrongType),
                (Some(_), None) => Some(BadKey::BadValue),
                _ => None,
            }
        }
    }
}

/// At most one log line about bad keys per this long; the metric counts every one.
const BAD_KEY_LOG_EVERY: Duration = Duration::from_secs(10);

/// The rate limit of the bad-key log line.
#[derive(Default)]
struct BadKeyLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RedisStore {
    /// Counts a key that could not be read as the layout says, and says so in the log at
    /// most once per [`BAD_KEY_LOG_EVERY`].
    fn record_bad_key(&self, reason: BadKey, key: &[u8]) {
        self.metrics.bad_key(reason);
        let mut log = self.bad_key_log.lock().unwrap_or_else(|p| p.into_inner());
        if log.last.is_some_and(|t| t.elapsed() < BAD_KEY_LOG_EVERY) {
            log.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut log.suppressed);
        log.last = Some(Instant::now());
        drop(log);
        // Escaped and cut short: the name is someone else's data.
        let shown: String = key.escape_ascii().to_string().chars().take(160).collect();
        tracing::warn!(
            key = %shown,
            reason = reason.as_str(),
            suppressed,
            "revocation key does not follow the layout; counted in hopauth_revocation_bad_keys_total \
             (wrong_type and bad_value fail closed, bad_key names no token and is skipped)"
        );
    }
}

/// GET and PTTL for `keys` in one round trip, applied to `view`. Each command answers on
/// its own, so one bad key cannot fail the others; only a failure that is not about the
/// data (connection, permissions) fails the batch.
async fn load_keys<C: ConnectionLike + Send>(
    store: &RedisStore,
    con: &mut C,
    keys: &[Vec<u8>],
    view: &LocalView,
) -> redis::RedisResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for k in keys {
        pipe.cmd("GET").arg(k).cmd("PTTL").arg(k);
    }
    let values: Vec<redis::Value> = pipe.query_async(con).await?;
    if values.len() != keys.len() * 2 {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Parse,
            "pipeline answered the wrong number of replies",
        )));
    }
    let now = unix_now();
    for (k, pair) in keys.iter().zip(values.chunks(2)) {
        let read = match &pair[0] {
            redis::Value::Nil => Read::Absent,
            redis::Value::BulkString(b) => Read::Value(b),
            redis::Value::SimpleString(s) => Read::Value(s.as_bytes()),
            redis::Value::ServerError(e) if e.code() == "WRONGTYPE" => Read::WrongType,
            redis::Value::ServerError(e) => return Err(e.clone().into()),
            _ => Read::WrongType,
        };
        let pttl = match &pair[1] {
            redis::Value::Int(n) => *n,
            redis::Value::ServerError(e) => return Err(e.clone().into()),
            _ => -2,
        };
        if let Some(reason) = apply(view, k, read, pttl, now) {
            store.record_bad_key(reason, k);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_values_follow_redis() {
        let view = LocalView::new();
        let id = TokenIdentity { iss: "https://i", sub: Some("alice"), jti: Some("j"), iat: Some(100) };
        let jti = jti_key("j").into_bytes();
        let subject = subject_key("https://i", "alice").into_bytes();
        assert_eq!(apply(&view, &jti, Read::Value(b"1"), 60_000, 1000), None);
        assert_eq!(view.check(&id, 1000), RevocationStatus::Revoked);
        assert_eq!(apply(&view, &jti, Read::Absent, -2, 1000), None);
        assert_eq!(view.check(&id, 1000), RevocationStatus::NotRevoked);
        assert_eq!(apply(&view, &subject, Read::Value(b"150"), 60_000, 1000), None);
        assert_eq!(view.check(&id, 1000), RevocationStatus::Revoked);
        assert_eq!(apply(&view, &subject, Read::Value(b"50"), 60_000, 1000), None);
        assert_eq!(view.check(&id, 1000), RevocationStatus::Revoked, "the widest revocation is kept");
    }

    #[test]
    fn unreadable_keys_fail_closed_or_are_skipped() {
        let id = TokenIdentity { iss: "https://i", sub: Some("alice"), jti: Some("j"), iat: Some(100) };
        let jti = jti_key("j").into_bytes();
        let subject = subject_key("https://i", "alice").into_bytes();
        // A jti value that is not UTF-8 still revokes (it used to read as "absent").
        let view = LocalView::new();
        assert_eq!(apply(&view, &jti, Read::Value(b"\xff\xfe"), 60_000, 1000), None);
        assert_eq!(view.check(&id, 1000), RevocationStatus::Revoked);
        let view = LocalView::new();
        assert_eq!(apply(&view, &jti, Read::WrongType, 60_000, 1000), Some(BadKey::WrongType));
        assert_eq!(view.check(&id, 1000), RevocationStatus::Revoked);
        for (read, reason) in [
            (Read::WrongType, BadKey::WrongType),
            (Read::Value(b"\xff"), BadKey::BadValue),
            (Read::Value(b"soon"), BadKey::BadValue),
        ] {
            let view = LocalView::new();
            assert_eq!(apply(&view, &subject, read, 60_000, 1000), Some(reason));
            assert_eq!(view.check(&TokenIdentity { iat: Some(i64::MAX / 4), ..id }, 1000), RevocationStatus::Revoked);
        }
        let view = LocalView::new();
        for key in [&b"hopauth:revoked:jti:\xff"[..], b"hopauth:revoked:other:x", b"hopauth:revoked:jti:"] {
            assert_eq!(apply(&view, key, Read::Value(b"1"), 60_000, 1000), Some(BadKey::BadKey));
        }
        assert!(view.is_empty());
        for k in [BadKey::WrongType, BadKey::BadKey, BadKey::BadValue] {
            assert_eq!(BadKey::NAMES[k.index()], k.as_str());
        }
    }
}
