//! Revocation written → enforced: per sample, a new token is allowed, its `jti` written
//! to Redis with the key layout hopauth reads, and the time to the first 401 through Envoy
//! recorded. The same measure for the sidecar and the module.

use std::time::Duration;

use hopauth_testkit::redis_server::RedisServer;

use crate::http::until_status;
use crate::{claims, Fixture};

/// Samples per measure (the p99 is the second-worst of 200).
pub(crate) const REVOCATION_SAMPLES: usize = 200;

/// Per sample: a new token is allowed through `listen`, its `jti` is written to Redis
/// (`<prefix>-<i>`), and the time from that write to the first 401 is recorded.
pub(crate) fn revocation_latency(listen: u16, fx: &Fixture, redis: &RedisServer, prefix: &str) -> Vec<Duration> {
    let mut lat = Vec::new();
    for i in 0..REVOCATION_SAMPLES {
        let jti = format!("{prefix}-{i}");
        let t = fx.key.sign_jwt(&claims("rev", &jti)).unwrap();
        until_status(listen, &t, 200, Duration::from_secs(2)).expect("token allowed first");
        redis.cli(&["SET", &format!("hopauth:revoked:jti:{jti}"), "1", "EX", "300"]);
        // From the moment the SET returned to the first 401 through Envoy.
        lat.push(until_status(listen, &t, 401, Duration::from_secs(2)).expect("revocation enforced"));
    }
    lat.sort();
    lat
}
