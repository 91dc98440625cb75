//! `grpc_tls`: TLS and mTLS on the gRPC listener, with certificates made by the testkit's
//! `pki` (a CA, server and client certificates, and a second CA nobody trusts), a real
//! tonic client, and a rotation of the files seen by new connections.

use hopauth_testkit as support;
use hopauth_testkit::pki;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hopauth::config::{Config, ConfigError};
use support::*;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The test's certificates (made by the testkit's `pki`, in one temp dir) and the files
/// hopauth is configured with.
struct Pki(pki::Pki);

impl Pki {
    /// CA `ca` (server and client `good`), CA `other` (client `stranger`), CA `next` (server `rotated`).
    fn new() -> Pki {
        let pki = pki::Pki::new();
        for name in ["ca", "other", "next"] {
            pki.ca(name);
        }
        pki.server("server", "ca", &["IP:127.0.0.1"]);
        pki.client("good", "ca");
        pki.client("stranger", "other");
        pki.server("rotated", "next", &["IP:127.0.0.1"]);
        Pki(pki)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }
    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
    /// The files hopauth is configured with (copies, so a rotation can replace them).
    fn install(&self, server: &str) {
        std::fs::copy(self.path(&format!("{server}.crt")), self.path("tls.crt")).unwrap();
        std::fs::copy(self.path(&format!("{server}.key")), self.path("tls.key")).unwrap();
    }
    fn grpc_tls(&self, mtls: bool) -> String {
        let ca = if mtls { format!("\n  client_ca_file: {}", self.path("ca.crt").display()) } else { String::new() };
        format!(
            "grpc_tls:\n  cert_file: {}\n  key_file: {}{ca}\n",
            self.path("tls.crt").display(),
            self.path("tls.key").display()
        )
    }
}

/// A health check over TLS trusting `trust`, presenting `identity` (a name in the PKI).
async fn check(addr: std::net::SocketAddr, pki: &Pki, trust: &str, identity: Option<&str>) -> Result<(), String> {
    let channel = connect(addr, pki, trust, identity).await?;
    serving(channel).await
}

async fn connect(
    addr: std::net::SocketAddr,
    pki: &Pki,
    trust: &str,
    identity: Option<&str>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.read(&format!("{trust}.crt"))));
    if let Some(name) = identity {
        tls = tls.identity(Identity::from_pem(pki.read(&format!("{name}.crt")), pki.read(&format!("{name}.key"))));
    }
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls.domain_name("127.0.0.1"))
        .map_err(|e| format!("{e:?}"))?
        .connect_timeout(Duration::from_secs(5));
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// A grpc.health.v1 Check answered over `channel` (either status: the TLS path is tested).
async fn serving(channel: Channel) -> Result<(), String> {
    HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map(drop)
        .map_err(|e| format!("{e:?}"))
}

async fn start(pki: &Pki, mtls: bool) -> hopauth::server::Running {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let hopauth = start_hopauth(&config_yaml(&jwks.url(), "", &pki.grpc_tls(mtls))).await;
    wait_ready(&hopauth).await;
    std::mem::forget(jwks); // keys stay served for the test's life
    hopauth
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_admits_only_clients_of_the_configured_ca() {
    let pki = Pki::new();
    pki.install("server");
    let hopauth = start(&pki, true).await;
    let addr = hopauth.grpc_addr;

    check(addr, &pki, "ca", Some("good")).await.expect("a client certificate from client_ca_file");
    let none = check(addr, &pki, "ca", None).await;
    assert!(none.is_err(), "no client certificate must be refused: {none:?}");
    let stranger = check(addr, &pki, "ca", Some("stranger")).await;
    assert!(stranger.is_err(), "a certificate from another CA must be refused: {stranger:?}");
    // Plain gRPC (no TLS) on the TLS port gets nothing.
    let plain = async {
        let channel =
            Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.map_err(|e| e.to_string())?;
        serving(channel).await
    };
    assert!(plain.await.is_err());
    hopauth.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_files_reach_new_connections() {
    let pki = Pki::new();
    pki.install("server");
    let hopauth = start(&pki, false).await;
    let addr = hopauth.grpc_addr;
    let before = connect(addr, &pki, "ca", None).await.expect("TLS with the first certificate");
    serving(before.clone()).await.unwrap();
    assert!(check(addr, &pki, "next", None).await.is_err(), "not rotated yet");

    // What cert-manager does: new files in place. A half-written pair (new cert, old key)
    // is refused and the old certificate keeps serving.
    std::fs::copy(pki.path("rotated.crt"), pki.path("tls.crt")).unwrap();
    signal_self_hup();
    wait_until("the mismatched pair to be refused", Duration::from_secs(15), || async {
        tls_reloads(&hopauth, "error").await >= 1.0
    })
    .await;
    check(addr, &pki, "ca", None).await.expect("the mismatched pair is refused; old certificate serves");
    assert_eq!(tls_reloads(&hopauth, "ok").await, 0.0, "nothing applied yet");
    std::fs::copy(pki.path("rotated.key"), pki.path("tls.key")).unwrap();
    signal_self_hup();
    wait_until("new connections present the rotated certificate", Duration::from_secs(15), || async {
        check(addr, &pki, "next", None).await.is_ok()
    })
    .await;
    assert_eq!(tls_reloads(&hopauth, "ok").await, 1.0, "the rotation is counted once");
    assert!(check(addr, &pki, "ca", None).await.is_err(), "the old certificate is gone for new connections");
    serving(before).await.expect("a connection from before the rotation keeps working");
    hopauth.shutdown().await;
}

/// `hopauth_tls_reloads_total{result}` as scraped from `/metrics`.
async fn tls_reloads(hopauth: &hopauth::server::Running, result: &str) -> f64 {
    metric_value(&scrape(hopauth).await, &format!("hopauth_tls_reloads_total{{result=\"{result}\"}}"))
}

/// SIGHUP to this test process: hopauth (in process) re-reads its certificate files.
fn signal_self_hup() {
    let status = Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn bad_tls_files_are_refused_naming_the_key() {
    let pki = Pki::new();
    let yaml = |cert: &str, key: &str| {
        format!(
            "{}grpc_tls:\n  cert_file: {}\n  key_file: {}\n",
            config_yaml("http://127.0.0.1:1/jwks", "", ""),
            pki.path(cert).display(),
            pki.path(key).display()
        )
    };
    let problems = |text: String| match Config::from_yaml(&text, Path::new("t.yaml")) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, got {other:?}"),
    };
    assert!(Config::from_yaml(&yaml("server.crt", "server.key"), Path::new("t.yaml")).is_ok());
    let p = problems(yaml("missing.crt", "server.key"));
    assert_eq!(p[0].key, "grpc_tls.cert_file", "{p:?}");
    assert!(p[0].message.contains("cannot read"), "{p:?}");
    let p = problems(yaml("server.crt", "good.key"));
    assert_eq!(p[0].key, "grpc_tls.key_file", "{p:?}");
    let p = problems(yaml("server.ext", "server.key"));
    assert_eq!(p[0].key, "grpc_tls.cert_file", "{p:?}");
    assert!(p[0].message.contains("no PEM certificate"), "{p:?}");
    let p = problems(yaml("server.crt", "server.crt"));
    assert_eq!(p[0].key, "grpc_tls.key_file", "{p:?}");
}
