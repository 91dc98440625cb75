//! A `Config` turned into a decision core and the background work it needs, for any host:
//! the sidecar (`server`) builds it with the ext_authz renderer and its metrics observer;
//! the Envoy module with its own. Nothing here listens or serves.

use std::sync::Arc;

use anyhow::Context;
use hopauth_core::alg::Alg;
use hopauth_core::authorizer::Authorizer;
use hopauth_core::keys::{KeySet, VerifyKey};
use hopauth_core::observe::Observer;
use hopauth_core::render::Renderer;
use hopauth_core::revocation::{MemoryStore, RevocationStore};
use hopauth_core::verify::{Provider, Verifier};
use hopauth_service::Background;

use crate::config::{Config, RevocationBackend};
use crate::jwks::{http_client, JwksRefresher};
use crate::metrics::{JwksMetrics, Metrics};
use crate::revocation::redis::{RedisSettings, RedisStore};
use crate::settings;

/// A decision core built from a config, and what keeps it current.
pub struct Core<R: Renderer, O: Observer> {
    pub authorizer: Arc<Authorizer<R, O>>,
    /// One per provider with a key document: each runs its refresh loop.
    pub jwks: Vec<Arc<JwksRefresher>>,
    /// The Redis store, whose sync loop must run (`None` for the memory backend).
    pub redis: Option<Arc<RedisStore>>,
    /// Each provider's key series, in the verifier's provider order (key age is the
    /// host's to publish, see `Core::publish_key_ages`).
    pub key_metrics: Vec<JwksMetrics>,
}

impl<R: Renderer, O: Observer> Core<R, O> {
    /// Spawns the key refresh loops and the revocation sync into `background`, on the
    /// current tokio runtime (call inside it).
    pub fn spawn_into(&self, background: &mut Background) {
        for refresher in &self.jwks {
            background.spawn_until_stopped(refresher.clone().run());
        }
        if let Some(store) = &self.redis {
            background.spawn_until_stopped(store.start());
        }
    }

    /// Sets each provider's `hopauth_jwks_key_age_seconds`.
    pub fn publish_key_ages(&self) {
        for (p, m) in self.authorizer.verifier().providers().iter().zip(&self.key_metrics) {
            m.key_age(p.keys.key_age());
        }
    }
}

/// A revocation store and, for Redis, the handle whose sync loop must run.
pub type Store = (Arc<dyn RevocationStore>, Option<Arc<RedisStore>>);

/// The configured revocation store; for Redis also the handle that runs its sync loop.
pub fn revocation_store(config: &Config, metrics: &Metrics) -> anyhow::Result<Store> {
    let r = &config.revocation;
    Ok(match r.backend {
        RevocationBackend::Memory => (Arc::new(MemoryStore::new(r.max_token_lifetime)), None),
        RevocationBackend::Redis => {
            let url = r
                .resolved_redis_url()
                .map_err(anyhow::Error::msg)
                .context("revocation.redis_url")?
                .context("revocation.redis_url is required with backend redis")?;
            let settings = RedisSettings::from(r);
            let store = Arc::new(
                RedisStore::new(&url, settings, metrics.revocation().clone()).context("revocation.redis_url")?,
            );
            (store.clone(), Some(store))
        }
    })
}

/// Builds the core `config` describes: key sets (secrets from the environment), their
/// refreshers, the revocation store, the verifier with `renderer`, the authorizer
/// reporting to `observer`. Starts nothing.
pub fn build<R: Renderer, O: Observer>(
    config: &Config,
    renderer: R,
    observer: O,
    metrics: &Metrics,
) -> anyhow::Result<Core<R, O>> {
    let store = revocation_store(config, metrics)?;
    build_with_store(config, renderer, observer, metrics, store)
}

/// [`build`] around a revocation store that already exists (a config reload keeps the
/// store, its view and its sync when the `revocation` section did not change).
pub fn build_with_store<R: Renderer, O: Observer>(
    config: &Config,
    renderer: R,
    observer: O,
    metrics: &Metrics,
    (store, redis): Store,
) -> anyhow::Result<Core<R, O>> {
    let client = http_client();
    let mut providers = Vec::new();
    let mut refreshers = Vec::new();
    let mut key_metrics = Vec::new();
    for p in &config.providers {
        let mut static_keys = Vec::new();
        if let Some(var) = &p.hmac_secret_env {
            let secret = std::env::var(var).with_context(|| format!("provider {}: ${var} is not set", p.name))?;
            static_keys.extend(
                p.algorithms.iter().filter(|a| a.is_hmac()).filter_map(|a| VerifyKey::hmac(*a, secret.as_bytes())),
            );
        }
        let (source, jwks) = settings::jwks_source(p);
        let public: Vec<Alg> = p.algorithms.iter().copied().filter(|a| !a.is_hmac()).collect();
        let fetched = !matches!(source, crate::jwks::JwksSource::None);
        let keys = Arc::new(KeySet::new(&p.name, public, fetched, settings::key_settings(&jwks), static_keys));
        let jwks_metrics = metrics.jwks(&p.name);
        if fetched {
            refreshers.push(Arc::new(JwksRefresher::new(
                keys.clone(),
                source,
                settings::fetch_settings(&jwks),
                client.clone(),
                jwks_metrics.clone(),
            )));
        }
        key_metrics.push(jwks_metrics);
        providers.push(Provider {
            name: p.name.as_str().into(),
            issuer: p.issuer.as_str().into(),
            audiences: p.audiences.clone(),
            algorithms: p.algorithms.clone(),
            leeway_secs: p.leeway.as_secs() as i64,
            claims_to_headers: settings::claims_to_headers(p),
            payload_header: p.payload_header.as_deref().map(Into::into),
            claims_to_metadata: p.claims_to_metadata.as_deref().map(Into::into),
            keys,
            profile: settings::token_profile(p),
        });
    }
    let verifier = Verifier::new(providers, settings::verifier_limits(config), renderer);
    let authorizer = Authorizer::new(
        settings::token_sources(config),
        verifier,
        store,
        settings::authorizer_settings(config),
        observer,
    );
    Ok(Core { authorizer: Arc::new(authorizer), jwks: refreshers, redis, key_metrics })
}
