//! The admin API on the side port: subject revocations cover the issuer's clock skew, and
//! failed authentications are throttled for every caller.

use hopauth_testkit as support;

use hopauth::grpc::AuthorizationService;
use serde_json::json;
use support::*;

async fn admin(running: &hopauth::server::Running, token: &str, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}/admin/revoke", running.http_addr))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_revocation_without_before_covers_the_issuers_clock_skew() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let yaml = config_yaml(&jwks.url(), "", "").replace("leeway: 0s", "leeway: 30s");
    let running = start_hopauth(&yaml).await;
    wait_ready(&running).await;
    let svc = AuthorizationService::new(running.authorizer.clone());

    // The issuer's clock runs 20 s ahead of hopauth's: its fresh token has iat = now + 20.
    let mut c = claims("dave");
    c["iat"] = (now() + 20).into();
    let token = keys.es.sign_jwt(&c).unwrap();
    assert_eq!(svc.check_request(&bearer_check(&token)).await.status.unwrap().code, 0);

    let r = admin(&running, ADMIN_TOKEN, json!({"iss": ISSUER, "sub": "dave"})).await;
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert!(echo["before"].as_i64().unwrap() >= now() + 29, "before covers the leeway: {echo}");
    assert_eq!(svc.check_request(&bearer_check(&token)).await.status.unwrap().code, 16, "revoked despite the skew");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_admin_authentications_are_throttled_for_everyone() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let running = start_hopauth(&config_yaml(&jwks.url(), "", "")).await;
    let body = json!({"jti": "j-1", "exp": now() + 60});

    // Guess until throttled: the burst, plus at most one attempt per second that passed.
    let started = std::time::Instant::now();
    let mut refused = 0u64;
    let throttled = loop {
        let r = admin(&running, &format!("guess-{refused}"), body.clone()).await;
        match r.status().as_u16() {
            401 => refused += 1,
            429 => break r,
            other => panic!("guess {refused}: {other}"),
        }
        assert!(refused <= 1000, "never throttled");
    };
    let burst = u64::from(hopauth::http::ADMIN_FAILURE_BURST);
    assert!(refused >= burst, "{refused} wrong tokens refused before the throttle");
    assert!(refused <= burst + started.elapsed().as_secs() + 1, "{refused} in {:?}", started.elapsed());
    let retry: u64 = throttled.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
    // While throttled, not even the right token is looked at: answers reveal nothing.
    assert_eq!(admin(&running, ADMIN_TOKEN, body.clone()).await.status(), 429);

    let metrics = running.metrics.render();
    let line = |outcome: &str| format!("hopauth_admin_auth_failures_total{{outcome=\"{outcome}\"}}");
    assert!(metrics.contains(&format!("{} {refused}\n", line("wrong_token"))), "{metrics}");
    assert!(metrics.contains(&format!("{} 2\n", line("throttled"))), "{metrics}");

    // One failed attempt comes back per second: the right token works again.
    wait_until("the budget to refill", std::time::Duration::from_secs(5), || {
        let running = &running;
        let body = body.clone();
        async move { admin(running, ADMIN_TOKEN, body).await.status() == 200 }
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_name_the_field_and_unknown_issuers_get_a_warning() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let running = start_hopauth(&config_yaml(&jwks.url(), "", "")).await;
    let described = |body: serde_json::Value| {
        let running = &running;
        async move {
            let r = admin(running, ADMIN_TOKEN, body).await;
            assert_eq!(r.status(), 400);
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"], "invalid_request");
            v["error_description"].as_str().unwrap().to_string()
        }
    };
    let d = described(json!({"jti": "a", "exp": "tomorrow"})).await;
    assert!(d.starts_with("exp: invalid type"), "{d}");
    let d = described(json!({"jti": "a"})).await;
    assert!(d.starts_with("exp: required"), "{d}");
    let d = described(json!({"sub": "a"})).await;
    assert!(d.starts_with("iss: required"), "{d}");
    let d = described(json!({"jti": "a", "exp": 1, "colour": "red"})).await;
    assert!(d.contains("unknown field `colour`"), "{d}");
    let d = described(json!({"iss": ISSUER, "sub": "a", "before": [1]})).await;
    assert!(d.starts_with("before: invalid type"), "{d}");

    // An issuer no provider has: written, with a warning in the answer.
    let r = admin(&running, ADMIN_TOKEN, json!({"iss": "https://typo.example", "sub": "a", "before": now()})).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["warning"].as_str().unwrap().contains("https://typo.example"), "{v}");
    let r = admin(&running, ADMIN_TOKEN, json!({"iss": ISSUER, "sub": "a", "before": now()})).await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v.get("warning").is_none(), "a known issuer gets no warning: {v}");
    running.shutdown().await;
}
