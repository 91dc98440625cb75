//! The reference authentication service (`hopauth issuer`): password login, rotating
//! refresh tokens with reuse detection, RFC 7009 revocation and logout written through the
//! shared revocation layout, a JWKS with safe key rotation, and OIDC discovery.
//! See docs/issuer.md.
//!
//! - [`config`]: `IssuerConfig`, validated like the sidecar's.
//! - [`users`]: the users file and constant-time password checks (argon2id).
//! - [`throttle`]: token-bucket limits per user, client address and refresh family.
//! - [`keys`]: signing keys on disk, next/active/retiring, rotation.
//! - [`refresh`]: the refresh token store (memory, Redis).
//! - [`revocation`]: revocations written in the core's Redis layout (or in memory).
//! - [`tokens`]: the grants, revocation and logout, as plain functions.
//! - [`http`]: the axum routes.
//! - [`metrics`]: `hopauth_issuer_*` metrics.

pub mod config;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod refresh;
pub mod revocation;
pub mod throttle;
pub mod tokens;
pub mod users;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use self::config::{IssuerConfig, StoreBackend};
use self::http::IssuerState;
use self::keys::{KeyStatus, KeyStore};
use self::metrics::IssuerMetrics;
use self::refresh::{MemoryRefreshStore, RedisRefreshStore, RefreshStore};
use self::tokens::TokenService;
use self::users::UserDb;
use hopauth_core::clock::unix_now;
use hopauth_core::revocation::MemoryStore;
use hopauth_service::Background;

use self::revocation::{RedisRevocations, RevocationWriter};

/// How often the refresh store is pinged for `/readyz` and `hopauth_issuer_store_up`.
const STORE_POLL: Duration = Duration::from_secs(1);

/// A running issuer; `shutdown` stops it.
pub struct Running {
    /// Public endpoints (token, revoke, logout, JWKS, discovery).
    pub addr: SocketAddr,
    /// Metrics and health.
    pub admin_addr: SocketAddr,
    pub service: Arc<TokenService>,
    pub background: Background,
}

impl Running {
    pub async fn shutdown(self) {
        self.background.shutdown().await
    }

    pub async fn stopped(&self) {
        self.background.stopped().await
    }
}

/// `hopauth issuer rotate-keys`: one rotation of the keys in `keys.dir`. A running issuer
/// picks it up within `keys.reload_interval`.
pub fn rotate_keys(config: &IssuerConfig) -> Result<keys::Rotation, keys::KeyError> {
    keys::rotate(&config.keys.dir, config.keys.algorithm, config.key_retention(), unix_now())
}

/// The store for refresh tokens and the revocation writer, per `store`.
fn stores(config: &IssuerConfig) -> anyhow::Result<(Arc<dyn RefreshStore>, Arc<dyn RevocationWriter>)> {
    // A subject revocation must outlive every token issued before it, leeway included.
    let lifetime = config.access_token_lifetime + config.leeway;
    let s = &config.store;
    Ok(match s.backend {
        StoreBackend::Memory => {
            tracing::warn!(
                "store.backend is memory: refresh tokens are lost on restart, and revocations do not \
                 reach any hopauth sidecar; use redis"
            );
            (Arc::new(MemoryRefreshStore::new()), Arc::new(MemoryStore::new(lifetime)))
        }
        StoreBackend::Redis => {
            let url = s.redis_url.as_deref().context("store.redis_url is required with backend redis")?;
            let refresh =
                Arc::new(RedisRefreshStore::new(url, s.connect_timeout, s.command_timeout).context("store.redis_url")?);
            let revocation = RedisRevocations::new(refresh.clone(), lifetime);
            (refresh, Arc::new(revocation))
        }
    })
}

fn publish_key_counts(service: &TokenService) {
    let set = service.keys().current();
    for status in [KeyStatus::Next, KeyStatus::Active, KeyStatus::Retiring] {
        service.metrics().set_signing_keys(status.as_str(), set.count(status));
    }
}

/// Binds `listen` and `admin_listen` (ports may be 0) and serves.
pub async fn start(config: IssuerConfig) -> anyhow::Result<Running> {
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("listen: cannot bind {}", config.listen))?;
    start_with_listener(config, listener).await
}

/// Serves the public endpoints on `listener` (tests bind it first, to know the issuer URL).
pub async fn start_with_listener(config: IssuerConfig, listener: TcpListener) -> anyhow::Result<Running> {
    let registry = prometheus::Registry::new();
    let metrics = IssuerMetrics::register(&registry).context("registering metrics")?;
    let users = Arc::new(UserDb::load(&config.users_file)?);
    if users.is_empty() {
        tracing::warn!(file = %config.users_file.display(), "no users: every login fails");
    }
    let keys = Arc::new(
        KeyStore::open(&config.keys.dir, config.keys.algorithm, config.key_retention(), unix_now())
            .context("keys.dir")?,
    );
    let (refresh, revocation) = stores(&config)?;
    let service = Arc::new(TokenService::new(&config, users, keys.clone(), refresh.clone(), revocation, metrics));
    publish_key_counts(&service);

    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("admin_listen: cannot bind {}", config.admin_listen))?;
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let mut background = Background::new();

    // Key reload: how `rotate-keys` (or a new retiring deadline) reaches a running issuer.
    {
        let service = service.clone();
        let every = config.keys.reload_interval;
        background.spawn_until_stopped(async move {
            loop {
                tokio::time::sleep(every).await;
                match service.keys().reload(unix_now()) {
                    Ok(false) => {}
                    Ok(true) => {
                        service.metrics().record_key_reload(true);
                        publish_key_counts(&service);
                    }
                    Err(error) => {
                        service.metrics().record_key_reload(false);
                        tracing::error!(%error, "cannot reload the signing keys; keeping the current ones");
                    }
                }
            }
        });
    }

    let store_ready = Arc::new(AtomicBool::new(false));
    {
        let (service, ready) = (service.clone(), store_ready.clone());
        background.spawn_until_stopped(async move {
            let mut was = None;
            loop {
                let up = service.refresh_store().ping().await;
                ready.store(up, Ordering::Release);
                service.metrics().store_up.set(i64::from(up));
                if was != Some(up) {
                    tracing::info!(ready = up, backend = service.refresh_store().backend(), "store readiness");
                    was = Some(up);
                }
                tokio::time::sleep(STORE_POLL).await;
            }
        });
    }

    let state = IssuerState { service: service.clone(), jwks_max_age: config.keys.jwks_max_age, store_ready };
    let public = http::public_router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, public).with_graceful_shutdown(background.stop_signal());
    background.spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "issuer HTTP server stopped");
        }
    });
    let admin = axum::serve(admin_listener, http::admin_router(state)).with_graceful_shutdown(background.stop_signal());
    background.spawn(async move {
        if let Err(error) = admin.await {
            tracing::error!(%error, "issuer admin server stopped");
        }
    });

    tracing::info!(%addr, %admin_addr, issuer = %config.issuer, "hopauth issuer serving");
    Ok(Running { addr, admin_addr, service, background })
}
