//! Token-bucket rate limits keyed by a string (username, client address, refresh family),
//! in this process. Buckets that have refilled are forgotten, so memory follows the keys
//! that are actually being limited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::config::Rate;

/// Above this many buckets, full ones are swept out before a new one is added.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// One rate limit, many keys.
#[derive(Debug)]
pub struct Throttle {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
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
        Throttle { rate, buckets: Mutex::new(HashMap::new()) }
    }

    fn with_bucket<T>(&self, key: &str, now: Instant, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > SWEEP_ABOVE && !buckets.contains_key(key) {
            let rate = self.rate;
            buckets.retain(|_, b| {
                refilled(b.tokens, now.saturating_duration_since(b.updated), rate) < f64::from(rate.burst)
            });
        }
        let bucket =
            buckets.entry(key.to_string()).or_insert(Bucket { tokens: f64::from(self.rate.burst), updated: now });
        bucket.tokens = refilled(bucket.tokens, now.saturating_duration_since(bucket.updated), self.rate);
        bucket.updated = now;
        f(bucket)
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

    /// `Err(retry_after)` if `take` would fail now; takes nothing.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        self.with_bucket(key, now, |b| if b.tokens >= 1.0 { Ok(()) } else { Err(wait_for_one(b.tokens, rate)) })
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
    fn full_buckets_are_swept() {
        let t = Throttle::new(Rate { burst: 1, every: Duration::from_millis(1) });
        let start = Instant::now();
        for i in 0..=SWEEP_ABOVE {
            t.take_at(&i.to_string(), start).unwrap();
        }
        t.take_at("new", start + Duration::from_secs(1)).unwrap();
        assert_eq!(t.buckets.lock().unwrap().len(), 1);
    }
}
