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
use crate::config::{Config, GrpcListen, RevocationBackend};
use crate::grpc::{AuthorizationServer, AuthorizationService, SERVICE_NAME as AUTHZ_SERVICE_NAME};
use crate::http::{admin_router, public_router, router, HttpState};
use crate::jwks::{http_client, JwksCache, JwksSettings, JwksSource, KeyRejection, VerifyKey};
use crate::listener::{GrpcListener, UnixSocket};
use crate::metrics::Metrics;
use crate::revocation::redis::{RedisSettings, RedisStore};
use crate::revocation::{MemoryStore, RevocationStore};
use crate::tls::Certificates;
use crate::token::TokenSource;
use crate::verify::{Provider, TokenProfile, Verifier, VerifierLimits};

/// How often readiness is re-evaluated for grpc.health.v1 and the store gauge.
const READINESS_POLL: Duration = Duration::from_millis(100);

/// A running hopauth; dropping it does not stop it, `shutdown` does.
pub struct Running {
    /// The gRPC TCP address; `0.0.0.0:0` when `grpc_listen` is a Unix socket.
    pub grpc_addr: SocketAddr,
    /// What the gRPC listener bound (TCP with the real port, or the socket path).
    pub grpc_listen: GrpcListen,
    pub http_addr: SocketAddr,
    /// Where `/admin/*` is served when `admin_listen` is set (else on `http_addr`).
    pub admin_addr: Option<SocketAddr>,
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
    let tracer = config.tracing.as_ref().map(crate::trace::CheckTracer::start).transpose()?;
    let authorizer = Authorizer::new(sources, verifier, store, settings, metrics.clone()).with_tracer(tracer);
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

    let grpc_listener = GrpcListener::bind(&config.grpc_listen).await?;
    let certificates = config.grpc_tls.as_ref().map(Certificates::load).transpose()?;
    let http_listener = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("http_listen: cannot bind {}", config.http_listen))?;
    let admin_listener = match config.admin_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("admin_listen: cannot bind {addr}"))?),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().map(TcpListener::local_addr).transpose()?;
    let grpc_addr = grpc_listener.tcp_addr()?;
    let grpc_listen = grpc_listener.local()?;
    let http_addr = http_listener.local_addr()?;

    let mut background = Background::new();
    if let Some(certificates) = &certificates {
        background.spawn_until_stopped(certificates.clone().watch());
    }

    for cache in caches {
        background.spawn_until_stopped(cache.run());
    }

    if let Some(store) = redis_store {
        background.spawn_until_stopped(store.start());
    }

    if let Some(tracer) = authorizer.tracer().cloned() {
        // Export the buffered spans on the way out (the SDK's shutdown blocks).
        let stop = background.stop_signal();
        background.spawn(async move {
            stop.await;
            let _ = tokio::task::spawn_blocking(move || tracer.shutdown()).await;
        });
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
    let routes = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(AuthorizationServer::new(service));
    let stop = background.stop_signal();
    background.spawn(async move {
        let result = match (grpc_listener, certificates) {
            (GrpcListener::Tcp(l), Some(certificates)) => {
                routes.serve_with_incoming_shutdown(certificates.incoming(l), stop).await
            }
            (GrpcListener::Tcp(l), None) => {
                let incoming = tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
                routes.serve_with_incoming_shutdown(incoming, stop).await
            }
            (GrpcListener::Unix(UnixSocket { listener, path }), _) => {
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                let result = routes.serve_with_incoming_shutdown(incoming, stop).await;
                UnixSocket::remove(&path);
                result
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "gRPC server stopped");
        }
    });

    let state = HttpState {
        authorizer: authorizer.clone(),
        metrics: metrics.clone(),
        admin_token,
        admin_failures: Default::default(),
    };
    // With the peer address: the admin audit lines name who called.
    let app = match admin_listener {
        Some(listener) => {
            let admin =
                axum::serve(listener, admin_router(state.clone()).into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(background.stop_signal());
            background.spawn(async move {
                if let Err(error) = admin.await {
                    tracing::error!(%error, "admin HTTP server stopped");
                }
            });
            public_router(state)
        }
        None => router(state),
    };
    let http = axum::serve(http_listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(background.stop_signal());
    background.spawn(async move {
        if let Err(error) = http.await {
            tracing::error!(%error, "HTTP server stopped");
        }
    });

    tracing::info!(%grpc_listen, %http_addr, admin_addr = ?admin_addr, "hopauth serving");
    Ok(Running { grpc_addr, grpc_listen, http_addr, admin_addr, authorizer, metrics, background })
}
