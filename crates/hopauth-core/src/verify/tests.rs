//! The verifier's cache bounds and its verification permits.

use super::*;
use crate::alg::Alg;
use crate::keys::{KeySettings, VerifyKey};
use crate::render::AllowParts;
use crate::sign::SigningKey;
use serde_json::json;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const ISS: &str = "https://issuer.test";

fn verifier(limits: VerifierLimits) -> Verifier {
    verifier_with(limits, (), None)
}

fn verifier_with<R: Renderer>(limits: VerifierLimits, renderer: R, claims_to_metadata: Option<&[&str]>) -> Verifier<R> {
    let settings = KeySettings {
        max_stale: Duration::from_secs(3600),
        kid_refetch_interval: Duration::from_secs(30),
        kid_refetch_wait: Duration::from_millis(10),
    };
    let key = VerifyKey::hmac(Alg::HS256, SECRET).unwrap();
    let keys = KeySet::new("main", vec![], false, settings, vec![key]);
    let provider = Provider {
        name: "main".into(),
        issuer: ISS.into(),
        audiences: vec!["orders".into()],
        algorithms: vec![Alg::HS256],
        leeway_secs: 0,
        claims_to_headers: vec![],
        payload_header: None,
        claims_to_metadata: claims_to_metadata.map(|names| names.iter().map(|n| n.to_string()).collect()),
        keys: Arc::new(keys),
        profile: TokenProfile::default(),
    };
    Verifier::new(vec![provider], limits, renderer)
}

/// Renders an allow as the claims it carries for metadata.
struct MetadataClaims;

impl Renderer for MetadataClaims {
    type Rendered = Vec<String>;
    fn allow(&self, parts: AllowParts<'_>) -> Vec<String> {
        parts.claims.keys().cloned().collect()
    }
    fn bytes(&self, _: &Vec<String>) -> usize {
        0
    }
}

#[tokio::test]
async fn an_allow_carries_every_claim_or_the_listed_ones_as_metadata() {
    let token = token("alice", 0);
    for (listed, expected) in [
        (None, &["aud", "exp", "iss", "pad", "sub"][..]),
        (Some(&["sub", "not_in_the_token", "exp"][..]), &["exp", "sub"][..]),
        (Some(&[][..]), &[][..]),
    ] {
        let v = verifier_with(VerifierLimits::default(), MetadataClaims, listed);
        let verified = v.verify(&token, unix_now(), None).await.result.expect("a valid token");
        let mut claims = verified.rendered.clone();
        claims.sort_unstable();
        assert_eq!(claims, expected, "claims_to_metadata {listed:?}");
    }
}

fn token(sub: &str, padding: usize) -> String {
    let key = SigningKey::hmac(Alg::HS256, "k", SECRET).unwrap();
    let claims = json!({"iss": ISS, "aud": "orders", "sub": sub, "exp": unix_now() + 300, "pad": "x".repeat(padding)});
    key.sign_jwt(&claims).unwrap()
}

#[tokio::test]
async fn the_cache_is_bounded_by_bytes_as_well_as_entries() {
    let v = verifier(VerifierLimits {
        cache_max_entries: 100_000,
        cache_max_bytes: 1024 * 1024,
        max_concurrent_verifies: 1,
    });
    // 400 tokens of ~8 KiB: 3 MiB of tokens against a 1 MiB budget.
    for i in 0..400 {
        v.verify(&token(&format!("u{i}"), 6000), unix_now(), None).await.result.unwrap();
    }
    v.run_pending_tasks();
    let (entries, bytes) = v.cache_usage();
    assert!(bytes <= 1024 * 1024, "{bytes} bytes cached");
    assert!(entries > 0 && entries < 200, "{entries} entries of ~8 KiB in 1 MiB");

    // The entry bound still holds for small tokens.
    let v = verifier(VerifierLimits { cache_max_entries: 10, cache_max_bytes: 1 << 30, max_concurrent_verifies: 1 });
    for i in 0..50 {
        v.verify(&token(&format!("u{i}"), 0), unix_now(), None).await.result.unwrap();
    }
    v.run_pending_tasks();
    assert!(v.cache_usage().0 <= 10, "{:?}", v.cache_usage());
}

#[tokio::test]
async fn verifications_past_the_concurrency_bound_wait_then_shed() {
    let v = verifier(VerifierLimits { cache_max_entries: 100, cache_max_bytes: 1 << 20, max_concurrent_verifies: 1 });
    let held = v.verifies.try_acquire().unwrap();
    let start_by = Instant::now() + Duration::from_millis(30);
    let refused = v.verify(&token("a", 0), unix_now(), Some(start_by)).await.result.unwrap_err();
    assert_eq!(refused, DenyReason::Overloaded);
    assert!(Instant::now() >= start_by, "it waited for a permit until the deadline");
    // A cache hit needs no permit.
    drop(held);
    let t = token("b", 0);
    v.verify(&t, unix_now(), None).await.result.unwrap();
    let held = v.verifies.try_acquire().unwrap();
    assert!(v.verify(&t, unix_now(), Some(Instant::now())).await.result.is_ok());
    // A waiting verification proceeds as soon as the permit is released.
    let c = token("c", 0);
    let waiter = async { v.verify(&c, unix_now(), Some(Instant::now() + Duration::from_secs(5))).await.result };
    let release = async move {
        tokio::task::yield_now().await;
        drop(held);
    };
    let (verified, ()) = tokio::join!(waiter, release);
    assert!(verified.is_ok(), "{verified:?}");
}
