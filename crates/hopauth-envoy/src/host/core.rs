//! The decision core inside Envoy: one per config file per process, shared by every worker
//! and every filter config naming that file. Built on Envoy's main thread when the first
//! filter config names the file; its JWKS refresh, Redis sync and HTTP side port run on the
//! module's own runtime ([`ModuleRuntime`]). Dropped with the last filter config (and the
//! last stream) that uses it: the runtime stops and joins its threads then.
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hopauth::authorizer::Authorizer;
use hopauth::config::Config;
use hopauth::decision::{Decision, DenyReason};
use hopauth::grpc::render;
use hopauth::http::{admin_router, public_router, router, HttpState};
use hopauth::metrics::Metrics;
use hopauth::policy::RoutePolicy;
use hopauth::server::{build_authorizer, Built};
use hopauth::token::RequestView;

use super::answer::{AllowEdit, LocalReply};
use super::request::OwnedRequest;
use super::route::RouteSettings;
use super::runtime::ModuleRuntime;
use crate::filter::{log, ConfigError, LogLevel};

/// How often the side port's gauges (store up, cache size, key age) are refreshed.
const GAUGE_POLL: Duration = Duration::from_millis(100);

/// One running decision core.
pub struct Core {
    path: PathBuf,
    authorizer: Arc<Authorizer>,
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
                let built = build_authorizer(&config, &metrics)?;
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
        let Built { authorizer, jwks, redis } = built;
        let _enter = handle.enter();
        let background = runtime.background();
        for cache in jwks {
            background.spawn_until_stopped(cache.run());
        }
        if let Some(store) = redis {
            background.spawn_until_stopped(store.start());
        }
        background.spawn_until_stopped(gauges(authorizer.clone(), metrics.clone()));
        let admin_token = std::env::var(&config.admin.token_env).ok().filter(|t| !t.is_empty()).map(Arc::from);
        if admin_token.is_none() {
            log(
                LogLevel::Warn,
                &format!("hopauth: admin token ${} not set: /admin/* answers 401", config.admin.token_env),
            );
        }
        let state =
            HttpState { authorizer: authorizer.clone(), metrics, admin_token, admin_failures: Default::default() };
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
        let anonymous = AllowEdit::from_check_response(&render::allow(authorizer.identity_headers(), [], None, None))
            .unwrap_or_default();
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

    /// Decides on the calling (worker) thread without waiting: `None` when the decision
    /// has to wait (an unknown `kid` refetch, verification permits), then use
    /// [`Core::decide_later`].
    pub fn decide_now<R: RequestView>(&self, req: &R, policy: RoutePolicy<'_>, arrived: Instant) -> Option<Decision> {
        // Timers the decision path may create belong to the module's runtime.
        let _enter = self.runtime.handle().enter();
        let check = pin!(self.authorizer.check(req, policy, arrived));
        match poll_once(check) {
            Poll::Ready(decision) => Some(decision),
            Poll::Pending => None,
        }
    }

    /// Decides on a module thread, then calls `done` with the decision (on that thread).
    /// `done` is called exactly once, also when the decision path panics (with `None`).
    pub fn decide_later(
        &self,
        req: OwnedRequest,
        route: Option<Arc<RouteSettings>>,
        arrived: Instant,
        done: impl FnOnce(Option<Decision>) + Send + 'static,
    ) {
        let authorizer = self.authorizer.clone();
        let task = self.runtime.handle().spawn(async move {
            let policy = route.as_deref().map(RouteSettings::policy).unwrap_or_default();
            authorizer.check(&req, policy, arrived).await
        });
        self.runtime.handle().spawn(async move { done(task.await.ok()) });
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

fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
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
async fn gauges(authorizer: Arc<Authorizer>, metrics: Metrics) {
    loop {
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
        tokio::time::sleep(GAUGE_POLL).await;
    }
}
