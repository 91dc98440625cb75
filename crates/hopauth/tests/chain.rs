//! Token propagation through a chain of services, every hop verified: client → gateway
//! (envoy/gateway.yaml) → A's sidecar → A → A's sidecar outbound → B's sidecar inbound →
//! B → … → C, three sidecars from envoy/sidecar.yaml, all consulting one in-process
//! hopauth. The wiring is tests/support/chain_stack.rs (shared with `make demo`); the
//! services are examples/chain/service.rs, which forwards the incoming
//! `Authorization` header on its own call.

use hopauth_testkit as support;
use hopauth_testkit::chain_stack;

use std::time::Duration;

use chain_stack::{access_log_lines, Chain, HopauthAddrs, NAMES};
use serde_json::json;
use support::*;

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(line_start).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hop_verifies_the_propagated_token() {
    let started = std::time::Instant::now();
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let hopauth = start_hopauth(&config_yaml(&jwks.url(), "", "")).await;
    wait_ready(&hopauth).await;
    let chain = Chain::start(HopauthAddrs::shared(hopauth.grpc_addr)).await;
    let (hops, gw_log) = (&chain.hops, &chain.gateway_log);
    let gw_port = chain.gateway.port;
    let names = NAMES;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let metrics_url = format!("http://{}/metrics", hopauth.http_addr);
    let metrics = || async { reqwest::get(&metrics_url).await.unwrap().text().await.unwrap() };

    // 1. A valid token through the gateway reaches C; every service saw alice, verified
    //    by its own sidecar, and received the token to pass on.
    let claims = claims("alice");
    let jti = claims["jti"].as_str().unwrap().to_string();
    let token = keys.es.sign_jwt(&claims).unwrap();
    let auth = bearer(&token);
    let before = metrics().await;
    let r = send(&client, &format!("http://127.0.0.1:{gw_port}/chain"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut node = &r.body;
    for name in names {
        assert_eq!(node["service"], name, "{}", r.body);
        assert_eq!(node["identity"]["x-jwt-sub"], "alice", "{name} did not see the verified sub: {}", r.body);
        assert_eq!(node["identity"]["x-jwt-scope"], "orders:read profile", "{}", r.body);
        assert_eq!(node["token_received"], true, "{}", r.body);
        if name != "C" {
            assert_eq!(node["next"]["status"], 200, "{}", r.body);
            node = &node["next"]["body"];
        } else {
            assert!(node.get("next").is_none(), "C ends the chain: {}", r.body);
        }
    }
    // Four Checks (gateway, A, B, C), one signature verification: the other three hops
    // were verify-cache hits.
    let after = metrics().await;
    let allowed = r#"hopauth_checks_total{decision="allow",reason="verified"} "#;
    assert_eq!(metric(&after, allowed) - metric(&before, allowed), 4.0, "{after}");
    let hits = "hopauth_verify_cache_hits_total ";
    assert!(metric(&after, hits) - metric(&before, hits) >= 3.0, "{after}");

    // Every hop's access log has the request with alice's sub from ext_authz metadata,
    // and the gateway's x-request-id, carried by the services, ties the lines together.
    wait_until("the gateway access log line", Duration::from_secs(5), || async {
        access_log_lines(gw_log).iter().any(|l| l["sub"] == "alice")
    })
    .await;
    let gw_line = access_log_lines(gw_log).into_iter().find(|l| l["sub"] == "alice").unwrap();
    let request_id = gw_line["request_id"].as_str().unwrap().to_string();
    assert!(!request_id.is_empty());
    for hop in hops {
        wait_until(&format!("{}'s inbound access log line", hop.name), Duration::from_secs(5), || async {
            access_log_lines(&hop.access_log)
                .iter()
                .any(|l| l["listener"] == "inbound" && l["sub"] == "alice" && l["request_id"] == request_id.as_str())
        })
        .await;
    }
    // A's and B's calls left through their outbound listeners (no ext_authz there).
    for hop in &hops[..2] {
        let lines = access_log_lines(&hop.access_log);
        assert!(lines.iter().any(|l| l["listener"] == "outbound" && l["status"] == 200), "{}: {lines:?}", hop.name);
    }

    // 2. No token: refused at the gateway; the request never reaches A's sidecar.
    let a_requests = hops[0].envoy.stat("http.inbound.downstream_rq_total").await;
    let r = send(&client, &format!("http://127.0.0.1:{gw_port}/chain"), &[]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"hopauth\""));
    assert_eq!(hops[0].envoy.stat("http.inbound.downstream_rq_total").await, a_requests);

    // 3. Inside the mesh, going around the gateway does not help: B's and C's sidecars
    //    refuse a call without a token, and a spoofed identity header with it.
    for hop in &hops[1..] {
        let url = format!("http://127.0.0.1:{}/chain", hop.inbound);
        let r = send(&client, &url, &[("x-jwt-sub", "alice")]).await;
        assert_eq!(r.status, 401, "{} accepted a call without a token: {r:?}", hop.name);
    }
    // A's outbound listener passes only what A sends: without the token, B refuses.
    let r = send(&client, &format!("http://127.0.0.1:{}/chain", hops[0].outbound), &[]).await;
    assert_eq!(r.status, 401, "{r:?}");
    // A caller that drops the token mid-chain is refused by the next hop: C is reached
    // through B's outbound listener, without the header, and refuses.
    let r = send(&client, &format!("http://127.0.0.1:{}/x", hops[1].outbound), &[]).await;
    assert_eq!(r.status, 401, "{r:?}");

    // 4. Revoke the token (admin API, jti until exp): every hop refuses it at once.
    let resp = client
        .post(format!("http://{}/admin/revoke", hopauth.http_addr))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"jti": jti, "exp": claims["exp"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = send(&client, &format!("http://127.0.0.1:{gw_port}/chain"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 401, "gateway: {r:?}");
    assert_eq!(r.body["error_description"], "token has been revoked", "{r:?}");
    for hop in hops {
        let r = send(&client, &format!("http://127.0.0.1:{}/chain", hop.inbound), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 401, "{} still accepts a revoked token: {r:?}", hop.name);
        assert_eq!(r.body["error_description"], "token has been revoked", "{r:?}");
    }
    // A fresh token for the same user still goes all the way.
    let fresh = bearer(&keys.es.sign_jwt(&support::claims("alice")).unwrap());
    let r = send(&client, &format!("http://127.0.0.1:{gw_port}/chain"), &[("authorization", &fresh)]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["next"]["body"]["next"]["body"]["identity"]["x-jwt-sub"], "alice");

    assert_eq!(chain.ext_authz_errors().await, 0);
    eprintln!("chain test took {:?}", started.elapsed());
}
