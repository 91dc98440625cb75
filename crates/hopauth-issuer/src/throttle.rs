//! Token-bucket rate limits keyed by a string (username, client address, refresh family),
//! in this process. Keys are chosen by clients, so memory and time per request are bounded
//! whatever they send: the buckets live in a bounded cache (moka) with per-key locking, and
//! a bucket left alone long enough to be full again is forgotten, which changes nothing.

use std::time::Duration;

use moka::ops::compute::Op;
use moka::sync::Cache;
use tokio::time::Instant;

use super::config::Rate;

/// Buckets kept per limit. Past this many keys the least used are forgotten (their next
/// request starts from a full bucket); moka's TinyLFU admission keeps the keys that are hit
/// often, so a flood of one-off keys does not push out the bucket being limited. About
/// 100 bytes a bucket: 10 MB per limit at most.
pub const MAX_KEYS: u64 = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// One rate limit, many keys.
pub struct Throttle {
    rate: Rate,
    buckets: Cache<String, Bucket>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").field("rate", &self.rate).field("keys", &self.buckets.entry_count()).finish()
    }
}

/// Tokens in a bucket after `elapsed`, capped at `burst`.
fn refilled(tokens: f64, elapsed: Duration, rate: Rate) -> f64 {
    (tokens + elapsed.as_secs_f64() / rate.every.as_secs_f64()).min(f64::from(rate.burst))
}

/// How long until one whole token is available.
fn wait_for_one(tokens: f64, rate: Rate) -> Duration {
    rate.every.mul_f64((1.0 - tokens).max(0.0))
}

impl Throttle {
    pub fn new(rate: Rate) -> Self {
        Self::with_capacity(rate, MAX_KEYS)
    }

    /// At most `max_keys` buckets (tests use a small one).
    pub fn with_capacity(rate: Rate, max_keys: u64) -> Self {
        // An untouched bucket is full after burst × every: forgetting it then loses nothing.
        let idle = rate.every.saturating_mul(rate.burst).max(Duration::from_millis(1));
        let buckets = Cache::builder().max_capacity(max_keys).time_to_idle(idle).build();
        Throttle { rate, buckets }
    }

    /// Runs `f` on the refilled bucket of `key`, alone (moka's per-key lock, no global one).
    fn with_bucket<T>(&self, key: &str, now: Instant, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let rate = self.rate;
        let mut out = None;
        self.buckets.entry_by_ref(key).and_compute_with(|entry| {
            let mut bucket =
                entry.map(|e| e.into_value()).unwrap_or(Bucket { tokens: f64::from(rate.burst), updated: now });
            bucket.tokens = refilled(bucket.tokens, now.saturating_duration_since(bucket.updated), rate);
            bucket.updated = now;
            out = Some(f(&mut bucket));
            Op::Put(bucket)
        });
        out.expect("and_compute_with runs its closure")
    }

    /// Takes one token; `Err(retry_after)` when the bucket is empty.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.take_at(key, Instant::now())
    }

    pub fn take_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        self.with_bucket(key, now, |b| {
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                Ok(())
            } else {
                Err(wait_for_one(b.tokens, rate))
            }
        })
    }

    /// Gives back a token taken by `take` (capped at the burst): the request it paid for
    /// turned out not to count, e.g. a login whose password was right.
    pub fn refund(&self, key: &str) {
        self.refund_at(key, Instant::now())
    }

    pub fn refund_at(&self, key: &str, now: Instant) {
        let burst = f64::from(self.rate.burst);
        self.with_bucket(key, now, |b| b.tokens = (b.tokens + 1.0).min(burst))
    }

    /// `Err(retry_after)` if `take` would fail now; takes nothing.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        self.with_bucket(key, now, |b| if b.tokens >= 1.0 { Ok(()) } else { Err(wait_for_one(b.tokens, rate)) })
    }

    /// Buckets held now (after pending evictions): what memory follows.
    pub fn keys(&self) -> u64 {
        self.buckets.run_pending_tasks();
        self.buckets.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let t = Throttle::new(Rate { burst: 3, every: Duration::from_secs(10) });
        let start = Instant::now();
        for _ in 0..3 {
            t.take_at("alice", start).unwrap();
        }
        let wait = t.take_at("alice", start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        assert!(t.check_at("alice", start).is_err());
        assert!(t.take_at("bob", start).is_ok(), "keys are independent");
        let later = start + Duration::from_secs(5);
        assert_eq!(t.take_at("alice", later).unwrap_err(), Duration::from_secs(5));
        assert!(t.take_at("alice", start + Duration::from_secs(10)).is_ok());
        // A long pause refills only up to the burst.
        let much_later = start + Duration::from_secs(1000);
        for _ in 0..3 {
            t.take_at("alice", much_later).unwrap();
        }
        assert!(t.take_at("alice", much_later).is_err());
    }

    #[test]
    fn refund_gives_back_one_token_up_to_the_burst() {
        let t = Throttle::new(Rate { burst: 2, every: Duration::from_secs(3600) });
        let now = Instant::now();
        t.take_at("alice", now).unwrap();
        t.take_at("alice", now).unwrap();
        assert!(t.take_at("alice", now).is_err());
        t.refund_at("alice", now);
        t.take_at("alice", now).unwrap();
        assert!(t.take_at("alice", now).is_err());
        // Refunds never raise a bucket above its burst.
        for _ in 0..5 {
            t.refund_at("bob", now);
        }
        t.take_at("bob", now).unwrap();
        t.take_at("bob", now).unwrap();
        assert!(t.take_at("bob", now).is_err());
    }

    #[test]
    fn a_flood_of_keys_that_never_refill_stays_bounded() {
        // Nothing refills within the test, so nothing is "full" and could simply be swept:
        // before, every key stayed and each new one cost a sweep of all the others.
        let t = Throttle::with_capacity(Rate { burst: 1, every: Duration::from_secs(3600) }, 1_000);
        let now = Instant::now();
        for i in 0..20_000 {
            t.take_at(&format!("attacker-{i}"), now).unwrap();
        }
        let held = t.keys();
        assert!(held <= 1_000, "{held} buckets held, capacity 1000");
        // A key that keeps being limited is kept through the flood.
        let t = Throttle::with_capacity(Rate { burst: 1, every: Duration::from_secs(3600) }, 1_000);
        t.take_at("alice", now).unwrap();
        for i in 0..20_000 {
            let _ = t.take_at(&format!("attacker-{i}"), now);
            if i % 50 == 0 {
                assert!(t.take_at("alice", now).is_err(), "alice's empty bucket was forgotten after {i} keys");
            }
        }
    }
}
