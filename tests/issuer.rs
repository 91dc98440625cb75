//! The reference issuer end to end, with a real Redis, hopauth (provider found through the
//! issuer's discovery document) and a real Envoy: login → call → refresh (rotation, reuse
//! kills the family) → logout refused at the next hop; key rotation under continuous
//! traffic; RFC 6749 errors; one behaviour suite for the memory and Redis refresh stores.

#[path = "support/issuer_stack.rs"]
mod issuer_stack;
#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopauth::issuer::refresh::{
    new_family, new_token, MemoryRefreshStore, NewToken, RedisRefreshStore, RefreshStore, Refused, Rotation, Session,
};
use issuer_stack::{IssuerStack, Options};
use redis_server::{free_port, RedisServer};
use serde_json::Value;

/// Polls `Envoy` with `token` until it answers `want`; the time it took.
async fn until_status(s: &IssuerStack, token: &str, want: u16, deadline: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = s.call("/anything", token).await;
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < deadline, "still {got} after {deadline:?}, want {want}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn kid(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let h: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    h["kid"].as_str().unwrap().to_string()
}

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
    let forged = hopauth::sign::SigningKey::generate(hopauth::alg::Alg::ES256, "x").unwrap();
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
    let r1 = hopauth::issuer::rotate_keys(&s.config).unwrap();
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
        let r = raw(ct, body).await;
        assert_eq!(r.status, 400, "{ct}: {r:?}");
        assert_eq!(r.error(), "invalid_request", "{ct}: {r:?}");
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

/// The same behaviour from both refresh token stores.
async fn refresh_store_behaviour(store: &dyn RefreshStore) {
    let now = support::now();
    let next = |family: &str| {
        let (token, hash) = new_token(family);
        NewToken { hash, expires: now + 100, access_jti: format!("j-{token}"), access_exp: now + 30 }
    };
    let family = new_family();
    let session = Session { sub: "alice".into(), scope: "orders:read".into(), expires: now + 1000 };
    let first = next(&family);
    store.create(&family, &session, &first).await.unwrap();
    let second = next(&family);
    let r = store.rotate(&family, &first.hash, &second, now).await.unwrap();
    assert_eq!(r, Rotation::Rotated { session: session.clone(), expires: now + 100 });
    let third = next(&family);
    let r = store.rotate(&family, &"0".repeat(64), &third, now).await.unwrap();
    assert_eq!(r, Rotation::Refused(Refused::Unknown));
    // Reuse of the spent first token revokes the family and names its live access tokens.
    match store.rotate(&family, &first.hash, &third, now).await.unwrap() {
        Rotation::Reused(f) => {
            assert_eq!(f.sub, "alice");
            let mut jtis: Vec<&str> = f.live_access.iter().map(|(j, _)| j.as_str()).collect();
            jtis.sort();
            let mut want = vec![first.access_jti.as_str(), second.access_jti.as_str()];
            want.sort();
            assert_eq!(jtis, want);
        }
        other => panic!("expected reuse, got {other:?}"),
    }
    let r = store.rotate(&family, &second.hash, &third, now).await.unwrap();
    assert_eq!(r, Rotation::Refused(Refused::Revoked), "the unspent token of a dead family");

    // A token never outlives its session; time comes from the caller.
    let family = new_family();
    let short = Session { expires: now + 50, ..session.clone() };
    let a = next(&family);
    store.create(&family, &short, &a).await.unwrap();
    let b = next(&family);
    let r = store.rotate(&family, &a.hash, &b, now).await.unwrap();
    assert_eq!(r, Rotation::Rotated { session: short.clone(), expires: now + 50 });
    let c = next(&family);
    assert_eq!(store.rotate(&family, &b.hash, &c, now + 60).await.unwrap(), Rotation::Refused(Refused::Unknown));

    // Logout: revoke the family (idempotent); unknown families are None.
    let family = new_family();
    let a = next(&family);
    store.create(&family, &session, &a).await.unwrap();
    let revoked = store.revoke_family(&family, now).await.unwrap().unwrap();
    assert_eq!(revoked.live_access, vec![(a.access_jti.clone(), now + 30)]);
    assert!(store.revoke_family(&family, now).await.unwrap().is_some());
    let b = next(&family);
    assert_eq!(store.rotate(&family, &a.hash, &b, now).await.unwrap(), Rotation::Refused(Refused::Revoked));
    assert_eq!(store.revoke_family(&new_family(), now).await.unwrap(), None);
    assert!(store.ping().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_stores_behave_the_same_and_redis_rotation_is_atomic() {
    refresh_store_behaviour(&MemoryRefreshStore::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &[]);
    let store = Arc::new(RedisRefreshStore::new(&redis.url(), Duration::from_secs(1), Duration::from_secs(1)).unwrap());
    refresh_store_behaviour(store.as_ref()).await;
    // Only hashes are stored, with TTLs.
    let keys = redis.cli(&["KEYS", "hopauth:issuer:rt:*"]);
    let first = keys.lines().next().unwrap();
    assert!(first.rsplit(':').next().unwrap().len() == 64, "{first}");
    let ttl: i64 = redis.cli(&["TTL", first]).parse().unwrap();
    assert!(ttl > 0, "{first}: {ttl}");

    // Twenty concurrent refreshes with one token: exactly one rotates, the rest are reuse.
    let now = support::now();
    let family = new_family();
    let (_, hash) = new_token(&family);
    let session = Session { sub: "racer".into(), scope: String::new(), expires: now + 600 };
    let first = NewToken { hash: hash.clone(), expires: now + 60, access_jti: "j0".into(), access_exp: now + 30 };
    store.create(&family, &session, &first).await.unwrap();
    let mut racers = Vec::new();
    for i in 0..20 {
        let (store, family, hash) = (store.clone(), family.clone(), hash.clone());
        racers.push(tokio::spawn(async move {
            let (_, h) = new_token(&family);
            let next = NewToken { hash: h, expires: now + 60, access_jti: format!("j{}", i + 1), access_exp: now + 30 };
            store.rotate(&family, &hash, &next, now).await.unwrap()
        }));
    }
    let mut rotated = 0;
    for r in racers {
        match r.await.unwrap() {
            Rotation::Rotated { .. } => rotated += 1,
            Rotation::Reused(_) | Rotation::Refused(Refused::Revoked) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rotated, 1);
    // A restarted Redis has lost its script cache: EVALSHA falls back to EVAL.
    redis.cli(&["SCRIPT", "FLUSH"]);
    assert_eq!(store.revoke_family(&family, now).await.unwrap().map(|f| f.sub), Some("racer".into()));
}

#[test]
fn hash_password_prints_an_argon2id_phc_string() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hopauth"))
        .args(["issuer", "hash-password", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"correct horse\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let phc = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
    let yaml = format!("users:\n  - {{ username: u, password_hash: \"{phc}\" }}\n");
    let db = hopauth::issuer::users::UserDb::from_yaml(&yaml, std::path::Path::new("u.yaml")).unwrap();
    assert!(db.authenticate("u", "correct horse").is_some());
    assert!(db.authenticate("u", "correct horse\n").is_none());
}

#[test]
fn issuer_config_errors_name_every_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.yaml");
    std::fs::write(&path, "issuer: https://a/\naudiences: []\nusers_file: nope.yaml\nkeys: { dir: k }\nlistn: x\n")
        .unwrap();
    let run = || std::process::Command::new(env!("CARGO_BIN_EXE_hopauth")).arg("issuer").output().unwrap();
    assert_eq!(run().status.code(), Some(1), "no config, no subcommand");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hopauth"))
        .args(["issuer", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("issuer.yaml") && err.contains("listn"), "unknown key named: {err}");
    std::fs::write(&path, "issuer: https://a/\naudiences: []\nusers_file: nope.yaml\nkeys: { dir: k }\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hopauth"))
        .args(["issuer", "rotate-keys", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["issuer.yaml: issuer:", "issuer.yaml: audiences:", "issuer.yaml: users_file:"] {
        assert!(err.contains(key), "{key} missing: {err}");
    }
}
