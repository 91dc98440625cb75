//! Signature and claims checks for every provider, and the verified-token cache that makes
//! a repeated token cost one hash lookup. Two ways in: [`Verifier::verify`] for hosts on
//! tokio (waits for a verification permit, awaits an unknown-`kid` refetch) and
//! [`Verifier::verify_now`] for a thread that cannot wait (it hands the refetch back).
//! The phases both run are in `check`; the provider and token profile in `profile`.

mod check;
mod profile;

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

pub use check::Prechecked;
pub use profile::{media_subtype, Provider, TokenProfile};

use crate::clock::{unix_now, Instant};
use crate::decision::{DenyReason, VerifiedToken};
use crate::keys::{KeySet, KeyStanding};
use crate::render::Renderer;

/// Bytes an entry costs beyond what it owns: moka's bookkeeping (~270 B measured, see
/// docs/performance.md), the key's and the value's allocations and the `Arc` header.
const ENTRY_OVERHEAD_BYTES: usize = 270 + std::mem::size_of::<VerifiedToken<()>>() + 2 * 16;

/// What `token` costs the cache under `key`, in bytes: the weight that bounds it.
fn cache_bytes<T>(token: &VerifiedToken<T>, key: &str, rendered_bytes: usize) -> usize {
    let boxed = |s: &Option<Box<str>>| s.as_deref().map_or(0, str::len);
    ENTRY_OVERHEAD_BYTES
        + std::mem::size_of::<T>()
        + key.len()
        + rendered_bytes
        + boxed(&token.sub)
        + boxed(&token.jti)
        + token.scopes.iter().map(|s| s.len() + 16).sum::<usize>()
}

/// The verifier's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierLimits {
    /// Cache entries at most.
    pub cache_max_entries: u64,
    /// Cache bytes at most (each entry weighs what it holds: the token, its identity, the
    /// rendered allow, bookkeeping).
    pub cache_max_bytes: u64,
    /// Signature verifications running at once (tokio hosts).
    pub max_concurrent_verifies: usize,
}

impl Default for VerifierLimits {
    fn default() -> Self {
        VerifierLimits {
            cache_max_entries: 100_000,
            cache_max_bytes: 192 * 1024 * 1024,
            max_concurrent_verifies: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Cache entries live until the token's `exp`, never longer.
struct UntilExp;

impl<T> moka::Expiry<Box<str>, Arc<VerifiedToken<T>>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &Box<str>,
        value: &Arc<VerifiedToken<T>>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(value.exp.saturating_sub(unix_now()).max(0) as u64))
    }
}

/// A verified token as the cache shares it.
pub type Shared<T> = Arc<VerifiedToken<T>>;

/// A verification's result, and whether the cache answered it.
#[derive(Debug)]
pub struct Verification<T> {
    pub result: Result<Arc<VerifiedToken<T>>, DenyReason>,
    pub cache_hit: bool,
}

/// Why [`Verifier::verify_now`] did not finish: a deny, or a `kid` the provider lacks.
#[derive(Debug)]
pub enum NotNow {
    Deny(DenyReason),
    /// Ask `keys` for a refetch, wait for it (off this thread), then verify again with
    /// `refetched: true`.
    Refetch(Arc<KeySet>),
}

pub struct Verifier<R: Renderer = ()> {
    providers: Vec<Provider>,
    /// Every header any provider sets: stripped from what the client sent, always.
    identity_headers: Vec<String>,
    /// Keyed by the whole token string: only the identical token can hit an entry.
    cache: Cache<Box<str>, Arc<VerifiedToken<R::Rendered>>, foldhash::fast::RandomState>,
    /// Permits for signature verification: a flood of expensive tokens waits here (yielding
    /// its thread to cache hits) instead of occupying every runtime thread.
    verifies: tokio::sync::Semaphore,
    renderer: Arc<R>,
}

impl<R: Renderer> Verifier<R> {
    pub fn new(providers: Vec<Provider>, limits: VerifierLimits, renderer: R) -> Self {
        // Both bounds through one weight: an entry weighs its bytes, but never less than an
        // equal share of the byte budget per allowed entry, so neither bound is exceeded.
        let max_bytes = limits.cache_max_bytes.max(1);
        let min_weight = (max_bytes / limits.cache_max_entries.max(1)).clamp(1, u64::from(u32::MAX)) as u32;
        let renderer = Arc::new(renderer);
        let weigh = renderer.clone();
        let cache = Cache::<Box<str>, Arc<VerifiedToken<R::Rendered>>, _>::builder()
            .max_capacity(max_bytes)
            .weigher(move |key, value: &Arc<VerifiedToken<R::Rendered>>| {
                let bytes = cache_bytes(value, key, weigh.bytes(&value.rendered));
                u32::try_from(bytes).unwrap_or(u32::MAX).max(min_weight)
            })
            .expire_after(UntilExp)
            .build_with_hasher(foldhash::fast::RandomState::default());
        let mut identity_headers: Vec<String> = Vec::new();
        for p in &providers {
            for h in p.claims_to_headers.iter().map(|(_, h)| h).chain(p.payload_header.iter()) {
                if !identity_headers.iter().any(|known| **known == **h) {
                    identity_headers.push(h.to_string());
                }
            }
        }
        let verifies = tokio::sync::Semaphore::new(limits.max_concurrent_verifies.max(1));
        Verifier { providers, identity_headers, cache, verifies, renderer }
    }

    /// The host's renderer (the sidecar renders its anonymous allow with it too).
    pub fn renderer(&self) -> &R {
        &self.renderer
    }

    /// Whether `token` has a cache entry now (not on the hot path).
    pub fn is_cached(&self, token: &str) -> bool {
        self.cache.contains_key(token)
    }

    /// Entries in the cache and the bytes they weigh (after pending housekeeping).
    pub fn cache_usage(&self) -> (u64, u64) {
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// A verification permit, waiting for one no later than `start_by`.
    async fn verify_permit(&self, start_by: Option<Instant>) -> Result<tokio::sync::SemaphorePermit<'_>, DenyReason> {
        if let Ok(permit) = self.verifies.try_acquire() {
            return Ok(permit);
        }
        let acquire = self.verifies.acquire();
        let permit = match start_by {
            Some(deadline) => tokio::time::timeout_at(deadline, acquire).await.map_err(|_| DenyReason::Overloaded)?,
            None => acquire.await,
        };
        // The semaphore is never closed.
        permit.map_err(|_| DenyReason::Overloaded)
    }

    pub fn identity_headers(&self) -> &[String] {
        &self.identity_headers
    }

    /// Lets the cache finish pending housekeeping (tests and benches measure after it).
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// The cache's answer for `token` at `now`, if it has an entry. A hit still needs its
    /// key: 503 past the provider's `max_stale`, 401 (and evicted) once a refresh has
    /// withdrawn the key that verified it.
    pub fn cached(&self, token: &str, now: i64) -> Option<Result<Arc<VerifiedToken<R::Rendered>>, DenyReason>> {
        let hit = self.cache.get(token)?;
        Some(match hit.key.standing(now) {
            KeyStanding::Current if now >= hit.exp + hit.leeway_secs => Err(DenyReason::Expired),
            KeyStanding::Current => Ok(hit),
            KeyStanding::Stale => Err(DenyReason::KeysUnavailable),
            KeyStanding::Withdrawn => {
                self.cache.invalidate(token);
                Err(DenyReason::UnknownKey)
            }
        })
    }

    fn remember(&self, token: &str, verified: VerifiedToken<R::Rendered>, now: i64) -> Arc<VerifiedToken<R::Rendered>> {
        let verified = Arc::new(verified);
        if verified.exp > now {
            self.cache.insert(token.into(), verified.clone());
        }
        verified
    }

    /// A verified token for `token` at time `now`: from the cache, or by full verification.
    /// Past `start_by` (the request has waited too long) a cache hit is still answered, a
    /// miss is `Overloaded` instead of a signature check.
    pub async fn verify(&self, token: &str, now: i64, start_by: Option<Instant>) -> Verification<R::Rendered> {
        if let Some(result) = self.cached(token, now) {
            return Verification { result, cache_hit: true };
        }
        let result = self.verify_uncached(token, now, start_by).await.map(|v| self.remember(token, v, now));
        Verification { result, cache_hit: false }
    }

    /// [`verify`](Self::verify) on a thread that cannot wait: no verification permit (the
    /// caller's threads bound the concurrency), and an unknown `kid` is handed back as
    /// [`NotNow::Refetch`] unless `refetched` (then it is `UnknownKey`). The second item
    /// says whether the cache answered.
    pub fn verify_now(
        &self,
        token: &str,
        now: i64,
        start_by: Option<Instant>,
        refetched: bool,
    ) -> (Result<Shared<R::Rendered>, NotNow>, bool) {
        if let Some(result) = self.cached(token, now) {
            return (result.map_err(NotNow::Deny), true);
        }
        let run = || -> Result<_, NotNow> {
            let checked = self.precheck(token, start_by).map_err(NotNow::Deny)?;
            let key = match self.signature(&checked) {
                Some(outcome) => outcome.map_err(NotNow::Deny)?,
                None if refetched => return Err(NotNow::Deny(DenyReason::UnknownKey)),
                None => return Err(NotNow::Refetch(checked.provider.keys.clone())),
            };
            let verified = self.claims(checked, key, now).map_err(NotNow::Deny)?;
            Ok(self.remember(token, verified, now))
        };
        (run(), false)
    }

    /// Full verification without the cache (benchmarks measure this path). Past
    /// `start_by`, the token is refused as `Overloaded` once its cheap checks pass, before
    /// the signature check (or a refetch for an unknown `kid`) would spend time on it.
    pub async fn verify_uncached(
        &self,
        token: &str,
        now: i64,
        start_by: Option<Instant>,
    ) -> Result<VerifiedToken<R::Rendered>, DenyReason> {
        let checked = self.precheck(token, start_by)?;
        let permit = self.verify_permit(start_by).await?;
        let key = match self.signature(&checked) {
            Some(outcome) => outcome,
            None => {
                // Maybe the issuer rotated: one bounded refetch, then one more look. The permit
                // is not held while waiting: a flood of random kids must not starve real
                // verifications.
                drop(permit);
                checked.provider.keys.refetch_for_unknown_kid().await;
                let _permit = self.verify_permit(None).await?;
                self.signature(&checked).unwrap_or(Err(DenyReason::UnknownKey))
            }
        }?;
        self.claims(checked, key, now)
    }
}

#[cfg(test)]
mod tests;
