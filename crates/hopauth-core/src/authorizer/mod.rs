//! The decision path: token → verified identity (cache, then signature and claims) →
//! route policy → revocation → `Decision`; each decision reported to the host's
//! [`Observer`] and, for a deny, one budgeted log line.
//!
//! Two ways in. [`Authorizer::check`] for hosts on tokio (the ext_authz sidecar): waits for
//! a verification permit and awaits an unknown-`kid` refetch. [`Authorizer::decide`] for a
//! thread that must not wait (an Envoy worker): it answers, or returns
//! [`Step::Refetch`]; the host waits for the refetch elsewhere (at most `kid_refetch_wait`,
//! see [`RefetchNeeded`]) and asks again with [`Authorizer::decide_after_refetch`].

mod log;

use std::sync::Arc;
use std::time::Duration;

pub use log::{fingerprint, request_id, trace_id, DENY_LOG_LINES_PER_SEC};

use crate::clock::{unix_now, Instant};
use crate::decision::{Allowed, Decision, DenyReason, VerifiedToken};
use crate::keys::{KeySet, RefetchWait};
use crate::observe::{Facts, Observer, Verdict};
use crate::policy::RoutePolicy;
use crate::render::Renderer;
use crate::revocation::{RevocationStatus, RevocationStore, TokenIdentity};
use crate::token::{self, RequestView, TokenSource};
use crate::verify::{NotNow, Verifier};
use log::{log_path, LogBudget};

/// What a stale revocation store means for a verified token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// 503 `revocation_unavailable`.
    #[default]
    Deny,
    /// Verified tokens pass (known revocations still hold).
    Allow,
}

/// The decision path's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthorizerSettings {
    pub max_token_bytes: usize,
    /// What a stale revocation store means for a verified token.
    pub failure_mode: FailureMode,
    /// A Check that waited this long gets no full verification (503 `overloaded`).
    pub max_queue_delay: Duration,
    /// Readiness needs every provider's keys, not just one provider's.
    pub require_all_providers: bool,
}

impl Default for AuthorizerSettings {
    fn default() -> Self {
        AuthorizerSettings {
            max_token_bytes: 8 * 1024,
            failure_mode: FailureMode::Deny,
            max_queue_delay: Duration::from_millis(50),
            require_all_providers: false,
        }
    }
}

/// What [`Authorizer::decide`] returns.
#[derive(Debug)]
pub enum Step<T> {
    Done(Decision<T>),
    /// The token names a `kid` its provider does not have: refetch, then ask again.
    Refetch(RefetchNeeded),
}

/// A token named a `kid` its provider lacks. Nothing was recorded yet: ask again with
/// [`Authorizer::decide_after_refetch`] once [`request`](Self::request)'s wait is over (or at
/// once when it returns `None`).
#[derive(Debug)]
pub struct RefetchNeeded {
    keys: Arc<KeySet>,
}

impl RefetchNeeded {
    /// The provider whose keys to refetch.
    pub fn provider(&self) -> &str {
        self.keys.provider()
    }

    pub fn keys(&self) -> &Arc<KeySet> {
        &self.keys
    }

    /// Asks the provider's refresh loop for the fetch (single-flight, at most one per
    /// `kid_refetch_interval`); `Some` when a fetch may finish within `kid_refetch_wait`.
    pub fn request(&self) -> Option<RefetchWait> {
        self.keys.request_refetch()
    }

    /// `request` and its wait, on tokio.
    pub async fn wait(self) -> bool {
        self.keys.refetch_for_unknown_kid().await
    }
}

type Rendered<R> = <R as Renderer>::Rendered;

pub struct Authorizer<R: Renderer = (), O: Observer = ()> {
    sources: Vec<TokenSource>,
    verifier: Verifier<R>,
    revocation: Arc<dyn RevocationStore>,
    settings: AuthorizerSettings,
    observer: O,
    deny_log: LogBudget,
}

impl<R: Renderer, O: Observer> Authorizer<R, O> {
    pub fn new(
        sources: Vec<TokenSource>,
        verifier: Verifier<R>,
        revocation: Arc<dyn RevocationStore>,
        settings: AuthorizerSettings,
        observer: O,
    ) -> Self {
        Authorizer { sources, verifier, revocation, settings, observer, deny_log: LogBudget::default() }
    }

    pub fn observer(&self) -> &O {
        &self.observer
    }

    pub fn identity_headers(&self) -> &[String] {
        self.verifier.identity_headers()
    }

    pub fn verifier(&self) -> &Verifier<R> {
        &self.verifier
    }

    pub fn revocation(&self) -> &Arc<dyn RevocationStore> {
        &self.revocation
    }

    /// Ready: the providers can verify (one of them, or every one with
    /// `readiness.require_all_providers`), and the revocation store is fresh. With
    /// `failure_mode: allow` a stale store never makes hopauth unready: verified tokens keep
    /// passing through a health-checking Envoy (and known revocations still hold).
    pub fn ready(&self) -> bool {
        let mut usable = self.verifier.providers().iter().map(|p| p.keys.usable());
        let keys = if self.settings.require_all_providers { usable.all(|u| u) } else { usable.any(|u| u) };
        keys && (self.settings.failure_mode == FailureMode::Allow || self.revocation.ready())
    }

    /// The settings this authorizer decides with.
    pub fn settings(&self) -> &AuthorizerSettings {
        &self.settings
    }

    /// Decides on tokio, then reports. `arrived` is when the request reached the host: past
    /// `max_queue_delay` only cache hits are served, and the duration reported counts from
    /// it, so queueing shows.
    pub async fn check<Q: RequestView>(
        &self,
        req: &Q,
        policy: RoutePolicy<'_>,
        arrived: Instant,
    ) -> Decision<Rendered<R>> {
        let (decision, token, cache_hit) = match self.front(req, policy) {
            Err(decision) => (decision, None, None),
            Ok(token) => {
                let start_by = arrived + self.settings.max_queue_delay;
                let v = self.verifier.verify(token, unix_now(), Some(start_by)).await;
                self.observer.verify_cache(v.cache_hit);
                (self.back(v.result, policy), Some(token), Some(v.cache_hit))
            }
        };
        self.report(req, &decision, token, cache_hit, arrived);
        decision
    }

    /// Decides on the calling thread without waiting: the decision (reported), or a
    /// refetch to wait for elsewhere (nothing reported yet).
    pub fn decide<Q: RequestView>(&self, req: &Q, policy: RoutePolicy<'_>, arrived: Instant) -> Step<Rendered<R>> {
        match self.decide_now(req, policy, arrived, false) {
            Ok(decision) => Step::Done(decision),
            Err(keys) => Step::Refetch(RefetchNeeded { keys }),
        }
    }

    /// The same request after the refetch [`decide`](Self::decide) asked for: a `kid` still
    /// unknown is `unknown_key`.
    pub fn decide_after_refetch<Q: RequestView>(
        &self,
        req: &Q,
        policy: RoutePolicy<'_>,
        arrived: Instant,
    ) -> Decision<Rendered<R>> {
        match self.decide_now(req, policy, arrived, true) {
            Ok(decision) => decision,
            // verify_now never asks twice.
            Err(_) => Decision::Deny(DenyReason::UnknownKey),
        }
    }

    fn decide_now<Q: RequestView>(
        &self,
        req: &Q,
        policy: RoutePolicy<'_>,
        arrived: Instant,
        refetched: bool,
    ) -> Result<Decision<Rendered<R>>, Arc<KeySet>> {
        let (decision, token, cache_hit) = match self.front(req, policy) {
            Err(decision) => (decision, None, None),
            Ok(token) => {
                // After a refetch the wait was the key fetch's, not queueing: like the async
                // path's refetched verification, it is never refused as `overloaded`.
                let start_by = (!refetched).then(|| arrived + self.settings.max_queue_delay);
                let (result, hit) = self.verifier.verify_now(token, unix_now(), start_by, refetched);
                let result = match result {
                    Err(NotNow::Refetch(keys)) => return Err(keys),
                    Err(NotNow::Deny(reason)) => Err(reason),
                    Ok(verified) => Ok(verified),
                };
                self.observer.verify_cache(hit);
                (self.back(result, policy), Some(token), Some(hit))
            }
        };
        self.report(req, &decision, token, cache_hit, arrived);
        Ok(decision)
    }

    /// Reports a request whose bytes could not be read at all (not valid protobuf): to the
    /// observer, and one budgeted log line saying why.
    pub fn refuse_unreadable(&self, reason: &DenyReason, error: &dyn std::error::Error, arrived: Instant) {
        self.observer.refused_unreadable(reason, arrived.elapsed());
        if tracing::enabled!(tracing::Level::INFO) {
            let (write, suppressed) = self.deny_log.take(unix_now());
            if suppressed > 0 {
                tracing::info!(suppressed, "deny log lines over {DENY_LOG_LINES_PER_SEC}/s were not written");
            }
            if write {
                tracing::info!(reason = reason.as_str(), error = %error, "denied");
            }
        }
    }

    /// The token to verify, or the decision made without one.
    fn front<'r, Q: RequestView>(&self, req: &'r Q, policy: RoutePolicy<'_>) -> Result<&'r str, Decision<Rendered<R>>> {
        match token::extract(req, &self.sources, self.settings.max_token_bytes) {
            Ok(Some(t)) if t.len() > self.settings.max_token_bytes => Err(Decision::Deny(DenyReason::TokenTooLarge)),
            Ok(Some(t)) => Ok(t),
            Ok(None) if policy.anonymous => Err(Decision::Allow(Allowed::Anonymous)),
            Ok(None) => Err(Decision::Deny(DenyReason::MissingToken)),
            Err(reason) => Err(Decision::Deny(reason)),
        }
    }

    /// A verification's outcome through the route policy and revocation.
    fn back(
        &self,
        verified: Result<Arc<VerifiedToken<Rendered<R>>>, DenyReason>,
        policy: RoutePolicy<'_>,
    ) -> Decision<Rendered<R>> {
        let verified = match verified {
            Ok(v) => v,
            Err(reason) => return Decision::Deny(reason),
        };
        if !policy.allows_provider(&verified.provider) {
            return Decision::Deny(DenyReason::ProviderNotAllowed);
        }
        let identity = TokenIdentity {
            iss: &verified.iss,
            sub: verified.sub.as_deref(),
            jti: verified.jti.as_deref(),
            iat: verified.iat,
        };
        match self.revocation.check(&identity) {
            RevocationStatus::NotRevoked => {}
            RevocationStatus::Revoked => return Decision::Deny(DenyReason::Revoked),
            RevocationStatus::Unknown => {
                if self.settings.failure_mode == FailureMode::Deny {
                    return Decision::Deny(DenyReason::RevocationUnavailable);
                }
                self.observer.revocation_fail_open();
            }
        }
        if let Some(required) = policy.missing_scope(&verified.scopes) {
            return Decision::Deny(DenyReason::InsufficientScope(required.to_string()));
        }
        Decision::Allow(Allowed::Verified(verified))
    }

    /// Reports the decision and, for a deny, writes one log line within the budget: a flood
    /// of bad tokens must not become a flood of log writes (lines past the budget are
    /// counted, and the count is logged when the next second starts; the observer still
    /// sees every deny).
    fn report<Q: RequestView>(
        &self,
        req: &Q,
        decision: &Decision<Rendered<R>>,
        token: Option<&str>,
        cache_hit: Option<bool>,
        arrived: Instant,
    ) {
        let verdict = match decision {
            Decision::Allow(Allowed::Verified(v)) => Verdict::Verified { provider: &v.provider },
            Decision::Allow(Allowed::Anonymous) => Verdict::Anonymous,
            Decision::Deny(reason) => Verdict::Deny(reason),
        };
        let facts = Facts { arrived, elapsed: arrived.elapsed(), cache_hit };
        self.observer.decided(req, verdict, &facts);
        let Decision::Deny(reason) = decision else { return };
        if tracing::enabled!(tracing::Level::INFO) {
            let (write, suppressed) = self.deny_log.take(unix_now());
            if suppressed > 0 {
                tracing::info!(suppressed, "deny log lines over {DENY_LOG_LINES_PER_SEC}/s were not written");
            }
            if write {
                tracing::info!(
                    reason = reason.as_str(),
                    token = %token.map(fingerprint).unwrap_or_default(),
                    path = %log_path(req.path()),
                    request_id = request_id(req).unwrap_or_default(),
                    trace_id = trace_id(req).unwrap_or_default(),
                    "denied"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
