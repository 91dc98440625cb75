//! The `hopauth` filter: the decision core on Envoy's request path.
//!
//! - [`core`]: one decision core per config file per process, and its module runtime.
//! - [`runtime`]: the module's own threads (`hopauth-*`) and their shutdown.
//! - [`route`]: the per-route JSON policy.
//! - [`request`]: request headers as the core reads them.
//! - [`answer`]: a decision as Envoy actions (header edits, metadata, local replies).
//! - [`metadata`]: a verified token's claims as dynamic metadata calls.
//! - [`stats`]: the Envoy stats the filter increments.
//! - [`log`]: the core's `tracing` lines into Envoy's log.
//!
//! On the worker: decide synchronously; allow → edit headers and metadata, Continue;
//! deny → local reply. An unknown `kid` holds the request (StopIteration) while the
//! refetch runs and is waited for on a module thread; then the stream's scheduler resumes
//! it on its worker, which decides again. If the client left meanwhile, the commit finds
//! the stream gone.
pub mod answer;
pub mod core;
pub mod log;
pub mod metadata;
pub mod request;
pub mod route;
pub mod runtime;
pub mod stats;

use hopauth_core::clock::Instant;
use hopauth_core::decision::{Allowed, Decision};
use std::path::Path;
use std::sync::Arc;

use self::answer::Present;
use self::core::{Core, Held, ModuleDecision};
use self::request::LiveRequest;
use self::route::{RouteConfig, RouteSettings};
use self::stats::Stats;
use crate::ffi::{ConfigContext, ConfigError, FilterFactory, HeadersStatus, HttpFilter, RequestContext};

/// The `filter_name` that selects this filter (also the name per-route configs are under).
pub const FILTER_NAME: &str = "hopauth";
/// The scheduler event that resumes a held request once its refetch wait is over.
const REFETCHED: u64 = 1;

/// The filter config: the shared core and this config's stats, shared by its filters.
pub struct HopauthFactory {
    shared: Arc<Shared>,
}

/// What every filter of one config uses.
struct Shared {
    core: Arc<Core>,
    stats: Stats,
}

impl HopauthFactory {
    /// `config` is the path of hopauth.yaml (the `StringValue` of `filter_config`).
    pub fn new(config: &[u8], cx: &mut ConfigContext<'_>) -> Result<Self, ConfigError> {
        let text = std::str::from_utf8(config)
            .map_err(|_| ConfigError::new("hopauth: filter_config must be the path of hopauth.yaml (UTF-8)"))?;
        let path = text.trim();
        if path.is_empty() {
            return Err(ConfigError::new("hopauth: filter_config must be the path of hopauth.yaml, got nothing"));
        }
        let stats = Stats::define(cx)?;
        let core = Core::shared(Path::new(path))?;
        Ok(Self { shared: Arc::new(Shared { core, stats }) })
    }
}

impl FilterFactory for HopauthFactory {
    fn new_filter(&self) -> Box<dyn HttpFilter> {
        Box::new(HopauthFilter { shared: self.shared.clone(), held: None })
    }
}

/// Parses a per-route config for this filter.
pub fn new_route_config(config: &[u8]) -> Result<RouteConfig, ConfigError> {
    Ok(RouteConfig(Arc::new(RouteSettings::parse(config)?)))
}

/// A request held for a refetch: its route policy.
struct HeldRequest {
    route: Option<Arc<RouteSettings>>,
    /// When the request reached the filter: the reported duration includes the wait.
    arrived: Instant,
}

struct HopauthFilter {
    shared: Arc<Shared>,
    /// Set while the request is held for an unknown-`kid` refetch.
    held: Option<HeldRequest>,
}

impl HopauthFilter {
    /// Which headers of `decision`'s edit `req` has (nothing to ask for a deny).
    fn present(&self, decision: &ModuleDecision, req: &LiveRequest<'_>) -> Present {
        let has = |name: &str| req.has(name);
        match decision {
            Decision::Allow(Allowed::Verified(token)) => token.rendered.present(has),
            Decision::Allow(Allowed::Anonymous) => self.shared.core.anonymous().present(has),
            Decision::Deny(_) => Present::default(),
        }
    }

    /// Acts on `decision`: `true` when the request may go on.
    fn answer(&self, ctx: &mut RequestContext<'_>, decision: &ModuleDecision, present: Present) -> bool {
        self.shared.stats.record(ctx, decision);
        match decision {
            Decision::Allow(Allowed::Verified(token)) => token.rendered.apply(ctx, present),
            Decision::Allow(Allowed::Anonymous) => self.shared.core.anonymous().apply(ctx, present),
            Decision::Deny(reason) => {
                self.shared.core.deny(reason).send(ctx);
                return false;
            }
        }
        true
    }
}

impl HttpFilter for HopauthFilter {
    fn on_request_headers(&mut self, ctx: &mut RequestContext<'_>, _end_of_stream: bool) -> HeadersStatus {
        let arrived = Instant::now();
        let route = ctx.route_config::<RouteConfig>().map(|r| r.0.clone());
        #[cfg(feature = "test-hooks")]
        if route.as_deref().is_some_and(|r| r.test_panic) {
            panic!("{} is set on this route", route::TEST_PANIC_KEY);
        }
        let policy = route.as_deref().map(RouteSettings::policy).unwrap_or_default();
        let req = LiveRequest::new(ctx);
        let held = self.shared.core.decide(&req, policy, arrived);
        match held {
            Held::Done(decision) => {
                let present = self.present(&decision, &req);
                if self.answer(ctx, &decision, present) {
                    HeadersStatus::Continue
                } else {
                    HeadersStatus::StopIteration
                }
            }
            Held::Wait(wait) => {
                let scheduler = ctx.scheduler();
                // A stream that is gone (client hung up) makes the commit a no-op.
                self.shared.core.after_refetch(wait, move || {
                    scheduler.commit(REFETCHED);
                });
                self.held = Some(HeldRequest { route, arrived });
                self.shared.stats.record_held(ctx);
                HeadersStatus::StopIteration
            }
        }
    }

    fn on_scheduled(&mut self, ctx: &mut RequestContext<'_>, event_id: u64) {
        if event_id != REFETCHED {
            return;
        }
        let Some(held) = self.held.take() else { return };
        let policy = held.route.as_deref().map(RouteSettings::policy).unwrap_or_default();
        // The core never sheds a refetched request (`max_queue_delay` is not applied after a
        // refetch), so the duration reported counts from arrival, wait included.
        let req = LiveRequest::new(ctx);
        let decision = self.shared.core.decide_after_refetch(&req, policy, held.arrived);
        let present = self.present(&decision, &req);
        if self.answer(ctx, &decision, present) {
            ctx.continue_decoding();
        }
    }
}
