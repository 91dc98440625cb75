//! The in-process fixture: a JWKS endpoint the test controls (content, delay), a
//! hopauth.yaml, Envoy from a shipped config (`envoy/module.yaml`, or `envoy/hopauth.yaml`
//! with hopauth serving ext_authz in this process, for byte comparisons), redis-server.
#![allow(dead_code)]
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use serde_json::{json, Value};

use crate::common::*;
use hopauth_testkit::envoy::{Authz, Launch};
use hopauth_testkit::redis_server::RedisServer;

pub(crate) const ISSUER: &str = "https://issuer.test";
pub(crate) const AUDIENCE: &str = "orders";

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

/// A real Envoy from a shipped config, ports rewritten (the testkit's launcher), in front
/// of its own echo upstream; stopped on drop.
pub(crate) struct Envoy {
    inner: hopauth_testkit::Envoy,
    pub(crate) dir: PathBuf,
    pub(crate) listen: u16,
    pub(crate) admin: u16,
    pub(crate) echo: Echo,
}

impl Envoy {
    /// `envoy/<file>` (`module.yaml`, given `/etc/hopauth/hopauth.yaml`; or `hopauth.yaml`,
    /// given `port_value: 9001`) with `replacements` applied, `--concurrency n`; `Err` with
    /// the exit code and log when Envoy refuses the config.
    pub(crate) fn start(file: &str, replacements: &[(&str, String)], concurrency: u32) -> Result<Envoy, (i32, String)> {
        let dir = scratch_dir(file.trim_end_matches(".yaml"));
        let echo = Echo::start();
        let given = |from: &str| {
            let to = replacements.iter().find(|(f, _)| *f == from).map(|(_, to)| to.clone());
            to.unwrap_or_else(|| panic!("envoy/{file} needs a replacement for {from:?}"))
        };
        let config;
        let authz = match file {
            "module.yaml" => {
                config = PathBuf::from(given("/etc/hopauth/hopauth.yaml"));
                Authz::Module(&config)
            }
            "hopauth.yaml" => {
                let port = given("port_value: 9001").trim_start_matches("port_value:").trim().parse::<u16>().unwrap();
                Authz::Sidecar(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            }
            other => panic!("no launcher for envoy/{other}"),
        };
        let mut launch = Launch::new(authz, echo.port)
            .concurrency(concurrency)
            .log_level("info")
            .replace("path: /dev/stdout", format!("path: {}", dir.join("access.log").display()));
        for (from, to) in replacements {
            if !matches!(*from, "/etc/hopauth/hopauth.yaml" | "port_value: 9001") {
                launch = launch.replace(from, to.clone());
            }
        }
        let inner = launch.start_blocking()?;
        let (listen, admin) = (inner.port, inner.admin_port());
        Ok(Envoy { inner, dir, listen, admin, echo })
    }

    /// Asks Envoy to exit (`POST /quitquitquit`) and waits until it has.
    pub(crate) fn quit(&mut self) -> std::process::ExitStatus {
        self.inner.quit()
    }

    pub(crate) fn log(&self) -> String {
        self.inner.log()
    }

    pub(crate) fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.inner.pid()
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

/// A redis-server on a free port (the testkit's), stopped on drop.
pub(crate) struct Redis {
    server: RedisServer,
    pub(crate) port: u16,
    _dir: PathBuf,
}

impl Redis {
    pub(crate) fn start() -> Redis {
        let dir = scratch_dir("redis");
        let server = RedisServer::start(&dir, free_port(), &[]);
        Redis { port: server.port, server, _dir: dir }
    }

    pub(crate) fn cli(&self, args: &[&str]) -> String {
        self.server.cli(args)
    }
}
