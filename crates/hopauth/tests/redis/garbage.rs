//! Garbage under the key prefix is counted and never stops the sync.

use super::*;

/// Hole: one key of the wrong type, or one key name that is not UTF-8, used to fail every
/// resync (and every invalidation read) forever; a value that is not UTF-8 lifted a `jti`
/// revocation. Garbage is counted and never stops the sync: a `jti` key revokes whatever it
/// holds, a subject key that is not a string is skipped (the contract), and a subject string
/// that is not a time fails closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_under_the_prefix_is_counted_and_never_stops_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &[]);
    let p = redis.port;
    let plant = |tag: &str| {
        redis.cli(&["HSET", &format!("hopauth:revoked:jti:{tag}-wrongtype"), "a", "b"]);
        redis.cli(&["RPUSH", &format!("hopauth:revoked:sub:{ISSUER}|{tag}-list"), "x"]);
        let mut not_utf8 = format!("hopauth:revoked:jti:{tag}-").into_bytes();
        not_utf8.extend_from_slice(b"\xff\xfe");
        raw(p, &[b"SET", &not_utf8, b"1", b"EX", b"300"]);
        raw(p, &[b"SET", format!("hopauth:revoked:jti:{tag}-binary").as_bytes(), b"\xff\x00\xfe", b"EX", b"300"]);
        redis.cli(&["SET", &format!("hopauth:revoked:sub:{ISSUER}|{tag}-garbled"), "not-a-time", "EX", "300"]);
        redis.cli(&["SET", &format!("hopauth:revoked:jti:{tag}-good"), "1", "EX", "300"]);
    };
    plant("start");
    let metrics = Metrics::standalone();
    let store = redis_store_with(&redis.url(), Duration::from_secs(2), metrics.clone()).await;
    for j in ["start-good", "start-wrongtype", "start-binary"] {
        assert!(jti_revoked(&store, j), "{j}: a jti key revokes whatever its value or type");
    }
    assert!(subject_revoked(&store, "start-garbled"), "a subject time that is not a number fails closed");
    assert!(!subject_revoked(&store, "start-list"), "a subject key that is not a string is skipped");
    let m = metrics.render();
    assert_eq!(metric_value(&m, r#"hopauth_revocation_bad_keys_total{reason="wrong_type"}"#), 2.0, "{m}");
    assert_eq!(metric_value(&m, r#"hopauth_revocation_bad_keys_total{reason="bad_key"}"#), 1.0, "{m}");
    assert_eq!(metric_value(&m, r#"hopauth_revocation_bad_keys_total{reason="bad_value"}"#), 1.0, "{m}");

    // The same garbage arriving as invalidations while connected.
    plant("live");
    let s = store.clone();
    wait_until("live revocations beside garbage", Duration::from_secs(5), || {
        let s = s.clone();
        async move {
            ["live-good", "live-wrongtype", "live-binary"].iter().all(|j| jti_revoked(&s, j))
                && subject_revoked(&s, "live-garbled")
        }
    })
    .await;
    // Deleting the wrong-type key lifts it like any other.
    redis.cli(&["DEL", "hopauth:revoked:jti:live-wrongtype"]);
    let s = store.clone();
    wait_until("DEL of a wrong-type key", Duration::from_secs(5), || {
        let s = s.clone();
        async move { !jti_revoked(&s, "live-wrongtype") }
    })
    .await;
    assert!(!subject_revoked(&store, "live-list"), "a subject key that is not a string is skipped");
    let m = metrics.render();
    assert_eq!(metric_value(&m, r#"hopauth_revocation_syncs_total{result="error"}"#), 0.0, "no session broke: {m}");
    assert_eq!(metric_value(&m, r#"hopauth_revocation_syncs_total{result="success"}"#), 1.0, "{m}");
    assert!(metric_value(&m, r#"hopauth_revocation_bad_keys_total{reason="wrong_type"}"#) >= 4.0, "{m}");
    assert!(store.ready());
}
