//! Criterion benchmarks of the decision path: a cached verdict, a whole Check on a cache
//! hit, uncached verification per algorithm next to the raw aws-lc signature check of the
//! same key, token extraction, rendering the CheckResponse, and a revocation lookup.
//! Also counts heap allocations of the cached paths (a counting global allocator).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use hopauth::grpc::wire::CheckView;
use hopauth::grpc::AuthorizationService;
use hopauth::metrics::Metrics;
use hopauth::observer::SidecarObserver;
use hopauth::render;
use hopauth::render::CheckResponses;
use hopauth::SidecarAuthorizer;
use hopauth_core::alg::Alg;
use hopauth_core::authorizer::{Authorizer, AuthorizerSettings, FailureMode};
use hopauth_core::clock::unix_now;
use hopauth_core::keys::{parse_jwks, KeySet, KeySettings};
use hopauth_core::revocation::{MemoryStore, RevocationStore, TokenIdentity};
use hopauth_core::sign::SigningKey;
use hopauth_core::token::{extract, RequestView, TokenSource};
use hopauth_core::verify::{Provider, Verifier, VerifierLimits};
use prost::Message;
use serde_json::json;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes currently allocated (allocated minus freed).
static LIVE: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Polls a future that never waits (every cached path) to completion.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the benchmarked path waited"),
    }
}

const ISSUER: &str = "https://issuer.bench";

fn claims(sub: &str) -> serde_json::Value {
    let now = unix_now();
    json!({"iss": ISSUER, "sub": sub, "aud": "orders", "iat": now, "nbf": now, "exp": now + 3600,
           "jti": format!("jti-{sub}"), "scope": "orders:read profile", "roles": ["user"]})
}

struct Fixture {
    keys: Vec<SigningKey>,
    authorizer: Arc<SidecarAuthorizer>,
    service: AuthorizationService,
    metrics: Metrics,
}

fn fixture() -> Fixture {
    let keys: Vec<SigningKey> = [Alg::ES256, Alg::RS256, Alg::PS256, Alg::EdDSA]
        .iter()
        .enumerate()
        .map(|(i, a)| SigningKey::generate(*a, &format!("k{i}")).unwrap())
        .collect();
    let jwks = json!({"keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>()});
    let algs = vec![Alg::ES256, Alg::RS256, Alg::PS256, Alg::EdDSA];
    let parsed = parse_jwks(jwks.to_string().as_bytes(), &algs).unwrap();
    let metrics = Metrics::standalone();
    let settings = KeySettings {
        max_stale: Duration::from_secs(3600),
        kid_refetch_interval: Duration::from_secs(30),
        kid_refetch_wait: Duration::from_millis(1),
    };
    let cache = KeySet::new("main", algs.clone(), false, settings, parsed.keys);
    let provider = Provider {
        name: "main".into(),
        issuer: ISSUER.into(),
        audiences: vec!["orders".into()],
        algorithms: algs,
        leeway_secs: 30,
        claims_to_headers: vec![("sub".into(), "x-jwt-sub".into()), ("scope".into(), "x-jwt-scope".into())],
        payload_header: Some("x-jwt-payload".into()),
        claims_to_metadata: None,
        keys: Arc::new(cache),
        profile: Default::default(),
    };
    let limits = VerifierLimits {
        cache_max_entries: 100_000,
        cache_max_bytes: hopauth::config::DEFAULT_VERIFY_CACHE_BYTES,
        max_concurrent_verifies: 4,
    };
    let verifier = Verifier::new(vec![provider], limits, CheckResponses);
    let sources = vec![TokenSource::Header { name: "authorization".into(), prefix: "Bearer ".into() }];
    let store: Arc<dyn RevocationStore> = Arc::new(MemoryStore::new(Duration::from_secs(86400)));
    let settings = AuthorizerSettings {
        max_token_bytes: 8192,
        failure_mode: FailureMode::Deny,
        max_queue_delay: hopauth::config::DEFAULT_MAX_QUEUE_DELAY,
        require_all_providers: false,
    };
    let observer = SidecarObserver::new(metrics.checks().clone(), None);
    let authorizer = Arc::new(Authorizer::new(sources, verifier, store, settings, observer));
    let service = AuthorizationService::new(authorizer.clone());
    Fixture { keys, authorizer, service, metrics }
}

/// Shaped like what Envoy sends with the shipped `allowed_headers`: both peers, the request
/// id, pseudo-headers and the Authorization header.
fn check_request(token: &str) -> CheckRequest {
    use envoy_types::pb::envoy::config::core::v3::{address::Address as Kind, socket_address::PortSpecifier};
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
    let peer = |port: u32| Peer {
        address: Some(Address {
            address: Some(Kind::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    let headers = [
        (":authority", "orders.local".to_string()),
        (":method", "GET".to_string()),
        (":path", "/orders/7".to_string()),
        (":scheme", "http".to_string()),
        ("authorization", format!("Bearer {token}")),
    ];
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(53122)),
            destination: Some(peer(10000)),
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "9313446170218916151".into(),
                    method: "GET".into(),
                    path: "/orders/7".into(),
                    host: "orders.local".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

struct Headers(Vec<(&'static str, String)>);

impl RequestView for Headers {
    fn header_values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s [u8]> {
        let name = name.to_owned();
        self.0.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v.as_bytes())
    }
    fn path(&self) -> &str {
        "/orders/7"
    }
}

fn allocations<T>(iterations: u64, mut f: impl FnMut() -> T) -> f64 {
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..iterations {
        black_box(f());
    }
    (ALLOCS.load(Ordering::Relaxed) - before) as f64 / iterations as f64
}

fn benches(c: &mut Criterion) {
    let fx = fixture();
    let now = unix_now();
    let es = fx.keys[0].sign_jwt(&claims("alice")).unwrap();
    let verifier = fx.authorizer.verifier();
    ready(verifier.verify(&es, now, None)).result.unwrap();
    let req = check_request(&es);

    c.bench_function("cached_verdict_lookup", |b| {
        b.iter(|| ready(verifier.verify(black_box(&es), now, None)).result.unwrap())
    });
    // A whole Check as the server sees it: the request's protobuf bytes in, the response's
    // out. The prost round trip of the same message is measured beside it for scale.
    let wire = Bytes::from(req.encode_to_vec());
    let check_wire = || {
        let view = CheckView::parse(wire.clone()).unwrap();
        ready(fx.service.check_wire(&view, hopauth_core::clock::Instant::now()))
    };
    assert!(!check_wire().is_empty());
    c.bench_function("check_cache_hit", |b| b.iter(|| black_box(check_wire())));
    c.bench_function("check_request_parse", |b| b.iter(|| CheckView::parse(black_box(wire.clone())).unwrap()));
    c.bench_function("check_request_prost_decode", |b| b.iter(|| CheckRequest::decode(black_box(&wire[..])).unwrap()));

    for key in &fx.keys {
        // Each token is checked against the time it was signed at: `nbf` is its `iat`.
        let now = unix_now();
        let token = key.sign_jwt(&claims("bob")).unwrap();
        let parts = hopauth_core::jws::split(&token).unwrap();
        let verify_key =
            verifier.providers()[0].keys.with_candidates(parts.header.kid.as_deref(), key.alg, |l| match l {
                hopauth_core::keys::KeyLookup::Found(k) => k.len(),
                _ => 0,
            });
        assert_eq!(verify_key, 1);
        c.bench_function(&format!("raw_signature_verify/{}", key.alg), |b| {
            b.iter(|| {
                verifier.providers()[0].keys.with_candidates(parts.header.kid.as_deref(), key.alg, |l| match l {
                    hopauth_core::keys::KeyLookup::Found(k) => {
                        k[0].verify(parts.signing_input.as_bytes(), &parts.signature)
                    }
                    _ => false,
                })
            })
        });
        c.bench_function(&format!("uncached_verify/{}", key.alg), |b| {
            b.iter(|| ready(verifier.verify_uncached(black_box(&token), now, None)).unwrap())
        });
    }

    // A first sighting: full verification plus the cache insert.
    let mut n = 0u64;
    c.bench_function("first_sight_verify_and_insert/ES256", |b| {
        b.iter_batched(
            || {
                n += 1;
                fx.keys[0].sign_jwt(&claims(&format!("fresh-{n}"))).unwrap()
            },
            |t| ready(verifier.verify(&t, unix_now(), None)).result.unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });

    let headers = Headers(vec![("authorization", format!("Bearer {es}")), ("cookie", "a=b; c=d".into())]);
    let sources = vec![
        TokenSource::Header { name: "authorization".into(), prefix: "Bearer ".into() },
        TokenSource::Cookie("access_token".into()),
        TokenSource::Query("access_token".into()),
    ];
    c.bench_function("token_extraction", |b| b.iter(|| extract(black_box(&headers), &sources, 8192).unwrap()));

    // Rendering and encoding an allow happens once per token, on first sight.
    let identity = fx.authorizer.identity_headers().to_vec();
    let parts = hopauth_core::jws::parse(&es).unwrap();
    c.bench_function("render_allow_response_first_sight", |b| {
        b.iter(|| {
            render::allow(
                &identity,
                [("x-jwt-sub", "alice"), ("x-jwt-scope", "orders:read")],
                Some(("x-jwt-payload", parts.payload_b64)),
                Some(black_box(&parts.claims.all)),
            )
        })
    });

    let store = MemoryStore::new(Duration::from_secs(86400));
    for i in 0..10_000 {
        ready(store.revoke_jti(&format!("revoked-{i}"), now + 3600)).unwrap();
    }
    let id = TokenIdentity { iss: ISSUER, sub: Some("alice"), jti: Some("jti-alice"), iat: Some(now) };
    c.bench_function("revocation_lookup_10k_entries", |b| b.iter(|| store.check(black_box(&id))));

    let per_lookup = allocations(10_000, || ready(verifier.verify(&es, now, None)).result.unwrap());
    let per_check = allocations(10_000, check_wire);
    let per_revocation = allocations(10_000, || store.check(&id));
    println!("allocations per cached verdict lookup: {per_lookup:.2}");
    println!("allocations per whole Check (cache hit): {per_check:.2}");
    println!("allocations per revocation lookup: {per_revocation:.2}");
    println!("encoded allow response (stored per cached token): {} bytes", check_wire().len());
    println!("verify cache hits so far: {}", fx.metrics.checks().verify_cache_hits());

    // Live heap per cached token: verify 20k distinct tokens, let moka settle, compare.
    let tokens: Vec<String> =
        (0..20_000).map(|i| fx.keys[0].sign_jwt(&claims(&format!("user-{i}"))).unwrap()).collect();
    let token_bytes: usize = tokens.iter().map(String::len).sum::<usize>() / tokens.len();
    let before = LIVE.load(Ordering::Relaxed);
    let now = unix_now();
    for t in &tokens {
        ready(verifier.verify(t, now, None)).result.unwrap();
    }
    verifier.run_pending_tasks();
    let grown = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    println!(
        "live heap per cached token: {} bytes (token itself {token_bytes} bytes); 100k tokens = {:.1} MiB",
        grown / tokens.len() as u64,
        grown as f64 / tokens.len() as f64 * 100_000.0 / (1024.0 * 1024.0)
    );
}

criterion_group! {
    name = decision;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = benches
}
criterion_main!(decision);
