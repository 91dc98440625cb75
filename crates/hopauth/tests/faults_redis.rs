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

/// The value of one series in Prometheus text (0 when absent).
fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

async fn wait_for(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let end = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < end, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const ENFORCE_WITHIN: Duration = Duration::from_secs(10);

/// F5: the connection is reset (RST) in the middle of the SCAN of a resync, of an
/// invalidation push, and of the GET/PTTL lookup that follows a push. No revoked token is
/// allowed at any moment; hopauth reconnects and resyncs, and revocations written while the
/// connection was broken (or carried by the push that was cut) are enforced after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_resets_mid_scan_mid_push_and_mid_lookup_never_allow_a_revoked_token() {
    let f = Fixture::start(&[("3s", "deny")]).await;
    let svc = f.svc(0);
    let (valid, _) = token_and_key(&f.keys, "valid");
    let (known, known_key) = token_and_key(&f.keys, "known");
    f.revoke_direct(&known_key);
    let mut seen = BTreeMap::new();
    wait_status(&svc, &known, 401, ENFORCE_WITHIN, "known revocation", &mut seen).await;
    assert_eq!(check_status(&svc, &valid).await, 200);
    let guard = Guard::start(vec![f.svc(0)], valid.clone());
    guard.revoked(&known);

    // 1. Reset now; the reconnect's SCAN is cut too. Revoked meanwhile, behind hopauth's back.
    let (x, x_key) = token_and_key(&f.keys, "x");
    let accepted = f.proxy.accepted();
    f.proxy.arm(Trigger::on(Dir::Up, b"SCAN"));
    let fault = Instant::now();
    f.proxy.reset_all();
    f.revoke_direct(&x_key);
    wait_for("the SCAN to be cut", ENFORCE_WITHIN, || f.proxy.fired() == 1).await;
    wait_status(&svc, &x, 401, ENFORCE_WITHIN, "revocation written while the link was reset", &mut seen).await;
    guard.revoked(&x);
    assert!(f.proxy.accepted() >= accepted + 2, "hopauth reconnected after the cut SCAN");
    eprintln!("F5 reset + mid-SCAN reset: revocation written meanwhile enforced {:?} after the fault", fault.elapsed());

    // 2. The invalidation push that carries a revocation is cut after its first bytes.
    let (y, y_key) = token_and_key(&f.keys, "y");
    assert_eq!(check_status(&svc, &y).await, 200);
    f.proxy.arm(Trigger::on(Dir::Down, b"invalidate").after(6));
    let fault = Instant::now();
    f.revoke_direct(&y_key);
    wait_for("the push to be cut", ENFORCE_WITHIN, || f.proxy.fired() == 2).await;
    wait_status(&svc, &y, 401, ENFORCE_WITHIN, "revocation whose push was cut", &mut seen).await;
    guard.revoked(&y);
    eprintln!("F5 mid-invalidation reset: that revocation enforced {:?} after the write", fault.elapsed());

    // 3. The lookup after a push (GET + PTTL) never reaches Redis: reset mid-lookup.
    let (z, z_key) = token_and_key(&f.keys, "z");
    assert_eq!(check_status(&svc, &z).await, 200);
    f.proxy.arm(Trigger::on(Dir::Up, b"PTTL"));
    let fault = Instant::now();
    f.revoke_direct(&z_key);
    wait_for("the lookup to be cut", ENFORCE_WITHIN, || f.proxy.fired() == 3).await;
    wait_status(&svc, &z, 401, ENFORCE_WITHIN, "revocation whose lookup was cut", &mut seen).await;
    guard.revoked(&z);
    eprintln!("F5 mid-lookup reset: that revocation enforced {:?} after the write", fault.elapsed());

    // 4. Reset in the middle of a reply: the first bytes of the next SCAN reply.
    f.proxy.arm(Trigger::on(Dir::Up, b"SCAN"));
    f.proxy.reset_all();
    wait_for("the second SCAN to be cut", ENFORCE_WITHIN, || f.proxy.fired() == 4).await;
    f.proxy.arm(Trigger::after_bytes(Dir::Down, 3));
    let (w, w_key) = token_and_key(&f.keys, "w");
    f.revoke_direct(&w_key);
    wait_for("a reply to be cut", ENFORCE_WITHIN, || f.proxy.fired() == 5).await;
    wait_status(&svc, &w, 401, ENFORCE_WITHIN, "revocation after a cut reply", &mut seen).await;
    guard.revoked(&w);

    // Every revocation holds once the path is quiet again, and fresh tokens pass.
    wait_status(&svc, &valid, 200, ENFORCE_WITHIN, "recovery", &mut seen).await;
    for t in [&known, &x, &y, &z, &w] {
        assert_eq!(check_status(&svc, t).await, 401);
    }
    assert!(f.instances[0].authorizer.ready());
    let (wrong, checks, valid_seen) = guard.finish().await;
    eprintln!("F5 guard: {checks} checks of revoked tokens, answers to a valid token: {valid_seen:?}");
    assert_eq!(wrong, 0, "a revoked token was allowed during the resets");
    assert!(checks > 0);
    assert!(!valid_seen.contains_key(&401), "a valid token was refused as revoked: {valid_seen:?}");
    // docs/revocation.md: a connection lost and restored within max_staleness (3s) is
    // invisible to clients.
    assert!(
        !valid_seen.contains_key(&503) && !seen.contains_key(&503),
        "resets shorter than max_staleness were visible to clients: valid token {valid_seen:?}, while waiting {seen:?}"
    );
}

/// F5, a resync cut halfway: with a few thousand revocations the resync's SCAN pages and
/// lookups run to ~150 KB; the connection is reset 60 KB in. The half-built view must
/// never replace the complete one (that would un-revoke whatever it had not reached):
/// forty revoked tokens spread over the keyspace stay refused throughout, and the next
/// resync brings in what was written meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_a_resync_cut_halfway_never_replaces_the_complete_view() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &[]);
    let mut mset = vec!["MSET".to_string()];
    for i in 0..3000 {
        mset.push(format!("hopauth:revoked:jti:filler-{i:05}"));
        mset.push("1".into());
    }
    let keys = Keys::generate();
    let revoked: Vec<String> = (0..40)
        .map(|i| {
            let (token, key) = token_and_key(&keys, &format!("revoked-{i}"));
            mset.push(key);
            mset.push("1".into());
            token
        })
        .collect();
    let args: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(redis.cli(&args), "OK");
    let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let hopauth = start_hopauth(&config_yaml(&jwks.url(), "", &redis_yaml(&proxy.redis_url(), "3s", "deny"))).await;
    // In allow mode nothing but the view stands between a revoked token and an allow.
    let lenient = start_hopauth(&config_yaml(&jwks.url(), "", &redis_yaml(&proxy.redis_url(), "3s", "allow"))).await;
    wait_synced(&hopauth).await;
    wait_synced(&lenient).await;
    let svc = AuthorizationService::new(hopauth.authorizer.clone());
    let (valid, _) = token_and_key(&keys, "valid");
    for t in &revoked {
        let r = svc.check_request(&bearer_check(t)).await;
        assert_eq!(r.status.as_ref().map(|s| s.message.as_str()), Some("revoked"), "{r:?}");
    }
    assert_eq!(hopauth.authorizer.revocation().entries().0, 3040);
    assert_eq!(lenient.authorizer.revocation().entries().0, 3040);
    let guard = Guard::start(
        vec![
            AuthorizationService::new(hopauth.authorizer.clone()),
            AuthorizationService::new(lenient.authorizer.clone()),
        ],
        valid.clone(),
    );
    revoked.iter().for_each(|t| guard.revoked(t));

    let (x, x_key) = token_and_key(&keys, "x");
    let fault = Instant::now();
    proxy.reset_all();
    // Armed after the reset: the first bytes it counts are a reconnect's (the first
    // instance to resync is cut; the other resyncs in full).
    proxy.arm(Trigger::after_bytes(Dir::Down, 60_000));
    assert_eq!(redis.cli(&["SET", &x_key, "1", "EX", "300"]), "OK");
    wait_for("the resync to be cut", ENFORCE_WITHIN, || proxy.fired() == 1).await;
    let mut seen = BTreeMap::new();
    wait_status(&svc, &x, 401, ENFORCE_WITHIN, "revocation written before the cut resync", &mut seen).await;
    let took = fault.elapsed();
    let lenient_svc = AuthorizationService::new(lenient.authorizer.clone());
    wait_status(&lenient_svc, &x, 401, ENFORCE_WITHIN, "revocation written before the cut resync (allow)", &mut seen)
        .await;
    // Guarded only once both instances enforce it.
    guard.revoked(&x);
    wait_status(&svc, &valid, 200, ENFORCE_WITHIN, "recovery", &mut seen).await;
    assert_eq!(hopauth.authorizer.revocation().entries().0, 3041, "the complete view is back");
    assert_eq!(lenient.authorizer.revocation().entries().0, 3041);
    let (wrong, checks, valid_seen) = guard.finish().await;
    eprintln!("F5 resync cut at 60 KB: revocation written meanwhile enforced {took:?} after the reset; {checks} checks of revoked tokens; valid token {valid_seen:?}");
    assert_eq!(wrong, 0, "a revoked token was allowed while a resync was cut halfway");
    assert!(!valid_seen.contains_key(&401), "{valid_seen:?}");
}

/// F8, short: the connection goes half-open (nothing forwarded, sockets open) for a third
/// of `max_staleness`. The heartbeat notices; answers continue from the view; a revocation
/// written meanwhile is enforced once the path heals; known revocations hold throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f8_half_open_shorter_than_max_staleness_is_invisible_and_misses_nothing() {
    let max_staleness = Duration::from_secs(4);
    let f = Fixture::start(&[("4s", "deny")]).await;
    let svc = f.svc(0);
    let (valid, _) = token_and_key(&f.keys, "valid");
    let (known, known_key) = token_and_key(&f.keys, "known");
    f.revoke_direct(&known_key);
    let mut seen = BTreeMap::new();
    wait_status(&svc, &known, 401, ENFORCE_WITHIN, "known revocation", &mut seen).await;
    let guard = Guard::start(vec![f.svc(0)], valid.clone());
    guard.revoked(&known);

    let (x, x_key) = token_and_key(&f.keys, "x");
    assert_eq!(check_status(&svc, &x).await, 200);
    let fault = Instant::now();
    f.proxy.set_stalled(true);
    f.revoke_direct(&x_key);
    // The heartbeat (a quarter of max_staleness, plus the command timeout) sees it, and
    // hopauth opens a new connection.
    let accepted = f.proxy.accepted();
    wait_for("the heartbeat to notice the half-open link", max_staleness, || f.proxy.accepted() > accepted).await;
    let detected = fault.elapsed();
    tokio::time::sleep_until(tokio::time::Instant::from_std(fault + max_staleness / 3)).await;
    let healed = Instant::now();
    f.proxy.heal();
    let took = wait_status(&svc, &x, 401, ENFORCE_WITHIN, "revocation written while half-open", &mut seen).await;
    guard.revoked(&x);
    eprintln!(
        "F8 half-open for {:?}: detected after {detected:?}; revocation written meanwhile enforced {took:?} after healing",
        healed - fault
    );
    assert!(detected < max_staleness, "heartbeat detection took {detected:?}");
    wait_status(&svc, &valid, 200, ENFORCE_WITHIN, "valid after heal", &mut seen).await;
    let (wrong, _, valid_seen) = guard.finish().await;
    assert_eq!(wrong, 0, "a revoked token was allowed");
    assert!(!valid_seen.contains_key(&401), "{valid_seen:?}");
    // docs/revocation.md: a loss shorter than max_staleness is invisible to clients.
    assert!(
        !valid_seen.contains_key(&503) && !seen.contains_key(&503),
        "a {:?} half-open link (max_staleness {max_staleness:?}) was visible: valid token {valid_seen:?}",
        healed - fault
    );
}

/// How the path to Redis breaks in the long-outage tests.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// Open connections stall and new ones hang (a network partition).
    Partition,
    /// Every connection is reset and new ones are refused (Redis down, port closed).
    Refused,
}

impl Outage {
    fn apply(self, proxy: &FaultProxy) {
        match self {
            Outage::Partition => proxy.partition(),
            Outage::Refused => {
                proxy.set_refuse(true);
                proxy.reset_all();
            }
        }
    }
}

/// F8, long: a partition (open connections stall, new ones hang) outlasting
/// `max_staleness`. Until then answers continue; past it, deny mode answers 503
/// `revocation_unavailable` and allow mode lets verified tokens through, counted in
/// `hopauth_revocation_fail_open_total`. Known revocations hold in both; a revocation
/// written during the partition is enforced by both once it heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f8_partition_past_max_staleness_applies_failure_mode_and_heals_with_what_was_missed() {
    outage_past_max_staleness(Outage::Partition).await;
}

/// F8, long, Redis refusing connections (the server down): the same contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f8_refused_connections_past_max_staleness_apply_failure_mode() {
    outage_past_max_staleness(Outage::Refused).await;
}

async fn outage_past_max_staleness(outage: Outage) {
    let max_staleness = Duration::from_secs(2);
    let heartbeat = max_staleness / 4;
    let f = Fixture::start(&[("2s", "deny"), ("2s", "allow")]).await;
    let (deny, allow) = (f.svc(0), f.svc(1));
    let (valid, _) = token_and_key(&f.keys, "valid");
    let (known, known_key) = token_and_key(&f.keys, "known");
    f.revoke_direct(&known_key);
    let mut seen = BTreeMap::new();
    wait_status(&deny, &known, 401, ENFORCE_WITHIN, "known revocation (deny)", &mut seen).await;
    wait_status(&allow, &known, 401, ENFORCE_WITHIN, "known revocation (allow)", &mut seen).await;
    let guard = Guard::start(vec![f.svc(0), f.svc(1)], valid.clone());
    guard.revoked(&known);

    let (x, x_key) = token_and_key(&f.keys, "x");
    outage.apply(&f.proxy);
    f.revoke_direct(&x_key);
    let mut before_503 = BTreeMap::new();
    let to_503 =
        wait_status(&deny, &valid, 503, max_staleness * 4, "deny mode past max_staleness", &mut before_503).await;
    let r = deny.check_request(&bearer_check(&valid)).await;
    assert_eq!(r.status.as_ref().map(|s| s.message.as_str()), Some("revocation_unavailable"), "{r:?}");
    let Some(HttpResponse::DeniedResponse(d)) = r.http_response else { panic!("{r:?}") };
    let body: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    // The allow instance's last confirmation may be up to a heartbeat later than the other's.
    let end = Instant::now() + max_staleness * 2;
    while f.metric(1, "hopauth_revocation_fail_open_total") == 0.0 {
        assert_eq!(check_status(&allow, &valid).await, 200, "allow mode lets verified tokens through");
        assert!(Instant::now() < end, "allow-mode passes past max_staleness are not counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(f.metric(0, "hopauth_revocation_fail_open_total"), 0.0);
    for svc in [&deny, &allow] {
        assert_eq!(check_status(svc, &known).await, 401, "a known revocation holds past max_staleness");
    }
    assert!(!f.instances[0].authorizer.ready());
    let allow_ready_when_stale = f.instances[1].authorizer.ready();

    let healed = Instant::now();
    f.proxy.heal();
    wait_status(&deny, &x, 401, ENFORCE_WITHIN, "missed revocation (deny)", &mut seen).await;
    let enforce_deny = healed.elapsed();
    wait_status(&allow, &x, 401, ENFORCE_WITHIN, "missed revocation (allow)", &mut seen).await;
    let enforce_allow = healed.elapsed();
    guard.revoked(&x);
    wait_status(&deny, &valid, 200, ENFORCE_WITHIN, "deny mode recovers", &mut seen).await;
    let valid_again = healed.elapsed();
    eprintln!(
        "F8 {outage:?}: first 503 {to_503:?} after the fault (max_staleness {max_staleness:?}); after healing: \
         missed revocation enforced within {enforce_deny:?} (deny) / {enforce_allow:?} (allow), \
         valid allowed again within {valid_again:?}"
    );
    let (wrong, checks, valid_seen) = guard.finish().await;
    eprintln!("F8 {outage:?} guard: {checks} checks of revoked tokens; valid token answers {valid_seen:?}");
    assert_eq!(wrong, 0, "a revoked token was allowed during the partition");
    assert!(!valid_seen.contains_key(&401) && !before_503.contains_key(&401), "{valid_seen:?}");
    assert!(to_503 < max_staleness + Duration::from_secs(3), "failure_mode applied only after {to_503:?}");
    // docs/configuration.md (readiness): with failure_mode allow, a stale store never
    // makes hopauth unready.
    assert!(allow_ready_when_stale, "allow mode went unready when the store went stale");
    // docs/revocation.md: answers continue from the view for max_staleness after the last
    // confirmation, which is about one heartbeat before the fault (300 ms of slack for a
    // late tick on a loaded machine).
    assert!(
        to_503 + heartbeat + Duration::from_millis(300) >= max_staleness,
        "503 after {to_503:?}, before max_staleness {max_staleness:?} had passed"
    );
}
