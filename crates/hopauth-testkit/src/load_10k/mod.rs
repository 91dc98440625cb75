//! The design's FR6, 10 000 concurrent requests: a load generator holds N client
//! connections open at the edge gateway (envoy/gateway.yaml, ext_authz to hopauth, then the
//! echo app), all N send one request at the same instant (the burst), then each sends more
//! at random times over a few seconds (paced, open loop: latency counts from the scheduled
//! send). Every answer must be 200 with the identity of the token that connection sends.
//! Used by tests/load_10k.rs (`make test`) and examples/soak.rs (`make soak`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{Barrier, Semaphore};

use crate::load::{ensure_fd_limit, proc_sample, Conn, Latencies, ProcSample};
use crate::{
    bearer, claims, config_yaml, pick_port, start_echo, start_hopauth, wait_ready, wait_until, Envoy, JwksServer, Keys,
    ISSUER,
};

mod report;
mod run;

pub use self::report::{Phase, Report};
pub use self::run::run;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Client connections held open at the gateway at once.
    pub connections: usize,
    /// Distinct users (tokens); connection `i` sends user `i % users`'s token.
    pub users: usize,
    /// Requests in flight at once in the warm-up (uncached tokens) and the sweep (closed loop).
    pub warm_window: usize,
    pub window: usize,
    /// Whether to run the paced and burst phases (open loop, more than a loaded shared
    /// machine carries: for `make soak`).
    pub open_loop: bool,
    /// Requests each connection sends in the paced phase.
    pub paced_per_conn: usize,
    /// How long the paced phase spreads them over.
    pub paced_over: Duration,
    /// How many connects may be in progress at once while opening the connections.
    pub connect_parallelism: usize,
    /// Per-request bound: an answer later than this counts as unanswered.
    pub request_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connections: 10_000,
            users: 1_000,
            warm_window: 8,
            window: 16,
            open_loop: false,
            paced_per_conn: 1,
            paced_over: Duration::from_secs(10),
            connect_parallelism: 256,
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl Options {
    /// The defaults, with `HOPAUTH_LOAD_CONNECTIONS`, `HOPAUTH_LOAD_WINDOW`,
    /// `HOPAUTH_LOAD_PACED_PER_CONN` and `HOPAUTH_LOAD_PACED_SECS` applied when set (for trying other sizes by hand).
    pub fn from_env() -> Self {
        let mut o = Options::default();
        let get = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = get("HOPAUTH_LOAD_CONNECTIONS") {
            o.connections = n as usize;
        }
        if let Some(n) = get("HOPAUTH_LOAD_WINDOW") {
            o.window = n as usize;
        }
        if let Some(n) = get("HOPAUTH_LOAD_PACED_PER_CONN") {
            o.paced_per_conn = n as usize;
        }
        if let Some(n) = get("HOPAUTH_LOAD_PACED_SECS") {
            o.paced_over = Duration::from_secs(n);
        }
        o
    }
}
