//! The Redis backend: every instance keeps a complete local view of the `hopauth:revoked:*`
//! keys, kept current by RESP3 client-side-caching invalidations in broadcast mode
//! (`CLIENT TRACKING ON BCAST PREFIX hopauth:revoked:`), rebuilt by SCAN at start and after
//! every reconnect. The request path reads only the local view; see docs/revocation.md.

mod error;
mod eviction;
mod keys;
mod sync;
mod target;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::MultiplexedConnection;

pub use crate::redis_url::RedisTarget;
pub use error::RedisStoreError;
pub use sync::run;
/// For the fuzz target only (fuzz/fuzz_targets/cluster_nodes.rs): not an API.
#[doc(hidden)]
pub use target::parse_cluster_nodes;

use hopauth_core::clock::unix_now;
pub use hopauth_core::revocation::layout::{jti_key, parse_key, subject_key, BadKey, RevokedKey};
use hopauth_core::revocation::layout::{jti_write, subject_write};
use hopauth_core::revocation::{
    validate_jti_name, validate_subject, BoxFuture, ListKey, LocalView, Page, RevocationError, RevocationStatus,
    RevocationStore, TokenIdentity,
};

use crate::config::RevocationConfig;
use crate::metrics::RevocationMetrics;
use keys::BadKeyLog;

/// Connection settings for the backend.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub max_staleness: Duration,
    pub max_token_lifetime: Duration,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

impl From<&RevocationConfig> for RedisSettings {
    /// The one mapping from the `revocation` section, for `serve` and `revoke` alike.
    fn from(r: &RevocationConfig) -> Self {
        RedisSettings {
            max_staleness: r.max_staleness,
            max_token_lifetime: r.max_token_lifetime,
            connect_timeout: r.connect_timeout,
            command_timeout: r.command_timeout,
        }
    }
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
        let target = RedisTarget::parse(url).map_err(|why| RevocationError::Unavailable(Box::new(why)))?;
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
        let mut last = None;
        for _ in 0..2 {
            let mut guard = self.writer().await?;
            // `writer` has just filled the slot.
            let Some(w) = guard.as_mut() else { continue };
            let result: redis::RedisResult<T> = tokio::time::timeout(self.settings.command_timeout, w.query(&cmd))
                .await
                .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "command timed out"))));
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    *guard = None;
                    last = Some(e);
                }
            }
        }
        let error: Box<dyn std::error::Error + Send + Sync> = match last {
            Some(e) => Box::new(e),
            None => Box::new(RedisStoreError::ConnectionLost),
        };
        Err(RevocationError::Unavailable(error))
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
