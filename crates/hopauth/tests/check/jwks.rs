//! JWKS failures: unreachable, bounded, withdrawn keys, max_stale, 304s, misbehaving servers.

use super::*;

#[tokio::test]
async fn unreachable_jwks_is_503_and_not_ready_then_recovers() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    jwks.set_failing(true);
    let yaml =
        config_yaml(&jwks.url(), "", "").replace("refresh_interval: 5m", "refresh_interval: 1s\n      max_stale: 2s");
    let (running, svc) = service(&yaml).await;
    let auth = bearer(&keys.es.sign_jwt(&claims("alice")).unwrap());

    wait_until("a failed fetch", Duration::from_secs(5), || async { jwks.hits() >= 1 }).await;
    let r = svc.check_request(&check_request(&[("authorization", &auth)], &[], "/x", &[])).await;
    let (status, body) = outcome(&r);
    assert_eq!(status, 503, "{body}");
    assert_eq!(denied_header(&r, "retry-after"), Some("5"));
    assert_eq!(r.status.as_ref().unwrap().code, 14, "UNAVAILABLE inside a normal response");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(!running.authorizer.ready());
    let ready = reqwest::get(format!("http://{}/readyz", running.http_addr)).await.unwrap();
    assert_eq!(ready.status(), 503);

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = |name: &'static str| {
        let mut h = health.clone();
        async move {
            h.check(tonic_health::pb::HealthCheckRequest { service: name.into() }).await.unwrap().into_inner().status
        }
    };
    assert_eq!(serving("envoy.service.auth.v3.Authorization").await, 2, "NOT_SERVING while keys are missing");

    // The endpoint comes back: the retry with backoff picks it up by itself.
    jwks.set_failing(false);
    wait_ready(&running).await;
    wait_until("health SERVING", Duration::from_secs(5), || {
        let f = serving("envoy.service.auth.v3.Authorization");
        async move { f.await == 1 }
    })
    .await;
    assert_eq!(serving("").await, 1);
    assert_eq!(outcome(&svc.check_request(&check_request(&[("authorization", &auth)], &[], "/x", &[])).await).0, 200);

    // It fails again: last good keys serve until max_stale, then 503.
    jwks.set_failing(true);
    let fresh = bearer(&keys.rs.sign_jwt(&claims("bob")).unwrap());
    assert_eq!(outcome(&svc.check_request(&check_request(&[("authorization", &fresh)], &[], "/x", &[])).await).0, 200);
    wait_until("keys to go stale", Duration::from_secs(10), || async { !running.authorizer.ready() }).await;
    let stale = bearer(&keys.ps.sign_jwt(&claims("carol")).unwrap());
    assert_eq!(outcome(&svc.check_request(&check_request(&[("authorization", &stale)], &[], "/x", &[])).await).0, 503);
    wait_until("health NOT_SERVING again", Duration::from_secs(5), || {
        let f = serving("envoy.service.auth.v3.Authorization");
        async move { f.await == 2 }
    })
    .await;
}

#[tokio::test]
async fn jwks_fetch_is_bounded_and_follows_no_redirect() {
    let big = "x".repeat(600 * 1024);
    let app = Router::new()
        .route("/html", get(|| async { axum::response::Html("<html>login</html>") }))
        .route("/big", get(move || async move { big }))
        .route("/redirect", get(|| async { axum::response::Redirect::temporary("/elsewhere") }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "{}"
            }),
        )
        .route("/cached", get(|| async { ([("cache-control", "public, max-age=120")], "{\"keys\":[]}") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = hopauth::jwks::http_client();
    let url = |p: &str| format!("http://{addr}{p}");
    let t = Duration::from_millis(500);

    let html = hopauth::jwks::fetch(&client, &url("/html"), t, 512 * 1024).await.unwrap();
    assert!(hopauth_core::keys::parse_jwks(&html.body, &[Alg::ES256]).is_err(), "HTML is not a JWKS");
    let err = hopauth::jwks::fetch(&client, &url("/big"), t, 512 * 1024).await.unwrap_err();
    assert!(matches!(err, hopauth::jwks::FetchError::TooLarge { .. }), "{err}");
    let err = hopauth::jwks::fetch(&client, &url("/redirect"), t, 1024).await.unwrap_err();
    assert!(matches!(err, hopauth::jwks::FetchError::Status { status: 307, .. }), "{err}");
    let start = std::time::Instant::now();
    let err = hopauth::jwks::fetch(&client, &url("/slow"), t, 1024).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "timeout not enforced: {err}");
    let cached = hopauth::jwks::fetch(&client, &url("/cached"), t, 1024).await.unwrap();
    assert_eq!(cached.max_age, Some(Duration::from_secs(120)));
}

/// A counter of `hopauth_jwks_refresh_total` for provider `main` and `result`.
fn refreshes(running: &hopauth::server::Running, result: &str) -> u64 {
    let want = format!(r#"hopauth_jwks_refresh_total{{provider="main",result="{result}"}} "#);
    running.metrics.render().lines().find_map(|l| l.strip_prefix(want.as_str())?.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn a_withdrawn_key_stops_its_cached_tokens_at_the_next_refresh() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let yaml = config_yaml(&jwks.url(), "", "").replace("refresh_interval: 5m", "refresh_interval: 1s");
    let (running, svc) = service(&yaml).await;
    wait_ready(&running).await;
    let withdrawn = bearer(&keys.es.sign_jwt(&claims("alice")).unwrap());
    let kept = bearer(&keys.rs.sign_jwt(&claims("bob")).unwrap());
    let check = |auth: &str| {
        let r = check_request(&[("authorization", auth)], &[], "/x", &[]);
        let svc = &svc;
        async move { outcome(&svc.check_request(&r).await) }
    };
    for auth in [&withdrawn, &kept, &withdrawn, &kept] {
        assert_eq!(check(auth).await.0, 200);
    }
    let m = &running.metrics;
    assert_eq!(m.checks().verify_cache_hits(), 2, "both tokens are cached");

    // The IdP withdraws es-1 (a compromise, say): at the next refresh its tokens are
    // refused, the cached one included; the other key's cached token still passes.
    jwks.set(jwks_of(&[&keys.rs, &keys.ps, &keys.ed]));
    wait_until("the cached es-1 token to be refused", Duration::from_secs(10), || async {
        check(&withdrawn).await.0 == 401
    })
    .await;
    let (status, body) = check(&withdrawn).await;
    assert_eq!(status, 401);
    assert!(body.contains("token signing key is unknown"), "{body}");
    let (hits, misses) = (m.checks().verify_cache_hits(), m.checks().verify_cache_misses());
    assert_eq!(check(&kept).await.0, 200);
    assert_eq!(
        (m.checks().verify_cache_hits(), m.checks().verify_cache_misses()),
        (hits + 1, misses),
        "still a cache hit"
    );
}

#[tokio::test]
async fn past_max_stale_a_cached_token_gets_503() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let yaml = config_yaml(&jwks.url(), "", "")
        .replace("refresh_interval: 5m", "refresh_interval: 1s\n      max_stale: 2s\n      timeout: 500ms");
    let (running, svc) = service(&yaml).await;
    wait_ready(&running).await;
    let auth = bearer(&keys.es.sign_jwt(&claims("alice")).unwrap());
    let check = || {
        let r = check_request(&[("authorization", &auth)], &[], "/x", &[]);
        let svc = &svc;
        async move { outcome(&svc.check_request(&r).await).0 }
    };
    assert_eq!(check().await, 200);
    assert_eq!(check().await, 200);
    let hits = running.metrics.checks().verify_cache_hits();
    assert!(hits >= 1);

    jwks.set_failing(true);
    wait_until("the cached token to get 503", Duration::from_secs(10), || async { check().await == 503 }).await;
    assert!(running.metrics.checks().verify_cache_hits() > hits, "answered from the cache");
    // The JWKS comes back: the same cached token passes again.
    jwks.set_failing(false);
    wait_until("the cached token to pass again", Duration::from_secs(10), || async { check().await == 200 }).await;
}

#[tokio::test]
async fn conditional_requests_confirm_the_keys_with_304s() {
    for validation in [Validation::Both, Validation::ETagOnly, Validation::LastModifiedOnly] {
        let keys = Keys::generate();
        let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
        jwks.set_validation(validation);
        // max_stale 2s: only the 304s keep the keys fresh past it.
        let yaml = config_yaml(&jwks.url(), "", "")
            .replace("refresh_interval: 5m", "refresh_interval: 1s\n      max_stale: 2s");
        let (running, svc) = service(&yaml).await;
        wait_ready(&running).await;
        // The server counts a 304 when it sends it, the sidecar when it has read it: wait for both,
        // so a confirmation still in flight is not taken for a missing one.
        wait_until("three 304s, each counted as a confirmation", Duration::from_secs(10), || async {
            jwks.not_modified() >= 3 && refreshes(&running, "success") >= 4
        })
        .await;
        assert_eq!(jwks.oks(), 1, "{validation:?}: one full fetch, then 304s");
        assert!(running.authorizer.ready(), "{validation:?}: confirmed keys are not stale");
        let fresh = bearer(&keys.ps.sign_jwt(&claims("alice")).unwrap());
        assert_eq!(
            outcome(&svc.check_request(&check_request(&[("authorization", &fresh)], &[], "/x", &[])).await).0,
            200
        );

        // A new document is a 200, and its new key verifies.
        let added = SigningKey::generate(Alg::ES256, "es-2").unwrap();
        jwks.set(jwks_of(&[&keys.es, &added]));
        wait_until("the new document", Duration::from_secs(10), || async { jwks.oks() == 2 }).await;
        let token = bearer(&added.sign_jwt(&claims("bob")).unwrap());
        wait_until("the new key to verify", Duration::from_secs(5), || async {
            outcome(&svc.check_request(&check_request(&[("authorization", &token)], &[], "/x", &[])).await).0 == 200
        })
        .await;
    }
}

#[tokio::test]
async fn a_misbehaving_jwks_is_a_failed_refresh_and_the_last_good_keys_stay() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let yaml = config_yaml(&jwks.url(), "", "")
        .replace("refresh_interval: 5m", "refresh_interval: 1s\n      max_stale: 1h\n      timeout: 500ms");
    let (running, svc) = service(&yaml).await;
    wait_ready(&running).await;
    for how in [Misbehave::Html, Misbehave::Huge, Misbehave::NoKeys, Misbehave::Redirect, Misbehave::Stall] {
        let errors = refreshes(&running, "error");
        let start = std::time::Instant::now();
        jwks.misbehave(Some(how));
        wait_until("a failed refresh", Duration::from_secs(10), || async { refreshes(&running, "error") > errors })
            .await;
        if how == Misbehave::Stall {
            // Refresh every 1s + the 500ms timeout: far from the 30s the server stalls.
            assert!(start.elapsed() < Duration::from_secs(5), "{how:?}: timeout not enforced");
        }
        // The last good keys still verify a token never seen before.
        let fresh = bearer(&keys.es.sign_jwt(&claims(&format!("{how:?}"))).unwrap());
        let r = svc.check_request(&check_request(&[("authorization", &fresh)], &[], "/x", &[])).await;
        assert_eq!(outcome(&r).0, 200, "{how:?}");
        assert!(running.authorizer.ready(), "{how:?}");
        jwks.misbehave(None);
    }
    assert_eq!(jwks.elsewhere_hits(), 0, "a redirect is never followed");
    let metrics = running.metrics.render();
    assert!(metrics.contains(r#"hopauth_jwks_keys{provider="main"} 4"#), "{metrics}");
}
