//! The gRPC listener over a Unix domain socket against loopback TCP, through the shipped
//! envoy/sidecar.yaml: every Check of a run succeeds over both, and the run prints how long
//! each took (the numbers in docs/performance.md come from
//! `HOPAUTH_UDS_REQUESTS=5000 cargo test --release --test listeners -- --nocapture`).
//! Timing is reported, never asserted: timing goals belong in benchmarks.

use hopauth_testkit as support;

use std::path::Path;
use std::time::{Duration, Instant};

use hopauth::server::Running;
use support::*;

/// Requests per transport and round by default: enough to see every Check succeed, quick.
const DEFAULT_REQUESTS: usize = 300;
/// Concurrent clients in the concurrent phase.
const CONCURRENCY: usize = 16;

async fn sidecar(hopauth: &Running, socket: Option<&Path>, app: std::net::SocketAddr) -> Envoy {
    let inbound = pick_port();
    let mut replacements = vec![
        ("port_value: 10000", format!("port_value: {inbound}")),
        ("port_value: 10001", format!("port_value: {}", pick_port())),
        ("port_value: 10002", format!("port_value: {}", pick_port())),
        ("port_value: 8080", format!("port_value: {}", app.port())),
        ("path: /dev/stdout", "path: /dev/null".to_string()),
    ];
    match socket {
        Some(path) => Envoy::start_with_pipe("sidecar.yaml", path, &replacements).await,
        None => {
            replacements.push(sidecar_over_tcp(hopauth.grpc_addr));
            Envoy::start_with("sidecar.yaml", hopauth.grpc_addr, &replacements).await
        }
    }
}

/// `n` requests, sequential then `CONCURRENCY` at a time; every one must be allowed.
async fn run(envoy: &Envoy, token: &str, n: usize) -> (Duration, Duration) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let url = envoy.url("/x");
    let started = Instant::now();
    for _ in 0..n {
        let status = client.get(&url).header("authorization", token).send().await.unwrap().status();
        assert_eq!(status, 200);
    }
    let sequential = started.elapsed();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, url, token) = (client.clone(), url.clone(), token.to_string());
        tasks.spawn(async move {
            for _ in 0..n / CONCURRENCY {
                let status = client.get(&url).header("authorization", &token).send().await.unwrap().status();
                assert_eq!(status, 200);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    (sequential, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_over_a_unix_socket_and_loopback_tcp_all_succeed() {
    let n = std::env::var("HOPAUTH_UDS_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_REQUESTS);
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("grpc.sock");
    let yaml = config_yaml(&jwks.url(), "", "");
    let tcp = start_hopauth(&yaml).await;
    let uds =
        start_hopauth(&yaml.replace("grpc_listen: 127.0.0.1:0", &format!("grpc_listen: unix:{}", socket.display())))
            .await;
    wait_ready(&tcp).await;
    wait_ready(&uds).await;
    let app = start_echo().await;
    let envoy_tcp = sidecar(&tcp, None, app).await;
    let envoy_uds = sidecar(&uds, Some(&socket), app).await;
    let token = bearer(&keys.es.sign_jwt(&claims("alice")).unwrap());

    // Warm both paths (connections, verify cache), then alternate to share the noise.
    run(&envoy_tcp, &token, 50).await;
    run(&envoy_uds, &token, 50).await;
    let mut totals = [(Duration::ZERO, Duration::ZERO); 2];
    for _ in 0..2 {
        for (i, envoy) in [&envoy_tcp, &envoy_uds].into_iter().enumerate() {
            let (s, c) = run(envoy, &token, n).await;
            totals[i].0 += s;
            totals[i].1 += c;
        }
    }
    for (name, (s, c)) in ["tcp", "uds"].iter().zip(totals) {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / (2 * n) as f64;
        println!("{name}: sequential {:.1} µs/request, {CONCURRENCY} concurrent {:.1} µs/request", per(s), per(c));
    }
    assert_eq!(envoy_uds.stat("http.inbound.ext_authz.error").await, 0);
    assert!(envoy_uds.stat("http.inbound.ext_authz.ok").await >= (4 * n) as u64);
    assert!(envoy_tcp.stat("http.inbound.ext_authz.ok").await >= (4 * n) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listen_takes_admin_off_the_scraped_port() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let hopauth = start_hopauth(&config_yaml(&jwks.url(), "", "admin_listen: 127.0.0.1:0")).await;
    let admin = hopauth.admin_addr.expect("admin_listen bound");
    assert_ne!(admin, hopauth.http_addr);
    let client = reqwest::Client::new();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let revoke = |addr: std::net::SocketAddr| {
        client
            .post(format!("http://{addr}/admin/revoke"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "jti": "j-1", "exp": exp }))
            .send()
    };
    assert_eq!(revoke(hopauth.http_addr).await.unwrap().status(), 404, "no /admin on http_listen");
    assert_eq!(hopauth.authorizer.revocation().entries().0, 0);
    let r = revoke(admin).await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(hopauth.authorizer.revocation().entries().0, 1, "the revocation was applied");
    // The side port keeps what probes and Prometheus need; the admin port only /admin.
    let get = |url: String| client.get(url).send();
    assert_eq!(get(format!("http://{}/metrics", hopauth.http_addr)).await.unwrap().status(), 200);
    assert_eq!(get(format!("http://{admin}/metrics")).await.unwrap().status(), 404);
    hopauth.shutdown().await;
}
