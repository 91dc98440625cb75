//! Unverifiable credentials, odd CheckRequests, kid injection.

use super::*;

// ---- T41, T42: one usable credential per request, on every route.

/// (headers, path, expected (status, reason)).
type Case = (Vec<(String, String)>, String, (i32, &'static str));

#[tokio::test]
async fn a_credential_hopauth_cannot_verify_never_passes_even_on_an_anonymous_route() {
    let f = fixture("").await;
    let token = f.keys.es.sign_jwt(&claims("alice")).unwrap();
    let other = f.keys.es.sign_jwt(&claims("mallory")).unwrap();
    let forged = format!("{}.{}.c2ln", b64(&json!({"alg": "ES256"})), b64(&claims("root")));

    for ext in [&[][..], ANONYMOUS] {
        let route = if ext.is_empty() { "default route" } else { "anonymous route" };
        let h = |v: String| vec![("authorization".to_string(), v)];
        let cases: Vec<Case> = vec![
            (h(format!("bearer {token}")), "/x".into(), (200, "")),
            (h(format!("BEARER {token}")), "/x".into(), (200, "")),
            (h(format!("Bearer\t{forged}")), "/x".into(), (401, "malformed_token")),
            (h(format!("Bearer\t{token}")), "/x".into(), (401, "malformed_token")),
            (h(format!("Bearer  {token}")), "/x".into(), (401, "malformed_token")),
            (h(format!("bearer \t{token}")), "/x".into(), (401, "malformed_token")),
            (h(format!("Bearer{token}")), "/x".into(), (401, "other_scheme")),
            (h("Bearer".into()), "/x".into(), (401, "malformed_token")),
            (h("Bearer ".into()), "/x".into(), (401, "malformed_token")),
            (h(String::new()), "/x".into(), (401, "malformed_token")),
            (h("Basic dXNlcjpwYXNz".into()), "/x".into(), (401, "other_scheme")),
            (h(format!("Bearer {token}, Bearer {other}")), "/x".into(), (401, "multiple_tokens")),
            (h(format!("Bearer {token}, Basic dXNlcjpwYXNz")), "/x".into(), (401, "multiple_tokens")),
            (vec![], format!("/x?access%5Ftoken={forged}"), (401, "bad_signature")),
            (vec![], format!("/x?access%5Ftoken={token}"), (200, "")),
            (h(format!("Bearer {token}")), format!("/x?access%5Ftoken={other}"), (401, "multiple_tokens")),
            (vec![], format!("/x?access_token={}", token.replace('.', "%2E")), (401, "malformed_token")),
            (vec![], "/x?access_token".into(), (401, "malformed_token")),
            (vec![("cookie".into(), "access_token=".into())], "/x".into(), (401, "malformed_token")),
        ];
        for (headers, path, want) in cases {
            let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let r = f.check(&hs, &path, ext).await;
            assert_eq!(verdict(&r), (want.0, want.1.to_string()), "{route}: {headers:?} {path}");
            if want.0 == 200 {
                assert!(identity_set(&r), "{route}: an allow with a token is a verified allow");
            }
        }
        // A Basic credential alone gets RFC 6750's challenge without an error code, and a
        // Basic header beside a bearer header (either order) is two credentials.
        let r = f.check(&[("authorization", "Basic dXNlcjpwYXNz")], "/x", ext).await;
        assert_eq!(challenge(&r), Some("Bearer realm=\"hopauth\""));
        for order in [["Basic dXNlcjpwYXNz", &bearer(&token)], [&bearer(&token), "Basic dXNlcjpwYXNz"]] {
            let raw: Vec<(&str, &[u8])> = order.iter().map(|v| ("authorization", v.as_bytes())).collect();
            let r = f.svc.check_request(&check_request(&[], &raw, "/x", ext)).await;
            assert_eq!(verdict(&r), (401, "multiple_tokens".into()), "{route}: {order:?}");
        }
        // Bytes that are not text (Envoy passes them with encode_raw_headers).
        for value in [&b"Bearer \xff\xfe"[..], b"Bearer a.b.\x80", b"\xffBearer x"] {
            let r = f.svc.check_request(&check_request(&[], &[("authorization", value)], "/x", ext)).await;
            assert_eq!(verdict(&r).0, 401, "{route}: {value:?}");
        }
    }
    // No credential at all: 401 on the default route, the anonymous allow on /public.
    assert_eq!(verdict(&f.check(&[], "/x", &[]).await), (401, "missing_token".into()));
    let anon = f.check(&[], "/x", ANONYMOUS).await;
    assert_eq!(verdict(&anon).0, 200);
    assert!(!identity_set(&anon));
}

// ---- T43: odd CheckRequests.

#[tokio::test]
async fn odd_check_requests_get_final_decisions_without_a_panic() {
    let f = fixture("").await;
    let token = f.keys.es.sign_jwt(&claims("alice")).unwrap();
    let auth = bearer(&token);

    // No attributes at all, no `request`, no `http`: there is no credential: 401.
    let mut no_http = check_request(&[], &[], "/x", &[]);
    no_http.attributes.as_mut().unwrap().request = None;
    let mut no_request = check_request(&[], &[], "/x", &[]);
    no_request.attributes.as_mut().unwrap().request.as_mut().unwrap().http = None;
    for r in [CheckRequest::default(), no_http, no_request] {
        let resp = f.svc.check_request(&r).await;
        assert_eq!(verdict(&resp), (401, "missing_token".into()));
        assert_eq!(challenge(&resp), Some("Bearer realm=\"hopauth\""));
    }
    // No `:path` (nor any path): nothing to read a query token from; the header decides.
    assert_eq!(verdict(&f.check(&[], "", &[]).await), (401, "missing_token".into()));
    assert_eq!(verdict(&f.check(&[("authorization", &auth)], "", &[]).await).0, 200);
    // CONNECT (authority-form, no path): the method plays no part in the decision.
    let connect = |headers: &[(&str, &str)]| {
        let mut r = check_request(headers, &[], "", &[]);
        let http = r.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
        http.method = "CONNECT".into();
        http.host = "upstream.test:443".into();
        r
    };
    assert_eq!(verdict(&f.svc.check_request(&connect(&[])).await), (401, "missing_token".into()));
    assert_eq!(verdict(&f.svc.check_request(&connect(&[("authorization", &auth)])).await).0, 200);
    // Internal headers a client set are ignored: `x-envoy-original-path` is never read as
    // the path (its query token does not count), nor does it pick a route policy.
    let spoofed = format!("/public?access_token={token}");
    let r = f.check(&[("x-envoy-original-path", &spoofed)], "/x", &[]).await;
    assert_eq!(verdict(&r), (401, "missing_token".into()));
    let r = f.check(&[("x-envoy-original-path", "/public"), ("x-envoy-internal", "true")], "/x", &[]).await;
    assert_eq!(verdict(&r), (401, "missing_token".into()));
}

// ---- R4: `kid` is an opaque lookup key.

const KID_INJECTIONS: [&str; 5] =
    ["../../../../../../dev/null", "/dev/null", "/invalid_path", "|sleep 10", "x' UNION SELECT '1';--"];

fn hs256(secret: &[u8], kid: &str, claims: &Value) -> String {
    use aws_lc_rs::hmac;
    let input = format!("{}.{}", b64(&json!({"alg": "HS256", "kid": kid, "typ": "JWT"})), b64(claims));
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

#[tokio::test]
async fn kid_injection_strings_are_unknown_keys_and_fetch_nothing() {
    std::env::set_var("TOKEN_CASES_HMAC_SECRET", "0123456789abcdef0123456789abcdef-secret");
    let hmac_provider = format!(
        "  - name: hmac\n    issuer: https://hmac.test\n    audiences: [{AUDIENCE}]\n    algorithms: [HS256]\n    \
         hmac_secret_env: TOKEN_CASES_HMAC_SECRET\n"
    );
    let f = fixture(&hmac_provider).await;
    let mut hmac_claims = claims("alice");
    hmac_claims["iss"] = "https://hmac.test".into();
    let hits = f.jwks.hits();
    let started = Instant::now();
    for kid in KID_INJECTIONS {
        for secret in [&b""[..], b"1"] {
            // The main provider allows no HS*; the HMAC provider's secret is another.
            assert_eq!(f.token(&hs256(secret, kid, &claims("alice"))).await, (401, "alg_not_allowed".into()), "{kid}");
            assert_eq!(f.token(&hs256(secret, kid, &hmac_claims)).await, (401, "bad_signature".into()), "{kid}");
        }
        for key in [&f.keys.es, &f.keys.rs, &f.keys.ed] {
            let header = json!({"alg": key.alg.as_str(), "kid": kid});
            let token = key.sign_with_header(&header, &claims("alice")).unwrap();
            assert_eq!(f.token(&token).await, (401, "unknown_key".into()), "{} {kid}", key.alg);
        }
    }
    println!("{} kid injections refused in {:?}", KID_INJECTIONS.len() * 7, started.elapsed());
    // A flood of unknown kids is at most one refetch per kid_refetch_interval (30 s here).
    assert!(f.jwks.hits() <= hits + 1, "{} JWKS fetches", f.jwks.hits() - hits);
    assert!(f.running.metrics.render().contains(r#"reason="unknown_key"} 15"#));
}
