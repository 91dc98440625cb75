//! `make soak`: the 10 000-connection load test and the long soak, on a release build.
//!
//! 1. FR6 (tests/support/load_10k.rs): 10 000 client connections held open at the edge
//!    gateway (envoy/gateway.yaml → hopauth → echo app); warm-up, a sweep of every
//!    connection, an open-loop paced phase and a burst of all 10 000 at once. Latency
//!    percentiles and status counts are printed.
//! 2. The soak (tests/support/soak.rs): mixed traffic from three issuers through Envoy to a
//!    `hopauth serve` process on Redis, for `--secs` (default 600), while Redis is restarted
//!    and partitioned, JWKS servers fail, keys rotate and hopauth is restarted; an oracle
//!    judges every answer. RSS and open fds of hopauth and Envoy are printed as a curve.
//!
//! Everything runs on loopback and stops by itself. Exits 1 when the soak or the load
//! test broke its contract (a wrong allow, an unanswered request, a wrong refusal, a
//! revocation not enforced, memory or fds growing), listing why.
//!
//! Options: `--secs N`, `--rate R` (requests/s, default 100), `--workers N`,
//! `--connections N` (default 10000), `--paced-secs N`, `--skip-10k`, `--skip-soak`,
//! `--lenient-blips` (refusals in the first max_staleness of a Redis outage are counted,
//! not failures).

use hopauth_testkit::load_10k;
use hopauth_testkit::soak;

use std::process::ExitCode;
use std::time::Duration;

struct Args {
    secs: u64,
    rate: f64,
    workers: usize,
    connections: usize,
    paced_secs: u64,
    skip_10k: bool,
    skip_soak: bool,
    strict_blips: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        secs: 600,
        rate: 100.0,
        workers: 8,
        connections: 10_000,
        paced_secs: 10,
        skip_10k: false,
        skip_soak: false,
        strict_blips: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--secs" => a.secs = value("--secs")?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--rate" => a.rate = value("--rate")?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--workers" => a.workers = value("--workers")?.parse().map_err(|e| format!("--workers: {e}"))?,
            "--connections" => {
                a.connections = value("--connections")?.parse().map_err(|e| format!("--connections: {e}"))?
            }
            "--paced-secs" => {
                a.paced_secs = value("--paced-secs")?.parse().map_err(|e| format!("--paced-secs: {e}"))?
            }
            "--skip-10k" => a.skip_10k = true,
            "--skip-soak" => a.skip_soak = true,
            "--lenient-blips" => a.strict_blips = false,
            other => return Err(format!("unknown option {other} (see the header of examples/soak.rs)")),
        }
    }
    if a.secs < 30 || a.rate <= 0.0 || a.workers == 0 || a.connections == 0 || a.paced_secs == 0 {
        return Err("--secs must be at least 30; --rate, --workers, --connections, --paced-secs more than 0".into());
    }
    Ok(a)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failures: Vec<String> = Vec::new();
    if !args.skip_10k {
        let opts = load_10k::Options {
            connections: args.connections,
            open_loop: true,
            paced_over: Duration::from_secs(args.paced_secs),
            ..load_10k::Options::default()
        };
        let report = load_10k::run(&opts).await;
        report.print();
        if report.held_open_at_gateway != opts.connections as u64 || report.connect_failures > 0 {
            failures.push(format!("10k: only {} connections held open", report.held_open_at_gateway));
        }
        for (name, phase) in [("warm-up", &report.warm), ("sweep", &report.sweep)] {
            if phase.failures() > 0 {
                failures
                    .push(format!("10k {name}: {} requests not answered 200 with their identity", phase.failures()));
            }
        }
        for (name, phase) in [("paced", &report.paced), ("burst", &report.burst)] {
            let wrong: u64 = phase.statuses.iter().filter(|(s, _)| **s != 200 && **s != 503).map(|(_, n)| n).sum();
            if phase.unanswered + phase.wrong_identity + wrong > 0 {
                failures.push(format!("10k {name}: unanswered, wrong identity or a refusal other than 503"));
            }
        }
    }
    if !args.skip_soak {
        let bin = soak::sibling_binary("hopauth");
        let mut opts = soak::Options::new(bin, Duration::from_secs(args.secs));
        opts.rate = args.rate;
        opts.workers = args.workers;
        opts.strict_blips = args.strict_blips;
        // Two restarts early, so the last hopauth lifetime (where flatness is judged) is
        // most of the run.
        opts.hopauth_restarts_at = vec![0.1, 0.2];
        let report = soak::run(opts).await;
        report.print();
        failures.extend(report.failures(false));
    }
    if failures.is_empty() {
        println!("soak: PASS");
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            println!("soak: FAIL: {f}");
        }
        ExitCode::FAILURE
    }
}
