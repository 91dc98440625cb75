//! The Redis revocation backend against real `redis-server` processes: one behaviour suite
//! for memory and Redis, plain `redis-cli SET` writes reaching Envoy, outages (deny and
//! allow), a revocation written while hopauth was disconnected, two instances on one
//! Redis, a 3-master Cluster and a Sentinel failover.

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

#[tokio::test]
async fn behaviour_is_the_same_for_memory_and_redis() {
    behaviour_suite(&MemoryStore::new(Duration::from_secs(3600))).await;
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &[]);
    let store = redis_store(&redis.url(), Duration::from_secs(2)).await;
    behaviour_suite(store.as_ref()).await;
    // The writes used the documented layout, with a TTL.
    assert_eq!(redis.cli(&["GET", "hopauth:revoked:jti:a"]), "1");
    let ttl: i64 = redis.cli(&["TTL", "hopauth:revoked:jti:a"]).parse().unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");
    assert!(!redis.cli(&["GET", &format!("hopauth:revoked:sub:{ISSUER}|u2")]).is_empty());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_redis_cli_set_reaches_envoy_without_a_redis_hop_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &[]);
    let s = Stack::start_with("", &redis_yaml(&redis.url(), "2s", "deny")).await;
    let c = claims("alice");
    let token = s.keys.es.sign_jwt(&c).unwrap();
    assert_eq!(s.get_with_token("/x", &token).await.status, 200);

    // Steady state: Checks send no command to Redis.
    let calls = |stats: &str| -> u64 {
        stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_get:"))
            .find_map(|l| l.split(&[':', ',', '='][..]).nth(2).and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    };
    let gets_before = calls(&redis.cli(&["INFO", "commandstats"]));
    for _ in 0..50 {
        assert_eq!(s.get_with_token("/x", &token).await.status, 200);
    }
    assert_eq!(calls(&redis.cli(&["INFO", "commandstats"])), gets_before, "a Check read Redis");

    // Any writer, no publish: SET with EX.
    let key = format!("hopauth:revoked:jti:{}", c["jti"].as_str().unwrap());
    let start = Instant::now();
    assert_eq!(redis.cli(&["SET", &key, "1", "EX", "300"]), "OK");
    let end = start + Duration::from_secs(5);
    loop {
        let r = s.get_with_token("/x", &token).await;
        if r.status == 401 {
            assert_eq!(r.body["error_description"], "token has been revoked");
            break;
        }
        assert!(Instant::now() < end, "revocation not enforced through Envoy after 5s");
    }
    eprintln!("redis-cli SET -> Envoy 401 in {:?}", start.elapsed());

    // The admin API writes through Redis too.
    let c2 = claims("bob");
    let t2 = s.keys.es.sign_jwt(&c2).unwrap();
    assert_eq!(s.get_with_token("/x", &t2).await.status, 200);
    let resp = s.admin_revoke(json!({"jti": c2["jti"], "exp": c2["exp"]})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(s.get_with_token("/x", &t2).await.status, 401);
    assert_eq!(redis.cli(&["EXISTS", &format!("hopauth:revoked:jti:{}", c2["jti"].as_str().unwrap())]), "1");
    // Deleting the key un-revokes.
    redis.cli(&["DEL", &key]);
    let end = Instant::now() + Duration::from_secs(5);
    while s.get_with_token("/x", &token).await.status != 200 {
        assert!(Instant::now() < end, "DEL not picked up");
    }
}

/// An outage longer than `max_staleness`: deny mode answers 503, allow mode lets verified
/// tokens through and counts them, known revocations hold; on return what was written
/// meanwhile is enforced. Prints the time to 503 and to recovery.
async fn outage_past_max_staleness(outage: Outage) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut redis = RedisServer::start(dir.path(), port, &[]);
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let deny = start_hopauth(&config_yaml(&jwks.url(), "", &redis_yaml(&redis.url(), "500ms", "deny"))).await;
    let allow = start_hopauth(&config_yaml(&jwks.url(), "", &redis_yaml(&redis.url(), "500ms", "allow"))).await;
    wait_ready(&deny).await;
    wait_ready(&allow).await;
    let (deny_svc, allow_svc) =
        (AuthorizationService::new(deny.authorizer.clone()), AuthorizationService::new(allow.authorizer.clone()));
    let c = claims("alice");
    let token = keys.es.sign_jwt(&c).unwrap();
    let known = claims("known");
    let known_token = keys.es.sign_jwt(&known).unwrap();
    redis.cli(&["SET", &format!("hopauth:revoked:jti:{}", known["jti"].as_str().unwrap()), "1", "EX", "300"]);
    // Both instances must hold it before the outage: each learns it on its own connection.
    wait_status(&deny_svc, &known_token, 401, "known revocation").await;
    wait_status(&allow_svc, &known_token, 401, "known revocation (allow)").await;
    assert_eq!(check_status(&deny_svc, &token).await, 200);

    outage.apply(&mut redis);
    let to_503 = wait_status(&deny_svc, &token, 503, "deny mode after max_staleness").await;
    // Each instance goes stale on its own clock (its last heartbeat), so wait for this one.
    let fail_open = allow.metrics.checks().clone();
    wait_until("allow mode counts a fail-open", Duration::from_secs(10), || {
        let (svc, token, fail_open) = (&allow_svc, &token, fail_open.clone());
        async move { check_status(svc, token).await == 200 && fail_open.fail_opens() > 0 }
    })
    .await;
    assert_eq!(check_status(&deny_svc, &known_token).await, 401, "a known revocation holds during the outage");
    assert_eq!(check_status(&allow_svc, &known_token).await, 401, "even in allow mode");
    assert!(!deny.authorizer.ready());

    // Written while hopauth is disconnected: another process on the same data.
    write_while_down(&redis, &format!("hopauth:revoked:jti:{}", c["jti"].as_str().unwrap()));
    redis.start_again();
    let back = Instant::now();
    wait_status(&deny_svc, &token, 401, "revocation written while disconnected").await;
    wait_status(&allow_svc, &token, 401, "revocation written while disconnected (allow)").await;
    let fresh = keys.es.sign_jwt(&claims("fresh")).unwrap();
    wait_status(&deny_svc, &fresh, 200, "recovery").await;
    let recovered = back.elapsed();
    eprintln!(
        "{outage:?} past max_staleness 500ms: 503 after {to_503:?}; 200 again {recovered:?} after Redis returned"
    );
    assert!(deny.authorizer.ready());
    let m = deny.metrics.render();
    assert!(m.contains("hopauth_revocation_syncs_total{result=\"success\"}"), "{m}");
    assert_eq!(metric(&m, "hopauth_revocation_store_connected"), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_past_max_staleness_follows_the_failure_mode_and_recovers_with_what_was_missed() {
    outage_past_max_staleness(Outage::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_past_max_staleness_follows_the_failure_mode_and_recovers_with_what_was_missed() {
    outage_past_max_staleness(Outage::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_both_enforce() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &[]);
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let yaml = config_yaml(&jwks.url(), "", &redis_yaml(&redis.url(), "2s", "deny"));
    let (a, b) = (start_hopauth(&yaml).await, start_hopauth(&yaml).await);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let (sa, sb) = (AuthorizationService::new(a.authorizer.clone()), AuthorizationService::new(b.authorizer.clone()));
    let c = claims("alice");
    let token = keys.es.sign_jwt(&c).unwrap();
    assert_eq!((check_status(&sa, &token).await, check_status(&sb, &token).await), (200, 200));
    // Revoked through instance A's admin API: instance B hears it from Redis.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/admin/revoke", a.http_addr))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"iss": ISSUER, "sub": "alice", "before": now()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(check_status(&sa, &token).await, 401);
    let took = wait_status(&sb, &token, 401, "instance B").await;
    eprintln!("admin revoke on A -> enforced on B in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_revocations_on_every_shard_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _nodes: Vec<RedisServer> = ports
        .iter()
        .map(|p| {
            let conf = format!("nodes-{p}.conf");
            RedisServer::start(dir.path(), *p, &["--cluster-enabled", "yes", "--cluster-config-file", &conf])
        })
        .collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(addrs.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    cli(ports[0], &args);
    wait_until("cluster ok", Duration::from_secs(20), || async {
        ports.iter().all(|p| cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    })
    .await;

    // Garbage on a shard: neither the scan nor a routed invalidation read may stop on it.
    cli(ports[0], &["-c", "HSET", "hopauth:revoked:jti:cluster-wrongtype", "a", "b"]);
    let store = redis_store(&format!("redis+cluster://{}", addrs.join(",")), Duration::from_secs(2)).await;
    cli(ports[0], &["-c", "HSET", "hopauth:revoked:jti:cluster-live-wrongtype", "a", "b"]);
    let now = now();
    let mut jtis: Vec<String> = (0..30).map(|i| format!("cluster-{i}")).collect();
    jtis.extend(["cluster-wrongtype".to_string(), "cluster-live-wrongtype".to_string()]);
    for j in &jtis[..30] {
        assert_eq!(cli(ports[0], &["-c", "SET", &format!("hopauth:revoked:jti:{j}"), "1", "EX", "300"]), "OK");
    }
    let owners: std::collections::HashSet<String> =
        jtis.iter().map(|j| cli(ports[0], &["CLUSTER", "KEYSLOT", &format!("hopauth:revoked:jti:{j}")])).collect();
    assert!(owners.len() > 3, "keys spread over slots");
    let s = store.clone();
    let jt = jtis.clone();
    wait_until("every shard's revocation", Duration::from_secs(10), || {
        let (s, jt) = (s.clone(), jt.clone());
        async move {
            jt.iter().all(|j| {
                s.check(&TokenIdentity { iss: ISSUER, sub: None, jti: Some(j), iat: Some(now) })
                    == RevocationStatus::Revoked
            })
        }
    })
    .await;
    // Writes through the backend land in the cluster.
    store.revoke_jti("via-store", now + 60).await.unwrap();
    assert_eq!(cli(ports[0], &["-c", "GET", "hopauth:revoked:jti:via-store"]), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let (mp, rp) = (free_port(), free_port());
    let _master = RedisServer::start(&dir.path().join("m"), mp, &[]);
    let mp_s = mp.to_string();
    let _replica = RedisServer::start(&dir.path().join("r"), rp, &["--replicaof", "127.0.0.1", &mp_s]);
    let sentinel = Sentinel::start(dir.path(), mp, 1);
    let sp = sentinel.port;
    wait_until("replica in sync", Duration::from_secs(20), || async {
        cli(rp, &["INFO", "replication"]).contains("master_link_status:up")
    })
    .await;
    wait_until("sentinel sees master", Duration::from_secs(20), || async {
        cli(sp, &["SENTINEL", "get-master-addr-by-name", "mymaster"]).contains(&mp.to_string())
    })
    .await;

    let store = redis_store(&format!("redis+sentinel://127.0.0.1:{sp}/mymaster"), Duration::from_secs(3)).await;
    let now = now();
    let revoked = |j: &'static str| TokenIdentity { iss: ISSUER, sub: None, jti: Some(j), iat: Some(now) };
    cli(mp, &["SET", "hopauth:revoked:jti:before-failover", "1", "EX", "300"]);
    let s = store.clone();
    wait_until("pre-failover revocation", Duration::from_secs(5), || {
        let s = s.clone();
        async move { s.check(&revoked("before-failover")) == RevocationStatus::Revoked }
    })
    .await;

    // Wait for the replica to have it, then fail over.
    wait_until("replicated", Duration::from_secs(5), || async {
        cli(rp, &["GET", "hopauth:revoked:jti:before-failover"]) == "1"
    })
    .await;
    assert_eq!(cli(sp, &["SENTINEL", "FAILOVER", "mymaster"]), "OK");
    wait_until("replica promoted", Duration::from_secs(30), || async {
        cli(rp, &["ROLE"]).starts_with("master")
            && cli(sp, &["SENTINEL", "get-master-addr-by-name", "mymaster"]).contains(&rp.to_string())
    })
    .await;
    cli(rp, &["SET", "hopauth:revoked:jti:after-failover", "1", "EX", "300"]);
    let s = store.clone();
    wait_until("post-failover revocation from the new master", Duration::from_secs(20), || {
        let s = s.clone();
        async move {
            s.check(&revoked("after-failover")) == RevocationStatus::Revoked
                && s.check(&revoked("before-failover")) == RevocationStatus::Revoked
        }
    })
    .await;
}

#[test]
fn the_revoke_cli_writes_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &[]);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hopauth")).arg("revoke").args(args).output().unwrap()
    };
    let exp = (now() + 120).to_string();
    let out = run(&["--redis-url", &redis.url(), "--jti", "cli-1", "--exp", &exp]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SET hopauth:revoked:jti:cli-1 1 EX"));
    assert_eq!(redis.cli(&["GET", "hopauth:revoked:jti:cli-1"]), "1");

    let out = run(&["--redis-url", &redis.url(), "--iss", ISSUER, "--sub", "alice", "--before", "1700000000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(redis.cli(&["GET", &format!("hopauth:revoked:sub:{ISSUER}|alice")]), "1700000000");

    let out = run(&["--redis-url", "redis://127.0.0.1:1/0", "--jti", "x", "--exp", &exp]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unavailable"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["--redis-url", &redis.url(), "--jti", "x"]);
    assert!(!out.status.success(), "--jti without --exp is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_failure_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let mut nodes: Vec<RedisServer> = ports
        .iter()
        .map(|p| {
            let conf = format!("nodes-{p}.conf");
            RedisServer::start(
                dir.path(),
                *p,
                &["--cluster-enabled", "yes", "--cluster-config-file", &conf, "--cluster-node-timeout", "1000"],
            )
        })
        .collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(addrs.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
    cli(ports[0], &args);
    let masters_up = |want: usize| {
        let ports = ports.clone();
        move || {
            let ports = ports.clone();
            async move {
                let Some(alive) = ports.iter().find(|p| cli(**p, &["PING"]) == "PONG") else { return false };
                let info = cli(*alive, &["CLUSTER", "INFO"]);
                let nodes = cli(*alive, &["CLUSTER", "NODES"]);
                let masters = nodes.lines().filter(|l| l.contains("master") && !l.contains("fail")).count();
                info.contains("cluster_state:ok") && masters == want
            }
        }
    };
    wait_until("cluster with 3 masters and replicas", Duration::from_secs(30), masters_up(3)).await;
    wait_until("replicas in sync", Duration::from_secs(30), || async {
        ports.iter().all(|p| {
            let role = cli(*p, &["INFO", "replication"]);
            role.contains("role:master") || role.contains("master_link_status:up")
        })
    })
    .await;

    let seeds = addrs.join(",");
    let store = redis_store(&format!("redis+cluster://{seeds}"), Duration::from_secs(3)).await;
    let now = now();
    let revoked = |s: &Arc<RedisStore>, j: &str| {
        s.check(&TokenIdentity { iss: ISSUER, sub: None, jti: Some(j), iat: Some(now) }) == RevocationStatus::Revoked
    };
    let before: Vec<String> = (0..20).map(|i| format!("before-{i}")).collect();
    for j in &before {
        assert_eq!(cli(ports[0], &["-c", "SET", &format!("hopauth:revoked:jti:{j}"), "1", "EX", "300"]), "OK");
    }
    let s = store.clone();
    let b = before.clone();
    wait_until("pre-failover revocations", Duration::from_secs(10), || {
        let (s, b) = (s.clone(), b.clone());
        async move { b.iter().all(|j| revoked(&s, j)) }
    })
    .await;
    // Every master's replica has acknowledged the writes before a master dies.
    for p in &ports {
        if cli(*p, &["INFO", "replication"]).contains("role:master") {
            assert_eq!(cli(*p, &["WAIT", "1", "5000"]), "1", "replica of {p} did not acknowledge");
        }
    }

    // Kill a master: its replica is promoted.
    let victim =
        ports.iter().position(|p| cli(*p, &["INFO", "replication"]).contains("role:master")).expect("a master");
    nodes[victim].kill();
    let survivors: Vec<u16> = ports.iter().copied().filter(|p| *p != ports[victim]).collect();
    let victim_addr = format!("127.0.0.1:{}", ports[victim]);
    // Every survivor has to agree, or a redirect can land on a node that still says down.
    wait_until("failover seen by every node", Duration::from_secs(30), || async {
        survivors.iter().all(|p| {
            let info = cli(*p, &["CLUSTER", "INFO"]);
            let nodes = cli(*p, &["CLUSTER", "NODES"]);
            let victim_failed = nodes.lines().any(|l| l.contains(&victim_addr) && l.contains("fail"));
            let masters = nodes.lines().filter(|l| l.contains("master") && !l.contains("fail")).count();
            info.contains("cluster_state:ok") && victim_failed && masters == 3
        })
    })
    .await;

    let after: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    for j in &after {
        let key = format!("hopauth:revoked:jti:{j}");
        // A writer retries while the cluster settles, as any client would.
        wait_until("SET accepted after the failover", Duration::from_secs(10), || {
            let key = key.clone();
            let port = survivors[0];
            async move { cli(port, &["-c", "SET", &key, "1", "EX", "300"]) == "OK" }
        })
        .await;
    }
    let s = store.clone();
    let all: Vec<String> = before.iter().chain(after.iter()).cloned().collect();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let missing: Vec<&String> = all.iter().filter(|j| !revoked(&s, j)).collect();
        if missing.is_empty() && s.ready() {
            break;
        }
        assert!(
            Instant::now() < end,
            "after the failover: ready={} sync_age={:?} entries={:?} missing={missing:?}",
            s.ready(),
            s.sync_age(),
            s.entries()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one series in a Prometheus text exposition (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
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

/// Hole: one key of the wrong type, or one key name that is not UTF-8, used to fail every
/// resync (and every invalidation read) forever; a value that is not UTF-8 lifted a `jti`
/// revocation. Garbage is counted, fails closed where it names something, and never stops
/// the sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_under_the_prefix_is_counted_and_never_stops_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &[]);
    let p = redis.port;
    let plant = |tag: &str| {
        redis.cli(&["HSET", &format!("hopauth:revoked:jti:{tag}-wrongtype"), "a", "b"]);
        redis.cli(&["RPUSH", &format!("hopauth:revoked:sub:{ISSUER}|{tag}-list"), "x"]);
        let mut not_utf8 = format!("hopauth:revoked:jti:{tag}-").into_bytes();
        not_utf8.extend_from_slice(b"\xff\xfe");
        raw(p, &[b"SET", &not_utf8, b"1", b"EX", b"300"]);
        raw(p, &[b"SET", format!("hopauth:revoked:jti:{tag}-binary").as_bytes(), b"\xff\x00\xfe", b"EX", b"300"]);
        redis.cli(&["SET", &format!("hopauth:revoked:sub:{ISSUER}|{tag}-garbled"), "not-a-time", "EX", "300"]);
        redis.cli(&["SET", &format!("hopauth:revoked:jti:{tag}-good"), "1", "EX", "300"]);
    };
    plant("start");
    let metrics = Metrics::standalone();
    let store = redis_store_with(&redis.url(), Duration::from_secs(2), metrics.clone()).await;
    for j in ["start-good", "start-wrongtype", "start-binary"] {
        assert!(jti_revoked(&store, j), "{j}: a jti key revokes whatever its value or type");
    }
    for s in ["start-list", "start-garbled"] {
        assert!(subject_revoked(&store, s), "{s}: an unreadable subject revocation fails closed");
    }
    let m = metrics.render();
    assert_eq!(metric(&m, r#"hopauth_revocation_bad_keys_total{reason="wrong_type"}"#), 2.0, "{m}");
    assert_eq!(metric(&m, r#"hopauth_revocation_bad_keys_total{reason="bad_key"}"#), 1.0, "{m}");
    assert_eq!(metric(&m, r#"hopauth_revocation_bad_keys_total{reason="bad_value"}"#), 1.0, "{m}");

    // The same garbage arriving as invalidations while connected.
    plant("live");
    let s = store.clone();
    wait_until("live revocations beside garbage", Duration::from_secs(5), || {
        let s = s.clone();
        async move {
            ["live-good", "live-wrongtype", "live-binary"].iter().all(|j| jti_revoked(&s, j))
                && ["live-list", "live-garbled"].iter().all(|u| subject_revoked(&s, u))
        }
    })
    .await;
    // Deleting the wrong-type key lifts it like any other.
    redis.cli(&["DEL", "hopauth:revoked:jti:live-wrongtype"]);
    let s = store.clone();
    wait_until("DEL of a wrong-type key", Duration::from_secs(5), || {
        let s = s.clone();
        async move { !jti_revoked(&s, "live-wrongtype") }
    })
    .await;
    let m = metrics.render();
    assert_eq!(metric(&m, r#"hopauth_revocation_syncs_total{result="error"}"#), 0.0, "no session broke: {m}");
    assert_eq!(metric(&m, r#"hopauth_revocation_syncs_total{result="success"}"#), 1.0, "{m}");
    assert!(metric(&m, r#"hopauth_revocation_bad_keys_total{reason="wrong_type"}"#) >= 4.0, "{m}");
    assert!(store.ready());
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

/// Issue: a Redis restart was a mesh-wide outage (503 within 0.5 s of a clean stop). A
/// connection lost and restored within `max_staleness` is invisible to clients, and the
/// resync on reconnect applies what was written meanwhile.
async fn restart_within_max_staleness(outage: Outage) {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(dir.path(), free_port(), &[]);
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let running = start_hopauth(&config_yaml(&jwks.url(), "", &redis_yaml(&redis.url(), "5s", "deny"))).await;
    wait_ready(&running).await;
    let svc = AuthorizationService::new(running.authorizer.clone());
    let token = keys.es.sign_jwt(&claims("alice")).unwrap();
    let missed = claims("missed");
    let missed_token = keys.es.sign_jwt(&missed).unwrap();
    assert_eq!(check_status(&svc, &token).await, 200);
    assert_eq!(check_status(&svc, &missed_token).await, 200);
    let syncs = |m: &Metrics| metric(&m.render(), r#"hopauth_revocation_syncs_total{result="success"}"#);
    let first_syncs = syncs(&running.metrics);

    let watch = Watch::start(&running, token.clone());
    let down = Instant::now();
    outage.apply(&mut redis);
    write_while_down(&redis, &format!("hopauth:revoked:jti:{}", missed["jti"].as_str().unwrap()));
    redis.start_again();
    let back = Instant::now();
    let m = running.metrics.clone();
    wait_until("resynced after the restart", Duration::from_secs(10), || {
        let m = m.clone();
        async move { syncs(&m) > first_syncs }
    })
    .await;
    let resynced = back.elapsed();
    let (answers, not_ready) = watch.finish().await;
    eprintln!(
        "{outage:?}: Redis down {:?}, resynced {resynced:?} after it returned; answers {answers:?}, /readyz not ready {not_ready}x",
        back - down
    );
    assert!(back - down < Duration::from_secs(5), "the restart itself took longer than max_staleness");
    assert_eq!(answers.keys().copied().collect::<Vec<_>>(), vec![200], "every answer during the restart was 200");
    assert_eq!(not_ready, 0, "/readyz stayed ready");
    // Written while hopauth was disconnected; the resync enforces it.
    assert_eq!(check_status(&svc, &missed_token).await, 401);
    assert!(running.authorizer.ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_and_restart_within_max_staleness_is_invisible() {
    restart_within_max_staleness(Outage::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_redis_restart_within_max_staleness_is_invisible() {
    restart_within_max_staleness(Outage::Stop).await;
}

/// Hole: the master was taken from the first sentinel that answered, so one stale sentinel
/// (here one that still monitors an isolated old master under the same name, listed first)
/// pinned hopauth to a master nobody writes to. The master a majority of the configured
/// sentinels names is followed, through a failover too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_sentinel_is_outvoted_through_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let (old_port, mp, rp) = (free_port(), free_port(), free_port());
    let _old = RedisServer::start(&dir.path().join("old"), old_port, &[]);
    let _master = RedisServer::start(&dir.path().join("m"), mp, &[]);
    let _replica = RedisServer::start(&dir.path().join("r"), rp, &["--replicaof", "127.0.0.1", &mp.to_string()]);
    wait_until("replica in sync", Duration::from_secs(20), || async {
        cli(rp, &["INFO", "replication"]).contains("master_link_status:up")
    })
    .await;
    let stale = Sentinel::start(dir.path(), old_port, 1);
    let (s1, s2) = (Sentinel::start(dir.path(), mp, 2), Sentinel::start(dir.path(), mp, 2));
    let url = format!("redis+sentinel://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}/mymaster", stale.port, s1.port, s2.port);
    let store = redis_store(&url, Duration::from_secs(3)).await;

    cli(old_port, &["SET", "hopauth:revoked:jti:on-the-old-master", "1", "EX", "300"]);
    cli(mp, &["SET", "hopauth:revoked:jti:before-failover", "1", "EX", "300"]);
    let s = store.clone();
    wait_until("the majority's master is tracked", Duration::from_secs(10), || {
        let s = s.clone();
        async move { jti_revoked(&s, "before-failover") }
    })
    .await;
    assert!(!jti_revoked(&store, "on-the-old-master"), "read from the stale sentinel's master");

    wait_until("replicated", Duration::from_secs(5), || async {
        cli(rp, &["GET", "hopauth:revoked:jti:before-failover"]) == "1"
    })
    .await;
    wait_until("the sentinels know the replica and each other", Duration::from_secs(20), || async {
        [&s1, &s2].iter().all(|s| {
            cli(s.port, &["SENTINEL", "REPLICAS", "mymaster"]).contains(&rp.to_string())
                && !cli(s.port, &["SENTINEL", "SENTINELS", "mymaster"]).is_empty()
        })
    })
    .await;
    assert_eq!(cli(s1.port, &["SENTINEL", "FAILOVER", "mymaster"]), "OK");
    wait_until("both sentinels name the promoted replica", Duration::from_secs(30), || async {
        cli(rp, &["ROLE"]).starts_with("master") && s1.master_port() == Some(rp) && s2.master_port() == Some(rp)
    })
    .await;
    cli(rp, &["SET", "hopauth:revoked:jti:after-failover", "1", "EX", "300"]);
    let s = store.clone();
    wait_until("post-failover revocation from the new master", Duration::from_secs(20), || {
        let s = s.clone();
        async move { jti_revoked(&s, "after-failover") && jti_revoked(&s, "before-failover") && s.ready() }
    })
    .await;
    assert!(!jti_revoked(&store, "on-the-old-master"));
    assert_eq!(stale.master_port(), Some(old_port), "the stale sentinel still names the old master");
}

/// F8: `FLUSHALL` (a null invalidation) is a full resync: what was flushed is lifted, what
/// is written after is enforced. And a Redis that may evict keys (`allkeys-lru` here) can
/// drop revocations silently: hopauth says so in a metric, and notices when it is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_resyncs_and_an_evicting_redis_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &["--maxmemory-policy", "allkeys-lru"]);
    let metrics = Metrics::standalone();
    let store = redis_store_with(&redis.url(), Duration::from_secs(2), metrics.clone()).await;
    let evicting = |m: &Metrics| metric(&m.render(), "hopauth_revocation_store_evicting");
    assert_eq!(evicting(&metrics), 1.0, "allkeys-lru may evict revocations");
    for j in ["flushed-1", "flushed-2"] {
        redis.cli(&["SET", &format!("hopauth:revoked:jti:{j}"), "1", "EX", "300"]);
    }
    let s = store.clone();
    wait_until("revocations before the flush", Duration::from_secs(5), || {
        let s = s.clone();
        async move { jti_revoked(&s, "flushed-1") && jti_revoked(&s, "flushed-2") }
    })
    .await;

    assert_eq!(redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]), "OK");
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    let s = store.clone();
    wait_until("the flush lifts them", Duration::from_secs(5), || {
        let s = s.clone();
        async move { !jti_revoked(&s, "flushed-1") && !jti_revoked(&s, "flushed-2") }
    })
    .await;
    let m = metrics.render();
    assert_eq!(metric(&m, r#"hopauth_revocation_syncs_total{result="success"}"#), 2.0, "a full resync: {m}");
    assert_eq!(metric(&m, r#"hopauth_revocation_syncs_total{result="error"}"#), 0.0, "{m}");
    assert_eq!(evicting(&metrics), 0.0, "the resync saw noeviction");
    redis.cli(&["SET", "hopauth:revoked:jti:after-flush", "1", "EX", "300"]);
    let s = store.clone();
    wait_until("a revocation after the flush", Duration::from_secs(5), || {
        let s = s.clone();
        async move { jti_revoked(&s, "after-flush") }
    })
    .await;
    assert!(store.ready());
}

/// Where `CONFIG` is disabled (renamed away, as managed Redis services do) the eviction
/// policy is unknown: said so, and the sync goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_eviction_policy_is_reported_and_does_not_stop_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &["--rename-command", "CONFIG", ""]);
    assert!(redis.cli(&["CONFIG", "GET", "maxmemory-policy"]).contains("unknown command"));
    let metrics = Metrics::standalone();
    let store = redis_store_with(&redis.url(), Duration::from_secs(2), metrics.clone()).await;
    assert_eq!(metric(&metrics.render(), "hopauth_revocation_store_evicting"), -1.0);
    redis.cli(&["SET", "hopauth:revoked:jti:x", "1", "EX", "300"]);
    let s = store.clone();
    wait_until("revocation", Duration::from_secs(5), || {
        let s = s.clone();
        async move { jti_revoked(&s, "x") }
    })
    .await;
}
