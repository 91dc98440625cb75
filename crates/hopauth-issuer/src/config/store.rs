//! `store`: where refresh tokens live and where revocations are written (this process's
//! memory, or one Redis node).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use hopauth_service::config_file::{duration, redact_url, Problems};

pub const DEFAULT_REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Refresh tokens in this process; revocations cannot reach other processes.
    #[default]
    Memory,
    Redis,
}

/// Where refresh tokens live and where revocations are written.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    #[serde(with = "duration")]
    pub command_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Memory,
            redis_url: None,
            connect_timeout: DEFAULT_REDIS_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_REDIS_COMMAND_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

impl StoreConfig {
    pub(super) fn validate(&self, out: &mut Problems) {
        match (self.backend, &self.redis_url) {
            (StoreBackend::Memory, Some(_)) => out.add("store.redis_url", "set, but backend is `memory`"),
            (StoreBackend::Redis, None) => out.add("store.redis_url", "required with backend `redis`"),
            (StoreBackend::Redis, Some(u)) => match url::Url::parse(u) {
                Ok(p) if p.scheme() == "redis" || p.scheme() == "rediss" => {}
                _ => out.add("store.redis_url", "must be a redis:// or rediss:// URL (one node)"),
            },
            (StoreBackend::Memory, None) => {}
        }
        for (key, timeout) in
            [("store.connect_timeout", self.connect_timeout), ("store.command_timeout", self.command_timeout)]
        {
            if timeout.is_zero() {
                out.add(key, "must be more than 0");
            }
        }
    }
}
