//! The token cases of docs/security.md as final decisions, through
//! `AuthorizationService::check_request` / `check_wire` in-process: the explicit-typing and
//! token-age profile (T29, T33), the `kid`-less key policy (T11), bounded input (T19),
//! signature mangling (T37, T38), odd requests and credential variants (T41–T43), `kid`
//! injection (R4), and a property test that every answer decodes under protobuf's limits.
//!
//! A counting allocator (per thread) measures what refusing oversize input allocates.
#![allow(unsafe_code)]

use hopauth_testkit as support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value as PbValue};
use hopauth::grpc::wire::CheckView;
use hopauth::grpc::AuthorizationService;
use hopauth_core::alg::Alg;
use hopauth_core::jws::MAX_JSON_DEPTH;
use hopauth_core::sign::SigningKey;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use support::*;

// ---- A per-thread byte count of allocations, so other tests' threads do not disturb it.

struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated_on_this_thread() -> usize {
    ALLOCATED.with(Cell::get)
}

fn allocations_on_this_thread() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// ---- Requests and answers.

fn http_request(headers: &[(&str, &str)], path: &str, ext: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: ext.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }),
    }
}

/// A request whose headers are raw bytes (`encode_raw_headers: true`), in order.
fn raw_request(headers: &[(&str, &[u8])], path: &str, ext: &[(&str, &str)]) -> CheckRequest {
    let mut r = http_request(&[], path, ext);
    let http = r.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.header_map = Some(HeaderMap {
        headers: headers
            .iter()
            .map(|(k, v)| HeaderValue { key: k.to_string(), value: String::new(), raw_value: v.to_vec() })
            .collect(),
    });
    r
}

const ANONYMOUS: &[(&str, &str)] = &[("hopauth.anonymous", "allow")];

/// (HTTP status, deny reason): 200 and "" for an allow.
fn verdict(r: &CheckResponse) -> (i32, String) {
    match r.http_response.as_ref().expect("every response carries an http_response") {
        HttpResponse::OkResponse(_) => (200, String::new()),
        HttpResponse::DeniedResponse(d) => {
            (d.status.as_ref().unwrap().code, r.status.as_ref().unwrap().message.clone())
        }
        HttpResponse::ErrorResponse(_) => panic!("hopauth never sends error_response"),
    }
}

fn challenge(r: &CheckResponse) -> Option<&str> {
    let Some(HttpResponse::DeniedResponse(d)) = r.http_response.as_ref() else { return None };
    d.headers.iter().filter_map(|h| h.header.as_ref()).find(|h| h.key == "www-authenticate").map(|h| h.value.as_str())
}

/// Whether an allow carries identity (a verified token) rather than the anonymous allow.
fn identity_set(r: &CheckResponse) -> bool {
    matches!(&r.http_response, Some(HttpResponse::OkResponse(ok)) if !ok.headers.is_empty())
}

/// These tests call `check_request` back to back on a shared 2-core machine: a stall past
/// the default 50 ms `max_queue_delay` would shed a Check (503) that is not under test.
const NO_SHEDDING: &str = "max_queue_delay: 10s\n";

struct Fixture {
    keys: Keys,
    jwks: JwksServer,
    running: hopauth::server::Running,
    svc: AuthorizationService,
}

async fn fixture(extra_providers: &str) -> Fixture {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let running = start_hopauth(&config_yaml(&jwks.url(), extra_providers, NO_SHEDDING)).await;
    wait_ready(&running).await;
    let svc = AuthorizationService::new(running.authorizer.clone());
    Fixture { keys, jwks, running, svc }
}

impl Fixture {
    async fn check(&self, headers: &[(&str, &str)], path: &str, ext: &[(&str, &str)]) -> CheckResponse {
        self.svc.check_request(&http_request(headers, path, ext)).await
    }

    async fn token(&self, token: &str) -> (i32, String) {
        verdict(&self.check(&[("authorization", &bearer(token))], "/x", &[]).await)
    }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

// ---- T29, T33: the token profile.

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
        async move { verdict(&svc.check_request(&http_request(&[("authorization", &bearer(&token))], "/x", &[])).await) }
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
    let r = svc.check_request(&http_request(&[("authorization", &bearer(&with_typ(None, &fresh)))], "/x", &[])).await;
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
        async move { verdict(&svc.check_request(&http_request(&[("authorization", &bearer(&token))], "/x", &[])).await) }
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

// ---- T19: oversize input is refused before it is decoded, without allocating for it.

#[tokio::test]
async fn oversize_credentials_are_refused_before_decoding_without_allocating() {
    let f = fixture("").await;
    let dots = format!("Bearer {}", ".".repeat(1 << 20));
    let long_header = format!("Bearer {}", "a".repeat(64 * 1024));
    let long_basic = format!("Basic {}", "a".repeat(64 * 1024));
    let mut binary = b"Bearer ".to_vec();
    binary.extend(std::iter::repeat_n(0xffu8, 64 * 1024));
    let cases: [(CheckRequest, &str); 5] = [
        (http_request(&[("authorization", &dots)], "/x", &[]), "token_too_large"),
        (http_request(&[("authorization", &long_header)], "/x", &[]), "token_too_large"),
        (http_request(&[("authorization", &long_basic)], "/x", ANONYMOUS), "other_scheme"),
        (raw_request(&[("authorization", &binary)], "/x", &[]), "token_too_large"),
        (http_request(&[], &format!("/x?access_token={}", ".".repeat(1 << 20)), ANONYMOUS), "token_too_large"),
    ];
    for (request, reason) in cases {
        let bytes = request.encode_to_vec();
        let view = CheckView::parse(bytes.clone().into()).unwrap();
        // The first deny of a reason renders its answer once; measure the next one.
        let first = CheckResponse::decode(f.svc.check_wire(&view, Instant::now()).await).unwrap();
        assert_eq!(verdict(&first), (401, reason.to_string()));
        let before = allocated_on_this_thread();
        let started = Instant::now();
        let reply = f.svc.check_wire(&view, Instant::now()).await;
        let took = started.elapsed();
        let allocated = allocated_on_this_thread() - before;
        assert_eq!(verdict(&CheckResponse::decode(reply).unwrap()), (401, reason.to_string()));
        // Nothing proportional to the input: a few small allocations at most (tracing,
        // metrics) against an input of 64 KiB to 1 MiB.
        assert!(allocated < 1024, "{reason}: {allocated} bytes allocated for a {}-byte request", bytes.len());
        println!("{reason}: {} request bytes refused in {took:?}, {allocated} bytes allocated", bytes.len());
    }
}

/// The stricter extraction must not cost the hot path anything: a cache hit, from the
/// request bytes to the answer's, still allocates nothing of its own (the cache's
/// amortised housekeeping allocates a few buffers per thousand hits, as
/// benches/decision.rs reports: 0.00 per Check).
#[tokio::test]
async fn a_cache_hit_still_allocates_nothing() {
    let f = fixture("").await;
    let token = f.keys.es.sign_jwt(&claims("alice")).unwrap();
    let request = http_request(&[("authorization", &bearer(&token))], "/x?a=1", &[]).encode_to_vec();
    let view = CheckView::parse(request.into()).unwrap();
    assert_eq!(verdict(&CheckResponse::decode(f.svc.check_wire(&view, Instant::now()).await).unwrap()).0, 200);
    f.running.authorizer.verifier().run_pending_tasks();
    let before = allocations_on_this_thread();
    for _ in 0..1000 {
        let reply = f.svc.check_wire(&view, Instant::now()).await;
        assert!(!reply.is_empty());
    }
    let allocations = allocations_on_this_thread() - before;
    // One allocation per hit would be 1000.
    assert!(allocations <= 10, "{allocations} allocations in 1000 cache hits");
    println!("{allocations} allocations in 1000 cache hits");
}

// ---- T37, T38: mangled signatures.

#[tokio::test]
async fn ed25519_signatures_of_the_wrong_length_are_refused() {
    let f = fixture("").await;
    let good = f.keys.ed.sign_jwt(&claims("alice")).unwrap();
    let (input, sig) = good.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    assert_eq!(sig.len(), 64);
    for mangled in [sig[..63].to_vec(), [sig.clone(), vec![0]].concat(), [vec![0], sig.clone()].concat()] {
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&mangled));
        assert_eq!(f.token(&token).await, (401, "bad_signature".into()), "{}-byte signature", mangled.len());
    }
    assert_eq!(f.token(&good).await.0, 200);
}

#[tokio::test]
async fn every_bit_flip_and_truncation_of_a_valid_signature_is_refused() {
    let f = fixture("").await;
    let k = &f.keys;
    let mut refused = 0;
    for key in [&k.es, &k.rs, &k.ps, &k.ed] {
        let good = key.sign_jwt(&claims("alice")).unwrap();
        let (input, sig) = good.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let mut variants: Vec<Vec<u8>> = Vec::new();
        for bit in 0..sig.len() * 8 {
            let mut flipped = sig.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            variants.push(flipped);
        }
        variants.extend((0..sig.len()).map(|n| sig[..n].to_vec()));
        for mangled in variants {
            let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&mangled));
            let (status, reason) = f.token(&token).await;
            let want = if mangled.is_empty() { "malformed_token" } else { "bad_signature" };
            assert_eq!((status, reason.as_str()), (401, want), "{}: {} bytes", key.alg, mangled.len());
            refused += 1;
        }
        assert_eq!(f.token(&good).await.0, 200, "{} original still valid", key.alg);
    }
    // ES256 64 B, RS256/PS256 256 B, EdDSA 64 B: 9 variants per byte.
    assert_eq!(refused, 9 * (64 + 256 + 256 + 64));
}

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
            let r = f.svc.check_request(&raw_request(&raw, "/x", ext)).await;
            assert_eq!(verdict(&r), (401, "multiple_tokens".into()), "{route}: {order:?}");
        }
        // Bytes that are not text (Envoy passes them with encode_raw_headers).
        for value in [&b"Bearer \xff\xfe"[..], b"Bearer a.b.\x80", b"\xffBearer x"] {
            let r = f.svc.check_request(&raw_request(&[("authorization", value)], "/x", ext)).await;
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
    let mut no_http = http_request(&[], "/x", &[]);
    no_http.attributes.as_mut().unwrap().request = None;
    let mut no_request = http_request(&[], "/x", &[]);
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
        let mut r = http_request(headers, "", &[]);
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

// ---- Hole 13: every answer hopauth gives decodes under protobuf's default limits.

/// The reference: serde_json → prost's own types.
fn to_pb(v: &Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue { values: a.iter().map(to_pb).collect() }),
        Value::Object(m) => {
            Kind::StructValue(Struct { fields: m.iter().map(|(k, v)| (k.clone(), to_pb(v))).collect() })
        }
    };
    PbValue { kind: Some(kind) }
}

/// Containers deep, the value itself counting as 1 when it is an array or object.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A random JSON value at most `budget` containers deep, with a bias to go deep: each
/// container has one child that may use the whole budget and up to two shallow ones.
fn random_value(rng: &mut StdRng, budget: usize) -> Value {
    // Side branches (budget < 3) are anything; the deep path stays a container 19 times in 20.
    let pick = match budget {
        0 => rng.random_range(0..4),
        1..3 => rng.random_range(0..10),
        _ if rng.random_range(0..20) == 0 => rng.random_range(0..4),
        _ => rng.random_range(4..10),
    };
    match pick {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        // Quarters: exact in binary, so the JSON text round-trips to the same f64.
        2 => json!(f64::from(rng.random_range(-4_000_000..4_000_000)) / 4.0),
        3 => Value::String((0..rng.random_range(0..6)).map(|_| rng.random_range('a'..='z')).collect()),
        4..=6 => {
            let n = rng.random_range(0..3);
            let mut items: Vec<Value> = (0..n)
                .map(|_| {
                    let shallow = rng.random_range(0..budget.min(3));
                    random_value(rng, shallow)
                })
                .collect();
            items.push(random_value(rng, budget - 1));
            Value::Array(items)
        }
        _ => {
            let n = rng.random_range(0..3);
            let mut m = Map::new();
            for i in 0..n {
                let shallow = rng.random_range(0..budget.min(3));
                m.insert(format!("k{i}"), random_value(rng, shallow));
            }
            m.insert("deep".into(), random_value(rng, budget - 1));
            Value::Object(m)
        }
    }
}

/// A chain of `depth` objects or arrays around a string.
fn chain(depth: usize, objects: bool) -> Value {
    (0..depth).fold(json!("leaf"), |inner, _| if objects { json!({ "n": inner }) } else { json!([inner]) })
}

#[tokio::test]
async fn every_answer_decodes_under_default_protobuf_limits_whatever_the_claims() {
    let f = fixture("").await;
    let check = |claims: &Value| {
        let token = f.keys.es.sign_jwt(claims).unwrap();
        let request = http_request(&[("authorization", &bearer(&token))], "/x", &[]).encode_to_vec();
        let view = CheckView::parse(request.into()).unwrap();
        let svc = &f.svc;
        async move { svc.check_wire(&view, Instant::now()).await }
    };
    // Worst cases at and past the bound: chains of objects (3 protobuf levels each) and of
    // arrays (2 each). The claim's own nesting is the claims object's plus one.
    for objects in [true, false] {
        for claim_depth in [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 33, 49, 100] {
            let mut c = claims("alice");
            c["nested"] = chain(claim_depth, objects);
            let reply = check(&c).await;
            // prost's default recursion limit is 100, as is Envoy's (C++ protobuf).
            let r = CheckResponse::decode(reply.clone()).unwrap_or_else(|e| {
                panic!("{claim_depth} {}: undecodable answer: {e}", if objects { "objects" } else { "arrays" })
            });
            if claim_depth < MAX_JSON_DEPTH {
                assert_eq!(verdict(&r).0, 200, "{claim_depth}");
                let meta = &r.dynamic_metadata.as_ref().unwrap().fields["hopauth"];
                let Some(Kind::StructValue(s)) = &meta.kind else { panic!("{meta:?}") };
                assert_eq!(s.fields["nested"], to_pb(&c["nested"]), "metadata holds the whole claim");
            } else {
                assert_eq!(verdict(&r), (401, "nesting_too_deep".into()), "{claim_depth}");
            }
        }
    }
    // Random shapes up to and past the bound: allowed exactly when within it, and every
    // answer decodes.
    let mut rng = StdRng::seed_from_u64(0x5eed_0013);
    let (mut allowed, mut refused) = (0, 0);
    for case in 0..300 {
        let mut c = claims("alice");
        // Concentrated around the bound, where it matters.
        let budget = rng.random_range(MAX_JSON_DEPTH / 2..MAX_JSON_DEPTH + 12);
        c["x"] = random_value(&mut rng, budget);
        let within = depth(&c) <= MAX_JSON_DEPTH;
        let reply = check(&c).await;
        let r = CheckResponse::decode(reply).unwrap_or_else(|e| panic!("case {case}: undecodable answer: {e}: {c}"));
        if within {
            assert_eq!(verdict(&r).0, 200, "case {case}: {c}");
            let meta = &r.dynamic_metadata.as_ref().unwrap().fields["hopauth"];
            assert_eq!(*meta, to_pb(&c), "case {case}");
            allowed += 1;
        } else {
            assert_eq!(verdict(&r), (401, "nesting_too_deep".into()), "case {case}");
            refused += 1;
        }
    }
    assert!(allowed > 50 && refused > 50, "the generator covers both sides: {allowed} allowed, {refused} refused");
}
