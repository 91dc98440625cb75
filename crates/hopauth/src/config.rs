//! Typed configuration: parsed from YAML, every unknown key an error, then validated with
//! every problem reported at once, each naming its key and the file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// The `grpc_tls` section (defined with the listener's TLS, which it configures).
pub use crate::tls::GrpcTlsConfig;
use hopauth_core::alg::Alg;
pub use hopauth_core::verify::media_subtype;
pub(crate) use hopauth_service::config_file::{duration, optional_duration};
pub use hopauth_service::config_file::{redact_url, ConfigError, Problem};

/// gRPC listener for ext_authz and health.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:9001";
/// HTTP side port: metrics, health, admin.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9002";
/// Largest token accepted, checked before any decoding (RFC 8725 §3.x; CVE-2025-30204 class).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Verified-token cache capacity in entries; an entry is ~1.5 KiB with a 384-byte token
/// (docs/performance.md), so this alone bounds the cache near 150 MiB.
pub const DEFAULT_VERIFY_CACHE_ENTRIES: u64 = 100_000;
/// Verified-token cache capacity in bytes, whatever the token size: 8 KiB tokens would make
/// 100k entries ~2 GiB, so bytes are bounded too.
pub const DEFAULT_VERIFY_CACHE_BYTES: u64 = 192 * 1024 * 1024;
/// Queueing after which a Check needing a full verification is shed: well under Envoy's
/// 200 ms Check timeout, so the client gets a reasoned 503 rather than a timeout.
pub const DEFAULT_MAX_QUEUE_DELAY: Duration = Duration::from_millis(50);
/// Clock skew tolerated on `exp`/`nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
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
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(5);
/// TTL of a subject revocation: no token lives longer than this, so the entry can go after.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Connecting to a Redis node (and to sentinels) gives up after this.
pub const DEFAULT_REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One Redis command (sync, heartbeat, write) gives up after this.
pub const DEFAULT_REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_ADMIN_TOKEN_ENV: &str = "HOPAUTH_ADMIN_TOKEN";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `IP:port` or `unix:/path` (see `GrpcListen`).
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: GrpcListen,
    /// TLS (optionally mTLS) on `grpc_listen`; TCP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_tls: Option<GrpcTlsConfig>,
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// `/admin/*` on its own listener (and no longer on `http_listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    /// Where the token is looked for, in order; one token at most per request.
    #[serde(default = "default_sources")]
    pub sources: Vec<Source>,
    pub providers: Vec<Provider>,
    #[serde(default)]
    pub revocation: RevocationConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    #[serde(default)]
    pub verify_cache: VerifyCacheConfig,
    /// A Check that waited longer than this gets 503 `overloaded` instead of a full
    /// verification; cache hits are still answered.
    #[serde(default = "default_max_queue_delay", with = "duration")]
    pub max_queue_delay: Duration,
    /// Signature verifications (cache misses) running at once; more wait, within
    /// `max_queue_delay`, so a flood of expensive tokens cannot take every thread from cache
    /// hits. Default: the CPUs this process may use.
    #[serde(default = "default_max_concurrent_verifies")]
    pub max_concurrent_verifies: usize,
    #[serde(default)]
    pub readiness: ReadinessConfig,
    /// OpenTelemetry span export; absent → off (docs/configuration.md#tracing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<crate::trace::TracingConfig>,
}

/// What `/readyz` and gRPC health require.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessConfig {
    /// Ready only when every provider has usable keys. The default (false) needs one: a dead
    /// JWKS of one issuer must not take the others down (its own tokens get 503).
    #[serde(default)]
    pub require_all_providers: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Scheme before the token, e.g. `"Bearer "`; matched case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    /// Compared byte for byte with the token's `iss`.
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwksConfig>,
    /// Environment variable holding the HMAC secret; required for HS* algorithms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_env: Option<String>,
    #[serde(default = "default_leeway", with = "duration")]
    pub leeway: Duration,
    /// Claim name → upstream header name.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_header: Option<String>,
    /// Explicit typing (RFC 8725 §3.11, RFC 9068): the JOSE header `typ` every token must
    /// carry, e.g. `at+jwt`; compared case-insensitively, the `application/` prefix optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Tokens whose `iat` is older than this are refused, and so are tokens without `iat`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "optional_duration")]
    pub max_token_age: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Find `jwks_uri` through `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    #[serde(default = "default_jwks_refresh", with = "duration")]
    pub refresh_interval: Duration,
    #[serde(default = "default_jwks_max_stale", with = "duration")]
    pub max_stale: Duration,
    #[serde(default = "default_jwks_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_jwks_max_bytes")]
    pub max_bytes: usize,
    #[serde(default = "default_kid_refetch_interval", with = "duration")]
    pub kid_refetch_interval: Duration,
    #[serde(default = "default_kid_refetch_wait", with = "duration")]
    pub kid_refetch_wait: Duration,
}

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
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    #[serde(default)]
    pub backend: RevocationBackend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(default = "default_max_staleness", with = "duration")]
    pub max_staleness: Duration,
    #[serde(default)]
    pub failure_mode: FailureMode,
    #[serde(default = "default_max_token_lifetime", with = "duration")]
    pub max_token_lifetime: Duration,
    #[serde(default = "default_redis_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    #[serde(default = "default_redis_command_timeout", with = "duration")]
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
}

/// Replaces `${NAME}` with the environment variable `NAME` (`$${` stays a literal `${`).
/// An unset variable or an unclosed `${` is an error that names it.
pub fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| format!("unclosed `${{` in {:?}", redact_url(text)))?;
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{name}}}` is not an environment variable name"));
            }
            let value = std::env::var(name).map_err(|_| format!("environment variable ${name} is not set"))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Environment variable that holds the bearer token for `/admin/*`; unset → admin off.
    #[serde(default = "default_admin_token_env")]
    pub token_env: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { token_env: DEFAULT_ADMIN_TOKEN_ENV.to_string() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyCacheConfig {
    #[serde(default = "default_verify_cache_entries")]
    pub max_entries: u64,
    /// Bound on the bytes the entries hold (tokens, responses, identity, bookkeeping).
    #[serde(default = "default_verify_cache_bytes")]
    pub max_bytes: u64,
}

impl Default for VerifyCacheConfig {
    fn default() -> Self {
        Self { max_entries: DEFAULT_VERIFY_CACHE_ENTRIES, max_bytes: DEFAULT_VERIFY_CACHE_BYTES }
    }
}

fn default_grpc_listen() -> GrpcListen {
    DEFAULT_GRPC_LISTEN.parse().expect("valid constant")
}

/// Where the gRPC listener binds: a TCP address, or a Unix domain socket (`unix:/path`),
/// which Envoy in the same pod reaches with a `pipe: { path: ... }` cluster address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// The prefix that selects a Unix domain socket in `grpc_listen`.
pub const UNIX_PREFIX: &str = "unix:";

impl std::str::FromStr for GrpcListen {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix(UNIX_PREFIX) {
            if !path.starts_with('/') {
                return Err(format!("{text:?}: the socket path must be absolute, e.g. unix:/run/hopauth/grpc.sock"));
            }
            return Ok(GrpcListen::Unix(PathBuf::from(path)));
        }
        text.parse().map(GrpcListen::Tcp).map_err(|_| {
            format!("{text:?} is not IP:port or unix:/path; use e.g. 127.0.0.1:9001 or [::1]:9001 or unix:/run/hopauth/grpc.sock (host names are not resolved)")
        })
    }
}

impl std::fmt::Display for GrpcListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrpcListen::Tcp(a) => a.fmt(f),
            GrpcListen::Unix(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
        }
    }
}

impl Serialize for GrpcListen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GrpcListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(|e| serde::de::Error::custom(format!("grpc_listen: {e}")))
    }
}
fn default_http_listen() -> SocketAddr {
    DEFAULT_HTTP_LISTEN.parse().expect("valid constant")
}
fn default_sources() -> Vec<Source> {
    vec![Source { header: Some("authorization".into()), prefix: Some("Bearer ".into()), ..Source::default() }]
}
fn default_max_queue_delay() -> Duration {
    DEFAULT_MAX_QUEUE_DELAY
}

fn default_max_token_bytes() -> usize {
    DEFAULT_MAX_TOKEN_BYTES
}
fn default_leeway() -> Duration {
    DEFAULT_LEEWAY
}
fn default_jwks_refresh() -> Duration {
    DEFAULT_JWKS_REFRESH
}
fn default_jwks_max_stale() -> Duration {
    DEFAULT_JWKS_MAX_STALE
}
fn default_jwks_timeout() -> Duration {
    DEFAULT_JWKS_TIMEOUT
}
fn default_jwks_max_bytes() -> usize {
    DEFAULT_JWKS_MAX_BYTES
}
fn default_kid_refetch_interval() -> Duration {
    DEFAULT_KID_REFETCH_INTERVAL
}
fn default_kid_refetch_wait() -> Duration {
    DEFAULT_KID_REFETCH_WAIT
}
fn default_max_staleness() -> Duration {
    DEFAULT_MAX_STALENESS
}
fn default_max_token_lifetime() -> Duration {
    DEFAULT_MAX_TOKEN_LIFETIME
}
fn default_redis_connect_timeout() -> Duration {
    DEFAULT_REDIS_CONNECT_TIMEOUT
}
fn default_redis_command_timeout() -> Duration {
    DEFAULT_REDIS_COMMAND_TIMEOUT
}
fn default_admin_token_env() -> String {
    DEFAULT_ADMIN_TOKEN_ENV.to_string()
}
fn default_verify_cache_entries() -> u64 {
    DEFAULT_VERIFY_CACHE_ENTRIES
}
fn default_verify_cache_bytes() -> u64 {
    DEFAULT_VERIFY_CACHE_BYTES
}
/// The CPUs this process may use (cgroup quota included), at least 1.
pub fn default_max_concurrent_verifies() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: path.to_owned(), source })?;
        Self::from_yaml(&text, path)
    }

    /// Parses and validates YAML text; `file` only names the source in errors.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let config: Config =
            serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse { file: file.to_owned(), source })?;
        config.validate(file)
    }

    /// Checks everything serde cannot; collects every problem rather than stopping at one.
    pub fn validate(self, file: &Path) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut bad = |key: String, message: String| problems.push(Problem { key, message });

        if self.sources.is_empty() {
            bad("sources".into(), "at least one token source is required".into());
        }
        for (i, s) in self.sources.iter().enumerate() {
            let key = format!("sources[{i}]");
            let set = [s.header.is_some(), s.cookie.is_some(), s.query.is_some()].iter().filter(|b| **b).count();
            if set != 1 {
                bad(key.clone(), "set exactly one of `header`, `cookie`, `query`".into());
            }
            if s.prefix.is_some() && s.header.is_none() {
                bad(format!("{key}.prefix"), "`prefix` only applies to a `header` source".into());
            }
            for (name, v) in [("header", &s.header), ("cookie", &s.cookie), ("query", &s.query)] {
                if let Some(v) = v {
                    if v.is_empty() {
                        bad(format!("{key}.{name}"), "must not be empty".into());
                    } else if name == "header" && !is_header_name(v) {
                        bad(format!("{key}.{name}"), format!("{v:?} is not a lowercase header name"));
                    }
                }
            }
        }
        if self.max_token_bytes < 64 || self.max_token_bytes > 1024 * 1024 {
            bad("max_token_bytes".into(), "must be between 64 and 1048576".into());
        }
        if self.max_queue_delay.is_zero() || self.max_queue_delay > Duration::from_secs(10) {
            bad("max_queue_delay".into(), "must be more than 0 and at most 10s".into());
        }
        if self.verify_cache.max_entries == 0 {
            bad("verify_cache.max_entries".into(), "must be at least 1".into());
        }
        if self.verify_cache.max_bytes < 1024 * 1024 {
            bad("verify_cache.max_bytes".into(), "must be at least 1048576 (1 MiB)".into());
        }
        if self.max_concurrent_verifies == 0 || self.max_concurrent_verifies > 1024 {
            bad("max_concurrent_verifies".into(), "must be between 1 and 1024".into());
        }
        if self.providers.is_empty() {
            bad("providers".into(), "at least one provider is required".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut issuers = std::collections::HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let key = format!("providers[{i}]");
            if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                bad(format!("{key}.name"), "use letters, digits, `-`, `_`, `.`".into());
            }
            if !names.insert(p.name.as_str()) {
                bad(format!("{key}.name"), format!("{:?} is used by another provider", p.name));
            }
            if p.issuer.is_empty() {
                bad(format!("{key}.issuer"), "must not be empty".into());
            } else if !issuers.insert(p.issuer.as_str()) {
                bad(format!("{key}.issuer"), format!("{:?} is used by another provider", p.issuer));
            }
            if p.audiences.is_empty() || p.audiences.iter().any(String::is_empty) {
                bad(format!("{key}.audiences"), "list at least one non-empty audience".into());
            }
            if p.algorithms.is_empty() {
                bad(format!("{key}.algorithms"), "list at least one algorithm".into());
            }
            let wants_hmac = p.algorithms.iter().any(|a| a.is_hmac());
            let wants_public = p.algorithms.iter().any(|a| !a.is_hmac());
            if wants_hmac && p.hmac_secret_env.is_none() {
                bad(format!("{key}.algorithms"), "HS* algorithms need `hmac_secret_env`".into());
            }
            if !wants_hmac && p.hmac_secret_env.is_some() {
                bad(format!("{key}.hmac_secret_env"), "set, but no HS* algorithm is allowed".into());
            }
            if let Some(var) = &p.hmac_secret_env {
                match std::env::var(var) {
                    Ok(v) if v.len() >= 32 => {}
                    Ok(_) => bad(format!("{key}.hmac_secret_env"), format!("${var} must hold at least 32 bytes")),
                    Err(_) => bad(format!("{key}.hmac_secret_env"), format!("${var} is not set")),
                }
            }
            match (&p.jwks, wants_public) {
                (None, true) => bad(format!("{key}.jwks"), "required for public-key algorithms".into()),
                (Some(j), _) => {
                    let jk = format!("{key}.jwks");
                    let count = [j.uri.is_some(), j.file.is_some(), j.discovery].iter().filter(|b| **b).count();
                    if count != 1 {
                        bad(jk.clone(), "set exactly one of `uri`, `file`, `discovery: true`".into());
                    }
                    if let Some(uri) = &j.uri {
                        match url::Url::parse(uri) {
                            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                            Ok(_) => bad(format!("{jk}.uri"), "must be http:// or https://".into()),
                            Err(e) => bad(format!("{jk}.uri"), format!("not a URL: {e}")),
                        }
                    }
                    if j.discovery && url::Url::parse(&p.issuer).is_err() {
                        bad(format!("{jk}.discovery"), "needs an issuer that is a URL".into());
                    }
                    if let Some(f) = &j.file {
                        if !f.is_file() {
                            bad(format!("{jk}.file"), format!("{} is not a readable file", f.display()));
                        }
                    }
                    if j.refresh_interval < std::time::Duration::from_secs(1) {
                        bad(format!("{jk}.refresh_interval"), "must be at least 1s".into());
                    }
                    if j.max_stale < j.refresh_interval {
                        bad(format!("{jk}.max_stale"), "must be at least refresh_interval".into());
                    }
                    if j.timeout.is_zero() {
                        bad(format!("{jk}.timeout"), "must be more than 0".into());
                    }
                    if j.max_bytes < 1024 {
                        bad(format!("{jk}.max_bytes"), "must be at least 1024".into());
                    }
                    if j.kid_refetch_interval < MIN_KID_REFETCH_INTERVAL {
                        bad(format!("{jk}.kid_refetch_interval"), "must be at least 100ms".into());
                    }
                    if j.kid_refetch_wait > std::time::Duration::from_secs(1) {
                        bad(format!("{jk}.kid_refetch_wait"), "keep it under Envoy's timeout (at most 1s)".into());
                    }
                }
                (None, false) => {}
            }
            if p.leeway > std::time::Duration::from_secs(300) {
                bad(format!("{key}.leeway"), "at most 5m".into());
            }
            for (claim, header) in &p.claims_to_headers {
                if claim.is_empty() {
                    bad(format!("{key}.claims_to_headers"), "claim names must not be empty".into());
                }
                if !is_header_name(header) {
                    bad(
                        format!("{key}.claims_to_headers.{claim}"),
                        format!("{header:?} is not a lowercase header name"),
                    );
                }
                if is_reserved_header(header) {
                    bad(format!("{key}.claims_to_headers.{claim}"), format!("{header:?} cannot be overwritten"));
                }
            }
            if let Some(h) = &p.payload_header {
                if !is_header_name(h) || is_reserved_header(h) {
                    bad(format!("{key}.payload_header"), format!("{h:?} is not a usable header name"));
                }
            }
            if let Some(typ) = &p.typ {
                // RFC 6838 restricted-name characters, after the optional `application/`.
                let sub = media_subtype(typ);
                if sub.is_empty() || !sub.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b)) {
                    bad(format!("{key}.typ"), format!("{typ:?} is not a media type such as `at+jwt`"));
                }
            }
            if p.max_token_age.is_some_and(|age| age < std::time::Duration::from_secs(1)) {
                bad(format!("{key}.max_token_age"), "must be at least 1s".into());
            }
        }
        let r = &self.revocation;
        match r.backend {
            RevocationBackend::Memory => {
                if r.redis_url.is_some() {
                    bad("revocation.redis_url".into(), "set, but backend is `memory`".into());
                }
            }
            RevocationBackend::Redis => match &r.redis_url {
                None => bad("revocation.redis_url".into(), "required with backend `redis`".into()),
                Some(_) => match r.resolved_redis_url() {
                    Ok(Some(u)) => {
                        if let Err(why) = crate::revocation::redis::RedisTarget::parse(&u) {
                            bad("revocation.redis_url".into(), why.to_string());
                        }
                    }
                    Ok(None) => {}
                    Err(why) => bad("revocation.redis_url".into(), why),
                },
            },
        }
        if r.max_staleness.is_zero() {
            bad("revocation.max_staleness".into(), "must be more than 0".into());
        }
        if r.connect_timeout.is_zero() || r.command_timeout.is_zero() {
            bad("revocation.connect_timeout".into(), "timeouts must be more than 0".into());
        }
        if r.max_staleness < std::time::Duration::from_millis(200) {
            bad("revocation.max_staleness".into(), "must be at least 200ms".into());
        }
        if r.max_token_lifetime < std::time::Duration::from_secs(60) {
            bad("revocation.max_token_lifetime".into(), "must be at least 1m".into());
        }
        if self.admin.token_env.is_empty() {
            bad("admin.token_env".into(), "must name an environment variable".into());
        }
        if let Some(tls) = &self.grpc_tls {
            if let GrpcListen::Unix(_) = self.grpc_listen {
                bad(
                    "grpc_tls".into(),
                    "TLS is for a TCP grpc_listen; a Unix socket is already local to the pod".into(),
                );
            }
            if let Err(e) = crate::tls::server_config(tls) {
                bad(e.key().into(), e.to_string().trim_start_matches(e.key()).trim_start_matches(": ").into());
            }
        }
        if let Some(admin) = self.admin_listen {
            if admin.port() != 0 && (admin == self.http_listen || self.grpc_listen == GrpcListen::Tcp(admin)) {
                bad("admin_listen".into(), "must differ from http_listen and grpc_listen".into());
            }
        }
        if self.grpc_listen == GrpcListen::Tcp(self.http_listen) && self.http_listen.port() != 0 {
            bad("http_listen".into(), "must differ from grpc_listen".into());
        }
        if let Some(t) = &self.tracing {
            problems.extend(t.problems());
        }

        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError::Invalid { file: file.to_owned(), problems })
        }
    }
}

/// Lowercase RFC 7230 token characters: Envoy sends header names lowercased.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Headers an identity header must never replace.
fn is_reserved_header(name: &str) -> bool {
    name.starts_with(':')
        || matches!(name, "authorization" | "cookie" | "host" | "content-length" | "transfer-encoding")
        || name.starts_with("x-envoy-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(yaml, Path::new("test.yaml"))
    }

    const MINIMAL: &str = r#"
providers:
  - name: main
    issuer: https://issuer.example
    audiences: [orders]
    algorithms: [ES256]
    jwks: { uri: "http://127.0.0.1:8080/jwks.json" }
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.grpc_listen.to_string(), DEFAULT_GRPC_LISTEN);
        assert_eq!(c.sources, default_sources());
        let p = &c.providers[0];
        assert_eq!(p.leeway, DEFAULT_LEEWAY);
        assert_eq!(p.jwks.as_ref().unwrap().refresh_interval, DEFAULT_JWKS_REFRESH);
        assert_eq!(c.revocation.backend, RevocationBackend::Memory);
        assert_eq!(c.max_token_bytes, 8192);
    }

    #[test]
    fn grpc_listen_is_ip_port_or_a_unix_socket_with_a_hint_for_host_names() {
        let base = format!("{MINIMAL}grpc_listen: ");
        let c = parse(&format!("{base}unix:/run/hopauth/grpc.sock")).unwrap();
        assert_eq!(c.grpc_listen, GrpcListen::Unix("/run/hopauth/grpc.sock".into()));
        assert!(serde_yaml_ng::to_string(&c).unwrap().contains("grpc_listen: unix:/run/hopauth/grpc.sock"));
        let c = parse(&format!("{base}\"[::1]:9001\"")).unwrap();
        assert_eq!(c.grpc_listen.to_string(), "[::1]:9001");
        let error = parse(&format!("{base}localhost:9001")).unwrap_err().to_string();
        assert!(
            error.contains("grpc_listen") && error.contains("use e.g. 127.0.0.1:9001 or [::1]:9001 or unix:"),
            "{error}"
        );
        let error = parse(&format!("{base}unix:grpc.sock")).unwrap_err().to_string();
        assert!(error.contains("must be absolute"), "{error}");
    }

    #[test]
    fn durations_parse_in_human_form() {
        let c =
            parse(&MINIMAL.replace("jwks: { uri", "leeway: 10s\n    jwks: { refresh_interval: 2m, max_stale: 1h, uri"))
                .unwrap();
        let p = &c.providers[0];
        assert_eq!(p.leeway, Duration::from_secs(10));
        assert_eq!(p.jwks.as_ref().unwrap().refresh_interval, Duration::from_secs(120));
        let err = parse(&MINIMAL.replace("jwks: { uri", "leeway: soon\n    jwks: { uri")).unwrap_err();
        assert!(err.to_string().contains("invalid duration \"soon\""), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse(&format!("{MINIMAL}grpc_listn: 1.2.3.4:5\n")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("test.yaml:"), "{text}");
        assert!(text.contains("grpc_listn"), "{text}");
        let err = parse(&MINIMAL.replace("jwks: { uri", "jwks: { urii")).unwrap_err();
        assert!(err.to_string().contains("urii"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let yaml = r#"
sources: [{ cookie: a, prefix: "Bearer " }]
providers:
  - name: main
    issuer: https://issuer.example
    audiences: []
    algorithms: [HS256]
    jwks: { uri: "ftp://x", file: /nonexistent }
revocation: { backend: redis }
"#;
        let ConfigError::Invalid { problems, .. } = parse(yaml).unwrap_err() else {
            panic!("expected validation errors")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "sources[0].prefix",
            "providers[0].audiences",
            "providers[0].algorithms",
            "providers[0].jwks",
            "providers[0].jwks.uri",
            "providers[0].jwks.file",
            "revocation.redis_url",
        ] {
            assert!(keys.contains(&k), "missing {k} in {keys:?}");
        }
    }

    #[test]
    fn limits_and_readiness_have_defaults_and_bounds() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.verify_cache.max_bytes, DEFAULT_VERIFY_CACHE_BYTES);
        assert!(c.max_concurrent_verifies >= 1);
        assert!(!c.readiness.require_all_providers);
        let yaml = format!(
            "{MINIMAL}max_concurrent_verifies: 0\nverify_cache: {{ max_bytes: 1000 }}\nreadiness: {{ require_all_providers: true }}\n"
        );
        let ConfigError::Invalid { problems, .. } = parse(&yaml).unwrap_err() else { panic!("expected problems") };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["verify_cache.max_bytes", "max_concurrent_verifies"]);
        let err = parse(&format!("{MINIMAL}readiness: {{ all: true }}\n")).unwrap_err();
        assert!(err.to_string().contains("all"), "{err}");
    }

    #[test]
    fn alg_none_is_not_an_algorithm() {
        let err = parse(&MINIMAL.replace("[ES256]", "[none]")).unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
    }

    #[test]
    fn identity_headers_cannot_replace_authorization() {
        let err = parse(&MINIMAL.replace("jwks: { uri", "claims_to_headers: { sub: authorization }\n    jwks: { uri"))
            .unwrap_err();
        assert!(err.to_string().contains("providers[0].claims_to_headers.sub"), "{err}");
    }

    #[test]
    fn redis_url_takes_its_password_from_the_environment() {
        std::env::set_var("HOPAUTH_TEST_REDIS_PASSWORD", "s3cr3t-+");
        assert_eq!(expand_env("a${HOPAUTH_TEST_REDIS_PASSWORD}b").unwrap(), "as3cr3t-+b");
        assert_eq!(expand_env("no vars, $5 and $${literal}").unwrap(), "no vars, $5 and ${literal}");
        assert!(expand_env("${HOPAUTH_TEST_UNSET_VARIABLE}").unwrap_err().contains("HOPAUTH_TEST_UNSET_VARIABLE"));
        assert!(expand_env("${oops").is_err());
        assert!(expand_env("${a-b}").is_err());
        let yaml = format!(
            "{MINIMAL}revocation: {{ backend: redis, redis_url: \"redis://:${{HOPAUTH_TEST_REDIS_PASSWORD}}@127.0.0.1:6379/0\" }}\n"
        );
        let c = parse(&yaml).unwrap();
        assert_eq!(c.revocation.resolved_redis_url().unwrap().unwrap(), "redis://:s3cr3t-+@127.0.0.1:6379/0");
        assert!(!serde_yaml_ng::to_string(&c).unwrap().contains("s3cr3t"), "check-config prints the text as written");
        let unset = yaml.replace("HOPAUTH_TEST_REDIS_PASSWORD", "HOPAUTH_TEST_UNSET_VARIABLE");
        let err = parse(&unset).unwrap_err().to_string();
        assert!(err.contains("revocation.redis_url") && err.contains("HOPAUTH_TEST_UNSET_VARIABLE"), "{err}");
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
