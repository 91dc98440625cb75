//! `target/bench/results.md` and `results.json`: the closed-loop table with ratios, the
//! issue's targets for the module computed from this run (each met or missed), the open
//! loop, and the other measures.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::instructions::{self, Count};
use crate::load_gen::Run;
use crate::rounds::{Ratio, Rounds, Spread, ROUNDS, ROUND_SECS};
use crate::{CLOSED_SECS, OPEN_SECS};

/// One target of issue 13, evaluated on this run.
#[derive(serde::Serialize)]
struct Target {
    what: &'static str,
    value: f64,
    unit: &'static str,
    target: &'static str,
    /// `None`: nothing to meet ("report it").
    met: Option<bool>,
    /// Over the interleaved rounds, for a ratio taken within each.
    spread: Option<Spread>,
}

fn targets(closed: &BTreeMap<String, Run>, rounds: &Rounds, extra: &Map<String, Value>) -> Vec<Target> {
    let rps = |n: &str| closed.get(n).map_or(f64::NAN, |r| r.rps);
    let measure = |n: &str| extra.get(n).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let single = |what, a: &str, b: &str, at_least: f64, target| {
        let value = rps(a) / rps(b);
        Target { what, value, unit: "×", target, met: Some(value >= at_least), spread: None }
    };
    let rounded = |what, a: &str, b: &str, at_least: Option<f64>, target| {
        let Ratio { median, spread } = rounds.ratio(a, b);
        Target { what, value: median, unit: "×", target, met: at_least.map(|l| median >= l), spread: Some(spread) }
    };
    let p99 = measure("module_revocation_enforced_ms_p99");
    vec![
        rounded("module cached vs jwt_authn with cache", "module_cached", "jwt_authn_cache", Some(1.0), "≥ 1.0×"),
        rounded(
            "module cached doing what jwt_authn does (no identity header, `claims_to_metadata: []`) vs jwt_authn with cache",
            "module_cached_verify_only",
            "jwt_authn_cache",
            Some(1.0),
            "≥ 1.0×",
        ),
        rounded(
            "module cached vs jwt_authn with cache doing the same job (identity header, claims metadata)",
            "module_cached",
            "jwt_authn_cache_same_job",
            None,
            "report it",
        ),
        single(
            "module cached vs ext_authz to the allow-everything server",
            "hopauth_module_cached",
            "ext_authz_allow_all",
            2.0,
            "≥ 2.0×",
        ),
        rounded(
            "module fresh token per request vs jwt_authn without cache",
            "module_fresh",
            "jwt_authn_fresh",
            Some(1.0),
            "≥ 1.0×",
        ),
        rounded(
            "module with Redis backend vs module with memory",
            "module_redis",
            "module_cached",
            Some(0.97),
            "≥ 0.97×",
        ),
        Target {
            what: "revocation written → enforced through the module, p99",
            value: p99,
            unit: "ms",
            target: "≤ 5 ms",
            met: Some(p99 <= 5.0),
            spread: None,
        },
        Target {
            what: "Envoy RSS, module with 100k cached tokens (the cache's count is `module_verify_cache_entries`)",
            value: measure("module_envoy_rss_mib_100k_tokens"),
            unit: "MiB",
            target: "report it",
            met: None,
            spread: None,
        },
    ]
}

/// Everything the report says about the run itself.
pub(crate) struct Context {
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) took_secs: f64,
    pub(crate) open_rate: f64,
}

pub(crate) fn write(
    out_dir: &Path,
    ctx: &Context,
    closed: &BTreeMap<String, Run>,
    open: &[(&str, Run)],
    rounds: &Rounds,
    counts: &[Count],
    extra: &Map<String, Value>,
) {
    let base = |n: &str| closed.get(n).map_or(0.0, |r| r.rps);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = String::from("# hopauth load comparison\n\n");
    md.push_str(&format!(
        "One run on this machine ({cores} cores; load average {} at the start, {} at the end; {:.0} s), \
         Envoy 1.40 `--concurrency 1`, `wrk -t1 -c32 -d{CLOSED_SECS}s`, ES256 token, `direct_response`.\n\n",
        ctx.load_before, ctx.load_after, ctx.took_secs
    ));
    md.push_str(&format!(
        "## Targets (issue 13), from this run\n\nA ratio with a range is the median of {ROUNDS} interleaved rounds \
         ({ROUND_SECS} s per variant; in brackets the quartiles, then lowest–highest; see below); the others are single runs.\n\n\
         | what | measured | target | |\n|---|---:|---|---|\n"
    ));
    let targets = targets(closed, rounds, extra);
    for t in &targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "reported",
        };
        let value = match (t.unit, t.spread) {
            ("×", Some(Spread { q1, q3, min, max })) => {
                format!("{:.2}× ({q1:.2}–{q3:.2}; {min:.2}–{max:.2})", t.value)
            }
            ("×", None) => format!("{:.2}×", t.value),
            _ => format!("{:.2} {}", t.value, t.unit),
        };
        md.push_str(&format!("| {} | {value} | {} | {verdict} |\n", t.what, t.target));
    }
    md.push_str(&format!(
        "\n## Interleaved rounds\n\nEvery Envoy below runs at once; each round measures them one after another \
         (`wrk -t1 -c32 -d{ROUND_SECS}s`; even rounds in reverse order), req/s:\n\n| round |{}\n|---:|{}\n",
        rounds.variants.iter().map(|(name, _)| format!(" {name} |")).collect::<String>(),
        "---:|".repeat(rounds.variants.len())
    ));
    for round in 0..ROUNDS {
        let cells: String = rounds
            .variants
            .iter()
            .map(|(_, rps)| rps.get(round).map_or(" |".into(), |r| format!(" {r:.0} |")))
            .collect();
        md.push_str(&format!("| {} |{cells}\n", round + 1));
    }
    md.push_str(&instructions_section(counts));
    md.push_str("\n## Closed loop (one run per variant)\n\n| variant | req/s | p50 ms | p99 ms | p99.9 ms | non-2xx | vs no auth | vs allow-all ext_authz | vs jwt_authn |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (name, r) in closed {
        md.push_str(&format!(
            "| {name} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {:.2}× | {:.2}× | {:.2}× |\n",
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.non_2xx,
            r.rps / base("no_auth"),
            r.rps / base("ext_authz_allow_all"),
            r.rps / base("jwt_authn")
        ));
    }
    let no_auth_p99 = open.iter().find(|(n, _)| *n == "no_auth").map_or(0.0, |(_, r)| r.p99_ms);
    md.push_str(&format!(
        "\n## Open loop\n\nAt {:.0} req/s (half of hopauth's cached saturation), 16 connections on one generator thread, {OPEN_SECS}s:\n\n\
         | variant | p50 ms | p99 ms | p99.9 ms | non-2xx | p99 added over no_auth |\n|---|---:|---:|---:|---:|---:|\n",
        ctx.open_rate
    ));
    for (name, r) in open {
        md.push_str(&format!(
            "| {name} | {:.3} | {:.3} | {:.3} | {} | {:.3} |\n",
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.non_2xx,
            r.p99_ms - no_auth_p99
        ));
    }
    md.push_str("\n## Other measures\n\n| measure | value |\n|---|---:|\n");
    for (k, v) in extra {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    let mut open_json = Map::new();
    open_json.insert("rate".into(), json!(ctx.open_rate));
    for (name, r) in open {
        open_json.insert((*name).into(), json!(r));
    }
    let report = json!({
        "load_average": { "start": ctx.load_before, "end": ctx.load_after },
        "took_secs": ctx.took_secs,
        "targets": targets,
        "closed_loop": closed,
        "rounds": rounds.json(),
        "callgrind_instructions_per_request": instructions::json(counts),
        "open_loop": open_json,
        "measures": extra,
    });
    std::fs::write(out_dir.join("results.md"), &md).unwrap();
    std::fs::write(out_dir.join("results.json"), serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("{md}");
    println!("written: {}", out_dir.join("results.md").display());
}

/// `callgrind.md` and `callgrind.json`: the instruction counts alone.
pub(crate) fn write_counts(out_dir: &Path, counts: &[Count]) {
    let md = format!("# hopauth instruction counts{}", instructions_section(counts));
    std::fs::write(out_dir.join("callgrind.md"), &md).unwrap();
    let json = serde_json::to_string_pretty(&instructions::json(counts)).unwrap();
    std::fs::write(out_dir.join("callgrind.json"), json).unwrap();
    println!("{md}");
    println!("written: {}", out_dir.join("callgrind.md").display());
}

/// The callgrind counts, and the comparisons in instructions: whole requests, and
/// the auth filter's own share (the request's count less no auth's).
fn instructions_section(counts: &[Count]) -> String {
    let get = |n: &str| counts.iter().find(|c| c.name == n).map_or(f64::NAN, |c| c.worker);
    let no_auth = get("no_auth");
    let mut md = String::from(
        "\n## Instructions per request (callgrind)\n\nEach variant in its own Envoy under `valgrind --tool=callgrind`, \
         counted on Envoy's worker thread over the requests answered (`benches/load/instructions.rs`). The kernel is not \
         counted, nor time that is not instructions; the counts do not move with the machine's load.\n\n\
         | variant | worker, per request | less no auth | other threads, per request | requests |\n|---|---:|---:|---:|---:|\n",
    );
    for c in counts {
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {} |\n",
            c.name,
            c.worker,
            c.worker - no_auth,
            c.others,
            c.requests
        ));
    }
    md.push_str("\n| comparison | whole request | the filter's own |\n|---|---:|---:|\n");
    for (what, a, b) in [
        ("module cached vs jwt_authn with cache", "module_cached", "jwt_authn_cache"),
        (
            "module cached doing what jwt_authn does vs jwt_authn with cache",
            "module_cached_verify_only",
            "jwt_authn_cache",
        ),
        ("module cached vs jwt_authn with cache doing the same job", "module_cached", "jwt_authn_cache_same_job"),
        ("module fresh vs jwt_authn without cache", "module_fresh", "jwt_authn_fresh"),
        ("module Redis vs module memory", "module_redis", "module_cached"),
    ] {
        // Fewer instructions is better: b ÷ a, so above 1.0 means the module's side costs less.
        md.push_str(&format!(
            "| {what} | {:.3}× | {:.3}× |\n",
            get(b) / get(a),
            (get(b) - no_auth) / (get(a) - no_auth)
        ));
    }
    md.push_str("\n(b ÷ a in instructions, as the req/s ratios are a ÷ b: above 1.0, the first costs less.)\n");
    md
}
