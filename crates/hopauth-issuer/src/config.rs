//! The issuer's typed configuration (`hopauth issuer serve --config issuer.yaml`): every
//! unknown key an error, every problem reported at once with its key and the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use hopauth_core::alg::Alg;
use hopauth_service::config_file::{duration, redact_url, ConfigError, Problem};

/// Token, revocation, logout, JWKS and discovery endpoints.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9100";
/// Metrics and health, kept off the public port like the sidecar's side port.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9101";
/// Short-lived access tokens: revocation only has to cover this long.
pub const DEFAULT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How long one refresh token may sit unused before it expires.
pub const DEFAULT_REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Absolute lifetime of a login session (a refresh family): rotation never extends it.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// The clock skew consumers allow (hopauth's default `leeway`); retiring keys stay this much longer.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// How often a running issuer re-reads the key state, so `rotate-keys` takes effect.
pub const DEFAULT_KEYS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// `Cache-Control: max-age` of the JWKS: consumers refetch at least this often.
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` of every token; also the public base URL of the endpoints (discovery is at
    /// `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// `aud` of every access token.
    pub audiences: Vec<String>,
    /// YAML file with the users (see `users.rs`).
    pub users_file: PathBuf,
    #[serde(default = "default_access_token_lifetime", with = "duration")]
    pub access_token_lifetime: Duration,
    #[serde(default = "default_refresh_token_lifetime", with = "duration")]
    pub refresh_token_lifetime: Duration,
    #[serde(default = "default_session_lifetime", with = "duration")]
    pub session_lifetime: Duration,
    #[serde(default = "default_leeway", with = "duration")]
    pub leeway: Duration,
    pub keys: KeysConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub throttle: ThrottleConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Holds `state.json` and one `<kid>.pk8` (PKCS#8 DER) per key; created at first start.
    pub dir: PathBuf,
    /// Algorithm of generated keys: ES256 or EdDSA.
    #[serde(default = "default_key_algorithm")]
    pub algorithm: Alg,
    #[serde(default = "default_keys_reload_interval", with = "duration")]
    pub reload_interval: Duration,
    #[serde(default = "default_jwks_max_age", with = "duration")]
    pub jwks_max_age: Duration,
}

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
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub backend: StoreBackend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(default = "default_redis_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    #[serde(default = "default_redis_command_timeout", with = "duration")]
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

/// A token bucket: `burst` at once, then one more every `every`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub burst: u32,
    #[serde(with = "duration")]
    pub every: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Failed password logins per username.
    #[serde(default = "default_login_per_user")]
    pub login_per_user: Rate,
    /// Password logins (good or bad) per client address: bounds the argon2 work one client causes.
    #[serde(default = "default_login_per_address")]
    pub login_per_address: Rate,
    /// Refreshes per refresh family (login session), spent only by a genuine token.
    #[serde(default = "default_refresh_per_family")]
    pub refresh_per_family: Rate,
    /// Refresh grants (any token, good or bad) per client address.
    #[serde(default = "default_refresh_per_address")]
    pub refresh_per_address: Rate,
    /// `/revoke` and `/logout` calls (one shared bucket) per client address.
    #[serde(default = "default_revoke_per_address")]
    pub revoke_per_address: Rate,
    /// Refresh grants being worked on at once in this process; more are shed with 429 and
    /// `retry-after` instead of queueing, so a refresh burst keeps a bounded latency.
    #[serde(default = "default_refresh_in_flight")]
    pub refresh_in_flight: u32,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            login_per_user: DEFAULT_LOGIN_PER_USER,
            login_per_address: DEFAULT_LOGIN_PER_ADDRESS,
            refresh_per_family: DEFAULT_REFRESH_PER_FAMILY,
            refresh_per_address: DEFAULT_REFRESH_PER_ADDRESS,
            revoke_per_address: DEFAULT_REVOKE_PER_ADDRESS,
            refresh_in_flight: DEFAULT_REFRESH_IN_FLIGHT,
        }
    }
}

/// Five wrong passwords, then one guess a minute.
pub const DEFAULT_LOGIN_PER_USER: Rate = Rate { burst: 5, every: Duration::from_secs(60) };
/// A burst of 20 logins, then one a second: enough for a NAT, too little to brute-force.
pub const DEFAULT_LOGIN_PER_ADDRESS: Rate = Rate { burst: 20, every: Duration::from_secs(1) };
/// A client refreshes once per access token lifetime; 10 at once covers retries.
pub const DEFAULT_REFRESH_PER_FAMILY: Rate = Rate { burst: 10, every: Duration::from_secs(10) };
/// A NAT of a few hundred clients refreshing every 5 minutes needs about one a second; a
/// burst of 100 covers a whole office waking up. Bounds the store round trips one address causes.
pub const DEFAULT_REFRESH_PER_ADDRESS: Rate = Rate { burst: 100, every: Duration::from_millis(100) };
/// Logouts are rarer than logins: 20 at once, then one a second.
pub const DEFAULT_REVOKE_PER_ADDRESS: Rate = Rate { burst: 20, every: Duration::from_secs(1) };
/// A refresh is a store round trip and a signature (about a millisecond): 64 in flight is
/// tens of milliseconds of work queued at most.
pub const DEFAULT_REFRESH_IN_FLIGHT: u32 = 64;

/// Past this, "in flight" no longer bounds anything a 2-core issuer can serve promptly.
pub const MAX_REFRESH_IN_FLIGHT: u32 = 10_000;

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid constant")
}
fn default_admin_listen() -> SocketAddr {
    DEFAULT_ADMIN_LISTEN.parse().expect("valid constant")
}
fn default_access_token_lifetime() -> Duration {
    DEFAULT_ACCESS_TOKEN_LIFETIME
}
fn default_refresh_token_lifetime() -> Duration {
    DEFAULT_REFRESH_TOKEN_LIFETIME
}
fn default_session_lifetime() -> Duration {
    DEFAULT_SESSION_LIFETIME
}
fn default_leeway() -> Duration {
    DEFAULT_LEEWAY
}
fn default_key_algorithm() -> Alg {
    Alg::ES256
}
fn default_keys_reload_interval() -> Duration {
    DEFAULT_KEYS_RELOAD_INTERVAL
}
fn default_jwks_max_age() -> Duration {
    DEFAULT_JWKS_MAX_AGE
}
fn default_redis_connect_timeout() -> Duration {
    DEFAULT_REDIS_CONNECT_TIMEOUT
}
fn default_redis_command_timeout() -> Duration {
    DEFAULT_REDIS_COMMAND_TIMEOUT
}
fn default_login_per_user() -> Rate {
    DEFAULT_LOGIN_PER_USER
}
fn default_login_per_address() -> Rate {
    DEFAULT_LOGIN_PER_ADDRESS
}
fn default_refresh_per_family() -> Rate {
    DEFAULT_REFRESH_PER_FAMILY
}
fn default_refresh_per_address() -> Rate {
    DEFAULT_REFRESH_PER_ADDRESS
}
fn default_revoke_per_address() -> Rate {
    DEFAULT_REVOKE_PER_ADDRESS
}
fn default_refresh_in_flight() -> u32 {
    DEFAULT_REFRESH_IN_FLIGHT
}

impl IssuerConfig {
    /// Reads, parses and validates an issuer config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: path.to_owned(), source })?;
        Self::from_yaml(&text, path)
    }

    /// Parses and validates YAML text; `file` names the source in errors and anchors
    /// relative paths (`users_file`, `keys.dir`) at its directory.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let mut config: IssuerConfig =
            serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse { file: file.to_owned(), source })?;
        let base = file.parent().unwrap_or(Path::new(""));
        config.users_file = base.join(&config.users_file);
        config.keys.dir = base.join(&config.keys.dir);
        config.validate(file)
    }

    /// Checks everything serde cannot; collects every problem.
    pub fn validate(self, file: &Path) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, message: String| problems.push(Problem { key: key.to_string(), message });

        match url::Url::parse(&self.issuer) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {
                if self.issuer.ends_with('/') || self.issuer.contains('|') || u.query().is_some() {
                    bad("issuer", "no trailing `/`, `|` or query: it is compared byte for byte".into());
                }
            }
            _ => bad("issuer", "must be an http(s) URL, the public base of the endpoints".into()),
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            bad("admin_listen", "must differ from listen".into());
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            bad("audiences", "list at least one non-empty audience".into());
        }
        if !self.users_file.is_file() {
            bad("users_file", format!("{} is not a readable file", self.users_file.display()));
        }
        let min = Duration::from_secs(10);
        if self.access_token_lifetime < min || self.access_token_lifetime > Duration::from_secs(3600) {
            bad("access_token_lifetime", "between 10s and 1h: revocation relies on short tokens".into());
        }
        if self.refresh_token_lifetime < self.access_token_lifetime {
            bad("refresh_token_lifetime", "must be at least access_token_lifetime".into());
        }
        if self.session_lifetime < self.refresh_token_lifetime {
            bad("session_lifetime", "must be at least refresh_token_lifetime".into());
        }
        if self.leeway > Duration::from_secs(300) {
            bad("leeway", "at most 5m".into());
        }
        if !matches!(self.keys.algorithm, Alg::ES256 | Alg::EdDSA) {
            bad("keys.algorithm", format!("{} is not offered: use ES256 or EdDSA", self.keys.algorithm));
        }
        if self.keys.dir.as_os_str().is_empty() {
            bad("keys.dir", "must name a directory".into());
        }
        if self.keys.reload_interval < Duration::from_millis(100) {
            bad("keys.reload_interval", "must be at least 100ms".into());
        }
        match (self.store.backend, &self.store.redis_url) {
            (StoreBackend::Memory, Some(_)) => bad("store.redis_url", "set, but backend is `memory`".into()),
            (StoreBackend::Redis, None) => bad("store.redis_url", "required with backend `redis`".into()),
            (StoreBackend::Redis, Some(u)) => match url::Url::parse(u) {
                Ok(p) if p.scheme() == "redis" || p.scheme() == "rediss" => {}
                _ => bad("store.redis_url", "must be a redis:// or rediss:// URL (one node)".into()),
            },
            (StoreBackend::Memory, None) => {}
        }
        if self.store.connect_timeout.is_zero() || self.store.command_timeout.is_zero() {
            bad("store.connect_timeout", "timeouts must be more than 0".into());
        }
        for (key, rate) in [
            ("throttle.login_per_user", self.throttle.login_per_user),
            ("throttle.login_per_address", self.throttle.login_per_address),
            ("throttle.refresh_per_family", self.throttle.refresh_per_family),
            ("throttle.refresh_per_address", self.throttle.refresh_per_address),
            ("throttle.revoke_per_address", self.throttle.revoke_per_address),
        ] {
            if rate.burst == 0 || rate.every.is_zero() {
                bad(key, "burst and every must be more than 0".into());
            }
        }
        if self.throttle.refresh_in_flight == 0 || self.throttle.refresh_in_flight > MAX_REFRESH_IN_FLIGHT {
            bad("throttle.refresh_in_flight", format!("between 1 and {MAX_REFRESH_IN_FLIGHT}"));
        }

        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError::Invalid { file: file.to_owned(), problems })
        }
    }

    /// How long a retired key must stay published: every token it signed has expired, even
    /// one signed just before this issuer noticed the rotation.
    pub fn key_retention(&self) -> Duration {
        self.access_token_lifetime + self.leeway + self.keys.reload_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str, dir: &Path) -> Result<IssuerConfig, ConfigError> {
        IssuerConfig::from_yaml(yaml, &dir.join("issuer.yaml"))
    }

    #[test]
    fn minimal_config_gets_defaults_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users.yaml"), "users: []\n").unwrap();
        let c = parse(
            "issuer: https://auth.example\naudiences: [orders]\nusers_file: users.yaml\nkeys: { dir: keys }\n",
            dir.path(),
        )
        .unwrap();
        assert_eq!(c.access_token_lifetime, DEFAULT_ACCESS_TOKEN_LIFETIME);
        assert_eq!(c.keys.algorithm, Alg::ES256);
        assert_eq!(c.store.backend, StoreBackend::Memory);
        assert_eq!(c.throttle.refresh_in_flight, DEFAULT_REFRESH_IN_FLIGHT);
        assert_eq!(c.throttle.revoke_per_address, DEFAULT_REVOKE_PER_ADDRESS);
        assert_eq!(c.throttle.refresh_per_address, DEFAULT_REFRESH_PER_ADDRESS);
        assert_eq!(c.users_file, dir.path().join("users.yaml"));
        assert_eq!(c.keys.dir, dir.path().join("keys"));
        assert_eq!(c.key_retention(), Duration::from_secs(300 + 30 + 10));
    }

    #[test]
    fn every_problem_names_its_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
issuer: "https://auth.example/"
audiences: []
users_file: missing.yaml
access_token_lifetime: 2h
keys: { dir: keys, algorithm: RS256 }
store: { backend: redis }
throttle: { login_per_user: { burst: 0, every: 1m }, revoke_per_address: { burst: 1, every: 0s }, refresh_in_flight: 0 }
"#;
        let err = parse(yaml, dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("issuer.yaml"), "{text}");
        let ConfigError::Invalid { problems, .. } = err else { panic!("{text}") };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "issuer",
            "audiences",
            "users_file",
            "access_token_lifetime",
            "keys.algorithm",
            "store.redis_url",
            "throttle.login_per_user",
            "throttle.revoke_per_address",
            "throttle.refresh_in_flight",
        ] {
            assert!(keys.contains(&k), "missing {k} in {keys:?}");
        }
        let err = parse("issuer: https://a\naudiences: [x]\nusers_file: u\nkeys: { dir: k }\nlisten_: 1\n", dir.path())
            .unwrap_err();
        assert!(err.to_string().contains("listen_"), "{err}");
    }
}
