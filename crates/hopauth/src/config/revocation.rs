//! `revocation`: the store (`memory`, or `redis` at `redis_url`), how stale its view may
//! get, what a stale view means (`failure_mode`), and the Redis timeouts.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secrets::expand_env;
use super::{redact_url, Problems};

pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(5);
/// TTL of a subject revocation: no token lives longer than this, so the entry can go after.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Connecting to a Redis node (and to sentinels) gives up after this.
pub const DEFAULT_REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One Redis command (sync, heartbeat, write) gives up after this.
pub const DEFAULT_REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RevocationBackend {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    #[default]
    Deny,
    Allow,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RevocationConfig {
    pub backend: RevocationBackend,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(with = "super::duration")]
    pub max_staleness: Duration,
    pub failure_mode: FailureMode,
    #[serde(with = "super::duration")]
    pub max_token_lifetime: Duration,
    #[serde(with = "super::duration")]
    pub connect_timeout: Duration,
    #[serde(with = "super::duration")]
    pub command_timeout: Duration,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        Self {
            backend: RevocationBackend::Memory,
            redis_url: None,
            max_staleness: DEFAULT_MAX_STALENESS,
            failure_mode: FailureMode::Deny,
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
            connect_timeout: DEFAULT_REDIS_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_REDIS_COMMAND_TIMEOUT,
        }
    }
}

impl RevocationConfig {
    /// `redis_url` with every `${VAR}` replaced by that environment variable, so a password
    /// can come from a Kubernetes Secret while the rest of the config stays a ConfigMap. The
    /// config keeps the text as written (check-config never prints the secret).
    pub fn resolved_redis_url(&self) -> Result<Option<String>, String> {
        self.redis_url.as_deref().map(expand_env).transpose()
    }

    pub(super) fn validate(&self, out: &mut Problems) {
        match (self.backend, &self.redis_url) {
            (RevocationBackend::Memory, Some(_)) => out.add("revocation.redis_url", "set, but backend is `memory`"),
            (RevocationBackend::Memory, None) => {}
            (RevocationBackend::Redis, None) => out.add("revocation.redis_url", "required with backend `redis`"),
            (RevocationBackend::Redis, Some(_)) => match self.resolved_redis_url() {
                // The URL's own grammar, not a connection: the config needs no Redis.
                Ok(Some(u)) => {
                    if let Err(why) = crate::redis_url::RedisTarget::parse(&u) {
                        out.add("revocation.redis_url", why.to_string());
                    }
                }
                Ok(None) => {}
                Err(why) => out.add("revocation.redis_url", why),
            },
        }
        if self.max_staleness.is_zero() {
            out.add("revocation.max_staleness", "must be more than 0");
        }
        for (name, timeout) in [("connect_timeout", self.connect_timeout), ("command_timeout", self.command_timeout)] {
            if timeout.is_zero() {
                out.add(format!("revocation.{name}"), "must be more than 0");
            }
        }
        if self.max_staleness < Duration::from_millis(200) {
            out.add("revocation.max_staleness", "must be at least 200ms");
        }
        if self.max_token_lifetime < Duration::from_secs(60) {
            out.add("revocation.max_token_lifetime", "must be at least 1m");
        }
    }
}

impl fmt::Debug for RevocationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationConfig")
            .field("backend", &self.backend)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("max_staleness", &self.max_staleness)
            .field("failure_mode", &self.failure_mode)
            .field("max_token_lifetime", &self.max_token_lifetime)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(r: &RevocationConfig) -> Vec<String> {
        let mut out = Problems::default();
        r.validate(&mut out);
        out.into_vec().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn each_timeout_is_reported_under_its_own_key() {
        let r = RevocationConfig { command_timeout: Duration::ZERO, ..RevocationConfig::default() };
        assert_eq!(keys(&r), ["revocation.command_timeout"]);
        let r = RevocationConfig { connect_timeout: Duration::ZERO, ..RevocationConfig::default() };
        assert_eq!(keys(&r), ["revocation.connect_timeout"]);
        assert!(keys(&RevocationConfig::default()).is_empty());
    }

    #[test]
    fn debug_masks_redis_password() {
        let r = RevocationConfig {
            redis_url: Some("redis://u:hunter2@localhost:6379/0".into()),
            ..RevocationConfig::default()
        };
        let text = format!("{r:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("***"), "{text}");
    }
}
