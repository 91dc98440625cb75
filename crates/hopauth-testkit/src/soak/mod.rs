//! The soak: mixed traffic through a real Envoy (envoy/hopauth.yaml) in front of a real
//! `hopauth serve` process, three issuers (each its own JWKS server and key family), Redis
//! revocation, while faults are injected on a schedule, and an oracle that knows for every
//! request what the answer must be.
//!
//! Traffic: valid tokens of every issuer (200 with that token's `sub` upstream), the same on
//! a route needing a scope they lack (403), invalid ones (bad signature, expired, wrong
//! `aud`, unknown issuer, unknown `kid`, `alg: none`, garbage, none at all: 401), tokens
//! revoked while the run goes (by `jti` and by subject, through Redis directly and through
//! the admin API: 401 once enforced) and tokens of withdrawn keys (401 once the JWKS
//! refresh has seen the withdrawal).
//!
//! Faults, one at a time with gaps: Redis killed and restarted (shorter and longer than
//! `max_staleness`), Redis partitioned (the process stopped with SIGSTOP, so connections stay
//! open and nothing answers), a JWKS server failing (500s for longer than its refresh
//! interval), key rotation (publish a new key, sign with it, withdraw the old), and hopauth
//! restarted (SIGTERM, start again; the soak does not send SIGHUP reloads).
//!
//! The oracle's rules: a 200 is a wrong allow for an invalid token, for a token whose
//! revocation was acknowledged more than `max_staleness` + 1 s before the request was sent,
//! or for a key withdrawn more than a refresh interval + 2 s before. A 503 is accepted only
//! inside a declared window: a hopauth restart (until it is ready again + 2 s), or a Redis
//! outage longer than `max_staleness`, from half of `max_staleness` after it began until 4 s
//! after it ended. Refusals in the first `max_staleness` of a Redis outage are counted apart
//! ("blip refusals"): `docs/revocation.md` promises none, and `strict_blips` (the default)
//! makes them wrong refusals. Every request must be answered within `request_timeout`.
//!
//! Used by tests/soak.rs (short, `make test`) and examples/soak.rs (`make soak`).
//!
//! Layout: `windows` (fault windows), `state` (tokens and providers), `world` (the oracle),
//! `faults`, `process` (hopauth as a child), `traffic` (workers, revoker, probes), `report`
//! (counts and verdict), `run` (start, drive, stop).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Value};

use crate::fault_proxy::{Dir, FaultProxy};
use crate::load::{proc_sample, Conn, Latencies, ProcSample, Response};
use crate::redis_server::{free_port, RedisServer};
use crate::{jwks_of, now, start_echo, Envoy, JwksServer, ADMIN_TOKEN};

// One module per part of the run; they share this module's imports and each other's
// items through `use super::*`.
mod faults;
mod process;
mod report;
mod run;
mod state;
mod traffic;
mod windows;
mod world;

pub use self::report::{Counts, Report, Sample};
pub use self::run::run;
use self::{faults::*, process::*, report::flatness, state::*, traffic::*, windows::*, world::*};

const AUDIENCE: &str = "orders";
/// Valid tokens minted per key.
const TOKENS_PER_KEY: usize = 24;
/// Slack for scheduling on a loaded machine, added to every lag bound.
const GRACE: Duration = Duration::from_secs(1);
/// After a window ends, how long its 503s stay acceptable: reconnect, resync, readiness
/// poll and Envoy's 1 s health check.
const RECOVERY: Duration = Duration::from_secs(4);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    /// Requests per second offered, over all workers.
    pub rate: f64,
    /// Client connections sending traffic.
    pub workers: usize,
    pub max_staleness: Duration,
    pub jwks_refresh: Duration,
    /// The `hopauth` binary.
    pub hopauth_bin: PathBuf,
    /// When to restart hopauth, as fractions of `duration`.
    pub hopauth_restarts_at: Vec<f64>,
    pub revoke_every: Duration,
    /// Pause between two faults.
    pub fault_gap: Duration,
    pub sample_every: Duration,
    pub request_timeout: Duration,
    /// Count refusals in the first `max_staleness` of a Redis outage as wrong refusals.
    pub strict_blips: bool,
    /// Count withdrawn-key tokens still allowed (from the verify cache) as wrong allows,
    /// and fail the run on one allowed at the end.
    pub strict_withdrawal: bool,
}

impl Options {
    pub fn new(hopauth_bin: PathBuf, duration: Duration) -> Self {
        Options {
            duration,
            rate: 100.0,
            workers: 8,
            max_staleness: Duration::from_secs(2),
            jwks_refresh: Duration::from_secs(3),
            hopauth_bin,
            hopauth_restarts_at: vec![0.3],
            revoke_every: Duration::from_millis(1500),
            fault_gap: Duration::from_secs(4),
            sample_every: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            strict_blips: true,
            strict_withdrawal: true,
        }
    }
}

/// The path of a built binary next to the running one (`target/<profile>/<name>`).
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir: &Path = exe.parent().unwrap();
    // examples/ and deps/ sit one level below the profile directory.
    if dir.ends_with("examples") || dir.ends_with("deps") {
        dir = dir.parent().unwrap();
    }
    dir.join(name)
}
