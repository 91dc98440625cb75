//! Redis outages past and within max_staleness, at the Check (through Envoy, in both
//! modes: envoy_e2e/redis.rs).

use super::*;

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
    assert_eq!(metric_value(&m, "hopauth_revocation_store_connected"), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_past_max_staleness_follows_the_failure_mode_and_recovers_with_what_was_missed() {
    outage_past_max_staleness(Outage::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_past_max_staleness_follows_the_failure_mode_and_recovers_with_what_was_missed() {
    outage_past_max_staleness(Outage::Stop).await;
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
    let syncs = |m: &Metrics| metric_value(&m.render(), r#"hopauth_revocation_syncs_total{result="success"}"#);
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
