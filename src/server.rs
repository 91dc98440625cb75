//! Start-up: turns a validated `Config` into running listeners (gRPC ext_authz + health,
//! HTTP side port) and background tasks, and shuts them down cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;

use crate::alg::Alg;
use crate::authorizer::{Authorizer, AuthorizerSettings};
use crate::background::Background;
use crate::config::{Config, RevocationBackend};
use crate::grpc::{AuthorizationServer, AuthorizationService, SERVICE_NAME as AUTHZ_SERVICE_NAME};
use crate::http::{router, HttpState};
use crate::jwks::{http_client, JwksCache, JwksSettings, JwksSource, KeyRejection, VerifyKey};
use crate::metrics::Metrics;
use crate::revocation::redis::{RedisSettings, RedisStore};
use crate::revocation::{MemoryStore, RevocationStore};
use crate::token::TokenSource;
use crate::verify::{Provider, TokenProfile, Verifier, VerifierLimits};

/// How often readiness is re-evaluated for grpc.health.v1 and the store gauge.
const READINESS_POLL: Duration = Duration::from_millis(100);

/// A running hopauth; dropping it does not stop it, `shutdown` does.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub authorizer: Arc<Authorizer>,
    pub metrics: Metrics,
    pub background: Background,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, and ends background tasks.
    pub async fn shutdown(self) {
        self.background.shutdown().await
    }

    /// Resolves when a stop was requested.
    pub async fn stopped(&self) {
        self.background.stopped().await
    }
}

/// What `build_authorizer` returns: the authorizer and the background work it needs.
pub struct Built {
    pub authorizer: Arc<Authorizer>,
    pub jwks: Vec<Arc<JwksCache>>,
    pub redis: Option<Arc<RedisStore>>,
}

/// A Redis-backed store, whose sync loop the server runs.
type SyncedStore = Arc<RedisStore>;

/// The configured revocation store; for Redis also the handle that runs its sync loop.
pub fn revocation_store(
    config: &Config,
    metrics: &Metrics,
) -> anyhow::Result<(Arc<dyn RevocationStore>, Option<SyncedStore>)> {
    let r = &config.revocation;
    Ok(match r.backend {
        RevocationBackend::Memory => (Arc::new(MemoryStore::new(r.max_token_lifetime)), None),
        RevocationBackend::Redis => {
            let url = r
                .resolved_redis_url()
                .map_err(anyhow::Error::msg)
                .context("revocation.redis_url")?
                .context("revocation.redis_url is required with backend redis")?;
            let settings = RedisSettings {
                max_staleness: r.max_staleness,
                max_token_lifetime: r.max_token_lifetime,
                connect_timeout: r.connect_timeout,
                command_timeout: r.command_timeout,
            };
            let store = Arc::new(RedisStore::new(&url, settings, metrics.clone()).context("revocation.redis_url")?);
            (store.clone(), Some(store))
        }
    })
}

pub fn build_authorizer(config: &Config, metrics: &Metrics) -> anyhow::Result<Built> {
    let client = http_client();
    let mut providers = Vec::new();
    let mut caches = Vec::new();
    for p in &config.providers {
        let mut static_keys = Vec::new();
        if let Some(var) = &p.hmac_secret_env {
            let secret = std::env::var(var).with_context(|| format!("provider {}: ${var} is not set", p.name))?;
            static_keys.extend(
                p.algorithms.iter().filter(|a| a.is_hmac()).filter_map(|a| VerifyKey::hmac(*a, secret.as_bytes())),
            );
        }
        let (source, settings) = match &p.jwks {
            Some(j) => {
                let source = if let Some(uri) = &j.uri {
                    JwksSource::Uri(uri.clone())
                } else if let Some(file) = &j.file {
                    JwksSource::File(file.clone())
                } else {
                    JwksSource::Discovery { issuer: p.issuer.clone() }
                };
                (source, JwksSettings::from(j))
            }
            None => (JwksSource::None, JwksSettings::from(&default_jwks_config())),
        };
        let public: Vec<Alg> = p.algorithms.iter().copied().filter(|a| !a.is_hmac()).collect();
        let cache =
            Arc::new(JwksCache::new(&p.name, public, source, settings, static_keys, client.clone(), metrics.clone()));
        let reasons = KeyRejection::ALL.map(KeyRejection::as_str);
        metrics.register_provider(&p.name, &reasons);
        caches.push(cache.clone());
        providers.push(Provider {
            name: p.name.as_str().into(),
            issuer: p.issuer.as_str().into(),
            audiences: p.audiences.clone(),
            algorithms: p.algorithms.clone(),
            leeway_secs: p.leeway.as_secs() as i64,
            claims_to_headers: p.claims_to_headers.iter().map(|(c, h)| (c.clone(), h.as_str().into())).collect(),
            payload_header: p.payload_header.as_deref().map(Into::into),
            keys: cache,
            profile: TokenProfile::from_config(p),
        });
    }
    let (store, redis_store) = revocation_store(config, metrics)?;
    let limits = VerifierLimits {
        cache_max_entries: config.verify_cache.max_entries,
        cache_max_bytes: config.verify_cache.max_bytes,
        max_concurrent_verifies: config.max_concurrent_verifies,
    };
    let verifier = Verifier::new(providers, limits, metrics.clone());
    let sources = config.sources.iter().map(TokenSource::from_config).collect();
    let settings = AuthorizerSettings {
        max_token_bytes: config.max_token_bytes,
        failure_mode: config.revocation.failure_mode,
        max_queue_delay: config.max_queue_delay,
        require_all_providers: config.readiness.require_all_providers,
    };
    let authorizer = Authorizer::new(sources, verifier, store, settings, metrics.clone());
    Ok(Built { authorizer: Arc::new(authorizer), jwks: caches, redis: redis_store })
}

fn default_jwks_config() -> crate::config::JwksConfig {
    serde_yaml_ng::from_str("discovery: false").expect("defaults parse")
}

/// Binds both listeners and starts serving. Ports may be 0 (tests).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).context("registering metrics")?;
    let Built { authorizer, jwks: caches, redis: redis_store } = build_authorizer(&config, &metrics)?;
    let admin_token = std::env::var(&config.admin.token_env).ok().filter(|t| !t.is_empty()).map(Arc::from);
    if admin_token.is_none() {
        tracing::warn!(env = %config.admin.token_env, "admin token not set: /admin/* answers 401");
    }

    let grpc_listener = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("grpc_listen: cannot bind {}", config.grpc_listen))?;
    let http_listener = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("http_listen: cannot bind {}", config.http_listen))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let mut background = Background::new();

    for cache in caches {
        background.spawn_until_stopped(cache.run());
    }

    if let Some(store) = redis_store {
        background.spawn_until_stopped(store.start());
    }

    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::NotServing).await;
    reporter.set_service_status(AUTHZ_SERVICE_NAME, ServingStatus::NotServing).await;
    {
        let authorizer = authorizer.clone();
        let metrics = metrics.clone();
        background.spawn_until_stopped(async move {
            let mut was_ready = None;
            loop {
                let ready = authorizer.ready();
                let store = authorizer.revocation();
                metrics.revocation_store_up.set(i64::from(store.ready()));
                let (jtis, subjects) = store.entries();
                metrics.revocation_entries.with_label_values(&["jti"]).set(jtis as i64);
                metrics.revocation_entries.with_label_values(&["subject"]).set(subjects as i64);
                metrics.record_verify_cache(authorizer.verifier().cache_usage());
                for p in authorizer.verifier().providers() {
                    metrics.record_jwks_key_age(&p.name, p.keys.key_age());
                }
                if let Some(age) = store.sync_age() {
                    metrics.revocation_sync_age.set(age.as_secs_f64());
                }
                if was_ready != Some(ready) {
                    let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
                    reporter.set_service_status("", status).await;
                    reporter.set_service_status(AUTHZ_SERVICE_NAME, status).await;
                    tracing::info!(ready, "readiness changed");
                    was_ready = Some(ready);
                }
                tokio::time::sleep(READINESS_POLL).await;
            }
        });
    }

    let service = AuthorizationService::new(authorizer.clone());
    let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(AuthorizationServer::new(service))
        .serve_with_incoming_shutdown(incoming, background.stop_signal());
    background.spawn(async move {
        if let Err(error) = grpc.await {
            tracing::error!(%error, "gRPC server stopped");
        }
    });

    let app = router(HttpState {
        authorizer: authorizer.clone(),
        metrics: metrics.clone(),
        admin_token,
        admin_failures: Default::default(),
    });
    let http = axum::serve(http_listener, app).with_graceful_shutdown(background.stop_signal());
    background.spawn(async move {
        if let Err(error) = http.await {
            tracing::error!(%error, "HTTP server stopped");
        }
    });

    tracing::info!(%grpc_addr, %http_addr, "hopauth serving");
    Ok(Running { grpc_addr, http_addr, authorizer, metrics, background })
}
