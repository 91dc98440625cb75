//! Prometheus metrics, registered into a registry that is passed in, handed out as one
//! handle per component (decisions, a provider's keys, the revocation store, the admin
//! API) with private series and verbs. Label values come only from closed sets: enums
//! (deny reasons, key rejections, bad revocation keys, admin outcomes) and provider names
//! from the config. The names and labels are the contract of docs/operations.md.

use hopauth_core::decision::DenyReason;
use hopauth_core::keys::KeyRejection;
use hopauth_core::revocation::layout::BadKey;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Buckets for one Check, from a cache hit (µs) to a slow uncached RSA verify (ms).
const CHECK_BUCKETS: [f64; 14] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Every hopauth metric; cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    checks: CheckMetrics,
    jwks: JwksFamilies,
    revocation: RevocationMetrics,
    admin: AdminMetrics,
    /// `hopauth_config_reloads_total` [ok, error].
    config_reloads: [IntCounter; 2],
    /// `hopauth_tls_reloads_total` [ok, error].
    tls_reloads: [IntCounter; 2],
}

/// The decision path's series (`hopauth_checks_total` pre-resolved per outcome, so the hot
/// path does no label lookup).
#[derive(Clone)]
pub struct CheckMetrics {
    allow_verified: IntCounter,
    allow_anonymous: IntCounter,
    deny: Vec<IntCounter>,
    duration: Histogram,
    revocations_enforced: IntCounter,
    fail_open: IntCounter,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_entries: IntGauge,
    cache_bytes: IntGauge,
}

#[derive(Clone)]
struct JwksFamilies {
    refresh: IntCounterVec,
    keys: IntGaugeVec,
    rejected: IntCounterVec,
    last_success: IntGaugeVec,
    key_age: GaugeVec,
}

/// One provider's key series.
#[derive(Clone)]
pub struct JwksMetrics {
    refresh_ok: IntCounter,
    refresh_error: IntCounter,
    keys: IntGauge,
    last_success: IntGauge,
    key_age: Gauge,
    /// By `KeyRejection::ALL` order.
    rejected: Vec<IntCounter>,
}

/// The revocation store's series.
#[derive(Clone)]
pub struct RevocationMetrics {
    store_up: IntGauge,
    entries_jti: IntGauge,
    entries_subject: IntGauge,
    syncs_ok: IntCounter,
    syncs_error: IntCounter,
    push_messages: IntCounter,
    sync_age: Gauge,
    /// By `BadKey::index`.
    bad_keys: Vec<IntCounter>,
    connected: IntGauge,
    evicting: IntGauge,
}

/// Why an admin call was refused before its body was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefusal {
    WrongToken,
    Throttled,
}

/// What an admin revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    Jti,
    Subject,
}

impl RevocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Jti => "jti",
            RevocationKind::Subject => "subject",
        }
    }
}

/// The admin API's series.
#[derive(Clone)]
pub struct AdminMetrics {
    wrong_token: IntCounter,
    throttled: IntCounter,
    /// [kind][ok, error].
    revocations: [[IntCounter; 2]; 2],
    /// `/admin/unrevoke`: [kind][ok, not_found, error].
    unrevocations: [[IntCounter; 3]; 2],
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn family<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, f: T) -> Result<T, prometheus::Error> {
    registry.register(Box::new(f.clone()))?;
    Ok(f)
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let r = registry;
        let build_info = family(
            r,
            IntGaugeVec::new(
                Opts::new("hopauth_build_info", "Always 1; the labels say which hopauth this is"),
                &["version"],
            )?,
        )?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;

        let checks = family(
            r,
            IntCounterVec::new(
                Opts::new("hopauth_checks_total", "ext_authz decisions by outcome and reason"),
                &["decision", "reason"],
            )?,
        )?;
        let duration = family(
            r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "hopauth_check_duration_seconds",
                    "Time from a Check reaching hopauth to its decision",
                )
                .buckets(CHECK_BUCKETS.to_vec()),
            )?,
        )?;
        let check_metrics = CheckMetrics {
            allow_verified: checks.with_label_values(&["allow", "verified"]),
            allow_anonymous: checks.with_label_values(&["allow", "anonymous"]),
            deny: DenyReason::NAMES.iter().map(|reason| checks.with_label_values(&["deny", reason])).collect(),
            duration,
            revocations_enforced: counter(
                r,
                "hopauth_revocations_enforced_total",
                "Checks denied because the token was revoked",
            )?,
            fail_open: counter(
                r,
                "hopauth_revocation_fail_open_total",
                "Checks allowed while the revocation store was stale (failure_mode: allow)",
            )?,
            cache_hits: counter(r, "hopauth_verify_cache_hits_total", "Checks answered from the verified-token cache")?,
            cache_misses: counter(r, "hopauth_verify_cache_misses_total", "Checks that had to verify a signature")?,
            cache_entries: gauge(r, "hopauth_verify_cache_entries", "Tokens in the verified-token cache")?,
            cache_bytes: gauge(
                r,
                "hopauth_verify_cache_bytes",
                "Bytes the verified-token cache entries weigh (tokens, responses, identity, bookkeeping)",
            )?,
        };

        let jwks = JwksFamilies {
            refresh: family(
                r,
                IntCounterVec::new(
                    Opts::new("hopauth_jwks_refresh_total", "JWKS fetches by provider and result"),
                    &["provider", "result"],
                )?,
            )?,
            keys: family(
                r,
                IntGaugeVec::new(
                    Opts::new("hopauth_jwks_keys", "Usable verification keys per provider"),
                    &["provider"],
                )?,
            )?,
            rejected: family(
                r,
                IntCounterVec::new(
                    Opts::new("hopauth_jwks_keys_rejected_total", "JWKS keys dropped by hygiene checks"),
                    &["provider", "reason"],
                )?,
            )?,
            last_success: family(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "hopauth_jwks_last_success_timestamp_seconds",
                        "Unix time of the last successful JWKS fetch per provider",
                    ),
                    &["provider"],
                )?,
            )?,
            key_age: family(
                r,
                GaugeVec::new(
                    Opts::new(
                        "hopauth_jwks_key_age_seconds",
                        "Seconds since each provider's keys were last fetched successfully (-1: never)",
                    ),
                    &["provider"],
                )?,
            )?,
        };

        let entries = family(
            r,
            IntGaugeVec::new(
                Opts::new("hopauth_revocation_entries", "Revocation entries in the local view"),
                &["kind"],
            )?,
        )?;
        let syncs = family(
            r,
            IntCounterVec::new(
                Opts::new("hopauth_revocation_syncs_total", "Full revocation resyncs (start, reconnect) by result"),
                &["result"],
            )?,
        )?;
        let bad_keys = family(
            r,
            IntCounterVec::new(
                Opts::new(
                    "hopauth_revocation_bad_keys_total",
                    "Keys under hopauth:revoked: that do not follow the layout, by reason",
                ),
                &["reason"],
            )?,
        )?;
        let revocation = RevocationMetrics {
            store_up: gauge(r, "hopauth_revocation_store_up", "1 when the revocation store is synced and fresh")?,
            entries_jti: entries.with_label_values(&["jti"]),
            entries_subject: entries.with_label_values(&["subject"]),
            syncs_ok: syncs.with_label_values(&["success"]),
            syncs_error: syncs.with_label_values(&["error"]),
            push_messages: counter(
                r,
                "hopauth_revocation_push_messages_total",
                "Invalidation pushes received from Redis",
            )?,
            sync_age: family(
                r,
                Gauge::new(
                    "hopauth_revocation_sync_age_seconds",
                    "Seconds since the revocation view was last confirmed current",
                )?,
            )?,
            bad_keys: BadKey::NAMES.iter().map(|reason| bad_keys.with_label_values(&[reason])).collect(),
            connected: gauge(
                r,
                "hopauth_revocation_store_connected",
                "1 while the revocation sync is connected to every Redis master",
            )?,
            evicting: gauge(
                r,
                "hopauth_revocation_store_evicting",
                "1 if a Redis master may evict revocation keys (maxmemory-policy is not noeviction), 0 if not, -1 unknown",
            )?,
        };

        let failures = family(
            r,
            IntCounterVec::new(
                Opts::new(
                    "hopauth_admin_auth_failures_total",
                    "Admin calls refused for a missing or wrong token (`wrong_token`) or while failed attempts are throttled (`throttled`)",
                ),
                &["outcome"],
            )?,
        )?;
        let revocations = family(
            r,
            IntCounterVec::new(
                Opts::new("hopauth_admin_revocations_total", "Revocations written through /admin/revoke"),
                &["kind", "result"],
            )?,
        )?;
        let per_kind = |kind: &str| {
            [revocations.with_label_values(&[kind, "ok"]), revocations.with_label_values(&[kind, "error"])]
        };
        let undos = family(
            r,
            IntCounterVec::new(
                Opts::new("hopauth_admin_unrevocations_total", "Revocations undone through /admin/unrevoke"),
                &["kind", "result"],
            )?,
        )?;
        let undo = |kind: &str| ["ok", "not_found", "error"].map(|result| undos.with_label_values(&[kind, result]));
        let admin = AdminMetrics {
            wrong_token: failures.with_label_values(&["wrong_token"]),
            throttled: failures.with_label_values(&["throttled"]),
            revocations: [per_kind("jti"), per_kind("subject")],
            unrevocations: [undo("jti"), undo("subject")],
        };
        let reloads = family(
            r,
            IntCounterVec::new(
                Opts::new(
                    "hopauth_config_reloads_total",
                    "Config reloads (kill -HUP) by result: ok (the new config serves) or error (refused, the old one serves)",
                ),
                &["result"],
            )?,
        )?;
        let config_reloads = [reloads.with_label_values(&["ok"]), reloads.with_label_values(&["error"])];
        let tls = family(
            r,
            IntCounterVec::new(
                Opts::new(
                    "hopauth_tls_reloads_total",
                    "Changed gRPC TLS files seen (every 10 s and on kill -HUP) by result: ok (new connections get them) \
                     or error (unreadable or refused; the current certificates keep serving)",
                ),
                &["result"],
            )?,
        )?;
        let tls_reloads = [tls.with_label_values(&["ok"]), tls.with_label_values(&["error"])];
        Ok(Metrics {
            registry: registry.clone(),
            checks: check_metrics,
            jwks,
            revocation,
            admin,
            config_reloads,
            tls_reloads,
        })
    }

    /// A fresh registry with every metric; for tests and tools.
    pub fn standalone() -> Self {
        Self::register(&Registry::new()).expect("metric names are unique")
    }

    pub fn checks(&self) -> &CheckMetrics {
        &self.checks
    }

    pub fn revocation(&self) -> &RevocationMetrics {
        &self.revocation
    }

    pub fn admin(&self) -> &AdminMetrics {
        &self.admin
    }

    /// Counts one config reload, applied (`ok`) or refused.
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads[usize::from(!ok)].inc();
    }

    /// Counts one look at changed gRPC TLS files: applied (`ok`), or unreadable or refused.
    pub fn tls_reload(&self, ok: bool) {
        self.tls_reloads[usize::from(!ok)].inc();
    }

    /// `provider`'s key series, every one created at 0 (the key age at -1), so alerts and
    /// dashboards see them before the first event. A reload asks again for the providers it
    /// keeps: their series are shared, and a key age already measured stays until the
    /// serving core publishes its own. A gauge still at 0 (new, or a provider of configured
    /// secrets) reads -1 until that next publication.
    pub fn jwks(&self, provider: &str) -> JwksMetrics {
        let f = &self.jwks;
        let key_age = f.key_age.with_label_values(&[provider]);
        if key_age.get() == 0.0 {
            key_age.set(-1.0);
        }
        JwksMetrics {
            refresh_ok: f.refresh.with_label_values(&[provider, "success"]),
            refresh_error: f.refresh.with_label_values(&[provider, "error"]),
            keys: f.keys.with_label_values(&[provider]),
            last_success: f.last_success.with_label_values(&[provider]),
            key_age,
            rejected: KeyRejection::ALL.iter().map(|r| f.rejected.with_label_values(&[provider, r.as_str()])).collect(),
        }
    }

    /// Removes every series of `provider` (a provider a reload dropped): `/metrics` then
    /// shows only the providers configured. Handles still held by a retiring core update
    /// series no longer exposed.
    pub fn forget_provider(&self, provider: &str) {
        let f = &self.jwks;
        for result in ["success", "error"] {
            let _ = f.refresh.remove_label_values(&[provider, result]);
        }
        let _ = f.keys.remove_label_values(&[provider]);
        let _ = f.last_success.remove_label_values(&[provider]);
        let _ = f.key_age.remove_label_values(&[provider]);
        for r in KeyRejection::ALL {
            let _ = f.rejected.remove_label_values(&[provider, r.as_str()]);
        }
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

mod verbs;

#[cfg(test)]
mod tests;
