//! Login → call → refresh → logout through Envoy, key rotation under traffic, RFC 6749 errors.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refresh_reuse_and_logout_through_envoy() {
    let s = IssuerStack::start(Options::default()).await;

    // Log in → call through Envoy → 200, with the identity hopauth verified.
    let t0 = Instant::now();
    let login = s.login("alice").await;
    let login_latency = t0.elapsed();
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 300);
    assert_eq!(login.headers["cache-control"], "no-store");
    let c = claims(login.access());
    for claim in ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "roles", "sid"] {
        assert!(c.get(claim).is_some(), "{claim} missing from {c}");
    }
    assert_eq!((c["sub"].as_str(), c["aud"].as_str()), (Some("alice"), Some("orders")));
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
    let r = s.client.get(s.envoy.url("/orders/1")).bearer_auth(login.access()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-jwt-sub"], "alice");
    assert_eq!(echoed["headers"]["x-jwt-scope"], "orders:read profile");

    // Refresh → new tokens work; the old refresh token is refused and its reuse kills the family.
    let t0 = Instant::now();
    let second = s.refresh(login.refresh()).await;
    let refresh_latency = t0.elapsed();
    assert_eq!(second.status, 200, "{second:?}");
    assert_ne!(second.refresh(), login.refresh());
    assert_eq!(s.call("/anything", second.access()).await, 200);
    let third = s.refresh(second.refresh()).await;
    assert_eq!(third.status, 200, "{third:?}");
    assert_eq!(s.call("/anything", third.access()).await, 200);

    let reused = s.refresh(login.refresh()).await;
    assert_eq!((reused.status, reused.error()), (400, "invalid_grant"), "{reused:?}");
    // The family is dead: even the newest refresh token is refused...
    let after = s.refresh(third.refresh()).await;
    assert_eq!((after.status, after.error()), (400, "invalid_grant"), "{after:?}");
    // ...and every access token of the subject is refused at the next hop.
    let took = until_status(&s, third.access(), 401, Duration::from_secs(2)).await;
    assert_eq!(s.call("/anything", login.access()).await, 401);
    let redis = s.redis.as_ref().unwrap();
    let sub_key = format!("hopauth:revoked:sub:{}|alice", s.config.issuer);
    let ttl: i64 = redis.cli(&["TTL", &sub_key]).parse().unwrap();
    assert!((300..=330).contains(&ttl), "subject revocation lives as long as an access token: {ttl}");
    println!("reuse → access token refused through Envoy after {took:?}");

    // Logout → the access token is refused at the next hop within the revocation deadline,
    // and the session's refresh token is dead.
    let bob = s.login("bob").await;
    assert_eq!(s.call("/anything", bob.access()).await, 200);
    let bob2 = s.refresh(bob.refresh()).await;
    assert_eq!(s.call("/anything", bob2.access()).await, 200);
    let t0 = Instant::now();
    let out = s.post_form("/logout", &[], Some(bob2.access())).await;
    let logout_latency = t0.elapsed();
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.body["revoked"], serde_json::json!({"sessions": 1, "access_tokens": 2}), "{out:?}");
    let took = until_status(&s, bob2.access(), 401, Duration::from_millis(500)).await;
    println!("login {login_latency:?}, refresh {refresh_latency:?}, logout {logout_latency:?}; logout → refused through Envoy after {took:?} (+ logout call)");
    assert!(took < Duration::from_millis(100), "revocation deadline is 100 ms, took {took:?}");
    // The earlier access token of the same session is revoked too, and the refresh token.
    assert_eq!(s.call("/anything", bob.access()).await, 401);
    assert_eq!(s.refresh(bob2.refresh()).await.error(), "invalid_grant");
    // Bob can log in again: logout is not a subject ban.
    let again = s.login("bob").await;
    assert_eq!(s.call("/anything", again.access()).await, 200);

    // RFC 7009: revoking a refresh token ends its session; an access token is revoked alone.
    let carol = s.login("carol").await;
    let r = s.post_form("/revoke", &[("token", carol.refresh()), ("token_type_hint", "refresh_token")], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(s.refresh(carol.refresh()).await.error(), "invalid_grant");
    until_status(&s, carol.access(), 401, Duration::from_millis(500)).await;
    let dave = s.login("dave").await;
    assert_eq!(s.post_form("/revoke", &[("token", dave.access())], None).await.status, 200);
    until_status(&s, dave.access(), 401, Duration::from_millis(500)).await;
    assert_eq!(s.refresh(dave.refresh()).await.status, 200, "revoking an access token leaves its session");
    // Unknown tokens are not an error (RFC 7009 §2.2).
    assert_eq!(s.post_form("/revoke", &[("token", "nonsense")], None).await.status, 200);
    // A forged bearer token cannot log anyone out.
    let forged = hopauth_core::sign::SigningKey::generate(hopauth_core::alg::Alg::ES256, "x").unwrap();
    let forged = forged.sign_jwt(&claims(again.access())).unwrap();
    let r = s.post_form("/logout", &[], Some(&forged)).await;
    assert_eq!((r.status, r.error()), (401, "invalid_token"));
    assert_eq!(s.call("/anything", again.access()).await, 200);

    let metrics = reqwest::get(format!("http://{}/metrics", s.issuer.admin_addr)).await.unwrap().text().await.unwrap();
    for line in [
        r#"hopauth_issuer_token_requests_total{grant_type="password",result="issued"}"#,
        r#"hopauth_issuer_token_requests_total{grant_type="refresh_token",result="invalid_grant"}"#,
        "hopauth_issuer_refresh_reuse_total 1",
        r#"hopauth_issuer_signing_keys{status="active"} 1"#,
        "hopauth_issuer_store_up 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    let ready = reqwest::get(format!("http://{}/readyz", s.issuer.admin_addr)).await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_under_continuous_traffic_loses_no_request() {
    // Traffic logs in for every request: lift the login limits for this test.
    let throttle = "throttle: { login_per_address: { burst: 100000, every: 1ms } }\n".to_string();
    let s = Arc::new(IssuerStack::start(Options { issuer_extra: throttle, redis: false }).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let kids = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let traffic = {
        let (s, stop, sent, failed, kids) = (s.clone(), stop.clone(), sent.clone(), failed.clone(), kids.clone());
        tokio::spawn(async move {
            let users = issuer_stack::USERS;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let user = users[i % users.len()];
                i += 1;
                let token = s.login(user).await;
                kids.lock().unwrap().insert(kid(token.access()));
                let status = s.call("/anything", token.access()).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("request with kid {} answered {status}", kid(token.access()));
                }
            }
        })
    };
    let jwks_fetches = || {
        let text = s.hopauth.metrics.render();
        text.lines()
            .find(|l| l.starts_with(r#"hopauth_jwks_refresh_total{provider="main",result="success"}"#))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let wait_active = |kid: String| {
        let s = s.clone();
        support::wait_until("the running issuer signs with the promoted key", Duration::from_secs(5), move || {
            let ok = s.issuer.service.keys().current().active.kid == kid;
            async move { ok }
        })
    };
    let wait_refetch = |after: u64| {
        support::wait_until("hopauth refetched the JWKS", Duration::from_secs(5), move || async move {
            jwks_fetches() > after
        })
    };
    support::wait_until("traffic flowing", Duration::from_secs(5), || async { sent.load(Ordering::Relaxed) >= 5 })
        .await;

    // Rotation 1 through the library, as `rotate-keys` does.
    let r1 = hopauth_issuer::rotate_keys(&s.config).unwrap();
    wait_active(r1.active.clone()).await;
    let fetched = jwks_fetches();
    wait_refetch(fetched).await;
    let before = sent.load(Ordering::Relaxed);
    support::wait_until("traffic with the new key", Duration::from_secs(5), || async {
        sent.load(Ordering::Relaxed) >= before + 5
    })
    .await;

    // Rotation 2 through the binary.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hopauth"))
        .args(["issuer", "rotate-keys", "--config"])
        .arg(s.dir.path().join("issuer.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&r1.next), "r1's next is promoted");
    wait_active(r1.next.clone()).await;
    let before = sent.load(Ordering::Relaxed);
    support::wait_until("traffic after the second rotation", Duration::from_secs(5), || async {
        sent.load(Ordering::Relaxed) >= before + 5
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();

    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let kids = kids.lock().unwrap().clone();
    println!("rotation under traffic: {sent} requests, {failed} not 200, signed by {} keys", kids.len());
    assert_eq!(failed, 0, "{failed} of {sent} requests failed during rotation");
    assert_eq!(kids.len(), 3, "tokens from the first, second and third active key: {kids:?}");
    // The JWKS now has the new next, the active and two retiring keys.
    let jwks: Value = reqwest::get(s.issuer_url("/.well-known/jwks.json")).await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 4, "{jwks}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc6749_errors_and_throttling() {
    let throttle =
        "throttle: { login_per_user: { burst: 3, every: 1m }, refresh_per_family: { burst: 2, every: 1m } }\n";
    let s = IssuerStack::start(Options { issuer_extra: throttle.into(), redis: false }).await;
    let token = |form: Vec<(&'static str, &'static str)>| {
        let s = &s;
        async move { s.post_form("/token", &form, None).await }
    };
    type Form = Vec<(&'static str, &'static str)>;
    let cases: Vec<(Form, u16, &str)> = vec![
        (vec![("grant_type", "password"), ("username", "alice"), ("password", "wrong")], 400, "invalid_grant"),
        (vec![("grant_type", "password"), ("username", "nobody"), ("password", "x")], 400, "invalid_grant"),
        (vec![("grant_type", "client_credentials")], 400, "unsupported_grant_type"),
        (vec![("grant_type", "authorization_code"), ("code", "x")], 400, "unsupported_grant_type"),
        (vec![("username", "alice"), ("password", "alice-pw")], 400, "invalid_request"),
        (vec![("grant_type", "password"), ("username", "alice")], 400, "invalid_request"),
        (vec![("grant_type", "password"), ("grant_type", "password")], 400, "invalid_request"),
        (vec![("grant_type", "refresh_token")], 400, "invalid_request"),
        (vec![("grant_type", "refresh_token"), ("refresh_token", "not-ours")], 400, "invalid_grant"),
        (
            vec![("grant_type", "password"), ("username", "bob"), ("password", "bob-pw"), ("scope", "admin")],
            400,
            "invalid_scope",
        ),
    ];
    for (form, status, error) in cases {
        let r = token(form.clone()).await;
        assert_eq!((r.status, r.error()), (status, error), "{form:?} → {r:?}");
        assert_eq!(r.headers["cache-control"], "no-store");
        assert!(r.body["error_description"].is_string());
    }
    // Malformed bodies: not a form, JSON, bad percent-encoding, too large.
    let raw = |ct: &'static str, body: Vec<u8>| {
        let s = &s;
        async move {
            let mut req = s.client.post(s.issuer_url("/token")).body(body);
            if !ct.is_empty() {
                req = req.header("content-type", ct);
            }
            issuer_stack::reply(req.send().await.unwrap()).await
        }
    };
    for (ct, body) in [
        ("application/json", br#"{"grant_type":"password"}"#.to_vec()),
        ("", b"grant_type=password".to_vec()),
        ("application/x-www-form-urlencoded", b"%%%garbage&&=".to_vec()),
        ("application/x-www-form-urlencoded", vec![b'a'; 64 * 1024]),
    ] {
        let too_large = body.len() > 16 * 1024;
        let r = raw(ct, body).await;
        assert_eq!(r.status, 400, "{ct}: {r:?}");
        assert_eq!(r.error(), "invalid_request", "{ct}: {r:?}");
        // Refused unread, so the connection closes: the answer says so, and the client
        // does not reuse it for the next request.
        assert_eq!(r.headers.get("connection").is_some_and(|v| v == "close"), too_large, "{ct}: {r:?}");
    }
    // A narrower scope is granted as asked.
    let r = token(vec![("grant_type", "password"), ("username", "bob"), ("password", "bob-pw"), ("scope", "profile")])
        .await;
    assert_eq!((r.status, r.body["scope"].as_str()), (200, Some("profile")), "{r:?}");
    assert_eq!(claims(r.access())["scope"], "profile");

    // Failed logins per user: after the burst, 429 slow_down with retry-after, even for
    // the right password; other users are unaffected.
    for _ in 0..2 {
        token(vec![("grant_type", "password"), ("username", "alice"), ("password", "wrong")]).await;
    }
    let r = token(vec![("grant_type", "password"), ("username", "alice"), ("password", "alice-pw")]).await;
    assert_eq!((r.status, r.error()), (429, "slow_down"), "{r:?}");
    assert!(r.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    s.login("carol").await;

    // Refresh bursts per family.
    let carol = s.login("carol").await;
    let a = s.refresh(carol.refresh()).await;
    let b = s.refresh(a.refresh()).await;
    assert_eq!(b.status, 200);
    let c = s.refresh(b.refresh()).await;
    assert_eq!((c.status, c.error()), (429, "slow_down"), "{c:?}");

    // Discovery names the endpoints under the issuer URL.
    let d: Value = reqwest::get(s.issuer_url("/.well-known/openid-configuration")).await.unwrap().json().await.unwrap();
    assert_eq!(d["issuer"], s.config.issuer);
    assert_eq!(d["jwks_uri"], format!("{}/.well-known/jwks.json", s.config.issuer));
    assert_eq!(d["token_endpoint"], format!("{}/token", s.config.issuer));
    // Logout without any token is a bad request.
    assert_eq!(s.post_form("/logout", &[], None).await.error(), "invalid_request");
}
