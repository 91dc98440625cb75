//! F9: Checks abandoned mid-verification.

use super::*;

const SLOW_ISSUER: &str = "https://slow.test";

/// File descriptors open in this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// F9: Envoy gives up on Checks stuck in a verification (an unknown `kid` whose refetch
/// hangs on a stalled JWKS link, `kid_refetch_wait` 1 s against Envoy's 200 ms), by its
/// deadline or because the client hung up. The link then heals within the wait and the new
/// key arrives: a Check that outlived its call would now allow. None does; the app sees
/// none of those requests; tasks and file descriptors return to where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f9_checks_abandoned_mid_verification_never_allow_and_leave_nothing_behind() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let old = SigningKey::generate(Alg::ES256, "slow-1").unwrap();
    let new = SigningKey::generate(Alg::ES256, "slow-2").unwrap();
    let slow_jwks = JwksServer::start(jwks_of(&[&old]), SLOW_ISSUER).await;
    let proxy = FaultProxy::start(slow_jwks.addr).await;
    let slow = format!(
        "  - name: slow\n    issuer: {SLOW_ISSUER}\n    audiences: [{AUDIENCE}]\n    algorithms: [ES256]\n    \
         jwks:\n      uri: {}\n      timeout: 3s\n      kid_refetch_interval: 1s\n      \
         kid_refetch_wait: 1s\n",
        proxy.http_url("/jwks.json")
    );
    let hopauth = start_hopauth(&config_yaml(&jwks.url(), &slow, "")).await;
    wait_ready(&hopauth).await;
    let app = start_echo().await;
    let envoy = envoy(hopauth.grpc_addr, app, false).await;
    let http_client = client(Duration::from_secs(5));
    let slow_claims = || {
        let mut c = claims("slow-user");
        c["iss"] = json!(SLOW_ISSUER);
        c
    };
    assert_eq!(get(&http_client, &envoy, &old.sign_jwt(&slow_claims()).unwrap()).await.status, 200);
    assert_eq!(get(&http_client, &envoy, &keys.es.sign_jwt(&claims("warm")).unwrap()).await.status, 200);
    let rotated = new.sign_jwt(&slow_claims()).unwrap();

    // Settle, then take the baseline.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (tasks0, fds0, jwks_conns0) = (alive_tasks(), open_fds(), proxy.open());
    let allows0 = metric_value(&hopauth.metrics.render(), ALLOWS);
    let upstream0 = envoy.stat("cluster.app.upstream_rq_total").await;
    let errors0 = envoy.stat("http.ingress.ext_authz.error").await;
    let refreshes0 =
        metric_value(&hopauth.metrics.render(), r#"hopauth_jwks_refresh_total{provider="slow",result="success"}"#);

    // The IdP publishes the new key, but the link to it hangs.
    slow_jwks.set(jwks_of(&[&old, &new]));
    proxy.set_stalled(true);
    let started = Instant::now();
    let by_deadline: Vec<_> = (0..6)
        .map(|_| {
            let (client, url, token) = (http_client.clone(), envoy.url("/x"), rotated.clone());
            tokio::spawn(async move { send(&client, &url, &[("authorization", &bearer(&token))]).await.status })
        })
        .collect();
    let impatient = client(Duration::from_millis(60));
    let hung_up: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, token) = (impatient.clone(), envoy.url("/x"), rotated.clone());
            tokio::spawn(async move { client.get(url).bearer_auth(token).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    for h in by_deadline {
        assert_eq!(h.await.unwrap(), 503, "Envoy's deadline passed: status_on_error");
    }
    for h in hung_up {
        assert!(h.await.unwrap().is_err(), "the impatient client hung up before any answer");
    }
    let abandoned_after = started.elapsed();
    // Heal within kid_refetch_wait of the first Check: the stalled fetch completes and the
    // new key is installed while an uncancelled Check would still be waiting for it.
    proxy.heal();
    let end = Instant::now() + Duration::from_secs(10);
    while metric_value(&hopauth.metrics.render(), r#"hopauth_jwks_refresh_total{provider="slow",result="success"}"#)
        <= refreshes0
    {
        assert!(Instant::now() < end, "the stalled JWKS fetch never completed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let key_arrived = started.elapsed();
    // Longer than kid_refetch_wait from the start: anything still running has decided.
    while started.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = hopauth.metrics.render();
    eprintln!(
        "F9: 10 Checks abandoned by {abandoned_after:?}; new key installed at {key_arrived:?}; \
         deny unknown_key after: {}",
        metric_value(&text, r#"hopauth_checks_total{decision="deny",reason="unknown_key"}"#)
    );
    assert!(key_arrived < Duration::from_secs(1), "the key arrived within kid_refetch_wait ({key_arrived:?})");
    assert_eq!(metric_value(&text, ALLOWS), allows0, "a Check abandoned by Envoy was allowed");
    assert_eq!(envoy.stat("cluster.app.upstream_rq_total").await, upstream0, "an abandoned request reached the app");
    assert!(envoy.stat("http.ingress.ext_authz.error").await >= errors0 + 6);

    // The same token, asked again, passes: the abandoned ones would have, had they lived.
    assert_eq!(get(&http_client, &envoy, &rotated).await.status, 200);
    assert_eq!(metric_value(&hopauth.metrics.render(), ALLOWS), allows0 + 1.0);

    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let (tasks, fds, jwks_conns) = (alive_tasks(), open_fds(), proxy.open());
        if tasks <= tasks0 && fds <= fds0 && jwks_conns <= jwks_conns0 {
            eprintln!(
                "F9: tasks {tasks0} -> {tasks}, fds {fds0} -> {fds}, JWKS connections {jwks_conns0} -> {jwks_conns}"
            );
            break;
        }
        assert!(
            Instant::now() < end,
            "not back to baseline: tasks {tasks0} -> {tasks}, fds {fds0} -> {fds}, JWKS connections {jwks_conns0} -> {jwks_conns}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
