//! RFC 8725 attacks, unverifiable credentials and nested claims through Envoy.

use super::*;

async fn rfc8725_attacks_are_refused(mode: Mode) {
    let s = Stack::start_in(mode).await;
    let k = &s.keys;
    let c = claims("alice");
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());

    // alg none in every spelling, with and without a signature.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let unsigned = format!("{}.{}.", b64(&json!({"alg": alg})), b64(&c));
        assert_eq!(s.get_with_token("/x", &unsigned).await.status, 401, "{alg}");
        let with_sig = format!("{unsigned}c2ln");
        assert_invalid_token(&s.get_with_token("/x", &with_sig).await, "token algorithm is not allowed");
    }

    // RS256 -> HS256 confusion: the public key's bytes used as an HMAC secret.
    let jwk = k.rs.public_jwk();
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    for secret in [jwk.to_string().into_bytes(), n] {
        let hs = SigningKey::hmac(Alg::HS256, "rs-1", &secret).unwrap();
        let token = hs.sign_jwt(&c).unwrap();
        assert_invalid_token(&s.get_with_token("/x", &token).await, "token algorithm is not allowed");
    }

    // Keys carried in the token: jku/x5u to an attacker endpoint, embedded jwk, x5c.
    let attacker = SigningKey::generate(Alg::ES256, "es-1").unwrap();
    let evil = JwksServer::start(jwks_of(&[&attacker]), "https://evil.test").await;
    for header in [
        json!({"alg": "ES256", "kid": "es-1", "jku": evil.url()}),
        json!({"alg": "ES256", "kid": "es-1", "x5u": evil.url()}),
        json!({"alg": "ES256", "kid": "es-1", "jwk": attacker.public_jwk()}),
        json!({"alg": "ES256", "kid": "es-1", "x5c": ["MIIB"]}),
    ] {
        let token = attacker.sign_with_header(&header, &c).unwrap();
        assert_invalid_token(&s.get_with_token("/x", &token).await, "token header carries a key");
    }
    assert_eq!(evil.hits(), 0, "hopauth must never fetch a URL named by a token");

    // ES256 with r = s = 0 (CVE-2022-21449), and with a DER signature.
    let good = k.es.sign_jwt(&c).unwrap();
    let input = &good[..good.rfind('.').unwrap()];
    let zero = format!("{input}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
    assert_invalid_token(&s.get_with_token("/x", &zero).await, "token signature is invalid");

    // Tampered payload under a valid signature.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut forged = c.clone();
    forged["sub"] = "root".into();
    parts[1] = b64(&forged);
    assert_invalid_token(&s.get_with_token("/x", &parts.join(".")).await, "token signature is invalid");

    // A validly signed token with an unknown critical header.
    let crit =
        k.es.sign_with_header(&json!({"alg": "ES256", "kid": "es-1", "crit": ["x-custom"], "x-custom": 1}), &c)
            .unwrap();
    assert_invalid_token(&s.get_with_token("/x", &crit).await, "token has an unsupported critical header");

    // kid as a path or an injection: just an unknown key.
    let traversal = k.es.sign_with_header(&json!({"alg": "ES256", "kid": "../../../../dev/null"}), &c).unwrap();
    assert_invalid_token(&s.get_with_token("/x", &traversal).await, "token signing key is unknown");

    // Duplicate members a downstream parser could read differently.
    let dup = format!(
        "{}.{}",
        b64(&json!({"alg": "ES256", "kid": "es-1"})),
        URL_SAFE_NO_PAD.encode(format!(
            r#"{{"sub":"alice","sub":"root","iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{}}}"#,
            now() + 60
        ))
    );
    let dup = format!("{dup}.{}", URL_SAFE_NO_PAD.encode(k.es.sign_raw(dup.as_bytes()).unwrap()));
    assert_invalid_token(&s.get_with_token("/x", &dup).await, "token is malformed");

    // Oversize token: refused before any decoding.
    let mut big = c.clone();
    big["pad"] = "x".repeat(9000).into();
    let big = k.es.sign_jwt(&big).unwrap();
    assert_invalid_token(&s.get_with_token("/x", &big).await, "token is too large");

    assert_eq!(s.authz_errors().await, 0);
}

async fn a_credential_hopauth_cannot_verify_never_reaches_the_app_even_on_an_anonymous_route(mode: Mode) {
    let s = Stack::start_in(mode).await;
    let token = s.keys.es.sign_jwt(&claims("alice")).unwrap();
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let forged = format!("{}.{}.c2ln", b64(&json!({"alg": "ES256"})), b64(&claims("root")));

    // T42: the scheme is case-insensitive; a verified token on /public sets identity.
    let r = s.get("/public/page", &[("authorization", &format!("bearer {token}"))]).await;
    assert_eq!((r.status, r.upstream_header("x-jwt-sub")), (200, Some("alice")), "{r:?}");

    // Anything else in `authorization` is refused there too, and never forwarded.
    for value in [
        format!("Bearer\t{forged}"),
        format!("Bearer\t{token}"),
        format!("Bearer  {token}"),
        format!("bearer \t{token}"),
        format!("Bearer{forged}"),
        "Bearer".to_string(),
        "Basic dXNlcjpwYXNz".to_string(),
        format!("Bearer {forged}"),
    ] {
        let r = s.get("/public/page", &[("authorization", &value)]).await;
        assert_eq!(r.status, 401, "{value:?} passed: {r:?}");
    }
    // A Basic credential alone: RFC 6750's challenge without an error code.
    let r = s.get("/public/page", &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"hopauth\""));
    // Basic beside Bearer (two header lines): two credentials.
    let two = [("authorization", bearer(&token)), ("authorization", "Basic dXNlcjpwYXNz".to_string())];
    let refs: Vec<(&str, &str)> = two.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(s.get("/x", &refs).await.status, 401);
    // Bytes that are not UTF-8, passed by Envoy as raw header bytes.
    let mut binary = b"Bearer ".to_vec();
    binary.extend_from_slice(&[0xff, 0xfe]);
    assert_eq!(send_raw(&s, "/public/page", &[("authorization", &binary)]).await, 401);
    // A percent-encoded query name is the same parameter.
    assert_eq!(s.get(&format!("/public/page?access%5Ftoken={forged}"), &[]).await.status, 401);
    let r = s.get(&format!("/x?access%5Ftoken={token}"), &[("authorization", &bearer(&token))]).await;
    assert_eq!(r.status, 200, "the same token twice is one credential: {r:?}");
    let other = s.keys.es.sign_jwt(&claims("mallory")).unwrap();
    let r = s.get(&format!("/x?access%5Ftoken={other}"), &[("authorization", &bearer(&token))]).await;
    assert_invalid_token(&r, "more than one token in the request");
    assert_eq!(s.authz_errors().await, 0);
}

async fn nested_claims_at_the_bound_reach_envoy_metadata_and_past_it_are_refused(mode: Mode) {
    use hopauth_core::jws::MAX_JSON_DEPTH;
    let (route, with_metadata) = mode.claims_metadata_route("x-hopauth-metadata");
    let s = Stack::launch(mode, |url| config_yaml(url, "", ""), |l| l.replace(route, with_metadata)).await;
    let (keys, client, envoy) = (&s.keys, &s.client, &s.envoy);
    // `depth` containers in the claim; the claims object adds one.
    let token_with = |depth: usize, objects: bool| {
        let nested =
            (0..depth).fold(json!("leaf"), |inner, _| if objects { json!({ "n": inner }) } else { json!([inner]) });
        let mut c = claims("alice");
        c["nested"] = nested;
        keys.es.sign_jwt(&c).unwrap()
    };
    for objects in [true, false] {
        let at_limit = token_with(MAX_JSON_DEPTH - 1, objects);
        let r = send(client, &envoy.url("/x"), &[("authorization", &bearer(&at_limit))]).await;
        assert_eq!((r.status, r.upstream_header("x-jwt-sub")), (200, Some("alice")), "{r:?}");
        let metadata: Value = serde_json::from_str(r.upstream_header("x-hopauth-metadata").expect("metadata header"))
            .unwrap_or_else(|e| panic!("metadata is not JSON ({e}): {r:?}"));
        let mut leaf = &metadata["nested"];
        for _ in 0..MAX_JSON_DEPTH - 1 {
            leaf = if objects { &leaf["n"] } else { &leaf[0] };
        }
        assert_eq!(leaf, "leaf", "the whole claim reached Envoy: {metadata}");
        for depth in [MAX_JSON_DEPTH, 40] {
            let past = token_with(depth, objects);
            let r = send(client, &envoy.url("/x"), &[("authorization", &bearer(&past)), ("x-jwt-sub", "root")]).await;
            assert_invalid_token(&r, "token claims are nested too deeply");
        }
    }
    // Envoy decoded every answer: no ext_authz error (an undecodable one would be).
    assert_eq!(s.authz_errors().await, 0);
}

in_both_modes!(
    rfc8725_attacks_are_refused,
    a_credential_hopauth_cannot_verify_never_reaches_the_app_even_on_an_anonymous_route,
    nested_claims_at_the_bound_reach_envoy_metadata_and_past_it_are_refused,
);
