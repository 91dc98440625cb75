//! Fetching each provider's keys into its core `KeySet`: at start and on a schedule in
//! the background, the last good set kept through failures, an unknown `kid` answered by
//! the refetch the key set asks for (its policy: single-flight, at most one per
//! `kid_refetch_interval`), made cheap by conditional requests.

mod fetch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use fetch::{
    check_jwks_uri, discover, fetch, fetch_conditional, http_client, parse_max_age, Conditional, ErrorChain,
    FetchError, Fetched, Validators,
};
use hopauth_core::keys::{parse_jwks, JwksDocError, KeySet, ParsedJwks};

use crate::metrics::JwksMetrics;

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

/// How one provider's document is fetched.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub refresh_interval: Duration,
    pub timeout: Duration,
    pub max_bytes: usize,
}

/// Fetches one provider's JWKS into its key set.
pub struct JwksRefresher {
    keys: Arc<KeySet>,
    source: JwksSource,
    settings: FetchSettings,
    discovered_uri: Mutex<Option<String>>,
    /// Validators of the document the installed keys came from, and its URL.
    validators: Mutex<Option<(String, Validators)>>,
    client: reqwest::Client,
    metrics: JwksMetrics,
}

impl std::fmt::Debug for JwksRefresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksRefresher").field("provider", &self.keys.provider()).finish_non_exhaustive()
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

impl JwksRefresher {
    pub fn new(
        keys: Arc<KeySet>,
        source: JwksSource,
        settings: FetchSettings,
        client: reqwest::Client,
        metrics: JwksMetrics,
    ) -> Self {
        JwksRefresher {
            keys,
            source,
            settings,
            discovered_uri: Mutex::new(None),
            validators: Mutex::new(None),
            client,
            metrics,
        }
    }

    pub fn keys(&self) -> &Arc<KeySet> {
        &self.keys
    }

    /// Fetches and installs keys once. On failure the last good keys stay.
    pub async fn refresh(&self) -> Result<Option<Duration>, RefreshError> {
        self.keys.fetch_started();
        let provider = self.keys.provider();
        let outcome = match self.fetch_and_parse().await {
            Ok(Fresh::Parsed { parsed, max_age, validators }) => {
                for r in &parsed.rejected {
                    self.metrics.key_rejected(*r);
                    tracing::warn!(provider, reason = r.as_str(), "JWKS key dropped");
                }
                if parsed.keys.is_empty() {
                    Err(RefreshError::NoUsableKey { rejected: parsed.rejected.len() })
                } else {
                    let n = parsed.keys.len();
                    self.keys.install(parsed.keys);
                    self.metrics.refreshed(Some(n));
                    *self.validators.lock().unwrap_or_else(|p| p.into_inner()) = validators;
                    Ok(max_age)
                }
            }
            Ok(Fresh::Unchanged { max_age }) => match self.keys.confirm() {
                None => Err(RefreshError::NotModifiedWithoutKeys),
                Some(n) => {
                    self.metrics.refreshed(Some(n));
                    tracing::debug!(provider, "JWKS not modified");
                    Ok(max_age)
                }
            },
            Err(e) => Err(e),
        };
        if let Err(error) = &outcome {
            self.refresh_failed(error);
        }
        self.keys.fetch_finished();
        outcome
    }

    fn refresh_failed(&self, error: &RefreshError) {
        self.metrics.refreshed(None);
        tracing::warn!(provider = %self.keys.provider(), error = %ErrorChain(error), "JWKS refresh failed; keeping the last good keys");
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
                let parsed = parse_jwks(&fetched.body, self.keys.allowed())?;
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
                let parsed = parse_jwks(&fetched.body, self.keys.allowed())?;
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
                self.keys.fetch_finished();
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
                self.keys.kid_fetch_started();
            }
            let outcome = self.refresh_guarded().await;
            failures = if outcome.is_ok() { 0 } else { failures.saturating_add(1) };
            let delay =
                next_refresh(outcome.as_ref().ok().copied(), failures, self.settings.refresh_interval, rand::random());
            for_kid = tokio::select! {
                _ = tokio::time::sleep(delay) => false,
                _ = self.keys.refetch_requested() => {
                    // Requests arriving meanwhile add nothing: one permit, one fetch.
                    tokio::time::sleep(self.keys.until_fetch_allowed()).await;
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
