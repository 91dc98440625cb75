//! `make bench`: Envoy + auth variants side by side on this machine, in one run.
//!
//! Variants (Envoy with one worker answering with `direct_response`, so only the auth path
//! is measured): no auth; Envoy `jwt_authn`; `jwt_authn` with `jwt_cache_config`;
//! `ext_authz` to an allow-everything tonic server; `ext_authz` to hopauth (one token:
//! cached path; a fresh token per request: uncached path; Redis revocation backend); and
//! the hopauth module inside Envoy (`module`: cached, fresh token per request, Redis
//! backend). Closed loop with `wrk -t1 -c32`, open loop at a fixed rate with an in-process
//! generator that measures from the scheduled send time (no coordinated omission),
//! hopauth's own CPU per request, Redis commands per Check, revocation write → enforced
//! latency (sidecar and module), RSS with 100k cached tokens (sidecar process; Envoy with
//! the module), and the gRPC server alone under `h2load`. Writes `target/bench/results.md`
//! and `results.json`, with issue 13's targets for the module computed from this run: the
//! ratios against `jwt_authn` and Redis vs memory from interleaved rounds (`rounds.rs`),
//! since one run per variant is noisier than the gaps it measures, and the same variants
//! counted in instructions per request under callgrind (`instructions.rs`), which the
//! machine's noise does not move.
//!
//! Needs `make tools bench-tools module` (the Makefile's `bench` target runs them).
//! `cargo bench -p hopauth --bench load -- callgrind` runs only the instruction counts
//! (about three minutes) and writes `target/bench/callgrind.md` and `callgrind.json`.

mod envoy;
mod http;
mod instructions;
mod load_gen;
mod module;
mod report;
mod revocation;
mod rounds;
mod servers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use hopauth_testkit::redis_server::RedisServer;
use serde_json::{json, Map, Value};

use envoy::{envoy_config, ext_authz, jwt_authn_filter, start_envoy, BenchEnvoy};
use load_gen::{open_loop, percentile, wrk, Run};
use servers::{allow_all_server, commandstats_total, cpu_seconds, free_port, h2load_grpc, rss_mib, start_hopauth};

const ISSUER: &str = "https://issuer.bench";
const CLOSED_SECS: u64 = 8;
const OPEN_SECS: u64 = 6;
const FRESH_TOKENS: u64 = 200_000;

fn claims(sub: &str, jti: &str) -> Value {
    let now = hopauth_core::clock::unix_now();
    json!({"iss": ISSUER, "sub": sub, "aud": "orders", "iat": now, "nbf": now, "exp": now + 3600,
           "jti": jti, "scope": "orders:read profile"})
}

/// The key, the JWKS file every variant trusts, and the token files.
pub(crate) struct Fixture {
    pub(crate) dir: PathBuf,
    pub(crate) key: SigningKey,
    pub(crate) jwks: String,
    pub(crate) jwks_file: PathBuf,
    pub(crate) one_token: String,
    /// One token, one line: the cached path.
    pub(crate) one: PathBuf,
    /// [`FRESH_TOKENS`] distinct tokens, one a line: the uncached path.
    pub(crate) many: PathBuf,
    pub(crate) fresh_tokens: u64,
}

impl Fixture {
    fn new(dir: &Path) -> Fixture {
        let key = SigningKey::generate(Alg::ES256, "bench-1").unwrap();
        let jwks = json!({"keys": [key.public_jwk()]}).to_string();
        let jwks_file = dir.join("jwks.json");
        std::fs::write(&jwks_file, &jwks).unwrap();
        let one_token = key.sign_jwt(&claims("alice", "bench-cached")).unwrap();
        let one = dir.join("one-token.txt");
        std::fs::write(&one, format!("{one_token}\n")).unwrap();
        eprintln!("signing {FRESH_TOKENS} fresh tokens for the uncached runs…");
        let fresh: Vec<String> =
            (0..FRESH_TOKENS).map(|i| key.sign_jwt(&claims(&format!("u{i}"), &format!("j{i}"))).unwrap()).collect();
        let many = dir.join("fresh-tokens.txt");
        std::fs::write(&many, fresh.join("\n") + "\n").unwrap();
        Fixture { dir: dir.to_path_buf(), key, jwks, jwks_file, one_token, one, many, fresh_tokens: FRESH_TOKENS }
    }
}

fn print_run(name: &str, r: &Run) {
    eprintln!(
        "{name:<28} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  non-2xx {}",
        r.rps, r.p50_ms, r.p99_ms, r.p999_ms, r.non_2xx
    );
}

/// A one-second warm-up (connections, caches), then the measured run, which continues in
/// `tokens` where the warm-up stopped.
fn measure(envoy: &BenchEnvoy, fx: &Fixture, name: &str, tokens: &Path) -> Run {
    let warm = wrk(envoy.listen, tokens, &fx.dir, 1, 0);
    let r = wrk(envoy.listen, tokens, &fx.dir, CLOSED_SECS, warm.requests);
    print_run(name, &r);
    r
}

/// An Envoy with `filters` and `clusters`, measured with `tokens`.
fn closed_run(fx: &Fixture, name: &str, filters: &str, clusters: &str, tokens: &Path) -> Run {
    let listen = free_port();
    let envoy = start_envoy(&fx.dir, name, &envoy_config(listen, free_port(), filters, clusters), listen, None);
    measure(&envoy, fx, name, tokens)
}

fn open_run(fx: &Fixture, name: &str, filters: &str, clusters: &str, rate: f64) -> Run {
    let listen = free_port();
    let _envoy = start_envoy(&fx.dir, name, &envoy_config(listen, free_port(), filters, clusters), listen, None);
    open_loop(listen, &fx.one_token, rate, OPEN_SECS, 16)
}

fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn main() {
    // `cargo test --all-targets` builds benches and runs them with no `--bench`: skip.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let started = Instant::now();
    let load_before = load_average();
    // hopauth serve children log warnings only (one line per deny would be load).
    std::env::set_var("HOPAUTH_LOG", "warn");
    let out_dir = hopauth_testkit::repo_root().join("target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fx = Fixture::new(tmp.path());
    let dir = &fx.dir;
    let mut closed: BTreeMap<String, Run> = BTreeMap::new();
    let mut extra = Map::new();

    // `cargo bench -p hopauth --bench load -- callgrind`: only the instruction counts.
    if std::env::args().any(|a| a == "callgrind") {
        let redis = RedisServer::start(&dir.join("redis"), free_port(), &[]);
        let counts = instructions::run(&fx, &redis);
        report::write_counts(&out_dir, &counts);
        return;
    }

    closed.insert("no_auth".into(), closed_run(&fx, "no_auth", "", "[]", &fx.one));
    closed.insert("jwt_authn".into(), closed_run(&fx, "jwt_authn", &jwt_authn_filter(&fx.jwks, false), "[]", &fx.one));
    let cache = jwt_authn_filter(&fx.jwks, true);
    closed.insert("jwt_authn_cache".into(), closed_run(&fx, "jwt_authn_cache", &cache, "[]", &fx.one));

    let allow_port = free_port();
    allow_all_server(allow_port);
    let (f, c) = ext_authz(allow_port);
    closed.insert("ext_authz_allow_all".into(), closed_run(&fx, "ext_authz_allow_all", &f, &c, &fx.one));

    // hopauth, memory backend, one runtime thread: the sidecar setting docs/performance.md
    // discusses; CPU per request from /proc.
    let h1 = start_hopauth(dir, "memory-1thread", &fx.jwks_file, "", Some(1));
    {
        let (f, c) = ext_authz(h1.grpc.port());
        let pid = h1.pid();
        let cpu0 = cpu_seconds(pid);
        let r = closed_run(&fx, "hopauth_cached_1thread", &f, &c, &fx.one);
        let per = (cpu_seconds(pid) - cpu0) * 1e6 / (r.requests as f64).max(1.0);
        extra.insert("hopauth_cached_1thread_cpu_us_per_check".into(), json!(per));
        closed.insert("hopauth_cached_1thread".into(), r);
        let cpu_a = cpu_seconds(pid);
        if let Some(h2) = h2load_grpc(dir, h1.grpc.port(), &fx.one_token) {
            extra.insert("grpc_only_1thread_h2load".into(), h2);
            let per = (cpu_seconds(pid) - cpu_a) * 1e6 / 200_000.0;
            extra.insert("grpc_only_1thread_cpu_us_per_check".into(), json!(per));
        }
    }

    // hopauth, memory backend, default threads: cached and uncached.
    let h = start_hopauth(dir, "memory", &fx.jwks_file, "", None);
    let (f, c) = ext_authz(h.grpc.port());
    let pid = h.pid();
    let cpu0 = cpu_seconds(pid);
    let cached = closed_run(&fx, "hopauth_cached", &f, &c, &fx.one);
    let cpu1 = cpu_seconds(pid);
    extra.insert(
        "hopauth_cached_cpu_us_per_check".into(),
        json!((cpu1 - cpu0) * 1e6 / (cached.requests as f64).max(1.0)),
    );
    closed.insert("hopauth_cached".into(), cached.clone());
    let uncached = closed_run(&fx, "hopauth_uncached", &f, &c, &fx.many);
    let cpu2 = cpu_seconds(pid);
    extra.insert(
        "hopauth_uncached_cpu_us_per_check".into(),
        json!((cpu2 - cpu1) * 1e6 / (uncached.requests as f64).max(1.0)),
    );
    extra.insert("hopauth_rss_mib_after_uncached_run".into(), json!(rss_mib(pid)));
    extra.insert("uncached_run_distinct_tokens".into(), json!(uncached.requests.min(FRESH_TOKENS)));
    closed.insert("hopauth_uncached".into(), uncached);
    let cpu_a = cpu_seconds(pid);
    if let Some(h2) = h2load_grpc(dir, h.grpc.port(), &fx.one_token) {
        extra.insert("grpc_only_h2load".into(), h2);
        extra.insert("grpc_only_cpu_us_per_check".into(), json!((cpu_seconds(pid) - cpu_a) * 1e6 / 200_000.0));
    }

    // Open loop at half of hopauth's cached saturation: no auth, the allow-all ceiling of
    // any ext_authz server, and hopauth.
    let rate = (cached.rps / 2.0).max(100.0);
    let mut open = vec![("no_auth", open_run(&fx, "open_noauth", "", "[]", rate))];
    let (fa, ca) = ext_authz(allow_port);
    open.push(("ext_authz_allow_all", open_run(&fx, "open_allow_all", &fa, &ca, rate)));
    open.push(("hopauth_cached", open_run(&fx, "open_hopauth", &f, &c, rate)));
    drop(h);
    let (f1, c1) = ext_authz(h1.grpc.port());
    open.push(("hopauth_cached_1thread", open_run(&fx, "open_hopauth_1thread", &f1, &c1, rate)));
    drop(h1);

    // hopauth with the Redis backend: throughput, Redis commands per Check, revocation latency.
    let redis = RedisServer::start(&dir.join("redis"), free_port(), &[]);
    let revocation = format!("revocation: {{ backend: redis, redis_url: \"{}\" }}\n", redis.url());
    let hr = start_hopauth(dir, "redis", &fx.jwks_file, &revocation, None);
    let (f, c) = ext_authz(hr.grpc.port());
    let listen = free_port();
    let envoy = start_envoy(dir, "hopauth_redis", &envoy_config(listen, free_port(), &f, &c), listen, None);
    let cmds0 = commandstats_total(&redis);
    let r = measure(&envoy, &fx, "hopauth_redis", &fx.one);
    let cmds = commandstats_total(&redis) - cmds0;
    extra.insert("redis_commands_per_check".into(), json!(cmds as f64 / r.requests.max(1) as f64));
    extra.insert("redis_commands_during_run".into(), json!(cmds));
    closed.insert("hopauth_redis".into(), r);
    let lat = revocation::revocation_latency(listen, &fx, &redis, "rev");
    extra.insert("revocation_enforced_ms_p50".into(), json!(percentile(&lat, 0.5)));
    extra.insert("revocation_enforced_ms_p99".into(), json!(percentile(&lat, 0.99)));
    drop(envoy);
    drop(hr);

    // The module inside Envoy: cached, fresh, Redis, revocation, RSS with 100k tokens.
    module::run(&fx, &redis, &mut closed, &mut extra);
    // The issue's ratios again, from interleaved rounds (benches/load/rounds.rs).
    let rounds = rounds::run(&fx, &redis);
    // The same comparison counted in instructions (benches/load/instructions.rs).
    let counts = instructions::run(&fx, &redis);

    let ctx = report::Context {
        load_before,
        load_after: load_average(),
        took_secs: started.elapsed().as_secs_f64(),
        open_rate: rate,
    };
    report::write(&out_dir, &ctx, &closed, &open, &rounds, &counts, &extra);
}
