//! What the Envoys talk to, and what is read off the processes: an allow-everything
//! ext_authz server, `hopauth serve` (the testkit's `ServeProcess`), the hopauth config
//! both modes read, the gRPC server alone under `h2load`, CPU and RSS from /proc, and
//! Redis's command counters.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hopauth_testkit::load::proc_sample;
use hopauth_testkit::process::ServeProcess;
use hopauth_testkit::redis_server::{self, RedisServer};
use serde_json::{json, Value};

use crate::ISSUER;

/// A child process, killed on drop.
pub(crate) struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    redis_server::free_port()
}

fn wait_port(port: u16, what: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` on a fresh connection: the status (0 when nothing answers) and the response.
pub(crate) fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

/// The value of the first `/metrics` line starting with `series` on `port`.
pub(crate) fn metric(port: u16, series: &str) -> Option<f64> {
    let (_, text) = http_get(port, "/metrics");
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// An ext_authz server that allows everything, on `port` (the ceiling of any ext_authz server).
pub(crate) fn allow_all_server(port: u16) {
    use envoy_types::pb::envoy::service::auth::v3::authorization_server::{Authorization, AuthorizationServer};
    use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
    struct AllowAll;
    #[tonic::async_trait]
    impl Authorization for AllowAll {
        async fn check(
            &self,
            _r: tonic::Request<CheckRequest>,
        ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
            Ok(tonic::Response::new(CheckResponse {
                status: Some(envoy_types::pb::google::rpc::Status::default()),
                ..Default::default()
            }))
        }
    }
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            tonic::transport::Server::builder()
                .add_service(AuthorizationServer::new(AllowAll))
                .serve(SocketAddr::from(([127, 0, 0, 1], port)))
                .await
                .unwrap();
        });
    });
    wait_port(port, "allow-all server");
}

/// The hopauth.yaml of every hopauth variant, sidecar and module alike: provider `main` on
/// `jwks_file`, a verify cache with room for every fresh token, `revocation` appended.
pub(crate) fn hopauth_yaml(grpc: u16, http: u16, jwks_file: &Path, revocation: &str, job: Job) -> String {
    format!(
        "grpc_listen: 127.0.0.1:{grpc}\nhttp_listen: 127.0.0.1:{http}\nproviders:\n  - name: main\n    issuer: {ISSUER}\n    \
         audiences: [orders]\n    algorithms: [ES256]\n    jwks: {{ file: \"{}\" }}\n    {}\n\
         verify_cache: {{ max_entries: 200000, max_bytes: 536870912 }}\n{revocation}",
        jwks_file.display(),
        job.provider_keys()
    )
}

/// What an allow does besides letting the request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Job {
    /// The bench's usual provider: `sub` to `x-jwt-sub`, every claim to dynamic metadata.
    Identity,
    /// Nothing else, as Envoy's `jwt_authn` by default: no identity header, no metadata.
    VerifyOnly,
}

impl Job {
    fn provider_keys(self) -> &'static str {
        match self {
            Job::Identity => "claims_to_headers: { sub: x-jwt-sub }",
            Job::VerifyOnly => "claims_to_metadata: []",
        }
    }
}

/// `hopauth serve` on `threads` runtime threads (default: one per core), once ready.
pub(crate) fn start_hopauth(
    dir: &Path,
    name: &str,
    jwks_file: &Path,
    revocation: &str,
    threads: Option<usize>,
) -> ServeProcess {
    let (grpc, http) = (free_port(), free_port());
    let path = dir.join(format!("hopauth-{name}.yaml"));
    std::fs::write(&path, hopauth_yaml(grpc, http, jwks_file, revocation, Job::Identity)).unwrap();
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let log = dir.join(format!("hopauth-{name}.log"));
    let mut p = ServeProcess::spawn_with_threads(
        Path::new(env!("CARGO_BIN_EXE_hopauth")),
        &path,
        log,
        addr(grpc),
        addr(http),
        threads,
    );
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(p.wait_ready());
    p
}

/// CPU seconds (user + system) a process has used.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    proc_sample(pid).map_or(0.0, |s| s.cpu_ticks as f64 / 100.0)
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
    proc_sample(pid).map_or(0.0, |s| s.rss_kib as f64 / 1024.0)
}

/// Commands Redis has executed (INFO itself not counted).
pub(crate) fn commandstats_total(redis: &RedisServer) -> u64 {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// gRPC server alone: h2load with a recorded Check body, cache hits.
pub(crate) fn h2load_grpc(dir: &Path, port: u16, token: &str) -> Option<Value> {
    use prost::Message;
    if redis_server::which("h2load").is_none() {
        eprintln!("h2load not found (apt-get install nghttp2-client): skipping the gRPC-only run");
        return None;
    }
    let body = hopauth_testkit::bearer_check(token).encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    let path = dir.join("check.bin");
    std::fs::write(&path, framed).unwrap();
    let out = Command::new("h2load")
        .args(["-n", "200000", "-c", "4", "-m", "32", "-t", "1"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("-d")
        .arg(&path)
        .arg(format!("http://127.0.0.1:{port}/envoy.service.auth.v3.Authorization/Check"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text.lines().find_map(|l| l.trim().strip_prefix("finished in").map(|r| r.to_string()));
    let succeeded = text.lines().find(|l| l.trim_start().starts_with("requests:")).map(str::to_string);
    Some(json!({ "finished": rps, "requests": succeeded }))
}
