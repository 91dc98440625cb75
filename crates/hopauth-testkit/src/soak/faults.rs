//! The faults the soak injects, in the order of one cycle.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// redis-server killed and restarted at once (well within `max_staleness`).
    RedisRestartShort,
    /// redis-server killed for `max_staleness` + 2 s.
    RedisDownLong,
    /// hopauth ↔ Redis partitioned (fault proxy) for a third of `max_staleness` / for
    /// `max_staleness` + 2 s.
    PartitionShort,
    PartitionLong,
    /// Every hopauth ↔ Redis connection reset.
    Reset,
    /// 400 ms added each way between hopauth and Redis for half of `max_staleness`.
    Slow,
    /// redis-server stopped (SIGSTOP) for `max_staleness` + 2 s.
    FrozenLong,
    /// A provider's JWKS answering 500, or refusing connections, for two refresh intervals.
    JwksFailing(usize),
    JwksDown(usize),
    /// A provider's key rotation.
    Rotate(usize),
}

impl Fault {
    pub(super) fn name(&self) -> String {
        match self {
            Fault::RedisRestartShort => "redis restart (short)".into(),
            Fault::RedisDownLong => "redis down (long)".into(),
            Fault::PartitionShort => "redis partition (short)".into(),
            Fault::PartitionLong => "redis partition (long)".into(),
            Fault::Reset => "redis connections reset".into(),
            Fault::Slow => "redis +400ms".into(),
            Fault::FrozenLong => "redis frozen (long)".into(),
            Fault::JwksFailing(p) => format!("JWKS p{p} 500s"),
            Fault::JwksDown(p) => format!("JWKS p{p} down"),
            Fault::Rotate(p) => format!("key rotation p{p}"),
        }
    }
}

/// The schedule, repeated; the kinds a short run must see come first.
pub(super) const CYCLE: [Fault; 13] = [
    Fault::RedisRestartShort,
    Fault::PartitionLong,
    Fault::Rotate(1),
    Fault::RedisDownLong,
    Fault::Reset,
    Fault::JwksDown(0),
    Fault::FrozenLong,
    Fault::Rotate(0),
    Fault::Slow,
    Fault::JwksFailing(2),
    Fault::PartitionShort,
    Fault::Rotate(2),
    Fault::JwksFailing(1),
];
