//! The decision path: token → verified identity (cache, then signature and claims) →
//! route policy → revocation → `Decision`. Records the metric and the log line for each.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::FailureMode;
use crate::decision::{Allowed, Decision, DenyReason};
use crate::metrics::Metrics;
use crate::policy::RoutePolicy;
use crate::revocation::{RevocationStatus, RevocationStore, TokenIdentity};
use crate::token::{self, RequestView, TokenSource};
use crate::trace::{self as otel, CheckTracer, Probe};
use crate::verify::{unix_now, Verifier};

/// The decision path's settings, from the config.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizerSettings {
    pub max_token_bytes: usize,
    /// What a stale revocation store means for a verified token.
    pub failure_mode: FailureMode,
    /// A Check that waited this long gets no full verification (503 `overloaded`).
    pub max_queue_delay: Duration,
    /// Readiness needs every provider's keys, not just one provider's.
    pub require_all_providers: bool,
}

pub struct Authorizer {
    sources: Vec<TokenSource>,
    verifier: Verifier,
    revocation: Arc<dyn RevocationStore>,
    settings: AuthorizerSettings,
    metrics: Metrics,
    deny_log: LogBudget,
    /// Span export; None (the default) costs the Check path one branch.
    tracer: Option<CheckTracer>,
}

impl Authorizer {
    pub fn new(
        sources: Vec<TokenSource>,
        verifier: Verifier,
        revocation: Arc<dyn RevocationStore>,
        settings: AuthorizerSettings,
        metrics: Metrics,
    ) -> Self {
        Authorizer { sources, verifier, revocation, settings, metrics, deny_log: LogBudget::default(), tracer: None }
    }

    /// Records a span per Check into `tracer` (config `tracing`).
    pub fn with_tracer(mut self, tracer: Option<CheckTracer>) -> Self {
        self.tracer = tracer;
        self
    }

    /// The span exporter, when tracing is on.
    pub fn tracer(&self) -> Option<&CheckTracer> {
        self.tracer.as_ref()
    }

    pub fn identity_headers(&self) -> &[String] {
        self.verifier.identity_headers()
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    pub fn revocation(&self) -> &Arc<dyn RevocationStore> {
        &self.revocation
    }

    /// Ready: the providers can verify (one of them, or every one with
    /// `readiness.require_all_providers`), and the revocation store is fresh. With
    /// `failure_mode: allow` a stale store never makes hopauth unready: verified tokens keep
    /// passing through a health-checking Envoy (and known revocations still hold).
    pub fn ready(&self) -> bool {
        let mut usable = self.verifier.providers().iter().map(|p| p.keys.usable());
        let keys = if self.settings.require_all_providers { usable.all(|u| u) } else { usable.any(|u| u) };
        keys && (self.settings.failure_mode == FailureMode::Allow || self.revocation.ready())
    }

    /// The settings this authorizer decides with.
    pub fn settings(&self) -> &AuthorizerSettings {
        &self.settings
    }

    /// Decides, then records the metric and (for a deny) one log line. `arrived` is when
    /// the request reached the server: past `max_queue_delay` only cache hits are served,
    /// and the duration recorded counts from it, so queueing shows in the histogram.
    pub async fn check<R: RequestView>(&self, req: &R, policy: RoutePolicy<'_>, arrived: Instant) -> Decision {
        let mut probe = self.tracer.as_ref().map(|_| Probe::default());
        let (decision, token) = self.decide(req, policy, arrived + self.settings.max_queue_delay, &mut probe).await;
        if let (Some(tracer), Some(probe)) = (&self.tracer, probe) {
            tracer.record(req, &decision, probe, arrived);
        }
        match &decision {
            Decision::Allow(a) => self.metrics.record_allow(matches!(a, Allowed::Anonymous), arrived.elapsed()),
            Decision::Deny(reason) => {
                self.metrics.record_deny(reason, arrived.elapsed());
                // A flood of bad tokens must not become a flood of log writes: lines past the
                // budget are counted, and the count is logged when the next second starts.
                // The metric above still counts every deny.
                if tracing::enabled!(tracing::Level::INFO) {
                    let (write, suppressed) = self.deny_log.take(unix_now());
                    if suppressed > 0 {
                        tracing::info!(suppressed, "deny log lines over {DENY_LOG_LINES_PER_SEC}/s were not written");
                    }
                    if write {
                        tracing::info!(
                            reason = reason.as_str(),
                            token = %token.map(fingerprint).unwrap_or_default(),
                            path = %log_path(req.path()),
                            request_id = otel::request_id(req).unwrap_or_default(),
                            trace_id = otel::trace_id(req).unwrap_or_default(),
                            "denied"
                        );
                    }
                }
            }
        }
        decision
    }

    /// Records a Check whose request could not be read at all (not valid protobuf): the
    /// deny metric, and one budgeted log line saying why.
    pub fn refuse_unreadable(&self, reason: &DenyReason, error: &dyn std::error::Error, arrived: Instant) {
        self.metrics.record_deny(reason, arrived.elapsed());
        if tracing::enabled!(tracing::Level::INFO) {
            let (write, suppressed) = self.deny_log.take(unix_now());
            if suppressed > 0 {
                tracing::info!(suppressed, "deny log lines over {DENY_LOG_LINES_PER_SEC}/s were not written");
            }
            if write {
                tracing::info!(reason = reason.as_str(), error = %error, "denied");
            }
        }
    }

    async fn decide<'r, R: RequestView>(
        &self,
        req: &'r R,
        policy: RoutePolicy<'_>,
        start_by: Instant,
        probe: &mut Option<Probe>,
    ) -> (Decision, Option<&'r str>) {
        let token = match token::extract(req, &self.sources, self.settings.max_token_bytes) {
            Ok(Some(t)) => t,
            Ok(None) if policy.anonymous => return (Decision::Allow(Allowed::Anonymous), None),
            Ok(None) => return (Decision::Deny(DenyReason::MissingToken), None),
            Err(reason) => return (Decision::Deny(reason), None),
        };
        if token.len() > self.settings.max_token_bytes {
            return (Decision::Deny(DenyReason::TokenTooLarge), None);
        }
        let now = unix_now();
        if let Some(p) = probe {
            p.cache_hit = Some(self.verifier.is_cached(token));
        }
        let verified = match self.verifier.verify(token, now, Some(start_by)).await {
            Ok(v) => v,
            Err(reason) => return (Decision::Deny(reason), Some(token)),
        };
        if !policy.allows_provider(&verified.provider) {
            return (Decision::Deny(DenyReason::ProviderNotAllowed), Some(token));
        }
        let identity = TokenIdentity {
            iss: &verified.iss,
            sub: verified.sub.as_deref(),
            jti: verified.jti.as_deref(),
            iat: verified.iat,
        };
        match self.revocation.check(&identity) {
            RevocationStatus::NotRevoked => {}
            RevocationStatus::Revoked => return (Decision::Deny(DenyReason::Revoked), Some(token)),
            RevocationStatus::Unknown => {
                if self.settings.failure_mode == FailureMode::Deny {
                    return (Decision::Deny(DenyReason::RevocationUnavailable), Some(token));
                }
                self.metrics.revocation_fail_open.inc();
            }
        }
        if let Some(required) = policy.missing_scope(&verified.scopes) {
            return (Decision::Deny(DenyReason::InsufficientScope(required.to_string())), Some(token));
        }
        (Decision::Allow(Allowed::Verified(verified)), Some(token))
    }
}

/// Deny lines written per second at most (docs/security.md#f12-high-cardinality-input: logs rate-limited).
pub const DENY_LOG_LINES_PER_SEC: u32 = 50;

/// A per-second budget of log lines, shared by every thread without a lock.
#[derive(Default)]
struct LogBudget {
    second: AtomicI64,
    used: AtomicU32,
    suppressed: AtomicU64,
}

impl LogBudget {
    /// Whether one more line may be written in unix second `now`, and, on the first call
    /// of a new second, how many lines earlier seconds did not write.
    fn take(&self, now: i64) -> (bool, u64) {
        let mut suppressed = 0;
        let current = self.second.load(Ordering::Relaxed);
        if now != current && self.second.compare_exchange(current, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.used.store(0, Ordering::Relaxed);
            suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < DENY_LOG_LINES_PER_SEC {
            (true, suppressed)
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            (false, suppressed)
        }
    }
}

/// First 8 bytes of SHA-256, hex: enough to correlate log lines, useless to replay.
pub fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The path without its query string (which may hold a token).
fn log_path(path: &str) -> &str {
    let mut end = path.find(['?', '#']).unwrap_or(path.len()).min(256);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_log_budget_caps_each_second_and_reports_what_it_dropped() {
        let budget = LogBudget::default();
        for _ in 0..DENY_LOG_LINES_PER_SEC {
            assert_eq!(budget.take(100), (true, 0));
        }
        assert_eq!(budget.take(100), (false, 0));
        assert_eq!(budget.take(100), (false, 0));
        // The next second writes again and reports the two lines it could not.
        assert_eq!(budget.take(101), (true, 2));
        assert_eq!(budget.take(101), (true, 0));
        // A quiet second in between changes nothing: the count is per second seen.
        assert_eq!(budget.take(105), (true, 0));
    }

    #[test]
    fn log_path_drops_the_query_and_bounds_the_length() {
        assert_eq!(log_path("/a/b?access_token=x"), "/a/b");
        assert_eq!(log_path("/a#frag"), "/a");
        let long = "é".repeat(200);
        assert!(log_path(&long).len() <= 256 && long.starts_with(log_path(&long)));
    }
}
