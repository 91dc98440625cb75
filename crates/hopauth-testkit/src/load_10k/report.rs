//! What a run counted: one phase's outcome, the run's report and Envoy's stats in it.

use super::*;

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
    pub(super) fn merge(&mut self, o: &Phase) {
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

    pub(super) async fn one(&mut self, conn: &mut Conn, auth: &str, sub: &str, timeout: Duration, started: Instant) {
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
pub(super) const ENVOY_STATS: [&str; 11] = [
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
