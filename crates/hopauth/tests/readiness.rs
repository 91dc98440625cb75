//! Readiness (`/readyz` and grpc.health.v1) degrades instead of falling over: one issuer's
//! dead JWKS does not make hopauth unready (unless `readiness.require_all_providers`), and
//! with `failure_mode: allow` a stale revocation store never does.

use hopauth_testkit as support;

use std::time::Duration;

use support::*;

/// A provider `dead` whose JWKS endpoint answers nothing (a closed loopback port).
fn dead_provider() -> String {
    let port = pick_port();
    format!(
        r#"  - name: dead
    issuer: https://dead.test
    audiences: [{AUDIENCE}]
    algorithms: [ES256]
    jwks:
      uri: http://127.0.0.1:{port}/jwks.json
      timeout: 200ms
"#
    )
}

async fn readyz(running: &hopauth::server::Running) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("http://{}/readyz", running.http_addr)).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn health(running: &hopauth::server::Running) -> i32 {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
    let req = tonic_health::pb::HealthCheckRequest { service: "envoy.service.auth.v3.Authorization".into() };
    h.check(req).await.unwrap().into_inner().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_issuer_does_not_take_the_others_down() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let running = start_hopauth(&config_yaml(&jwks.url(), &dead_provider(), "")).await;
    wait_until("ready", Duration::from_secs(10), || async { running.authorizer.ready() }).await;
    let (status, body) = readyz(&running).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["providers"]["main"], true, "{body}");
    assert_eq!(body["providers"]["dead"], false, "{body}");
    wait_until("health SERVING", Duration::from_secs(5), || async { health(&running).await == 1 }).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_all_providers_makes_one_dead_issuer_unready() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let yaml = config_yaml(&jwks.url(), &dead_provider(), "readiness: { require_all_providers: true }");
    let running = start_hopauth(&yaml).await;
    // `main` has its keys; readiness still waits for `dead`.
    wait_until("main's keys", Duration::from_secs(10), || async { jwks.hits() >= 1 }).await;
    let usable = |running: &hopauth::server::Running, name: &str| {
        running.authorizer.verifier().providers().iter().any(|p| &*p.name == name && p.keys.usable())
    };
    wait_until("main usable", Duration::from_secs(10), || async { usable(&running, "main") }).await;
    assert!(!running.authorizer.ready());
    let (status, body) = readyz(&running).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(health(&running).await, 2, "NOT_SERVING");
    running.shutdown().await;
}

/// The revocation store is Redis on a port where nothing listens: never synced, so stale.
fn unreachable_redis(failure_mode: &str) -> String {
    format!(
        "revocation:\n  backend: redis\n  redis_url: redis://127.0.0.1:{}/0\n  failure_mode: {failure_mode}\n  \
         connect_timeout: 200ms\n",
        pick_port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_store_with_failure_mode_allow_stays_ready_and_fails_open_counted() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let running = start_hopauth(&config_yaml(&jwks.url(), "", &unreachable_redis("allow"))).await;
    wait_ready(&running).await;
    assert!(!running.authorizer.revocation().ready(), "the store itself is stale");
    let (status, body) = readyz(&running).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revocation"]["ready"], false, "{body}");
    wait_until("health SERVING", Duration::from_secs(5), || async { health(&running).await == 1 }).await;

    let svc = hopauth::grpc::AuthorizationService::new(running.authorizer.clone());
    let token = keys.es.sign_jwt(&claims("alice")).unwrap();
    let r = svc.check_request(&bearer_check(&token)).await;
    assert_eq!(r.status.unwrap().code, 0, "a verified token passes while the store is stale");
    assert_eq!(running.metrics.checks().fail_opens(), 1);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_store_with_failure_mode_deny_is_unready() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let running = start_hopauth(&config_yaml(&jwks.url(), "", &unreachable_redis("deny"))).await;
    let main_usable = |r: &hopauth::server::Running| r.authorizer.verifier().providers()[0].keys.usable();
    wait_until("main usable", Duration::from_secs(10), || async { main_usable(&running) }).await;
    assert!(!running.authorizer.ready());
    assert_eq!(readyz(&running).await.0, 503);
    running.shutdown().await;
}
