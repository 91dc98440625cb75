//! F6: Redis slower than Envoy's ext_authz timeout.

use super::*;

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
