//! envoy/hopauth-mtls.yaml through a real Envoy: Envoy asks a hopauth that listens with
//! `grpc_tls` and `client_ca_file`, presenting a client certificate from the CA hopauth
//! trusts and checking hopauth's certificate (CA and DNS name); decisions pass end to end.
//! Without a client certificate (or with one from another CA) hopauth refuses the TLS
//! handshake, Envoy's health check fails, and Envoy answers its documented JSON 503, while
//! an Envoy with the right certificate keeps being served by the same hopauth.

use hopauth_testkit as support;
use hopauth_testkit::pki;

use std::net::SocketAddr;
use std::time::Duration;

use pki::Pki;
use support::*;

/// The name in hopauth's certificate that envoy/hopauth-mtls.yaml checks (`sni`, SAN matcher).
const HOPAUTH_NAME: &str = "hopauth.auth.svc.cluster.local";
const CONFIG: &str = "hopauth-mtls.yaml";
/// The client certificate block of envoy/hopauth-mtls.yaml, removed for "no certificate".
const CLIENT_CERT: &str =
    "          tls_certificates:                           # this Envoy's client certificate (mTLS)
          - certificate_chain: { filename: /etc/envoy/tls/tls.crt }
            private_key: { filename: /etc/envoy/tls/tls.key }
            watched_directory: { path: /etc/envoy/tls }   # honoured only with file-based SDS (see the top)
";

/// Server CA (signs hopauth's certificate, trusted by Envoy), client CA (signs Envoy's
/// certificate, hopauth's `client_ca_file`), and a CA nobody trusts.
fn pki() -> Pki {
    let pki = Pki::new();
    for ca in ["server-ca", "client-ca", "other-ca"] {
        pki.ca(ca);
    }
    pki.server("hopauth", "server-ca", &[&format!("DNS:{HOPAUTH_NAME}")]);
    pki.client("envoy", "client-ca");
    pki.client("stranger", "other-ca");
    pki.secret_dir("hopauth-tls", "hopauth", "client-ca");
    pki
}

/// hopauth on `127.0.0.1:port` with TLS, requiring client certificates when `mtls`.
async fn hopauth(pki: &Pki, jwks: &JwksServer, port: u16, mtls: bool) -> hopauth::server::Running {
    let dir = pki.path("hopauth-tls");
    let ca = if mtls { format!("\n  client_ca_file: {}", dir.join("ca.crt").display()) } else { String::new() };
    let tls = format!(
        "grpc_tls:\n  cert_file: {}\n  key_file: {}{ca}\n",
        dir.join("tls.crt").display(),
        dir.join("tls.key").display()
    );
    let yaml = config_yaml(&jwks.url(), "", &tls)
        .replace("grpc_listen: 127.0.0.1:0", &format!("grpc_listen: 127.0.0.1:{port}"));
    let running = start_hopauth(&yaml).await;
    wait_ready(&running).await;
    running
}

/// envoy/hopauth-mtls.yaml with its files in `tls_dir`, hopauth's Service name pointed at
/// 127.0.0.1 (the certificate's name is still what is checked), and `extra` replacements.
async fn envoy(tls_dir: &std::path::Path, hopauth: SocketAddr, app: SocketAddr, extra: &[(&str, String)]) -> Envoy {
    let mut replacements = vec![
        ("port_value: 10000", format!("port_value: {}", pick_port())),
        ("port_value: 9001", format!("port_value: {}", hopauth.port())),
        ("port_value: 8080", format!("port_value: {}", app.port())),
        ("address: hopauth.auth.svc.cluster.local", "address: 127.0.0.1".to_string()),
        ("/etc/envoy/tls", tls_dir.display().to_string()),
    ];
    replacements.extend(extra.iter().cloned());
    Envoy::start_with(CONFIG, hopauth, &replacements).await
}

/// The health flags Envoy's /clusters shows for hopauth's host (`healthy`, `/failed_active_hc`, …).
async fn hopauth_health(envoy: &Envoy, hopauth: SocketAddr) -> String {
    let text = reqwest::get(format!("http://{}/clusters", envoy.admin)).await.unwrap().text().await.unwrap();
    let key = format!("hopauth::{hopauth}::health_flags::");
    text.lines().find_map(|l| l.trim().strip_prefix(&key).map(str::to_string)).unwrap_or_default()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_asks_hopauth_over_mutual_tls_and_every_decision_passes() {
    let pki = pki();
    let envoy_tls = pki.secret_dir("envoy-tls", "envoy", "server-ca");
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let hopauth = hopauth(&pki, &jwks, pick_port(), true).await;
    let app = start_echo().await;
    let envoy = envoy(&envoy_tls, hopauth.grpc_addr, app, &[]).await;
    let client = client();

    let token = keys.es.sign_jwt(&claims("alice")).unwrap();
    let r = send(&client, &envoy.url("/x"), &[("authorization", &bearer(&token))]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.upstream_header("x-jwt-sub"), Some("alice"), "{r:?}");
    let r = send(&client, &envoy.url("/x"), &[]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"hopauth\""), "{r:?}");
    let r = send(&client, &envoy.url("/x"), &[("authorization", "Bearer not.a.token")]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["error"], "invalid_token", "{r:?}");
    assert_eq!(r.header("retry-after"), None, "hopauth's own deny, not Envoy's local reply: {r:?}");

    // The Checks went over TLS with our client certificate, and none failed.
    assert!(envoy.stat("cluster.hopauth.ssl.handshake").await >= 1);
    assert_eq!(envoy.stat("cluster.hopauth.ssl.connection_error").await, 0, "{}", envoy.log());
    assert_eq!(envoy.stat("http.ingress.ext_authz.error").await, 0);
    assert_eq!(envoy.stat("http.ingress.ext_authz.ok").await, 1);
    assert_eq!(envoy.stat("http.ingress.ext_authz.denied").await, 2);
    hopauth.shutdown().await;
}

/// An Envoy that presents `identity` (None: the client certificate block removed) to a
/// hopauth that starts requiring client certificates: refused, JSON 503; an Envoy with the
/// right certificate is served by that same hopauth.
async fn refused_envoy_answers_the_json_503(identity: Option<&str>) {
    let shipped = std::fs::read_to_string(repo_root().join("envoy").join(CONFIG)).unwrap();
    assert!(shipped.contains(CLIENT_CERT), "envoy/{CONFIG} changed: update CLIENT_CERT");
    let pki = pki();
    let good_tls = pki.secret_dir("envoy-tls", "envoy", "server-ca");
    let refused_tls = pki.secret_dir("refused-tls", identity.unwrap_or("envoy"), "server-ca");
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let app = start_echo().await;
    let port = pick_port();
    let token = bearer(&keys.es.sign_jwt(&claims("alice")).unwrap());
    let client = client();

    // While hopauth asks for no client certificate, the refused Envoy is healthy and served.
    let plain = hopauth(&pki, &jwks, port, false).await;
    let addr = plain.grpc_addr;
    let extra = if identity.is_none() { vec![(CLIENT_CERT, String::new())] } else { vec![] };
    let refused = envoy(&refused_tls, addr, app, &extra).await;
    let r = send(&client, &refused.url("/x"), &[("authorization", &token)]).await;
    assert_eq!(r.status, 200, "{r:?}");

    // hopauth restarts on the same port with client_ca_file.
    plain.shutdown().await;
    let mtls = hopauth(&pki, &jwks, port, true).await;
    let good = envoy(&good_tls, addr, app, &[]).await; // returns once its health check passed
    let r = send(&client, &good.url("/x"), &[("authorization", &token)]).await;
    assert_eq!(r.status, 200, "the same hopauth serves an Envoy with the right certificate: {r:?}");

    let errors = refused.stat("cluster.hopauth.ssl.connection_error").await;
    wait_until("the refused Envoy's TLS handshakes fail", Duration::from_secs(10), || async {
        refused.stat("cluster.hopauth.ssl.connection_error").await >= errors + 2
    })
    .await;
    // Unhealthy after `unhealthy_threshold` (3) failed probes, one a second.
    wait_until("hopauth to be unhealthy for the refused Envoy", Duration::from_secs(10), || async {
        hopauth_health(&refused, addr).await.contains("failed_active_hc")
    })
    .await;
    let r = send(&client, &refused.url("/x"), &[("authorization", &token)]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    assert_eq!(r.header("retry-after"), Some("5"), "{r:?}");
    assert_eq!(r.body["error"], "temporarily_unavailable", "{r:?}");
    assert!(r.body.get("headers").is_none(), "the app never saw the request: {r:?}");
    assert!(refused.stat("http.ingress.ext_authz.error").await >= 1);
    assert_eq!(refused.stat("http.ingress.ext_authz.failure_mode_allowed").await, 0);
    assert_eq!(good.stat("cluster.hopauth.ssl.connection_error").await, 0, "{}", good.log());
    mtls.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_without_a_client_certificate_is_refused_and_answers_the_json_503() {
    refused_envoy_answers_the_json_503(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_with_a_certificate_from_another_ca_is_refused_and_answers_the_json_503() {
    refused_envoy_answers_the_json_503(Some("stranger")).await;
}
