//! The ratios from interleaved rounds. One 8 s run per variant moved by ±20 % on the
//! shared 2-core VM (the module's Redis run once beat its memory run, on the same request
//! path), more than the gaps being measured. Here every Envoy of the comparison runs at
//! once, each idle while another is measured, and a round measures them one after
//! another, so a drift of the machine hits every variant of a round alike. Even rounds run
//! the variants in reverse order, so no variant is always measured right after another
//! (the module's Redis run, always measured right after its memory run, read 0.91× of it
//! over three rounds with no cost on its request path to show for it). A ratio is taken
//! within a round; the report gives its median over [`ROUNDS`], the quartiles and the
//! extremes.
//!
//! Many short rounds, not a few long ones: the machine's speed moves within seconds
//! (`jwt_authn` alone read 10.8k–21.6k req/s in twenty 1 s runs a few seconds apart), so
//! the ratio of one pair of runs spreads over about ±25 % whatever the run length, and
//! only the number of pairs narrows the median. Twelve rounds of 2 s cost what four of
//! 5 s did, and each compared pair is measured back to back (the order below).
//!
//! Variants: `jwt_authn` with its cache; `jwt_authn` with its cache doing the module's job
//! (`sub` to `x-jwt-sub`, claims to dynamic metadata); the module, memory and Redis
//! backends, one cached token, and the module doing only what `jwt_authn` does by default
//! (no identity header, `claims_to_metadata: []`); and for the uncached path `jwt_authn`
//! without cache against the module, each request a token that Envoy has not seen before.

use hopauth_testkit::redis_server::RedisServer;
use serde_json::{json, Value};

use crate::envoy::{envoy_config, jwt_authn_filter, jwt_authn_same_job_filter, start_envoy, BenchEnvoy};
use crate::load_gen::wrk;
use crate::module::start_module;
use crate::servers::{free_port, Job};
use crate::Fixture;

/// Rounds per comparison: even, so each order runs as often as the other.
pub(crate) const ROUNDS: usize = 12;
/// Seconds per measured run within a round.
pub(crate) const ROUND_SECS: u64 = 2;

/// Requests per second by round, for each variant.
pub(crate) struct Rounds {
    pub(crate) variants: Vec<(&'static str, Vec<f64>)>,
}

/// A ratio over the rounds: its median and how the rounds spread around it.
pub(crate) struct Ratio {
    pub(crate) median: f64,
    pub(crate) spread: Spread,
}

/// Quartiles and extremes of a ratio over the rounds.
#[derive(serde::Serialize, Clone, Copy)]
pub(crate) struct Spread {
    pub(crate) q1: f64,
    pub(crate) q3: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Rounds {
    fn rps(&self, name: &str) -> &[f64] {
        self.variants.iter().find(|(n, _)| *n == name).map_or(&[], |(_, r)| r.as_slice())
    }

    /// `a ÷ b` within each round.
    pub(crate) fn ratio(&self, a: &str, b: &str) -> Ratio {
        let per: Vec<f64> = self.rps(a).iter().zip(self.rps(b)).map(|(a, b)| a / b).collect();
        Ratio::of(per)
    }

    pub(crate) fn json(&self) -> Value {
        json!(self.variants.iter().map(|(n, r)| (n.to_string(), json!(r))).collect::<serde_json::Map<_, _>>())
    }
}

impl Ratio {
    /// The median, quartiles (each the median of its half, Tukey's hinges), lowest and
    /// highest of `per`.
    fn of(mut per: Vec<f64>) -> Self {
        per.sort_by(f64::total_cmp);
        let n = per.len();
        if n == 0 {
            let spread = Spread { q1: f64::NAN, q3: f64::NAN, min: f64::NAN, max: f64::NAN };
            return Ratio { median: f64::NAN, spread };
        }
        let half = n.div_ceil(2);
        let spread = Spread { q1: median(&per[..half]), q3: median(&per[n - half..]), min: per[0], max: per[n - 1] };
        Ratio { median: median(&per), spread }
    }
}

/// The median of sorted, non-empty `v` (of the middle two for an even count).
fn median(v: &[f64]) -> f64 {
    let n = v.len();
    if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

/// One variant: where it listens, which tokens it gets, and whether each request must
/// carry a token not sent before (the line to continue from advances).
struct Variant {
    name: &'static str,
    listen: u16,
    fresh: bool,
}

impl Variant {
    fn tokens<'f>(&self, fx: &'f Fixture) -> &'f std::path::Path {
        if self.fresh {
            &fx.many
        } else {
            &fx.one
        }
    }
}

fn jwt_envoy(fx: &Fixture, name: &str, filter: &str) -> BenchEnvoy {
    let listen = free_port();
    start_envoy(&fx.dir, name, &envoy_config(listen, free_port(), filter, "[]"), listen, None)
}

pub(crate) fn run(fx: &Fixture, redis: &RedisServer) -> Rounds {
    let jwt_cache = jwt_envoy(fx, "rounds_jwt_authn_cache", &jwt_authn_filter(&fx.jwks, true));
    let jwt_same = jwt_envoy(fx, "rounds_jwt_authn_same_job", &jwt_authn_same_job_filter(&fx.jwks));
    let jwt = jwt_envoy(fx, "rounds_jwt_authn", &jwt_authn_filter(&fx.jwks, false));
    let memory = start_module(fx, "rounds_memory", "", Job::Identity);
    let verify_only = start_module(fx, "rounds_verify_only", "", Job::VerifyOnly);
    let revocation = format!("revocation: {{ backend: redis, redis_url: \"{}\" }}\n", redis.url());
    let with_redis = start_module(fx, "rounds_redis", &revocation, Job::Identity);
    let v = |name, e: &BenchEnvoy, fresh| Variant { name, listen: e.listen, fresh };
    // Each pair the report compares is measured back to back, except the module's Redis
    // and memory runs, with the same-job run between them (reversing the order on even
    // rounds keeps that fair).
    let variants = [
        v("jwt_authn_cache", &jwt_cache, false),
        v("module_cached_verify_only", &verify_only.envoy, false),
        v("module_cached", &memory.envoy, false),
        v("jwt_authn_cache_same_job", &jwt_same, false),
        v("module_redis", &with_redis.envoy, false),
        v("jwt_authn_fresh", &jwt, true),
        v("module_fresh", &memory.envoy, true),
    ];
    // Line of the fresh-token file each fresh variant continues from.
    let mut from = vec![0u64; variants.len()];
    for (i, var) in variants.iter().enumerate() {
        let warm = wrk(var.listen, var.tokens(fx), &fx.dir, 1, 0);
        if var.fresh {
            from[i] = warm.requests;
        }
    }
    let mut rps = vec![Vec::with_capacity(ROUNDS); variants.len()];
    for round in 1..=ROUNDS {
        let mut order: Vec<usize> = (0..variants.len()).collect();
        if round.is_multiple_of(2) {
            order.reverse();
        }
        for i in order {
            let var = &variants[i];
            let r = wrk(var.listen, var.tokens(fx), &fx.dir, ROUND_SECS, if var.fresh { from[i] } else { 0 });
            assert_eq!(r.non_2xx, 0, "round {round}, {}: {} answers were not 2xx", var.name, r.non_2xx);
            if var.fresh {
                from[i] += r.requests;
                assert!(from[i] < fx.fresh_tokens, "{}: the fresh tokens ran out; raise FRESH_TOKENS", var.name);
            }
            eprintln!("round {round}/{ROUNDS} {:<26} {:>9.0} req/s", var.name, r.rps);
            rps[i].push(r.rps);
        }
    }
    Rounds { variants: variants.iter().map(|v| v.name).zip(rps).collect() }
}
