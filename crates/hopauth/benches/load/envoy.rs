//! The Envoy under test: one listener answering with `direct_response` (so only the auth
//! path is measured), the auth filter of each variant (`jwt_authn`, ext_authz with the
//! settings shipped in `envoy/hopauth.yaml`, the hopauth module as `envoy/module.yaml`
//! declares it), and a process launcher. The testkit's `Envoy` waits for a healthy
//! `hopauth` cluster, which most variants here do not have; this one waits for the
//! listener (and the module's side port when there is one).

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hopauth_testkit::module_configs;

use crate::servers::{http_get, Proc};
use crate::ISSUER;

pub(crate) fn envoy_config(listen: u16, admin: u16, filters: &str, clusters: &str) -> String {
    format!(
        r#"admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}
static_resources:
  listeners:
  - name: bench
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                direct_response: {{ status: 200, body: {{ inline_string: "ok" }} }}
          http_filters:
{filters}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters: {clusters}
"#
    )
}

pub(crate) fn jwt_authn_filter(jwks: &str, cache: bool) -> String {
    let cache = if cache { "\n                  jwt_cache_config: { jwt_cache_size: 1000 }" } else { "" };
    jwt_authn(jwks, cache)
}

/// `jwt_authn` with its cache doing the job the module does on an allow: the `sub` claim
/// to `x-jwt-sub` (the bench's `claims_to_headers`) and the claims into dynamic metadata.
pub(crate) fn jwt_authn_same_job_filter(jwks: &str) -> String {
    jwt_authn(
        jwks,
        "\n                  jwt_cache_config: { jwt_cache_size: 1000 }\n                  payload_in_metadata: hopauth\n                  \
         claim_to_headers: [ { header_name: x-jwt-sub, claim_name: sub } ]",
    )
}

fn jwt_authn(jwks: &str, provider_extra: &str) -> String {
    format!(
        r#"          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                main:
                  issuer: {ISSUER}
                  audiences: [orders]
                  forward: true
                  local_jwks: {{ inline_string: '{jwks}' }}{provider_extra}
              rules:
              - match: {{ prefix: / }}
                requires: {{ provider_name: main }}"#
    )
}

/// The ext_authz filter and cluster settings shipped in envoy/hopauth.yaml, pointed at `port`.
pub(crate) fn ext_authz(port: u16) -> (String, String) {
    let filter = r#"          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service: { envoy_grpc: { cluster_name: authz }, timeout: 0.2s }
              failure_mode_allow: false
              status_on_error: { code: ServiceUnavailable }
              allowed_headers: { patterns: [ { exact: authorization }, { exact: cookie } ] }
              encode_raw_headers: true"#
        .to_string();
    let cluster = format!(
        r#"
  - name: authz
    type: STATIC
    connect_timeout: 0.25s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: authz
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }} ] }} ]"#
    );
    (filter, cluster)
}

/// The hopauth module filter of `envoy/module.yaml`, reading `hopauth_yaml`.
pub(crate) fn module_filter(hopauth_yaml: &Path) -> String {
    module_configs::module_filter_yaml(hopauth_yaml, 10)
}

/// A running Envoy of one variant; killed on drop.
pub(crate) struct BenchEnvoy {
    pub(crate) proc: Proc,
    pub(crate) listen: u16,
}

impl BenchEnvoy {
    pub(crate) fn pid(&self) -> u32 {
        self.proc.0.id()
    }
}

/// Starts Envoy (`--concurrency 1`) from `config` listening on `listen`; with `side`
/// (the module's `http_listen` port) it also waits for the module's `/readyz`.
pub(crate) fn start_envoy(dir: &Path, name: &str, config: &str, listen: u16, side: Option<u16>) -> BenchEnvoy {
    start_envoy_under(&[], Duration::from_secs(30), dir, name, config, listen, side)
}

/// [`start_envoy`], with Envoy run by the command `under` (e.g. valgrind) when it is not
/// empty, and up to `ready_within` to come up.
pub(crate) fn start_envoy_under(
    under: &[String],
    ready_within: Duration,
    dir: &Path,
    name: &str,
    config: &str,
    listen: u16,
    side: Option<u16>,
) -> BenchEnvoy {
    let path = dir.join(format!("envoy-{name}.yaml"));
    std::fs::write(&path, config).unwrap();
    let log_path = dir.join(format!("envoy-{name}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let envoy = hopauth_testkit::envoy_bin();
    let mut cmd = match under.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&envoy);
            c
        }
        None => Command::new(&envoy),
    };
    cmd.arg("-c").arg(&path).args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "error"]);
    if side.is_some() {
        cmd.env(module_configs::SEARCH_PATH_ENV, module_configs::module_dir());
    }
    let child = cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start envoy");
    let mut proc = Proc(child);
    let end = Instant::now() + ready_within;
    let ready =
        || TcpStream::connect(("127.0.0.1", listen)).is_ok() && side.is_none_or(|p| http_get(p, "/readyz").0 == 200);
    while !ready() {
        if Instant::now() > end || matches!(proc.0.try_wait(), Ok(Some(_))) {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("envoy {name} did not start:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    BenchEnvoy { proc, listen }
}
