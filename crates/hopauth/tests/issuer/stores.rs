//! One behaviour suite for the memory and Redis refresh-token stores.

use super::*;

/// The same behaviour from both refresh token stores.
async fn refresh_store_behaviour(store: &dyn RefreshStore) {
    let now = support::now();
    let next = |family: &str| {
        let (token, hash) = new_token(family);
        NewToken { hash, expires: now + 100, access_jti: format!("j-{token}"), access_exp: now + 30 }
    };
    let family = new_family();
    let session = Session { sub: "alice".into(), scope: "orders:read".into(), expires: now + 1000 };
    let first = next(&family);
    store.create(&family, &session, &first).await.unwrap();
    let second = next(&family);
    let r = store.rotate(&family, &first.hash, &second, now).await.unwrap();
    assert_eq!(r, Rotation::Rotated { session: session.clone(), expires: now + 100 });
    // The same request again (its reply was lost): the same successor, not a reuse.
    let r = store.rotate(&family, &first.hash, &second, now).await.unwrap();
    assert_eq!(r, Rotation::Rotated { session: session.clone(), expires: now + 100 }, "an idempotent retry");
    let third = next(&family);
    let r = store.rotate(&family, &"0".repeat(64), &third, now).await.unwrap();
    assert_eq!(r, Rotation::Refused(Refused::Unknown));
    // Reuse of the spent first token revokes the family and names its live access tokens.
    match store.rotate(&family, &first.hash, &third, now).await.unwrap() {
        Rotation::Reused(f) => {
            assert_eq!(f.sub, "alice");
            let mut jtis: Vec<&str> = f.live_access.iter().map(|(j, _)| j.as_str()).collect();
            jtis.sort();
            let mut want = vec![first.access_jti.as_str(), second.access_jti.as_str()];
            want.sort();
            assert_eq!(jtis, want);
        }
        other => panic!("expected reuse, got {other:?}"),
    }
    let r = store.rotate(&family, &second.hash, &third, now).await.unwrap();
    assert_eq!(r, Rotation::Refused(Refused::Revoked), "the unspent token of a dead family");

    // A token never outlives its session; time comes from the caller.
    let family = new_family();
    let short = Session { expires: now + 50, ..session.clone() };
    let a = next(&family);
    store.create(&family, &short, &a).await.unwrap();
    let b = next(&family);
    let r = store.rotate(&family, &a.hash, &b, now).await.unwrap();
    assert_eq!(r, Rotation::Rotated { session: short.clone(), expires: now + 50 });
    let c = next(&family);
    assert_eq!(store.rotate(&family, &b.hash, &c, now + 60).await.unwrap(), Rotation::Refused(Refused::Unknown));

    // Revoking with a token: only one the store holds (spent or not) ends the session.
    let family = new_family();
    let a = next(&family);
    store.create(&family, &session, &a).await.unwrap();
    let forged = next(&family);
    assert_eq!(store.revoke_with_token(&family, &forged.hash, now).await.unwrap(), None, "a forged token");
    let b = next(&family);
    assert!(matches!(store.rotate(&family, &a.hash, &b, now).await.unwrap(), Rotation::Rotated { .. }));
    let other = new_family();
    assert_eq!(store.revoke_with_token(&other, &a.hash, now).await.unwrap(), None, "another family's token");
    let revoked = store.revoke_with_token(&family, &a.hash, now).await.unwrap().expect("a spent token of the family");
    assert_eq!(revoked.sub, "alice");
    assert_eq!(store.rotate(&family, &b.hash, &next(&family), now).await.unwrap(), Rotation::Refused(Refused::Revoked));

    // Logout: revoke the family (idempotent); unknown families are None.
    let family = new_family();
    let a = next(&family);
    store.create(&family, &session, &a).await.unwrap();
    let revoked = store.revoke_family(&family, now).await.unwrap().unwrap();
    assert_eq!(revoked.live_access, vec![(a.access_jti.clone(), now + 30)]);
    assert!(store.revoke_family(&family, now).await.unwrap().is_some());
    let b = next(&family);
    assert_eq!(store.rotate(&family, &a.hash, &b, now).await.unwrap(), Rotation::Refused(Refused::Revoked));
    assert_eq!(store.revoke_family(&new_family(), now).await.unwrap(), None);
    assert!(store.ping().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_stores_behave_the_same_and_redis_rotation_is_atomic() {
    refresh_store_behaviour(&MemoryRefreshStore::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), free_port(), &[]);
    let store = Arc::new(RedisRefreshStore::new(&redis.url(), Duration::from_secs(1), Duration::from_secs(1)).unwrap());
    refresh_store_behaviour(store.as_ref()).await;
    // Only hashes are stored, with TTLs.
    let keys = redis.cli(&["KEYS", "hopauth:issuer:rt:*"]);
    let first = keys.lines().next().unwrap();
    assert!(first.rsplit(':').next().unwrap().len() == 64, "{first}");
    let ttl: i64 = redis.cli(&["TTL", first]).parse().unwrap();
    assert!(ttl > 0, "{first}: {ttl}");

    // Twenty concurrent refreshes with one token: exactly one rotates, the rest are reuse.
    let now = support::now();
    let family = new_family();
    let (_, hash) = new_token(&family);
    let session = Session { sub: "racer".into(), scope: String::new(), expires: now + 600 };
    let first = NewToken { hash: hash.clone(), expires: now + 60, access_jti: "j0".into(), access_exp: now + 30 };
    store.create(&family, &session, &first).await.unwrap();
    let mut racers = Vec::new();
    for i in 0..20 {
        let (store, family, hash) = (store.clone(), family.clone(), hash.clone());
        racers.push(tokio::spawn(async move {
            let (_, h) = new_token(&family);
            let next = NewToken { hash: h, expires: now + 60, access_jti: format!("j{}", i + 1), access_exp: now + 30 };
            store.rotate(&family, &hash, &next, now).await.unwrap()
        }));
    }
    let mut rotated = 0;
    for r in racers {
        match r.await.unwrap() {
            Rotation::Rotated { .. } => rotated += 1,
            Rotation::Reused(_) | Rotation::Refused(Refused::Revoked) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rotated, 1);
    // A restarted Redis has lost its script cache: EVALSHA falls back to EVAL.
    redis.cli(&["SCRIPT", "FLUSH"]);
    assert_eq!(store.revoke_family(&family, now).await.unwrap().map(|f| f.sub), Some("racer".into()));
}
