//! Typed configuration: parsed from YAML, every unknown key an error, then validated; both
//! steps report every problem at once, each naming its key and the file. One module per
//! section, each with its defaults (`Default`, so a missing key takes the documented value)
//! and its own `validate`:
//! - `listeners`: `grpc_listen`, `grpc_tls`, `http_listen`, `admin_listen`;
//! - `sources`: where the token is looked for;
//! - `providers` and `jwks`: the trusted issuers and their keys;
//! - `revocation`: the revocation store;
//! - `limits`: `max_token_bytes`, `verify_cache`, `max_queue_delay`, `max_concurrent_verifies`;
//! - `admin`, `tracing`, and `readiness` (below).
//!
//! `secrets` expands `${VAR}`. Finding every problem of shape (`from_yaml`), collecting the
//! sections' problems (`Problems`), the duration forms (`30s`) and `redact_url` are
//! `hopauth_service::config_file`'s, shared with the issuer.

mod admin;
mod jwks;
mod limits;
mod listeners;
mod providers;
mod revocation;
mod secrets;
mod sources;
mod tracing;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::tls::GrpcTlsConfig;
pub use admin::{AdminConfig, DEFAULT_ADMIN_TOKEN_ENV};
pub use hopauth_core::verify::media_subtype;
pub(crate) use hopauth_service::config_file::{duration, optional_duration};
pub use hopauth_service::config_file::{redact_url, ConfigError, Problem, Problems};
pub use jwks::{
    JwksConfig, DEFAULT_JWKS_MAX_BYTES, DEFAULT_JWKS_MAX_STALE, DEFAULT_JWKS_REFRESH, DEFAULT_JWKS_TIMEOUT,
    DEFAULT_KID_REFETCH_INTERVAL, DEFAULT_KID_REFETCH_WAIT, MIN_KID_REFETCH_INTERVAL,
};
pub use limits::{
    default_max_concurrent_verifies, VerifyCacheConfig, DEFAULT_MAX_QUEUE_DELAY, DEFAULT_MAX_TOKEN_BYTES,
    DEFAULT_VERIFY_CACHE_BYTES, DEFAULT_VERIFY_CACHE_ENTRIES,
};
pub use listeners::{GrpcListen, DEFAULT_GRPC_LISTEN, DEFAULT_HTTP_LISTEN, UNIX_PREFIX};
pub use providers::{Provider, DEFAULT_LEEWAY};
pub use revocation::{
    FailureMode, RevocationBackend, RevocationConfig, DEFAULT_MAX_STALENESS, DEFAULT_MAX_TOKEN_LIFETIME,
    DEFAULT_REDIS_COMMAND_TIMEOUT, DEFAULT_REDIS_CONNECT_TIMEOUT,
};
pub use secrets::expand_env;
pub use sources::Source;
pub use tracing::{TracingConfig, DEFAULT_EXPORT_TIMEOUT, DEFAULT_SAMPLE_RATIO, DEFAULT_SERVICE_NAME};

/// The sidecar's config file. Every key may be left out except `providers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `IP:port` or `unix:/path` (see `GrpcListen`).
    pub grpc_listen: GrpcListen,
    /// TLS (optionally mTLS) on `grpc_listen`; TCP only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_tls: Option<GrpcTlsConfig>,
    pub http_listen: SocketAddr,
    /// `/admin/*` on its own listener (and no longer on `http_listen`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    /// Where the token is looked for, in order; one token at most per request.
    pub sources: Vec<Source>,
    pub providers: Vec<Provider>,
    pub revocation: RevocationConfig,
    pub admin: AdminConfig,
    pub max_token_bytes: usize,
    pub verify_cache: VerifyCacheConfig,
    /// A Check that waited longer than this gets 503 `overloaded` instead of a full
    /// verification; cache hits are still answered.
    #[serde(with = "duration")]
    pub max_queue_delay: Duration,
    /// Signature verifications (cache misses) running at once; more wait, within
    /// `max_queue_delay`, so a flood of expensive tokens cannot take every thread from cache
    /// hits. Default: the CPUs this process may use.
    pub max_concurrent_verifies: usize,
    pub readiness: ReadinessConfig,
    /// OpenTelemetry span export; absent → off (docs/configuration.md#tracing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
}

impl Default for Config {
    /// Every default, and no provider (which validation refuses).
    fn default() -> Self {
        Self {
            grpc_listen: GrpcListen::default(),
            grpc_tls: None,
            http_listen: listeners::default_http_listen(),
            admin_listen: None,
            sources: Source::defaults(),
            providers: Vec::new(),
            revocation: RevocationConfig::default(),
            admin: AdminConfig::default(),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            verify_cache: VerifyCacheConfig::default(),
            max_queue_delay: DEFAULT_MAX_QUEUE_DELAY,
            max_concurrent_verifies: default_max_concurrent_verifies(),
            readiness: ReadinessConfig::default(),
            tracing: None,
        }
    }
}

/// What `/readyz` and gRPC health require.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadinessConfig {
    /// Ready only when every provider has usable keys. The default (false) needs one: a dead
    /// JWKS of one issuer must not take the others down (its own tokens get 503).
    pub require_all_providers: bool,
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
        hopauth_service::config_file::from_yaml::<Config>(text, file)?.validate(file)
    }

    /// Checks everything serde cannot, section by section; collects every problem rather
    /// than stopping at one.
    pub fn validate(self, file: &Path) -> Result<Self, ConfigError> {
        let mut out = Problems::default();
        sources::validate(&self.sources, &mut out);
        limits::validate(&self, &mut out);
        providers::validate(&self.providers, &mut out);
        self.revocation.validate(&mut out);
        self.admin.validate(&mut out);
        listeners::validate(&self, &mut out);
        if let Some(t) = &self.tracing {
            t.validate(&mut out);
        }
        out.into_result(self, file)
    }
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
        assert_eq!(c.sources, Source::defaults());
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
    fn claims_to_metadata_lists_distinct_claim_names() {
        let with =
            |list: &str| MINIMAL.replace("jwks: { uri", &format!("claims_to_metadata: {list}\n    jwks: {{ uri"));
        assert_eq!(parse(MINIMAL).unwrap().providers[0].claims_to_metadata, None, "absent: every claim");
        let c = parse(&with("[sub, scope]")).unwrap();
        assert_eq!(c.providers[0].claims_to_metadata.as_deref(), Some(&["sub".to_string(), "scope".to_string()][..]));
        assert_eq!(parse(&with("[]")).unwrap().providers[0].claims_to_metadata.as_deref(), Some(&[][..]));
        let err = parse(&with("[sub, \"\"]")).unwrap_err().to_string();
        assert!(err.contains("providers[0].claims_to_metadata[1]") && err.contains("empty"), "{err}");
        let err = parse(&with("[sub, scope, sub]")).unwrap_err().to_string();
        assert!(err.contains("providers[0].claims_to_metadata[2]") && err.contains("twice"), "{err}");
        let err = parse(&with("sub")).unwrap_err().to_string();
        assert!(err.contains("claims_to_metadata"), "{err}");
    }

    #[test]
    fn redis_url_takes_its_password_from_the_environment() {
        std::env::set_var("HOPAUTH_TEST_REDIS_PASSWORD", "s3cr3t-+");
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

    fn problem_keys(yaml: &str) -> Vec<String> {
        match parse(yaml) {
            Err(ConfigError::Invalid { problems, .. }) => problems.into_iter().map(|p| p.key).collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn every_parse_problem_is_reported_with_its_own_key() {
        let yaml = r#"
grpc_listn: 1.2.3.4:5
max_token_bytes: lots
sources: [{ header: authorization, prefx: "Bearer " }]
providers:
  - name: main
    issuer: https://issuer.example
    audiences: [orders]
    algorithms: [ES256, none, RS256, HS1]
    leeway: soon
    jwks: { uri: "http://127.0.0.1:8080/jwks.json", refresh_interval: often, max_stale: 1h }
  - "not a provider"
  - name: other
    issuer: https://other.example
    audiences: [orders]
    algorithms: [ES256]
    jwks: { uri: "http://127.0.0.1:8080/jwks.json", timeout: 5 parsecs }
revocation: { backend: redis2, command_timeout: 1 fortnight }
grpc_tls: { key_file: /k.pem }
"#;
        assert_eq!(
            problem_keys(yaml),
            [
                "grpc_listn",
                "max_token_bytes",
                "sources[0].prefx",
                "providers[0].algorithms[1]",
                "providers[0].algorithms[3]",
                "providers[0].leeway",
                "providers[0].jwks.refresh_interval",
                "providers[1]",
                "providers[2].jwks.timeout",
                "revocation.backend",
                "revocation.command_timeout",
                "grpc_tls.cert_file",
            ]
        );
        let text = parse(yaml).unwrap_err().to_string();
        assert!(text.starts_with("test.yaml: 12 problem(s)"), "{text}");
        assert!(text.contains("test.yaml: grpc_listn: unknown field `grpc_listn`"), "{text}");
        assert!(text.contains("(line 2 column 1)"), "the first problem keeps its line: {text}");
        assert!(text.contains("providers[0].jwks.refresh_interval: invalid duration \"often\""), "{text}");
        assert!(text.contains("grpc_tls.cert_file: required"), "{text}");
    }

    #[test]
    fn required_keys_left_out_are_named() {
        assert_eq!(problem_keys("grpc_listen: 127.0.0.1:1\n"), ["providers"]);
        let keys = problem_keys("providers: [{ jwks: { uri: \"http://x/j\" } }]\n");
        assert_eq!(
            keys,
            ["providers[0].name", "providers[0].issuer", "providers[0].audiences", "providers[0].algorithms"]
        );
        assert!(matches!(parse("providers: [a\n"), Err(ConfigError::Parse { .. })), "not YAML: one syntax error");
        assert_eq!(problem_keys("- a list\n"), ["(top level)"]);
    }
}
