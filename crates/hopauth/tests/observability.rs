//! What operators scrape: the `/metrics` exposition passes Prometheus's own linter
//! (`promtool check metrics`), and every series an alert or the dashboard needs exists from
//! the start, at 0, before the first event.

use hopauth_testkit as support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::*;

/// `promtool` (Debian package `prometheus`, installed by `make tools`).
fn promtool() -> std::path::PathBuf {
    let on_path = std::env::var("PATH").unwrap_or_default();
    let found = on_path.split(':').map(|dir| std::path::Path::new(dir).join("promtool")).find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!("promtool not found on PATH: run `make tools` (installs Debian's prometheus package with apt)")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_every_series_exists_from_start() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let running = start_hopauth(&config_yaml(&jwks.url(), "", "")).await;
    // Before anything happened: the series alerts use are there already.
    let text = scrape(&running).await;
    for series in [
        format!("hopauth_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
        "hopauth_checks_total{decision=\"deny\",reason=\"revoked\"} 0".into(),
        "hopauth_checks_total{decision=\"allow\",reason=\"verified\"} 0".into(),
        "hopauth_jwks_refresh_total{provider=\"main\",result=\"error\"} 0".into(),
        "hopauth_revocation_fail_open_total 0".into(),
        "hopauth_revocation_syncs_total{result=\"error\"} 0".into(),
        "hopauth_admin_revocations_total{kind=\"jti\",result=\"ok\"} 0".into(),
        "hopauth_admin_unrevocations_total{kind=\"subject\",result=\"not_found\"} 0".into(),
        "hopauth_admin_auth_failures_total{outcome=\"wrong_token\"} 0".into(),
        "hopauth_config_reloads_total{result=\"ok\"} 0".into(),
        "hopauth_config_reloads_total{result=\"error\"} 0".into(),
        "hopauth_tls_reloads_total{result=\"error\"} 0".into(),
        "hopauth_verify_cache_entries 0".into(),
    ] {
        assert!(text.contains(&series), "missing at start: {series}\n{text}");
    }
    for name in ["process_resident_memory_bytes", "process_open_fds", "hopauth_jwks_key_age_seconds"] {
        assert!(text.lines().any(|l| l.starts_with(name)), "missing {name}\n{text}");
    }

    wait_ready(&running).await;
    wait_until("the key age to be measured", std::time::Duration::from_secs(5), || {
        let running = &running;
        async move {
            let text = scrape(running).await;
            text.lines()
                .any(|l| l.starts_with("hopauth_jwks_key_age_seconds{provider=\"main\"}") && !l.ends_with(" -1"))
        }
    })
    .await;

    let text = scrape(&running).await;
    let mut lint = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics:\n{report}");
    running.shutdown().await;
}
