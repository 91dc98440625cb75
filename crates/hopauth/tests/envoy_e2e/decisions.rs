//! The decision table, token sources and spoofed identity headers through Envoy.

use super::*;

async fn decision_table_through_envoy(mode: Mode) {
    let s = Stack::start_in(mode).await;
    let k = &s.keys;

    // Valid token, each algorithm: allowed, identity set, original token untouched.
    for key in [&k.es, &k.rs, &k.ps, &k.ed] {
        let token = key.sign_jwt(&claims("alice")).unwrap();
        let r = s.get_with_token("/anything", &token).await;
        assert_eq!(r.status, 200, "{} token refused: {r:?}", key.alg);
        assert_eq!(r.upstream_header("x-jwt-sub"), Some("alice"));
        assert_eq!(r.upstream_header("x-jwt-scope"), Some("orders:read profile"));
        assert_eq!(r.upstream_header("authorization"), Some(bearer(&token).as_str()));
        let payload = token.split('.').nth(1).unwrap();
        assert_eq!(r.upstream_header("x-jwt-payload"), Some(payload));
    }

    // No token: 401 without an error code (RFC 6750 §3.1).
    let r = s.get("/anything", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(challenge(&r), "Bearer realm=\"hopauth\"");

    let now = now();
    let with = |patch: Value| {
        let mut c = claims("alice");
        for (key, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(key);
            } else {
                c[key] = v.clone();
            }
        }
        k.es.sign_jwt(&c).unwrap()
    };
    let cases = [
        (with(json!({"exp": now - 10})), "token has expired"),
        (with(json!({"exp": null})), "token has no expiry"),
        (with(json!({"nbf": now + 120})), "token is not yet valid"),
        (with(json!({"iss": "https://evil.test"})), "token issuer is not trusted"),
        (with(json!({"iss": "https://issuer.test/"})), "token issuer is not trusted"),
        (with(json!({"aud": "billing"})), "token audience is not accepted"),
        (with(json!({"aud": []})), "token audience is not accepted"),
        (with(json!({"exp": "9999999999"})), "token has an invalid claim"),
    ];
    for (token, description) in &cases {
        assert_invalid_token(&s.get_with_token("/anything", token).await, description);
    }
    let stranger = SigningKey::generate(Alg::ES256, "stranger").unwrap();
    let r = s.get_with_token("/anything", &stranger.sign_jwt(&claims("alice")).unwrap()).await;
    assert_invalid_token(&r, "token signing key is unknown");

    // Scope required by the route: 403 insufficient_scope naming the scope.
    let token = k.es.sign_jwt(&claims("alice")).unwrap();
    let r = s.get_with_token("/admin/users", &token).await;
    assert_eq!(r.status, 403, "{r:?}");
    let c = challenge(&r);
    assert!(c.contains("error=\"insufficient_scope\"") && c.contains("scope=\"admin\""), "{c}");
    let mut admin = claims("root");
    admin["scope"] = "admin".into();
    assert_eq!(s.get_with_token("/admin/users", &k.es.sign_jwt(&admin).unwrap()).await.status, 200);

    // Revocation by jti through the admin API: the cached token is refused at once.
    let mut c = claims("bob");
    let jti = c["jti"].as_str().unwrap().to_string();
    c["iat"] = (now - 60).into();
    let bob = k.es.sign_jwt(&c).unwrap();
    assert_eq!(s.get_with_token("/anything", &bob).await.status, 200);
    let resp = s.admin_revoke(json!({"jti": jti, "exp": now + 300})).await;
    assert_eq!(resp.status(), 200);
    assert_invalid_token(&s.get_with_token("/anything", &bob).await, "token has been revoked");
    // Non-canonical variants of a revoked token are refused too (GHSA-hxm8-2xgr-2p9m).
    assert_eq!(s.get_with_token("/anything", &format!("{bob}!!!!")).await.status, 401);

    // Revocation by subject: tokens issued at or before `before` are refused, later ones pass.
    let mut old = claims("carol");
    old["iat"] = (now - 100).into();
    let old = k.es.sign_jwt(&old).unwrap();
    let resp = s.admin_revoke(json!({"iss": ISSUER, "sub": "carol", "before": now - 50})).await;
    assert_eq!(resp.status(), 200);
    assert_invalid_token(&s.get_with_token("/anything", &old).await, "token has been revoked");
    assert_eq!(s.get_with_token("/anything", &k.es.sign_jwt(&claims("carol")).unwrap()).await.status, 200);

    // The admin API wants its own bearer token.
    let resp = s
        .client
        .post(format!("http://{}/admin/revoke", s.http_addr))
        .json(&json!({"jti": "x", "exp": now + 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Every deny was a deny Envoy counted, never an error (ext_authz could fail open on one).
    assert!(s.envoy_denies().await >= 10);
    assert_eq!(s.authz_errors().await, 0);
    let metrics = s.metrics().await;
    assert!(metrics.contains(r#"hopauth_checks_total{decision="deny",reason="expired"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"hopauth_checks_total{decision="deny",reason="revoked"} 2"#), "{metrics}");
}

async fn every_token_source_and_one_credential_per_request(mode: Mode) {
    let s = Stack::start_in(mode).await;
    let token = s.keys.es.sign_jwt(&claims("alice")).unwrap();
    let other = s.keys.es.sign_jwt(&claims("mallory")).unwrap();

    let r = s.get("/x", &[("cookie", &format!("theme=dark; access_token={token}"))]).await;
    assert_eq!((r.status, r.upstream_header("x-jwt-sub")), (200, Some("alice")), "{r:?}");
    let r = s.get(&format!("/x?a=1&access_token={token}"), &[]).await;
    assert_eq!((r.status, r.upstream_header("x-jwt-sub")), (200, Some("alice")), "{r:?}");
    let r = s.get("/x", &[("authorization", &format!("bearer {token}"))]).await;
    assert_eq!(r.status, 200, "scheme is case-insensitive: {r:?}");

    let r = s.get("/x", &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_eq!((r.status, challenge(&r)), (401, "Bearer realm=\"hopauth\""));

    let two_headers = [("authorization", bearer(&token)), ("authorization", bearer(&other))];
    let refs: Vec<(&str, &str)> = two_headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_invalid_token(&s.get("/x", &refs).await, "more than one token in the request");
    let r = s.get(&format!("/x?access_token={other}"), &[("authorization", &bearer(&token))]).await;
    assert_invalid_token(&r, "more than one token in the request");
    let r = s.get("/x", &[("authorization", &format!("Bearer {token}, Bearer {other}"))]).await;
    assert_eq!(r.status, 401);
}

async fn spoofed_identity_headers_never_reach_the_app(mode: Mode) {
    let s = Stack::start_in(mode).await;
    let token = s.keys.es.sign_jwt(&claims("alice")).unwrap();
    let spoof = [("x-jwt-sub", "root"), ("x-jwt-payload", "eyJzdWIiOiJyb290In0"), ("x-jwt-scope", "admin")];

    let mut headers = spoof.to_vec();
    let auth = bearer(&token);
    headers.push(("authorization", &auth));
    let r = s.get("/x", &headers).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-jwt-sub"), Some("alice"));
    assert_eq!(r.upstream_header("x-jwt-scope"), Some("orders:read profile"));

    // Anonymous route, no token: the client's copies are removed, nothing is set.
    let r = s.get("/public/page", &spoof).await;
    assert_eq!(r.status, 200, "{r:?}");
    for (name, _) in spoof {
        assert_eq!(r.upstream_header(name), None, "{name} leaked: {r:?}");
    }

    // A token without a `scope` claim: the client's x-jwt-scope does not survive.
    let mut c = claims("dave");
    c.as_object_mut().unwrap().remove("scope");
    let auth = bearer(&s.keys.es.sign_jwt(&c).unwrap());
    let r = s.get("/x", &[("authorization", &auth), ("x-jwt-scope", "admin")]).await;
    assert_eq!((r.status, r.upstream_header("x-jwt-scope")), (200, None), "{r:?}");
}

/// `claims_to_metadata` picks the claims Envoy holds as metadata; `[]` leaves none.
async fn claims_to_metadata_selects_the_claims_envoy_holds(mode: Mode) {
    let (route, to) = mode.claims_metadata_route("x-hopauth-metadata");
    let listing = |list: &'static str| {
        move |url: &str| {
            let provider = "    payload_header: x-jwt-payload\n";
            config_yaml(url, "", "").replace(provider, &format!("{provider}    claims_to_metadata: {list}\n"))
        }
    };
    // Two claims of the token and one it lacks: the two, nothing for the third.
    let s = Stack::launch(mode, listing("[sub, scope, not_in_the_token]"), |l| l.replace(route, to.clone())).await;
    let r = s.get_with_token("/x", &s.keys.es.sign_jwt(&claims("alice")).unwrap()).await;
    assert_eq!((r.status, r.upstream_header("x-jwt-sub")), (200, Some("alice")), "{r:?}");
    let metadata: Value = serde_json::from_str(r.upstream_header("x-hopauth-metadata").expect("metadata header"))
        .unwrap_or_else(|e| panic!("metadata is not JSON ({e}): {r:?}"));
    assert_eq!(metadata, json!({"sub": "alice", "scope": "orders:read profile"}));
    drop(s);

    // None: the allow carries no metadata; the identity headers are as before.
    let s = Stack::launch(mode, listing("[]"), |l| l.replace(route, to)).await;
    let r = s.get_with_token("/x", &s.keys.es.sign_jwt(&claims("alice")).unwrap()).await;
    assert_eq!((r.status, r.upstream_header("x-jwt-sub")), (200, Some("alice")), "{r:?}");
    let shown = r.upstream_header("x-hopauth-metadata");
    assert!(matches!(shown, None | Some("-")), "claims metadata with claims_to_metadata: []: {shown:?}");
}

in_both_modes!(
    decision_table_through_envoy,
    every_token_source_and_one_credential_per_request,
    spoofed_identity_headers_never_reach_the_app,
    claims_to_metadata_selects_the_claims_envoy_holds
);
