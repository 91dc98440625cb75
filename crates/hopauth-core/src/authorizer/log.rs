//! The deny log line's parts: a per-second line budget shared by every thread without a
//! lock, the token fingerprint, the path without its query, and the allocation-free
//! readers of `x-request-id` and the W3C trace id.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::token::RequestView;

/// Deny lines written per second at most (docs/security.md#f12-high-cardinality-input: logs rate-limited).
pub const DENY_LOG_LINES_PER_SEC: u32 = 50;
/// Longest `x-request-id` / trace id written to a log line; longer ones are not written.
const MAX_LOGGED_ID: usize = 128;

/// A per-second budget of log lines, shared by every thread without a lock.
#[derive(Default)]
pub(super) struct LogBudget {
    second: AtomicI64,
    used: AtomicU32,
    suppressed: AtomicU64,
}

impl LogBudget {
    /// Whether one more line may be written in unix second `now`, and, on the first call
    /// of a new second, how many lines earlier seconds did not write.
    pub(super) fn take(&self, now: i64) -> (bool, u64) {
        let mut suppressed = 0;
        let current = self.second.load(Ordering::Relaxed);
        if now != current && self.second.compare_exchange(current, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.used.store(0, Ordering::Relaxed);
            suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < DENY_LOG_LINES_PER_SEC {
            (true, suppressed)
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            (false, suppressed)
        }
    }
}

/// First 8 bytes of SHA-256, hex: enough to correlate log lines, useless to replay.
pub fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The path without its query string (which may hold a token).
pub(super) fn log_path(path: &str) -> &str {
    let mut end = path.find(['?', '#']).unwrap_or(path.len()).min(256);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

/// The request's `x-request-id`, if it is printable ASCII of loggable length.
pub fn request_id<R: RequestView>(req: &R) -> Option<&str> {
    req.header_values("x-request-id").next().and_then(loggable)
}

/// The trace id of the request's W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn trace_id<R: RequestView>(req: &R) -> Option<&str> {
    let v = req.header_values("traceparent").next()?;
    let v = loggable(v)?;
    let mut parts = v.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    let hex = |s: &str, n| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 32) && !id.bytes().all(|b| b == b'0')).then_some(id)
}

/// `v` as text if a log line can carry it safely (no control characters, bounded).
fn loggable(v: &[u8]) -> Option<&str> {
    if v.is_empty() || v.len() > MAX_LOGGED_ID || !v.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    std::str::from_utf8(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req(Vec<(&'static str, &'static [u8])>);
    impl RequestView for Req {
        fn header_values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s [u8]> {
            let name = name.to_string();
            self.0.iter().filter(move |(n, _)| *n == name).map(|(_, v)| *v)
        }
        fn path(&self) -> &str {
            "/"
        }
    }

    #[test]
    fn deny_log_budget_caps_each_second_and_reports_what_it_dropped() {
        let budget = LogBudget::default();
        for _ in 0..DENY_LOG_LINES_PER_SEC {
            assert_eq!(budget.take(100), (true, 0));
        }
        assert_eq!(budget.take(100), (false, 0));
        assert_eq!(budget.take(100), (false, 0));
        // The next second writes again and reports the two lines it could not.
        assert_eq!(budget.take(101), (true, 2));
        assert_eq!(budget.take(101), (true, 0));
        // A quiet second in between changes nothing: the count is per second seen.
        assert_eq!(budget.take(105), (true, 0));
    }

    #[test]
    fn log_path_drops_the_query_and_bounds_the_length() {
        assert_eq!(log_path("/a/b?access_token=x"), "/a/b");
        assert_eq!(log_path("/a#frag"), "/a");
        let long = "é".repeat(200);
        assert!(log_path(&long).len() <= 256 && long.starts_with(log_path(&long)));
    }

    #[test]
    fn trace_id_reads_a_valid_traceparent_only() {
        let ok = Req(vec![("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]);
        assert_eq!(trace_id(&ok), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            &b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            b"garbage",
        ] {
            assert_eq!(trace_id(&Req(vec![("traceparent", bad)])), None, "{bad:?}");
        }
        assert_eq!(trace_id(&Req(vec![])), None);
    }

    #[test]
    fn request_id_refuses_what_could_forge_a_log_line() {
        assert_eq!(request_id(&Req(vec![("x-request-id", b"abc-123")])), Some("abc-123"));
        assert_eq!(request_id(&Req(vec![("x-request-id", b"a\nlevel=ERROR")])), None);
        assert_eq!(request_id(&Req(vec![("x-request-id", b"a b")])), None);
        let long: &'static [u8] = Box::leak(vec![b'a'; MAX_LOGGED_ID + 1].into_boxed_slice());
        assert_eq!(request_id(&Req(vec![("x-request-id", long)])), None);
    }
}
