//! Fault windows: from when a 503 is acceptable, and which refusals are Redis-outage blips.

use super::*;

#[derive(Debug, Clone)]
pub(super) struct Window {
    pub(super) what: String,
    pub(super) start: Instant,
    pub(super) end: Option<Instant>,
    /// From when a 503 is acceptable (None: never, the fault must be invisible).
    pub(super) ok_503_from: Option<Instant>,
    /// Whether this is a Redis outage (refusals before `ok_503_from` are blips).
    pub(super) redis: bool,
}

impl Window {
    pub(super) fn until(&self) -> Instant {
        self.end.map_or_else(|| Instant::now() + Duration::from_secs(3600), |e| e + RECOVERY)
    }

    pub(super) fn overlaps(&self, from: Instant, to: Instant) -> bool {
        from <= self.until() && to >= self.start
    }
}

#[derive(Default)]
pub(super) struct Windows(pub(super) Vec<Window>);

impl Windows {
    pub(super) fn may_503(&self, from: Instant, to: Instant) -> bool {
        self.0.iter().any(|w| w.ok_503_from.is_some_and(|f| from <= w.until() && to >= f))
    }

    /// A Redis outage in whose first `max_staleness` this request fell.
    pub(super) fn blip(&self, from: Instant, to: Instant) -> bool {
        self.0.iter().any(|w| w.redis && w.overlaps(from, to))
    }

    pub(super) fn any(&self, from: Instant, to: Instant) -> bool {
        self.0.iter().any(|w| w.overlaps(from, to))
    }
}
