//! The in-process fixture: a JWKS endpoint the test controls (content, delay), a
//! hopauth.yaml, Envoy from a shipped config (`envoy/module.yaml`, or `envoy/hopauth.yaml`
//! with hopauth serving ext_authz in this process, for byte comparisons), redis-server.
#![allow(dead_code)]
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use serde_json::{json, Value};

use crate::common::*;

pub(crate) const ISSUER: &str = "https://issuer.test";
pub(crate) const AUDIENCE: &str = "orders";
const STARTUP: Duration = Duration::from_secs(30);

/// A JWKS over HTTP whose keys and answer delay the test sets.
#[derive(Clone)]
pub(crate) struct Jwks {
    pub(crate) port: u16,
    body: Arc<Mutex<String>>,
    pub(crate) delay_ms: Arc<AtomicU64>,
    pub(crate) hits: Arc<AtomicU64>,
}

impl Jwks {
    pub(crate) fn start(keys: &[&SigningKey]) -> Jwks {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let jwks = Jwks {
            port: listener.local_addr().unwrap().port(),
            body: Arc::default(),
            delay_ms: Arc::default(),
            hits: Arc::default(),
        };
        jwks.publish(keys);
        let shared = jwks.clone();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let j = shared.clone();
                thread::spawn(move || j.answer(conn));
            }
        });
        jwks
    }

    pub(crate) fn publish(&self, keys: &[&SigningKey]) {
        let body = json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() });
        *self.body.lock().unwrap() = body.to_string();
    }

    fn answer(&self, mut conn: TcpStream) {
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst)));
        let body = self.body.lock().unwrap().clone();
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(resp.as_bytes());
    }
}

pub(crate) fn key(kid: &str) -> SigningKey {
    SigningKey::generate(Alg::ES256, kid).unwrap()
}

pub(crate) fn now() -> i64 {
    hopauth_core::clock::unix_now()
}

/// A valid token for `sub`, with `patch` merged into the claims.
pub(crate) fn token(key: &SigningKey, sub: &str, patch: Value) -> String {
    let now = now();
    let mut claims = json!({
        "iss": ISSUER, "sub": sub, "aud": AUDIENCE, "iat": now, "exp": now + 300,
        "jti": format!("jti-{sub}-{}", rand()), "scope": "orders:read profile",
    });
    for (k, v) in patch.as_object().unwrap() {
        claims[k] = v.clone();
    }
    key.sign_jwt(&claims).unwrap()
}

pub(crate) fn rand() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) << 32 | u64::from(std::process::id())
}

/// hopauth.yaml: provider `main` on the JWKS, provider `dead` whose JWKS never answers
/// usable keys (nothing listens on its port: its tokens get 503), `revocation` as given
/// (a YAML block, or empty).
pub(crate) fn hopauth_yaml(jwks: &Jwks, http_port: u16, revocation: &str) -> String {
    format!(
        r#"grpc_listen: 127.0.0.1:0
http_listen: 127.0.0.1:{http_port}
providers:
  - name: main
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    algorithms: [ES256]
    jwks:
      uri: http://127.0.0.1:{port}/jwks.json
      refresh_interval: 5m
      kid_refetch_interval: 100ms
      kid_refetch_wait: 1s
    leeway: 0s
    claims_to_headers:
      sub: x-jwt-sub
      scope: x-jwt-scope
    payload_header: x-jwt-payload
  - name: dead
    issuer: https://dead.test
    audiences: [{AUDIENCE}]
    algorithms: [ES256]
    jwks:
      uri: http://127.0.0.1:{dead}/jwks.json
{revocation}
"#,
        port = jwks.port,
        dead = dead_port(),
    )
}

/// A loopback port nothing listens on (held by nobody after the probe).
fn dead_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(free_port)
}

/// A real Envoy from a shipped config, ports rewritten; stopped on drop.
pub(crate) struct Envoy {
    child: Child,
    pub(crate) dir: PathBuf,
    pub(crate) listen: u16,
    pub(crate) admin: u16,
    pub(crate) echo: Echo,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    /// `envoy/<file>` with its ports replaced, `replacements` applied, `--concurrency n`.
    pub(crate) fn start(file: &str, replacements: &[(&str, String)], concurrency: u32) -> Result<Envoy, (i32, String)> {
        let dir = scratch_dir(file.trim_end_matches(".yaml"));
        let (listen, admin, echo) = (free_port(), free_port(), Echo::start());
        let mut text = std::fs::read_to_string(repo_root().join("envoy").join(file)).unwrap();
        let access_log = dir.join("access.log");
        let mut all = vec![
            ("port_value: 10000", format!("port_value: {listen}")),
            ("port_value: 9901", format!("port_value: {admin}")),
            ("port_value: 8080", format!("port_value: {}", echo.port)),
            ("path: /dev/stdout", format!("path: {}", access_log.display())),
        ];
        all.extend(replacements.iter().map(|(k, v)| (*k, v.clone())));
        for (from, to) in &all {
            assert!(text.contains(from), "envoy/{file} has no {from:?}");
            text = text.replacen(from, to, 1);
        }
        let cfg = dir.join("envoy.yaml");
        std::fs::write(&cfg, text).unwrap();
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&cfg)
            .args(["--disable-hot-restart", "-l", "info", "--file-flush-interval-msec", "50"])
            .args(["--concurrency", &concurrency.to_string()])
            .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("envoy.log")).unwrap())
            .spawn()
            .expect("spawn envoy");
        let mut envoy = Envoy { child, dir, listen, admin, echo };
        let end = Instant::now() + STARTUP;
        loop {
            if let Some(status) = envoy.child.try_wait().unwrap() {
                return Err((status.code().unwrap_or(-1), envoy.log()));
            }
            let ready = try_get(admin, "/ready", &[]).is_some_and(|r| r.body_text().trim() == "LIVE")
                && TcpStream::connect(("127.0.0.1", listen)).is_ok();
            if ready {
                return Ok(envoy);
            }
            assert!(Instant::now() < end, "Envoy not ready after {STARTUP:?}; log:\n{}", envoy.log());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks Envoy to exit (`POST /quitquitquit`) and waits until it has.
    pub(crate) fn quit(&mut self) -> std::process::ExitStatus {
        let mut c = TcpStream::connect(("127.0.0.1", self.admin)).unwrap();
        c.write_all(b"POST /quitquitquit HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .unwrap();
        let end = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "Envoy did not exit after /quitquitquit; log:\n{}", self.log());
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    pub(crate) fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn get(&self, path: &str, headers: &[(&str, &[u8])]) -> Response {
        get(self.listen, path, headers)
    }

    /// A series of Envoy's `/stats/prometheus`, by its line prefix (name and labels).
    pub(crate) fn prom(&self, series: &str) -> Option<u64> {
        let text = get(self.admin, "/stats/prometheus", &[]).body_text();
        text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

/// Writes `yaml` as `hopauth.yaml` in a new scratch dir and starts Envoy from
/// `envoy/module.yaml` with the module reading it.
pub(crate) fn module_envoy(yaml: &str, concurrency: u32) -> Result<Envoy, (i32, String)> {
    let path = scratch_dir("hopauth").join("hopauth.yaml");
    std::fs::write(&path, yaml).unwrap();
    Envoy::start("module.yaml", &[("/etc/hopauth/hopauth.yaml", path.display().to_string())], concurrency)
}

pub(crate) fn started(r: Result<Envoy, (i32, String)>) -> Envoy {
    r.unwrap_or_else(|(code, log)| panic!("Envoy exited ({code}) at start-up; log:\n{log}"))
}

pub(crate) fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

/// A redis-server on a free port, stopped on drop.
pub(crate) struct Redis {
    child: Child,
    pub(crate) port: u16,
}

impl Redis {
    pub(crate) fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server not found: `make redis` (apt-get install redis-server)");
        let redis = Redis { child, port };
        wait_until("redis-server to accept connections", Duration::from_secs(10), || redis.cli(&["PING"]) == "PONG");
        redis
    }

    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli (apt-get install redis-tools)");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
