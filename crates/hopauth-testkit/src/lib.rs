//! What hopauth's tests, benches, demo and soak share (publish = false): keys and token
//! makers, an echo upstream and hopauth in-process (this file); and
//! - [`jwks_server`]: a JWKS endpoint whose content, validators and faults the test sets;
//! - [`envoy`]: a real Envoy from the shipped `envoy/` configs, in either [`Mode`]
//!   (ext_authz to a sidecar, or the in-process module);
//! - [`stack`]: JWKS + hopauth + echo app + Envoy for an end-to-end test, in either mode;
//! - [`http1`]: HTTP/1.1 over std (a client and an echo upstream) for synchronous tests;
//! - [`redis_server`]: a real redis-server on a free port;
//! - [`fault_proxy`]: a TCP proxy that injects faults between two real parts;
//! - [`issuer_stack`]: Redis + the reference issuer + hopauth + Envoy, wired together;
//! - [`chain_service`], [`chain_stack`]: the A → B → C services, each behind its sidecar;
//! - [`load`], [`load_10k`]: raw HTTP/1.1 load and the 10 000-connection run;
//! - [`module_configs`]: Envoy configs in in-process mode (the dynamic module);
//! - [`check_request`]: ext_authz CheckRequests built as Envoy sends them;
//! - [`pki`]: test CAs and certificates made with `openssl`;
//! - [`process`]: `hopauth serve` as a child process (signals, exit codes);
//! - [`soak`]: the long soak and its oracle.

pub mod chain_service;
pub mod chain_stack;
pub mod check_request;
pub mod envoy;
pub mod fault_proxy;
pub mod http1;
pub mod issuer_stack;
pub mod jwks_server;
pub mod load;
pub mod load_10k;
pub mod module_configs;
pub mod pki;
pub mod process;
pub mod redis_server;
pub mod soak;
pub mod stack;

pub use envoy::{envoy_bin, module_dir, pick_port, sidecar_over_tcp, Authz, Envoy, Launch, Mode, SIDECAR_SOCKET};
pub use jwks_server::{httpdate, JwksServer, Misbehave, Validation};
pub use stack::{send, Reply, Stack};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::{Json, Router};
use hopauth::config::Config;
use hopauth::server::Running;
use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use serde_json::{json, Value};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "orders";

/// Polls `cond` until it holds or `deadline` passes; panics with `what` on timeout.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn now() -> i64 {
    hopauth_core::clock::unix_now()
}

/// One key of each family hopauth verifies.
pub struct Keys {
    pub es: SigningKey,
    pub rs: SigningKey,
    pub ps: SigningKey,
    pub ed: SigningKey,
}

impl Keys {
    pub fn generate() -> Self {
        Keys {
            es: SigningKey::generate(Alg::ES256, "es-1").unwrap(),
            rs: SigningKey::generate(Alg::RS256, "rs-1").unwrap(),
            ps: SigningKey::generate(Alg::PS256, "ps-1").unwrap(),
            ed: SigningKey::generate(Alg::EdDSA, "ed-1").unwrap(),
        }
    }

    pub fn jwks(&self) -> Value {
        jwks_of(&[&self.es, &self.rs, &self.ps, &self.ed])
    }
}

pub fn jwks_of(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}

/// Claims of a valid token for `sub`, expiring in 5 minutes.
pub fn claims(sub: &str) -> Value {
    let now = now();
    json!({
        "iss": ISSUER, "sub": sub, "aud": AUDIENCE, "iat": now, "nbf": now - 5, "exp": now + 300,
        "jti": format!("jti-{sub}-{}", rand_suffix()), "scope": "orders:read profile",
    })
}

pub fn rand_suffix() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    (N.fetch_add(1, Ordering::Relaxed) as u64) << 32 | u64::from(std::process::id())
}

/// An upstream app that answers 200 with the request headers it received, as JSON.
pub async fn start_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(|headers: HeaderMap| async move {
        let map: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), Value::String(String::from_utf8_lossy(v.as_bytes()).into())))
            .collect();
        Json(json!({ "headers": map }))
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A hopauth config with provider `main` (every public-key algorithm) on `jwks_url`;
/// `extra` is appended to the `providers:` list.
pub fn config_yaml(jwks_url: &str, extra_providers: &str, extra_top: &str) -> String {
    format!(
        r#"grpc_listen: 127.0.0.1:0
http_listen: 127.0.0.1:0
sources:
  - header: authorization
    prefix: "Bearer "
  - cookie: access_token
  - query: access_token
providers:
  - name: main
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    algorithms: [ES256, RS256, PS256, EdDSA]
    jwks:
      uri: {jwks_url}
      refresh_interval: 5m
      kid_refetch_interval: 30s
    leeway: 0s
    claims_to_headers:
      sub: x-jwt-sub
      scope: x-jwt-scope
    payload_header: x-jwt-payload
{extra_providers}
{extra_top}
"#
    )
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// hopauth in-process on loopback ports, once every provider has keys.
pub async fn start_hopauth(yaml: &str) -> Running {
    // SAFETY-free: set before any thread reads it; the value is the same in every test.
    if std::env::var("HOPAUTH_ADMIN_TOKEN").ok().as_deref() != Some(ADMIN_TOKEN) {
        // Tests in one binary share the process environment; all write the same value.
        unsafe_free_set_env("HOPAUTH_ADMIN_TOKEN", ADMIN_TOKEN);
    }
    let config = Config::from_yaml(yaml, std::path::Path::new("test.yaml")).expect("test config is valid");
    let running = hopauth::server::start(config).await.expect("hopauth starts");
    running
}

/// `std::env::set_var` is unsafe in edition 2024 only; this crate is 2021.
fn unsafe_free_set_env(k: &str, v: &str) {
    std::env::set_var(k, v);
}

/// Waits until hopauth is ready and every provider has its keys (readiness itself needs
/// only one provider by default).
pub async fn wait_ready(running: &Running) {
    let a = running.authorizer.clone();
    wait_until("hopauth ready with every provider's keys", Duration::from_secs(10), || {
        let a = a.clone();
        async move { a.ready() && a.verifier().providers().iter().all(|p| p.keys.usable()) }
    })
    .await;
}

/// The text of in-process hopauth's `/metrics`.
pub async fn scrape(running: &Running) -> String {
    let url = format!("http://{}/metrics", running.http_addr);
    let reply = reqwest::get(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    reply.text().await.unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// The value of `series` (a metric name with its labels, as exposed) in a Prometheus
/// text exposition; 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh directory under the system temp dir, unique to this process and call, for files
/// a test hands to a child process (configs, logs, sockets).
pub fn scratch_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("hopauth-test-{}-{tag}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A CheckRequest for `GET /x` carrying `token` as a bearer token, as Envoy sends it.
pub fn bearer_check(token: &str) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/x".into(),
                    headers: [("authorization".to_string(), bearer(token))].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The HTTP status the Check of `token` renders as (200 for an allow).
pub async fn check_status(svc: &hopauth::grpc::AuthorizationService, token: &str) -> i32 {
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    match svc.check_request(&bearer_check(token)).await.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(d)) => d.status.unwrap().code,
        other => panic!("{other:?}"),
    }
}
