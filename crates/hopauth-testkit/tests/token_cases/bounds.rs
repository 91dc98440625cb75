//! Oversize input refused without allocating, cache hits allocation-free, bad signatures.

use super::*;

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
        (check_request(&[("authorization", &dots)], &[], "/x", &[]), "token_too_large"),
        (check_request(&[("authorization", &long_header)], &[], "/x", &[]), "token_too_large"),
        (check_request(&[("authorization", &long_basic)], &[], "/x", ANONYMOUS), "other_scheme"),
        (check_request(&[], &[("authorization", &binary)], "/x", &[]), "token_too_large"),
        (check_request(&[], &[], &format!("/x?access_token={}", ".".repeat(1 << 20)), ANONYMOUS), "token_too_large"),
    ];
    for (request, reason) in cases {
        let bytes = request.encode_to_vec();
        let view = CheckView::parse(bytes.clone().into()).unwrap();
        // The first deny of a reason renders its answer once; measure the next one.
        let first = CheckResponse::decode(f.svc.check_wire(&view, clock::Instant::now()).await).unwrap();
        assert_eq!(verdict(&first), (401, reason.to_string()));
        let before = allocated_on_this_thread();
        let started = Instant::now();
        let reply = f.svc.check_wire(&view, clock::Instant::now()).await;
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
    let request = check_request(&[("authorization", &bearer(&token))], &[], "/x?a=1", &[]).encode_to_vec();
    let view = CheckView::parse(request.into()).unwrap();
    assert_eq!(verdict(&CheckResponse::decode(f.svc.check_wire(&view, clock::Instant::now()).await).unwrap()).0, 200);
    f.running.authorizer.verifier().run_pending_tasks();
    let before = allocations_on_this_thread();
    for _ in 0..1000 {
        let reply = f.svc.check_wire(&view, clock::Instant::now()).await;
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
