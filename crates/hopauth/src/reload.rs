//! `kill -HUP`: the config file read again and, when valid, a new decision core swapped in
//! while Checks keep flowing. A Check in flight finishes on the core it started with (see
//! `live`); the old core's JWKS refreshers (and a replaced Redis sync) stop once its last
//! Check is done. An invalid file, or one whose core cannot get ready, is refused with a log
//! line saying why (naming the key) and the old config keeps serving. Listener settings are
//! bound once: a changed one is logged and needs a restart.
//!
//! Kept warm across a reload: the revocation store (its view and its Redis sync) when the
//! `revocation` section is unchanged (the memory backend always, since its entries exist
//! nowhere else), and the span exporter when `tracing` is unchanged. Rebuilt: the verifier
//! and its verified-token cache, the key sets (fetched again before the swap), the token
//! sources and every other setting. The metric series of a provider the new config no
//! longer has are removed (and those of a provider only a refused file had).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hopauth_service::Background;

use crate::assemble::{self, Store};
use crate::config::{Config, RevocationBackend};
use crate::live::{Live, Serving, SidecarCore};
use crate::metrics::Metrics;
use crate::observer::SidecarObserver;
use crate::render::CheckResponses;
use crate::trace::CheckTracer;

/// How long a new core may take to get the keys (and store sync) the old one had.
pub const WARM_UP: Duration = Duration::from_secs(10);
/// How long Checks in flight on a replaced core may take before its refreshers stop.
pub const RETIRE_WAIT: Duration = Duration::from_secs(4);
/// How often readiness is looked at while waiting.
const POLL: Duration = Duration::from_millis(20);

/// Owns the serving core's background work and swaps in new cores.
pub struct Reloader {
    live: Live,
    metrics: Metrics,
    state: tokio::sync::Mutex<State>,
}

struct State {
    config: Config,
    /// The serving core's JWKS refresh loops.
    refresh: Background,
    /// The Redis sync of the serving store, kept with the store.
    sync: Option<Background>,
}

/// The admin token `config` names, if its variable is set and not empty.
pub fn admin_token(config: &Config) -> Option<Arc<str>> {
    std::env::var(&config.admin.token_env).ok().filter(|t| !t.is_empty()).map(Arc::from)
}

impl Reloader {
    /// Starts `core`'s background work (call inside the runtime) and serves it.
    pub fn start(config: Config, core: SidecarCore, metrics: Metrics) -> Arc<Self> {
        let (refresh, sync) = spawn_work(&core, true);
        let live = Live::new(Serving::new(core, admin_token(&config)));
        Arc::new(Reloader { live, metrics, state: tokio::sync::Mutex::new(State { config, refresh, sync }) })
    }

    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Reloads from `path` on every SIGHUP (a signal stream made by the caller, so the
    /// handler is in place before the process is ready).
    pub async fn on_hangup(self: Arc<Self>, mut hup: tokio::signal::unix::Signal, path: PathBuf) {
        while hup.recv().await.is_some() {
            tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
            let _ = self.reload(&path).await;
        }
    }

    /// Reads `path` and swaps in its core; counts and logs the result either way.
    pub async fn reload(&self, path: &Path) -> Result<(), String> {
        let result = self.try_reload(path).await;
        self.metrics.config_reload(result.is_ok());
        match &result {
            Ok(kept) => tracing::info!(config = %path.display(), kept = %kept, "config reloaded"),
            Err(why) => tracing::error!(
                config = %path.display(),
                error = %why,
                "config reload refused; the old config keeps serving"
            ),
        }
        result.map(|_| ())
    }

    /// What was kept warm, or why the new config was refused.
    async fn try_reload(&self, path: &Path) -> Result<String, String> {
        // One log line: the problems, each naming its key, joined on it.
        let next = Config::load(path).map_err(|e| e.to_string().replace("\n  ", "; "))?;
        let mut state = self.state.lock().await;
        let unapplied = listener_changes(&state.config, &next);
        if !unapplied.is_empty() {
            tracing::warn!(
                keys = ?unapplied,
                "config reload: listener settings are not reloaded (the old ones stay bound); restart hopauth to apply them"
            );
        }
        let current = self.live.current();
        let keep_store = keeps_store(&state.config, &next);
        let store: Store = if keep_store {
            (current.authorizer().revocation().clone(), current.core.redis.clone())
        } else {
            assemble::revocation_store(&next, &self.metrics).map_err(|e| format!("{e:#}"))?
        };
        let keep_tracer = same(&state.config.tracing, &next.tracing);
        let tracer = if keep_tracer {
            current.authorizer().observer().tracer().cloned()
        } else {
            next.tracing.as_ref().map(CheckTracer::start).transpose().map_err(|e| format!("tracing: {e}"))?
        };
        let observer = SidecarObserver::new(self.metrics.checks().clone(), tracer.clone());
        let core = match assemble::build_with_store(&next, CheckResponses, observer, &self.metrics, store) {
            Ok(core) => core,
            Err(e) => {
                self.forget(removed_providers(&next, &state.config));
                stop_tracer(tracer.filter(|_| !keep_tracer)).await;
                return Err(format!("{e:#}"));
            }
        };
        let (refresh, sync) = spawn_work(&core, !keep_store);
        if let Err(missing) = warm_up(&current, &core).await {
            refresh.shutdown().await;
            if let Some(sync) = sync {
                sync.shutdown().await;
            }
            self.forget(removed_providers(&next, &state.config));
            stop_tracer(tracer.filter(|_| !keep_tracer)).await;
            return Err(format!("the new config did not get ready within {WARM_UP:?}: {missing}"));
        }
        if keep_store && state.config.revocation.max_token_lifetime != next.revocation.max_token_lifetime {
            tracing::warn!(
                "config reload: revocation.max_token_lifetime of the memory backend applies from the next restart \
                 (its revocations exist only in this process, so the store is kept)"
            );
        }
        if state.config.revocation.backend == RevocationBackend::Memory && !keep_store {
            tracing::warn!("config reload: the memory backend's revocations were dropped with it");
        }
        let old = self.live.swap(Serving::new(core, admin_token(&next)));
        let old_refresh = std::mem::replace(&mut state.refresh, refresh);
        let old_sync = if keep_store { None } else { std::mem::replace(&mut state.sync, sync) };
        let old_tracer = if keep_tracer { None } else { old.authorizer().observer().tracer().cloned() };
        self.forget(removed_providers(&state.config, &next));
        state.config = next;
        drop(current);
        tokio::spawn(retire(old, old_refresh, old_sync, old_tracer));
        let mut kept = vec![if keep_store { "revocation store" } else { "-revocation store" }];
        kept.push(if keep_tracer { "span exporter" } else { "-span exporter" });
        Ok(kept.into_iter().filter(|k| !k.starts_with('-')).collect::<Vec<_>>().join(", "))
    }

    /// Removes the metric series of `providers`: dropped by an applied reload, or only in a
    /// refused file (building its core made their series).
    fn forget(&self, providers: Vec<&str>) {
        for name in providers {
            self.metrics.forget_provider(name);
        }
    }

    /// SIGTERM: lets the Checks in flight finish on the serving core (bounded), then stops
    /// its background work and flushes spans. The listeners stop accepting on their own.
    pub async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        let current = self.live.current();
        // `live` holds one reference and `current` another: more are Checks in flight.
        wait_for_callers(&current, 2, RETIRE_WAIT).await;
        std::mem::take(&mut state.refresh).shutdown().await;
        if let Some(sync) = state.sync.take() {
            sync.shutdown().await;
        }
        stop_tracer(current.authorizer().observer().tracer().cloned()).await;
    }
}

/// Spawns `core`'s refresh loops, and its Redis sync when `with_sync`, each set in its own
/// `Background` so they can be stopped apart.
fn spawn_work(core: &SidecarCore, with_sync: bool) -> (Background, Option<Background>) {
    let mut refresh = Background::new();
    for refresher in &core.jwks {
        refresh.spawn_until_stopped(refresher.clone().run());
    }
    let sync = core.redis.as_ref().filter(|_| with_sync).map(|store| {
        let mut sync = Background::new();
        sync.spawn_until_stopped(store.start());
        sync
    });
    (refresh, sync)
}

/// Waits until `next` has what `current` has: keys for every provider the current core can
/// verify (by name), and readiness if the current core is ready. What the current core
/// lacks is not waited for (one issuer's dead JWKS must not block every reload).
async fn warm_up(current: &Serving, next: &SidecarCore) -> Result<(), String> {
    let before = current.authorizer();
    let was_ready = before.ready();
    let usable: Vec<&str> =
        before.verifier().providers().iter().filter(|p| p.keys.usable()).map(|p| &*p.name).collect();
    let end = tokio::time::Instant::now() + WARM_UP;
    loop {
        let after = &next.authorizer;
        let missing: Vec<&str> = after
            .verifier()
            .providers()
            .iter()
            .filter(|p| usable.contains(&&*p.name) && !p.keys.usable())
            .map(|p| &*p.name)
            .collect();
        let ready = !was_ready || after.ready();
        if missing.is_empty() && ready {
            return Ok(());
        }
        if tokio::time::Instant::now() >= end {
            return Err(if missing.is_empty() {
                "not ready (revocation store not synced?)".to_string()
            } else {
                format!("no usable keys for provider(s) {}", missing.join(", "))
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A replaced core: its Checks in flight finish (bounded), then its work stops.
async fn retire(old: Arc<Serving>, refresh: Background, sync: Option<Background>, tracer: Option<CheckTracer>) {
    wait_for_callers(&old, 1, RETIRE_WAIT).await;
    refresh.shutdown().await;
    if let Some(sync) = sync {
        sync.shutdown().await;
    }
    stop_tracer(tracer).await;
}

/// Waits until at most `expected` references to `serving` remain, or `within` passes.
async fn wait_for_callers(serving: &Arc<Serving>, expected: usize, within: Duration) {
    let end = tokio::time::Instant::now() + within;
    while Arc::strong_count(serving) > expected && tokio::time::Instant::now() < end {
        tokio::time::sleep(POLL).await;
    }
}

/// Exports what a dropped span exporter still buffers (the SDK's shutdown blocks).
async fn stop_tracer(tracer: Option<CheckTracer>) {
    if let Some(tracer) = tracer {
        let _ = tokio::task::spawn_blocking(move || tracer.shutdown()).await;
    }
}

/// Whether two config sections say the same (compared as the data they serialize to).
fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// The revocation store survives the reload: an unchanged `revocation` section, or the
/// memory backend before and after (its revocations exist only in this process).
fn keeps_store(old: &Config, new: &Config) -> bool {
    same(&old.revocation, &new.revocation)
        || (old.revocation.backend == RevocationBackend::Memory && new.revocation.backend == RevocationBackend::Memory)
}

/// The providers of `old` that `new` does not have (by name): their series go.
fn removed_providers<'a>(old: &'a Config, new: &Config) -> Vec<&'a str> {
    old.providers.iter().map(|p| p.name.as_str()).filter(|n| !new.providers.iter().any(|p| p.name == *n)).collect()
}

/// The listener keys whose value changed: bound at start, not reloaded.
fn listener_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.grpc_listen != new.grpc_listen {
        changed.push("grpc_listen");
    }
    if !same(&old.grpc_tls, &new.grpc_tls) {
        changed.push("grpc_tls");
    }
    if old.http_listen != new.http_listen {
        changed.push("http_listen");
    }
    if old.admin_listen != new.admin_listen {
        changed.push("admin_listen");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let yaml = format!(
            "grpc_listen: 127.0.0.1:9001\nhttp_listen: 127.0.0.1:9002\n{extra}providers:\n  - name: main\n    \
             issuer: https://i\n    audiences: [a]\n    algorithms: [ES256]\n    jwks: {{uri: \"http://127.0.0.1:1/jwks.json\"}}\n"
        );
        Config::from_yaml(&yaml, Path::new("t.yaml")).unwrap()
    }

    #[test]
    fn listener_changes_are_named() {
        let a = config("");
        assert!(listener_changes(&a, &config("")).is_empty());
        let b = config("admin_listen: 127.0.0.1:9003\n");
        assert_eq!(listener_changes(&a, &b), ["admin_listen"]);
    }

    #[test]
    fn the_memory_store_is_kept_and_a_changed_redis_section_rebuilt() {
        let memory = config("");
        let longer = config("revocation:\n  max_token_lifetime: 2h\n");
        assert!(keeps_store(&memory, &longer), "memory entries exist nowhere else");
        let redis = config("revocation:\n  backend: redis\n  redis_url: redis://127.0.0.1:1/0\n");
        assert!(keeps_store(&redis, &redis.clone()));
        let other = config("revocation:\n  backend: redis\n  redis_url: redis://127.0.0.1:2/0\n");
        assert!(!keeps_store(&redis, &other));
        assert!(!keeps_store(&memory, &redis));
    }
}
