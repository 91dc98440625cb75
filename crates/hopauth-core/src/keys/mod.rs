//! A provider's verification keys as the request path sees them: configured secrets plus
//! the last fetched set, read lock-free (arc-swap), kept through failed refreshes for
//! `max_stale`, numbered by generation so a cached token can tell cheaply whether the key
//! that verified it still stands. Also the unknown-`kid` refetch policy: single-flight, at
//! most one fetch per `kid_refetch_interval`, a wait of at most `kid_refetch_wait`.
//!
//! Fetching is the host's: it calls [`KeySet::install`] / [`KeySet::confirm`] with what it
//! fetched, and listens to [`KeySet::refetch_requested`].

mod jwk;
mod refetch;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};

pub use jwk::{
    keys_from_jwk, parse_jwks, JwksDocError, KeyId, KeyRejection, ParsedJwks, VerifyKey, MAX_RSA_BITS, MIN_RSA_BITS,
};
pub use refetch::RefetchWait;

use crate::alg::Alg;
use crate::clock::{unix_now, Instant};

/// Default `max_stale`: fetched keys serve this long after the last successful fetch.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// Default `kid_refetch_interval`.
pub const DEFAULT_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(1);
/// Default `kid_refetch_wait`.
pub const DEFAULT_KID_REFETCH_WAIT: Duration = Duration::from_millis(100);

/// How a key set ages and how often an unknown `kid` may ask for a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySettings {
    pub max_stale: Duration,
    pub kid_refetch_interval: Duration,
    pub kid_refetch_wait: Duration,
}

impl Default for KeySettings {
    fn default() -> Self {
        KeySettings {
            max_stale: DEFAULT_MAX_STALE,
            kid_refetch_interval: DEFAULT_KID_REFETCH_INTERVAL,
            kid_refetch_wait: DEFAULT_KID_REFETCH_WAIT,
        }
    }
}

/// The keys in use and when they were last confirmed.
pub struct KeyState {
    pub keys: Arc<[VerifyKey]>,
    /// Last successful fetch (a 200 or a 304 confirming these keys); `None` before the first.
    pub fetched_at: Option<Instant>,
    /// Bumped each time a different set of keys is installed; starts at 1.
    pub generation: u64,
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
    set: Arc<KeySet>,
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
        let set = &*self.set;
        if now > set.stale_after.load(Ordering::Relaxed) {
            return KeyStanding::Stale;
        }
        if self.seen_in.load(Ordering::Relaxed) == set.generation.load(Ordering::Acquire) {
            return KeyStanding::Current;
        }
        let state = set.state.load();
        if set.static_keys.iter().chain(state.keys.iter()).any(|k| k.id == self.id) {
            self.seen_in.store(state.generation, Ordering::Relaxed);
            KeyStanding::Current
        } else {
            KeyStanding::Withdrawn
        }
    }
}

pub struct KeySet {
    provider: Arc<str>,
    /// The public-key algorithms a fetched document may provide keys for.
    allowed: Vec<Alg>,
    /// Keys come from a document the host fetches (false: configured secrets only).
    fetched: bool,
    settings: KeySettings,
    /// HMAC keys from configured secrets; never expire.
    static_keys: Vec<VerifyKey>,
    state: ArcSwap<KeyState>,
    /// `state.generation`, published after each install, read by every cache hit.
    generation: AtomicU64,
    /// Unix second after which the fetched keys are past `max_stale` (cache hits compare it
    /// with the clock the Check already read); `i64::MAX` for a provider without a JWKS.
    stale_after: AtomicI64,
    /// Wakes the host's refresh loop for an unknown `kid`.
    refetch: Notify,
    /// When the last fetch asked for by an unknown `kid` started: the next keeps
    /// `kid_refetch_interval` from it.
    last_kid_fetch: Mutex<Option<Instant>>,
    fetching: AtomicBool,
    /// Counts finished fetch attempts, for requests waiting on a refetch.
    attempts: watch::Sender<u64>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet").field("provider", &self.provider).finish_non_exhaustive()
    }
}

impl KeySet {
    /// A provider's key set: `static_keys` from configured secrets, and, when `fetched`,
    /// room for the keys the host fetches (none until the first [`install`](Self::install)).
    pub fn new(
        provider: &str,
        allowed: Vec<Alg>,
        fetched: bool,
        settings: KeySettings,
        static_keys: Vec<VerifyKey>,
    ) -> Self {
        KeySet {
            provider: provider.into(),
            allowed,
            fetched,
            settings,
            static_keys,
            state: ArcSwap::from_pointee(KeyState { keys: Arc::new([]), fetched_at: None, generation: 1 }),
            generation: AtomicU64::new(1),
            stale_after: AtomicI64::new(if fetched { i64::MIN } else { i64::MAX }),
            refetch: Notify::new(),
            last_kid_fetch: Mutex::new(None),
            fetching: AtomicBool::new(false),
            attempts: watch::channel(0).0,
        }
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The algorithms fetched keys may be for (what `parse_jwks` is given).
    pub fn allowed(&self) -> &[Alg] {
        &self.allowed
    }

    /// Whether the host fetches keys for this set.
    pub fn is_fetched(&self) -> bool {
        self.fetched
    }

    pub fn settings(&self) -> &KeySettings {
        &self.settings
    }

    /// The fetched keys and when they were confirmed.
    pub fn current(&self) -> Arc<KeyState> {
        self.state.load_full()
    }

    /// True when tokens of this provider can be verified now: configured secrets, or
    /// fetched keys no older than `max_stale`.
    pub fn usable(&self) -> bool {
        if !self.fetched {
            return !self.static_keys.is_empty();
        }
        let state = self.state.load();
        !state.keys.is_empty() && state.fetched_at.is_some_and(|t| t.elapsed() <= self.settings.max_stale)
    }

    /// Ties a token verified by key `id` to this key set, for the cache.
    pub fn bind(self: &Arc<Self>, id: KeyId) -> KeyBinding {
        KeyBinding { set: self.clone(), id, seen_in: AtomicU64::new(0) }
    }

    /// Time since the keys in use were fetched; `None` before the first fetch; zero for a
    /// provider with configured secrets only.
    pub fn key_age(&self) -> Option<Duration> {
        if !self.fetched {
            // Configured secrets: as fresh as the config itself.
            return Some(Duration::ZERO);
        }
        self.state.load().fetched_at.map(|t| t.elapsed())
    }

    /// Keys for a token with `kid` and `alg`. A key without `kid` serves any token; a key is
    /// only ever offered for its own algorithm.
    pub fn with_candidates<T>(&self, kid: Option<&str>, alg: Alg, f: impl FnOnce(KeyLookup<'_>) -> T) -> T {
        let state = self.state.load();
        let fetched_usable = !self.fetched || state.fetched_at.is_some_and(|t| t.elapsed() <= self.settings.max_stale);
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

    /// Installs a fetched, non-empty set. The same keys as before (a periodic refetch of an
    /// unchanged JWKS without validators) keep the generation, so cache hits stay on the
    /// fast path. Returns whether the set changed.
    pub fn install(&self, keys: Vec<VerifyKey>) -> bool {
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
        if same {
            tracing::debug!(provider = %self.provider, keys = n, "JWKS refreshed, keys unchanged");
        } else {
            // Info on the first load and on every change of the key set.
            let state = self.state.load();
            let kids: Vec<&str> = state.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
            tracing::info!(provider = %self.provider, keys = n, kids = ?kids, "keys loaded");
        }
        !same
    }

    /// A 304: the keys held are current as of now. `None` when no keys are held; else how
    /// many.
    pub fn confirm(&self) -> Option<usize> {
        let state = self.state.load_full();
        if state.keys.is_empty() {
            return None;
        }
        let confirmed =
            KeyState { keys: state.keys.clone(), fetched_at: Some(Instant::now()), generation: state.generation };
        self.state.store(Arc::new(confirmed));
        self.publish_deadline();
        Some(state.keys.len())
    }

    /// Cache hits compare whole seconds: the last second that is surely within `max_stale`
    /// (`now` > it ⇒ stale), so a hit goes stale up to a second before `usable()` turns
    /// false, never after.
    fn publish_deadline(&self) {
        let max_stale = i64::try_from(self.settings.max_stale.as_secs()).unwrap_or(i64::MAX);
        let last = unix_now().saturating_add(max_stale).saturating_sub(1);
        self.stale_after.store(last, Ordering::Relaxed);
    }
}
