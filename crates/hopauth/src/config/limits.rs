//! The load limits: the largest token, the verified-token cache, and how much verification
//! work may queue or run at once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, Problems};

/// Largest token accepted, checked before any decoding (RFC 8725 §3.x; CVE-2025-30204 class).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Verified-token cache capacity in entries; an entry is ~1.5 KiB with a 384-byte token
/// (docs/performance.md), so this alone bounds the cache near 150 MiB.
pub const DEFAULT_VERIFY_CACHE_ENTRIES: u64 = 100_000;
/// Verified-token cache capacity in bytes, whatever the token size: 8 KiB tokens would make
/// 100k entries ~2 GiB, so bytes are bounded too.
pub const DEFAULT_VERIFY_CACHE_BYTES: u64 = 192 * 1024 * 1024;
/// Queueing after which a Check needing a full verification is shed: well under Envoy's
/// 200 ms Check timeout, so the client gets a reasoned 503 rather than a timeout.
pub const DEFAULT_MAX_QUEUE_DELAY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifyCacheConfig {
    pub max_entries: u64,
    /// Bound on the bytes the entries hold (tokens, responses, identity, bookkeeping).
    pub max_bytes: u64,
}

impl Default for VerifyCacheConfig {
    fn default() -> Self {
        Self { max_entries: DEFAULT_VERIFY_CACHE_ENTRIES, max_bytes: DEFAULT_VERIFY_CACHE_BYTES }
    }
}

/// The CPUs this process may use (cgroup quota included), at least 1: the default of
/// `max_concurrent_verifies`.
pub fn default_max_concurrent_verifies() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(super) fn validate(c: &Config, out: &mut Problems) {
    if c.max_token_bytes < 64 || c.max_token_bytes > 1024 * 1024 {
        out.add("max_token_bytes", "must be between 64 and 1048576");
    }
    if c.max_queue_delay.is_zero() || c.max_queue_delay > Duration::from_secs(10) {
        out.add("max_queue_delay", "must be more than 0 and at most 10s");
    }
    if c.verify_cache.max_entries == 0 {
        out.add("verify_cache.max_entries", "must be at least 1");
    }
    if c.verify_cache.max_bytes < 1024 * 1024 {
        out.add("verify_cache.max_bytes", "must be at least 1048576 (1 MiB)");
    }
    if c.max_concurrent_verifies == 0 || c.max_concurrent_verifies > 1024 {
        out.add("max_concurrent_verifies", "must be between 1 and 1024");
    }
}
