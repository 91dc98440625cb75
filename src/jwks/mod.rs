//! Per-provider verification keys: fetched at start and on a schedule in the background,
//! read lock-free on the request path (arc-swap), last good set kept through failures for
//! `max_stale`, and an unknown `kid` answered by at most one refetch per interval.

mod fetch;
mod keys;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

pub use fetch::{discover, fetch, http_client, parse_max_age, FetchError, Fetched};
pub use keys::{keys_from_jwk, parse_jwks, JwksDocError, KeyRejection, ParsedJwks, VerifyKey, MIN_RSA_BITS};

use crate::alg::Alg;
use crate::config::JwksConfig;
use crate::metrics::Metrics;

/// Shortest refresh a `Cache-Control: max-age` may ask for.
pub const MIN_REFRESH: Duration = Duration::from_secs(30);
/// First retry after a failed fetch; doubles per failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between retries after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// Where a provider's JWKS comes from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    Uri(String),
    File(PathBuf),
    Discovery {
        issuer: String,
    },
    /// HMAC-only provider: no key document.
    None,
}

/// The keys in use and when they were last confirmed.
pub struct KeyState {
    pub keys: Vec<VerifyKey>,
    /// Last successful fetch; `None` before the first.
    pub fetched_at: Option<Instant>,
}

/// Schedule settings of one provider's cache.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    pub refresh_interval: Duration,
    pub max_stale: Duration,
    pub timeout: Duration,
    pub max_bytes: usize,
    pub kid_refetch_interval: Duration,
    pub kid_refetch_wait: Duration,
}

impl From<&JwksConfig> for JwksSettings {
    fn from(c: &JwksConfig) -> Self {
        JwksSettings {
            refresh_interval: c.refresh_interval,
            max_stale: c.max_stale,
            timeout: c.timeout,
            max_bytes: c.max_bytes,
            kid_refetch_interval: c.kid_refetch_interval,
            kid_refetch_wait: c.kid_refetch_wait,
        }
    }
}

/// What a lookup found for a token's `kid`/`alg`.
pub enum KeyLookup<'a> {
    /// Keys to try, in order.
    Found(Vec<&'a VerifyKey>),
    /// The token names a `kid` this provider does not have.
    UnknownKid,
    /// No key for that algorithm at all.
    NoKey,
}

pub struct JwksCache {
    provider: Arc<str>,
    allowed: Vec<Alg>,
    source: JwksSource,
    settings: JwksSettings,
    /// HMAC keys from configured secrets; never expire.
    static_keys: Vec<VerifyKey>,
    state: ArcSwap<KeyState>,
    discovered_uri: Mutex<Option<String>>,
    refetch: Notify,
    last_kid_refetch: Mutex<Option<Instant>>,
    fetching: AtomicBool,
    generation: watch::Sender<u64>,
    client: reqwest::Client,
    metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Document(#[from] JwksDocError),
    #[error("JWKS has no usable key ({rejected} rejected)")]
    NoUsableKey { rejected: usize },
}

impl JwksCache {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        provider: &str,
        allowed: Vec<Alg>,
        source: JwksSource,
        settings: JwksSettings,
        static_keys: Vec<VerifyKey>,
        client: reqwest::Client,
        metrics: Metrics,
    ) -> Self {
        JwksCache {
            provider: provider.into(),
            allowed,
            source,
            settings,
            static_keys,
            state: ArcSwap::from_pointee(KeyState { keys: Vec::new(), fetched_at: None }),
            discovered_uri: Mutex::new(None),
            refetch: Notify::new(),
            last_kid_refetch: Mutex::new(None),
            fetching: AtomicBool::new(false),
            generation: watch::channel(0).0,
            client,
            metrics,
        }
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// True when tokens of this provider can be verified now: configured secrets, or
    /// fetched keys no older than `max_stale`.
    pub fn usable(&self) -> bool {
        if matches!(self.source, JwksSource::None) {
            return !self.static_keys.is_empty();
        }
        let state = self.state.load();
        !state.keys.is_empty() && state.fetched_at.is_some_and(|t| t.elapsed() <= self.settings.max_stale)
    }

    /// Time since the keys in use were fetched; `None` before the first fetch; zero for a
    /// provider with configured secrets only.
    pub fn key_age(&self) -> Option<Duration> {
        if matches!(self.source, JwksSource::None) {
            // Configured secrets: as fresh as the config itself.
            return Some(Duration::ZERO);
        }
        self.state.load().fetched_at.map(|t| t.elapsed())
    }

    /// Keys for a token with `kid` and `alg`. A key without `kid` serves any token; a key is
    /// only ever offered for its own algorithm.
    pub fn with_candidates<T>(&self, kid: Option<&str>, alg: Alg, f: impl FnOnce(KeyLookup<'_>) -> T) -> T {
        let state = self.state.load();
        let fetched_usable = matches!(self.source, JwksSource::None)
            || state.fetched_at.is_some_and(|t| t.elapsed() <= self.settings.max_stale);
        let fetched: &[VerifyKey] = if fetched_usable { &state.keys } else { &[] };
        let all = || self.static_keys.iter().chain(fetched.iter());
        if let Some(kid) = kid {
            if !all().any(|k| k.kid.as_deref() == Some(kid)) && !all().any(|k| k.kid.is_none() && k.alg == alg) {
                return f(KeyLookup::UnknownKid);
            }
        }
        let found: Vec<&VerifyKey> =
            all().filter(|k| k.alg == alg && (kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)).collect();
        if found.is_empty() {
            f(KeyLookup::NoKey)
        } else {
            f(KeyLookup::Found(found))
        }
    }

    /// Called when a token names an unknown `kid`: asks for a refetch unless one ran within
    /// `kid_refetch_interval`, and waits (bounded) for a fetch in flight. True when a fetch
    /// completed meanwhile, so the caller should look again.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        if matches!(self.source, JwksSource::None) {
            return false;
        }
        let mut done = self.generation.subscribe();
        let start = {
            let mut last = self.last_kid_refetch.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= self.settings.kid_refetch_interval);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if start {
            self.refetch.notify_one();
        } else if !self.fetching.load(Ordering::Acquire) {
            return false;
        }
        tokio::time::timeout(self.settings.kid_refetch_wait, done.changed()).await.is_ok()
    }

    /// Fetches and installs keys once. On failure the last good keys stay.
    pub async fn refresh(&self) -> Result<Option<Duration>, RefreshError> {
        self.fetching.store(true, Ordering::Release);
        let result = self.fetch_and_parse().await;
        let outcome = match result {
            Ok((parsed, max_age)) => {
                for r in &parsed.rejected {
                    self.metrics.record_key_rejected(&self.provider, r.as_str());
                    tracing::warn!(provider = %self.provider, reason = r.as_str(), "JWKS key dropped");
                }
                if parsed.keys.is_empty() {
                    Err(RefreshError::NoUsableKey { rejected: parsed.rejected.len() })
                } else {
                    let n = parsed.keys.len();
                    // Info on the first load and when the set of (kid, alg) changes; debug otherwise.
                    let ids = |ks: &[VerifyKey]| ks.iter().map(|k| (k.kid.clone(), k.alg)).collect::<Vec<_>>();
                    let kids = ids(&parsed.keys);
                    let changed = ids(&self.state.load().keys) != kids;
                    self.state.store(Arc::new(KeyState { keys: parsed.keys, fetched_at: Some(Instant::now()) }));
                    self.metrics.record_jwks_refresh(&self.provider, true, Some(n));
                    if changed {
                        let kids: Vec<&str> = kids.iter().filter_map(|(k, _)| k.as_deref()).collect();
                        tracing::info!(provider = %self.provider, keys = n, kids = ?kids, "keys loaded");
                    } else {
                        tracing::debug!(provider = %self.provider, keys = n, "JWKS refreshed, keys unchanged");
                    }
                    Ok(max_age)
                }
            }
            Err(e) => Err(e),
        };
        if let Err(error) = &outcome {
            self.metrics.record_jwks_refresh(&self.provider, false, None);
            tracing::warn!(provider = %self.provider, %error, "JWKS refresh failed; keeping the last good keys");
            if matches!(self.source, JwksSource::Discovery { .. }) {
                // Look the document up again next time: the JWKS may have moved.
                *self.discovered_uri.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
        }
        self.fetching.store(false, Ordering::Release);
        self.generation.send_modify(|g| *g += 1);
        outcome
    }

    async fn fetch_and_parse(&self) -> Result<(ParsedJwks, Option<Duration>), RefreshError> {
        let s = &self.settings;
        let fetched = match &self.source {
            JwksSource::Uri(uri) => fetch(&self.client, uri, s.timeout, s.max_bytes).await?,
            JwksSource::File(path) => fetch::read_file(path, s.max_bytes).await?,
            JwksSource::Discovery { issuer } => {
                let known = self.discovered_uri.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let uri = match known {
                    Some(u) => u,
                    None => {
                        let u = discover(&self.client, issuer, s.timeout, s.max_bytes).await?;
                        *self.discovered_uri.lock().unwrap_or_else(|p| p.into_inner()) = Some(u.clone());
                        u
                    }
                };
                fetch(&self.client, &uri, s.timeout, s.max_bytes).await?
            }
            JwksSource::None => return Ok((ParsedJwks::default(), None)),
        };
        Ok((parse_jwks(&fetched.body, &self.allowed)?, fetched.max_age))
    }

    /// The background loop: refresh on schedule, back off with jitter on failure, and
    /// answer unknown-`kid` refetch requests. Runs until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        if matches!(self.source, JwksSource::None) {
            return;
        }
        let mut failures = 0u32;
        loop {
            let outcome = self.refresh().await;
            failures = if outcome.is_ok() { 0 } else { failures.saturating_add(1) };
            let delay =
                next_refresh(outcome.as_ref().ok().copied(), failures, self.settings.refresh_interval, rand::random());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.refetch.notified() => {}
            }
        }
    }
}

/// How long to wait before the next fetch. `fetched` is `Some(max_age)` after a success,
/// `None` after a failure (`failures` in a row); `jitter` is uniform in [0, 1).
/// After success: `max-age` clamped to [min(30s, interval), interval], else the interval,
/// minus up to 10 % so a fleet does not fetch in step. After failure: 1s doubling up to
/// min(5m, interval), ±20 %.
pub fn next_refresh(fetched: Option<Option<Duration>>, failures: u32, interval: Duration, jitter: f64) -> Duration {
    let jitter = jitter.clamp(0.0, 1.0);
    match fetched {
        Some(max_age) => {
            let base = max_age.map_or(interval, |m| m.clamp(MIN_REFRESH.min(interval), interval));
            base.mul_f64(1.0 - 0.1 * jitter)
        }
        None => {
            let exp = failures.saturating_sub(1).min(16);
            let base = FIRST_BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF).min(interval);
            base.mul_f64(0.8 + 0.4 * jitter)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN5: Duration = Duration::from_secs(300);

    #[test]
    fn success_follows_interval_or_max_age_within_bounds() {
        assert_eq!(next_refresh(Some(None), 0, MIN5, 0.0), MIN5);
        assert_eq!(next_refresh(Some(Some(Duration::from_secs(60))), 0, MIN5, 0.0), Duration::from_secs(60));
        // A server cannot make us poll faster than 30 s, nor slower than the interval.
        assert_eq!(next_refresh(Some(Some(Duration::ZERO)), 0, MIN5, 0.0), MIN_REFRESH);
        assert_eq!(next_refresh(Some(Some(Duration::from_secs(86400))), 0, MIN5, 0.0), MIN5);
        assert!(next_refresh(Some(None), 0, MIN5, 0.99) >= MIN5.mul_f64(0.9));
    }

    #[test]
    fn failures_back_off_exponentially_and_are_capped() {
        let d = |n| next_refresh(None, n, Duration::from_secs(3600), 0.5);
        assert_eq!(d(1), Duration::from_secs(1));
        assert_eq!(d(2), Duration::from_secs(2));
        assert_eq!(d(5), Duration::from_secs(16));
        assert_eq!(d(30), MAX_BACKOFF);
        assert_eq!(next_refresh(None, 30, Duration::from_secs(10), 0.5), Duration::from_secs(10));
        let low = next_refresh(None, 3, Duration::from_secs(3600), 0.0);
        let high = next_refresh(None, 3, Duration::from_secs(3600), 0.999);
        assert!(low >= Duration::from_millis(3200) && high <= Duration::from_millis(4800), "{low:?} {high:?}");
    }
}
