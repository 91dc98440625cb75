//! The synchronous path a host without a runtime uses: a decision on the calling thread,
//! an unknown `kid` handed back as a refetch, the same request decided again after it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::alg::Alg;
use crate::clock::{unix_now, Instant};
use crate::keys::{parse_jwks, KeySettings};
use crate::revocation::MemoryStore;
use crate::sign::SigningKey;
use crate::verify::{Provider, VerifierLimits};

const ISS: &str = "https://issuer.test";

struct Req(String);

impl RequestView for Req {
    fn header_values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s [u8]> {
        (name == "authorization").then_some(self.0.as_bytes()).into_iter()
    }
    fn path(&self) -> &str {
        "/"
    }
}

fn bearer(key: &SigningKey) -> Req {
    let claims = json!({"iss": ISS, "aud": "orders", "sub": "alice", "exp": unix_now() + 300});
    Req(format!("Bearer {}", key.sign_jwt(&claims).unwrap()))
}

fn authorizer(keys: Arc<KeySet>) -> Authorizer {
    let provider = Provider {
        name: "main".into(),
        issuer: ISS.into(),
        audiences: vec!["orders".into()],
        algorithms: vec![Alg::ES256],
        leeway_secs: 0,
        claims_to_headers: vec![],
        payload_header: None,
        claims_to_metadata: None,
        keys,
        profile: Default::default(),
    };
    let verifier = Verifier::new(vec![provider], VerifierLimits::default(), ());
    let sources = vec![TokenSource::Header { name: "authorization".into(), prefix: "Bearer ".into() }];
    let store = Arc::new(MemoryStore::new(Duration::from_secs(3600)));
    Authorizer::new(sources, verifier, store, AuthorizerSettings::default(), ())
}

fn install(keys: &KeySet, signers: &[&SigningKey]) {
    let jwks = json!({"keys": signers.iter().map(|k| k.public_jwk()).collect::<Vec<_>>()});
    keys.install(parse_jwks(jwks.to_string().as_bytes(), &[Alg::ES256]).unwrap().keys);
}

#[test]
fn decide_answers_on_the_calling_thread_and_hands_an_unknown_kid_back() {
    let (old, new) =
        (SigningKey::generate(Alg::ES256, "old").unwrap(), SigningKey::generate(Alg::ES256, "new").unwrap());
    let keys = Arc::new(KeySet::new("main", vec![Alg::ES256], true, KeySettings::default(), vec![]));
    install(&keys, &[&old]);
    let a = authorizer(keys.clone());
    let policy = RoutePolicy::default();

    // A known key: decided at once, twice (the second from the cache).
    for _ in 0..2 {
        let Step::Done(Decision::Allow(Allowed::Verified(t))) = a.decide(&bearer(&old), policy, Instant::now()) else {
            panic!("a valid token passes")
        };
        assert_eq!(&*t.provider, "main");
    }
    assert!(matches!(a.decide(&Req("Bearer x.y.z".into()), policy, Instant::now()), Step::Done(Decision::Deny(_))));

    // An unknown kid: handed back, nothing decided yet. The host asks for the refetch; no
    // fetch has run within the interval, so one may start at once: worth waiting for.
    let req = bearer(&new);
    let Step::Refetch(need) = a.decide(&req, policy, Instant::now()) else {
        panic!("an unknown kid asks for a refetch")
    };
    assert_eq!(need.provider(), "main");
    let wait = need.request().expect("a fetch may start within kid_refetch_wait");
    assert!(!wait.finished());
    keys.fetch_started();
    keys.fetch_finished();
    assert!(wait.finished(), "the attempt's end wakes the waiter");
    // Still unknown after the refetch: unknown_key, never another refetch.
    assert!(matches!(a.decide_after_refetch(&req, policy, Instant::now()), Decision::Deny(DenyReason::UnknownKey)));
    // The host's refresher installs the rotated set: the same request now passes.
    install(&keys, &[&old, &new]);
    assert!(matches!(a.decide_after_refetch(&req, policy, Instant::now()), Decision::Allow(Allowed::Verified(_))));
}

#[test]
fn a_request_held_for_a_refetch_is_not_shed_as_overloaded() {
    let (old, new) =
        (SigningKey::generate(Alg::ES256, "old").unwrap(), SigningKey::generate(Alg::ES256, "new").unwrap());
    let keys = Arc::new(KeySet::new("main", vec![Alg::ES256], true, KeySettings::default(), vec![]));
    install(&keys, &[&old]);
    let a = authorizer(keys.clone());
    let policy = RoutePolicy::default();
    // Arrived long past `max_queue_delay` (50 ms by default).
    let arrived = Instant::now().checked_sub(Duration::from_secs(5)).expect("the clock is past 5 s");
    // A token needing a full verification that queued that long is shed...
    assert!(matches!(a.decide(&bearer(&old), policy, arrived), Step::Done(Decision::Deny(DenyReason::Overloaded))));
    // ...but one that arrived in time and then waited that long for its key's refetch is
    // verified: the wait was not queueing.
    let req = bearer(&new);
    assert!(matches!(a.decide(&req, policy, Instant::now()), Step::Refetch(_)));
    install(&keys, &[&old, &new]);
    assert!(matches!(a.decide_after_refetch(&req, policy, arrived), Decision::Allow(Allowed::Verified(_))));
}

/// `max_queue_delay` is measured on the core's clock (`clock::Instant`), which a paused
/// tokio clock moves: shedding is exercised here without waiting.
#[tokio::test(start_paused = true)]
async fn past_max_queue_delay_on_the_core_clock_only_cache_hits_are_answered() {
    let key = SigningKey::generate(Alg::ES256, "k").unwrap();
    let keys = Arc::new(KeySet::new("main", vec![Alg::ES256], true, KeySettings::default(), vec![]));
    install(&keys, &[&key]);
    let a = authorizer(keys);
    let policy = RoutePolicy::default();
    let delay = AuthorizerSettings::default().max_queue_delay;
    let arrived = Instant::now();
    let cached = bearer(&key);

    tokio::time::advance(delay - Duration::from_millis(1)).await;
    // Just inside the deadline: a full verification.
    assert!(matches!(a.decide(&cached, policy, arrived), Step::Done(Decision::Allow(Allowed::Verified(_)))));

    tokio::time::advance(Duration::from_millis(1)).await;
    // At the deadline: a token needing a verification is shed, on the sync path and the async
    // one alike...
    let fresh = bearer(&key);
    assert!(matches!(a.decide(&fresh, policy, arrived), Step::Done(Decision::Deny(DenyReason::Overloaded))));
    assert!(matches!(a.check(&fresh, policy, arrived).await, Decision::Deny(DenyReason::Overloaded)));
    // ...while the cached one is still answered, and a request arriving now is verified.
    assert!(matches!(a.decide(&cached, policy, arrived), Step::Done(Decision::Allow(Allowed::Verified(_)))));
    assert!(matches!(a.decide(&fresh, policy, Instant::now()), Step::Done(Decision::Allow(Allowed::Verified(_)))));
}
