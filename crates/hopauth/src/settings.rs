//! The config file, as the core's plain settings: every mapping from the serde schema
//! (`config`) to `hopauth_core` types is here, so the core never sees the schema.

use std::sync::Arc;

use hopauth_core::authorizer::{AuthorizerSettings, FailureMode};
use hopauth_core::keys::KeySettings;
use hopauth_core::token::TokenSource;
use hopauth_core::verify::{media_subtype, TokenProfile, VerifierLimits};

use crate::config::{self, Config, JwksConfig};
use crate::jwks::{FetchSettings, JwksSource};

/// A configured token source, prepared for extraction.
pub fn token_source(s: &config::Source) -> TokenSource {
    match (&s.header, &s.cookie, &s.query) {
        (Some(h), _, _) => TokenSource::Header { name: h.clone(), prefix: s.prefix.clone().unwrap_or_default() },
        (_, Some(c), _) => TokenSource::Cookie(c.clone()),
        (_, _, Some(q)) => TokenSource::Query(q.clone()),
        // validate() guarantees one of the three.
        _ => TokenSource::Header { name: "authorization".into(), prefix: "Bearer ".into() },
    }
}

pub fn token_sources(config: &Config) -> Vec<TokenSource> {
    config.sources.iter().map(token_source).collect()
}

/// A provider's explicit typing and token age.
pub fn token_profile(p: &config::Provider) -> TokenProfile {
    TokenProfile {
        typ: p.typ.as_deref().map(|t| media_subtype(t).into()),
        max_token_age_secs: p.max_token_age.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
    }
}

/// How a provider's key set ages and refetches.
pub fn key_settings(j: &JwksConfig) -> KeySettings {
    KeySettings {
        max_stale: j.max_stale,
        kid_refetch_interval: j.kid_refetch_interval,
        kid_refetch_wait: j.kid_refetch_wait,
    }
}

/// How a provider's JWKS is fetched.
pub fn fetch_settings(j: &JwksConfig) -> FetchSettings {
    FetchSettings { refresh_interval: j.refresh_interval, timeout: j.timeout, max_bytes: j.max_bytes }
}

/// Where a provider's keys come from, and the `jwks` section that governs them (the
/// defaults for a provider without one).
pub fn jwks_source(p: &config::Provider) -> (JwksSource, JwksConfig) {
    match &p.jwks {
        Some(j) => {
            let source = if let Some(uri) = &j.uri {
                JwksSource::Uri(uri.clone())
            } else if let Some(file) = &j.file {
                JwksSource::File(file.clone())
            } else {
                JwksSource::Discovery { issuer: p.issuer.clone() }
            };
            (source, j.clone())
        }
        None => (JwksSource::None, default_jwks_config()),
    }
}

fn default_jwks_config() -> JwksConfig {
    serde_yaml_ng::from_str("discovery: false").expect("defaults parse")
}

pub fn verifier_limits(config: &Config) -> VerifierLimits {
    VerifierLimits {
        cache_max_entries: config.verify_cache.max_entries,
        cache_max_bytes: config.verify_cache.max_bytes,
        max_concurrent_verifies: config.max_concurrent_verifies,
    }
}

pub fn authorizer_settings(config: &Config) -> AuthorizerSettings {
    AuthorizerSettings {
        max_token_bytes: config.max_token_bytes,
        failure_mode: failure_mode(config.revocation.failure_mode),
        max_queue_delay: config.max_queue_delay,
        require_all_providers: config.readiness.require_all_providers,
    }
}

pub fn failure_mode(m: config::FailureMode) -> FailureMode {
    match m {
        config::FailureMode::Deny => FailureMode::Deny,
        config::FailureMode::Allow => FailureMode::Allow,
    }
}

/// (claim, header) pairs of a provider, in config order.
pub fn claims_to_headers(p: &config::Provider) -> Vec<(String, Arc<str>)> {
    p.claims_to_headers.iter().map(|(c, h)| (c.clone(), h.as_str().into())).collect()
}
