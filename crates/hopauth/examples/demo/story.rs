//! The story: its state (the system, the step counter, what failed), the helpers every
//! step uses (show a request and its reply, begin and end a step, sum a metric over every
//! hopauth, call the chain), and the order of the steps.

use std::time::{Duration, Instant};

use hopauth_testkit::chain_stack::NAMES;
use hopauth_testkit::issuer_stack::{post_form, TokenReply};
use hopauth_testkit::{bearer, send, Reply};

use crate::checks::{ensure, expect_status, Outcome};
use crate::output::{bold, cyan, detail, dim, green, ms, red, short, show_reply, show_request, status_text};
use crate::revoke::{step_refresh, step_revoke};
use crate::steps::{step_bypass, step_chain, step_login, step_metrics, step_refused_at_gateway, step_scope};
use crate::system::System;

pub(crate) const STEPS: usize = 8;

pub(crate) struct Demo {
    pub(crate) sys: System,
    pub(crate) step: usize,
    pub(crate) failures: Vec<String>,
    /// Per hop, the time from the revoke request to its first refusal.
    pub(crate) revocation: Vec<(String, Duration)>,
}

impl Demo {
    pub(crate) async fn get(&self, url: &str, headers: &[(&str, &str)], note: &str) -> Reply {
        show_request("GET", url, headers, note);
        let start = Instant::now();
        let r = send(&self.sys.client, url, headers).await;
        show_reply(&r, start.elapsed());
        r
    }

    pub(crate) async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        bearer_token: Option<&str>,
    ) -> (TokenReply, Duration) {
        let url = self.sys.issuer_url(path);
        let shown: Vec<String> = form
            .iter()
            .map(|(k, v)| if k.contains("token") { format!("{k}={}", short(v)) } else { format!("{k}={v}") })
            .collect();
        let auth = bearer_token.map(bearer);
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        show_request("POST", &url, &headers, &shown.join("&"));
        let start = Instant::now();
        let r = post_form(&self.sys.client, &url, form, bearer_token).await;
        let took = start.elapsed();
        println!("  {} {}  {}", cyan("←"), status_text(r.status), dim(ms(took)));
        (r, took)
    }

    pub(crate) fn begin(&mut self, title: &str) {
        self.step += 1;
        println!();
        println!("{} {}", bold(cyan(format!("[{}/{STEPS}]", self.step))), bold(title));
    }

    pub(crate) fn end(&mut self, title: &str, outcome: Outcome, ok: &str) {
        match outcome {
            Ok(()) => println!("  {} {}", green("✔ as expected:"), ok),
            Err(e) => {
                println!("  {} {}", red(bold("✘ UNEXPECTED:")), red(&e));
                self.failures.push(format!("step {} ({title}): {e}", self.step));
            }
        }
    }

    /// Sum over every hopauth (its `/metrics`) of one metric line's value.
    pub(crate) async fn metric_sum(&self, line_start: &str) -> f64 {
        let mut sum = 0.0;
        for (_, h) in &self.sys.hopauths {
            let url = format!("http://{}/metrics", h.http_addr());
            let Ok(resp) = self.sys.client.get(&url).send().await else { continue };
            let text = resp.text().await.unwrap_or_default();
            let value =
                text.lines().find_map(|l| l.strip_prefix(line_start).and_then(|v| v.trim().parse::<f64>().ok()));
            sum += value.unwrap_or(0.0);
        }
        sum
    }

    /// Calls A → B → C through the gateway and prints what each service saw.
    pub(crate) async fn call_chain(&self, token: &str, note: &str) -> Outcome {
        let auth = bearer(token);
        let allowed = r#"hopauth_checks_total{decision="allow",reason="verified"} "#;
        let before = self.metric_sum(allowed).await;
        let r = self.get(&self.sys.chain.gateway_url("/chain"), &[("authorization", &auth)], note).await;
        expect_status(&r, 200)?;
        let mut node = &r.body;
        for (i, name) in NAMES.iter().enumerate() {
            let sub = node["identity"]["x-jwt-sub"].as_str().unwrap_or("(none)");
            let scope = node["identity"]["x-jwt-scope"].as_str().unwrap_or("(none)");
            println!(
                "      {}{} {} saw sub={} scope=\"{}\" {}",
                "   ".repeat(i),
                if i == 0 { "▶" } else { "└▶" },
                bold(format!("service {name}")),
                green(bold(sub)),
                scope,
                dim(format!("(verified by {name}'s sidecar, token received: {})", node["token_received"])),
            );
            ensure!(node["service"] == *name, "hop {} is {}, expected {name}", i + 1, node["service"]);
            ensure!(sub == "alice", "{name} saw sub {sub}, expected alice");
            ensure!(node["token_received"] == true, "{name} did not receive the token");
            if i + 1 < NAMES.len() {
                ensure!(node["next"]["status"] == 200, "{name}'s call to the next hop: {}", node["next"]);
                node = &node["next"]["body"];
            }
        }
        let checks = (self.metric_sum(allowed).await - before).round() as u64;
        detail("hopauth allow decisions for this request", format!("{checks} (gateway, A, B, C)"));
        ensure!(checks == 4, "expected 4 verified allows (one per hop), got {checks}");
        Ok(())
    }
}

pub(crate) async fn run_demo(sys: System) -> i32 {
    let mut d = Demo { sys, step: 0, failures: Vec::new(), revocation: Vec::new() };
    if let Some(login) = step_login(&mut d).await {
        let access = login.access().to_string();
        step_chain(&mut d, &access).await;
        step_refused_at_gateway(&mut d, &access).await;
        step_bypass(&mut d, &access).await;
        step_revoke(&mut d, &access).await;
        if let Some(fresh) = step_refresh(&mut d, login.refresh(), &access).await {
            step_scope(&mut d, &fresh).await;
        }
        step_metrics(&mut d).await;
    }
    let Demo { sys, step, mut failures, revocation } = d;
    if step < STEPS && failures.is_empty() {
        failures.push(format!("only {step} of {STEPS} steps ran"));
    }
    sys.shutdown().await;

    println!();
    if failures.is_empty() {
        let times: Vec<String> = revocation.iter().map(|(l, t)| format!("{l} {}", ms(*t))).collect();
        println!("{}", green(bold(format!("✔ all {STEPS} steps behaved as expected"))));
        println!("  {} {}", dim("revocation → refusal:"), times.join(", "));
        0
    } else {
        println!("{}", red(bold(format!("✘ demo FAILED: {} problem(s)", failures.len()))));
        for f in &failures {
            println!("  {}", red(f));
        }
        1
    }
}
