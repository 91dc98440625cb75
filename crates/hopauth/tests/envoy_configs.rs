//! Every Envoy config shipped in `envoy/` is started and serves traffic: the sidecar
//! (inbound with ext_authz and RBAC on claims, outbound, access log with the verified
//! `sub`) and the edge gateway (per-route policy, its own health route). `hopauth.yaml` is
//! served by tests/envoy_e2e; the chain of sidecars by tests/chain.rs; the configs in
//! k8s/ by tests/k8s_configs.rs.

use hopauth_testkit as support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hopauth::server::Running;
use serde_json::Value;
use support::*;

/// Every config in `envoy/`, and the test that serves traffic through it.
const SHIPPED: [(&str, &str); 5] = [
    ("hopauth.yaml", "crates/hopauth/tests/envoy_e2e (support::Stack)"),
    ("hopauth-mtls.yaml", "crates/hopauth/tests/grpc_tls_envoy.rs"),
    ("sidecar.yaml", "crates/hopauth/tests/envoy_configs.rs sidecar_*, chain.rs"),
    ("gateway.yaml", "crates/hopauth/tests/envoy_configs.rs gateway_*, chain.rs"),
    ("module.yaml", "crates/hopauth-envoy/tests/module.rs (in-process mode)"),
];

#[test]
fn every_shipped_envoy_config_has_a_traffic_test() {
    let mut found: Vec<String> = std::fs::read_dir(repo_root().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json"))
        .collect();
    found.sort();
    let mut known: Vec<String> = SHIPPED.iter().map(|(f, _)| f.to_string()).collect();
    known.sort();
    assert_eq!(found, known, "a config in envoy/ without a test that sends traffic through it (add it to SHIPPED)");
}

/// Every shipped Envoy config that health-checks an ext_authz hopauth cluster marks it
/// unhealthy only after 3 failed probes in a row: with `healthy_panic_threshold: 0`, one
/// probe that is slow under overload would otherwise refuse every Check until the next one.
#[test]
fn shipped_health_checks_ride_out_one_slow_probe() {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(repo_root().join("envoy")).unwrap().map(|e| e.unwrap().path()).collect();
    files.push(repo_root().join("k8s/base/envoy.yaml"));
    let mut checked = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let clusters = config["static_resources"]["clusters"].as_sequence().cloned().unwrap_or_default();
        for cluster in clusters.iter().filter(|c| c["name"].as_str() == Some("hopauth")) {
            let checks = cluster["health_checks"].as_sequence().expect("the hopauth cluster is health-checked");
            for check in checks {
                let threshold = check["unhealthy_threshold"].as_u64();
                assert_eq!(threshold, Some(3), "{}: hopauth's unhealthy_threshold", file.display());
            }
            checked.push(file.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    checked.sort();
    assert_eq!(checked, ["envoy.yaml", "gateway.yaml", "hopauth-mtls.yaml", "hopauth.yaml", "sidecar.yaml"]);
}

struct Fixture {
    keys: Keys,
    _jwks: JwksServer,
    hopauth: Running,
    client: reqwest::Client,
    logs: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        Self::start_listening(None).await
    }

    /// hopauth on the Unix socket `grpc.sock` in the fixture's temp dir (the sidecar default).
    async fn start_unix() -> Fixture {
        Self::start_listening(Some("grpc.sock")).await
    }

    fn socket(&self) -> PathBuf {
        self.log_path("grpc.sock")
    }

    async fn start_listening(socket: Option<&str>) -> Fixture {
        let keys = Keys::generate();
        let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
        let logs = tempfile::tempdir().unwrap();
        let mut yaml = config_yaml(&jwks.url(), "", "");
        if let Some(name) = socket {
            let listen = format!("grpc_listen: unix:{}", logs.path().join(name).display());
            yaml = yaml.replace("grpc_listen: 127.0.0.1:0", &listen);
        }
        let hopauth = start_hopauth(&yaml).await;
        wait_ready(&hopauth).await;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        Fixture { keys, _jwks: jwks, hopauth, client, logs }
    }

    fn token(&self, sub: &str, patch: &[(&str, Value)]) -> String {
        let mut c = claims(sub);
        for (k, v) in patch {
            c[*k] = v.clone();
        }
        bearer(&self.keys.es.sign_jwt(&c).unwrap())
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.logs.path().join(name)
    }

    async fn get(&self, url: String, headers: &[(&str, &str)]) -> Reply {
        send(&self.client, &url, headers).await
    }
}

fn access_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Waits until the access log at `path` has a line for `request_path` with `status`
/// (and, when given, from `listener`); returns it.
async fn log_line_from(path: &Path, listener: Option<&str>, request_path: &str, status: u16) -> Value {
    let find = || {
        access_log(path).into_iter().find(|l| {
            l["path"] == request_path && l["status"] == status && listener.is_none_or(|name| l["listener"] == name)
        })
    };
    wait_until(&format!("access log line {request_path} {status}"), Duration::from_secs(5), || async {
        find().is_some()
    })
    .await;
    find().unwrap()
}

async fn log_line(path: &Path, request_path: &str, status: u16) -> Value {
    log_line_from(path, None, request_path, status).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_inbound_verifies_rbac_reads_claims_and_access_log_names_sub() {
    // The shipped sidecar reaches hopauth over the Unix socket (its `pipe` cluster address).
    let f = Fixture::start_unix().await;
    let app = start_echo().await;
    let (inbound, outbound) = (pick_port(), pick_port());
    let log = f.log_path("sidecar.log");
    // next_service is this sidecar's own inbound listener: the outbound path is exercised
    // end to end (outbound → h2c → inbound → ext_authz → app) with one Envoy.
    let envoy = Envoy::start_with_pipe(
        "sidecar.yaml",
        &f.socket(),
        &[
            ("port_value: 10000", format!("port_value: {inbound}")),
            ("port_value: 10001", format!("port_value: {outbound}")),
            ("port_value: 10002", format!("port_value: {inbound}")),
            ("port_value: 8080", format!("port_value: {}", app.port())),
            ("path: /dev/stdout", format!("path: {}", log.display())),
        ],
    )
    .await;
    let at = |path: &str| format!("http://127.0.0.1:{inbound}{path}");
    let alice = f.token("alice", &[]);

    // Inbound: a valid token passes with identity; none is 401 from hopauth.
    let r = f.get(at("/x"), &[("authorization", &alice), ("x-jwt-sub", "root")]).await;
    assert_eq!((r.status, r.upstream_header("x-jwt-sub")), (200, Some("alice")), "{r:?}");
    assert_eq!(r.upstream_header("authorization"), Some(alice.as_str()), "token forwarded unchanged");
    let r = f.get(at("/x"), &[]).await;
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer realm=\"hopauth\"")), "{r:?}");
    // A header spelled with underscores could alias an identity header in some apps.
    let r = f.get(at("/x"), &[("authorization", &alice), ("x_jwt_sub", "root")]).await;
    assert_eq!(r.status, 400, "{r:?}");

    // Access log: the verified sub from ext_authz dynamic metadata; none on a deny.
    let line = log_line(&log, "/x", 200).await;
    assert_eq!(line["sub"], "alice", "{line}");
    assert_eq!(line["iss"], ISSUER, "{line}");
    assert_eq!(line["listener"], "inbound", "{line}");
    let line = log_line(&log, "/x", 401).await;
    assert!(line["sub"].is_null(), "{line}");

    // context_extensions: /orders requires scope orders:read.
    let r = f.get(at("/orders/1"), &[("authorization", &f.token("alice", &[("scope", "profile".into())]))]).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.header("www-authenticate").unwrap().contains("error=\"insufficient_scope\""), "{r:?}");
    assert_eq!(f.get(at("/orders/1"), &[("authorization", &alice)]).await.status, 200);

    // RBAC on claims (after ext_authz): /admin needs roles ∋ admin, or sub ops-bot.
    let r = f.get(at("/admin/users"), &[("authorization", &alice)]).await;
    assert_eq!(r.status, 403, "alice has no admin role: {r:?}");
    assert_eq!(r.body, Value::String("RBAC: access denied".into()), "{r:?}");
    let viewer = f.token("alice", &[("roles", serde_json::json!(["viewer"]))]);
    assert_eq!(f.get(at("/admin/users"), &[("authorization", &viewer)]).await.status, 403);
    let admin = f.token("alice", &[("roles", serde_json::json!(["viewer", "admin"]))]);
    let r = f.get(at("/admin/users"), &[("authorization", &admin)]).await;
    assert_eq!((r.status, r.upstream_header("x-jwt-sub")), (200, Some("alice")), "{r:?}");
    let bot = f.token("ops-bot", &[]);
    assert_eq!(f.get(at("/admin/users"), &[("authorization", &bot)]).await.status, 200);
    // No token on an RBAC route: hopauth answers first (401), RBAC never sees it.
    assert_eq!(f.get(at("/admin/users"), &[]).await.status, 401);
    assert!(envoy.stat("http.inbound.rbac.denied").await >= 2);
    assert!(envoy.stat("http.inbound.rbac.allowed").await >= 2);

    // Outbound: carries what the app sends to the next hop, which verifies it.
    let out = |path: &str| format!("http://127.0.0.1:{outbound}{path}");
    let r = f.get(out("/y"), &[("authorization", &alice)]).await;
    assert_eq!((r.status, r.upstream_header("x-jwt-sub")), (200, Some("alice")), "{r:?}");
    let r = f.get(out("/y"), &[("x-jwt-sub", "alice")]).await;
    assert_eq!(r.status, 401, "the next hop refuses a call without a token: {r:?}");
    // One request id across the hop: the outbound line and the next inbound line agree.
    let out_line = log_line_from(&log, Some("outbound"), "/y", 200).await;
    let in_line = log_line_from(&log, Some("inbound"), "/y", 200).await;
    assert_eq!(out_line["request_id"], in_line["request_id"], "{out_line} {in_line}");
    assert_eq!(in_line["sub"], "alice", "{in_line}");

    assert_eq!(envoy.stat("http.inbound.ext_authz.error").await, 0);
    assert_eq!(envoy.stat("http.outbound.ext_authz.ok").await, 0, "no ext_authz on outbound");

    // The socket has the documented mode and goes away at shutdown.
    use std::os::unix::fs::PermissionsExt;
    let socket = f.socket();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, hopauth::listener::SOCKET_MODE, "{mode:o}");
    let Fixture { hopauth, logs: _logs, .. } = f;
    hopauth.shutdown().await;
    assert!(!socket.exists(), "{} left behind", socket.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_applies_route_policy_and_logs_sub() {
    let f = Fixture::start().await;
    let app = start_echo().await;
    let port = pick_port();
    let log = f.log_path("gateway.log");
    let envoy = Envoy::start_with(
        "gateway.yaml",
        f.hopauth.grpc_addr,
        &[
            ("port_value: 10000", format!("port_value: {port}")),
            ("port_value: 9001", format!("port_value: {}", f.hopauth.grpc_addr.port())),
            ("port_value: 8080", format!("port_value: {}", app.port())),
            ("path: /dev/stdout", format!("path: {}", log.display())),
        ],
    )
    .await;
    let at = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let alice = f.token("alice", &[]);

    let r = f.get(at("/api/x"), &[("authorization", &alice), ("x-request-id", "chosen-by-client")]).await;
    assert_eq!((r.status, r.upstream_header("x-jwt-sub")), (200, Some("alice")), "{r:?}");
    let id = r.upstream_header("x-request-id").expect("the gateway sets x-request-id");
    assert_ne!(id, "chosen-by-client", "the edge replaces a client's request id");
    assert_eq!(log_line(&log, "/api/x", 200).await["sub"], "alice");

    let r = f.get(at("/api/x"), &[]).await;
    assert_eq!(r.status, 401, "{r:?}");

    // The gateway's own health route: answered by Envoy, no token, no Check.
    let checks = envoy.stat("http.edge.ext_authz.ok").await + envoy.stat("http.edge.ext_authz.denied").await;
    let r = f.get(at("/healthz"), &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, Some("ok\n")), "{r:?}");
    let after = envoy.stat("http.edge.ext_authz.ok").await + envoy.stat("http.edge.ext_authz.denied").await;
    assert_eq!(after, checks);

    // Per-route context_extensions.
    let r = f.get(at("/public/home"), &[("x-jwt-sub", "root")]).await;
    assert_eq!((r.status, r.upstream_header("x-jwt-sub")), (200, None), "anonymous route, no identity: {r:?}");
    let r = f.get(at("/admin/users"), &[("authorization", &alice)]).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.header("www-authenticate").unwrap().contains("scope=\"admin\""), "{r:?}");
    let admin = f.token("root", &[("scope", "admin".into())]);
    assert_eq!(f.get(at("/admin/users"), &[("authorization", &admin)]).await.status, 200);
    assert_eq!(f.get(at("/orders/7"), &[("authorization", &alice)]).await.status, 200);
    let r = f.get(at("/orders/7"), &[("authorization", &f.token("alice", &[("scope", "profile".into())]))]).await;
    assert_eq!(r.status, 403, "{r:?}");

    assert_eq!(envoy.stat("http.edge.ext_authz.error").await, 0);
}
