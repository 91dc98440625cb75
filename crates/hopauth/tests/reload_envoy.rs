//! `kill -HUP` under traffic through a real Envoy (ext_authz to a `hopauth serve` process):
//! continuous requests see no failure across the reload, and the changed config is in force
//! afterwards. Plain (envoy/hopauth.yaml: a new provider appears) and over mTLS
//! (envoy/hopauth-mtls.yaml: the same SIGHUP rotates hopauth's certificate and changes the
//! config; every connection Envoy opens afterwards is served the new certificate, told
//! apart by its key type in Envoy's handshake stats, and every decision keeps passing).

use hopauth_testkit as support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::load::Conn;
use support::pki::{Key, Pki};
use support::process::ServeProcess;
use support::*;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hopauth"))
}

/// `config_yaml` with the listeners on `grpc` and `http`, the audiences given, `providers`
/// appended to the list and `top` at the top level.
fn config(jwks: &str, grpc: SocketAddr, http: SocketAddr, audiences: &str, providers: &str, top: &str) -> String {
    config_yaml(jwks, providers, top)
        .replace("grpc_listen: 127.0.0.1:0", &format!("grpc_listen: {grpc}"))
        .replace("http_listen: 127.0.0.1:0", &format!("http_listen: {http}"))
        .replace(&format!("audiences: [{AUDIENCE}]"), &format!("audiences: [{audiences}]"))
}

/// Writes `bytes` to `path` in one rename, as kubelet swaps a mounted ConfigMap or Secret
/// (and as Envoy's `watched_directory` notices).
fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("swap");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Replacements the tests make to the shipped Envoy files: ports, and a Check deadline of 1 s
/// instead of 0.2 s so that a busy 2-core CI machine cannot turn a slow answer into a
/// failure that has nothing to do with the reload.
fn ports(hopauth: SocketAddr, app: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("port_value: 10000", format!("port_value: {}", pick_port())),
        ("port_value: 9001", format!("port_value: {}", hopauth.port())),
        ("port_value: 8080", format!("port_value: {}", app.port())),
        ("timeout: 0.2s", "timeout: 1s".to_string()),
    ]
}

/// `GET /x` through Envoy with `token` over four keep-alive connections until stopped; every
/// answer must be a 200 that reached the app as `alice`.
struct Traffic {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(envoy: &Envoy, token: &str) -> Traffic {
        let stop: Arc<AtomicBool> = Arc::default();
        let done: Arc<AtomicUsize> = Arc::default();
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let auth = bearer(token);
        let tasks = (0..4)
            .map(|_| {
                let (stop, done, failures, auth, port) =
                    (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&failures), auth.clone(), envoy.port);
                tokio::spawn(async move {
                    let mut conn = Conn::connect(port).await.unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        match conn.get("/x", &[("authorization", &auth)]).await {
                            Ok(r) if r.status == 200 && r.upstream_saw_sub("alice") => {}
                            Ok(r) => failures.lock().unwrap().push(format!("{} {}", r.status, r.body_text())),
                            Err(e) => failures.lock().unwrap().push(format!("I/O: {e}")),
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Traffic { stop, done, failures, tasks }
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits until `more` further requests were answered.
    async fn wait_more(&self, more: usize) {
        let target = self.done() + more;
        wait_until("the traffic to go on", Duration::from_secs(30), || async { self.done() >= target }).await;
    }

    /// Stops; (requests sent, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.done.load(Ordering::Relaxed), failures)
    }
}

/// The status of one `GET /x` through Envoy with `token`.
async fn status(envoy: &Envoy, token: &str) -> u16 {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    send(&client, &envoy.url("/x"), &[("authorization", &bearer(token))]).await.status
}

const PARTNER: &str = "https://partner.test";

/// A second provider, `partner`, with its own issuer and JWKS.
fn partner_provider(jwks: &str) -> String {
    format!(
        "  - name: partner\n    issuer: {PARTNER}\n    audiences: [{AUDIENCE}]\n    algorithms: [ES256]\n    \
         jwks:\n      uri: {jwks}\n"
    )
}

fn assert_no_failures(traffic: (usize, Vec<String>), what: &str) -> usize {
    let (done, failures) = traffic;
    assert!(
        failures.is_empty(),
        "{} of {done} requests through Envoy failed across {what}: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_under_traffic_through_envoy_adds_a_provider_without_a_failed_request() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let partner_keys = Keys::generate();
    let partner_jwks = JwksServer::start(partner_keys.jwks(), PARTNER).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hopauth.yaml");
    let (grpc, http) = (free_addr(), free_addr());
    std::fs::write(&path, config(&jwks.url(), grpc, http, AUDIENCE, "", "")).unwrap();
    let mut hopauth = ServeProcess::spawn(bin(), &path, dir.path().join("log"), grpc, http);
    hopauth.wait_ready().await;
    let app = start_echo().await;
    let envoy = Envoy::start_with("hopauth.yaml", grpc, &ports(grpc, app)).await;

    let alice = keys.es.sign_jwt(&claims("alice")).unwrap();
    let mut c = claims("pat");
    c["iss"] = json!(PARTNER);
    let partner = partner_keys.es.sign_jwt(&c).unwrap();
    assert_eq!(status(&envoy, &partner).await, 401, "no provider has the partner issuer yet");

    let traffic = Traffic::start(&envoy, &alice);
    traffic.wait_more(100).await;
    replace_file(
        &path,
        config(&jwks.url(), grpc, http, AUDIENCE, &partner_provider(&partner_jwks.url()), "").as_bytes(),
    );
    hopauth.signal("HUP");
    wait_until("the partner's token to be allowed through Envoy", Duration::from_secs(15), || async {
        status(&envoy, &partner).await == 200
    })
    .await;
    hopauth.wait_log("config reloaded", Duration::from_secs(5)).await;
    traffic.wait_more(100).await;
    let done = assert_no_failures(traffic.finish().await, "the reload");

    assert_eq!(envoy.stat("http.ingress.ext_authz.error").await, 0, "{}", envoy.log());
    assert_eq!(envoy.stat("http.ingress.ext_authz.failure_mode_allowed").await, 0);
    let metrics = hopauth.metrics().await;
    assert!(metrics.contains("hopauth_config_reloads_total{result=\"ok\"} 1"), "{metrics}");
    assert_eq!(hopauth.log_text().matches("hopauth serving").count(), 1, "one process, never restarted");
    println!("{done} requests through Envoy across the reload, none failed");
}

/// Envoy's TLS handshakes with hopauth signed by an EC key (the first certificate) and by
/// an RSA key (the rotated one), summed over the signature algorithms Envoy counts
/// (`cluster.hopauth.ssl.sigalgs.<name>`; resumed sessions count too).
async fn handshakes_by_key(envoy: &Envoy) -> (u64, u64) {
    let url = format!("http://{}/stats?filter=^cluster\\.hopauth\\.ssl\\.sigalgs\\.", envoy.admin);
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let (mut ec, mut rsa) = (0, 0);
    for line in text.lines() {
        let Some((name, value)) = line.split_once(": ") else { continue };
        let (Some(alg), Ok(n)) = (name.strip_prefix("cluster.hopauth.ssl.sigalgs."), value.trim().parse::<u64>())
        else {
            continue;
        };
        if alg.starts_with("ecdsa") {
            ec += n;
        } else if alg.starts_with("rsa") {
            rsa += n;
        }
    }
    (ec, rsa)
}

/// hopauth's TLS files as a mounted Secret (`tls.crt`, `tls.key`, `ca.crt`: the client CA).
fn hopauth_tls_config(dir: &Path) -> String {
    format!(
        "grpc_tls:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n",
        dir.join("tls.crt").display(),
        dir.join("tls.key").display(),
        dir.join("ca.crt").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sighup_rotates_the_mtls_certificate_and_changes_the_config_under_traffic_through_envoy() {
    const NAME: &str = "hopauth.auth.svc.cluster.local";
    let pki = Pki::new();
    for ca in ["server-ca", "client-ca"] {
        pki.ca(ca);
    }
    // The renewed certificate has another key type (RSA, the first one EC), so that Envoy's
    // handshake stats say which certificate each new connection was served.
    pki.server_with_key("hopauth-1", "server-ca", &[&format!("DNS:{NAME}")], Key::P256);
    pki.server_with_key("hopauth-2", "server-ca", &[&format!("DNS:{NAME}")], Key::Rsa2048);
    pki.client("envoy", "client-ca");
    let hopauth_tls: PathBuf = pki.secret_dir("hopauth-tls", "hopauth-1", "client-ca");
    let envoy_tls = pki.secret_dir("envoy-tls", "envoy", "server-ca");
    let read = |name: &str| std::fs::read(pki.path(name)).unwrap();

    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hopauth.yaml");
    let (grpc, http) = (free_addr(), free_addr());
    let tls = hopauth_tls_config(&hopauth_tls);
    std::fs::write(&path, config(&jwks.url(), grpc, http, AUDIENCE, "", &tls)).unwrap();
    let mut hopauth = ServeProcess::spawn(bin(), &path, dir.path().join("log"), grpc, http);
    hopauth.wait_ready().await;
    let app = start_echo().await;
    let mut replacements = ports(grpc, app);
    replacements.extend([
        ("address: hopauth.auth.svc.cluster.local", "address: 127.0.0.1".to_string()),
        ("/etc/envoy/tls", envoy_tls.display().to_string()),
        // New connections to hopauth all the time (each one a TLS handshake), so what a
        // new connection gets is seen while the traffic runs.
        (
            "explicit_http_config:",
            "common_http_protocol_options: { max_requests_per_connection: 25 }\n        explicit_http_config:".into(),
        ),
    ]);
    let envoy = Envoy::start_with("hopauth-mtls.yaml", grpc, &replacements).await;

    let alice = keys.es.sign_jwt(&claims("alice")).unwrap();
    let mut c = claims("bob");
    c["aud"] = json!("billing");
    let billing = keys.es.sign_jwt(&c).unwrap();
    assert_eq!(status(&envoy, &billing).await, 401, "billing is not an audience yet");
    let traffic = Traffic::start(&envoy, &alice);
    traffic.wait_more(100).await;
    let before = handshakes_by_key(&envoy).await;
    assert!(before.0 >= 1 && before.1 == 0, "handshakes before the rotation (EC, RSA): {before:?}");

    // The Secret is rotated (key, then certificate, each in one rename) and the config
    // changed; then one SIGHUP.
    replace_file(&hopauth_tls.join("tls.key"), &read("hopauth-2.key"));
    replace_file(&hopauth_tls.join("tls.crt"), &read("hopauth-2.crt"));
    let audiences = format!("{AUDIENCE}, billing");
    replace_file(&path, config(&jwks.url(), grpc, http, &audiences, "", &tls).as_bytes());
    hopauth.signal("HUP");
    hopauth.wait_log("TLS certificates reloaded", Duration::from_secs(10)).await;
    hopauth.wait_log("config reloaded", Duration::from_secs(15)).await;
    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    while status(&envoy, &billing).await != 200 {
        if tokio::time::Instant::now() > end {
            let stats = reqwest::get(format!("http://{}/stats?filter=hopauth", envoy.admin))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            panic!(
                "billing never allowed: {}\n{}\n{stats}\n{}",
                status(&envoy, &billing).await,
                hopauth.log_text(),
                envoy.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    traffic.wait_more(100).await;

    // Every connection Envoy opens from here is served the new certificate: the RSA
    // handshakes go on, the EC ones have stopped.
    let (old_key, new_key) = handshakes_by_key(&envoy).await;
    wait_until("Envoy to open new connections to hopauth", Duration::from_secs(30), || async {
        handshakes_by_key(&envoy).await.1 >= new_key + 3
    })
    .await;
    let (old_after, new_after) = handshakes_by_key(&envoy).await;
    assert_eq!(old_after, old_key, "a connection opened after the rotation got the old certificate");
    traffic.wait_more(100).await;
    let done = assert_no_failures(traffic.finish().await, "the certificate rotation and the reload");

    assert_eq!(status(&envoy, &billing).await, 200, "the new config is in force");
    assert_eq!(envoy.stat("cluster.hopauth.ssl.connection_error").await, 0, "{}", envoy.log());
    assert_eq!(envoy.stat("http.ingress.ext_authz.error").await, 0, "{}", envoy.log());
    let metrics = hopauth.metrics().await;
    assert!(metrics.contains("hopauth_config_reloads_total{result=\"ok\"} 1"), "{metrics}");
    assert_eq!(hopauth.log_text().matches("hopauth serving").count(), 1, "one process, never restarted");
    println!(
        "{done} requests through Envoy over mTLS across one SIGHUP (certificate and config), none failed; \
         handshakes with the old certificate: {old_after}, with the new: {new_after}"
    );
}
