//! Start-up: turns a validated `Config` into running listeners (gRPC ext_authz + health,
//! HTTP side port) and background tasks, and shuts them down cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;

use hopauth_core::render::Renderer;
use hopauth_service::Background;

use crate::assemble::{self, Core};
use crate::config::{Config, GrpcListen};
use crate::grpc::{AuthorizationServer, AuthorizationService, SERVICE_NAME as AUTHZ_SERVICE_NAME};
use crate::http::{admin_router, public_router, router, HttpState};
use crate::listener::{GrpcListener, UnixSocket};
use crate::metrics::Metrics;
use crate::observer::SidecarObserver;
use crate::reload::{self, Reloader};
use crate::render::CheckResponses;
use crate::tls::Certificates;
use crate::SidecarAuthorizer;

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
    /// The core serving at start; after a reload, `reloader.live()` has the current one.
    pub authorizer: Arc<SidecarAuthorizer>,
    pub metrics: Metrics,
    pub background: Background,
    /// Swaps in a new core on `kill -HUP` (see `reload_on_hangup`) and owns the serving
    /// core's background work.
    pub reloader: Arc<Reloader>,
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

    /// Reloads the config from `path` on every SIGHUP. Without it SIGHUP's default action
    /// (or, with `grpc_tls`, only a certificate reload) applies.
    pub fn reload_on_hangup(&mut self, path: PathBuf) -> anyhow::Result<()> {
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        self.background.spawn_until_stopped(self.reloader.clone().on_hangup(hup, path));
        Ok(())
    }
}

/// The sidecar's core: the ext_authz renderer, metrics and (when configured) span export.
pub fn build_authorizer(config: &Config, metrics: &Metrics) -> anyhow::Result<Core<CheckResponses, SidecarObserver>> {
    build_observed(config, CheckResponses, metrics)
}

/// A core with the sidecar's observer (metrics and, when configured, span export) and the
/// host's `renderer`: the sidecar's [`build_authorizer`], or the Envoy module's own.
pub fn build_observed<R: Renderer>(
    config: &Config,
    renderer: R,
    metrics: &Metrics,
) -> anyhow::Result<Core<R, SidecarObserver>> {
    let tracer = config.tracing.as_ref().map(crate::trace::CheckTracer::start).transpose()?;
    let observer = SidecarObserver::new(metrics.checks().clone(), tracer);
    assemble::build(config, renderer, observer, metrics)
}

/// The start-up line: what runs, from which file, trusting whom.
pub fn log_start(path: &std::path::Path, config: &Config) {
    let providers: Vec<String> = config
        .providers
        .iter()
        .map(|p| {
            let jwks = match &p.jwks {
                Some(j) if j.uri.is_some() => "uri",
                Some(j) if j.file.is_some() => "file",
                Some(_) => "discovery",
                None => "none (HMAC only)",
            };
            format!("{} (issuer {}, jwks {jwks})", p.name, p.issuer)
        })
        .collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %path.display(),
        providers = %providers.join(", "),
        revocation = ?config.revocation.backend,
        tracing = config.tracing.is_some(),
        "hopauth starting"
    );
}

/// Binds both listeners and starts serving. Ports may be 0 (tests).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).context("registering metrics")?;
    let core = build_authorizer(&config, &metrics)?;
    let authorizer = core.authorizer.clone();
    if reload::admin_token(&config).is_none() {
        tracing::warn!(env = %config.admin.token_env, "admin token not set: /admin/* answers 401");
    }

    let grpc_listener = GrpcListener::bind(&config.grpc_listen).await?;
    let certificates = config.grpc_tls.as_ref().map(|tls| Certificates::load(tls, &metrics)).transpose()?;
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

    let reloader = Reloader::start(config, core, metrics.clone());
    let live = reloader.live().clone();
    {
        // On the way out: the Checks in flight finish with their keys still refreshed,
        // then the refreshers and the sync stop and buffered spans are exported.
        let stop = background.stop_signal();
        let reloader = reloader.clone();
        background.spawn(async move {
            stop.await;
            reloader.shutdown().await;
        });
    }

    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::NotServing).await;
    reporter.set_service_status(AUTHZ_SERVICE_NAME, ServingStatus::NotServing).await;
    {
        let metrics = metrics.clone();
        let live = live.clone();
        background.spawn_until_stopped(async move {
            let mut was_ready = None;
            loop {
                let serving = live.current();
                let core = &serving.core;
                let authorizer = &core.authorizer;
                let ready = authorizer.ready();
                let store = authorizer.revocation();
                metrics.revocation().store_up(store.ready());
                metrics.revocation().entries(store.entries());
                metrics.checks().cache_usage(authorizer.verifier().cache_usage());
                core.publish_key_ages();
                if let Some(age) = store.sync_age() {
                    metrics.revocation().sync_age(age);
                }
                if was_ready != Some(ready) {
                    let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
                    reporter.set_service_status("", status).await;
                    reporter.set_service_status(AUTHZ_SERVICE_NAME, status).await;
                    tracing::info!(ready, "readiness changed");
                    was_ready = Some(ready);
                }
                drop(serving);
                tokio::time::sleep(READINESS_POLL).await;
            }
        });
    }

    let service = AuthorizationService::serving(live.clone());
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

    let state = HttpState { live, metrics: metrics.clone(), admin_failures: Default::default() };
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
    Ok(Running { grpc_addr, grpc_listen, http_addr, admin_addr, authorizer, metrics, background, reloader })
}
