//! A fault-injecting TCP proxy for tests: listens on a free loopback port and forwards every
//! connection to a real target (a `redis-server`, a JWKS server), while the test switches
//! faults on and off at run time:
//!
//! - [`FaultProxy::set_latency`]: delay added to every chunk, per direction (bytes stay in
//!   order; throughput is not capped).
//! - [`FaultProxy::reset_all`]: every open connection is reset now (`SO_LINGER 0`, close: the
//!   peers see `ECONNRESET`, not a clean FIN).
//! - [`FaultProxy::arm`] a one-shot [`Trigger`]: reset the connection on which a byte pattern
//!   is seen (`Trigger::on(Up, b"SCAN")`: the next SCAN never reaches the server), or after N
//!   more bytes of a stream (`Trigger::on(Down, b"invalidate").after(5)`: the client gets the
//!   first bytes of the push, then a reset).
//! - [`FaultProxy::set_stalled`]: half-open — open connections stop forwarding in both
//!   directions, sockets stay open; on heal the held bytes flow again (as TCP retransmission
//!   would deliver them after a partition).
//! - [`FaultProxy::set_blackhole`]: new connections are accepted and then never forwarded
//!   (a connect "succeeds", the handshake hangs); they stay hung until the client gives up.
//! - [`FaultProxy::set_refuse`]: new connections are reset as soon as they are accepted.
//! - [`FaultProxy::partition`] / [`FaultProxy::heal`]: stalled + blackhole, and back.
//! - counters: [`FaultProxy::accepted`], [`FaultProxy::open`], [`FaultProxy::resets`].
//!
//! Dropping the proxy stops the listener and resets every connection it holds. Its own tests
//! are crates/hopauth/tests/fault_proxy.rs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

mod forward;

use self::forward::serve;

/// A direction of the byte stream through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client → server (commands).
    Up,
    /// Server → client (replies, pushes).
    Down,
}

/// A one-shot reset: once `pattern` is seen in `dir` (or, without a pattern, from the first
/// byte in `dir` after arming), `after` more bytes counted from the pattern's first byte are
/// forwarded and then that connection is reset.
#[derive(Debug, Clone)]
pub struct Trigger {
    dir: Dir,
    pattern: Option<Vec<u8>>,
    after: usize,
}

impl Trigger {
    /// Resets at the first occurrence of `pattern` in `dir`, forwarding nothing from the
    /// pattern on (but a pattern split over two reads has had its first part forwarded).
    pub fn on(dir: Dir, pattern: &[u8]) -> Trigger {
        assert!(!pattern.is_empty() && pattern.len() <= CARRY, "pattern of 1..={CARRY} bytes");
        Trigger { dir, pattern: Some(pattern.to_vec()), after: 0 }
    }

    /// Resets after `n` more bytes in `dir`, on the first connection that carries any.
    pub fn after_bytes(dir: Dir, n: usize) -> Trigger {
        Trigger { dir, pattern: None, after: n }
    }

    /// Forward `n` bytes from the pattern's start before the reset.
    pub fn after(mut self, n: usize) -> Trigger {
        self.after = n;
        self
    }
}

/// Bytes of a stream remembered across reads, so a pattern split over two reads is found.
const CARRY: usize = 64;

#[derive(Debug, Clone, Default)]
struct Faults {
    up_latency: Duration,
    down_latency: Duration,
    stalled: bool,
    blackhole: bool,
    refuse: bool,
    /// Bumped by `reset_all`: every connection opened before resets.
    reset_epoch: u64,
}

/// An armed trigger and, once a connection has claimed it, that connection and how many
/// bytes it may still forward.
struct Armed {
    trigger: Trigger,
    claimed_by: Option<u64>,
    remaining: usize,
}

struct Shared {
    target: SocketAddr,
    faults: watch::Sender<Faults>,
    armed: Mutex<Option<Armed>>,
    accepted: AtomicUsize,
    open: AtomicUsize,
    resets: AtomicUsize,
    fired: AtomicUsize,
}

/// A fault-injecting proxy in front of `target`; see the module docs.
pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.reset_all();
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `target`.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            faults: watch::channel(Faults::default()).0,
            armed: Mutex::new(None),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            resets: AtomicUsize::new(0),
            fired: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let accept_task = tokio::spawn(async move {
            let mut next_id = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                s.accepted.fetch_add(1, Ordering::SeqCst);
                next_id += 1;
                tokio::spawn(serve(s.clone(), client, next_id));
            }
        });
        FaultProxy { addr, shared, accept_task }
    }

    /// `redis://<proxy>/0`.
    pub fn redis_url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// `http://<proxy><path>`, for an HTTP target such as a JWKS server.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Delay added to every chunk travelling in `dir`, from now on.
    pub fn set_latency(&self, dir: Dir, latency: Duration) {
        self.shared.faults.send_modify(|f| match dir {
            Dir::Up => f.up_latency = latency,
            Dir::Down => f.down_latency = latency,
        });
    }

    /// Resets every connection open now.
    pub fn reset_all(&self) {
        self.shared.faults.send_modify(|f| f.reset_epoch += 1);
    }

    /// Arms a one-shot reset (replacing any armed one); see [`Trigger`].
    pub fn arm(&self, trigger: Trigger) {
        let remaining = trigger.after;
        *self.shared.armed.lock().unwrap() = Some(Armed { trigger, claimed_by: None, remaining });
    }

    /// How many armed triggers have fired.
    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Whether a trigger is armed and has not fired yet.
    pub fn armed(&self) -> bool {
        self.shared.armed.lock().unwrap().is_some()
    }

    /// Half-open: open connections stop forwarding (both directions) but stay open.
    pub fn set_stalled(&self, stalled: bool) {
        self.shared.faults.send_modify(|f| f.stalled = stalled);
    }

    /// New connections are accepted and never forwarded.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.faults.send_modify(|f| f.blackhole = on);
    }

    /// New connections are reset as soon as they are accepted.
    pub fn set_refuse(&self, on: bool) {
        self.shared.faults.send_modify(|f| f.refuse = on);
    }

    /// A network partition: stalled and blackholed.
    pub fn partition(&self) {
        self.shared.faults.send_modify(|f| {
            f.stalled = true;
            f.blackhole = true;
        });
    }

    /// Ends every fault switch (latency, stall, blackhole, refuse); armed triggers stay.
    pub fn heal(&self) {
        self.shared.faults.send_modify(|f| {
            let epoch = f.reset_epoch;
            *f = Faults { reset_epoch: epoch, ..Faults::default() };
        });
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Client connections open now (forwarded or hung).
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Connections the proxy has reset (by `reset_all`, a trigger, or refuse).
    pub fn resets(&self) -> usize {
        self.shared.resets.load(Ordering::SeqCst)
    }
}
