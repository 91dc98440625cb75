//! The `hopauth` filter of libhopauth_envoy.so through a real Envoy 1.40, started from the
//! shipped `envoy/module.yaml`: allows with identity headers and claims metadata, every
//! deny shape byte-compared with the ext_authz path (`envoy/hopauth.yaml` in front of
//! hopauth serving in this process), per-route policy, unknown-`kid` refetch and resume,
//! a client hanging up while held, Redis revocation, config refusals, a panic of the
//! filter itself, `--concurrency 4` under concurrent traffic, Envoy stats and the side port.
//!
//! Needs `.tools/bin/envoy` (`make envoy`) and `redis-server`/`redis-cli` (`make redis`).
mod common;
mod inproc;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use hopauth::config::Config;
use inproc::*;
use serde_json::json;

/// Envoy plus the JWKS and signing key its hopauth.yaml trusts.
struct Module {
    envoy: Envoy,
    jwks: Jwks,
    key: hopauth_core::sign::SigningKey,
    http_port: u16,
}

fn module(revocation: &str, concurrency: u32) -> Module {
    let key = key("k1");
    let jwks = Jwks::start(&[&key]);
    let http_port = free_port();
    let envoy = started(module_envoy(&hopauth_yaml(&jwks, http_port, revocation), concurrency));
    let m = Module { envoy, jwks, key, http_port };
    wait_until("the side port's /readyz", Duration::from_secs(10), || {
        try_get(m.http_port, "/readyz", &[]).is_some_and(|r| r.status == 200)
    });
    m
}

#[test]
fn an_allow_sets_identity_headers_strips_client_copies_and_sets_claims_metadata() {
    let m = module("", 1);
    let t = token(&m.key, "alice", json!({}));
    let r = m.envoy.get(
        "/orders/1",
        &[("authorization", &bearer(&t)), ("x-jwt-sub", b"mallory"), ("x-jwt-payload", b"forged"), ("x-tag", b"a")],
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.upstream_values("x-jwt-sub"), ["alice"]);
    assert_eq!(r.upstream_values("x-jwt-scope"), ["orders:read profile"]);
    assert_eq!(r.upstream_values("x-jwt-payload"), [t.split('.').nth(1).unwrap()]);
    assert_eq!(r.upstream_values("authorization"), [format!("Bearer {t}")], "the token must pass unchanged");
    wait_until("the access log line", Duration::from_secs(10), || m.envoy.access_log().contains("\"sub\":\"alice\""));
    assert!(m.envoy.access_log().contains(&format!("\"iss\":\"{ISSUER}\"")), "{}", m.envoy.access_log());

    // Per-route anonymous: no token passes without identity (client copies stripped);
    // a bad token is still 401.
    let r = m.envoy.get("/public/x", &[("x-jwt-sub", b"mallory")]);
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert!(r.upstream_values("x-jwt-sub").is_empty(), "{}", r.body_text());
    assert_eq!(m.envoy.get("/public/x", &[("authorization", b"Bearer nope")]).status, 401);
    // A valid token on the anonymous route is still used.
    let r = m.envoy.get("/public/x", &[("authorization", &bearer(&t))]);
    assert_eq!(r.upstream_values("x-jwt-sub"), ["alice"]);
    // A route's scope requirement.
    let admin = token(&m.key, "root", json!({"scope": "admin"}));
    assert_eq!(m.envoy.get("/admin", &[("authorization", &bearer(&admin))]).status, 200);
    assert_eq!(m.envoy.get("/admin", &[("authorization", &bearer(&t))]).status, 403);
}

/// What a client sees of a response: status, headers (sorted) but `date`, body.
type Visible = (u16, Vec<(String, Vec<u8>)>, Vec<u8>);

fn visible(r: &Response) -> Visible {
    let mut headers: Vec<(String, Vec<u8>)> = r.headers.iter().filter(|(k, _)| k != "date").cloned().collect();
    headers.sort();
    (r.status, headers, r.body.clone())
}

#[test]
fn every_deny_is_byte_for_byte_the_ext_authz_deny() {
    let m = module("", 1);
    // hopauth serve in this process, the same config but on free ports, behind ext_authz.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let yaml = hopauth_yaml(&m.jwks, 0, "");
    let config = Config::from_yaml(&yaml, std::path::Path::new("hopauth.yaml")).unwrap();
    let sidecar = rt.block_on(hopauth::server::start(config)).unwrap();
    let grpc = sidecar.grpc_addr.port();
    let ext = started(Envoy::start("hopauth.yaml", &[("port_value: 9001", format!("port_value: {grpc}"))], 1));
    let t = token(&m.key, "alice", json!({}));
    wait_until("ext_authz to reach hopauth", Duration::from_secs(20), || {
        ext.get("/orders", &[("authorization", &bearer(&t))]).status == 200
    });

    let other = key("k1"); // same kid, other key: bad signature
    let dead = hopauth_core::sign::SigningKey::generate(hopauth_core::alg::Alg::ES256, "d1").unwrap();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("no token", "/orders", Vec::new()),
        ("garbage", "/orders", bearer("not.a.jwt")),
        ("other scheme", "/orders", b"Basic YWxpY2U6cHc=".to_vec()),
        ("expired", "/orders", bearer(&token(&m.key, "a", json!({"exp": now() - 10})))),
        ("not yet valid", "/orders", bearer(&token(&m.key, "a", json!({"nbf": now() + 100})))),
        ("wrong audience", "/orders", bearer(&token(&m.key, "a", json!({"aud": "billing"})))),
        ("wrong issuer", "/orders", bearer(&token(&m.key, "a", json!({"iss": "https://evil.test"})))),
        ("bad signature", "/orders", bearer(&token(&other, "a", json!({})))),
        ("no exp", "/orders", bearer(&token(&m.key, "a", json!({"exp": null})))),
        ("scope", "/admin", bearer(&t)),
        ("provider not allowed", "/orders", bearer(&token(&dead, "a", json!({"iss": "https://dead.test"})))),
        ("keys unavailable", "/", bearer(&token(&dead, "a", json!({"iss": "https://dead.test"})))),
    ];
    for (what, path, auth) in &cases {
        let headers: Vec<(&str, &[u8])> =
            if auth.is_empty() { vec![] } else { vec![("authorization", auth.as_slice())] };
        let a = m.envoy.get(path, &headers);
        let b = ext.get(path, &headers);
        assert_ne!(a.status, 200, "{what}: module allowed");
        assert_eq!(visible(&a), visible(&b), "{what}: module and ext_authz differ");
    }
    assert_eq!(m.envoy.echo.hits.load(Ordering::SeqCst), 0, "a denied request reached the upstream");
    rt.block_on(sidecar.shutdown());
}

#[test]
fn an_unknown_kid_is_refetched_on_a_module_thread_and_the_request_resumed() {
    let m = module("", 1);
    // The issuer rotates: k2 is published after Envoy started.
    let k2 = key("k2");
    m.jwks.publish(&[&m.key, &k2]);
    let t = token(&k2, "bob", json!({}));
    let started_at = Instant::now();
    let r = m.envoy.get("/orders", &[("authorization", &bearer(&t))]);
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.upstream_values("x-jwt-sub"), ["bob"]);
    assert!(started_at.elapsed() < Duration::from_secs(2), "resumed after {:?}", started_at.elapsed());
    assert_eq!(m.envoy.prom("envoy_dynamicmodulescustom_hopauth_held_requests_total"), Some(1));
    // Now cached: no hold.
    assert_eq!(m.envoy.get("/orders", &[("authorization", &bearer(&t))]).status, 200);
    assert_eq!(m.envoy.prom("envoy_dynamicmodulescustom_hopauth_held_requests_total"), Some(1));
    // A kid nobody publishes: held, then 401 unknown key within kid_refetch_wait (1s).
    let k3 = key("k3");
    let started_at = Instant::now();
    let r = m.envoy.get("/orders", &[("authorization", &bearer(&token(&k3, "eve", json!({}))))]);
    assert_eq!(r.status, 401);
    assert!(r.body_text().contains("token signing key is unknown"), "{}", r.body_text());
    assert!(started_at.elapsed() < Duration::from_millis(1900), "answered after {:?}", started_at.elapsed());
}

#[test]
fn a_client_hanging_up_during_a_refetch_costs_nothing() {
    let m = module("", 1);
    let k2 = key("k2");
    m.jwks.publish(&[&m.key, &k2]);
    m.jwks.delay_ms.store(700, Ordering::SeqCst);
    let hits = m.jwks.hits.load(Ordering::SeqCst);
    let t = token(&k2, "carol", json!({}));
    let mut c = std::net::TcpStream::connect(("127.0.0.1", m.envoy.listen)).unwrap();
    use std::io::Write;
    c.write_all(
        format!("GET /orders HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {t}\r\nx-tag: gone\r\n\r\n").as_bytes(),
    )
    .unwrap();
    wait_until("the request to be held", Duration::from_secs(5), || {
        m.envoy.prom("envoy_dynamicmodulescustom_hopauth_held_requests_total") == Some(1)
    });
    c.shutdown(std::net::Shutdown::Both).unwrap();
    drop(c);
    wait_until("the refetch to be answered", Duration::from_secs(5), || m.jwks.hits.load(Ordering::SeqCst) > hits);
    // The late decision finds the stream gone; Envoy keeps serving, the upstream saw nothing
    // of the gone request, and the refetched key now verifies at once.
    m.jwks.delay_ms.store(0, Ordering::SeqCst);
    wait_until("the new key to verify", Duration::from_secs(5), || {
        m.envoy.get("/orders", &[("authorization", &bearer(&t))]).status == 200
    });
    assert_eq!(m.envoy.echo.hits.load(Ordering::SeqCst), 1, "the hung-up request reached the upstream");
    assert!(!m.envoy.log().contains("panicked"), "{}", m.envoy.log());
}

#[test]
fn a_redis_revocation_is_enforced_in_process() {
    let redis = Redis::start();
    let revocation = format!(
        "revocation:\n  backend: redis\n  redis_url: redis://127.0.0.1:{}/0\n  max_staleness: 5s\n",
        redis.port
    );
    let m = module(&revocation, 2);
    let jti = format!("jti-revoke-{}", rand());
    let t = token(&m.key, "dave", json!({"jti": jti}));
    assert_eq!(m.envoy.get("/orders", &[("authorization", &bearer(&t))]).status, 200);
    let written = Instant::now();
    assert_eq!(redis.cli(&["SET", &format!("hopauth:revoked:jti:{jti}"), "1", "EX", "300"]), "OK");
    wait_until("the revocation to be enforced", Duration::from_secs(5), || {
        m.envoy.get("/orders", &[("authorization", &bearer(&t))]).status == 401
    });
    let took = written.elapsed();
    let r = m.envoy.get("/orders", &[("authorization", &bearer(&t))]);
    assert!(r.body_text().contains("token has been revoked"), "{}", r.body_text());
    eprintln!("revocation written -> enforced through the module: {took:?}");
    let metrics = get(m.http_port, "/metrics", &[]).body_text();
    assert!(metrics.contains("hopauth_revocation_store_up 1"), "{metrics}");
}

#[test]
fn config_errors_make_envoy_refuse_the_config_with_a_message_naming_key_and_file() {
    let jwks = Jwks::start(&[&key("k1")]);
    let yaml = hopauth_yaml(&jwks, free_port(), "").replace("    leeway: 0s\n", "    leeway: 0s\n    bogus_key: 1\n");
    let (code, log) = module_envoy(&yaml, 1).err().expect("Envoy accepted a bad hopauth.yaml");
    assert_ne!(code, 0);
    assert!(log.contains("hopauth.yaml") && log.contains("bogus_key"), "{log}");
    let (_, log) = module_envoy("nope: [", 1).err().expect("Envoy accepted broken YAML");
    assert!(log.contains("hopauth.yaml"), "{log}");
    // A per-route config that is not the JSON object of the contract.
    let path = scratch_dir("route").join("hopauth.yaml");
    std::fs::write(&path, hopauth_yaml(&jwks, free_port(), "")).unwrap();
    let (code, log) = Envoy::start(
        "module.yaml",
        &[
            ("/etc/hopauth/hopauth.yaml", path.display().to_string()),
            (r#"'{"hopauth.anonymous": "allow"}'"#, r#"'{"hopauth.anonymous": allow'"#.to_owned()),
        ],
        1,
    )
    .err()
    .expect("Envoy accepted a bad per-route config");
    assert_ne!(code, 0);
    assert!(log.contains("hopauth per-route filter_config: not valid JSON"), "{log}");
}

/// The hopauth filter itself panicking inside its hook (the `test-hooks` build's
/// `hopauth.test_panic` route key; a shipped build refuses that key): 503 with the JSON
/// failure body, a log line naming the filter and the hook, and Envoy serves on.
#[test]
fn a_panic_in_the_hopauth_filter_answers_503_is_logged_and_envoy_keeps_serving() {
    if !cfg!(feature = "test-hooks") {
        panic!(
            "build the tests with the `test-hooks` feature (`cargo test -p hopauth-envoy` does, through the \
             crate's dev-dependency on itself)"
        );
    }
    let key = key("k1");
    let jwks = Jwks::start(&[&key]);
    let http_port = free_port();
    let path = scratch_dir("panic").join("hopauth.yaml");
    std::fs::write(&path, hopauth_yaml(&jwks, http_port, "")).unwrap();
    let envoy = started(Envoy::start(
        "module.yaml",
        &[
            ("/etc/hopauth/hopauth.yaml", path.display().to_string()),
            (
                r#"'{"hopauth.require_scopes": "admin"}'"#,
                r#"'{"hopauth.require_scopes": "admin", "hopauth.test_panic": "on_request_headers"}'"#.to_owned(),
            ),
        ],
        1,
    ));
    let admin = token(&key, "root", json!({"scope": "admin"}));
    for _ in 0..2 {
        let r = envoy.get("/admin", &[("authorization", &bearer(&admin))]);
        assert_eq!(r.status, 503, "{}", r.body_text());
        assert_eq!(r.body_text(), r#"{"error":"internal","reason":"filter failure"}"#);
        assert_eq!(r.header("content-type"), Some(&b"application/json"[..]));
    }
    wait_until("the panic's log line", Duration::from_secs(10), || {
        envoy.log().contains("filter \"hopauth\" panicked in on_request_headers: hopauth.test_panic is set")
    });
    // The same Envoy, the same filter config, another route: served as ever.
    let t = token(&key, "alice", json!({}));
    let r = envoy.get("/orders/1", &[("authorization", &bearer(&t))]);
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.upstream_values("x-jwt-sub"), ["alice"]);
    assert_eq!(envoy.get("/orders/1", &[]).status, 401);
}

#[test]
fn four_workers_share_one_core_under_concurrent_traffic_and_envoy_shows_the_stats() {
    let m = Arc::new(module("", 4));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let m = m.clone();
            thread::spawn(move || {
                let cached = token(&m.key, &format!("user{i}"), json!({}));
                for n in 0..40 {
                    // Fresh tokens, a cached one, and denies, interleaved.
                    let fresh = token(&m.key, &format!("user{i}-{n}"), json!({}));
                    let (t, want_sub) =
                        if n % 2 == 0 { (fresh, format!("user{i}-{n}")) } else { (cached.clone(), format!("user{i}")) };
                    let r = m.envoy.get("/orders", &[("authorization", &bearer(&t))]);
                    assert_eq!(r.status, 200, "{}", r.body_text());
                    assert_eq!(r.upstream_values("x-jwt-sub"), [want_sub]);
                    assert_eq!(m.envoy.get("/orders", &[]).status, 401);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let e = &m.envoy;
    let allow = "envoy_dynamicmodulescustom_hopauth_checks_total{decision=\"allow\",reason=\"verified\"}";
    let deny = "envoy_dynamicmodulescustom_hopauth_checks_total{decision=\"deny\",reason=\"missing_token\"}";
    assert_eq!(e.prom(allow), Some(320), "{}", get(e.admin, "/stats/prometheus", &[]).body_text());
    assert_eq!(e.prom(deny), Some(320));
    // One core for four workers (one start-up line), its threads named hopauth-*.
    assert_eq!(e.log().matches("hopauth: core for").count(), 1, "{}", e.log());
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", e.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    assert!(names.iter().filter(|n| n.starts_with("hopauth-rt-")).count() >= 2, "{names:?}");
    // The side port: same metric names as `hopauth serve`, health and readiness.
    let metrics = get(m.http_port, "/metrics", &[]).body_text();
    assert!(metrics.contains("hopauth_checks_total{decision=\"allow\",reason=\"verified\"} 320"), "{metrics}");
    assert!(metrics.contains("hopauth_verify_cache_hits_total"), "{metrics}");
    assert_eq!(get(m.http_port, "/healthz", &[]).status, 200);
}

#[test]
fn envoy_exiting_stops_the_module_threads_first() {
    let mut m = module("", 2);
    let t = token(&m.key, "erin", json!({}));
    assert_eq!(m.envoy.get("/orders", &[("authorization", &bearer(&t))]).status, 200);
    let status = m.envoy.quit();
    assert!(status.success(), "{status}");
    let log = m.envoy.log();
    // Envoy destroys the filter config on its main thread while exiting: the core stops
    // there, its runtime's threads joined within the deadline, and nothing panics.
    let stopping = log.find("hopauth: stopping the core for").expect("the core was not stopped");
    let stopped = log.find("hopauth: module threads stopped in").expect("the module threads were not joined");
    assert!(stopping < stopped, "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
