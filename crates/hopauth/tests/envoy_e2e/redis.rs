//! Redis revocation through Envoy: a plain `redis-cli SET` enforced without a Redis hop
//! per request, and an outage past `max_staleness` failing closed and recovering with what
//! was written meanwhile.

use std::time::{Duration, Instant};

use hopauth_testkit::redis_server::{free_port, RedisServer};

use super::*;

fn redis_yaml(url: &str, max_staleness: &str, mode: &str) -> String {
    format!("revocation:\n  backend: redis\n  redis_url: \"{url}\"\n  max_staleness: {max_staleness}\n  failure_mode: {mode}\n")
}

async fn a_plain_redis_cli_set_reaches_envoy_without_a_redis_hop_per_request(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &[]);
    let s = Stack::start_in_with(mode, "", &redis_yaml(&redis.url(), "2s", "deny")).await;
    let c = claims("alice");
    let token = s.keys.es.sign_jwt(&c).unwrap();
    assert_eq!(s.get_with_token("/x", &token).await.status, 200);

    // Steady state: Checks send no command to Redis.
    let calls = |stats: &str| -> u64 {
        stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_get:"))
            .find_map(|l| l.split(&[':', ',', '='][..]).nth(2).and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    };
    let gets_before = calls(&redis.cli(&["INFO", "commandstats"]));
    for _ in 0..50 {
        assert_eq!(s.get_with_token("/x", &token).await.status, 200);
    }
    assert_eq!(calls(&redis.cli(&["INFO", "commandstats"])), gets_before, "a Check read Redis");

    // Any writer, no publish: SET with EX.
    let key = format!("hopauth:revoked:jti:{}", c["jti"].as_str().unwrap());
    let start = Instant::now();
    assert_eq!(redis.cli(&["SET", &key, "1", "EX", "300"]), "OK");
    let end = start + Duration::from_secs(5);
    loop {
        let r = s.get_with_token("/x", &token).await;
        if r.status == 401 {
            assert_eq!(r.body["error_description"], "token has been revoked");
            break;
        }
        assert!(Instant::now() < end, "revocation not enforced through Envoy after 5s");
    }
    eprintln!("redis-cli SET -> Envoy 401 in {:?}", start.elapsed());

    // The admin API writes through Redis too.
    let c2 = claims("bob");
    let t2 = s.keys.es.sign_jwt(&c2).unwrap();
    assert_eq!(s.get_with_token("/x", &t2).await.status, 200);
    let resp = s.admin_revoke(json!({"jti": c2["jti"], "exp": c2["exp"]})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(s.get_with_token("/x", &t2).await.status, 401);
    assert_eq!(redis.cli(&["EXISTS", &format!("hopauth:revoked:jti:{}", c2["jti"].as_str().unwrap())]), "1");
    // Deleting the key un-revokes.
    redis.cli(&["DEL", &key]);
    let end = Instant::now() + Duration::from_secs(5);
    while s.get_with_token("/x", &token).await.status != 200 {
        assert!(Instant::now() < end, "DEL not picked up");
    }
}

/// Redis crashes (SIGKILL) and stays down past `max_staleness` with `failure_mode: deny`:
/// clients get the JSON 503 with `retry-after` (hopauth's own, or in ext_authz mode Envoy's
/// once the sidecar's health check says NOT_SERVING), a known revocation never turns into
/// an allow, and once Redis is back a revocation written while hopauth was disconnected is
/// enforced and other tokens pass again.
async fn a_redis_outage_past_max_staleness_fails_closed_and_recovers_with_what_was_missed(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(dir.path(), free_port(), &[]);
    let s = Stack::start_in_with(mode, "", &redis_yaml(&redis.url(), "500ms", "deny")).await;
    let c = claims("alice");
    let token = s.keys.es.sign_jwt(&c).unwrap();
    let known = claims("known");
    let known_token = s.keys.es.sign_jwt(&known).unwrap();
    assert_eq!(s.get_with_token("/x", &token).await.status, 200);
    redis.cli(&["SET", &format!("hopauth:revoked:jti:{}", known["jti"].as_str().unwrap()), "1", "EX", "300"]);
    wait_until("the known revocation through Envoy", Duration::from_secs(5), || async {
        s.get_with_token("/x", &known_token).await.status == 401
    })
    .await;

    redis.kill();
    let down = Instant::now();
    wait_until("503 through Envoy past max_staleness", Duration::from_secs(10), || async {
        s.get_with_token("/x", &token).await.status == 503
    })
    .await;
    let to_503 = down.elapsed();
    let r = s.get_with_token("/x", &token).await;
    assert_eq!((r.status, r.header("retry-after")), (503, Some("5")), "{r:?}");
    assert_eq!(r.body["error"], "temporarily_unavailable", "{r:?}");
    assert!(r.body.get("headers").is_none(), "the upstream answered: {r:?}");
    let r = s.get_with_token("/x", &known_token).await;
    assert!(matches!(r.status, 401 | 503), "a known revocation during the outage: {r:?}");

    // Written by another process while hopauth is disconnected.
    let missed = format!("hopauth:revoked:jti:{}", c["jti"].as_str().unwrap());
    {
        let side = RedisServer::start(&redis.dir, free_port(), &[]);
        assert_eq!(side.cli(&["SET", &missed, "1", "EX", "300"]), "OK");
        assert_eq!(side.cli(&["SHUTDOWN"]), "");
    }
    redis.start_again();
    let back = Instant::now();
    wait_until("the revocation written while disconnected", Duration::from_secs(10), || async {
        s.get_with_token("/x", &token).await.status == 401
    })
    .await;
    let fresh = s.keys.es.sign_jwt(&claims("fresh")).unwrap();
    wait_until("a fresh token to pass again", Duration::from_secs(10), || async {
        s.get_with_token("/x", &fresh).await.status == 200
    })
    .await;
    eprintln!("{mode:?}: Redis killed -> 503 in {to_503:?}; back -> enforced and passing in {:?}", back.elapsed());
    assert_invalid_token(&s.get_with_token("/x", &token).await, "token has been revoked");
    // No `authz_errors` assertion: ext_authz counts its answers while the sidecar is
    // NOT_SERVING as errors, by design (status_on_error is the JSON 503 asserted above).
    assert_eq!(s.envoy.stat("http.ingress.ext_authz.failure_mode_allowed").await, 0);
}

in_both_modes!(
    a_plain_redis_cli_set_reaches_envoy_without_a_redis_hop_per_request,
    a_redis_outage_past_max_staleness_fails_closed_and_recovers_with_what_was_missed,
);
