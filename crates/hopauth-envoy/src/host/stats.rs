//! The module's Envoy stats, defined when Envoy builds the filter config (the only time
//! the ABI allows it) and incremented on the worker that decided.
//!
//! `hopauth_checks_total` is one plain counter per (decision, reason), named
//! `hopauth_checks_total.decision.<decision>.reason.<reason>`: the name Envoy itself gives a
//! counter with those two labels. An increment of a plain counter is a direct add (~0.17 µs
//! per request measured inside Envoy 1.40); a labeled one makes Envoy rebuild the tags and
//! look the stat up on every call (~2.4 µs), which was a sixth of the cached decision's time
//! in the filter. With [`STATS_TAGS`]'s two `stats_tags` in the bootstrap (as
//! `envoy/module.yaml` has them) `/stats/prometheus` shows
//! `envoy_dynamicmodulescustom_hopauth_checks_total{decision,reason}`, every series from
//! start-up at 0; without them the labels stay in the name. The side port's `/metrics`
//! keeps the full `hopauth_*` set either way.
use hopauth_core::decision::{Allowed, Decision, DenyReason};

use crate::ffi::{ConfigContext, ConfigError, Counter, RequestContext};

/// The sidecar's metric name (labels `decision`, `reason`).
pub const CHECKS: &str = "hopauth_checks_total";
/// `hopauth_held_requests_total`: requests held (StopIteration) for a module-thread
/// decision, e.g. an unknown `kid` refetch.
pub const HELD: &str = "hopauth_held_requests_total";
/// The bootstrap `stats_config.stats_tags` (tag name, regex) that turn the per-(decision,
/// reason) counters back into one labeled series; `envoy/module.yaml` carries them.
pub const STATS_TAGS: [(&str, &str); 2] = [
    ("decision", r"^dynamicmodulescustom\.hopauth_checks_total(\.decision\.([a-z_]+))\.reason\.[a-z_]+$"),
    ("reason", r"^dynamicmodulescustom\.hopauth_checks_total\.decision\.[a-z_]+(\.reason\.([a-z_]+))$"),
];

/// Allow reasons, in the order [`Stats::record`] indexes them; the deny reasons follow,
/// by `DenyReason::index`.
const ALLOWS: [&str; 2] = ["verified", "anonymous"];

/// Every (decision, reason) a check can end in, in counter order.
fn outcomes() -> impl Iterator<Item = (&'static str, &'static str)> {
    ALLOWS.iter().map(|r| ("allow", *r)).chain(DenyReason::NAMES.iter().map(|r| ("deny", *r)))
}

/// The name of the counter for `decision` (`allow`/`deny`) and `reason`.
fn checks_counter_name(decision: &str, reason: &str) -> String {
    format!("{CHECKS}.decision.{decision}.reason.{reason}")
}

/// The counters one filter config increments.
#[derive(Debug)]
pub struct Stats {
    /// One per [`outcomes`] entry.
    checks: Box<[Counter]>,
    held: Counter,
}

impl Stats {
    /// Defines the counters (only inside `on_http_filter_config_new`).
    pub fn define(cx: &mut ConfigContext<'_>) -> Result<Self, ConfigError> {
        let checks =
            outcomes().map(|(d, r)| cx.define_counter(&checks_counter_name(d, r))).collect::<Result<_, _>>()?;
        Ok(Self { checks, held: cx.define_counter(HELD)? })
    }

    /// Counts one decision.
    pub fn record<T>(&self, ctx: &mut RequestContext<'_>, decision: &Decision<T>) {
        let kind = match decision {
            Decision::Allow(Allowed::Verified(_)) => 0,
            Decision::Allow(Allowed::Anonymous) => 1,
            Decision::Deny(r) => ALLOWS.len() + r.index(),
        };
        ctx.increment_counter(self.checks[kind], 1);
    }

    /// Counts one held request.
    pub fn record_held(&self, ctx: &mut RequestContext<'_>) {
        ctx.increment_counter(self.held, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped bootstrap carries the tags that give the counters their labels (the
    /// Envoy tests assert the labeled series through it).
    #[test]
    fn envoy_module_yaml_carries_the_stats_tags() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envoy/module.yaml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (tag, regex) in STATS_TAGS {
            let entry = format!("- tag_name: {tag}\n    regex: '{regex}'");
            assert!(text.contains(&entry), "{} lacks\n{entry}", path.display());
        }
    }

    #[test]
    fn every_counter_name_has_the_shape_the_tags_match() {
        // `…decision.<d>.reason.<r>`, both values within the regexes' `[a-z_]+`.
        for (d, r) in outcomes() {
            let name = format!("dynamicmodulescustom.{}", checks_counter_name(d, r));
            let rest = name.strip_prefix("dynamicmodulescustom.hopauth_checks_total.decision.").unwrap();
            let (decision, reason) = rest.split_once(".reason.").unwrap();
            assert_eq!((decision, reason), (d, r), "{name}");
            assert!(r.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{r} is not matched by [a-z_]+");
        }
    }
}
