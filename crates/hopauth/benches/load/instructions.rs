//! Instructions per request on Envoy's worker thread, counted by callgrind: the
//! deterministic companion of the req/s rounds. Requests per second on this shared VM move
//! by ±10 % from one run to the next; the instructions a request costs do not. Each variant
//! runs in its own Envoy (`--concurrency 1`) under `valgrind --tool=callgrind
//! --separate-threads=yes`; after a warm-up the counters are zeroed (`callgrind_control
//! -z`), a fixed number of requests go one after another on one keep-alive connection
//! ([`CACHED_REQUESTS`], [`FRESH_REQUESTS`]), the counts are dumped (`callgrind_control -d`), and the busiest
//! thread's total (Envoy's one worker) is divided by the requests answered. Other threads
//! (the module's, Envoy's main thread) are reported as a sum.
//!
//! What this does not count: the kernel (sockets, which every variant pays alike), and
//! time that is not instructions (cache misses, waiting). So it says where a gap in req/s
//! comes from and whether a backend costs the worker anything, not how fast a variant is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hopauth_testkit::redis_server::RedisServer;
use serde_json::{json, Map, Value};

use crate::envoy::{envoy_config, jwt_authn_filter, jwt_authn_same_job_filter, start_envoy_under};
use crate::http::each_token;
use crate::load_gen::require;
use crate::module::module_config;
use crate::servers::{free_port, Job};
use crate::Fixture;

/// Requests counted per variant with one token (Envoy under callgrind answers some
/// hundred a second), and with a fresh token each (some tens a second), after a fifth as
/// many to warm up. A fixed number, not a fixed time: what the worker does per second
/// whatever the load (timers) would otherwise weigh more on a slower variant.
const CACHED_REQUESTS: u64 = 1500;
const FRESH_REQUESTS: u64 = 300;

/// One variant's count.
pub(crate) struct Count {
    pub(crate) name: &'static str,
    pub(crate) requests: u64,
    /// On Envoy's worker thread, per request.
    pub(crate) worker: f64,
    /// On every other thread, per request.
    pub(crate) others: f64,
}

/// What to run: the Envoy config, where it listens, the module's side port (if any), and
/// whether each request carries a fresh token.
struct Variant {
    name: &'static str,
    config: String,
    listen: u16,
    side: Option<u16>,
    fresh: bool,
}

fn plain(name: &'static str, filter: &str, fresh: bool) -> Variant {
    let listen = free_port();
    Variant { name, config: envoy_config(listen, free_port(), filter, "[]"), listen, side: None, fresh }
}

fn module(fx: &Fixture, name: &'static str, revocation: &str, job: Job, fresh: bool) -> Variant {
    let c = module_config(fx, &format!("callgrind_{name}"), revocation, job);
    Variant { name, config: c.envoy, listen: c.listen, side: Some(c.side), fresh }
}

/// Counts every variant, one Envoy after another (valgrind and its `callgrind_control`
/// from `make bench-tools`).
pub(crate) fn run(fx: &Fixture, redis: &RedisServer) -> Vec<Count> {
    let valgrind = require("valgrind", "run `make bench-tools` (apt-get install valgrind)");
    let control = require("callgrind_control", "run `make bench-tools` (apt-get install valgrind)");
    let revocation = format!("revocation: {{ backend: redis, redis_url: \"{}\" }}\n", redis.url());
    let variants = [
        plain("no_auth", "", false),
        plain("jwt_authn_cache", &jwt_authn_filter(&fx.jwks, true), false),
        plain("jwt_authn_cache_same_job", &jwt_authn_same_job_filter(&fx.jwks), false),
        module(fx, "module_cached", "", Job::Identity, false),
        module(fx, "module_cached_verify_only", "", Job::VerifyOnly, false),
        module(fx, "module_redis", &revocation, Job::Identity, false),
        plain("jwt_authn_fresh", &jwt_authn_filter(&fx.jwks, false), true),
        module(fx, "module_fresh", "", Job::Identity, true),
    ];
    variants.iter().map(|v| count(fx, v, &valgrind, &control)).collect()
}

fn count(fx: &Fixture, v: &Variant, valgrind: &str, control: &str) -> Count {
    let out = fx.dir.join(format!("callgrind-{}.out", v.name));
    let under = [
        valgrind.to_string(),
        "--tool=callgrind".into(),
        "--separate-threads=yes".into(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let name = format!("callgrind_{}", v.name);
    let envoy = start_envoy_under(&under, Duration::from_secs(180), &fx.dir, &name, &v.config, v.listen, v.side);
    let (file, wanted) = if v.fresh { (&fx.many, FRESH_REQUESTS) } else { (&fx.one, CACHED_REQUESTS) };
    let text = std::fs::read_to_string(file).unwrap();
    let tokens: Vec<&str> = text.lines().collect();
    let warm = wanted / 5;
    // The first requests run while valgrind translates the code they reach: slow enough
    // for the module to shed one past `max_queue_delay` (503). Only the counted ones must
    // all be allowed.
    let (_, shed) = send(v.listen, &tokens, 0, warm);
    if shed > 0 {
        eprintln!("callgrind {}: {shed} of {warm} warm-up answers were not 2xx", v.name);
    }
    let pid = envoy.pid().to_string();
    callgrind_control(control, &["-z", &pid]);
    let (requests, bad) = send(v.listen, &tokens, warm, wanted);
    callgrind_control(control, &["-d", &pid]);
    drop(envoy);
    assert_eq!(bad, 0, "{}: {bad} answers under callgrind were not 2xx", v.name);
    let mut threads = thread_totals(&out);
    threads.sort_unstable();
    let worker = threads.pop().unwrap_or_else(|| panic!("{}: callgrind wrote no counts next to {out:?}", v.name));
    let n = requests as f64;
    let count =
        Count { name: v.name, requests, worker: worker as f64 / n, others: threads.iter().sum::<u64>() as f64 / n };
    eprintln!(
        "callgrind {:<26} {:>9.0} instructions per request on the worker ({} requests)",
        v.name, count.worker, requests
    );
    count
}

/// `count` requests to `port`, with `tokens` from index `from` on (the same token again
/// and again when there is one); (answered, not 2xx).
fn send(port: u16, tokens: &[&str], from: u64, count: u64) -> (u64, u64) {
    each_token(port, (from..from + count).map(|i| tokens[i as usize % tokens.len()]))
}

fn callgrind_control(control: &str, args: &[&str]) {
    let status = Command::new(control).args(args).output().expect("run callgrind_control").status;
    assert!(status.success(), "callgrind_control {args:?} failed");
}

/// The instruction total of each thread in the first dump (`<out>.1-<thread>`).
fn thread_totals(out: &Path) -> Vec<u64> {
    let dir = out.parent().unwrap();
    let prefix = format!("{}.1-", out.file_name().unwrap().to_string_lossy());
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
        .collect();
    files.iter().filter_map(|f| total(&std::fs::read_to_string(f).ok()?)).collect()
}

/// The `summary:` (or `totals:`) line of one callgrind dump.
fn total(dump: &str) -> Option<u64> {
    dump.lines()
        .find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The counts as JSON.
pub(crate) fn json(counts: &[Count]) -> Value {
    let per: Map<String, Value> = counts
        .iter()
        .map(|c| (c.name.to_string(), json!({"worker": c.worker, "others": c.others, "requests": c.requests})))
        .collect();
    Value::Object(per)
}
