//! Everything for an end-to-end test through a real Envoy ([`Stack`]) in either
//! [`Mode`]: JWKS, hopauth (a sidecar in this process, or the module inside Envoy), the
//! echo app; and [`send`]/[`Reply`], a request through Envoy and what came back.

use std::net::SocketAddr;
use std::time::Duration;

use hopauth::config::Config;
use hopauth::server::Running;
use serde_json::Value;

use crate::envoy::{Authz, Envoy, Launch, Mode};
use crate::{
    bearer, config_yaml, start_echo, start_hopauth, wait_ready, wait_until, JwksServer, Keys, ADMIN_TOKEN, ISSUER,
};

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

/// Everything for an end-to-end test: JWKS, hopauth, echo app, Envoy, in one [`Mode`].
pub struct Stack {
    pub mode: Mode,
    pub keys: Keys,
    pub jwks: JwksServer,
    /// hopauth serving ext_authz in this process ([`Mode::ExtAuthz`] only).
    pub sidecar: Option<Running>,
    /// hopauth's `http_listen` (/metrics, /readyz, /admin): the sidecar's, or the one the
    /// module serves from inside Envoy.
    pub http_addr: SocketAddr,
    pub envoy: Envoy,
    pub client: reqwest::Client,
    /// The module's hopauth.yaml ([`Mode::Module`]).
    _config_dir: Option<tempfile::TempDir>,
}

impl Stack {
    /// An ext_authz stack with the test config ([`config_yaml`]).
    pub async fn start() -> Stack {
        Self::start_with("", "").await
    }

    pub async fn start_with(extra_providers: &str, extra_top: &str) -> Stack {
        Self::start_config(|url| config_yaml(url, extra_providers, extra_top)).await
    }

    /// An ext_authz stack whose hopauth config is `yaml_for(jwks_url)`.
    pub async fn start_config(yaml_for: impl FnOnce(&str) -> String) -> Stack {
        Self::launch(Mode::ExtAuthz, yaml_for, |l| l).await
    }

    /// A stack in `mode` with the test config.
    pub async fn start_in(mode: Mode) -> Stack {
        Self::start_in_with(mode, "", "").await
    }

    pub async fn start_in_with(mode: Mode, extra_providers: &str, extra_top: &str) -> Stack {
        Self::launch(mode, |url| config_yaml(url, extra_providers, extra_top), |l| l).await
    }

    /// A stack in `mode` whose hopauth config is `yaml_for(jwks_url)` and whose Envoy
    /// launch is `tweak`ed. In [`Mode::Module`] the config's `http_listen: 127.0.0.1:0`
    /// becomes a free port (the module does not report the one it bound). Returns once
    /// hopauth is ready with every provider's keys.
    pub async fn launch(
        mode: Mode,
        yaml_for: impl FnOnce(&str) -> String,
        tweak: impl for<'a> FnOnce(Launch<'a>) -> Launch<'a>,
    ) -> Stack {
        let keys = Keys::generate();
        let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
        let app = start_echo().await;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let yaml = yaml_for(&jwks.url());
        match mode {
            Mode::ExtAuthz => {
                let hopauth = start_hopauth(&yaml).await;
                wait_ready(&hopauth).await;
                let envoy = tweak(Launch::new(Authz::Sidecar(hopauth.grpc_addr), app.port())).start().await;
                let http_addr = hopauth.http_addr;
                Stack { mode, keys, jwks, sidecar: Some(hopauth), http_addr, envoy, client, _config_dir: None }
            }
            Mode::Module => {
                const ANY_PORT: &str = "http_listen: 127.0.0.1:0";
                assert!(yaml.contains(ANY_PORT), "the module stack needs `{ANY_PORT}` in the config");
                let http_addr: SocketAddr = format!("127.0.0.1:{}", crate::pick_port()).parse().unwrap();
                let yaml = yaml.replace(ANY_PORT, &format!("http_listen: {http_addr}"));
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("hopauth.yaml");
                std::fs::write(&path, &yaml).unwrap();
                let providers: Vec<String> = Config::from_yaml(&yaml, &path)
                    .expect("test config is valid")
                    .providers
                    .into_iter()
                    .map(|p| p.name)
                    .collect();
                let envoy = tweak(Launch::new(Authz::Module(&path), app.port())).start().await;
                let s = Stack { mode, keys, jwks, sidecar: None, http_addr, envoy, client, _config_dir: Some(dir) };
                wait_until("the module ready with every provider's keys", Duration::from_secs(10), || async {
                    let ready = s.client.get(format!("http://{}/readyz", s.http_addr)).send().await;
                    if !ready.is_ok_and(|r| r.status() == 200) {
                        return false;
                    }
                    let m = s.metrics().await;
                    providers.iter().all(|p| {
                        let prefix = format!("hopauth_jwks_keys{{provider=\"{p}\"}} ");
                        m.lines().any(|l| l.strip_prefix(&prefix).is_some_and(|v| v.trim() != "0"))
                    })
                })
                .await;
                s
            }
        }
    }

    /// The sidecar; panics in [`Mode::Module`], which has none.
    pub fn sidecar(&self) -> &Running {
        self.sidecar.as_ref().expect("this stack's hopauth is the module: it has no sidecar")
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        send(&self.client, &self.envoy.url(path), headers).await
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> Reply {
        self.get(path, &[("authorization", &bearer(token))]).await
    }

    pub async fn admin_revoke(&self, body: Value) -> reqwest::Response {
        self.client
            .post(format!("http://{}/admin/revoke", self.http_addr))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// hopauth's `/metrics` exposition (the same `hopauth_*` set in both modes).
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.http_addr);
        self.client.get(url).send().await.unwrap().text().await.unwrap()
    }

    /// Denies as Envoy counted them: `ext_authz.denied`, or the module's
    /// `hopauth_checks_total{decision="deny"}` Envoy stats.
    pub async fn envoy_denies(&self) -> u64 {
        match self.mode {
            Mode::ExtAuthz => self.envoy.stat("http.ingress.ext_authz.denied").await,
            Mode::Module => {
                self.envoy.prometheus_sum("envoy_dynamicmodulescustom_hopauth_checks_total{decision=\"deny\"").await
            }
        }
    }

    /// Requests hopauth failed to answer as such: ext_authz errors (which Envoy could fail
    /// open on), or error lines the module wrote to Envoy's log (a panic, a lost decision).
    pub async fn authz_errors(&self) -> u64 {
        match self.mode {
            Mode::ExtAuthz => self.envoy.stat("http.ingress.ext_authz.error").await,
            Mode::Module => {
                self.envoy.log().lines().filter(|l| l.contains("][error]") && l.contains("hopauth")).count() as u64
            }
        }
    }
}
