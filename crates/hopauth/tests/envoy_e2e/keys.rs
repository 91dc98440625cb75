//! Per-route policy, key rotation, withdrawn keys and kid floods through Envoy.

use super::*;

async fn per_route_policy(mode: Mode) {
    let partner_key = SigningKey::generate(Alg::EdDSA, "partner-1").unwrap();
    let partner = JwksServer::start(jwks_of(&[&partner_key]), "https://partner.test").await;
    let extra = format!(
        "  - name: partner\n    issuer: https://partner.test\n    audiences: [{AUDIENCE}]\n    algorithms: [EdDSA]\n    jwks: {{ uri: \"{}\" }}\n",
        partner.url()
    );
    let s = Stack::start_in_with(mode, &extra, "").await;
    let mut pc = claims("p-user");
    pc["iss"] = "https://partner.test".into();
    let partner_token = partner_key.sign_jwt(&pc).unwrap();
    let main_token = s.keys.es.sign_jwt(&claims("alice")).unwrap();

    assert_eq!(s.get_with_token("/x", &partner_token).await.status, 200, "partner tokens pass by default");
    let r = s.get_with_token("/orders/7", &partner_token).await;
    assert_invalid_token(&r, "token issuer is not accepted on this route");
    assert_eq!(s.get_with_token("/orders/7", &main_token).await.status, 200);
    let mut no_scope = claims("alice");
    no_scope["scope"] = "profile".into();
    let r = s.get_with_token("/orders/7", &s.keys.es.sign_jwt(&no_scope).unwrap()).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(challenge(&r).contains("scope=\"orders:read\""));

    // A partner token claiming the main issuer, or signed by the main issuer's key for the
    // partner issuer: the key belongs to its provider only.
    let mut forged = claims("alice");
    forged["iss"] = "https://partner.test".into();
    let forged = s.keys.ed.sign_jwt(&forged).unwrap();
    assert_eq!(s.get_with_token("/x", &forged).await.status, 401);
    let cross = partner_key.sign_jwt(&claims("alice")).unwrap();
    assert_eq!(s.get_with_token("/x", &cross).await.status, 401);

    // Anonymous route: no token passes; a bad token is still refused.
    assert_eq!(s.get("/public", &[]).await.status, 200);
    let expired = {
        let mut c = claims("alice");
        c["exp"] = (now() - 5).into();
        s.keys.es.sign_jwt(&c).unwrap()
    };
    assert_eq!(s.get_with_token("/public", &expired).await.status, 401);
    assert_eq!(s.get("/publicity", &[]).await.status, 401, "/publicity is not /public");
}

async fn key_rotation_is_picked_up_and_a_kid_flood_is_not_a_fetch_flood(mode: Mode) {
    let s = Stack::start_in(mode).await;
    let fresh = SigningKey::generate(Alg::ES256, "es-2").unwrap();
    s.jwks.set(jwks_of(&[&s.keys.es, &fresh]));
    let before = s.jwks.hits();
    let r = s.get_with_token("/x", &fresh.sign_jwt(&claims("alice")).unwrap()).await;
    assert_eq!(r.status, 200, "a token signed by a newly published key passes: {r:?}");
    assert_eq!(s.jwks.hits(), before + 1, "exactly one refetch for the new kid");

    let attacker = SigningKey::generate(Alg::ES256, "x").unwrap();
    let flood_start = s.jwks.hits();
    for i in 0..60 {
        let header = json!({"alg": "ES256", "kid": format!("random-{i}"), "typ": "JWT"});
        let token = attacker.sign_with_header(&header, &claims("alice")).unwrap();
        let r = s.get_with_token("/x", &token).await;
        assert_invalid_token(&r, "token signing key is unknown");
    }
    let fetched = s.jwks.hits() - flood_start;
    assert!(fetched <= 1, "60 unknown kids caused {fetched} JWKS fetches");
    // The rotated-out... and the old key still works.
    assert_eq!(s.get_with_token("/x", &s.keys.es.sign_jwt(&claims("alice")).unwrap()).await.status, 200);
}

async fn cached_tokens_stop_when_their_key_is_withdrawn_or_the_keys_go_stale(mode: Mode) {
    let stale_soon = |url: &str| {
        config_yaml(url, "", "")
            .replace("refresh_interval: 5m", "refresh_interval: 1s\n      max_stale: 3s\n      timeout: 500ms")
    };
    let s = Stack::launch(mode, stale_soon, |l| l).await;
    let withdrawn = s.keys.es.sign_jwt(&claims("alice")).unwrap();
    let kept = s.keys.rs.sign_jwt(&claims("bob")).unwrap();
    for token in [&withdrawn, &kept, &withdrawn, &kept] {
        assert_eq!(s.get_with_token("/x", token).await.status, 200);
    }
    let hits = metric_value(&s.metrics().await, "hopauth_verify_cache_hits_total");
    assert!(hits >= 2.0, "both tokens are cached: {hits} hits");

    s.jwks.set(jwks_of(&[&s.keys.rs, &s.keys.ps, &s.keys.ed]));
    wait_until("the cached es-1 token to be refused", std::time::Duration::from_secs(10), || async {
        s.get_with_token("/x", &withdrawn).await.status == 401
    })
    .await;
    assert_invalid_token(&s.get_with_token("/x", &withdrawn).await, "token signing key is unknown");
    assert_eq!(s.get_with_token("/x", &kept).await.status, 200, "the other key's cached token passes");

    // The JWKS goes down: past max_stale the cached token gets 503, like any other.
    s.jwks.set_failing(true);
    wait_until("the cached token to get 503", std::time::Duration::from_secs(10), || async {
        s.get_with_token("/x", &kept).await.status == 503
    })
    .await;
    // hopauth answered it (a cache hit): in ext_authz mode before its health check turned
    // NOT_SERVING and Envoy started answering 503 itself.
    let metrics = s.metrics().await;
    assert!(metrics.contains(r#"hopauth_checks_total{decision="deny",reason="keys_unavailable"}"#), "{metrics}");
    let r = s.get_with_token("/x", &kept).await;
    assert_eq!((r.status, r.header("retry-after")), (503, Some("5")), "{r:?}");
}

async fn a_kid_flood_costs_a_fetch_a_second_and_a_new_key_still_gets_in(mode: Mode) {
    // Default kid_refetch_interval.
    let default_interval = |url: &str| config_yaml(url, "", "").replace("      kid_refetch_interval: 30s\n", "");
    let s = Stack::launch(mode, default_interval, |l| l).await;
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let attacker = SigningKey::generate(Alg::ES256, "x").unwrap();
    let mut tasks = Vec::new();
    let (hits_before, oks_before) = (s.jwks.hits(), s.jwks.oks());
    let flood_start = std::time::Instant::now();
    for t in 0..3 {
        let (client, url, flooding) = (s.client.clone(), s.envoy.url("/x"), flooding.clone());
        let attacker = SigningKey::from_pkcs8(Alg::ES256, "x", attacker.pkcs8_der()).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u32;
            while flooding.load(std::sync::atomic::Ordering::SeqCst) {
                let header = json!({"alg": "ES256", "kid": format!("random-{t}-{sent}"), "typ": "JWT"});
                let token = attacker.sign_with_header(&header, &claims("mallory")).unwrap();
                let r = send(&client, &url, &[("authorization", &bearer(&token))]).await;
                assert_eq!(r.status, 401, "{r:?}");
                sent += 1;
            }
            sent
        }));
    }

    // Mid-flood the IdP publishes a key: a token on it gets in within about a second.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let fresh = SigningKey::generate(Alg::ES256, "es-2").unwrap();
    let token = fresh.sign_jwt(&claims("alice")).unwrap();
    s.jwks.set(jwks_of(&[&s.keys.es, &s.keys.rs, &s.keys.ps, &s.keys.ed, &fresh]));
    let published = std::time::Instant::now();
    wait_until("the new key to be accepted", std::time::Duration::from_secs(3), || async {
        s.get_with_token("/x", &token).await.status == 200
    })
    .await;
    let accepted_after = published.elapsed();

    let remaining = std::time::Duration::from_secs(5).saturating_sub(flood_start.elapsed());
    tokio::time::sleep(remaining).await;
    flooding.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut sent = 0;
    for t in tasks {
        sent += t.await.unwrap();
    }
    let flood = flood_start.elapsed();
    let fetched = s.jwks.hits() - hits_before;
    let full = s.jwks.oks() - oks_before;
    println!("{sent} random kids in {flood:?}: {fetched} fetches ({full} 200s); new key in after {accepted_after:?}");
    assert!(sent >= 50, "the flood was a flood: {sent} requests");
    // One fetch at the start, then at most one per second: 6 for a flood of 5.x s.
    let bound = flood.as_secs() as usize + 1;
    assert!(fetched <= bound, "{sent} random kids in {flood:?} caused {fetched} JWKS fetches (at most {bound})");
    assert!(full <= 1, "only the new document is a full fetch, the rest are 304s: {full}");
    assert_eq!(s.get_with_token("/x", &s.keys.es.sign_jwt(&claims("alice")).unwrap()).await.status, 200);
}

in_both_modes!(
    per_route_policy,
    key_rotation_is_picked_up_and_a_kid_flood_is_not_a_fetch_flood,
    cached_tokens_stop_when_their_key_is_withdrawn_or_the_keys_go_stale,
    a_kid_flood_costs_a_fetch_a_second_and_a_new_key_still_gets_in
);
