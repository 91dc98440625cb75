//! The issuer's typed configuration (`hopauth issuer serve --config issuer.yaml`): every
//! unknown key an error, every problem reported at once with its key and the file, as the
//! sidecar's (`hopauth_service::config_file`). Defaults are each section's `Default`; the
//! `store` and `throttle` sections have their own modules and `validate`.

mod store;
mod throttle;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use hopauth_core::alg::Alg;
use hopauth_service::config_file::{duration, from_yaml, ConfigError, Problems};

pub use store::{StoreBackend, StoreConfig, DEFAULT_REDIS_COMMAND_TIMEOUT, DEFAULT_REDIS_CONNECT_TIMEOUT};
pub use throttle::{
    Rate, ThrottleConfig, DEFAULT_LOGIN_PER_ADDRESS, DEFAULT_LOGIN_PER_USER, DEFAULT_REFRESH_IN_FLIGHT,
    DEFAULT_REFRESH_PER_ADDRESS, DEFAULT_REFRESH_PER_FAMILY, DEFAULT_REVOKE_PER_ADDRESS, MAX_REFRESH_IN_FLIGHT,
};

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

/// The issuer's config file. `issuer`, `audiences`, `users_file` and `keys.dir` are
/// required (their defaults are empty, which `validate` refuses); every other key may be
/// left out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` of every token; also the public base URL of the endpoints (discovery is at
    /// `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// `aud` of every access token.
    pub audiences: Vec<String>,
    /// YAML file with the users (see `users.rs`).
    pub users_file: PathBuf,
    #[serde(with = "duration")]
    pub access_token_lifetime: Duration,
    #[serde(with = "duration")]
    pub refresh_token_lifetime: Duration,
    #[serde(with = "duration")]
    pub session_lifetime: Duration,
    #[serde(with = "duration")]
    pub leeway: Duration,
    pub keys: KeysConfig,
    pub store: StoreConfig,
    pub throttle: ThrottleConfig,
}

impl Default for IssuerConfig {
    /// Every default, and none of the required keys.
    fn default() -> Self {
        IssuerConfig {
            issuer: String::new(),
            listen: DEFAULT_LISTEN.parse().expect("valid constant"),
            admin_listen: DEFAULT_ADMIN_LISTEN.parse().expect("valid constant"),
            audiences: Vec::new(),
            users_file: PathBuf::new(),
            access_token_lifetime: DEFAULT_ACCESS_TOKEN_LIFETIME,
            refresh_token_lifetime: DEFAULT_REFRESH_TOKEN_LIFETIME,
            session_lifetime: DEFAULT_SESSION_LIFETIME,
            leeway: DEFAULT_LEEWAY,
            keys: KeysConfig::default(),
            store: StoreConfig::default(),
            throttle: ThrottleConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// Holds `state.json` and one `<kid>.pk8` (PKCS#8 DER) per key; created at first start.
    pub dir: PathBuf,
    /// Algorithm of generated keys: ES256 or EdDSA.
    pub algorithm: Alg,
    #[serde(with = "duration")]
    pub reload_interval: Duration,
    #[serde(with = "duration")]
    pub jwks_max_age: Duration,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            dir: PathBuf::new(),
            algorithm: Alg::ES256,
            reload_interval: DEFAULT_KEYS_RELOAD_INTERVAL,
            jwks_max_age: DEFAULT_JWKS_MAX_AGE,
        }
    }
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
        let mut config: IssuerConfig = from_yaml(text, file)?;
        let base = file.parent().unwrap_or(Path::new(""));
        // An empty path stays empty, so `validate` reports it as missing.
        for path in [&mut config.users_file, &mut config.keys.dir] {
            if !path.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        }
        config.validate(file)
    }

    /// Checks everything serde cannot; collects every problem.
    pub fn validate(self, file: &Path) -> Result<Self, ConfigError> {
        let mut out = Problems::default();

        match url::Url::parse(&self.issuer) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {
                if self.issuer.ends_with('/') || self.issuer.contains('|') || u.query().is_some() {
                    out.add("issuer", "no trailing `/`, `|` or query: it is compared byte for byte");
                }
            }
            _ if self.issuer.is_empty() => out.add("issuer", "required"),
            _ => out.add("issuer", "must be an http(s) URL, the public base of the endpoints"),
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            out.add("admin_listen", "must differ from listen");
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            out.add("audiences", "list at least one non-empty audience");
        }
        if self.users_file.as_os_str().is_empty() {
            out.add("users_file", "required");
        } else if !self.users_file.is_file() {
            out.add("users_file", format!("{} is not a readable file", self.users_file.display()));
        }
        let min = Duration::from_secs(10);
        if self.access_token_lifetime < min || self.access_token_lifetime > Duration::from_secs(3600) {
            out.add("access_token_lifetime", "between 10s and 1h: revocation relies on short tokens");
        }
        if self.refresh_token_lifetime < self.access_token_lifetime {
            out.add("refresh_token_lifetime", "must be at least access_token_lifetime");
        }
        if self.session_lifetime < self.refresh_token_lifetime {
            out.add("session_lifetime", "must be at least refresh_token_lifetime");
        }
        if self.leeway > Duration::from_secs(300) {
            out.add("leeway", "at most 5m");
        }
        if !matches!(self.keys.algorithm, Alg::ES256 | Alg::EdDSA) {
            out.add("keys.algorithm", format!("{} is not offered: use ES256 or EdDSA", self.keys.algorithm));
        }
        if self.keys.dir.as_os_str().is_empty() {
            out.add("keys.dir", "required: the directory of the signing keys");
        }
        if self.keys.reload_interval < Duration::from_millis(100) {
            out.add("keys.reload_interval", "must be at least 100ms");
        }
        self.store.validate(&mut out);
        self.throttle.validate(&mut out);
        out.into_result(self, file)
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

    #[test]
    fn every_problem_of_shape_is_reported_in_one_run_under_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
audiences: [orders]
users_file: users.yaml
listen: "not an address"
access_token_lifetime: 5 minutes please
keys: { dir: keys, reload_interval: 10x, colour: blue }
store: { backend: redis, redis_url: "redis://r:6379", command_timeout: soon }
throttle: { login_per_user: { burst: 5 }, refresh_per_family: { burst: 1, every: 1 fortnight } }
typo: 1
"#;
        let err = parse(yaml, dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("issuer.yaml"), "{text}");
        let ConfigError::Invalid { problems, .. } = err else { panic!("not every problem: {text}") };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        let want = [
            "listen",
            "access_token_lifetime",
            "keys.reload_interval",
            "keys.colour",
            "store.command_timeout",
            "throttle.login_per_user.every",
            "throttle.refresh_per_family.every",
            "typo",
        ];
        for k in want {
            assert!(keys.contains(&k), "missing {k} in {keys:?}\n{text}");
        }
        // A duration error is under the duration's own key, and says what a duration looks like.
        let reload = problems.iter().find(|p| p.key == "keys.reload_interval").unwrap();
        assert!(reload.message.contains("invalid duration"), "{reload:?}");
        assert_eq!(problems.len(), want.len(), "{keys:?}");
    }

    #[test]
    fn required_keys_are_reported_as_required() {
        let dir = tempfile::tempdir().unwrap();
        let err = parse("audiences: [orders]\n", dir.path()).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else { panic!("{err}") };
        for k in ["issuer", "users_file", "keys.dir"] {
            let p = problems.iter().find(|p| p.key == k).unwrap_or_else(|| panic!("missing {k} in {problems:?}"));
            assert!(p.message.starts_with("required"), "{p:?}");
        }
    }

    #[test]
    fn a_zero_command_timeout_is_reported_under_its_own_key() {
        let mut out = Problems::default();
        StoreConfig { command_timeout: Duration::ZERO, ..StoreConfig::default() }.validate(&mut out);
        let keys: Vec<String> = out.into_vec().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["store.command_timeout"]);
    }
}
