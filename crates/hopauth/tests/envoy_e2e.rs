//! End to end through a real Envoy (envoy/hopauth.yaml) in front of an echo app, with
//! hopauth in-process and a real JWKS endpoint: the contract's decision table, token
//! sources, identity headers, per-route policy, key rotation and RFC 8725 attacks.

use hopauth_testkit as support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use serde_json::{json, Value};
use support::*;

fn challenge(r: &Reply) -> &str {
    r.header("www-authenticate").unwrap_or_else(|| panic!("no WWW-Authenticate in {r:?}"))
}

fn assert_invalid_token(r: &Reply, description: &str) {
    assert_eq!(r.status, 401, "{r:?}");
    let c = challenge(r);
    assert!(c.starts_with("Bearer realm=\"hopauth\""), "{c}");
    assert!(c.contains("error=\"invalid_token\""), "{c}");
    assert_eq!(r.body["error"], "invalid_token", "{r:?}");
    assert_eq!(r.body["error_description"], description, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_table_through_envoy() {
    let s = Stack::start().await;
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
        .post(format!("http://{}/admin/revoke", s.hopauth.http_addr))
        .json(&json!({"jti": "x", "exp": now + 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Every deny was a Denied response, never an ext_authz error Envoy could fail open on.
    assert!(s.envoy.stat("http.ingress.ext_authz.denied").await >= 10);
    assert_eq!(s.envoy.stat("http.ingress.ext_authz.error").await, 0);
    let metrics = reqwest::get(format!("http://{}/metrics", s.hopauth.http_addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"hopauth_checks_total{decision="deny",reason="expired"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"hopauth_checks_total{decision="deny",reason="revoked"} 2"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_source_and_one_credential_per_request() {
    let s = Stack::start().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_the_app() {
    let s = Stack::start().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_route_policy() {
    let partner_key = SigningKey::generate(Alg::EdDSA, "partner-1").unwrap();
    let partner = JwksServer::start(jwks_of(&[&partner_key]), "https://partner.test").await;
    let extra = format!(
        "  - name: partner\n    issuer: https://partner.test\n    audiences: [{AUDIENCE}]\n    algorithms: [EdDSA]\n    jwks: {{ uri: \"{}\" }}\n",
        partner.url()
    );
    let s = Stack::start_with(&extra, "").await;
    let mut pc = claims("p-user");
    pc["iss"] = "https://partner.test".into();
    let partner_token = partner_key.sign_jwt(&pc).unwrap();
    let main_token = s.keys.es.sign_jwt(&claims("alice")).unwrap();

    assert_eq!(s.get_with_token("/x", &partner_token).await.status, 200, "partner tokens pass by default");
    let r = s.get_with_token("/orders/7", &partner_token).await;
    assert_invalid_token(&r, "token issuer is not accepted on this route");
    assert_eq!(s.get_with_token("/orders/7", &main_token).await.status, 200);
    let mut no_scope = claims("alice");
    no_scope["scope"] = "profile".into();
    let r = s.get_with_token("/orders/7", &s.keys.es.sign_jwt(&no_scope).unwrap()).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(challenge(&r).contains("scope=\"orders:read\""));

    // A partner token claiming the main issuer, or signed by the main issuer's key for the
    // partner issuer: the key belongs to its provider only.
    let mut forged = claims("alice");
    forged["iss"] = "https://partner.test".into();
    let forged = s.keys.ed.sign_jwt(&forged).unwrap();
    assert_eq!(s.get_with_token("/x", &forged).await.status, 401);
    let cross = partner_key.sign_jwt(&claims("alice")).unwrap();
    assert_eq!(s.get_with_token("/x", &cross).await.status, 401);

    // Anonymous route: no token passes; a bad token is still refused.
    assert_eq!(s.get("/public", &[]).await.status, 200);
    let expired = {
        let mut c = claims("alice");
        c["exp"] = (now() - 5).into();
        s.keys.es.sign_jwt(&c).unwrap()
    };
    assert_eq!(s.get_with_token("/public", &expired).await.status, 401);
    assert_eq!(s.get("/publicity", &[]).await.status, 401, "/publicity is not /public");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_is_picked_up_and_a_kid_flood_is_not_a_fetch_flood() {
    let s = Stack::start().await;
    let fresh = SigningKey::generate(Alg::ES256, "es-2").unwrap();
    s.jwks.set(jwks_of(&[&s.keys.es, &fresh]));
    let before = s.jwks.hits();
    let r = s.get_with_token("/x", &fresh.sign_jwt(&claims("alice")).unwrap()).await;
    assert_eq!(r.status, 200, "a token signed by a newly published key passes: {r:?}");
    assert_eq!(s.jwks.hits(), before + 1, "exactly one refetch for the new kid");

    let attacker = SigningKey::generate(Alg::ES256, "x").unwrap();
    let flood_start = s.jwks.hits();
    for i in 0..60 {
        let header = json!({"alg": "ES256", "kid": format!("random-{i}"), "typ": "JWT"});
        let token = attacker.sign_with_header(&header, &claims("alice")).unwrap();
        let r = s.get_with_token("/x", &token).await;
        assert_invalid_token(&r, "token signing key is unknown");
    }
    let fetched = s.jwks.hits() - flood_start;
    assert!(fetched <= 1, "60 unknown kids caused {fetched} JWKS fetches");
    // The rotated-out... and the old key still works.
    assert_eq!(s.get_with_token("/x", &s.keys.es.sign_jwt(&claims("alice")).unwrap()).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc8725_attacks_are_refused() {
    let s = Stack::start().await;
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

    assert_eq!(s.envoy.stat("http.ingress.ext_authz.error").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_tokens_stop_when_their_key_is_withdrawn_or_the_keys_go_stale() {
    let s = Stack::start_config(|url| {
        config_yaml(url, "", "")
            .replace("refresh_interval: 5m", "refresh_interval: 1s\n      max_stale: 3s\n      timeout: 500ms")
    })
    .await;
    let withdrawn = s.keys.es.sign_jwt(&claims("alice")).unwrap();
    let kept = s.keys.rs.sign_jwt(&claims("bob")).unwrap();
    for token in [&withdrawn, &kept, &withdrawn, &kept] {
        assert_eq!(s.get_with_token("/x", token).await.status, 200);
    }
    assert!(s.hopauth.metrics.checks().verify_cache_hits() >= 2, "both tokens are cached");

    s.jwks.set(jwks_of(&[&s.keys.rs, &s.keys.ps, &s.keys.ed]));
    wait_until("the cached es-1 token to be refused", std::time::Duration::from_secs(10), || async {
        s.get_with_token("/x", &withdrawn).await.status == 401
    })
    .await;
    assert_invalid_token(&s.get_with_token("/x", &withdrawn).await, "token signing key is unknown");
    assert_eq!(s.get_with_token("/x", &kept).await.status, 200, "the other key's cached token passes");

    // The JWKS goes down: past max_stale the cached token gets 503, like any other.
    s.jwks.set_failing(true);
    wait_until("the cached token to get 503", std::time::Duration::from_secs(10), || async {
        s.get_with_token("/x", &kept).await.status == 503
    })
    .await;
    // hopauth answered it (a cache hit), before its health check turned NOT_SERVING and
    // Envoy started answering 503 itself.
    let metrics = reqwest::get(format!("http://{}/metrics", s.hopauth.http_addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"hopauth_checks_total{decision="deny",reason="keys_unavailable"}"#), "{metrics}");
    let r = s.get_with_token("/x", &kept).await;
    assert_eq!((r.status, r.header("retry-after")), (503, Some("5")), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kid_flood_costs_a_fetch_a_second_and_a_new_key_still_gets_in() {
    // Default kid_refetch_interval.
    let s = Stack::start_config(|url| config_yaml(url, "", "").replace("      kid_refetch_interval: 30s\n", "")).await;
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let attacker = SigningKey::generate(Alg::ES256, "x").unwrap();
    let mut tasks = Vec::new();
    let (hits_before, oks_before) = (s.jwks.hits(), s.jwks.oks());
    let flood_start = std::time::Instant::now();
    for t in 0..3 {
        let (client, url, flooding) = (s.client.clone(), s.envoy.url("/x"), flooding.clone());
        let attacker = SigningKey::from_pkcs8(Alg::ES256, "x", attacker.pkcs8_der()).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u32;
            while flooding.load(std::sync::atomic::Ordering::SeqCst) {
                let header = json!({"alg": "ES256", "kid": format!("random-{t}-{sent}"), "typ": "JWT"});
                let token = attacker.sign_with_header(&header, &claims("mallory")).unwrap();
                let r = send(&client, &url, &[("authorization", &bearer(&token))]).await;
                assert_eq!(r.status, 401, "{r:?}");
                sent += 1;
            }
            sent
        }));
    }

    // Mid-flood the IdP publishes a key: a token on it gets in within about a second.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let fresh = SigningKey::generate(Alg::ES256, "es-2").unwrap();
    let token = fresh.sign_jwt(&claims("alice")).unwrap();
    s.jwks.set(jwks_of(&[&s.keys.es, &s.keys.rs, &s.keys.ps, &s.keys.ed, &fresh]));
    let published = std::time::Instant::now();
    wait_until("the new key to be accepted", std::time::Duration::from_secs(3), || async {
        s.get_with_token("/x", &token).await.status == 200
    })
    .await;
    let accepted_after = published.elapsed();

    let remaining = std::time::Duration::from_secs(5).saturating_sub(flood_start.elapsed());
    tokio::time::sleep(remaining).await;
    flooding.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut sent = 0;
    for t in tasks {
        sent += t.await.unwrap();
    }
    let flood = flood_start.elapsed();
    let fetched = s.jwks.hits() - hits_before;
    let full = s.jwks.oks() - oks_before;
    println!("{sent} random kids in {flood:?}: {fetched} fetches ({full} 200s); new key in after {accepted_after:?}");
    assert!(sent >= 50, "the flood was a flood: {sent} requests");
    // One fetch at the start, then at most one per second: 6 for a flood of 5.x s.
    let bound = flood.as_secs() as usize + 1;
    assert!(fetched <= bound, "{sent} random kids in {flood:?} caused {fetched} JWKS fetches (at most {bound})");
    assert!(full <= 1, "only the new document is a full fetch, the rest are 304s: {full}");
    assert_eq!(s.get_with_token("/x", &s.keys.es.sign_jwt(&claims("alice")).unwrap()).await.status, 200);
}

/// `n` = 65537^128 (2049 bits): in the subgroup generated by 65537 modulo every prime, the
/// fingerprint of a key from the Infineon library (ROCA, CVE-2017-15361).
fn roca_modulus() -> Vec<u8> {
    let mut n = vec![1u8]; // little-endian
    for _ in 0..128 {
        // n * 65537 = (n << 16) + n
        let mut out = vec![0u8; n.len() + 3];
        let mut carry = 0u32;
        for (i, byte) in out.iter_mut().enumerate() {
            let shifted = if i >= 2 { n.get(i - 2).copied().unwrap_or(0) } else { 0 };
            let sum = u32::from(shifted) + u32::from(n.get(i).copied().unwrap_or(0)) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
        while out.last() == Some(&0) {
            out.pop();
        }
        n = out;
    }
    n.reverse();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhygienic_jwks_keys_are_dropped_counted_and_their_tokens_refused() {
    use sha2::Digest;
    let s = Stack::start_config(|url| config_yaml(url, "", "").replace("refresh_interval: 5m", "refresh_interval: 1s"))
        .await;
    let k = &s.keys;
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let rs_jwk = k.rs.public_jwk();

    let rsa_2040 = json!({"kty": "RSA", "kid": "rsa-2040", "alg": "RS256", "n": b64(&[0xc3; 255]), "e": "AQAB"});
    let e_one = json!({"kty": "RSA", "kid": "e-1", "alg": "RS256", "n": rs_jwk["n"], "e": "AQ"});
    let roca = json!({"kty": "RSA", "kid": "roca", "alg": "RS256", "n": b64(&roca_modulus()), "e": "AQAB"});
    let oc = SigningKey::generate(Alg::ES256, "off-curve").unwrap();
    let mut off_curve = oc.public_jwk();
    off_curve["y"] = b64(&[7u8; 32]).into();
    let enc = SigningKey::generate(Alg::ES256, "enc").unwrap();
    let mut enc_jwk = enc.public_jwk();
    enc_jwk["use"] = "enc".into();
    let secret = b"an HMAC secret in a JWKS, 32+ bytes long";
    let oct = json!({"kty": "oct", "kid": "hs", "alg": "HS256", "k": b64(secret)});
    let twin = SigningKey::generate(Alg::ES256, "es-1").unwrap();
    let mut doc = k.jwks();
    let bad = [rsa_2040, e_one, roca, off_curve, enc_jwk, oct, twin.public_jwk()];
    doc["keys"].as_array_mut().unwrap().extend(bad);
    s.jwks.set(doc);

    let metrics = || async {
        reqwest::get(format!("http://{}/metrics", s.hopauth.http_addr)).await.unwrap().text().await.unwrap()
    };
    let counted = |m: &str, reason: &str| {
        let prefix = format!(r#"hopauth_jwks_keys_rejected_total{{provider="main",reason="{reason}"}} "#);
        m.lines().filter_map(|l| l.strip_prefix(prefix.as_str())).filter_map(|v| v.parse::<u64>().ok()).sum::<u64>()
    };
    let reasons =
        ["weak_rsa", "bad_key_material", "roca_rsa", "not_for_signatures", "unsupported_type", "duplicate_kid"];
    wait_until("every bad key to be counted", std::time::Duration::from_secs(10), || async {
        let m = metrics().await;
        reasons.iter().all(|r| counted(&m, r) >= 1) && counted(&m, "bad_key_material") >= 2
    })
    .await;
    let m = metrics().await;
    assert!(m.contains(r#"hopauth_jwks_keys{provider="main"} 4"#), "{m}");

    // Tokens on each dropped key: 401.
    let c = claims("mallory");
    let signed_as = |key: &SigningKey, kid: &str| {
        key.sign_with_header(&json!({"alg": key.alg.to_string(), "kid": kid, "typ": "JWT"}), &c).unwrap()
    };
    // With e = 1 the "signature" is the padded digest itself (EMSA-PKCS1-v1_5, RFC 8017 §9.2).
    let e_one_token = {
        let header = b64(json!({"alg": "RS256", "kid": "e-1"}).to_string().as_bytes());
        let input = format!("{header}.{}", b64(c.to_string().as_bytes()));
        let digest_info = [
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
            0x20,
        ];
        let mut em = vec![0x00, 0x01];
        em.resize(256 - digest_info.len() - 32 - 1, 0xff);
        em.push(0x00);
        em.extend_from_slice(&digest_info);
        em.extend_from_slice(&sha2::Sha256::digest(input.as_bytes()));
        assert_eq!(em.len(), 256);
        format!("{input}.{}", b64(&em))
    };
    let hs = SigningKey::hmac(Alg::HS256, "hs", secret).unwrap();
    for (what, token) in [
        ("rsa-2040", signed_as(&k.rs, "rsa-2040")),
        ("e=1", e_one_token),
        ("roca", signed_as(&k.rs, "roca")),
        ("off-curve", signed_as(&oc, "off-curve")),
        ("use:enc", signed_as(&enc, "enc")),
        ("oct", hs.sign_jwt(&c).unwrap()),
        ("duplicate kid", twin.sign_jwt(&c).unwrap()),
    ] {
        let r = s.get_with_token("/x", &token).await;
        assert_eq!(r.status, 401, "{what}: {r:?}");
    }
    // The other keys still allow.
    for key in [&k.es, &k.rs, &k.ps, &k.ed] {
        let r = s.get_with_token("/x", &key.sign_jwt(&claims("alice")).unwrap()).await;
        assert_eq!(r.status, 200, "{}: {r:?}", key.alg);
    }
    assert_eq!(s.envoy.stat("http.ingress.ext_authz.error").await, 0);
}

/// GET `path` with raw header bytes (values a `&str` cannot hold).
async fn send_raw(s: &Stack, path: &str, headers: &[(&str, &[u8])]) -> u16 {
    let mut req = s.client.get(s.envoy.url(path));
    for (k, v) in headers {
        req = req.header(*k, reqwest::header::HeaderValue::from_bytes(v).unwrap());
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_hopauth_cannot_verify_never_reaches_the_app_even_on_an_anonymous_route() {
    let s = Stack::start().await;
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
    assert_eq!(s.envoy.stat("http.ingress.ext_authz.error").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_claims_at_the_bound_reach_envoy_metadata_and_past_it_are_refused() {
    use hopauth_core::jws::MAX_JSON_DEPTH;
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let hopauth = start_hopauth(&config_yaml(&jwks.url(), "", "")).await;
    wait_ready(&hopauth).await;
    let app = start_echo().await;
    let port = pick_port();
    // The default route copies hopauth's dynamic metadata into a request header, so the
    // app shows what Envoy decoded from the CheckResponse.
    let catch_all = "              - match: { prefix: / }\n";
    let shipped = std::fs::read_to_string(repo_root().join("envoy/hopauth.yaml")).unwrap();
    assert_eq!(shipped.matches(catch_all).count(), 1, "envoy/hopauth.yaml changed its catch-all route");
    let with_metadata = format!(
        "{catch_all}                request_headers_to_add:\n                \
         - header: {{ key: x-hopauth-metadata, value: \"%DYNAMIC_METADATA(envoy.filters.http.ext_authz:hopauth)%\" }}\n"
    );
    let envoy = Envoy::start_with(
        "hopauth.yaml",
        hopauth.grpc_addr,
        &[
            ("port_value: 10000", format!("port_value: {port}")),
            ("port_value: 9001", format!("port_value: {}", hopauth.grpc_addr.port())),
            ("port_value: 8080", format!("port_value: {}", app.port())),
            (catch_all, with_metadata),
        ],
    )
    .await;
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().unwrap();
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
        let r = send(&client, &envoy.url("/x"), &[("authorization", &bearer(&at_limit))]).await;
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
            let r = send(&client, &envoy.url("/x"), &[("authorization", &bearer(&past)), ("x-jwt-sub", "root")]).await;
            assert_invalid_token(&r, "token claims are nested too deeply");
        }
    }
    // Envoy decoded every answer: no ext_authz error (an undecodable one would be).
    assert_eq!(envoy.stat("http.ingress.ext_authz.error").await, 0);
}
