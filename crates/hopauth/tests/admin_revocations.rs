//! Listing and undoing revocations through the admin API: pages in one order with a cursor,
//! precise 400s, the admin token required; an undo lets the token through again, with the
//! memory backend and across two sidecars on one real redis-server.

use hopauth_testkit as support;
use hopauth_testkit::redis_server::{free_port, RedisServer};

use std::time::Duration;

use hopauth::grpc::AuthorizationService;
use hopauth::server::Running;
use serde_json::{json, Value};
use support::*;

async fn post(running: &Running, path: &str, token: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}{path}", running.http_addr))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn list(running: &Running, query: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("http://{}/admin/revocations{query}", running.http_addr))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A token for `sub` with jti `jti`.
fn token(keys: &Keys, sub: &str, jti: &str) -> String {
    let mut c = claims(sub);
    c["jti"] = json!(jti);
    keys.es.sign_jwt(&c).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_are_listed_in_pages_and_undone_with_the_memory_backend() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let running = start_hopauth(&config_yaml(&jwks.url(), "", "")).await;
    wait_ready(&running).await;
    let svc = AuthorizationService::new(running.authorizer.clone());
    let (carol, dave) = (token(&keys, "carol", "jti-c"), token(&keys, "dave", "jti-d"));
    let exp = now() + 300;
    for body in [json!({"jti": "jti-c", "exp": exp}), json!({"jti": "jti-b", "exp": exp})] {
        assert_eq!(post(&running, "/admin/revoke", ADMIN_TOKEN, body).await.status(), 200);
    }
    let before = now();
    let subject = json!({"iss": ISSUER, "sub": "dave", "before": before});
    assert_eq!(post(&running, "/admin/revoke", ADMIN_TOKEN, subject.clone()).await.status(), 200);
    assert_eq!((check_status(&svc, &carol).await, check_status(&svc, &dave).await), (401, 401));

    // Two pages: jti entries by jti, then the subject.
    let (status, first) = list(&running, "?limit=2").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["backend"], "memory");
    let jtis: Vec<&str> = first["revocations"].as_array().unwrap().iter().map(|e| e["jti"].as_str().unwrap()).collect();
    assert_eq!(jtis, ["jti-b", "jti-c"]);
    let next = first["next"].as_str().expect("a cursor to the second page");
    let (_, second) = list(&running, &format!("?limit=2&after={next}")).await;
    assert_eq!(
        second["revocations"],
        json!([{"kind": "subject", "iss": ISSUER, "sub": "dave", "before": before, "until": second["revocations"][0]["until"]}])
    );
    assert_eq!(second["next"], Value::Null);

    // Precise refusals.
    let (status, body) = list(&running, "?limit=5000").await;
    assert_eq!((status, body["error_description"].as_str().unwrap().starts_with("limit:")), (400, true), "{body}");
    let (status, body) = list(&running, "?after=not-a-cursor").await;
    assert_eq!((status, body["error_description"].as_str().unwrap().starts_with("after:")), (400, true), "{body}");
    let r = reqwest::get(format!("http://{}/admin/revocations", running.http_addr)).await.unwrap();
    assert_eq!(r.status(), 401, "listing needs the admin token");
    assert_eq!(post(&running, "/admin/unrevoke", "wrong", json!({"jti": "jti-c"})).await.status(), 401);
    let r = post(&running, "/admin/unrevoke", ADMIN_TOKEN, json!({"sub": "dave"})).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("iss: required with sub"));

    // Undo: the same bodies as the revoke; the tokens pass again; a second undo is 404.
    let r = post(&running, "/admin/unrevoke", ADMIN_TOKEN, json!({"jti": "jti-c", "exp": exp})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"unrevoked": "jti", "jti": "jti-c"}));
    assert_eq!(check_status(&svc, &carol).await, 200);
    assert_eq!(post(&running, "/admin/unrevoke", ADMIN_TOKEN, json!({"jti": "jti-c"})).await.status(), 404);
    assert_eq!(post(&running, "/admin/unrevoke", ADMIN_TOKEN, subject).await.status(), 200);
    assert_eq!(check_status(&svc, &dave).await, 200);
    let (_, rest) = list(&running, "").await;
    assert_eq!(rest["revocations"].as_array().unwrap().len(), 1, "only jti-b is left: {rest}");

    // Every undo is counted by kind and result (the bad body and the wrong token are not undos).
    let metrics = scrape(&running).await;
    for series in [
        "hopauth_admin_unrevocations_total{kind=\"jti\",result=\"ok\"} 1",
        "hopauth_admin_unrevocations_total{kind=\"jti\",result=\"not_found\"} 1",
        "hopauth_admin_unrevocations_total{kind=\"subject\",result=\"ok\"} 1",
        "hopauth_admin_unrevocations_total{kind=\"subject\",result=\"error\"} 0",
        "hopauth_admin_revocations_total{kind=\"jti\",result=\"ok\"} 2",
    ] {
        assert!(metrics.contains(series), "missing {series}\n{metrics}");
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_on_one_sidecar_reaches_another_on_the_same_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &[]);
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let backend = format!("revocation:\n  backend: redis\n  redis_url: \"{}\"\n  max_staleness: 2s\n", redis.url());
    let yaml = config_yaml(&jwks.url(), "", &backend);
    let (a, b) = (start_hopauth(&yaml).await, start_hopauth(&yaml).await);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let (sa, sb) = (AuthorizationService::new(a.authorizer.clone()), AuthorizationService::new(b.authorizer.clone()));
    let erin = token(&keys, "erin", "jti-e");
    let frank = token(&keys, "frank", "jti-f");

    let exp = now() + 300;
    assert_eq!(post(&a, "/admin/revoke", ADMIN_TOKEN, json!({"jti": "jti-e", "exp": exp})).await.status(), 200);
    let subject = json!({"iss": ISSUER, "sub": "frank", "before": now()});
    assert_eq!(post(&a, "/admin/revoke", ADMIN_TOKEN, subject.clone()).await.status(), 200);
    let deadline = Duration::from_secs(5);
    wait_until("B to enforce both revocations", deadline, || async {
        check_status(&sb, &erin).await == 401 && check_status(&sb, &frank).await == 401
    })
    .await;
    let (_, on_b) = list(&b, "").await;
    assert_eq!((on_b["backend"].as_str(), on_b["revocations"].as_array().unwrap().len()), (Some("redis"), 2), "{on_b}");

    // Undone on A: the keys leave Redis, and B's sync drops them from its view.
    assert_eq!(post(&a, "/admin/unrevoke", ADMIN_TOKEN, json!({"jti": "jti-e"})).await.status(), 200);
    assert_eq!(post(&a, "/admin/unrevoke", ADMIN_TOKEN, subject).await.status(), 200);
    assert_eq!(redis.cli(&["EXISTS", "hopauth:revoked:jti:jti-e"]), "0");
    assert_eq!((check_status(&sa, &erin).await, check_status(&sa, &frank).await), (200, 200));
    let started = std::time::Instant::now();
    wait_until("B to let both tokens through again", deadline, || async {
        check_status(&sb, &erin).await == 200 && check_status(&sb, &frank).await == 200
    })
    .await;
    eprintln!("admin unrevoke on A -> lifted on B in {:?}", started.elapsed());
    let (_, on_b) = list(&b, "").await;
    assert_eq!(on_b["revocations"], json!([]));
    // An undo on B of what is no longer there: 404, nothing else changes.
    assert_eq!(post(&b, "/admin/unrevoke", ADMIN_TOKEN, json!({"jti": "jti-e"})).await.status(), 404);
    a.shutdown().await;
    b.shutdown().await;
}
