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

/// One phase's outcome.
#[derive(Debug, Default, Clone)]
pub struct Phase {
    pub requests: u64,
    /// 200 with the right identity upstream.
    pub ok: u64,
    /// Answers by status (all of them, right or wrong).
    pub statuses: BTreeMap<u16, u64>,
    /// Transport errors and timeouts: requests that got no answer.
    pub unanswered: u64,
    /// 200s whose upstream did not see the expected identity.
    pub wrong_identity: u64,
    /// Up to ten examples of what went wrong.
    pub examples: Vec<String>,
    pub latencies: Latencies,
    pub took: Duration,
}

impl Phase {
    fn merge(&mut self, o: &Phase) {
        self.requests += o.requests;
        self.ok += o.ok;
        for (s, n) in &o.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
        self.unanswered += o.unanswered;
        self.wrong_identity += o.wrong_identity;
        for e in &o.examples {
            if self.examples.len() < 10 {
                self.examples.push(e.clone());
            }
        }
        self.latencies.extend(&o.latencies);
    }

    /// Requests that were not a 200 with the right identity.
    pub fn failures(&self) -> u64 {
        self.requests - self.ok
    }

    pub fn summary(&self) -> String {
        format!(
            "{} requests in {:.1}s, {} ok, {} unanswered, {} wrong identity, statuses {:?}, latency {}",
            self.requests,
            self.took.as_secs_f64(),
            self.ok,
            self.unanswered,
            self.wrong_identity,
            self.statuses,
            self.latencies.summary()
        )
    }

    async fn one(&mut self, conn: &mut Conn, auth: &str, sub: &str, timeout: Duration, started: Instant) {
        self.requests += 1;
        let result = tokio::time::timeout(timeout, conn.get("/load", &[("authorization", auth)])).await;
        self.latencies.push(started.elapsed());
        match result {
            Ok(Ok(r)) => {
                *self.statuses.entry(r.status).or_default() += 1;
                if r.status == 200 && r.upstream_saw_sub(sub) {
                    self.ok += 1;
                } else {
                    if r.status == 200 {
                        self.wrong_identity += 1;
                    }
                    if self.examples.len() < 10 {
                        let body = r.body_text();
                        self.examples.push(format!("{} {}", r.status, &body[..body.len().min(200)]));
                    }
                }
            }
            Ok(Err(e)) => {
                self.unanswered += 1;
                if self.examples.len() < 10 {
                    self.examples.push(format!("transport error: {e}"));
                }
            }
            Err(_) => {
                self.unanswered += 1;
                if self.examples.len() < 10 {
                    self.examples.push(format!("no answer within {timeout:?}"));
                }
            }
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub connections: usize,
    pub window: usize,
    pub warm_window: usize,
    pub open_loop: bool,
    /// Requests per second offered in the paced phase.
    pub paced_rate: f64,
    /// The gateway's `downstream_cx_active` once every connection was open.
    pub held_open_at_gateway: u64,
    /// Connections that could not be opened.
    pub connect_failures: u64,
    /// Reconnects during the run (the server closed a connection).
    pub reconnects: u64,
    pub connect_took: Duration,
    pub warm: Phase,
    pub sweep: Phase,
    pub paced: Phase,
    pub burst: Phase,
    pub fd_soft_limit: u64,
    /// The gateway Envoy while every connection was open, and hopauth (this process).
    pub envoy: Option<ProcSample>,
    pub this_process: Option<ProcSample>,
    /// CPU seconds the gateway Envoy and this process used during the run.
    pub envoy_cpu_secs: f64,
    pub this_cpu_secs: f64,
    /// Gateway counters that explain refusals (ext_authz errors, circuit-breaker overflows).
    pub envoy_stats: Vec<(&'static str, u64)>,
}

/// Gateway counters worth printing after a run.
const ENVOY_STATS: [&str; 11] = [
    "http.edge.ext_authz.ok",
    "http.edge.ext_authz.denied",
    "http.edge.ext_authz.error",
    "cluster.hopauth.upstream_rq_pending_overflow",
    "cluster.hopauth.upstream_rq_timeout",
    "cluster.hopauth.upstream_cx_overflow",
    // Health checks that time out under load (3 in a row, unhealthy_threshold) mark hopauth unhealthy, and
    // with healthy_panic_threshold 0 every Check is then refused until the next good one.
    "cluster.hopauth.health_check.failure",
    "cluster.hopauth.upstream_cx_none_healthy",
    "cluster.frontend.upstream_rq_pending_overflow",
    "cluster.frontend.upstream_cx_overflow",
    "cluster.frontend.upstream_cx_total",
];

impl Report {
    pub fn print(&self) {
        println!(
            "10k: {} connections ({} open at the gateway, {} failed to open, opened in {:.1}s, {} reconnects; \
             fd soft limit {})",
            self.connections,
            self.held_open_at_gateway,
            self.connect_failures,
            self.connect_took.as_secs_f64(),
            self.reconnects,
            self.fd_soft_limit
        );
        println!("10k warm-up (each token once, {} in flight): {}", self.warm_window, self.warm.summary());
        println!("10k sweep (each connection once, {} in flight): {}", self.window, self.sweep.summary());
        if self.open_loop {
            println!("10k paced (open loop, {:.0}/s): {}", self.paced_rate, self.paced.summary());
            println!("10k burst (all at once): {}", self.burst.summary());
        }
        if let (Some(e), Some(p)) = (self.envoy, self.this_process) {
            println!(
                "10k gateway Envoy: {} MiB RSS, {} fds; load generator + hopauth process: {} MiB, {} fds",
                e.rss_kib / 1024,
                e.fds,
                p.rss_kib / 1024,
                p.fds
            );
        }
        println!(
            "10k CPU used: gateway Envoy {:.1}s, load generator + hopauth + echo app {:.1}s",
            self.envoy_cpu_secs, self.this_cpu_secs
        );
        println!("10k gateway counters: {:?}", self.envoy_stats);
        for e in self
            .warm
            .examples
            .iter()
            .chain(&self.sweep.examples)
            .chain(&self.paced.examples)
            .chain(&self.burst.examples)
        {
            println!("  e.g. {e}");
        }
    }
}

/// Starts JWKS, hopauth (in this process), the echo app and the gateway Envoy, runs the
/// phases and stops everything.
pub async fn run(opts: &Options) -> Report {
    // Ours: a socket per connection plus the servers in this process; Envoy (inheriting
    // the limit) the same plus its upstream connections.
    let fd_soft_limit = ensure_fd_limit(opts.connections as u64 + 2_000);
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let hopauth = start_hopauth(&config_yaml(&jwks.url(), "", "")).await;
    wait_ready(&hopauth).await;
    let app = start_echo().await;
    let port = pick_port();
    let envoy = Envoy::start_with(
        "gateway.yaml",
        hopauth.grpc_addr,
        &[
            ("port_value: 10000", format!("port_value: {port}")),
            ("port_value: 9001", format!("port_value: {}", hopauth.grpc_addr.port())),
            ("port_value: 8080", format!("port_value: {}", app.port())),
            ("path: /dev/stdout", "path: /dev/null".to_string()),
        ],
    )
    .await;

    let users: Arc<Vec<(String, String)>> = Arc::new(
        (0..opts.users)
            .map(|i| {
                let sub = format!("load-user-{i}");
                let token = keys.es.sign_jwt(&claims(&sub)).unwrap();
                (sub, bearer(&token))
            })
            .collect(),
    );

    let n = opts.connections;
    // Every connection task and this one meet at each phase boundary.
    let opened = Arc::new(Barrier::new(n + 1));
    let go_warm = Arc::new(Barrier::new(n + 1));
    let go_sweep = Arc::new(Barrier::new(n + 1));
    let window = Arc::new(Semaphore::new(opts.window));
    let warm_window = Arc::new(Semaphore::new(opts.warm_window));
    let go_paced = Arc::new(Barrier::new(n + 1));
    let go_burst = Arc::new(Barrier::new(n + 1));
    let done = Arc::new(Barrier::new(n + 1));
    let connecting = Arc::new(Semaphore::new(opts.connect_parallelism));
    let connect_started = Instant::now();
    let paced_start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (opened, go_warm, go_sweep, go_paced, go_burst, done) =
            (opened.clone(), go_warm.clone(), go_sweep.clone(), go_paced.clone(), go_burst.clone(), done.clone());
        let (connecting, window, warm_window, users, paced_start, opts) =
            (connecting.clone(), window.clone(), warm_window.clone(), users.clone(), paced_start.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            let conn = {
                let _permit = connecting.acquire().await.unwrap();
                Conn::connect(port).await
            };
            opened.wait().await;
            let (sub, auth) = &users[i % users.len()];
            let mut phases: [Phase; 4] = Default::default();
            let [warm, sweep, paced, burst] = &mut phases;
            let Ok(mut conn) = conn else {
                for b in [&go_warm, &go_sweep, &go_paced, &go_burst, &done] {
                    b.wait().await;
                }
                return (false, 0, phases);
            };
            go_warm.wait().await;
            // Warm-up: each user's token once, so the verify cache holds every token (real
            // traffic repeats a session's token on every call).
            if i < users.len() {
                let _permit = warm_window.acquire().await.unwrap();
                warm.one(&mut conn, auth, sub, opts.request_timeout, Instant::now()).await;
            }
            go_sweep.wait().await;
            // Sweep: every connection once, at most `window` in flight.
            {
                let _permit = window.acquire().await.unwrap();
                sweep.one(&mut conn, auth, sub, opts.request_timeout, Instant::now()).await;
            }
            go_paced.wait().await;
            let start = *paced_start.get_or_init(Instant::now);
            let mut at: Vec<Duration> = {
                let mut rng = rand::rng();
                let per_conn = if opts.open_loop { opts.paced_per_conn } else { 0 };
                (0..per_conn).map(|_| opts.paced_over.mul_f64(rng.random::<f64>())).collect()
            };
            at.sort_unstable();
            for offset in at {
                let when = start + offset;
                tokio::time::sleep_until(when.into()).await;
                // Open loop: a request held up by an earlier slow answer counts from when it
                // was due, so queueing shows in the latency.
                paced.one(&mut conn, auth, sub, opts.request_timeout, when).await;
            }
            go_burst.wait().await;
            if opts.open_loop {
                burst.one(&mut conn, auth, sub, opts.request_timeout, Instant::now()).await;
            }
            done.wait().await;
            (true, conn.reconnects, phases)
        }));
    }

    opened.wait().await;
    let connect_took = connect_started.elapsed();
    let connected_at_gateway = || envoy.stat("http.edge.downstream_cx_active");
    // Envoy may accept the last few sockets a moment after our connect() returned.
    let want = n as u64;
    let mut held = connected_at_gateway().await;
    let settle = Instant::now() + Duration::from_secs(5);
    while held < want && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
        held = connected_at_gateway().await;
    }
    let envoy_sample = proc_sample(envoy.pid());
    let this_sample = proc_sample(std::process::id());

    go_warm.wait().await;
    let t = Instant::now();
    go_sweep.wait().await;
    let warm_took = t.elapsed();
    let t = Instant::now();
    go_paced.wait().await;
    let sweep_took = t.elapsed();
    let t = Instant::now();
    go_burst.wait().await;
    let paced_took = t.elapsed();
    let t = Instant::now();
    done.wait().await;
    let burst_took = t.elapsed();

    let cpu = |pid: u32| proc_sample(pid).map_or(0, |s| s.cpu_ticks);
    let envoy_cpu_secs = cpu(envoy.pid()).saturating_sub(envoy_sample.map_or(0, |s| s.cpu_ticks)) as f64 / 100.0;
    let this_cpu_secs = cpu(std::process::id()).saturating_sub(this_sample.map_or(0, |s| s.cpu_ticks)) as f64 / 100.0;
    let mut report = Report {
        envoy_cpu_secs,
        this_cpu_secs,
        connections: n,
        window: opts.window,
        warm_window: opts.warm_window,
        open_loop: opts.open_loop,
        paced_rate: (n * opts.paced_per_conn) as f64 / opts.paced_over.as_secs_f64(),
        held_open_at_gateway: held,
        connect_took,
        fd_soft_limit,
        envoy: envoy_sample,
        this_process: this_sample,
        ..Default::default()
    };
    for t in tasks {
        let (connected, reconnects, [warm, sweep, paced, burst]) = t.await.expect("connection task");
        report.warm.merge(&warm);
        report.sweep.merge(&sweep);
        if !connected {
            report.connect_failures += 1;
        }
        report.reconnects += reconnects;
        report.burst.merge(&burst);
        report.paced.merge(&paced);
    }
    report.warm.took = warm_took;
    report.sweep.took = sweep_took;
    report.burst.took = burst_took;
    report.paced.took = paced_took;
    for name in ENVOY_STATS {
        report.envoy_stats.push((name, envoy.stat(name).await));
    }
    // Every connection closed: Envoy's count goes back down (nothing leaked at the gateway).
    wait_until("gateway connections closed", Duration::from_secs(10), || async {
        envoy.stat("http.edge.downstream_cx_active").await == 0
    })
    .await;
    drop(envoy);
    hopauth.shutdown().await;
    report
}
