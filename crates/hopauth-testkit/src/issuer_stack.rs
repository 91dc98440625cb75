//! The reference issuer in a full stack: a real redis-server, `hopauth issuer` in-process
//! on a port known before its config is written (the `iss` is its URL), hopauth pointed at
//! its discovery document, an echo app and a real Envoy from `envoy/hopauth.yaml`.

use std::time::Duration;

use argon2::password_hash::{PasswordHasher, SaltString};
use hopauth_issuer::config::IssuerConfig;
use serde_json::Value;

use crate::redis_server::{free_port, RedisServer};
use crate::{start_echo, start_hopauth, wait_ready, Envoy};

/// argon2id at the weakest parameters a users file accepts (19 MiB, t=2, p=1, the OWASP
/// minimum): tens of milliseconds a login, since the dev profile optimises argon2.
pub fn user_hash(password: &str) -> String {
    let params = argon2::Params::new(19 * 1024, 2, 1, None).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).unwrap();
    argon.hash_password(password.as_bytes(), &salt).unwrap().to_string()
}

/// Every test user has password `<name>-pw`, scopes `orders:read profile`.
pub fn users_yaml(names: &[&str]) -> String {
    let mut out = String::from("users:\n");
    for n in names {
        out.push_str(&format!(
            "  - {{ username: {n}, password_hash: \"{}\", roles: [user], scopes: [orders:read, profile] }}\n",
            user_hash(&format!("{n}-pw"))
        ));
    }
    out
}

pub const USERS: &[&str] = &["alice", "bob", "carol", "dave", "erin", "frank", "mallory"];

/// Options for one stack.
pub struct Options {
    /// Extra top-level issuer YAML (e.g. a `throttle:` block).
    pub issuer_extra: String,
    pub redis: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { issuer_extra: String::new(), redis: true }
    }
}

pub struct IssuerStack {
    pub redis: Option<RedisServer>,
    pub dir: tempfile::TempDir,
    pub config: IssuerConfig,
    pub issuer: hopauth_issuer::Running,
    pub hopauth: hopauth::server::Running,
    pub envoy: Envoy,
    pub client: reqwest::Client,
}

/// A token endpoint answer.
#[derive(Debug)]
pub struct TokenReply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl TokenReply {
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_else(|| panic!("no error in {self:?}"))
    }
    pub fn access(&self) -> &str {
        self.body["access_token"].as_str().unwrap_or_else(|| panic!("no access_token in {self:?}"))
    }
    pub fn refresh(&self) -> &str {
        self.body["refresh_token"].as_str().unwrap_or_else(|| panic!("no refresh_token in {self:?}"))
    }
}

/// Redis (when `opts.redis`) and the issuer, in a temporary directory.
pub struct IssuerParts {
    pub redis: Option<RedisServer>,
    pub dir: tempfile::TempDir,
    pub config: IssuerConfig,
    pub issuer: hopauth_issuer::Running,
}

/// Starts Redis (when `opts.redis`) and `hopauth issuer` in-process on a port known before
/// its config is written (the `iss` is its URL); users `USERS` (`users_yaml`).
pub async fn start_issuer(opts: &Options) -> IssuerParts {
    let dir = tempfile::tempdir().unwrap();
    let redis = opts.redis.then(|| RedisServer::start(&dir.path().join("redis"), free_port(), &[]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer_url = format!("http://{}", listener.local_addr().unwrap());
    std::fs::write(dir.path().join("users.yaml"), users_yaml(USERS)).unwrap();
    let store = match &redis {
        Some(r) => format!("store: {{ backend: redis, redis_url: \"{}\" }}\n", r.url()),
        None => String::new(),
    };
    let yaml = format!(
        "issuer: {issuer_url}\nlisten: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naudiences: [orders]\n\
         users_file: users.yaml\nkeys: {{ dir: keys, reload_interval: 100ms }}\n{store}{}",
        opts.issuer_extra
    );
    let path = dir.path().join("issuer.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let config = IssuerConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let issuer = hopauth_issuer::start_with_listener(config.clone(), listener).await.expect("issuer starts");
    IssuerParts { redis, dir, config, issuer }
}

/// A hopauth config trusting the issuer at `issuer_url` through its discovery document;
/// revocations from Redis at `redis_url` when given, else the memory backend.
pub fn hopauth_yaml(issuer_url: &str, redis_url: Option<&str>) -> String {
    let revocation = match redis_url {
        Some(url) => format!(
            "revocation: {{ backend: redis, redis_url: \"{url}\", max_staleness: 2s, max_token_lifetime: 1h }}\n"
        ),
        None => String::new(),
    };
    format!(
        r#"grpc_listen: 127.0.0.1:0
http_listen: 127.0.0.1:0
providers:
  - name: main
    issuer: {issuer_url}
    audiences: [orders]
    algorithms: [ES256, EdDSA]
    jwks: {{ discovery: true, refresh_interval: 1s }}
    claims_to_headers: {{ sub: x-jwt-sub, scope: x-jwt-scope }}
{revocation}"#
    )
}

impl IssuerStack {
    pub async fn start(opts: Options) -> IssuerStack {
        let IssuerParts { redis, dir, config, issuer } = start_issuer(&opts).await;
        let issuer_url = config.issuer.clone();
        let redis_url = redis.as_ref().map(RedisServer::url);
        let hopauth = start_hopauth(&hopauth_yaml(&issuer_url, redis_url.as_deref())).await;
        wait_ready(&hopauth).await;
        let app = start_echo().await;
        let envoy = Envoy::start("hopauth.yaml", hopauth.grpc_addr, app).await;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        IssuerStack { redis, dir, config, issuer, hopauth, envoy, client }
    }

    pub fn issuer_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.issuer.addr)
    }

    /// POST a form to the issuer.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)], bearer: Option<&str>) -> TokenReply {
        post_form(&self.client, &self.issuer_url(path), form, bearer).await
    }

    pub async fn login(&self, user: &str) -> TokenReply {
        let pw = format!("{user}-pw");
        let r =
            self.post_form("/token", &[("grant_type", "password"), ("username", user), ("password", &pw)], None).await;
        assert_eq!(r.status, 200, "login {user}: {r:?}");
        r
    }

    pub async fn refresh(&self, refresh_token: &str) -> TokenReply {
        self.post_form("/token", &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)], None).await
    }

    /// GET through Envoy with `token`; the status.
    pub async fn call(&self, path: &str, token: &str) -> u16 {
        let resp = self.client.get(self.envoy.url(path)).bearer_auth(token).send().await.unwrap();
        resp.status().as_u16()
    }
}

/// POST a form to `url` (an issuer endpoint), with `bearer` as the access token if given.
pub async fn post_form(client: &reqwest::Client, url: &str, form: &[(&str, &str)], bearer: Option<&str>) -> TokenReply {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let mut req = client.post(url).header("content-type", "application/x-www-form-urlencoded").body(body);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    reply(req.send().await.unwrap()).await
}

pub async fn reply(resp: reqwest::Response) -> TokenReply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    TokenReply { status, headers, body }
}

/// A TCP proxy in front of a real Redis that, once armed, swallows every reply on the
/// connection that carries the next script call (`EVALSHA`/`EVAL`): Redis runs the script,
/// its answer never reaches the client. What a slow or flaky network does to a reply.
pub struct ReplyLosingProxy {
    pub addr: std::net::SocketAddr,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    lost: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ReplyLosingProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> ReplyLosingProxy {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicUsize::new(0));
        let (armed2, lost2) = (armed.clone(), lost.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { continue };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let mute = Arc::new(AtomicBool::new(false));
                let (armed, lost, mute2) = (armed2.clone(), lost2.clone(), mute.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        let chunk = &buf[..n];
                        let script = chunk.windows(4).any(|w| w.eq_ignore_ascii_case(b"EVAL"));
                        // Muted before the call is forwarded, so its reply cannot slip through.
                        if script && armed.swap(false, Ordering::SeqCst) {
                            mute2.store(true, Ordering::SeqCst);
                            lost.fetch_add(1, Ordering::SeqCst);
                        }
                        if sw.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = sr.read(&mut buf).await {
                        if !mute.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        ReplyLosingProxy { addr, armed, lost }
    }

    /// The next script call's reply (and everything after it on that connection) is lost.
    pub fn lose_next_script_reply(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many script calls had their reply swallowed.
    pub fn lost(&self) -> usize {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }
}
