//! The one place the core reads the time: Unix seconds (token claims, revocations) and a
//! monotonic [`Instant`] for everything measured in the process: key ages, the refetch
//! interval, and a request's arrival with its shedding deadline (`max_queue_delay`), which
//! hosts pass in as this type. It is tokio's, so a test with a paused tokio clock
//! (`start_paused`, `tokio::time::advance`) moves it; outside a runtime, as on an Envoy
//! worker thread, it is the system's monotonic clock (tested below).

use std::time::{SystemTime, UNIX_EPOCH};

pub use tokio::time::Instant;

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A host without a runtime reads the system's monotonic clock through the seam.
    #[test]
    fn outside_a_runtime_it_is_the_system_monotonic_clock() {
        let before = std::time::Instant::now();
        let now = Instant::now().into_std();
        let after = std::time::Instant::now();
        assert!(before <= now && now <= after, "{before:?} <= {now:?} <= {after:?}");
        // And it moves on its own (no paused clock to advance it).
        let deadline = after + Duration::from_secs(5);
        while Instant::now().into_std() <= now {
            assert!(std::time::Instant::now() < deadline, "the clock did not move");
            std::hint::spin_loop();
        }
    }

    /// Under a paused runtime it stands still until advanced.
    #[tokio::test(start_paused = true)]
    async fn a_paused_runtime_moves_it_only_when_advanced() {
        let t0 = Instant::now();
        let real = std::time::Instant::now();
        while real.elapsed() < Duration::from_millis(2) {
            std::hint::spin_loop();
        }
        assert_eq!(Instant::now(), t0);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(60));
    }
}
