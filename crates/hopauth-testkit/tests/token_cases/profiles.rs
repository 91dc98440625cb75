//! Per-provider typ and max_token_age, kid-less tokens.

use super::*;

#[tokio::test]
async fn typ_and_max_token_age_are_enforced_per_provider() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let strict = format!(
        "  - name: strict\n    issuer: https://strict.test\n    audiences: [{AUDIENCE}]\n    algorithms: [ES256]\n    \
         jwks: {{ uri: \"{}\" }}\n    leeway: 0s\n    typ: at+jwt\n    max_token_age: 5m\n",
        jwks.url()
    );
    let running = start_hopauth(&config_yaml(&jwks.url(), &strict, NO_SHEDDING)).await;
    wait_ready(&running).await;
    let svc = AuthorizationService::new(running.authorizer.clone());
    let check = |token: String| {
        let svc = &svc;
        async move {
            verdict(&svc.check_request(&check_request(&[("authorization", &bearer(&token))], &[], "/x", &[])).await)
        }
    };
    let now = now();
    let strict_claims = |iat: Option<i64>| {
        let mut c = claims("alice");
        c["iss"] = "https://strict.test".into();
        match iat {
            Some(t) => c["iat"] = t.into(),
            None => drop(c.as_object_mut().unwrap().remove("iat")),
        }
        c
    };
    let with_typ = |typ: Option<&str>, c: &Value| {
        let mut h = json!({"alg": "ES256", "kid": "es-1"});
        if let Some(t) = typ {
            h["typ"] = t.into();
        }
        keys.es.sign_with_header(&h, c).unwrap()
    };

    // T29: with no max_token_age, a future `iat` is accepted (RFC 7519 is silent).
    let mut future = claims("alice");
    future["iat"] = (now + 3600).into();
    assert_eq!(check(keys.es.sign_jwt(&future).unwrap()).await, (200, String::new()));

    let fresh = strict_claims(Some(now - 10));
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+Jwt"] {
        assert_eq!(check(with_typ(Some(typ), &fresh)).await, (200, String::new()), "typ {typ}");
    }
    // T33: the wrong media type, or none, is refused.
    for typ in [Some("JWT"), Some("at+jwt "), Some("application/jwt"), Some("xat+jwt"), Some(""), None] {
        assert_eq!(check(with_typ(typ, &fresh)).await, (401, "bad_token_type".into()), "typ {typ:?}");
    }
    // T29 with max_token_age: too old, issued in the future, or no `iat` at all.
    let too_old = strict_claims(Some(now - 301));
    assert_eq!(check(with_typ(Some("at+jwt"), &too_old)).await, (401, "token_too_old".into()));
    let in_future = strict_claims(Some(now + 3600));
    assert_eq!(check(with_typ(Some("at+jwt"), &in_future)).await, (401, "not_yet_valid".into()));
    assert_eq!(check(with_typ(Some("at+jwt"), &strict_claims(None))).await, (401, "missing_iat".into()));
    let r =
        svc.check_request(&check_request(&[("authorization", &bearer(&with_typ(None, &fresh)))], &[], "/x", &[])).await;
    assert!(challenge(&r).unwrap().contains("error=\"invalid_token\""), "{r:?}");

    // A token verified (and cached) near its maximum age stops passing when it reaches it.
    let aging = with_typ(Some("at+jwt"), &strict_claims(Some(now - 298)));
    assert_eq!(check(aging.clone()).await.0, 200);
    assert_eq!(check(aging.clone()).await.0, 200, "a cache hit");
    wait_until("the cached token to reach max_token_age", Duration::from_secs(10), || {
        let t = aging.clone();
        let check = &check;
        async move { check(t).await.0 == 401 }
    })
    .await;
}

#[test]
fn token_profile_config_is_validated() {
    let base = |extra: &str| {
        format!(
            "providers:\n  - name: main\n    issuer: https://i.test\n    audiences: [a]\n    algorithms: [ES256]\n    \
             jwks: {{ uri: \"http://127.0.0.1:1/jwks.json\" }}\n{extra}"
        )
    };
    let parse = |extra: &str| hopauth::config::Config::from_yaml(&base(extra), std::path::Path::new("t.yaml"));
    assert!(parse("    typ: at+jwt\n    max_token_age: 10m\n").is_ok());
    assert!(parse("    typ: application/at+jwt\n").is_ok());
    for (extra, key) in [
        ("    typ: \"\"\n", "providers[0].typ"),
        ("    typ: \"at jwt\"\n", "providers[0].typ"),
        ("    typ: application/\n", "providers[0].typ"),
        ("    max_token_age: 0s\n", "providers[0].max_token_age"),
    ] {
        let err = parse(extra).unwrap_err().to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
    let err = parse("    max_token_age: soon\n").unwrap_err().to_string();
    assert!(err.contains("invalid duration"), "{err}");
}

// ---- T11: no `kid`: every key of the token's algorithm is tried.

#[tokio::test]
async fn a_token_without_kid_is_tried_against_every_key_of_its_algorithm() {
    let k1 = SigningKey::generate(Alg::ES256, "k1").unwrap();
    let k2 = SigningKey::generate(Alg::ES256, "k2").unwrap();
    let k3 = SigningKey::generate(Alg::ES256, "k3").unwrap();
    let jwks = JwksServer::start(jwks_of(&[&k1, &k2, &k3]), ISSUER).await;
    let running = start_hopauth(&config_yaml(&jwks.url(), "", NO_SHEDDING)).await;
    wait_ready(&running).await;
    let svc = AuthorizationService::new(running.authorizer.clone());
    let no_kid =
        |key: &SigningKey| key.sign_with_header(&json!({"alg": "ES256", "typ": "JWT"}), &claims("alice")).unwrap();
    let check = |token: String| {
        let svc = &svc;
        async move {
            verdict(&svc.check_request(&check_request(&[("authorization", &bearer(&token))], &[], "/x", &[])).await)
        }
    };
    // Signed by key #3: found by trying each ES256 key in turn.
    assert_eq!(check(no_kid(&k3)).await, (200, String::new()));
    assert_eq!(check(no_kid(&k1)).await, (200, String::new()));
    // Signed by no key of the set: refused, without a refetch (no `kid` to look for).
    let hits = jwks.hits();
    let stranger = SigningKey::generate(Alg::ES256, "k3").unwrap();
    assert_eq!(check(no_kid(&stranger)).await, (401, "bad_signature".into()));
    // Another algorithm's keys are never tried: an EdDSA token finds no EdDSA key here.
    let ed = SigningKey::generate(Alg::EdDSA, "k3").unwrap();
    let ed_token = ed.sign_with_header(&json!({"alg": "EdDSA"}), &claims("alice")).unwrap();
    assert_eq!(check(ed_token).await, (401, "unknown_key".into()));
    assert_eq!(jwks.hits(), hits, "a kid-less token causes no JWKS fetch");
}
