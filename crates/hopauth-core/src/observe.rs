//! The seam through which the core reports what it decided, for the host to count, log or
//! trace: the sidecar's Prometheus metrics and OpenTelemetry spans implement [`Observer`],
//! the Envoy module its stats. `()` observes nothing (tests, benches).

use std::time::Duration;

use crate::clock::Instant;
use crate::decision::DenyReason;
use crate::token::RequestView;

/// What was decided, without the host's rendered answer.
#[derive(Debug, Clone, Copy)]
pub enum Verdict<'a> {
    /// A verified token of `provider` passed.
    Verified {
        provider: &'a str,
    },
    /// No token, on an anonymous route.
    Anonymous,
    Deny(&'a DenyReason),
}

/// What the decision path noticed on the way.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// When the request reached the host.
    pub arrived: Instant,
    /// From `arrived` to the decision (queueing included).
    pub elapsed: Duration,
    /// The token was answered from the verified-token cache (None: no token got that far).
    pub cache_hit: Option<bool>,
}

/// Called on the deciding thread; implementations must be cheap and must not block.
pub trait Observer: Send + Sync + 'static {
    /// One decision on `req`.
    fn decided<Q: RequestView>(&self, req: &Q, verdict: Verdict<'_>, facts: &Facts);
    /// A request refused before it could be read at all (e.g. not valid protobuf).
    fn refused_unreadable(&self, reason: &DenyReason, elapsed: Duration);
    /// A token was looked up in the verified-token cache.
    fn verify_cache(&self, _hit: bool) {}
    /// A verified token was allowed while the revocation store was stale
    /// (`failure_mode: allow`).
    fn revocation_fail_open(&self) {}
}

impl Observer for () {
    fn decided<Q: RequestView>(&self, _req: &Q, _verdict: Verdict<'_>, _facts: &Facts) {}
    fn refused_unreadable(&self, _reason: &DenyReason, _elapsed: Duration) {}
}
