//! Prometheus metrics, registered into a registry that is passed in. Handlers call verbs;
//! label values come only from closed sets (deny reasons, provider names from config).

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::decision::DenyReason;
use crate::revocation::redis::BadKey;

/// Buckets for one Check, from a cache hit (µs) to a slow uncached RSA verify (ms).
const CHECK_BUCKETS: [f64; 14] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Pre-resolved `hopauth_checks_total` series so the hot path does no label lookup.
    allow_verified: IntCounter,
    allow_anonymous: IntCounter,
    deny: Vec<IntCounter>,
    check_duration: Histogram,
    pub verify_cache_hits: IntCounter,
    pub verify_cache_misses: IntCounter,
    verify_cache_entries: IntGauge,
    verify_cache_bytes: IntGauge,
    jwks_refresh: IntCounterVec,
    jwks_keys: IntGaugeVec,
    jwks_keys_rejected: IntCounterVec,
    jwks_last_success: IntGaugeVec,
    pub revocation_store_up: IntGauge,
    pub revocation_entries: IntGaugeVec,
    pub revocations_enforced: IntCounter,
    admin_revocations: IntCounterVec,
    admin_auth_failures: IntCounterVec,
    jwks_key_age: prometheus::GaugeVec,
    revocation_syncs: IntCounterVec,
    pub revocation_push_messages: IntCounter,
    pub revocation_sync_age: prometheus::Gauge,
    pub revocation_fail_open: IntCounter,
    /// `hopauth_revocation_bad_keys_total`, one series per `BadKey` in index order.
    revocation_bad_keys: Vec<IntCounter>,
    /// 1 while the revocation sync holds a live session with every master.
    pub revocation_store_connected: IntGauge,
    /// 1: a master evicts keys (`maxmemory-policy` other than `noeviction`); 0: none does;
    /// -1: unknown (`CONFIG` refused).
    pub revocation_store_evicting: IntGauge,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let checks = IntCounterVec::new(
            Opts::new("hopauth_checks_total", "ext_authz decisions by outcome and reason"),
            &["decision", "reason"],
        )?;
        let check_duration = Histogram::with_opts(
            HistogramOpts::new("hopauth_check_duration_seconds", "Time from a Check reaching hopauth to its decision")
                .buckets(CHECK_BUCKETS.to_vec()),
        )?;
        let verify_cache_hits =
            IntCounter::new("hopauth_verify_cache_hits_total", "Checks answered from the verified-token cache")?;
        let verify_cache_misses =
            IntCounter::new("hopauth_verify_cache_misses_total", "Checks that had to verify a signature")?;
        let verify_cache_entries = IntGauge::new("hopauth_verify_cache_entries", "Tokens in the verified-token cache")?;
        let verify_cache_bytes = IntGauge::new(
            "hopauth_verify_cache_bytes",
            "Bytes the verified-token cache entries weigh (tokens, responses, identity, bookkeeping)",
        )?;
        let jwks_refresh = IntCounterVec::new(
            Opts::new("hopauth_jwks_refresh_total", "JWKS fetches by provider and result"),
            &["provider", "result"],
        )?;
        let jwks_keys =
            IntGaugeVec::new(Opts::new("hopauth_jwks_keys", "Usable verification keys per provider"), &["provider"])?;
        let jwks_keys_rejected = IntCounterVec::new(
            Opts::new("hopauth_jwks_keys_rejected_total", "JWKS keys dropped by hygiene checks"),
            &["provider", "reason"],
        )?;
        let jwks_last_success = IntGaugeVec::new(
            Opts::new(
                "hopauth_jwks_last_success_timestamp_seconds",
                "Unix time of the last successful JWKS fetch per provider",
            ),
            &["provider"],
        )?;
        let revocation_store_up =
            IntGauge::new("hopauth_revocation_store_up", "1 when the revocation store is synced and fresh")?;
        let revocation_entries = IntGaugeVec::new(
            Opts::new("hopauth_revocation_entries", "Revocation entries in the local view"),
            &["kind"],
        )?;
        let revocations_enforced =
            IntCounter::new("hopauth_revocations_enforced_total", "Checks denied because the token was revoked")?;
        let admin_auth_failures = IntCounterVec::new(
            Opts::new(
                "hopauth_admin_auth_failures_total",
                "Admin calls refused for a missing or wrong token (`wrong_token`) or while failed attempts are throttled (`throttled`)",
            ),
            &["outcome"],
        )?;
        for outcome in ["wrong_token", "throttled"] {
            admin_auth_failures.with_label_values(&[outcome]);
        }
        let admin_revocations = IntCounterVec::new(
            Opts::new("hopauth_admin_revocations_total", "Revocations written through /admin/revoke"),
            &["kind", "result"],
        )?;
        for kind in ["jti", "subject"] {
            for result in ["ok", "error"] {
                admin_revocations.with_label_values(&[kind, result]);
            }
        }
        let revocation_syncs = IntCounterVec::new(
            Opts::new("hopauth_revocation_syncs_total", "Full revocation resyncs (start, reconnect) by result"),
            &["result"],
        )?;
        for result in ["success", "error"] {
            revocation_syncs.with_label_values(&[result]);
        }
        let jwks_key_age = prometheus::GaugeVec::new(
            Opts::new(
                "hopauth_jwks_key_age_seconds",
                "Seconds since each provider's keys were last fetched successfully (-1: never)",
            ),
            &["provider"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("hopauth_build_info", "Always 1; the labels say which hopauth this is"),
            &["version"],
        )?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(jwks_key_age.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        let revocation_push_messages =
            IntCounter::new("hopauth_revocation_push_messages_total", "Invalidation pushes received from Redis")?;
        let revocation_sync_age = prometheus::Gauge::new(
            "hopauth_revocation_sync_age_seconds",
            "Seconds since the revocation view was last confirmed current",
        )?;
        let revocation_fail_open = IntCounter::new(
            "hopauth_revocation_fail_open_total",
            "Checks allowed while the revocation store was stale (failure_mode: allow)",
        )?;
        registry.register(Box::new(revocation_syncs.clone()))?;
        registry.register(Box::new(revocation_push_messages.clone()))?;
        registry.register(Box::new(revocation_sync_age.clone()))?;
        registry.register(Box::new(revocation_fail_open.clone()))?;
        let bad_keys = IntCounterVec::new(
            Opts::new(
                "hopauth_revocation_bad_keys_total",
                "Keys under hopauth:revoked: that do not follow the layout, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(bad_keys.clone()))?;
        let revocation_bad_keys = BadKey::NAMES.iter().map(|r| bad_keys.with_label_values(&[r])).collect();
        let revocation_store_connected = IntGauge::new(
            "hopauth_revocation_store_connected",
            "1 while the revocation sync is connected to every Redis master",
        )?;
        registry.register(Box::new(revocation_store_connected.clone()))?;
        let revocation_store_evicting = IntGauge::new(
            "hopauth_revocation_store_evicting",
            "1 if a Redis master may evict revocation keys (maxmemory-policy is not noeviction), 0 if not, -1 unknown",
        )?;
        registry.register(Box::new(revocation_store_evicting.clone()))?;
        registry.register(Box::new(checks.clone()))?;
        registry.register(Box::new(check_duration.clone()))?;
        registry.register(Box::new(verify_cache_hits.clone()))?;
        registry.register(Box::new(verify_cache_misses.clone()))?;
        registry.register(Box::new(verify_cache_entries.clone()))?;
        registry.register(Box::new(verify_cache_bytes.clone()))?;
        registry.register(Box::new(jwks_refresh.clone()))?;
        registry.register(Box::new(jwks_keys.clone()))?;
        registry.register(Box::new(jwks_keys_rejected.clone()))?;
        registry.register(Box::new(jwks_last_success.clone()))?;
        registry.register(Box::new(revocation_store_up.clone()))?;
        registry.register(Box::new(revocation_entries.clone()))?;
        registry.register(Box::new(revocations_enforced.clone()))?;
        registry.register(Box::new(admin_revocations.clone()))?;
        registry.register(Box::new(admin_auth_failures.clone()))?;
        Ok(Metrics {
            registry: registry.clone(),
            allow_verified: checks.with_label_values(&["allow", "verified"]),
            allow_anonymous: checks.with_label_values(&["allow", "anonymous"]),
            deny: DenyReason::NAMES.iter().map(|r| checks.with_label_values(&["deny", r])).collect(),
            check_duration,
            verify_cache_hits,
            verify_cache_misses,
            verify_cache_entries,
            verify_cache_bytes,
            jwks_refresh,
            jwks_keys,
            jwks_keys_rejected,
            jwks_last_success,
            revocation_store_up,
            revocation_entries,
            revocations_enforced,
            admin_revocations,
            admin_auth_failures,
            jwks_key_age,
            revocation_syncs,
            revocation_push_messages,
            revocation_sync_age,
            revocation_fail_open,
            revocation_bad_keys,
            revocation_store_connected,
            revocation_store_evicting,
        })
    }

    /// A fresh registry with every metric; for tests and tools.
    pub fn standalone() -> Self {
        Self::register(&Registry::new()).expect("metric names are unique")
    }

    pub fn record_allow(&self, anonymous: bool, took: Duration) {
        if anonymous {
            self.allow_anonymous.inc();
        } else {
            self.allow_verified.inc();
        }
        self.check_duration.observe(took.as_secs_f64());
    }

    pub fn record_deny(&self, reason: &DenyReason, took: Duration) {
        self.deny[reason.index()].inc();
        if *reason == DenyReason::Revoked {
            self.revocations_enforced.inc();
        }
        self.check_duration.observe(took.as_secs_f64());
    }

    /// The verified-token cache's size: (entries, bytes).
    pub fn record_verify_cache(&self, (entries, bytes): (u64, u64)) {
        self.verify_cache_entries.set(entries as i64);
        self.verify_cache_bytes.set(bytes as i64);
    }

    /// Creates every series of `provider` at 0 (or -1 for the key age), so alerts and
    /// dashboards see them before the first event.
    pub fn register_provider(&self, provider: &str, rejection_reasons: &[&str]) {
        for result in ["success", "error"] {
            self.jwks_refresh.with_label_values(&[provider, result]);
        }
        self.jwks_keys.with_label_values(&[provider]);
        self.jwks_last_success.with_label_values(&[provider]);
        self.jwks_key_age.with_label_values(&[provider]).set(-1.0);
        for reason in rejection_reasons {
            self.jwks_keys_rejected.with_label_values(&[provider, reason]);
        }
    }

    /// Seconds since `provider`'s keys were last fetched (`None`: never, or no fetched keys).
    pub fn record_jwks_key_age(&self, provider: &str, age: Option<Duration>) {
        self.jwks_key_age.with_label_values(&[provider]).set(age.map_or(-1.0, |a| a.as_secs_f64()));
    }

    pub fn record_jwks_refresh(&self, provider: &str, ok: bool, keys: Option<usize>) {
        self.jwks_refresh.with_label_values(&[provider, if ok { "success" } else { "error" }]).inc();
        if let Some(n) = keys {
            self.jwks_keys.with_label_values(&[provider]).set(n as i64);
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            self.jwks_last_success.with_label_values(&[provider]).set(now);
        }
    }

    pub fn record_key_rejected(&self, provider: &str, reason: &'static str) {
        self.jwks_keys_rejected.with_label_values(&[provider, reason]).inc();
    }

    pub fn record_revocation_sync(&self, ok: bool) {
        self.revocation_syncs.with_label_values(&[if ok { "success" } else { "error" }]).inc();
    }

    /// One key under the revocation prefix that could not be read as the layout says.
    pub fn record_revocation_bad_key(&self, reason: BadKey) {
        self.revocation_bad_keys[reason.index()].inc();
    }

    /// An admin call refused before its body was read: `throttled` or `wrong_token`.
    pub fn record_admin_auth_failure(&self, throttled: bool) {
        self.admin_auth_failures.with_label_values(&[if throttled { "throttled" } else { "wrong_token" }]).inc();
    }

    pub fn record_admin_revocation(&self, kind: &'static str, ok: bool) {
        self.admin_revocations.with_label_values(&[kind, if ok { "ok" } else { "error" }]).inc();
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = encoder.encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_show_up_in_text_output() {
        let m = Metrics::standalone();
        m.record_allow(false, Duration::from_micros(3));
        m.record_deny(&DenyReason::Revoked, Duration::from_micros(3));
        let text = m.render();
        assert!(text.contains(r#"hopauth_checks_total{decision="allow",reason="verified"} 1"#), "{text}");
        assert!(text.contains(r#"hopauth_checks_total{decision="deny",reason="revoked"} 1"#), "{text}");
        assert!(text.contains("hopauth_revocations_enforced_total 1"), "{text}");
        assert!(text.contains("hopauth_check_duration_seconds_bucket"), "{text}");
        for reason in BadKey::NAMES {
            let series = format!("hopauth_revocation_bad_keys_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&series), "{series} is not pre-registered: {text}");
        }
        for name in ["hopauth_revocation_store_connected", "hopauth_revocation_store_evicting"] {
            assert!(text.contains(name), "{name} missing");
        }
        for name in
            ["hopauth_verify_cache_hits_total", "hopauth_verify_cache_misses_total", "hopauth_revocation_store_up"]
        {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
