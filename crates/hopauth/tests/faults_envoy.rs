//! Faults seen through a real Envoy (envoy/hopauth.yaml; docs/security.md F6, F9, F11):
//! Redis slower than Envoy's ext_authz timeout, Envoy giving up on a Check in the middle of
//! a verification (its deadline, or the client hanging up), and hopauth killed outright.

use hopauth_testkit as support;
use hopauth_testkit::fault_proxy;
use hopauth_testkit::redis_server;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fault_proxy::{Dir, FaultProxy};
use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use redis_server::{free_port, RedisServer};
use serde_json::json;
use support::*;

/// envoy/hopauth.yaml pointed at `hopauth` and `app`, with `failure_mode_allow` as given.
async fn envoy(hopauth: SocketAddr, app: SocketAddr, failure_mode_allow: bool) -> Envoy {
    let port = pick_port();
    Envoy::start_with(
        "hopauth.yaml",
        hopauth,
        &[
            ("port_value: 10000", format!("port_value: {port}")),
            ("port_value: 9001", format!("port_value: {}", hopauth.port())),
            ("port_value: 8080", format!("port_value: {}", app.port())),
            ("failure_mode_allow: false", format!("failure_mode_allow: {failure_mode_allow}")),
        ],
    )
    .await
}

/// A client that keeps no idle connections, so open file descriptors can be compared.
fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(0).build().unwrap()
}

async fn get(client: &reqwest::Client, envoy: &Envoy, token: &str) -> Reply {
    send(client, &envoy.url("/x"), &[("authorization", &bearer(token))]).await
}

fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

const ALLOWS: &str = r#"hopauth_checks_total{decision="allow",reason="verified"}"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// F6: Redis answers 400 ms late, Envoy's ext_authz timeout is 200 ms, and Envoy is set to
/// fail open (`failure_mode_allow: true`, the worst case). Checks are answered from the
/// local view, so Envoy never times out (`ext_authz.error` and `failure_mode_allowed` stay
/// 0), and nothing hopauth refuses reaches the app; a revocation written meanwhile still
/// arrives, 400 ms later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f6_redis_slower_than_envoys_timeout_is_not_on_the_request_path() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &[]);
    let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let revocation = format!(
        "revocation:\n  backend: redis\n  redis_url: \"{}\"\n  max_staleness: 5s\n  failure_mode: deny\n",
        proxy.redis_url()
    );
    let hopauth = start_hopauth(&config_yaml(&jwks.url(), "", &revocation)).await;
    wait_ready(&hopauth).await;
    let app = start_echo().await;
    let envoy = envoy(hopauth.grpc_addr, app, true).await;
    let http_client = client(Duration::from_secs(5));

    let valid = keys.es.sign_jwt(&claims("valid")).unwrap();
    let known = claims("known");
    let known_token = keys.es.sign_jwt(&known).unwrap();
    redis.cli(&["SET", &format!("hopauth:revoked:jti:{}", known["jti"].as_str().unwrap()), "1", "EX", "300"]);
    let end = Instant::now() + Duration::from_secs(10);
    while get(&http_client, &envoy, &known_token).await.status != 401 {
        assert!(Instant::now() < end, "known revocation not enforced");
    }
    assert_eq!(get(&http_client, &envoy, &valid).await.status, 200);

    proxy.set_latency(Dir::Down, Duration::from_millis(400));
    let late = claims("late");
    let late_token = keys.es.sign_jwt(&late).unwrap();
    let bad_sig = {
        let other = SigningKey::generate(Alg::ES256, "es-1").unwrap();
        other.sign_jwt(&claims("forged")).unwrap()
    };
    let upstream_before = envoy.stat("cluster.app.upstream_rq_total").await;
    let mut latencies = Vec::new();
    let mut allowed = 0u64;
    let mut late_written: Option<Instant> = None;
    let mut late_enforced: Option<Duration> = None;
    // Long enough for several heartbeats (1 s apart) to cross the slow link.
    let run_until = Instant::now() + Duration::from_secs(4);
    let mut i = 0u64;
    while Instant::now() < run_until || late_enforced.is_none() {
        assert!(Instant::now() < run_until + Duration::from_secs(10), "the late revocation never arrived");
        i += 1;
        let t = Instant::now();
        let r = get(&http_client, &envoy, &valid).await;
        latencies.push(t.elapsed());
        assert_eq!(r.status, 200, "request {i}: {:?}", r.body);
        allowed += 1;
        assert_eq!(get(&http_client, &envoy, &known_token).await.status, 401, "request {i}: a known revocation");
        assert_eq!(get(&http_client, &envoy, &bad_sig).await.status, 401, "request {i}: a forged token");
        if i == 20 {
            redis.cli(&["SET", &format!("hopauth:revoked:jti:{}", late["jti"].as_str().unwrap()), "1", "EX", "300"]);
            late_written = Some(Instant::now());
        }
        let r = get(&http_client, &envoy, &late_token).await;
        match (late_written, r.status) {
            (_, 200) => allowed += 1,
            (Some(w), 401) => {
                late_enforced.get_or_insert(w.elapsed());
            }
            (_, s) => panic!("request {i}: {s} for a token revoked late"),
        }
        if late_enforced.is_some() {
            assert_eq!(r.status, 401, "request {i}: a revocation, once enforced, holds");
        }
    }
    latencies.sort();
    let (p50, p99, max) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99), *latencies.last().unwrap());
    eprintln!(
        "F6 400 ms Redis: {} valid requests through Envoy p50 {p50:?} p99 {p99:?} max {max:?}; \
         revocation written under latency enforced after {:?}",
        latencies.len(),
        late_enforced.unwrap()
    );
    assert_eq!(envoy.stat("http.ingress.ext_authz.error").await, 0, "Envoy timed out on a Check");
    assert_eq!(envoy.stat("http.ingress.ext_authz.failure_mode_allowed").await, 0);
    assert_eq!(
        envoy.stat("cluster.app.upstream_rq_total").await - upstream_before,
        allowed,
        "only what hopauth allowed reached the app"
    );
    assert!(hopauth.authorizer.ready(), "a slow but live Redis keeps hopauth ready");
    assert!(late_enforced.unwrap() >= Duration::from_millis(400), "the latency was really there");
}

const SLOW_ISSUER: &str = "https://slow.test";

/// File descriptors open in this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// F9: Envoy gives up on Checks stuck in a verification (an unknown `kid` whose refetch
/// hangs on a stalled JWKS link, `kid_refetch_wait` 1 s against Envoy's 200 ms), by its
/// deadline or because the client hung up. The link then heals within the wait and the new
/// key arrives: a Check that outlived its call would now allow. None does; the app sees
/// none of those requests; tasks and file descriptors return to where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f9_checks_abandoned_mid_verification_never_allow_and_leave_nothing_behind() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let old = SigningKey::generate(Alg::ES256, "slow-1").unwrap();
    let new = SigningKey::generate(Alg::ES256, "slow-2").unwrap();
    let slow_jwks = JwksServer::start(jwks_of(&[&old]), SLOW_ISSUER).await;
    let proxy = FaultProxy::start(slow_jwks.addr).await;
    let slow = format!(
        "  - name: slow\n    issuer: {SLOW_ISSUER}\n    audiences: [{AUDIENCE}]\n    algorithms: [ES256]\n    \
         jwks:\n      uri: {}\n      timeout: 3s\n      kid_refetch_interval: 1s\n      \
         kid_refetch_wait: 1s\n",
        proxy.http_url("/jwks.json")
    );
    let hopauth = start_hopauth(&config_yaml(&jwks.url(), &slow, "")).await;
    wait_ready(&hopauth).await;
    let app = start_echo().await;
    let envoy = envoy(hopauth.grpc_addr, app, false).await;
    let http_client = client(Duration::from_secs(5));
    let slow_claims = || {
        let mut c = claims("slow-user");
        c["iss"] = json!(SLOW_ISSUER);
        c
    };
    assert_eq!(get(&http_client, &envoy, &old.sign_jwt(&slow_claims()).unwrap()).await.status, 200);
    assert_eq!(get(&http_client, &envoy, &keys.es.sign_jwt(&claims("warm")).unwrap()).await.status, 200);
    let rotated = new.sign_jwt(&slow_claims()).unwrap();

    // Settle, then take the baseline.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (tasks0, fds0, jwks_conns0) = (alive_tasks(), open_fds(), proxy.open());
    let allows0 = metric_value(&hopauth.metrics.render(), ALLOWS);
    let upstream0 = envoy.stat("cluster.app.upstream_rq_total").await;
    let errors0 = envoy.stat("http.ingress.ext_authz.error").await;
    let refreshes0 =
        metric_value(&hopauth.metrics.render(), r#"hopauth_jwks_refresh_total{provider="slow",result="success"}"#);

    // The IdP publishes the new key, but the link to it hangs.
    slow_jwks.set(jwks_of(&[&old, &new]));
    proxy.set_stalled(true);
    let started = Instant::now();
    let by_deadline: Vec<_> = (0..6)
        .map(|_| {
            let (client, url, token) = (http_client.clone(), envoy.url("/x"), rotated.clone());
            tokio::spawn(async move { send(&client, &url, &[("authorization", &bearer(&token))]).await.status })
        })
        .collect();
    let impatient = client(Duration::from_millis(60));
    let hung_up: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, token) = (impatient.clone(), envoy.url("/x"), rotated.clone());
            tokio::spawn(async move { client.get(url).bearer_auth(token).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    for h in by_deadline {
        assert_eq!(h.await.unwrap(), 503, "Envoy's deadline passed: status_on_error");
    }
    for h in hung_up {
        assert!(h.await.unwrap().is_err(), "the impatient client hung up before any answer");
    }
    let abandoned_after = started.elapsed();
    // Heal within kid_refetch_wait of the first Check: the stalled fetch completes and the
    // new key is installed while an uncancelled Check would still be waiting for it.
    proxy.heal();
    let end = Instant::now() + Duration::from_secs(10);
    while metric_value(&hopauth.metrics.render(), r#"hopauth_jwks_refresh_total{provider="slow",result="success"}"#)
        <= refreshes0
    {
        assert!(Instant::now() < end, "the stalled JWKS fetch never completed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let key_arrived = started.elapsed();
    // Longer than kid_refetch_wait from the start: anything still running has decided.
    while started.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = hopauth.metrics.render();
    eprintln!(
        "F9: 10 Checks abandoned by {abandoned_after:?}; new key installed at {key_arrived:?}; \
         deny unknown_key after: {}",
        metric_value(&text, r#"hopauth_checks_total{decision="deny",reason="unknown_key"}"#)
    );
    assert!(key_arrived < Duration::from_secs(1), "the key arrived within kid_refetch_wait ({key_arrived:?})");
    assert_eq!(metric_value(&text, ALLOWS), allows0, "a Check abandoned by Envoy was allowed");
    assert_eq!(envoy.stat("cluster.app.upstream_rq_total").await, upstream0, "an abandoned request reached the app");
    assert!(envoy.stat("http.ingress.ext_authz.error").await >= errors0 + 6);

    // The same token, asked again, passes: the abandoned ones would have, had they lived.
    assert_eq!(get(&http_client, &envoy, &rotated).await.status, 200);
    assert_eq!(metric_value(&hopauth.metrics.render(), ALLOWS), allows0 + 1.0);

    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let (tasks, fds, jwks_conns) = (alive_tasks(), open_fds(), proxy.open());
        if tasks <= tasks0 && fds <= fds0 && jwks_conns <= jwks_conns0 {
            eprintln!(
                "F9: tasks {tasks0} -> {tasks}, fds {fds0} -> {fds}, JWKS connections {jwks_conns0} -> {jwks_conns}"
            );
            break;
        }
        assert!(
            Instant::now() < end,
            "not back to baseline: tasks {tasks0} -> {tasks}, fds {fds0} -> {fds}, JWKS connections {jwks_conns0} -> {jwks_conns}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `hopauth serve` as a child process, so it can be killed like a crashed sidecar.
struct HopauthProcess {
    child: Child,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    http: SocketAddr,
}

impl Drop for HopauthProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HopauthProcess {
    fn spawn(config: std::path::PathBuf, log: std::path::PathBuf, http: SocketAddr) -> HopauthProcess {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hopauth"))
            .args(["serve", "--worker-threads", "1", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("run hopauth serve");
        HopauthProcess { child, config, log, http }
    }

    async fn wait_ready(&mut self) {
        let url = format!("http://{}/readyz", self.http);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("hopauth serve exited with {status}: {}", std::fs::read_to_string(&self.log).unwrap());
            }
            if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < end, "hopauth serve not ready: {}", std::fs::read_to_string(&self.log).unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn restart(&mut self) {
        let (config, log, http) = (self.config.clone(), self.log.clone(), self.http);
        *self = HopauthProcess::spawn(config, log, http);
    }
}

/// Polls `url` with `token` until the status is `want`; how long it took.
async fn wait_through(client: &reqwest::Client, envoy: &Envoy, token: &str, want: u16, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = get(client, envoy, token).await.status;
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{what}: still {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// F11: `hopauth serve` is killed (SIGKILL) behind two Envoys. With the shipped
/// `failure_mode_allow: false`, clients get 503 (`status_on_error`) and the app sees
/// nothing; with `true`, traffic passes unchecked and Envoy counts every such request in
/// `ext_authz.failure_mode_allowed` (the stat docs/deploy.md says to alert on). A restart
/// brings checking back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f11_hopauth_killed_behind_envoy_fails_closed_as_shipped() {
    let shipped = std::fs::read_to_string(repo_root().join("envoy/hopauth.yaml")).unwrap();
    assert!(shipped.contains("failure_mode_allow: false"), "envoy/hopauth.yaml ships failing closed");

    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let (grpc, http): (SocketAddr, SocketAddr) =
        (format!("127.0.0.1:{}", free_port()).parse().unwrap(), format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let yaml = config_yaml(&jwks.url(), "", "")
        .replace("grpc_listen: 127.0.0.1:0", &format!("grpc_listen: {grpc}"))
        .replace("http_listen: 127.0.0.1:0", &format!("http_listen: {http}"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hopauth.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut hopauth = HopauthProcess::spawn(config, dir.path().join("hopauth.log"), http);
    hopauth.wait_ready().await;
    let app = start_echo().await;
    let closed = envoy(grpc, app, false).await;
    let open = envoy(grpc, app, true).await;
    let http_client = client(Duration::from_secs(5));
    let valid = keys.es.sign_jwt(&claims("alice")).unwrap();
    let forged = SigningKey::generate(Alg::ES256, "es-1").unwrap().sign_jwt(&claims("mallory")).unwrap();
    for e in [&closed, &open] {
        assert_eq!(get(&http_client, e, &valid).await.status, 200);
        assert_eq!(get(&http_client, e, &forged).await.status, 401);
    }
    let upstream_closed = closed.stat("cluster.app.upstream_rq_total").await;
    assert_eq!(open.stat("http.ingress.ext_authz.failure_mode_allowed").await, 0);

    let killed = Instant::now();
    hopauth.kill();
    let to_503 = wait_through(&http_client, &closed, &valid, 503, "fail closed").await;
    for _ in 0..20 {
        for t in [&valid, &forged] {
            let r = get(&http_client, &closed, t).await;
            assert_eq!(r.status, 503, "hopauth is down: status_on_error, never the app: {:?}", r.body);
        }
    }
    assert_eq!(closed.stat("cluster.app.upstream_rq_total").await, upstream_closed, "the app saw a request");
    // The stat docs/deploy.md says to alert on: no hopauth is healthy.
    let end = Instant::now() + Duration::from_secs(10);
    while closed.stat("cluster.hopauth.membership_healthy").await != 0 {
        assert!(Instant::now() < end, "the health check never marked the killed hopauth unhealthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let to_open = wait_through(&http_client, &open, &forged, 200, "fail open").await;
    let before = open.stat("http.ingress.ext_authz.failure_mode_allowed").await;
    for _ in 0..10 {
        assert_eq!(get(&http_client, &open, &forged).await.status, 200, "failure_mode_allow: true lets it through");
    }
    let counted = open.stat("http.ingress.ext_authz.failure_mode_allowed").await;
    assert!(
        counted >= before + 10,
        "ext_authz.failure_mode_allowed counts the unchecked requests: {before} -> {counted}"
    );
    eprintln!(
        "F11: after SIGKILL, fail-closed Envoy 503 in {to_503:?}; fail-open Envoy passing in {to_open:?}; \
               failure_mode_allowed {counted}; {:?} since the kill",
        killed.elapsed()
    );

    let restarted = Instant::now();
    hopauth.restart();
    hopauth.wait_ready().await;
    let back_closed = wait_through(&http_client, &closed, &valid, 200, "checking resumes (closed)").await;
    let back_open = wait_through(&http_client, &open, &forged, 401, "checking resumes (open)").await;
    assert_eq!(get(&http_client, &closed, &forged).await.status, 401);
    assert_eq!(closed.stat("cluster.hopauth.membership_healthy").await, 1);
    eprintln!(
        "F11: restart -> ready and checking again in {:?} (closed {back_closed:?}, open {back_open:?} after ready)",
        restarted.elapsed()
    );
}
