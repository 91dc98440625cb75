//! `throttle`: the token buckets that bound what one user, address or refresh family can
//! cost, and how many refreshes run at once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use hopauth_service::config_file::{duration, Problems};

/// A token bucket: `burst` at once, then one more every `every`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub burst: u32,
    #[serde(with = "duration")]
    pub every: Duration,
}

/// Five wrong passwords, then one guess a minute.
pub const DEFAULT_LOGIN_PER_USER: Rate = Rate { burst: 5, every: Duration::from_secs(60) };
/// A burst of 20 logins, then one a second: enough for a NAT, too little to brute-force.
pub const DEFAULT_LOGIN_PER_ADDRESS: Rate = Rate { burst: 20, every: Duration::from_secs(1) };
/// A client refreshes once per access token lifetime; 10 at once covers retries.
pub const DEFAULT_REFRESH_PER_FAMILY: Rate = Rate { burst: 10, every: Duration::from_secs(10) };
/// A NAT of a few hundred clients refreshing every 5 minutes needs about one a second; a
/// burst of 100 covers a whole office waking up. Bounds the store round trips one address causes.
pub const DEFAULT_REFRESH_PER_ADDRESS: Rate = Rate { burst: 100, every: Duration::from_millis(100) };
/// Logouts are rarer than logins: 20 at once, then one a second.
pub const DEFAULT_REVOKE_PER_ADDRESS: Rate = Rate { burst: 20, every: Duration::from_secs(1) };
/// A refresh is a store round trip and a signature (about a millisecond): 64 in flight is
/// tens of milliseconds of work queued at most.
pub const DEFAULT_REFRESH_IN_FLIGHT: u32 = 64;

/// Past this, "in flight" no longer bounds anything a 2-core issuer can serve promptly.
pub const MAX_REFRESH_IN_FLIGHT: u32 = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Failed password logins per username.
    pub login_per_user: Rate,
    /// Password logins (good or bad) per client address: bounds the argon2 work one client causes.
    pub login_per_address: Rate,
    /// Refreshes per refresh family (login session), spent only by a genuine token.
    pub refresh_per_family: Rate,
    /// Refresh grants (any token, good or bad) per client address.
    pub refresh_per_address: Rate,
    /// `/revoke` and `/logout` calls (one shared bucket) per client address.
    pub revoke_per_address: Rate,
    /// Refresh grants being worked on at once in this process; more are shed with 429 and
    /// `retry-after` instead of queueing, so a refresh burst keeps a bounded latency.
    pub refresh_in_flight: u32,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            login_per_user: DEFAULT_LOGIN_PER_USER,
            login_per_address: DEFAULT_LOGIN_PER_ADDRESS,
            refresh_per_family: DEFAULT_REFRESH_PER_FAMILY,
            refresh_per_address: DEFAULT_REFRESH_PER_ADDRESS,
            revoke_per_address: DEFAULT_REVOKE_PER_ADDRESS,
            refresh_in_flight: DEFAULT_REFRESH_IN_FLIGHT,
        }
    }
}

impl ThrottleConfig {
    pub(super) fn validate(&self, out: &mut Problems) {
        for (key, rate) in [
            ("throttle.login_per_user", self.login_per_user),
            ("throttle.login_per_address", self.login_per_address),
            ("throttle.refresh_per_family", self.refresh_per_family),
            ("throttle.refresh_per_address", self.refresh_per_address),
            ("throttle.revoke_per_address", self.revoke_per_address),
        ] {
            if rate.burst == 0 || rate.every.is_zero() {
                out.add(key, "burst and every must be more than 0");
            }
        }
        if self.refresh_in_flight == 0 || self.refresh_in_flight > MAX_REFRESH_IN_FLIGHT {
            out.add("throttle.refresh_in_flight", format!("between 1 and {MAX_REFRESH_IN_FLIGHT}"));
        }
    }
}
