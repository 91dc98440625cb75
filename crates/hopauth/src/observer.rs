//! The sidecar's [`Observer`]: each decision the core reports becomes its Prometheus series
//! and, when tracing is on, its span.

use std::time::Duration;

use hopauth_core::decision::DenyReason;
use hopauth_core::observe::{Facts, Observer, Verdict};
use hopauth_core::token::RequestView;

use crate::metrics::CheckMetrics;
use crate::trace::CheckTracer;

pub struct SidecarObserver {
    checks: CheckMetrics,
    /// Span export; None (the default) costs a decision one branch.
    tracer: Option<CheckTracer>,
}

impl SidecarObserver {
    pub fn new(checks: CheckMetrics, tracer: Option<CheckTracer>) -> Self {
        SidecarObserver { checks, tracer }
    }

    /// The span exporter, when tracing is on.
    pub fn tracer(&self) -> Option<&CheckTracer> {
        self.tracer.as_ref()
    }
}

impl Observer for SidecarObserver {
    fn decided<Q: RequestView>(&self, req: &Q, verdict: Verdict<'_>, facts: &Facts) {
        if let Some(tracer) = &self.tracer {
            tracer.record(req, verdict, facts);
        }
        match verdict {
            Verdict::Verified { .. } => self.checks.allowed(false, facts.elapsed),
            Verdict::Anonymous => self.checks.allowed(true, facts.elapsed),
            Verdict::Deny(reason) => self.checks.denied(reason, facts.elapsed),
        }
    }

    fn refused_unreadable(&self, reason: &DenyReason, elapsed: Duration) {
        self.checks.denied(reason, elapsed);
    }

    fn verify_cache(&self, hit: bool) {
        self.checks.verify_cache(hit);
    }

    fn revocation_fail_open(&self) {
        self.checks.fail_open();
    }
}
