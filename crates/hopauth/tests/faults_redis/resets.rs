//! F5: connection resets mid-scan, mid-push and mid-lookup; a resync cut halfway.

use super::*;

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
