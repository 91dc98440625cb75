//! The log lines operators rely on, captured from hopauth running in-process: "keys
//! loaded" at info, the deny line with request id and trace id, and the admin audit line
//! that says what was revoked and by whom, without the admin token.

use hopauth_testkit as support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use hopauth::grpc::AuthorizationService;
use support::*;

/// Every line the subscriber writes, in order.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn line(&self, containing: &str) -> Option<String> {
        self.text().lines().find(|l| l.contains(containing)).map(str::to_string)
    }
}

fn request(headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/orders?q=secret".into(),
                    headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_loaded_deny_and_admin_audit_lines_say_what_happened() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).init();

    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let running = start_hopauth(&config_yaml(&jwks.url(), "", "")).await;
    wait_ready(&running).await;
    wait_until("the keys loaded line", std::time::Duration::from_secs(5), || {
        let c = captured.clone();
        async move { c.line("keys loaded").is_some() }
    })
    .await;
    let loaded = captured.line("keys loaded").unwrap();
    assert!(loaded.contains(" INFO ") && loaded.contains("provider=main") && loaded.contains("keys=4"), "{loaded}");
    assert!(loaded.contains("es-1") && loaded.contains("ed-1"), "the kids are listed: {loaded}");

    // A deny carries the request id and the trace id; a hostile request id is not written.
    let svc = AuthorizationService::new(running.authorizer.clone());
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    svc.check_request(&request(&[("authorization", "Bearer x.y.z"), ("x-request-id", "req-42"), ("traceparent", tp)]))
        .await;
    let denied = captured.line("req-42").expect("a deny line with the request id");
    assert!(denied.contains("denied") && denied.contains("trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\""), "{denied}");
    assert!(!denied.contains("secret"), "the query string is not logged: {denied}");
    svc.check_request(&request(&[("authorization", "Bearer a.b.c"), ("x-request-id", "evil\nlevel=ERROR forged")]))
        .await;
    assert!(!captured.text().contains("forged"), "{}", captured.text());

    // The audit line: what was revoked, by which client, with its request id and agent.
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{}/admin/revoke", running.http_addr))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-request-id", "audit-7")
        .header("user-agent", "ops-cli/1.0")
        .json(&serde_json::json!({"jti": "jti-to-kill", "exp": now() + 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let audit = captured.line("revocation written").expect("an audit line");
    for part in ["jti-to-kill", "client=Some(127.0.0.1:", "audit-7", "ops-cli/1.0", "kind=\"jti\""] {
        assert!(audit.contains(part), "{part:?} missing in {audit}");
    }
    assert!(!captured.text().contains(ADMIN_TOKEN), "the admin token is never logged");
}
