//! `--concurrency 4` under concurrent traffic: every answer right and every decision
//! counted once, by hopauth and by Envoy.

use super::*;

const CLIENTS: usize = 8;
const REQUESTS: usize = 40;

async fn four_workers_answer_concurrent_clients_and_count_every_decision_once(mode: Mode) {
    // The sidecar shares this test's runtime and, on a busy 2-core machine, a debug build
    // can take longer than ext_authz's 200 ms Check deadline or the 250 ms health-check
    // timeout (one miss marks it unhealthy), or hopauth's own 50 ms `max_queue_delay`, for
    // a burst of first verifications. This test is about answers and counts, not latency:
    // 5 s for each.
    let slow_ok = |url: &str| config_yaml(url, "", "max_queue_delay: 5s");
    let s = Stack::launch(mode, slow_ok, move |l| match mode {
        Mode::ExtAuthz => l
            .concurrency(4)
            .replace("timeout: 0.2s", "timeout: 5s".into())
            .replace("- timeout: 0.25s", "- timeout: 5s".into()),
        Mode::Module => l.concurrency(4),
    })
    .await;
    let s = std::sync::Arc::new(s);
    // Signed up front, so signing does not compete with the sidecar during the traffic.
    let tokens: Vec<Vec<(String, String)>> = (0..CLIENTS)
        .map(|c| {
            (0..REQUESTS)
                .map(|i| {
                    let sub = format!("user-{c}-{i}");
                    let mut claims = claims(&sub);
                    if i % 2 == 1 {
                        claims["exp"] = (now() - 10).into();
                    }
                    (sub, s.keys.es.sign_jwt(&claims).unwrap())
                })
                .collect()
        })
        .collect();
    let mut clients = Vec::new();
    for (c, tokens) in tokens.into_iter().enumerate() {
        let s = s.clone();
        clients.push(tokio::spawn(async move {
            // A connection of its own per client, so Envoy spreads them over its workers.
            let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().unwrap();
            for (i, (sub, token)) in tokens.iter().enumerate() {
                let r = send(&client, &s.envoy.url("/x"), &[("authorization", &bearer(token))]).await;
                if i % 2 == 0 {
                    assert_eq!(
                        (r.status, r.upstream_header("x-jwt-sub")),
                        (200, Some(sub.as_str())),
                        "client {c}: {r:?}"
                    );
                } else {
                    assert_invalid_token(&r, "token has expired");
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let half = (CLIENTS * REQUESTS / 2) as f64;
    let m = s.metrics().await;
    assert_eq!(metric_value(&m, r#"hopauth_checks_total{decision="allow",reason="verified"}"#), half, "{m}");
    assert_eq!(metric_value(&m, r#"hopauth_checks_total{decision="deny",reason="expired"}"#), half, "{m}");
    assert_eq!(s.envoy_denies().await, half as u64);
    assert_eq!(s.authz_errors().await, 0);
}

in_both_modes!(four_workers_answer_concurrent_clients_and_count_every_decision_once);
