//! The sync loop: connect to every master, turn on broadcast tracking for the key prefix,
//! SCAN everything into a fresh view, then apply invalidation pushes as they come and
//! confirm freshness with a heartbeat. Any error ends the session; the loop reconnects with
//! backoff and resyncs, so nothing written while disconnected is missed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{PushKind, Value};
use tokio::sync::mpsc;

use super::{load_keys, target::RedisTarget, RedisStore, RedisStoreError, KEY_PREFIX};
use hopauth_core::revocation::LocalView;

/// First reconnect delay: short, since most outages are a restart; doubles per failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest reconnect delay, whatever `max_staleness` is.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Keys per SCAN call.
const SCAN_COUNT: usize = 1000;

/// The reconnect delay stops growing here: a quarter of `max_staleness` (so several
/// attempts fit before the view goes stale), within `FIRST_BACKOFF..=MAX_BACKOFF`.
pub(super) fn backoff_cap(max_staleness: Duration) -> Duration {
    (max_staleness / 4).clamp(FIRST_BACKOFF, MAX_BACKOFF)
}

/// Reconnect delay after `failures` in a row, ±20 % jitter (`jitter` in [0, 1)).
pub(super) fn backoff(failures: u32, jitter: f64, max_staleness: Duration) -> Duration {
    let base = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(10)).min(backoff_cap(max_staleness));
    base.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

/// How often freshness is confirmed: a quarter of the staleness budget, 50 ms to 1 s.
pub(super) fn heartbeat(max_staleness: Duration) -> Duration {
    (max_staleness / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Runs until the task is dropped.
pub async fn run(store: Arc<RedisStore>) {
    let mut failures = 0u32;
    let mut was_up = None;
    loop {
        let error = session(&store, &mut failures, &mut was_up).await;
        // The view stays: it answers until `max_staleness` after its last confirmation
        // (`RedisStore::fresh`), so a short outage is invisible.
        store.metrics.connected(false);
        store.metrics.synced(false);
        failures = failures.saturating_add(1);
        if was_up != Some(false) {
            tracing::warn!(%error, max_staleness = ?store.settings.max_staleness,
                "revocation store unreachable; reconnecting (the local view answers for max_staleness after its \
                 last confirmation, revocations already known stay enforced)");
            was_up = Some(false);
        } else {
            tracing::debug!(%error, "revocation store still unreachable");
        }
        tokio::time::sleep(backoff(failures, rand::random(), store.settings.max_staleness)).await;
    }
}

/// One connected session; returns the error that ended it.
async fn session(store: &RedisStore, failures: &mut u32, was_up: &mut Option<bool>) -> RedisStoreError {
    let t = store.settings.connect_timeout;
    let masters = match store.target.masters(t).await {
        Ok(m) => m,
        Err(e) => return e,
    };
    // In a cluster, the master set this session tracks; a change ends the session.
    let addrs: Vec<String> = masters.iter().map(|m| m.addr().to_string()).collect();
    let mut tracked = addrs.clone();
    tracked.sort();
    let (tx, mut pushes) = mpsc::unbounded_channel();
    let mut conns: Vec<MultiplexedConnection> = Vec::with_capacity(masters.len());
    for info in &masters {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(store.settings.command_timeout))
            .set_push_sender(tx.clone());
        let client = match redis::Client::open(info.clone()) {
            Ok(c) => c,
            Err(e) => return RedisStoreError::node(info.addr(), "client")(e),
        };
        let mut con = match client.get_multiplexed_async_connection_with_config(&config).await {
            Ok(c) => c,
            Err(e) => return RedisStoreError::node(info.addr(), "connect")(e),
        };
        let tracking: redis::RedisResult<()> = redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(KEY_PREFIX)
            .query_async(&mut con)
            .await;
        if let Err(e) = tracking {
            return RedisStoreError::node(info.addr(), "CLIENT TRACKING")(e);
        }
        conns.push(con);
    }
    drop(tx);
    // Keyed reads after an invalidation: the node itself, or the cluster router.
    let mut keyed = match KeyedReader::new(store, &conns).await {
        Ok(k) => k,
        Err(e) => return e,
    };
    if let Err(e) = resync(store, &mut conns, &addrs).await {
        return e;
    }
    *failures = 0;
    if *was_up != Some(true) {
        let (jtis, subjects) = store.view.load().len();
        tracing::info!(masters = conns.len(), jtis, subjects, "revocation store synced");
        *was_up = Some(true);
    }
    let mut tick = tokio::time::interval(heartbeat(store.settings.max_staleness));
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else { return RedisStoreError::ConnectionLost };
                store.metrics.push_message();
                match push.kind {
                    PushKind::Invalidate => match push.data.first() {
                        Some(Value::Array(keys)) => {
                            // Names as bytes: one that is not UTF-8 is counted, not fatal.
                            let keys: Vec<Vec<u8>> = keys
                                .iter()
                                .filter_map(|k| match k {
                                    Value::BulkString(b) => Some(b.clone()),
                                    Value::SimpleString(s) => Some(s.clone().into_bytes()),
                                    _ => None,
                                })
                                .collect();
                            if let Err(e) = keyed.load(store, &keys, &store.view.load()).await {
                                return e;
                            }
                        }
                        // A null invalidation means FLUSHALL/FLUSHDB: start over.
                        _ => {
                            if let Err(e) = resync(store, &mut conns, &addrs).await {
                                return e;
                            }
                        }
                    },
                    PushKind::Disconnection => return RedisStoreError::ConnectionLost,
                    _ => {}
                }
            }
            _ = tick.tick() => {
                let sent = Instant::now();
                for (con, addr) in conns.iter_mut().zip(&addrs) {
                    let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(con).await;
                    if let Err(e) = pong {
                        return RedisStoreError::node(addr, "heartbeat PING")(e);
                    }
                }
                if let RedisTarget::Sentinel { .. } = &store.target {
                    // The sentinels may have moved the master while our connection stayed up
                    // (a demoted or partitioned old master): follow them.
                    match store.target.masters(store.settings.connect_timeout).await {
                        Ok(now) => {
                            let now: Vec<String> = now.iter().map(|m| m.addr().to_string()).collect();
                            if now != tracked {
                                return RedisStoreError::MastersChanged { was: tracked, now };
                            }
                        }
                        Err(e) => return e,
                    }
                }
                if store.target.is_cluster() {
                    // A failover can promote a replica without breaking any connection we hold.
                    match super::target::cluster_master_set(&mut conns[0]).await {
                        Ok(now) => {
                            let mut now: Vec<String> = now.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                            now.sort();
                            if now != tracked {
                                return RedisStoreError::MastersChanged { was: tracked, now };
                            }
                        }
                        Err(e) => return e,
                    }
                }
                store.mark_confirmed(sent);
            }
        }
    }
}

/// SCANs every master into a fresh view and installs it, so keys deleted while
/// disconnected are gone too.
async fn resync(
    store: &RedisStore,
    conns: &mut [MultiplexedConnection],
    addrs: &[String],
) -> Result<(), RedisStoreError> {
    // Tracking is already on, so anything written after this moment arrives as a push.
    let started = Instant::now();
    super::eviction::check(store, conns, addrs).await;
    let view = LocalView::new();
    let pattern = format!("{KEY_PREFIX}*");
    for (con, addr) in conns.iter_mut().zip(addrs) {
        let mut cursor: u64 = 0;
        loop {
            // Names as bytes: one that is not UTF-8 must not fail the whole scan.
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(con)
                .await
                .map_err(RedisStoreError::node(addr, "SCAN"))?;
            load_keys(store, con, &keys, &view).await.map_err(RedisStoreError::node(addr, "GET/PTTL"))?;
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    store.view.store(Arc::new(view));
    store.mark_confirmed(started);
    store.synced.store(true, Ordering::Release);
    store.metrics.connected(true);
    store.metrics.store_up(true);
    store.metrics.synced(true);
    Ok(())
}

enum KeyedReader {
    Node(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl KeyedReader {
    async fn new(store: &RedisStore, conns: &[MultiplexedConnection]) -> Result<Self, RedisStoreError> {
        match &store.target {
            RedisTarget::Cluster { seeds } => {
                let client = redis::cluster::ClusterClient::builder(seeds.clone())
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .connection_timeout(store.settings.connect_timeout)
                    .response_timeout(store.settings.command_timeout)
                    .build()
                    .map_err(RedisStoreError::command("cluster client"))?;
                Ok(KeyedReader::Cluster(
                    client.get_async_connection().await.map_err(RedisStoreError::command("cluster connect"))?,
                ))
            }
            _ => Ok(KeyedReader::Node(conns.first().cloned().ok_or(RedisStoreError::ConnectionLost)?)),
        }
    }

    async fn load(&mut self, store: &RedisStore, keys: &[Vec<u8>], view: &LocalView) -> Result<(), RedisStoreError> {
        let what = "reading invalidated keys";
        match self {
            KeyedReader::Node(c) => load_keys(store, c, keys, view).await.map_err(RedisStoreError::command(what)),
            // Keys may live on different shards: one at a time through the router.
            KeyedReader::Cluster(c) => {
                for k in keys {
                    load_keys(store, c, std::slice::from_ref(k), view).await.map_err(RedisStoreError::command(what))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let staleness = Duration::from_secs(5);
        assert_eq!(backoff(1, 0.5, staleness), Duration::from_millis(50));
        assert_eq!(backoff(2, 0.5, staleness), Duration::from_millis(100));
        assert!(backoff(3, 0.0, staleness) >= Duration::from_millis(160));
        assert!(backoff(3, 0.99, staleness) <= Duration::from_millis(240));
        // A quarter of max_staleness, so reconnect attempts happen well within it.
        assert_eq!(backoff(20, 0.5, staleness), Duration::from_millis(1250));
        assert_eq!(backoff(20, 0.5, Duration::from_secs(600)), MAX_BACKOFF);
        assert_eq!(backoff(20, 0.5, Duration::from_millis(200)), FIRST_BACKOFF);
    }

    #[test]
    fn heartbeat_fits_the_staleness_budget() {
        assert_eq!(heartbeat(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(heartbeat(Duration::from_millis(400)), Duration::from_millis(100));
        assert_eq!(heartbeat(Duration::from_millis(10)), Duration::from_millis(50));
    }
}
