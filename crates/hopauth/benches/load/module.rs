//! The `hopauth_module` variants: hopauth inside Envoy (libhopauth_envoy.so, the filter as
//! `envoy/module.yaml` declares it, reading the same hopauth.yaml as the sidecar runs).
//! One cached token; a fresh token per request; the Redis revocation backend (with Redis
//! commands per request); revocation written to Redis → enforced through the module, over
//! many samples; Envoy's RSS with one token cached and with 100k.

use std::collections::BTreeMap;

use hopauth_testkit::redis_server::RedisServer;
use serde_json::{json, Map, Value};

use crate::envoy::{envoy_config, module_filter, start_envoy, BenchEnvoy};
use crate::load_gen::{percentile, wrk, Run};
use crate::revocation::revocation_latency;
use crate::servers::{commandstats_total, free_port, hopauth_yaml, metric, rss_mib, Job};
use crate::{measure, Fixture};

/// Tokens in the module's cache for the RSS figure.
pub(crate) const CACHED_TOKENS: u64 = 100_000;

/// Envoy with the module, its hopauth.yaml's `http_listen` on `side`.
pub(crate) struct Module {
    pub(crate) envoy: BenchEnvoy,
    side: u16,
}

pub(crate) fn start_module(fx: &Fixture, name: &str, revocation: &str, job: Job) -> Module {
    let c = module_config(fx, name, revocation, job);
    let envoy = start_envoy(&fx.dir, &format!("module_{name}"), &c.envoy, c.listen, Some(c.side));
    Module { envoy, side: c.side }
}

/// An Envoy config with the module (its hopauth.yaml written to the fixture's directory).
pub(crate) struct ModuleConfig {
    pub(crate) envoy: String,
    pub(crate) listen: u16,
    /// The hopauth.yaml's `http_listen` port.
    pub(crate) side: u16,
}

pub(crate) fn module_config(fx: &Fixture, name: &str, revocation: &str, job: Job) -> ModuleConfig {
    let side = free_port();
    let yaml = fx.dir.join(format!("hopauth-module-{name}.yaml"));
    std::fs::write(&yaml, hopauth_yaml(free_port(), side, &fx.jwks_file, revocation, job)).unwrap();
    let listen = free_port();
    ModuleConfig { envoy: envoy_config(listen, free_port(), &module_filter(&yaml), "[]"), listen, side }
}

/// Runs every module variant; closed-loop runs go to `closed`, the rest to `extra`.
pub(crate) fn run(
    fx: &Fixture,
    redis: &RedisServer,
    closed: &mut BTreeMap<String, Run>,
    extra: &mut Map<String, Value>,
) {
    // Memory backend: one cached token, then fresh tokens, then fill the cache to 100k.
    let m = start_module(fx, "memory", "", Job::Identity);
    let pid = m.envoy.pid();
    closed.insert("hopauth_module_cached".into(), measure(&m.envoy, fx, "hopauth_module_cached", &fx.one));
    extra.insert("module_envoy_rss_mib_one_token".into(), json!(rss_mib(pid)));
    let (fresh, sent) = fresh_run(&m.envoy, fx);
    let entries = fill_cache(&m, fx, sent, fresh.rps);
    closed.insert("hopauth_module_fresh".into(), fresh);
    extra.insert("module_verify_cache_entries".into(), json!(entries));
    extra.insert("module_envoy_rss_mib_100k_tokens".into(), json!(rss_mib(pid)));
    drop(m);

    // Redis backend: throughput with one token, commands per request, revocation latency.
    let revocation = format!("revocation: {{ backend: redis, redis_url: \"{}\" }}\n", redis.url());
    let m = start_module(fx, "redis", &revocation, Job::Identity);
    let cmds0 = commandstats_total(redis);
    let r = measure(&m.envoy, fx, "hopauth_module_redis", &fx.one);
    let cmds = commandstats_total(redis) - cmds0;
    extra.insert("module_redis_commands_per_request".into(), json!(cmds as f64 / r.requests.max(1) as f64));
    closed.insert("hopauth_module_redis".into(), r);
    let lat = revocation_latency(m.envoy.listen, fx, redis, "modrev");
    extra.insert("module_revocation_enforced_ms_p50".into(), json!(percentile(&lat, 0.5)));
    extra.insert("module_revocation_enforced_ms_p99".into(), json!(percentile(&lat, 0.99)));
    extra.insert("module_revocation_enforced_ms_max".into(), json!(percentile(&lat, 1.0)));
    extra.insert("module_revocation_samples".into(), json!(lat.len()));
}

/// The fresh-token run (after a warm-up on other fresh tokens); the run and how many
/// fresh tokens have been sent in all.
fn fresh_run(envoy: &BenchEnvoy, fx: &Fixture) -> (Run, u64) {
    let warm = wrk(envoy.listen, &fx.many, &fx.dir, 1, 0);
    let r = wrk(envoy.listen, &fx.many, &fx.dir, crate::CLOSED_SECS, warm.requests);
    crate::print_run("hopauth_module_fresh", &r);
    let sent = warm.requests + r.requests;
    (r, sent)
}

/// Sends fresh tokens from line `sent` on until the module's cache holds
/// [`CACHED_TOKENS`] (or the token list is spent); the entry count. Each run lasts what the
/// last measured rate (`rps`, first the fresh run's) needs for the entries still missing,
/// so the count ends within about one second's worth of tokens above the mark.
fn fill_cache(m: &Module, fx: &Fixture, mut sent: u64, mut rps: f64) -> u64 {
    let entries = || metric(m.side, "hopauth_verify_cache_entries").unwrap_or(0.0) as u64;
    let mut last = entries();
    while last < CACHED_TOKENS && sent < fx.fresh_tokens {
        let secs = (((CACHED_TOKENS - last) as f64 / rps.max(1.0)).floor() as u64).clamp(1, 30);
        let r = wrk(m.envoy.listen, &fx.many, &fx.dir, secs, sent);
        sent += r.requests;
        rps = r.rps;
        last = entries();
        eprintln!("filling the module's cache: {last} tokens after {sent} fresh requests");
    }
    last
}
