//! Allows with identity, raw header encoding, missing attributes, discovery and HMAC providers.

use super::*;

#[tokio::test]
async fn allow_carries_identity_headers_and_claims_metadata() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let (running, svc) = service(&config_yaml(&jwks.url(), "", "")).await;
    wait_ready(&running).await;
    let token = keys.ed.sign_jwt(&claims("alice")).unwrap();
    let auth = bearer(&token);

    let r = svc.check_request(&check_request(&[("authorization", &auth)], &[], "/x", &[])).await;
    assert_eq!(r.status.as_ref().unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else { panic!("{r:?}") };
    let set: HashMap<&str, &str> =
        ok.headers.iter().filter_map(|h| h.header.as_ref()).map(|h| (h.key.as_str(), h.value.as_str())).collect();
    assert_eq!(set.get("x-jwt-sub"), Some(&"alice"));
    assert_eq!(set.get("x-jwt-payload"), Some(&token.split('.').nth(1).unwrap()));
    assert!(!set.contains_key("authorization"), "the original token is never touched");
    assert!(ok.headers_to_remove.is_empty(), "{:?}", ok.headers_to_remove);
    let meta = &r.dynamic_metadata.as_ref().unwrap().fields["hopauth"];
    let Some(Kind::StructValue(claims)) = &meta.kind else { panic!("{meta:?}") };
    assert_eq!(claims.fields["sub"].kind, Some(Kind::StringValue("alice".into())));
    assert_eq!(claims.fields["iss"].kind, Some(Kind::StringValue(ISSUER.into())));

    // The same token again is a cache hit.
    let m = &running.metrics;
    let (hits, misses) = (m.checks().verify_cache_hits(), m.checks().verify_cache_misses());
    let again = svc.check_request(&check_request(&[("authorization", &auth)], &[], "/x", &[])).await;
    assert_eq!(outcome(&again).0, 200);
    assert_eq!((m.checks().verify_cache_hits(), m.checks().verify_cache_misses()), (hits + 1, misses));
}

#[tokio::test]
async fn raw_header_map_encoding_is_read_too() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let (running, svc) = service(&config_yaml(&jwks.url(), "", "")).await;
    wait_ready(&running).await;
    let auth = bearer(&keys.es.sign_jwt(&claims("alice")).unwrap());
    let mut req = check_request(&[], &[("authorization", auth.as_bytes())], "/x", &[]);
    assert_eq!(outcome(&svc.check_request(&req).await).0, 200);

    // Two raw entries are two credentials.
    let http = req.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    let second = HeaderValue { key: "authorization".into(), value: String::new(), raw_value: auth.into_bytes() };
    http.header_map.as_mut().unwrap().headers.push(second);
    assert_eq!(outcome(&svc.check_request(&req).await).0, 401);
}

#[tokio::test]
async fn a_request_without_http_attributes_is_a_clean_401() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let (_running, svc) = service(&config_yaml(&jwks.url(), "", "")).await;
    let r = svc.check_request(&CheckRequest::default()).await;
    assert_eq!(outcome(&r).0, 401);
    assert_eq!(denied_header(&r, "www-authenticate"), Some("Bearer realm=\"hopauth\""));
}

#[tokio::test]
async fn discovery_file_and_hmac_providers() {
    // Discovery: the issuer is the server's own base URL.
    let disc_key = SigningKey::generate(Alg::ES256, "d-1").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = format!("http://{addr}");
    let doc = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")});
    let keys_doc = jwks_of(&[&disc_key]);
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(move || async move { axum::Json(doc) }))
        .route("/keys", get(move || async move { axum::Json(keys_doc) }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let file_key = SigningKey::generate(Alg::EdDSA, "f-1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks_of(&[&file_key]).to_string()).unwrap();

    std::env::set_var("TEST_HMAC_SECRET", "0123456789abcdef0123456789abcdef-secret");
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let extra = format!(
        "  - name: disc\n    issuer: {issuer}\n    audiences: [{AUDIENCE}]\n    algorithms: [ES256]\n    jwks: {{ discovery: true }}\n\
         \x20 - name: file\n    issuer: https://file.test\n    audiences: [{AUDIENCE}]\n    algorithms: [EdDSA]\n    jwks: {{ file: \"{}\" }}\n\
         \x20 - name: hmac\n    issuer: https://hmac.test\n    audiences: [{AUDIENCE}]\n    algorithms: [HS256]\n    hmac_secret_env: TEST_HMAC_SECRET\n",
        file.display()
    );
    let (running, svc) = service(&config_yaml(&jwks.url(), &extra, "")).await;
    wait_ready(&running).await;

    let token_for = |key: &SigningKey, iss: &str| {
        let mut c = claims("alice");
        c["iss"] = iss.into();
        bearer(&key.sign_jwt(&c).unwrap())
    };
    let hs = SigningKey::hmac(Alg::HS256, "h", b"0123456789abcdef0123456789abcdef-secret").unwrap();
    let wrong_hs = SigningKey::hmac(Alg::HS256, "h", b"0123456789abcdef0123456789abcdef-wrong!").unwrap();
    for (auth, want) in [
        (token_for(&disc_key, &issuer), 200),
        (token_for(&file_key, "https://file.test"), 200),
        (token_for(&hs, "https://hmac.test"), 200),
        (token_for(&wrong_hs, "https://hmac.test"), 401),
        // HS256 for a provider that does not allow it, even with its secret.
        (token_for(&hs, ISSUER), 401),
    ] {
        let r = svc.check_request(&check_request(&[("authorization", &auth)], &[], "/x", &[])).await;
        assert_eq!(outcome(&r).0, want, "{:?}", outcome(&r));
    }
}
