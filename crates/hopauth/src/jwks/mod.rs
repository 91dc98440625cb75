//! Per-provider verification keys: fetched at start and on a schedule in the background,
//! read lock-free on the request path (arc-swap), last good set kept through failures for
//! `max_stale`, and an unknown `kid` answered by a single-flight refetch, at most one per
//! `kid_refetch_interval`, made cheap by conditional requests.

mod fetch;
mod keys;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

pub use fetch::{
    check_jwks_uri, discover, fetch, fetch_conditional, http_client, parse_max_age, Conditional, ErrorChain,
    FetchError, Fetched, Validators,
};
pub use keys::{
    keys_from_jwk, parse_jwks, JwksDocError, KeyId, KeyRejection, ParsedJwks, VerifyKey, MAX_RSA_BITS, MIN_RSA_BITS,
};

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
    pub keys: Arc<[VerifyKey]>,
    /// Last successful fetch (a 200 or a 304 confirming these keys); `None` before the first.
    pub fetched_at: Option<Instant>,
    /// Bumped each time a different set of keys is installed; starts at 1.
    pub generation: u64,
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

/// A verified token's tie to the key that verified it, kept in the verified-token cache so
/// that a hit is refused once that key leaves the provider's JWKS or its keys go stale.
#[derive(Debug)]
pub struct KeyBinding {
    cache: Arc<JwksCache>,
    id: KeyId,
    /// The key-set generation in which `id` was last seen; 0 = never checked, so the first
    /// hit looks the key up (a refresh may have run since the signature check).
    seen_in: AtomicU64,
}

/// Whether a cached token's key still stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStanding {
    Current,
    /// The key left the JWKS at a refresh: the token is refused.
    Withdrawn,
    /// The provider's keys are past `max_stale`: 503, as for any token of the provider.
    Stale,
}

impl KeyBinding {
    /// Whether the key still stands at `now` (Unix seconds). While the key set is
    /// unchanged this is three atomic loads and two compares; after a change, one scan of the
    /// new set (once per cached token).
    pub fn standing(&self, now: i64) -> KeyStanding {
        let cache = &*self.cache;
        if now > cache.stale_after.load(Ordering::Relaxed) {
            return KeyStanding::Stale;
        }
        if self.seen_in.load(Ordering::Relaxed) == cache.generation.load(Ordering::Acquire) {
            return KeyStanding::Current;
        }
        let state = cache.state.load();
        if cache.static_keys.iter().chain(state.keys.iter()).any(|k| k.id == self.id) {
            self.seen_in.store(state.generation, Ordering::Relaxed);
            KeyStanding::Current
        } else {
            KeyStanding::Withdrawn
        }
    }
}

pub struct JwksCache {
    provider: Arc<str>,
    allowed: Vec<Alg>,
    source: JwksSource,
    settings: JwksSettings,
    /// HMAC keys from configured secrets; never expire.
    static_keys: Vec<VerifyKey>,
    state: ArcSwap<KeyState>,
    /// `state.generation`, published after each install, read by every cache hit.
    generation: AtomicU64,
    /// Unix second after which the fetched keys are past `max_stale` (cache hits compare it
    /// with the clock the Check already read); `i64::MAX` for a provider without a JWKS.
    stale_after: AtomicI64,
    discovered_uri: Mutex<Option<String>>,
    /// Validators of the document the installed keys came from, and its URL.
    validators: Mutex<Option<(String, Validators)>>,
    /// Wakes the refresh loop for an unknown `kid`.
    refetch: Notify,
    /// When the last fetch asked for by an unknown `kid` started: the next keeps
    /// `kid_refetch_interval` from it.
    last_kid_fetch: Mutex<Option<Instant>>,
    fetching: AtomicBool,
    /// Counts finished fetch attempts, for requests waiting on a refetch.
    attempts: watch::Sender<u64>,
    client: reqwest::Client,
    metrics: Metrics,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache").field("provider", &self.provider).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Document(#[from] JwksDocError),
    #[error("JWKS has no usable key ({rejected} rejected)")]
    NoUsableKey { rejected: usize },
    #[error("the server answered 304 Not Modified but no keys are held")]
    NotModifiedWithoutKeys,
    #[error("the refresh panicked")]
    Panicked,
}

/// A fetched document, or the server's word that ours is current.
enum Fresh {
    Parsed { parsed: ParsedJwks, max_age: Option<Duration>, validators: Option<(String, Validators)> },
    Unchanged { max_age: Option<Duration> },
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
        let never_stale = matches!(source, JwksSource::None);
        JwksCache {
            provider: provider.into(),
            allowed,
            source,
            settings,
            static_keys,
            state: ArcSwap::from_pointee(KeyState { keys: Arc::new([]), fetched_at: None, generation: 1 }),
            generation: AtomicU64::new(1),
            stale_after: AtomicI64::new(if never_stale { i64::MAX } else { i64::MIN }),
            discovered_uri: Mutex::new(None),
            validators: Mutex::new(None),
            refetch: Notify::new(),
            last_kid_fetch: Mutex::new(None),
            fetching: AtomicBool::new(false),
            attempts: watch::channel(0).0,
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

    /// Ties a token verified by key `id` to this provider's key set, for the cache.
    pub fn bind(self: &Arc<Self>, id: KeyId) -> KeyBinding {
        KeyBinding { cache: self.clone(), id, seen_in: AtomicU64::new(0) }
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

    /// Called when a token names an unknown `kid`: asks the refresh loop for a refetch
    /// (single-flight, and at most one per `kid_refetch_interval`: a flood of random kids
    /// costs the IdP about one conditional request per interval), then waits up to
    /// `kid_refetch_wait` for a fetch, but only when one is running or may start within
    /// that wait; otherwise it answers at once and the fetch it asked for runs when the
    /// interval allows, so a newly published key is seen within about one interval, flood
    /// or not. True when a fetch completed meanwhile, so the caller should look again.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        if matches!(self.source, JwksSource::None) {
            return false;
        }
        let mut done = self.attempts.subscribe();
        self.refetch.notify_one();
        let wait = self.settings.kid_refetch_wait;
        if !self.fetching.load(Ordering::Acquire) && self.until_fetch_allowed() > wait {
            return false;
        }
        tokio::time::timeout(wait, done.changed()).await.is_ok()
    }

    /// How long until the interval allows an unknown-`kid` refetch.
    fn until_fetch_allowed(&self) -> Duration {
        let last = *self.last_kid_fetch.lock().unwrap_or_else(|p| p.into_inner());
        last.map_or(Duration::ZERO, |t| {
            (t + self.settings.kid_refetch_interval).saturating_duration_since(Instant::now())
        })
    }

    /// Fetches and installs keys once. On failure the last good keys stay.
    pub async fn refresh(&self) -> Result<Option<Duration>, RefreshError> {
        self.fetching.store(true, Ordering::Release);
        let outcome = match self.fetch_and_parse().await {
            Ok(Fresh::Parsed { parsed, max_age, validators }) => {
                for r in &parsed.rejected {
                    self.metrics.record_key_rejected(&self.provider, r.as_str());
                    tracing::warn!(provider = %self.provider, reason = r.as_str(), "JWKS key dropped");
                }
                if parsed.keys.is_empty() {
                    Err(RefreshError::NoUsableKey { rejected: parsed.rejected.len() })
                } else {
                    self.install(parsed.keys);
                    *self.validators.lock().unwrap_or_else(|p| p.into_inner()) = validators;
                    Ok(max_age)
                }
            }
            Ok(Fresh::Unchanged { max_age }) => {
                let state = self.state.load_full();
                if state.keys.is_empty() {
                    Err(RefreshError::NotModifiedWithoutKeys)
                } else {
                    self.confirm(&state);
                    tracing::debug!(provider = %self.provider, "JWKS not modified");
                    Ok(max_age)
                }
            }
            Err(e) => Err(e),
        };
        if let Err(error) = &outcome {
            self.refresh_failed(error);
        }
        self.fetching.store(false, Ordering::Release);
        self.attempts.send_modify(|g| *g += 1);
        outcome
    }

    /// Installs a fetched set. The same keys as before (a periodic refetch of an unchanged
    /// JWKS without validators) keep the generation, so cache hits stay on the fast path.
    fn install(&self, keys: Vec<VerifyKey>) {
        let old = self.state.load_full();
        let same = old.keys.len() == keys.len() && old.keys.iter().zip(&keys).all(|(a, b)| a.id == b.id);
        let n = keys.len();
        let state = if same {
            KeyState { keys: old.keys.clone(), fetched_at: Some(Instant::now()), generation: old.generation }
        } else {
            KeyState { keys: keys.into(), fetched_at: Some(Instant::now()), generation: old.generation + 1 }
        };
        self.state.store(Arc::new(state));
        self.generation.store(self.state.load().generation, Ordering::Release);
        self.publish_deadline();
        self.metrics.record_jwks_refresh(&self.provider, true, Some(n));
        if same {
            tracing::debug!(provider = %self.provider, keys = n, "JWKS refreshed, keys unchanged");
        } else {
            // Info on the first load and on every change of the key set.
            let state = self.state.load();
            let kids: Vec<&str> = state.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
            tracing::info!(provider = %self.provider, keys = n, kids = ?kids, "keys loaded");
        }
    }

    /// A 304: the keys held are current as of now.
    fn confirm(&self, state: &KeyState) {
        let confirmed =
            KeyState { keys: state.keys.clone(), fetched_at: Some(Instant::now()), generation: state.generation };
        self.state.store(Arc::new(confirmed));
        self.publish_deadline();
        self.metrics.record_jwks_refresh(&self.provider, true, Some(state.keys.len()));
    }

    /// Cache hits compare whole seconds: the last second that is surely within `max_stale`
    /// (`now` > it ⇒ stale), so a hit goes stale up to a second before `usable()` turns
    /// false, never after.
    fn publish_deadline(&self) {
        let max_stale = i64::try_from(self.settings.max_stale.as_secs()).unwrap_or(i64::MAX);
        let last = crate::verify::unix_now().saturating_add(max_stale).saturating_sub(1);
        self.stale_after.store(last, Ordering::Relaxed);
    }

    fn refresh_failed(&self, error: &RefreshError) {
        self.metrics.record_jwks_refresh(&self.provider, false, None);
        tracing::warn!(provider = %self.provider, error = %ErrorChain(error), "JWKS refresh failed; keeping the last good keys");
        if matches!(self.source, JwksSource::Discovery { .. }) {
            // Look the document up again next time: the JWKS may have moved.
            *self.discovered_uri.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    async fn fetch_and_parse(&self) -> Result<Fresh, RefreshError> {
        let s = &self.settings;
        let uri = match &self.source {
            JwksSource::Uri(uri) => uri.clone(),
            JwksSource::File(path) => {
                let fetched = fetch::read_file(path, s.max_bytes).await?;
                let parsed = parse_jwks(&fetched.body, &self.allowed)?;
                return Ok(Fresh::Parsed { parsed, max_age: None, validators: None });
            }
            JwksSource::Discovery { issuer } => {
                let known = self.discovered_uri.lock().unwrap_or_else(|p| p.into_inner()).clone();
                match known {
                    Some(u) => u,
                    None => {
                        let u = discover(&self.client, issuer, s.timeout, s.max_bytes).await?;
                        *self.discovered_uri.lock().unwrap_or_else(|p| p.into_inner()) = Some(u.clone());
                        u
                    }
                }
            }
            JwksSource::None => {
                return Ok(Fresh::Parsed { parsed: ParsedJwks::default(), max_age: None, validators: None })
            }
        };
        // Validators only for the URL the held keys came from (discovery may move it).
        let known = match &*self.validators.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((url, v)) if *url == uri => v.clone(),
            _ => Validators::default(),
        };
        match fetch_conditional(&self.client, &uri, s.timeout, s.max_bytes, &known).await? {
            Conditional::NotModified { max_age } => Ok(Fresh::Unchanged { max_age }),
            Conditional::Modified(fetched) => {
                let parsed = parse_jwks(&fetched.body, &self.allowed)?;
                let validators = (!fetched.validators.is_empty()).then_some((uri, fetched.validators));
                Ok(Fresh::Parsed { parsed, max_age: fetched.max_age, validators })
            }
        }
    }

    /// One refresh in its own task, so that a panic in it (a bug a hostile JWKS found) is
    /// a failed refresh, never the end of this provider's refresh loop.
    async fn refresh_guarded(self: &Arc<Self>) -> Result<Option<Duration>, RefreshError> {
        let me = self.clone();
        match run_caught(async move { me.refresh().await }).await {
            Some(outcome) => outcome,
            None => {
                let error = RefreshError::Panicked;
                self.refresh_failed(&error);
                self.fetching.store(false, Ordering::Release);
                self.attempts.send_modify(|g| *g += 1);
                Err(error)
            }
        }
    }

    /// The background loop: refresh on schedule, back off with jitter on failure, and
    /// answer unknown-`kid` refetch requests no more often than `kid_refetch_interval`.
    /// Runs until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        if matches!(self.source, JwksSource::None) {
            return;
        }
        let mut failures = 0u32;
        let mut for_kid = false;
        loop {
            if for_kid {
                *self.last_kid_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            }
            let outcome = self.refresh_guarded().await;
            failures = if outcome.is_ok() { 0 } else { failures.saturating_add(1) };
            let delay =
                next_refresh(outcome.as_ref().ok().copied(), failures, self.settings.refresh_interval, rand::random());
            for_kid = tokio::select! {
                _ = tokio::time::sleep(delay) => false,
                _ = self.refetch.notified() => {
                    // Requests arriving meanwhile add nothing: one permit, one fetch.
                    tokio::time::sleep(self.until_fetch_allowed()).await;
                    true
                }
            };
        }
    }
}

/// Runs `fut` in its own task: `None` if it panicked.
async fn run_caught<T: Send + 'static>(fut: impl std::future::Future<Output = T> + Send + 'static) -> Option<T> {
    match tokio::spawn(fut).await {
        Ok(v) => Some(v),
        Err(e) if e.is_panic() => None,
        // Cancelled: only at runtime shutdown.
        Err(_) => None,
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

    #[tokio::test]
    async fn a_panic_is_caught_not_propagated() {
        assert_eq!(run_caught(async { 7 }).await, Some(7));
        assert_eq!(run_caught(async { panic!("hostile input") }).await, None::<()>);
    }

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
