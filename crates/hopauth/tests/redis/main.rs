//! The Redis revocation backend against real `redis-server` processes: one behaviour suite
//! for memory and Redis, outages (deny and allow), a revocation written while hopauth was
//! disconnected, two instances on one Redis, a 3-master Cluster and a Sentinel failover.
//! (Redis writes and outages seen through Envoy, in both modes: envoy_e2e/redis.rs.)

use hopauth_testkit as support;
use hopauth_testkit::redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hopauth::grpc::AuthorizationService;
use hopauth::metrics::Metrics;
use hopauth::revocation::redis::{RedisSettings, RedisStore};
use hopauth_core::revocation::{MemoryStore, RevocationStatus, RevocationStore, TokenIdentity};
use redis_server::{cli, free_port, RedisServer, Sentinel};
use serde_json::json;
use support::*;

fn settings(max_staleness: Duration) -> RedisSettings {
    RedisSettings {
        max_staleness,
        max_token_lifetime: Duration::from_secs(3600),
        connect_timeout: Duration::from_millis(500),
        // Generous: on a loaded machine a slow PING must not end a session the test counts.
        command_timeout: Duration::from_secs(2),
    }
}

fn redis_yaml(url: &str, max_staleness: &str, mode: &str) -> String {
    format!("revocation:\n  backend: redis\n  redis_url: \"{url}\"\n  max_staleness: {max_staleness}\n  failure_mode: {mode}\n")
}

/// The same behaviour from every backend.
async fn behaviour_suite(store: &dyn RevocationStore) {
    let now = now();
    let id = |jti: &'static str, sub: &'static str, iat: i64| TokenIdentity {
        iss: ISSUER,
        sub: Some(sub),
        jti: Some(jti),
        iat: Some(iat),
    };
    assert_eq!(store.check(&id("a", "u1", now)), RevocationStatus::NotRevoked);
    store.revoke_jti("a", now + 60).await.unwrap();
    assert_eq!(store.check(&id("a", "u1", now)), RevocationStatus::Revoked);
    assert_eq!(store.check(&id("b", "u1", now)), RevocationStatus::NotRevoked);
    assert!(store.revoke_jti("old", now - 1).await.is_err(), "an expired token needs no revocation");
    store.revoke_subject(ISSUER, "u2", now - 10).await.unwrap();
    assert_eq!(store.check(&id("c", "u2", now - 20)), RevocationStatus::Revoked);
    assert_eq!(store.check(&id("d", "u2", now - 10)), RevocationStatus::Revoked, "at or before");
    assert_eq!(store.check(&id("e", "u2", now)), RevocationStatus::NotRevoked);
    assert!(store.revoke_subject("", "u2", now).await.is_err());
    assert_eq!(store.entries(), (1, 1));
}

async fn redis_store(url: &str, staleness: Duration) -> Arc<RedisStore> {
    redis_store_with(url, staleness, Metrics::standalone()).await
}

async fn redis_store_with(url: &str, staleness: Duration, metrics: Metrics) -> Arc<RedisStore> {
    let store = Arc::new(RedisStore::new(url, settings(staleness), metrics.revocation().clone()).unwrap());
    tokio::spawn(store.start());
    let s = store.clone();
    wait_until("redis store synced", Duration::from_secs(10), || {
        let s = s.clone();
        async move { s.ready() }
    })
    .await;
    store
}

async fn wait_status(svc: &AuthorizationService, token: &str, want: i32, what: &str) -> Duration {
    let start = Instant::now();
    let end = start + Duration::from_secs(10);
    loop {
        let got = check_status(svc, token).await;
        if got == want {
            return start.elapsed();
        }
        assert!(Instant::now() < end, "{what}: still {got} after 10s, want {want}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A raw command with binary arguments, which `redis-cli` argv cannot carry.
fn raw(port: u16, args: &[&[u8]]) -> redis::Value {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap().get_connection().unwrap();
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut con).unwrap()
}

fn jti_revoked(store: &RedisStore, jti: &str) -> bool {
    store.check(&TokenIdentity { iss: ISSUER, sub: None, jti: Some(jti), iat: Some(now()) })
        == RevocationStatus::Revoked
}

fn subject_revoked(store: &RedisStore, sub: &str) -> bool {
    store.check(&TokenIdentity { iss: ISSUER, sub: Some(sub), jti: Some("unrelated"), iat: Some(now()) })
        == RevocationStatus::Revoked
}

/// How Redis goes away in an outage test.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// SIGKILL: a crash.
    Kill,
    /// `SHUTDOWN`: a clean stop, as in a rolling restart.
    Stop,
}

impl Outage {
    fn apply(self, redis: &mut RedisServer) {
        match self {
            Outage::Kill => redis.kill(),
            Outage::Stop => redis.stop(),
        }
    }
}

/// Writes `key` into the data of the stopped `redis` through another process on the same
/// directory, so the write is there when `redis` starts again but hopauth cannot have seen it.
fn write_while_down(redis: &RedisServer, key: &str) {
    let side = RedisServer::start(&redis.dir, free_port(), &[]);
    assert_eq!(side.cli(&["SET", key, "1", "EX", "300"]), "OK");
    assert_eq!(side.cli(&["SHUTDOWN"]), "");
}

/// Checks one token and reads `/readyz` in a loop until stopped; counts every answer.
struct Watch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(std::collections::BTreeMap<i32, u64>, u64)>,
}

impl Watch {
    fn start(running: &hopauth::server::Running, token: String) -> Watch {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let svc = AuthorizationService::new(running.authorizer.clone());
        let readyz = format!("http://{}/readyz", running.http_addr);
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut answers, mut not_ready) = (std::collections::BTreeMap::new(), 0);
            let http = reqwest::Client::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                *answers.entry(check_status(&svc, &token).await).or_insert(0) += 1;
                if http.get(&readyz).send().await.unwrap().status() != 200 {
                    not_ready += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (answers, not_ready)
        });
        Watch { stop, task }
    }

    async fn finish(self) -> (std::collections::BTreeMap<i32, u64>, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

mod basics;
mod garbage;
mod outages;
mod topologies;
