//! `make bench`: Envoy + auth variants side by side on this machine, in one run.
//!
//! Variants (Envoy with one worker answering with `direct_response`, so only the auth path
//! is measured): no auth; Envoy `jwt_authn`; `jwt_authn` with `jwt_cache_config`;
//! `ext_authz` to an allow-everything tonic server; `ext_authz` to hopauth (one token:
//! cached path; a fresh token per request: uncached path; Redis revocation backend).
//! Closed loop with `wrk -t1 -c32`, open loop at a fixed rate with an in-process generator
//! that measures from the scheduled send time (no coordinated omission), hopauth's own CPU
//! per request, Redis commands per Check, revocation write → enforced latency, RSS with
//! 100k cached tokens, and the gRPC server alone under `h2load`. Writes
//! `target/bench/results.md` and `results.json`.

use hopauth_testkit::redis_server;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use serde_json::{json, Value};

const ISSUER: &str = "https://issuer.bench";
const CLOSED_SECS: u64 = 8;
const OPEN_SECS: u64 = 6;

fn free_port() -> u16 {
    redis_server::free_port()
}

fn repo() -> PathBuf {
    hopauth_testkit::repo_root()
}

fn require(bin: &str, hint: &str) -> String {
    let found =
        Command::new("sh").arg("-c").arg(format!("command -v {bin}")).output().is_ok_and(|o| o.status.success());
    if !found {
        panic!("{bin} not found: {hint}");
    }
    bin.to_string()
}

fn envoy_bin() -> PathBuf {
    let p = std::env::var_os("HOPAUTH_ENVOY").map(PathBuf::from).unwrap_or_else(|| repo().join(".tools/bin/envoy"));
    assert!(p.exists(), "Envoy not found at {}: run `make tools`", p.display());
    p
}

fn wait_port(port: u16, what: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn claims(sub: &str, jti: &str) -> Value {
    let now = hopauth_core::clock::unix_now();
    json!({"iss": ISSUER, "sub": sub, "aud": "orders", "iat": now, "nbf": now, "exp": now + 3600,
           "jti": jti, "scope": "orders:read profile"})
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

// ---------------------------------------------------------------- Envoy configs

fn envoy_config(listen: u16, admin: u16, filters: &str, clusters: &str) -> String {
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

fn jwt_authn_filter(jwks: &str, cache: bool) -> String {
    let cache = if cache { "\n                  jwt_cache_config: { jwt_cache_size: 1000 }" } else { "" };
    format!(
        r#"          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                main:
                  issuer: {ISSUER}
                  audiences: [orders]
                  forward: true
                  local_jwks: {{ inline_string: '{jwks}' }}{cache}
              rules:
              - match: {{ prefix: / }}
                requires: {{ provider_name: main }}"#
    )
}

/// The ext_authz filter and cluster settings shipped in envoy/hopauth.yaml, pointed at `port`.
fn ext_authz(port: u16) -> (String, String) {
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

fn start_envoy(dir: &Path, name: &str, config: &str, listen: u16) -> Proc {
    let path = dir.join(format!("envoy-{name}.yaml"));
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join(format!("envoy-{name}.log"))).unwrap();
    let child = Command::new(envoy_bin())
        .arg("-c")
        .arg(&path)
        .args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "error"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start envoy");
    let mut proc = Proc(child);
    let end = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", listen)).is_err() {
        if Instant::now() > end || matches!(proc.0.try_wait(), Ok(Some(_))) {
            let log = std::fs::read_to_string(dir.join(format!("envoy-{name}.log"))).unwrap_or_default();
            panic!("envoy {name} did not start:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    proc
}

// ---------------------------------------------------------------- load generators

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    non_2xx: u64,
    requests: u64,
}

const WRK_LUA: &str = r#"
local tokens = {}
local n = 0
local i = 0
init = function(args)
  local f = io.open(args[1], "r")
  for line in f:lines() do n = n + 1; tokens[n] = line end
  f:close()
end
request = function()
  i = i % n + 1
  return wrk.format("GET", "/", { ["Authorization"] = "Bearer " .. tokens[i] })
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\"requests\":%d,\"non2xx\":%d,\"p50\":%d,\"p99\":%d,\"p999\":%d,\"duration_us\":%d}\n",
    summary.requests, summary.errors.status, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    summary.duration))
end
"#;

fn wrk(port: u16, tokens: &Path, dir: &Path, secs: u64) -> Run {
    let script = dir.join("bench.lua");
    std::fs::write(&script, WRK_LUA).unwrap();
    let out = Command::new(require("wrk", "run `make bench-tools` (apt-get install wrk)"))
        .args(["-t1", "-c32", &format!("-d{secs}s"), "--timeout", "2s", "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg("--")
        .arg(tokens)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("JSON ")).unwrap_or_else(|| panic!("wrk output: {text}"));
    let v: Value = serde_json::from_str(line).unwrap();
    let requests = v["requests"].as_u64().unwrap();
    Run {
        rps: requests as f64 / (v["duration_us"].as_f64().unwrap() / 1e6),
        p50_ms: v["p50"].as_f64().unwrap() / 1000.0,
        p99_ms: v["p99"].as_f64().unwrap() / 1000.0,
        p999_ms: v["p999"].as_f64().unwrap() / 1000.0,
        non_2xx: v["non2xx"].as_u64().unwrap(),
        requests,
    }
}

/// Open loop: `conns` keep-alive connections share a fixed schedule of `rate` req/s;
/// a request sent late because the previous answer was late counts from its scheduled
/// time, so a stall shows up in the percentiles (no coordinated omission). One
/// runtime thread drives every connection, so the generator takes as little CPU from the
/// system under test as it can.
fn open_loop(port: u16, token: &str, rate: f64, secs: u64, conns: usize) -> Run {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET / HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n").into_bytes();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (mut all, bad) = rt.block_on(async move {
        let start = tokio::time::Instant::now() + Duration::from_millis(100);
        let interval = Duration::from_secs_f64(conns as f64 / rate);
        let end = start + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..conns)
            .map(|c| {
                let request = request.clone();
                tokio::spawn(async move {
                    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    let mut next = start + interval.mul_f64(c as f64 / conns as f64);
                    let (mut lat, mut bad) = (Vec::new(), 0u64);
                    let mut buf = vec![0u8; 4096];
                    let mut idle = true;
                    while next < end {
                        // Latency counts from the scheduled time when the previous answer
                        // came late (queueing in the system under test), and from the send
                        // when the connection was idle: the generator's own timer (1 ms
                        // ticks) is then not charged to the system under test.
                        let origin = if idle {
                            tokio::time::sleep_until(next).await;
                            tokio::time::Instant::now()
                        } else {
                            next
                        };
                        s.write_all(&request).await.unwrap();
                        let mut got = Vec::new();
                        let status = loop {
                            let n = s.read(&mut buf).await.unwrap();
                            assert!(n > 0, "connection closed");
                            got.extend_from_slice(&buf[..n]);
                            if let Some(status) = complete_response(&got) {
                                break status;
                            }
                        };
                        if status != 200 {
                            bad += 1;
                        }
                        let done = tokio::time::Instant::now();
                        lat.push(done.duration_since(origin));
                        next += interval;
                        idle = done <= next;
                    }
                    (lat, bad)
                })
            })
            .collect();
        let (mut all, mut bad) = (Vec::new(), 0);
        for t in tasks {
            let (l, b) = t.await.unwrap();
            all.extend(l);
            bad += b;
        }
        (all, bad)
    });
    all.sort();
    Run {
        rps: all.len() as f64 / secs as f64,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        p999_ms: percentile(&all, 0.999),
        non_2xx: bad,
        requests: all.len() as u64,
    }
}

// ---------------------------------------------------------------- the servers under test

fn allow_all_server(port: u16) {
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

struct Hopauth {
    proc: Proc,
    grpc: u16,
}

fn start_hopauth(dir: &Path, name: &str, jwks_file: &Path, revocation: &str, threads: Option<usize>) -> Hopauth {
    let (grpc, http) = (free_port(), free_port());
    let config = format!(
        "grpc_listen: 127.0.0.1:{grpc}\nhttp_listen: 127.0.0.1:{http}\nproviders:\n  - name: main\n    issuer: {ISSUER}\n    \
         audiences: [orders]\n    algorithms: [ES256]\n    jwks: {{ file: \"{}\" }}\n    claims_to_headers: {{ sub: x-jwt-sub }}\n\
         verify_cache: {{ max_entries: 200000 }}\n{revocation}",
        jwks_file.display()
    );
    let path = dir.join(format!("hopauth-{name}.yaml"));
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join(format!("hopauth-{name}.log"))).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hopauth"));
    cmd.args(["serve", "--config"]).arg(&path);
    if let Some(n) = threads {
        cmd.arg("--worker-threads").arg(n.to_string());
    }
    let child =
        cmd.env("HOPAUTH_LOG", "warn").stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start hopauth");
    wait_port(grpc, "hopauth");
    let end = Instant::now() + Duration::from_secs(20);
    while http_get(http, "/readyz").0 != 200 {
        assert!(Instant::now() < end, "hopauth not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Hopauth { proc: Proc(child), grpc }
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    http_request(port, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
}

fn http_request(port: u16, raw: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    let _ = s.write_all(raw.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

/// Requests through Envoy on one keep-alive connection until the status is `want`.
fn until_status(port: u16, token: &str, want: u16, deadline: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut buf = vec![0u8; 8192];
    while start.elapsed() < deadline {
        s.write_all(req.as_bytes()).unwrap();
        if read_status(&mut s, &mut buf) == want {
            return Some(start.elapsed());
        }
    }
    None
}

/// The status of the HTTP/1.1 response in `got`, once its headers and `content-length`
/// body have all arrived.
fn complete_response(got: &[u8]) -> Option<u16> {
    let h = got.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&got[..h]).to_ascii_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    (got.len() >= h + 4 + len).then(|| head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0))
}

/// Reads one HTTP/1.1 response and returns its status.
fn read_status(s: &mut TcpStream, buf: &mut [u8]) -> u16 {
    let mut got = Vec::new();
    loop {
        let n = s.read(buf).unwrap();
        assert!(n > 0, "connection closed");
        got.extend_from_slice(&buf[..n]);
        if let Some(status) = complete_response(&got) {
            return status;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn commandstats_total(redis: &redis_server::RedisServer) -> u64 {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// gRPC server alone: h2load with a recorded Check body, cache hits.
fn h2load_grpc(dir: &Path, port: u16, token: &str) -> Option<Value> {
    use prost::Message;
    let found = Command::new("sh").arg("-c").arg("command -v h2load").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("h2load not found (apt-get install nghttp2-client): skipping the gRPC-only run");
        return None;
    }
    let req = envoy_types::pb::envoy::service::auth::v3::CheckRequest {
        attributes: Some(envoy_types::pb::envoy::service::auth::v3::AttributeContext {
            request: Some(envoy_types::pb::envoy::service::auth::v3::attribute_context::Request {
                http: Some(envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest {
                    method: "GET".into(),
                    path: "/".into(),
                    headers: [("authorization".to_string(), format!("Bearer {token}"))].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let body = req.encode_to_vec();
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

// ---------------------------------------------------------------- main

fn main() {
    // `cargo test --all-targets` builds benches and runs them with no `--bench`: skip.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let out_dir = repo().join("target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let key = SigningKey::generate(Alg::ES256, "bench-1").unwrap();
    let jwks = json!({"keys": [key.public_jwk()]}).to_string();
    let jwks_file = dir.join("jwks.json");
    std::fs::write(&jwks_file, &jwks).unwrap();
    let one_token = key.sign_jwt(&claims("alice", "bench-cached")).unwrap();
    let one = dir.join("one-token.txt");
    std::fs::write(&one, format!("{one_token}\n")).unwrap();
    eprintln!("signing 120000 fresh tokens for the uncached run…");
    let fresh: Vec<String> =
        (0..120_000).map(|i| key.sign_jwt(&claims(&format!("u{i}"), &format!("j{i}"))).unwrap()).collect();
    let many = dir.join("fresh-tokens.txt");
    std::fs::write(&many, fresh.join("\n") + "\n").unwrap();

    let mut closed: BTreeMap<&str, Run> = BTreeMap::new();
    let mut extra = serde_json::Map::new();

    let run_variant = |name: &str, filters: &str, clusters: &str, tokens: &Path| -> Run {
        let listen = free_port();
        let config = envoy_config(listen, free_port(), filters, clusters);
        let _envoy = start_envoy(dir, name, &config, listen);
        // Warm up (connections, caches), then measure.
        let _ = wrk(listen, tokens, dir, 1);
        let r = wrk(listen, tokens, dir, CLOSED_SECS);
        eprintln!(
            "{name:<28} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  non-2xx {}",
            r.rps, r.p50_ms, r.p99_ms, r.p999_ms, r.non_2xx
        );
        r
    };

    closed.insert("no_auth", run_variant("no_auth", "", "[]", &one));
    closed.insert("jwt_authn", run_variant("jwt_authn", &jwt_authn_filter(&jwks, false), "[]", &one));
    closed.insert("jwt_authn_cache", run_variant("jwt_authn_cache", &jwt_authn_filter(&jwks, true), "[]", &one));

    let allow_port = free_port();
    allow_all_server(allow_port);
    let (f, c) = ext_authz(allow_port);
    closed.insert("ext_authz_allow_all", run_variant("ext_authz_allow_all", &f, &c, &one));

    // hopauth, memory backend: cached and uncached; CPU per request from /proc.
    // The same, with one runtime thread: the sidecar setting docs/performance.md discusses.
    let h1 = start_hopauth(dir, "memory-1thread", &jwks_file, "", Some(1));
    {
        let (f, c) = ext_authz(h1.grpc);
        let pid = h1.proc.0.id();
        let cpu0 = cpu_seconds(pid);
        let r = run_variant("hopauth_cached_1thread", &f, &c, &one);
        extra.insert(
            "hopauth_cached_1thread_cpu_us_per_check".into(),
            json!((cpu_seconds(pid) - cpu0) * 1e6 / (r.requests as f64).max(1.0)),
        );
        closed.insert("hopauth_cached_1thread", r);
        let cpu_a = cpu_seconds(pid);
        if let Some(h2) = h2load_grpc(dir, h1.grpc, &one_token) {
            extra.insert("grpc_only_1thread_h2load".into(), h2);
            extra.insert(
                "grpc_only_1thread_cpu_us_per_check".into(),
                json!((cpu_seconds(pid) - cpu_a) * 1e6 / 200_000.0),
            );
        }
    }

    let h = start_hopauth(dir, "memory", &jwks_file, "", None);
    let (f, c) = ext_authz(h.grpc);
    let pid = h.proc.0.id();
    let cpu0 = cpu_seconds(pid);
    let cached = run_variant("hopauth_cached", &f, &c, &one);
    let cpu1 = cpu_seconds(pid);
    extra.insert(
        "hopauth_cached_cpu_us_per_check".into(),
        json!((cpu1 - cpu0) * 1e6 / (cached.requests as f64).max(1.0)),
    );
    closed.insert("hopauth_cached", cached.clone());
    let uncached = run_variant("hopauth_uncached", &f, &c, &many);
    let cpu2 = cpu_seconds(pid);
    extra.insert(
        "hopauth_uncached_cpu_us_per_check".into(),
        json!((cpu2 - cpu1) * 1e6 / (uncached.requests as f64).max(1.0)),
    );
    extra.insert("hopauth_rss_mib_after_uncached_run".into(), json!(rss_mib(pid)));
    extra.insert("uncached_run_distinct_tokens".into(), json!(uncached.requests.min(120_000)));
    closed.insert("hopauth_uncached", uncached);
    let cpu_a = cpu_seconds(pid);
    if let Some(h2) = h2load_grpc(dir, h.grpc, &one_token) {
        extra.insert("grpc_only_h2load".into(), h2);
        extra.insert("grpc_only_cpu_us_per_check".into(), json!((cpu_seconds(pid) - cpu_a) * 1e6 / 200_000.0));
    }

    // Open loop at half of hopauth's cached saturation: no auth vs hopauth.
    let rate = (cached.rps / 2.0).max(100.0);
    let listen = free_port();
    let open_noauth = {
        let _e = start_envoy(dir, "open_noauth", &envoy_config(listen, free_port(), "", "[]"), listen);
        open_loop(listen, &one_token, rate, OPEN_SECS, 16)
    };
    let listen = free_port();
    let open_hopauth = {
        let _e = start_envoy(dir, "open_hopauth", &envoy_config(listen, free_port(), &f, &c), listen);
        open_loop(listen, &one_token, rate, OPEN_SECS, 16)
    };
    drop(h);
    let listen = free_port();
    let open_hopauth_1thread = {
        let (f, c) = ext_authz(h1.grpc);
        let _e = start_envoy(dir, "open_hopauth_1thread", &envoy_config(listen, free_port(), &f, &c), listen);
        open_loop(listen, &one_token, rate, OPEN_SECS, 16)
    };
    drop(h1);
    // The ceiling of any ext_authz server at the same rate: what a third busy process on
    // the cores does to the tail, whatever it computes.
    let listen = free_port();
    let open_allow_all = {
        let (f, c) = ext_authz(allow_port);
        let _e = start_envoy(dir, "open_allow_all", &envoy_config(listen, free_port(), &f, &c), listen);
        open_loop(listen, &one_token, rate, OPEN_SECS, 16)
    };

    // hopauth with the Redis backend: throughput, Redis commands per Check, revocation latency.
    let rdir = dir.join("redis");
    let redis = redis_server::RedisServer::start(&rdir, free_port(), &[]);
    let revocation = format!("revocation: {{ backend: redis, redis_url: \"{}\" }}\n", redis.url());
    let hr = start_hopauth(dir, "redis", &jwks_file, &revocation, None);
    let (f, c) = ext_authz(hr.grpc);
    let listen = free_port();
    let _e = start_envoy(dir, "hopauth_redis", &envoy_config(listen, free_port(), &f, &c), listen);
    let _ = wrk(listen, &one, dir, 1);
    let cmds0 = commandstats_total(&redis);
    let r = wrk(listen, &one, dir, CLOSED_SECS);
    let cmds1 = commandstats_total(&redis);
    eprintln!("hopauth_redis                {:>9.0} req/s  p99 {:.3} ms", r.rps, r.p99_ms);
    extra.insert("redis_commands_per_check".into(), json!((cmds1 - cmds0) as f64 / r.requests.max(1) as f64));
    extra.insert("redis_commands_during_run".into(), json!(cmds1 - cmds0));
    closed.insert("hopauth_redis", r);
    let mut lat = Vec::new();
    for i in 0..200 {
        let c = claims("rev", &format!("rev-{i}"));
        let t = key.sign_jwt(&c).unwrap();
        until_status(listen, &t, 200, Duration::from_secs(2)).expect("token allowed first");
        redis.cli(&["SET", &format!("hopauth:revoked:jti:rev-{i}"), "1", "EX", "300"]);
        // From the moment the SET returned to the first 401 through Envoy.
        let took = until_status(listen, &t, 401, Duration::from_secs(2)).expect("revocation enforced");
        lat.push(took);
    }
    lat.sort();
    extra.insert("revocation_enforced_ms_p50".into(), json!(percentile(&lat, 0.5)));
    extra.insert("revocation_enforced_ms_p99".into(), json!(percentile(&lat, 0.99)));
    drop(hr);

    // ---- report
    let base = |n: &str| closed.get(n).map_or(0.0, |r| r.rps);
    let mut md = String::from("# hopauth load comparison\n\n");
    md.push_str(&format!(
        "One run on this machine ({} cores), Envoy 1.40 `--concurrency 1`, `wrk -t1 -c32 -d{CLOSED_SECS}s`, ES256 token, `direct_response`.\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    md.push_str("| variant | req/s | p50 ms | p99 ms | p99.9 ms | non-2xx | vs no auth | vs allow-all ext_authz | vs jwt_authn |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (name, r) in &closed {
        md.push_str(&format!(
            "| {name} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {:.2}× | {:.2}× | {:.2}× |\n",
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.non_2xx,
            r.rps / base("no_auth"),
            r.rps / base("ext_authz_allow_all"),
            r.rps / base("jwt_authn")
        ));
    }
    md.push_str(&format!(
        "\nOpen loop at {rate:.0} req/s (half of hopauth's cached saturation), 16 connections on one generator thread, {OPEN_SECS}s:\n\n\
         | variant | p50 ms | p99 ms | p99.9 ms | non-2xx | p99 added over no_auth |\n|---|---:|---:|---:|---:|---:|\n"
    ));
    for (name, r) in [
        ("no_auth", &open_noauth),
        ("ext_authz_allow_all", &open_allow_all),
        ("hopauth_cached", &open_hopauth),
        ("hopauth_cached_1thread", &open_hopauth_1thread),
    ] {
        md.push_str(&format!(
            "| {name} | {:.3} | {:.3} | {:.3} | {} | {:.3} |\n",
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.non_2xx,
            r.p99_ms - open_noauth.p99_ms
        ));
    }
    md.push('\n');
    md.push_str("| measure | value |\n|---|---:|\n");
    for (k, v) in &extra {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    let report = json!({
        "closed_loop": closed,
        "open_loop": {
            "rate": rate,
            "no_auth": open_noauth,
            "ext_authz_allow_all": open_allow_all,
            "hopauth_cached": open_hopauth,
            "hopauth_cached_1thread": open_hopauth_1thread,
        },
        "measures": extra,
    });
    std::fs::write(out_dir.join("results.md"), &md).unwrap();
    std::fs::write(out_dir.join("results.json"), serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("{md}");
    println!("written: {}", out_dir.join("results.md").display());
}
