//! Two instances on one Redis, a Cluster, Sentinel failovers and a stale sentinel.

use super::*;

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
    let evicting = |m: &Metrics| metric_value(&m.render(), "hopauth_revocation_store_evicting");
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
    assert_eq!(metric_value(&m, r#"hopauth_revocation_syncs_total{result="success"}"#), 2.0, "a full resync: {m}");
    assert_eq!(metric_value(&m, r#"hopauth_revocation_syncs_total{result="error"}"#), 0.0, "{m}");
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
    assert_eq!(metric_value(&metrics.render(), "hopauth_revocation_store_evicting"), -1.0);
    redis.cli(&["SET", "hopauth:revoked:jti:x", "1", "EX", "300"]);
    let s = store.clone();
    wait_until("revocation", Duration::from_secs(5), || {
        let s = s.clone();
        async move { jti_revoked(&s, "x") }
    })
    .await;
}
