//! The short soak, in `make test`: about 45 seconds of the run `make soak` makes for ten
//! minutes (tests/support/soak.rs): mixed valid, invalid, revoked and rotated-key traffic
//! from three issuers through Envoy to a `hopauth serve` process on Redis, while Redis is
//! restarted and partitioned, a JWKS server fails, keys rotate and hopauth is restarted.
//! The oracle must count no wrong allow, no unanswered request, no wrong refusal outside a
//! declared fault window; every revocation is enforced at the end; hopauth's and Envoy's
//! RSS and open fds stay flat.

use hopauth_testkit::soak;

use std::path::PathBuf;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_soak_has_no_wrong_allow_no_unanswered_check_and_stays_flat() {
    let secs = std::env::var("HOPAUTH_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(45);
    let mut opts = soak::Options::new(PathBuf::from(env!("CARGO_BIN_EXE_hopauth")), Duration::from_secs(secs));
    opts.rate = 60.0;
    opts.hopauth_restarts_at = vec![0.25];
    opts.fault_gap = Duration::from_secs(3);
    // Strict on refusals within max_staleness of a Redis outage (invisible to clients) and
    // on a withdrawn key's tokens allowed past the next refresh (cached ones included).
    opts.strict_blips = true;
    opts.strict_withdrawal = true;
    let report = soak::run(opts).await;
    report.print();
    let failures = report.failures(false);
    assert!(failures.is_empty(), "soak failed: {failures:?}");
    assert!(report.counts.requests > 1000, "too little traffic: {}", report.counts.requests);
    assert!(report.hopauth_restarts >= 1 && report.key_rotations >= 1, "the faults did not run");
}
