//! Attacks on the session: forged refresh tokens, parallel guesses, lost replies, per-address limits.

use super::*;

/// 43 random base64url characters: the secret half of a refresh token.
fn random_secret() -> String {
    use base64::Engine;
    let mut s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    s.truncate(43);
    s
}

/// The family id of a refresh token is the `sid` of every access token of the session, which
/// every hop sees: `<sid>.<anything>` must neither end the session nor spend its budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_refresh_token_with_a_real_sid_costs_the_session_nothing() {
    let extra = "throttle: { refresh_per_family: { burst: 3, every: 1h } }\n".to_string();
    let parts = issuer_stack::start_issuer(&Options { issuer_extra: extra, redis: true }).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", parts.issuer.addr);
    let form = |client: &reqwest::Client, path: &str, form: Vec<(&'static str, String)>| {
        let (client, url) = (client.clone(), url(path));
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            issuer_stack::post_form(&client, &url, &form, None).await
        }
    };
    let login = form(
        &client,
        "/token",
        vec![("grant_type", "password".into()), ("username", "alice".into()), ("password", "alice-pw".into())],
    )
    .await;
    assert_eq!(login.status, 200, "{login:?}");
    let sid = claims(login.access())["sid"].as_str().unwrap().to_string();
    assert!(login.refresh().starts_with(&format!("{sid}.")), "the sid is the family id");
    let forged = || format!("{sid}.{}", random_secret());

    // Forged refreshes are refused and spend nothing of the family's budget (burst 3).
    for _ in 0..4 {
        let r =
            form(&client, "/token", vec![("grant_type", "refresh_token".into()), ("refresh_token", forged())]).await;
        assert_eq!((r.status, r.error()), (400, "invalid_grant"), "{r:?}");
    }
    // RFC 7009 §2.2: 200 for a token the issuer does not know, and nothing is revoked.
    let r = form(&client, "/revoke", vec![("token", forged())]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = form(&client, "/logout", vec![("refresh_token", forged())]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["revoked"]["sessions"], 0, "{r:?}");

    // The genuine token still works (the budget is untouched), and still revokes.
    let a = form(
        &client,
        "/token",
        vec![("grant_type", "refresh_token".into()), ("refresh_token", login.refresh().into())],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let b =
        form(&client, "/token", vec![("grant_type", "refresh_token".into()), ("refresh_token", a.refresh().into())])
            .await;
    assert_eq!(b.status, 200, "{b:?}");
    let r = form(&client, "/revoke", vec![("token", b.refresh().into())]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let c =
        form(&client, "/token", vec![("grant_type", "refresh_token".into()), ("refresh_token", b.refresh().into())])
            .await;
    assert_eq!((c.status, c.error()), (400, "invalid_grant"), "a genuine token revokes its session: {c:?}");
}

/// The per-user login budget is taken before the argon2 check: N parallel guesses against a
/// bucket of B get exactly B password checks, the rest 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_passwords_get_at_most_the_bucket_in_password_checks() {
    const N: usize = 16;
    const B: usize = 3;
    let extra =
        "throttle: { login_per_user: { burst: 3, every: 1h }, login_per_address: { burst: 1000, every: 1ms } }\n";
    let parts = issuer_stack::start_issuer(&Options { issuer_extra: extra.into(), redis: false }).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/token", parts.issuer.addr);
    let mut guesses = Vec::new();
    for i in 0..N {
        let (client, url) = (client.clone(), url.clone());
        guesses.push(tokio::spawn(async move {
            let pw = format!("guess-{i}");
            issuer_stack::post_form(
                &client,
                &url,
                &[("grant_type", "password"), ("username", "alice"), ("password", &pw)],
                None,
            )
            .await
        }));
    }
    let (mut checked, mut limited) = (0, 0);
    for g in guesses {
        let r = g.await.unwrap();
        match (r.status, r.error()) {
            (400, "invalid_grant") => checked += 1,
            (429, "slow_down") => {
                assert!(r.headers.contains_key("retry-after"), "{r:?}");
                limited += 1;
            }
            _ => panic!("{r:?}"),
        }
    }
    println!("{N} parallel wrong passwords, bucket {B}: {checked} checked, {limited} refused with 429");
    assert_eq!((checked, limited), (B, N - B));
    let metrics = parts.issuer.service.metrics().render();
    assert!(
        metrics.contains(&format!("hopauth_issuer_password_checks_total {B}\n")),
        "{B} argon2 checks ran:\n{metrics}"
    );
    // A user who types well gives the budget back: sequential good logins are never limited.
    for _ in 0..(2 * B) {
        let r = issuer_stack::post_form(
            &client,
            &url,
            &[("grant_type", "password"), ("username", "bob"), ("password", "bob-pw")],
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
}

/// A rotation whose reply is lost is retried by the store: the retry must give the same
/// successor, not report reuse; a second, genuine use of the spent token is still reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_retry_after_a_lost_reply_is_not_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &[]);
    let proxy = issuer_stack::ReplyLosingProxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let url = format!("redis://{}/0", proxy.addr);
    let store = RedisRefreshStore::new(&url, Duration::from_secs(2), Duration::from_secs(1)).unwrap();
    let now = support::now();
    let family = new_family();
    let next = || {
        let (_, hash) = new_token(&family);
        NewToken { hash, expires: now + 100, access_jti: format!("j-{}", rand::random::<u64>()), access_exp: now + 30 }
    };
    let session = Session { sub: "alice".into(), scope: "orders:read".into(), expires: now + 1000 };
    let first = next();
    store.create(&family, &session, &first).await.unwrap();
    // Load the script (EVALSHA → NOSCRIPT → EVAL), so the lost reply is a real rotation's.
    let r = store.rotate(&family, &"0".repeat(64), &next(), now).await.unwrap();
    assert_eq!(r, Rotation::Refused(Refused::Unknown));
    let second = next();
    proxy.lose_next_script_reply();
    let r = store.rotate(&family, &first.hash, &second, now).await.unwrap();
    assert_eq!(proxy.lost(), 1, "the first reply was lost");
    assert_eq!(r, Rotation::Rotated { session: session.clone(), expires: now + 100 }, "an honest retry");
    // The successor is the one stored: it rotates.
    let third = next();
    let r = store.rotate(&family, &second.hash, &third, now).await.unwrap();
    assert!(matches!(r, Rotation::Rotated { .. }), "{r:?}");
    // Someone else presenting the spent first token (another request, another successor) is reuse.
    let r = store.rotate(&family, &first.hash, &next(), now).await.unwrap();
    assert!(matches!(r, Rotation::Reused(_)), "{r:?}");
    let r = store.rotate(&family, &third.hash, &next(), now).await.unwrap();
    assert_eq!(r, Rotation::Refused(Refused::Revoked));
}

/// `/revoke`, `/logout` and the refresh grant are limited per client address, like logins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_logout_and_refresh_are_limited_per_address() {
    let extra =
        "throttle: { revoke_per_address: { burst: 2, every: 1h }, refresh_per_address: { burst: 2, every: 1h } }\n";
    let parts = issuer_stack::start_issuer(&Options { issuer_extra: extra.into(), redis: false }).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", parts.issuer.addr);
    for want in [200, 200, 429] {
        let r = issuer_stack::post_form(&client, &url("/revoke"), &[("token", "nonsense")], None).await;
        assert_eq!(r.status, want, "{r:?}");
    }
    let r = issuer_stack::post_form(&client, &url("/logout"), &[("refresh_token", "x")], None).await;
    assert_eq!((r.status, r.error()), (429, "slow_down"), "/logout shares the bucket of /revoke: {r:?}");
    assert!(r.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    for want in [400, 400, 429] {
        let r = issuer_stack::post_form(
            &client,
            &url("/token"),
            &[("grant_type", "refresh_token"), ("refresh_token", "not-ours")],
            None,
        )
        .await;
        assert_eq!(r.status, want, "{r:?}");
    }
    // Logins have their own budget.
    let r = issuer_stack::post_form(
        &client,
        &url("/token"),
        &[("grant_type", "password"), ("username", "alice"), ("password", "alice-pw")],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}
