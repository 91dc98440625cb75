//! The one place the core reads the time: Unix seconds (token claims, revocations) and a
//! monotonic [`Instant`] for key ages, which is tokio's, so a test with a paused tokio clock
//! moves it (outside a runtime it is the system's monotonic clock).

use std::time::{SystemTime, UNIX_EPOCH};

pub use tokio::time::Instant;

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
