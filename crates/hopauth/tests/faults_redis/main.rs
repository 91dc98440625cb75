//! Redis faults (docs/security.md F5, F8) injected by the fault proxy between hopauth and a
//! real `redis-server`: connection resets in the middle of a SCAN, of an invalidation push
//! and of a key lookup; a half-open connection shorter than `max_staleness`; a partition
//! longer than it, in deny and allow mode. In every case a guard task checks, all along,
//! every token known to be revoked: not one may be allowed. Each test prints how long the
//! fault took to show (first 503) and how long after healing answers were right again.

use hopauth_testkit as support;
use hopauth_testkit::fault_proxy;
use hopauth_testkit::redis_server;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use fault_proxy::{Dir, FaultProxy, Trigger};
use hopauth::grpc::AuthorizationService;
use hopauth::server::Running;
use redis_server::{free_port, RedisServer};
use serde_json::Value;
use support::*;

/// Short client timeouts so faults are noticed quickly; `max_staleness` per test. No load
/// shedding: a loaded test machine can stall a Check past `max_queue_delay`, and its 503
/// `overloaded` would pass for the revocation store's (shedding is tests/faults_load.rs').
fn redis_yaml(url: &str, max_staleness: &str, mode: &str) -> String {
    format!(
        "max_queue_delay: 10s\nrevocation:\n  backend: redis\n  redis_url: \"{url}\"\n  max_staleness: {max_staleness}\n  \
         failure_mode: {mode}\n  connect_timeout: 300ms\n  command_timeout: 300ms\n"
    )
}

/// Polls until `token` gets `want`; the time it took. Every other answer seen on the way
/// is counted in `seen`.
async fn wait_status(
    svc: &AuthorizationService,
    token: &str,
    want: i32,
    within: Duration,
    what: &str,
    seen: &mut BTreeMap<i32, u32>,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = check_status(svc, token).await;
        if got == want {
            return start.elapsed();
        }
        *seen.entry(got).or_default() += 1;
        assert!(start.elapsed() < within, "{what}: still {got} after {within:?}, want {want}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A token of `sub` and the Redis key that revokes it.
fn token_and_key(keys: &Keys, sub: &str) -> (String, String) {
    let c = claims(sub);
    let key = format!("hopauth:revoked:jti:{}", c["jti"].as_str().unwrap());
    (keys.es.sign_jwt(&c).unwrap(), key)
}

/// Checks every token declared revoked, over and over, until stopped; also one valid
/// token, whose answers it tallies. A revoked token allowed even once is a wrong allow.
struct Guard {
    revoked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    wrong_allows: Arc<AtomicU64>,
    checks: Arc<AtomicU64>,
    valid_seen: Arc<Mutex<BTreeMap<i32, u32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Guard {
    fn start(svcs: Vec<AuthorizationService>, valid: String) -> Guard {
        let revoked = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let wrong_allows = Arc::new(AtomicU64::new(0));
        let checks = Arc::new(AtomicU64::new(0));
        let valid_seen = Arc::new(Mutex::new(BTreeMap::new()));
        let task = {
            let (revoked, stop, wrong, checks, seen) =
                (revoked.clone(), stop.clone(), wrong_allows.clone(), checks.clone(), valid_seen.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let tokens = revoked.lock().unwrap().clone();
                    for svc in &svcs {
                        for t in &tokens {
                            if check_status(svc, t).await == 200 {
                                wrong.fetch_add(1, Ordering::SeqCst);
                            }
                            checks.fetch_add(1, Ordering::SeqCst);
                        }
                        let s = check_status(svc, &valid).await;
                        *seen.lock().unwrap().entry(s).or_default() += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            })
        };
        Guard { revoked, stop, wrong_allows, checks, valid_seen, task }
    }

    /// From now on `token` must never be allowed.
    fn revoked(&self, token: &str) {
        self.revoked.lock().unwrap().push(token.to_string());
    }

    /// Stops the guard: (wrong allows, checks of revoked tokens, answers to the valid token).
    async fn finish(self) -> (u64, u64, BTreeMap<i32, u32>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        let seen = self.valid_seen.lock().unwrap().clone();
        (self.wrong_allows.load(Ordering::SeqCst), self.checks.load(Ordering::SeqCst), seen)
    }
}

/// Ready, and the revocation store synced (in allow mode hopauth is ready without it).
async fn wait_synced(r: &Running) {
    wait_ready(r).await;
    let store = r.authorizer.revocation().clone();
    wait_for("the revocation store to sync", ENFORCE_WITHIN, || store.ready()).await;
}

struct Fixture {
    _dir: tempfile::TempDir,
    redis: RedisServer,
    proxy: FaultProxy,
    keys: Keys,
    _jwks: JwksServer,
    instances: Vec<Running>,
}

impl Fixture {
    /// A real Redis behind the proxy, and one hopauth per `(max_staleness, failure_mode)`
    /// connected through the proxy; returns once every instance is ready.
    async fn start(instances: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let redis = RedisServer::start(dir.path(), free_port(), &[]);
        let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port).into()).await;
        let keys = Keys::generate();
        let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
        let mut running = Vec::new();
        for (staleness, mode) in instances {
            let r =
                start_hopauth(&config_yaml(&jwks.url(), "", &redis_yaml(&proxy.redis_url(), staleness, mode))).await;
            wait_synced(&r).await;
            running.push(r);
        }
        Fixture { _dir: dir, redis, proxy, keys, _jwks: jwks, instances: running }
    }

    fn svc(&self, i: usize) -> AuthorizationService {
        AuthorizationService::new(self.instances[i].authorizer.clone())
    }

    /// Writes a revocation straight into Redis (not through the proxy): any writer.
    fn revoke_direct(&self, key: &str) {
        assert_eq!(self.redis.cli(&["SET", key, "1", "EX", "300"]), "OK");
    }

    fn metric(&self, i: usize, name: &str) -> f64 {
        metric_value(&self.instances[i].metrics.render(), name)
    }
}

async fn wait_for(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let end = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < end, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const ENFORCE_WITHIN: Duration = Duration::from_secs(10);

mod partitions;
mod resets;
