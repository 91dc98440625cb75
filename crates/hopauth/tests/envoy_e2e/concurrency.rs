//! `--concurrency 4` under concurrent traffic: every answer right and every decision
//! counted once, by hopauth and by Envoy.

use super::*;

const CLIENTS: usize = 8;
const REQUESTS: usize = 40;

async fn four_workers_answer_concurrent_clients_and_count_every_decision_once(mode: Mode) {
    // A debug-build sidecar on a busy 2-core machine can take longer than ext_authz's
    // 200 ms for a burst of first verifications; this test is about answers and counts,
    // not latency, so ext_authz gets 5 s here.
    let s = Stack::launch(mode, |url| config_yaml(url, "", ""), move |l| match mode {
        Mode::ExtAuthz => l.concurrency(4).replace("timeout: 0.2s", "timeout: 5s".into()),
        Mode::Module => l.concurrency(4),
    })
    .await;
    let s = std::sync::Arc::new(s);
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let s = s.clone();
        clients.push(tokio::spawn(async move {
            // A connection of its own per client, so Envoy spreads them over its workers.
            let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().unwrap();
            for i in 0..REQUESTS {
                let sub = format!("user-{c}-{i}");
                let mut claims = claims(&sub);
                if i % 2 == 1 {
                    claims["exp"] = (now() - 10).into();
                }
                let token = s.keys.es.sign_jwt(&claims).unwrap();
                let r = send(&client, &s.envoy.url("/x"), &[("authorization", &bearer(&token))]).await;
                if i % 2 == 0 {
                    assert_eq!((r.status, r.upstream_header("x-jwt-sub")), (200, Some(sub.as_str())), "{r:?}");
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
    assert_eq!(metric(&m, r#"hopauth_checks_total{decision="allow",reason="verified"}"#), half, "{m}");
    assert_eq!(metric(&m, r#"hopauth_checks_total{decision="deny",reason="expired"}"#), half, "{m}");
    assert_eq!(s.envoy_denies().await, half as u64);
    assert_eq!(s.authz_errors().await, 0);
}

in_both_modes!(four_workers_answer_concurrent_clients_and_count_every_decision_once);
