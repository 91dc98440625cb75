//! envoy/hopauth.yaml when hopauth cannot be asked: Envoy's own refusal is the 503 with a
//! JSON body and `retry-after` that the decision table promises (its local reply mapper),
//! never the upstream, while hopauth's own denies pass through untouched.

use hopauth_testkit as support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_own_refusal_is_a_json_503_and_hopauths_denies_pass_untouched() {
    // ext_authz only: what Envoy answers when the sidecar cannot be asked (the module is
    // Envoy itself, so there is nothing to be unreachable).
    let Stack { keys, sidecar, envoy, client, .. } = Stack::start().await;
    let hopauth = sidecar.expect("an ext_authz stack");
    let get = |headers: Vec<(&'static str, String)>| {
        let (client, url) = (client.clone(), envoy.url("/x"));
        async move {
            let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(&client, &url, &refs).await
        }
    };
    let token = keys.es.sign_jwt(&claims("alice")).unwrap();
    assert_eq!(get(vec![("authorization", bearer(&token))]).await.status, 200);

    // hopauth's deny: its status, challenge and body, not the mapper's.
    let r = get(vec![("authorization", "Bearer not.a.token".into())]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["error"], "invalid_token", "{r:?}");
    assert!(r.header("www-authenticate").is_some_and(|c| c.contains("invalid_token")), "{r:?}");
    assert_eq!(r.header("retry-after"), None);

    // hopauth goes away: Envoy answers by itself.
    hopauth.shutdown().await;
    let r = get(vec![("authorization", bearer(&token))]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    assert_eq!(r.header("retry-after"), Some("5"), "{r:?}");
    assert_eq!(r.body["error"], "temporarily_unavailable", "{r:?}");
    assert!(r.body["error_description"].as_str().is_some_and(|d| d.contains("unreachable")), "{r:?}");
    assert!(r.body.get("headers").is_none(), "the upstream never answered: {r:?}");
    assert!(envoy.stat("http.ingress.ext_authz.error").await >= 1);
    assert_eq!(envoy.stat("http.ingress.ext_authz.failure_mode_allowed").await, 0);
}
