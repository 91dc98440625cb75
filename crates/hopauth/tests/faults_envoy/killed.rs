//! F11: hopauth killed behind Envoy.

use super::*;

use std::path::Path;

use support::process::ServeProcess;

/// `hopauth serve` (a child process, so it can be killed like a crashed sidecar) on
/// `config`, whose listeners are `grpc` and `http`.
fn spawn(config: &Path, log: &Path, grpc: SocketAddr, http: SocketAddr) -> ServeProcess {
    ServeProcess::spawn(Path::new(env!("CARGO_BIN_EXE_hopauth")), config, log.to_path_buf(), grpc, http)
}

/// Polls `url` with `token` until the status is `want`; how long it took.
async fn wait_through(client: &reqwest::Client, envoy: &Envoy, token: &str, want: u16, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = get(client, envoy, token).await.status;
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{what}: still {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// F11: `hopauth serve` is killed (SIGKILL) behind two Envoys. With the shipped
/// `failure_mode_allow: false`, clients get 503 (`status_on_error`) and the app sees
/// nothing; with `true`, traffic passes unchecked and Envoy counts every such request in
/// `ext_authz.failure_mode_allowed` (the stat docs/deploy.md says to alert on). A restart
/// brings checking back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f11_hopauth_killed_behind_envoy_fails_closed_as_shipped() {
    let shipped = std::fs::read_to_string(repo_root().join("envoy/hopauth.yaml")).unwrap();
    assert!(shipped.contains("failure_mode_allow: false"), "envoy/hopauth.yaml ships failing closed");

    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let (grpc, http): (SocketAddr, SocketAddr) =
        (format!("127.0.0.1:{}", free_port()).parse().unwrap(), format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let yaml = config_yaml(&jwks.url(), "", "")
        .replace("grpc_listen: 127.0.0.1:0", &format!("grpc_listen: {grpc}"))
        .replace("http_listen: 127.0.0.1:0", &format!("http_listen: {http}"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hopauth.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = dir.path().join("hopauth.log");
    let mut hopauth = spawn(&config, &log, grpc, http);
    hopauth.wait_ready().await;
    let app = start_echo().await;
    let closed = envoy(grpc, app, false).await;
    let open = envoy(grpc, app, true).await;
    let http_client = client(Duration::from_secs(5));
    let valid = keys.es.sign_jwt(&claims("alice")).unwrap();
    let forged = SigningKey::generate(Alg::ES256, "es-1").unwrap().sign_jwt(&claims("mallory")).unwrap();
    for e in [&closed, &open] {
        assert_eq!(get(&http_client, e, &valid).await.status, 200);
        assert_eq!(get(&http_client, e, &forged).await.status, 401);
    }
    let upstream_closed = closed.stat("cluster.app.upstream_rq_total").await;
    assert_eq!(open.stat("http.ingress.ext_authz.failure_mode_allowed").await, 0);

    let killed = Instant::now();
    hopauth.signal("KILL");
    hopauth.wait_exit(Duration::from_secs(5)).await;
    let to_503 = wait_through(&http_client, &closed, &valid, 503, "fail closed").await;
    for _ in 0..20 {
        for t in [&valid, &forged] {
            let r = get(&http_client, &closed, t).await;
            assert_eq!(r.status, 503, "hopauth is down: status_on_error, never the app: {:?}", r.body);
        }
    }
    assert_eq!(closed.stat("cluster.app.upstream_rq_total").await, upstream_closed, "the app saw a request");
    // The stat docs/deploy.md says to alert on: no hopauth is healthy.
    let end = Instant::now() + Duration::from_secs(10);
    while closed.stat("cluster.hopauth.membership_healthy").await != 0 {
        assert!(Instant::now() < end, "the health check never marked the killed hopauth unhealthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let to_open = wait_through(&http_client, &open, &forged, 200, "fail open").await;
    let before = open.stat("http.ingress.ext_authz.failure_mode_allowed").await;
    for _ in 0..10 {
        assert_eq!(get(&http_client, &open, &forged).await.status, 200, "failure_mode_allow: true lets it through");
    }
    let counted = open.stat("http.ingress.ext_authz.failure_mode_allowed").await;
    assert!(
        counted >= before + 10,
        "ext_authz.failure_mode_allowed counts the unchecked requests: {before} -> {counted}"
    );
    eprintln!(
        "F11: after SIGKILL, fail-closed Envoy 503 in {to_503:?}; fail-open Envoy passing in {to_open:?}; \
               failure_mode_allowed {counted}; {:?} since the kill",
        killed.elapsed()
    );

    let restarted = Instant::now();
    hopauth = spawn(&config, &log, grpc, http);
    hopauth.wait_ready().await;
    let back_closed = wait_through(&http_client, &closed, &valid, 200, "checking resumes (closed)").await;
    let back_open = wait_through(&http_client, &open, &forged, 401, "checking resumes (open)").await;
    assert_eq!(get(&http_client, &closed, &forged).await.status, 401);
    assert_eq!(closed.stat("cluster.hopauth.membership_healthy").await, 1);
    eprintln!(
        "F11: restart -> ready and checking again in {:?} (closed {back_closed:?}, open {back_open:?} after ready)",
        restarted.elapsed()
    );
}
