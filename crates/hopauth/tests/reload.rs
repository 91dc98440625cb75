//! Signals to a real `hopauth serve` process: `kill -HUP` applies a changed config file while
//! a load loop sees every Check answered as before (and refuses an invalid file, naming the
//! key, with the old config still serving); SIGTERM lets a Check in flight finish, stops
//! accepting, and exits 0.

use hopauth_testkit as support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use support::process::{grpc_status, ServeProcess};
use support::*;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `config_yaml` with the listeners on `grpc` and `http`, the audiences given, and `extra`
/// under the provider.
fn config(jwks: &str, grpc: SocketAddr, http: SocketAddr, audiences: &str, extra: &str) -> String {
    config_yaml(jwks, "", "")
        .replace("grpc_listen: 127.0.0.1:0", &format!("grpc_listen: {grpc}"))
        .replace("http_listen: 127.0.0.1:0", &format!("http_listen: {http}"))
        .replace(&format!("audiences: [{AUDIENCE}]"), &format!("audiences: [{audiences}]{extra}"))
}

fn token(keys: &Keys, aud: &str) -> String {
    let mut c = claims("alice");
    c["aud"] = json!(aud);
    keys.es.sign_jwt(&c).unwrap()
}

/// Writes `text` to `path` in one rename, as kubelet swaps a ConfigMap's files.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Checks `token` over four connections until stopped; every answer must be `want`.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(hopauth: &ServeProcess, token: &str, want: i32) -> Load {
        let stop: Arc<AtomicBool> = Arc::default();
        let done: Arc<AtomicUsize> = Arc::default();
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let channel = hopauth.channel().await;
            let (stop, done, failures, token) =
                (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&failures), token.to_string());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match grpc_status(&channel, &token).await {
                        Ok(s) if s == want => {}
                        other => failures.lock().unwrap().push(format!("{other:?}")),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        Load { stop, done, failures, tasks }
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits until `more` further Checks were answered.
    async fn wait_more(&self, more: usize) {
        let target = self.done() + more;
        wait_until("the load loop to go on", Duration::from_secs(20), || async { self.done() >= target }).await;
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.done.load(Ordering::Relaxed), failures)
    }
}

fn metric(text: &str, series: &str) -> Option<String> {
    text.lines().find(|l| l.starts_with(series)).map(|l| l[series.len()..].trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_config_without_a_failed_check_and_refuses_an_invalid_one() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hopauth.yaml");
    let (grpc, http) = (free_addr(), free_addr());
    std::fs::write(&path, config(&jwks.url(), grpc, http, AUDIENCE, "")).unwrap();
    let mut hopauth = ServeProcess::spawn(bin(), &path, dir.path().join("log"), grpc, http);
    hopauth.wait_ready().await;

    let orders = token(&keys, AUDIENCE);
    let billing = token(&keys, "billing");
    let revoked = token(&keys, AUDIENCE);
    let channel = hopauth.channel().await;
    assert_eq!(grpc_status(&channel, &billing).await, Ok(401), "billing is not an audience yet");
    // A revocation in the memory store: the reload must keep it.
    let jti = jti_of(&revoked);
    let r = reqwest::Client::new()
        .post(format!("http://{http}/admin/revoke"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"jti": jti, "exp": now() + 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(grpc_status(&channel, &revoked).await, Ok(401));

    let load = Load::start(&hopauth, &orders, 200).await;
    load.wait_more(50).await;

    // A valid change: a second audience. The load loop's token stays allowed throughout.
    replace_file(&path, &config(&jwks.url(), grpc, http, &format!("{AUDIENCE}, billing"), ""));
    hopauth.signal("HUP");
    wait_until("the billing token to be allowed", Duration::from_secs(15), || async {
        grpc_status(&channel, &billing).await == Ok(200)
    })
    .await;
    let reloaded = hopauth.wait_log("config reloaded", Duration::from_secs(5)).await;
    assert!(reloaded.contains("revocation store"), "the store is kept warm: {reloaded}");
    assert_eq!(grpc_status(&channel, &revoked).await, Ok(401), "the memory store's revocation survives the reload");
    load.wait_more(50).await;

    // An invalid file: refused with the key named; the last good config keeps serving.
    replace_file(&path, &config(&jwks.url(), grpc, http, AUDIENCE, "\n    audience: [typo]"));
    hopauth.signal("HUP");
    let refused = hopauth.wait_log("config reload refused", Duration::from_secs(10)).await;
    assert!(refused.contains("providers[0]") && refused.contains("audience"), "names the key: {refused}");
    assert_eq!(grpc_status(&channel, &billing).await, Ok(200), "the old config still serves");

    // A listener change is not applied, and the log says so; the rest of the file is.
    let moved = free_addr();
    let text = config(&jwks.url(), grpc, moved, AUDIENCE, "");
    replace_file(&path, &text);
    hopauth.signal("HUP");
    let unapplied = hopauth.wait_log("listener settings are not reloaded", Duration::from_secs(10)).await;
    assert!(unapplied.contains("http_listen"), "{unapplied}");
    wait_until("billing refused again", Duration::from_secs(15), || async {
        grpc_status(&channel, &billing).await == Ok(401)
    })
    .await;
    load.wait_more(50).await;

    let (done, failures) = load.finish().await;
    assert!(failures.is_empty(), "{} of {done} Checks failed across the reloads: {:?}", failures.len(), &failures[..]);
    let text = hopauth.metrics().await;
    assert_eq!(metric(&text, "hopauth_config_reloads_total{result=\"ok\"}").as_deref(), Some("2"), "{text}");
    assert_eq!(metric(&text, "hopauth_config_reloads_total{result=\"error\"}").as_deref(), Some("1"));
    assert!(hopauth.log_text().matches("hopauth serving").count() == 1, "one process, never restarted");
    println!("{done} Checks during three reloads, none failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_removed_by_a_reload_leaves_no_series_on_metrics() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let partner = JwksServer::start(Keys::generate().jwks(), "https://partner.test").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hopauth.yaml");
    let (grpc, http) = (free_addr(), free_addr());
    let yaml = |providers: &str| {
        config_yaml(&jwks.url(), providers, "")
            .replace("grpc_listen: 127.0.0.1:0", &format!("grpc_listen: {grpc}"))
            .replace("http_listen: 127.0.0.1:0", &format!("http_listen: {http}"))
    };
    let second = format!(
        "  - name: partner\n    issuer: https://partner.test\n    audiences: [{AUDIENCE}]\n    \
         algorithms: [ES256]\n    jwks: {{uri: \"{}\"}}\n",
        partner.url()
    );
    std::fs::write(&path, yaml(&second)).unwrap();
    let mut hopauth = ServeProcess::spawn(bin(), &path, dir.path().join("log"), grpc, http);
    hopauth.wait_ready().await;
    let partner_series = "provider=\"partner\"";
    wait_until("the partner's keys to be fetched", Duration::from_secs(10), || async {
        hopauth.metrics().await.contains("hopauth_jwks_refresh_total{provider=\"partner\",result=\"success\"} 1")
    })
    .await;

    replace_file(&path, &yaml(""));
    hopauth.signal("HUP");
    hopauth.wait_log("config reloaded", Duration::from_secs(15)).await;
    let text = hopauth.metrics().await;
    let left: Vec<&str> = text.lines().filter(|l| l.contains(partner_series)).collect();
    assert!(left.is_empty(), "the removed provider's series are still exposed: {left:#?}");
    for kept in ["hopauth_jwks_key_age_seconds{provider=\"main\"}", "hopauth_jwks_keys{provider=\"main\"}"] {
        assert!(text.contains(kept), "the kept provider's series stay: {kept}\n{text}");
    }

    // A file refused while its core is built (the partner's series made, then a secret
    // variable found unset) leaves no series of the providers only it had.
    let ghost = "  - name: ghost\n    issuer: https://ghost.test\n    audiences: [orders]\n    \
                 algorithms: [HS256]\n    hmac_secret_env: HOPAUTH_TEST_NEVER_SET\n";
    replace_file(&path, &yaml(&format!("{second}{ghost}")));
    hopauth.signal("HUP");
    let refused = hopauth.wait_log("config reload refused", Duration::from_secs(15)).await;
    assert!(refused.contains("HOPAUTH_TEST_NEVER_SET"), "refused when its core was built: {refused}");
    let text = hopauth.metrics().await;
    let left: Vec<&str> =
        text.lines().filter(|l| l.contains(partner_series) || l.contains("provider=\"ghost\"")).collect();
    assert!(left.is_empty(), "a refused file's providers have series: {left:#?}");
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hopauth"))
}

fn jti_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["jti"].as_str().unwrap().to_string()
}

/// A JWKS endpoint that can be told to hold its answers until released.
#[derive(Clone)]
struct GatedJwks {
    jwks: Arc<Mutex<Value>>,
    open: tokio::sync::watch::Sender<bool>,
    waiting: Arc<AtomicUsize>,
}

impl GatedJwks {
    async fn start(jwks: Value) -> (GatedJwks, String) {
        let gate = GatedJwks {
            jwks: Arc::new(Mutex::new(jwks)),
            open: tokio::sync::watch::channel(true).0,
            waiting: Arc::default(),
        };
        let g = gate.clone();
        let app = Router::new().route(
            "/jwks.json",
            get(move || {
                let g = g.clone();
                async move {
                    g.waiting.fetch_add(1, Ordering::SeqCst);
                    let _ = g.open.subscribe().wait_for(|open| *open).await;
                    g.waiting.fetch_sub(1, Ordering::SeqCst);
                    Json(g.jwks.lock().unwrap().clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (gate, url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_check_in_flight_finish_stops_accepting_and_exits_zero() {
    let keys = Keys::generate();
    let (gate, url) = GatedJwks::start(jwks_of(&[&keys.es])).await;
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("hopauth.yaml");
    let (grpc, http) = (free_addr(), free_addr());
    let text = config(&url, grpc, http, AUDIENCE, "")
        .replace("kid_refetch_interval: 30s", "kid_refetch_interval: 100ms\n      kid_refetch_wait: 1s");
    std::fs::write(&path, text).unwrap();
    let mut hopauth = ServeProcess::spawn(bin(), &path, dir.path().join("log"), grpc, http);
    hopauth.wait_ready().await;
    let channel = hopauth.channel().await;

    // A token whose key the JWKS will only serve once released: its Check waits in flight
    // for the refetch.
    let rotated = hopauth_core::sign::SigningKey::generate(hopauth_core::alg::Alg::ES256, "es-2").unwrap();
    *gate.jwks.lock().unwrap() = jwks_of(&[&keys.es, &rotated]);
    gate.open.send_replace(false);
    let held = rotated.sign_jwt(&claims("bob")).unwrap();
    let in_flight = tokio::spawn({
        let channel = channel.clone();
        async move { grpc_status(&channel, &held).await }
    });
    wait_until("the refetch to reach the JWKS", Duration::from_secs(5), || async {
        gate.waiting.load(Ordering::SeqCst) > 0
    })
    .await;

    hopauth.signal("TERM");
    wait_until("the gRPC listener to stop accepting", Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(grpc).await.is_err()
    })
    .await;
    assert!(!in_flight.is_finished(), "the Check is still in flight when the listener is gone");
    gate.open.send_replace(true);
    assert_eq!(in_flight.await.unwrap(), Ok(200), "the Check in flight got its answer, with the refetched key");
    let status = hopauth.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}: {}", hopauth.log_text());
    assert!(hopauth.log_text().contains("shutting down"));
}
