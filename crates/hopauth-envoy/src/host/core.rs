//! The decision core inside Envoy: one per config file per process, shared by every worker
//! and every filter config naming that file. Built on Envoy's main thread when the first
//! filter config names the file; its JWKS refresh, Redis sync and HTTP side port run on the
//! module's own runtime ([`ModuleRuntime`]). Dropped with the last filter config (and the
//! last stream) that uses it: the runtime stops and joins its threads then.
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use hopauth::assemble;
use hopauth::config::Config;
use hopauth::http::{admin_router, public_router, router, HttpState};
use hopauth::live::{Live, Serving};
use hopauth::metrics::Metrics;
use hopauth::observer::SidecarObserver;
use hopauth::server::build_observed;
use hopauth_core::authorizer::{Authorizer, Step};
use hopauth_core::clock::Instant;
use hopauth_core::decision::{Decision, DenyReason};
use hopauth_core::policy::RoutePolicy;
use hopauth_core::token::RequestView;

use super::answer::{AllowEdit, HeaderEdits, LocalReply};
use super::runtime::ModuleRuntime;
use crate::ffi::{log, ConfigError, LogLevel};

/// How often the side port's gauges (store up, cache size, key age) are refreshed.
const GAUGE_POLL: Duration = Duration::from_millis(100);

/// A decision as the core renders it (an allow carries its header edit).
pub type ModuleDecision = Decision<AllowEdit>;

/// The module's authorizer: allows rendered as header edits, decisions recorded as the
/// sidecar's metrics (and spans).
pub type ModuleAuthorizer = Authorizer<HeaderEdits, SidecarObserver>;

/// One running decision core.
pub struct Core {
    path: PathBuf,
    authorizer: Arc<ModuleAuthorizer>,
    anonymous: AllowEdit,
    /// Denies by `DenyReason::index`, built on first use.
    denies: [OnceLock<LocalReply>; DenyReason::NAMES.len()],
    /// Where `http_listen` is served.
    pub http_addr: SocketAddr,
    /// Last: dropping it stops the tasks that use the fields above.
    runtime: ModuleRuntime,
}

/// The cores of this process by config file (canonical path).
fn cores() -> &'static Mutex<HashMap<PathBuf, Weak<Core>>> {
    static CORES: OnceLock<Mutex<HashMap<PathBuf, Weak<Core>>>> = OnceLock::new();
    CORES.get_or_init(Default::default)
}

impl Core {
    /// The core for the config file at `path`: the running one, or a new one. A config
    /// error names the file and the key (hopauth's own validation messages).
    pub fn shared(path: &Path) -> Result<Arc<Core>, ConfigError> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let mut cores = cores().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(core) = cores.get(&key).and_then(Weak::upgrade) {
            return Ok(core);
        }
        let core = Arc::new(Core::start(path)?);
        cores.retain(|_, c| c.strong_count() > 0);
        cores.insert(key, Arc::downgrade(&core));
        Ok(core)
    }

    fn start(path: &Path) -> Result<Core, ConfigError> {
        super::log::install();
        let config = Config::load(path).map_err(|e| ConfigError::new(e.to_string()))?;
        let mut runtime = ModuleRuntime::start()
            .map_err(|e| ConfigError::new(format!("hopauth: cannot start the module's threads: {e}")))?;
        let registry = prometheus::Registry::new();
        let metrics = Metrics::register(&registry).map_err(|e| ConfigError::new(format!("hopauth metrics: {e}")))?;
        let handle = runtime.handle().clone();
        let (built, listeners) = runtime
            .block_on(async {
                let built = build_observed(&config, HeaderEdits, &metrics)?;
                let http = tokio::net::TcpListener::bind(config.http_listen)
                    .await
                    .map_err(|e| anyhow::anyhow!("http_listen: cannot bind {}: {e}", config.http_listen))?;
                let admin = match config.admin_listen {
                    Some(addr) => Some(
                        tokio::net::TcpListener::bind(addr)
                            .await
                            .map_err(|e| anyhow::anyhow!("admin_listen: cannot bind {addr}: {e}"))?,
                    ),
                    None => None,
                };
                anyhow::Ok((built, (http, admin)))
            })
            .map_err(|e| ConfigError::new(format!("{}: {e:#}", path.display())))?;
        let authorizer = built.authorizer.clone();
        let _enter = handle.enter();
        let background = runtime.background();
        built.spawn_into(background);
        background.spawn_until_stopped(gauges(built, metrics.clone()));
        let admin_token = std::env::var(&config.admin.token_env).ok().filter(|t| !t.is_empty()).map(Arc::from);
        if admin_token.is_none() {
            log(
                LogLevel::Warn,
                &format!("hopauth: admin token ${} not set: /admin/* answers 401", config.admin.token_env),
            );
        }
        let live = Live::new(Serving::hosted(authorizer.clone(), admin_token));
        let state = HttpState { live, metrics, admin_failures: Default::default() };
        let (http, admin) = listeners;
        let http_addr = http.local_addr().map_err(|e| ConfigError::new(format!("http_listen: {e}")))?;
        let app = match admin {
            Some(listener) => {
                background.spawn(serve(listener, admin_router(state.clone()), background.stop_signal()));
                public_router(state)
            }
            None => router(state),
        };
        background.spawn(serve(http, app, background.stop_signal()));
        let anonymous = AllowEdit::anonymous(authorizer.identity_headers());
        #[cfg(feature = "test-hooks")]
        log(LogLevel::Warn, "hopauth: built with the test-hooks feature (tests only): not for production");
        log(
            LogLevel::Info,
            &format!(
                "hopauth: core for {} started; http_listen {http_addr}; grpc_listen ignored in-process",
                path.display()
            ),
        );
        drop(_enter);
        Ok(Core {
            path: path.to_owned(),
            authorizer,
            anonymous,
            denies: std::array::from_fn(|_| OnceLock::new()),
            http_addr,
            runtime,
        })
    }

    /// Decides on the calling (worker) thread, without waiting: the decision, or the wait
    /// an unknown `kid` refetch needs (then [`Core::after_refetch`] on a module thread,
    /// and [`Core::decide_after_refetch`] back on the worker).
    pub fn decide<R: RequestView>(&self, req: &R, policy: RoutePolicy<'_>, arrived: Instant) -> Held {
        match self.authorizer.decide(req, policy, arrived) {
            Step::Done(decision) => Held::Done(decision),
            Step::Refetch(need) => match need.request() {
                Some(wait) => Held::Wait(wait),
                // No fetch can finish within `kid_refetch_wait`: answer now.
                None => Held::Done(self.authorizer.decide_after_refetch(req, policy, arrived)),
            },
        }
    }

    /// The decision of a request whose refetch wait is over (worker thread).
    pub fn decide_after_refetch<R: RequestView>(
        &self,
        req: &R,
        policy: RoutePolicy<'_>,
        arrived: Instant,
    ) -> ModuleDecision {
        self.authorizer.decide_after_refetch(req, policy, arrived)
    }

    /// Waits for `wait` on a module thread, then calls `done` there. `done` also runs if
    /// the wait is cancelled (runtime shutdown), so a held request is always resumed.
    pub fn after_refetch(&self, wait: hopauth_core::keys::RefetchWait, done: impl FnOnce() + Send + 'static) {
        let guard = OnDrop(Some(done));
        self.runtime.handle().spawn(async move {
            wait.wait().await;
            drop(guard);
        });
    }

    /// The edit of an anonymous allow (strip every identity header).
    pub fn anonymous(&self) -> &AllowEdit {
        &self.anonymous
    }

    /// The local reply for `reason`.
    pub fn deny(&self, reason: &DenyReason) -> std::borrow::Cow<'_, LocalReply> {
        match reason {
            DenyReason::InsufficientScope(_) => std::borrow::Cow::Owned(LocalReply::deny(reason)),
            _ => std::borrow::Cow::Borrowed(self.denies[reason.index()].get_or_init(|| LocalReply::deny(reason))),
        }
    }

    /// The config file this core was built from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        log(LogLevel::Info, &format!("hopauth: stopping the core for {}", self.path.display()));
    }
}

/// What [`Core::decide`] gives the worker.
pub enum Held {
    Done(ModuleDecision),
    /// Hold the request until this refetch wait is over.
    Wait(hopauth_core::keys::RefetchWait),
}

/// Runs its closure when dropped: after the wait, or when the task is cancelled.
struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, app: axum::Router, stop: impl Future<Output = ()> + Send + 'static) {
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stop)
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "HTTP side port stopped");
    }
}

/// The side port's gauges, as `hopauth serve` keeps them.
async fn gauges(core: assemble::Core<HeaderEdits, SidecarObserver>, metrics: Metrics) {
    let authorizer = core.authorizer.clone();
    loop {
        let store = authorizer.revocation();
        metrics.revocation().store_up(store.ready());
        metrics.revocation().entries(store.entries());
        metrics.checks().cache_usage(authorizer.verifier().cache_usage());
        core.publish_key_ages();
        if let Some(age) = store.sync_age() {
            metrics.revocation().sync_age(age);
        }
        tokio::time::sleep(GAUGE_POLL).await;
    }
}
