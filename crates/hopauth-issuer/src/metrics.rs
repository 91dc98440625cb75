//! The issuer's Prometheus metrics (`hopauth_issuer_*`), in a registry that is passed in.
//! Label values come from closed sets: grant types, RFC 6749 error codes, key statuses.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// From a refresh (about a millisecond) to a login (argon2, tens of milliseconds) under load.
const TOKEN_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Clone)]
pub struct IssuerMetrics {
    registry: Registry,
    token_requests: IntCounterVec,
    token_duration: HistogramVec,
    refresh_reuse: IntCounter,
    revocations: IntCounterVec,
    throttled: IntCounterVec,
    password_checks: IntCounter,
    signing_keys: IntGaugeVec,
    key_reloads: IntCounterVec,
    pub store_up: IntGauge,
}

impl IssuerMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let token_requests = IntCounterVec::new(
            Opts::new("hopauth_issuer_token_requests_total", "POST /token by grant type and result"),
            &["grant_type", "result"],
        )?;
        let token_duration = HistogramVec::new(
            HistogramOpts::new("hopauth_issuer_token_duration_seconds", "Time to answer POST /token")
                .buckets(TOKEN_BUCKETS.to_vec()),
            &["grant_type"],
        )?;
        let refresh_reuse = IntCounter::new(
            "hopauth_issuer_refresh_reuse_total",
            "Spent refresh tokens presented again (each revoked its family and subject)",
        )?;
        let revocations = IntCounterVec::new(
            Opts::new("hopauth_issuer_revocations_total", "Revocations written by the issuer"),
            &["kind", "result"],
        )?;
        let throttled = IntCounterVec::new(
            Opts::new("hopauth_issuer_throttled_total", "Requests refused by a rate limit"),
            &["limit"],
        )?;
        let password_checks = IntCounter::new(
            "hopauth_issuer_password_checks_total",
            "argon2 password verifications run (known and unknown users alike)",
        )?;
        let signing_keys = IntGaugeVec::new(
            Opts::new("hopauth_issuer_signing_keys", "Published signing keys by status"),
            &["status"],
        )?;
        let key_reloads = IntCounterVec::new(
            Opts::new("hopauth_issuer_key_reloads_total", "Key set changes picked up from disk, by result"),
            &["result"],
        )?;
        let store_up =
            IntGauge::new("hopauth_issuer_store_up", "1 when the refresh token store answered its last ping")?;
        registry.register(Box::new(token_requests.clone()))?;
        registry.register(Box::new(token_duration.clone()))?;
        registry.register(Box::new(refresh_reuse.clone()))?;
        registry.register(Box::new(revocations.clone()))?;
        registry.register(Box::new(throttled.clone()))?;
        registry.register(Box::new(password_checks.clone()))?;
        registry.register(Box::new(signing_keys.clone()))?;
        registry.register(Box::new(key_reloads.clone()))?;
        registry.register(Box::new(store_up.clone()))?;
        Ok(IssuerMetrics {
            registry: registry.clone(),
            token_requests,
            token_duration,
            refresh_reuse,
            revocations,
            throttled,
            password_checks,
            signing_keys,
            key_reloads,
            store_up,
        })
    }

    pub fn standalone() -> Self {
        Self::register(&Registry::new()).expect("fresh registry")
    }

    /// One answered POST /token; `result` is `issued` or an RFC 6749 error code.
    pub fn record_token(&self, grant_type: &'static str, result: &'static str, took: Duration) {
        self.token_requests.with_label_values(&[grant_type, result]).inc();
        self.token_duration.with_label_values(&[grant_type]).observe(took.as_secs_f64());
    }

    pub fn record_reuse(&self) {
        self.refresh_reuse.inc();
    }

    /// `kind`: `jti`, `subject`, `family`.
    pub fn record_revocation(&self, kind: &'static str, ok: bool) {
        self.revocations.with_label_values(&[kind, if ok { "ok" } else { "error" }]).inc();
    }

    /// `limit`: `user`, `address`, `family`, `refresh_address`, `revoke_address`,
    /// `refresh_in_flight`.
    pub fn record_throttled(&self, limit: &'static str) {
        self.throttled.with_label_values(&[limit]).inc();
    }

    /// One argon2 verification is about to run.
    pub fn record_password_check(&self) {
        self.password_checks.inc();
    }

    pub fn set_signing_keys(&self, status: &'static str, n: usize) {
        self.signing_keys.with_label_values(&[status]).set(n as i64);
    }

    pub fn record_key_reload(&self, ok: bool) {
        self.key_reloads.with_label_values(&[if ok { "success" } else { "error" }]).inc();
    }

    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
