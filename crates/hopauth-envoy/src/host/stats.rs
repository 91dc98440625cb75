//! The module's Envoy stats, defined when Envoy builds the filter config (the only time
//! the ABI allows it) and incremented on the worker that decided. Envoy shows them at
//! `/stats/prometheus` as `envoy_dynamicmodulescustom_<name>{…}`; the side port's
//! `/metrics` keeps the full `hopauth_*` set.
use hopauth_core::decision::{Allowed, Decision};

use crate::ffi::{ConfigContext, ConfigError, Counter, RequestContext};

/// `hopauth_checks_total{decision,reason}`: the sidecar's metric name and labels.
pub const CHECKS: &str = "hopauth_checks_total";
/// `hopauth_held_requests_total`: requests held (StopIteration) for a module-thread
/// decision, e.g. an unknown `kid` refetch.
pub const HELD: &str = "hopauth_held_requests_total";

/// The counters one filter config increments.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    checks: Counter,
    held: Counter,
}

impl Stats {
    /// Defines the counters (only inside `on_http_filter_config_new`).
    pub fn define(cx: &mut ConfigContext<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            checks: cx.define_counter_with_labels(CHECKS, &["decision", "reason"])?,
            held: cx.define_counter(HELD)?,
        })
    }

    /// Counts one decision.
    pub fn record<T>(&self, ctx: &mut RequestContext<'_>, decision: &Decision<T>) {
        let (d, reason) = match decision {
            Decision::Allow(Allowed::Verified(_)) => ("allow", "verified"),
            Decision::Allow(Allowed::Anonymous) => ("allow", "anonymous"),
            Decision::Deny(r) => ("deny", r.as_str()),
        };
        ctx.increment_counter_with_labels(self.checks, &[d, reason], 1);
    }

    /// Counts one held request.
    pub fn record_held(&self, ctx: &mut RequestContext<'_>) {
        ctx.increment_counter(self.held, 1);
    }
}
