//! Alerts and dashboards as code: the rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`), the Prometheus Operator copy carries the same groups, every
//! alert has a runbook in docs/operations.md and a unit test, and every metric a rule or the
//! Grafana dashboard names is one that hopauth or Envoy really exports.

use hopauth_testkit as support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::*;

fn promtool() -> std::path::PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':').map(|dir| Path::new(dir).join("promtool")).find(|p| p.exists()).unwrap_or_else(|| {
        panic!("promtool not found on PATH: run `make tools` (installs Debian's prometheus package with apt)")
    })
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    serde_yaml_ng::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn promtool_ok(args: &[&str]) {
    let out = Command::new(promtool()).args(args).current_dir(repo_root().join("monitoring")).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
}

fn alerts(rules: &Value) -> Vec<&Value> {
    rules["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect()
}

#[test]
fn rules_are_valid_and_pass_their_unit_tests() {
    promtool_ok(&["check", "rules", "hopauth.rules.yml"]);
    promtool_ok(&["test", "rules", "hopauth.rules.test.yml"]);
}

#[test]
fn the_operator_copy_has_the_same_groups() {
    let plain = yaml("monitoring/hopauth.rules.yml");
    let operator = yaml("k8s/components/monitoring/prometheusrule.yaml");
    assert_eq!(operator["kind"], "PrometheusRule");
    assert_eq!(operator["spec"]["groups"], plain["groups"], "k8s/components/monitoring/prometheusrule.yaml drifted");
}

#[test]
fn every_alert_has_a_runbook_and_a_unit_test() {
    let plain = yaml("monitoring/hopauth.rules.yml");
    let tests = read("monitoring/hopauth.rules.test.yml");
    let runbooks = read("docs/operations.md");
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_lowercase().chars().filter(|c| c.is_alphanumeric() || *c == '-').collect())
        .collect();
    for rule in alerts(&plain) {
        let name = rule["alert"].as_str().unwrap();
        let runbook = rule["annotations"]["runbook"].as_str().unwrap_or_else(|| panic!("{name}: no runbook"));
        let anchor = runbook.strip_prefix("docs/operations.md#").unwrap_or_else(|| panic!("{name}: {runbook}"));
        assert!(anchors.contains(anchor), "{name}: docs/operations.md has no `### {name}` ({anchors:?})");
        assert!(tests.contains(&format!("alertname: {name}")), "{name} has no unit test");
    }
}

/// Metric names in a PromQL expression: the identifiers of our three families.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && ["hopauth_", "envoy_", "process_"].iter().any(|p| expr[i..].starts_with(p)) {
            let end = expr[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(expr.len(), |n| i + n);
            names.push(expr[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// Every metric family name an exposition declares (`# TYPE name kind`), with the
/// `_bucket`, `_sum` and `_count` series of histograms.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
            names.insert(name.to_string());
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_name_only_metrics_that_exist() {
    let s = Stack::start().await;
    // One allowed and one denied request, so Envoy's ext_authz counters are in use.
    let token = s.keys.es.sign_jwt(&claims("alice")).unwrap();
    assert_eq!(s.get_with_token("/x", &token).await.status, 200);
    assert_eq!(s.get("/x", &[]).await.status, 401);
    let hopauth = reqwest::get(format!("http://{}/metrics", s.http_addr)).await.unwrap().text().await.unwrap();
    let envoy = reqwest::get(format!("http://{}/stats/prometheus", s.envoy.admin)).await.unwrap().text().await.unwrap();
    let known: BTreeSet<String> = exported(&hopauth).into_iter().chain(exported(&envoy)).collect();
    assert!(known.contains("envoy_http_ext_authz_failure_mode_allowed"), "Envoy's names changed?\n{envoy}");

    let mut queries: Vec<(String, String)> = Vec::new();
    for rule in alerts(&yaml("monitoring/hopauth.rules.yml")) {
        queries.push((format!("rule {}", rule["alert"]), rule["expr"].as_str().unwrap().to_string()));
    }
    let dashboard: Value = serde_json::from_str(&read("monitoring/grafana-dashboard.json")).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    for v in variables.iter().filter(|v| v["type"] == "query") {
        queries.push((format!("variable {}", v["name"]), v["query"].as_str().unwrap().to_string()));
    }
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push((format!("panel {}", panel["title"]), target["expr"].as_str().unwrap().to_string()));
        }
    }
    assert!(queries.len() > 20, "{}", queries.len());
    for (what, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{what}: no metric in {expr}");
        for name in names {
            assert!(known.contains(&name), "{what} names {name}, which neither hopauth nor Envoy exports: {expr}");
        }
    }
}
