//! `providers[].jwks`: where a provider's public keys come from (a URI, a file, or OIDC
//! discovery) and how they are refreshed.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problems;

pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(5 * 60);
/// How long last-good keys keep serving while the JWKS endpoint fails.
pub const DEFAULT_JWKS_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// Whole-request deadline for a JWKS or discovery fetch.
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWKS larger than this is refused: real ones are a few KiB.
pub const DEFAULT_JWKS_MAX_BYTES: usize = 512 * 1024;
/// At most one refetch per provider in this interval caused by an unknown `kid`: a flood of
/// random kids costs the IdP about one (conditional, mostly 304) request a second, and a key
/// the IdP has just published is seen within about a second, flood or not.
pub const DEFAULT_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest `kid_refetch_interval` accepted.
pub const MIN_KID_REFETCH_INTERVAL: Duration = Duration::from_millis(100);
/// How long a request with an unknown `kid` waits for the refetch it triggered: well inside
/// Envoy's default 200 ms ext_authz timeout.
pub const DEFAULT_KID_REFETCH_WAIT: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwksConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Find `jwks_uri` through `<issuer>/.well-known/openid-configuration`.
    pub discovery: bool,
    #[serde(with = "super::duration")]
    pub refresh_interval: Duration,
    #[serde(with = "super::duration")]
    pub max_stale: Duration,
    #[serde(with = "super::duration")]
    pub timeout: Duration,
    pub max_bytes: usize,
    #[serde(with = "super::duration")]
    pub kid_refetch_interval: Duration,
    #[serde(with = "super::duration")]
    pub kid_refetch_wait: Duration,
}

impl Default for JwksConfig {
    /// No source set; every limit at its default.
    fn default() -> Self {
        Self {
            uri: None,
            file: None,
            discovery: false,
            refresh_interval: DEFAULT_JWKS_REFRESH,
            max_stale: DEFAULT_JWKS_MAX_STALE,
            timeout: DEFAULT_JWKS_TIMEOUT,
            max_bytes: DEFAULT_JWKS_MAX_BYTES,
            kid_refetch_interval: DEFAULT_KID_REFETCH_INTERVAL,
            kid_refetch_wait: DEFAULT_KID_REFETCH_WAIT,
        }
    }
}

impl JwksConfig {
    /// The problems of the `jwks` section at `key` of a provider whose issuer is `issuer`.
    pub(super) fn validate(&self, key: &str, issuer: &str, out: &mut Problems) {
        let count = [self.uri.is_some(), self.file.is_some(), self.discovery].iter().filter(|b| **b).count();
        if count != 1 {
            out.add(key, "set exactly one of `uri`, `file`, `discovery: true`");
        }
        if let Some(uri) = &self.uri {
            match url::Url::parse(uri) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                Ok(_) => out.add(format!("{key}.uri"), "must be http:// or https://"),
                Err(e) => out.add(format!("{key}.uri"), format!("not a URL: {e}")),
            }
        }
        if self.discovery && url::Url::parse(issuer).is_err() {
            out.add(format!("{key}.discovery"), "needs an issuer that is a URL");
        }
        if let Some(f) = &self.file {
            if !f.is_file() {
                out.add(format!("{key}.file"), format!("{} is not a readable file", f.display()));
            }
        }
        if self.refresh_interval < Duration::from_secs(1) {
            out.add(format!("{key}.refresh_interval"), "must be at least 1s");
        }
        if self.max_stale < self.refresh_interval {
            out.add(format!("{key}.max_stale"), "must be at least refresh_interval");
        }
        if self.timeout.is_zero() {
            out.add(format!("{key}.timeout"), "must be more than 0");
        }
        if self.max_bytes < 1024 {
            out.add(format!("{key}.max_bytes"), "must be at least 1024");
        }
        if self.kid_refetch_interval < MIN_KID_REFETCH_INTERVAL {
            out.add(format!("{key}.kid_refetch_interval"), "must be at least 100ms");
        }
        if self.kid_refetch_wait > Duration::from_secs(1) {
            out.add(format!("{key}.kid_refetch_wait"), "keep it under Envoy's timeout (at most 1s)");
        }
    }
}
