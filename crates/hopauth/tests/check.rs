//! hopauth in-process: `check_request` with built CheckRequests (both header encodings,
//! metadata, missing attributes), JWKS sources and failures, HMAC providers, readiness and
//! grpc.health.v1 over a real gRPC connection.

use hopauth_testkit as support;

use std::collections::HashMap;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use hopauth::grpc::AuthorizationService;
use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use serde_json::json;
use support::*;

fn request(headers: &[(&str, &str)], path: &str, ext: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: ext.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }),
    }
}

/// (HTTP status, body) of a response; 200 for OK.
fn outcome(r: &CheckResponse) -> (i32, String) {
    match r.http_response.as_ref().expect("every response carries an http_response") {
        HttpResponse::OkResponse(_) => (200, String::new()),
        HttpResponse::DeniedResponse(d) => (d.status.as_ref().unwrap().code, d.body.clone()),
        HttpResponse::ErrorResponse(_) => panic!("hopauth never sends error_response"),
    }
}

/// `hopauth_checks_total{decision="deny",reason=…}` in a metrics rendering (0 when absent).
fn metric_value(metrics: &str, reason: &str) -> u64 {
    let series = format!("hopauth_checks_total{{decision=\"deny\",reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |v| v.trim().parse().unwrap())
}

fn denied_header<'a>(r: &'a CheckResponse, name: &str) -> Option<&'a str> {
    let Some(HttpResponse::DeniedResponse(d)) = r.http_response.as_ref() else { return None };
    d.headers.iter().filter_map(|h| h.header.as_ref()).find(|h| h.key == name).map(|h| h.value.as_str())
}

async fn service(yaml: &str) -> (hopauth::server::Running, AuthorizationService) {
    let running = start_hopauth(yaml).await;
    let service = AuthorizationService::new(running.authorizer.clone());
    (running, service)
}

#[tokio::test]
async fn allow_carries_identity_headers_and_claims_metadata() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let (running, svc) = service(&config_yaml(&jwks.url(), "", "")).await;
    wait_ready(&running).await;
    let token = keys.ed.sign_jwt(&claims("alice")).unwrap();
    let auth = bearer(&token);

    let r = svc.check_request(&request(&[("authorization", &auth)], "/x", &[])).await;
    assert_eq!(r.status.as_ref().unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else { panic!("{r:?}") };
    let set: HashMap<&str, &str> =
        ok.headers.iter().filter_map(|h| h.header.as_ref()).map(|h| (h.key.as_str(), h.value.as_str())).collect();
    assert_eq!(set.get("x-jwt-sub"), Some(&"alice"));
    assert_eq!(set.get("x-jwt-payload"), Some(&token.split('.').nth(1).unwrap()));
    assert!(!set.contains_key("authorization"), "the original token is never touched");
    assert!(ok.headers_to_remove.is_empty(), "{:?}", ok.headers_to_remove);
    let meta = &r.dynamic_metadata.as_ref().unwrap().fields["hopauth"];
    let Some(Kind::StructValue(claims)) = &meta.kind else { panic!("{meta:?}") };
    assert_eq!(claims.fields["sub"].kind, Some(Kind::StringValue("alice".into())));
    assert_eq!(claims.fields["iss"].kind, Some(Kind::StringValue(ISSUER.into())));

    // The same token again is a cache hit.
    let m = &running.metrics;
    let (hits, misses) = (m.checks().verify_cache_hits(), m.checks().verify_cache_misses());
    let again = svc.check_request(&request(&[("authorization", &auth)], "/x", &[])).await;
    assert_eq!(outcome(&again).0, 200);
    assert_eq!((m.checks().verify_cache_hits(), m.checks().verify_cache_misses()), (hits + 1, misses));
}

#[tokio::test]
async fn raw_header_map_encoding_is_read_too() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let (running, svc) = service(&config_yaml(&jwks.url(), "", "")).await;
    wait_ready(&running).await;
    let auth = bearer(&keys.es.sign_jwt(&claims("alice")).unwrap());
    let mut req = request(&[], "/x", &[]);
    let http = req.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.header_map = Some(HeaderMap {
        headers: vec![HeaderValue {
            key: "authorization".into(),
            value: String::new(),
            raw_value: auth.clone().into_bytes(),
        }],
    });
    assert_eq!(outcome(&svc.check_request(&req).await).0, 200);

    // Two raw entries are two credentials.
    let http = req.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    let second = HeaderValue { key: "authorization".into(), value: String::new(), raw_value: auth.into_bytes() };
    http.header_map.as_mut().unwrap().headers.push(second);
    assert_eq!(outcome(&svc.check_request(&req).await).0, 401);
}

#[tokio::test]
async fn a_request_without_http_attributes_is_a_clean_401() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let (_running, svc) = service(&config_yaml(&jwks.url(), "", "")).await;
    let r = svc.check_request(&CheckRequest::default()).await;
    assert_eq!(outcome(&r).0, 401);
    assert_eq!(denied_header(&r, "www-authenticate"), Some("Bearer realm=\"hopauth\""));
}

#[tokio::test]
async fn unreachable_jwks_is_503_and_not_ready_then_recovers() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    jwks.set_failing(true);
    let yaml =
        config_yaml(&jwks.url(), "", "").replace("refresh_interval: 5m", "refresh_interval: 1s\n      max_stale: 2s");
    let (running, svc) = service(&yaml).await;
    let auth = bearer(&keys.es.sign_jwt(&claims("alice")).unwrap());

    wait_until("a failed fetch", Duration::from_secs(5), || async { jwks.hits() >= 1 }).await;
    let r = svc.check_request(&request(&[("authorization", &auth)], "/x", &[])).await;
    let (status, body) = outcome(&r);
    assert_eq!(status, 503, "{body}");
    assert_eq!(denied_header(&r, "retry-after"), Some("5"));
    assert_eq!(r.status.as_ref().unwrap().code, 14, "UNAVAILABLE inside a normal response");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(!running.authorizer.ready());
    let ready = reqwest::get(format!("http://{}/readyz", running.http_addr)).await.unwrap();
    assert_eq!(ready.status(), 503);

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = |name: &'static str| {
        let mut h = health.clone();
        async move {
            h.check(tonic_health::pb::HealthCheckRequest { service: name.into() }).await.unwrap().into_inner().status
        }
    };
    assert_eq!(serving("envoy.service.auth.v3.Authorization").await, 2, "NOT_SERVING while keys are missing");

    // The endpoint comes back: the retry with backoff picks it up by itself.
    jwks.set_failing(false);
    wait_ready(&running).await;
    wait_until("health SERVING", Duration::from_secs(5), || {
        let f = serving("envoy.service.auth.v3.Authorization");
        async move { f.await == 1 }
    })
    .await;
    assert_eq!(serving("").await, 1);
    assert_eq!(outcome(&svc.check_request(&request(&[("authorization", &auth)], "/x", &[])).await).0, 200);

    // It fails again: last good keys serve until max_stale, then 503.
    jwks.set_failing(true);
    let fresh = bearer(&keys.rs.sign_jwt(&claims("bob")).unwrap());
    assert_eq!(outcome(&svc.check_request(&request(&[("authorization", &fresh)], "/x", &[])).await).0, 200);
    wait_until("keys to go stale", Duration::from_secs(10), || async { !running.authorizer.ready() }).await;
    let stale = bearer(&keys.ps.sign_jwt(&claims("carol")).unwrap());
    assert_eq!(outcome(&svc.check_request(&request(&[("authorization", &stale)], "/x", &[])).await).0, 503);
    wait_until("health NOT_SERVING again", Duration::from_secs(5), || {
        let f = serving("envoy.service.auth.v3.Authorization");
        async move { f.await == 2 }
    })
    .await;
}

#[tokio::test]
async fn jwks_fetch_is_bounded_and_follows_no_redirect() {
    let big = "x".repeat(600 * 1024);
    let app = Router::new()
        .route("/html", get(|| async { axum::response::Html("<html>login</html>") }))
        .route("/big", get(move || async move { big }))
        .route("/redirect", get(|| async { axum::response::Redirect::temporary("/elsewhere") }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "{}"
            }),
        )
        .route("/cached", get(|| async { ([("cache-control", "public, max-age=120")], "{\"keys\":[]}") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = hopauth::jwks::http_client();
    let url = |p: &str| format!("http://{addr}{p}");
    let t = Duration::from_millis(500);

    let html = hopauth::jwks::fetch(&client, &url("/html"), t, 512 * 1024).await.unwrap();
    assert!(hopauth_core::keys::parse_jwks(&html.body, &[Alg::ES256]).is_err(), "HTML is not a JWKS");
    let err = hopauth::jwks::fetch(&client, &url("/big"), t, 512 * 1024).await.unwrap_err();
    assert!(matches!(err, hopauth::jwks::FetchError::TooLarge { .. }), "{err}");
    let err = hopauth::jwks::fetch(&client, &url("/redirect"), t, 1024).await.unwrap_err();
    assert!(matches!(err, hopauth::jwks::FetchError::Status { status: 307, .. }), "{err}");
    let start = std::time::Instant::now();
    let err = hopauth::jwks::fetch(&client, &url("/slow"), t, 1024).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "timeout not enforced: {err}");
    let cached = hopauth::jwks::fetch(&client, &url("/cached"), t, 1024).await.unwrap();
    assert_eq!(cached.max_age, Some(Duration::from_secs(120)));
}

#[tokio::test]
async fn discovery_file_and_hmac_providers() {
    // Discovery: the issuer is the server's own base URL.
    let disc_key = SigningKey::generate(Alg::ES256, "d-1").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = format!("http://{addr}");
    let doc = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")});
    let keys_doc = jwks_of(&[&disc_key]);
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(move || async move { axum::Json(doc) }))
        .route("/keys", get(move || async move { axum::Json(keys_doc) }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let file_key = SigningKey::generate(Alg::EdDSA, "f-1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks_of(&[&file_key]).to_string()).unwrap();

    std::env::set_var("TEST_HMAC_SECRET", "0123456789abcdef0123456789abcdef-secret");
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let extra = format!(
        "  - name: disc\n    issuer: {issuer}\n    audiences: [{AUDIENCE}]\n    algorithms: [ES256]\n    jwks: {{ discovery: true }}\n\
         \x20 - name: file\n    issuer: https://file.test\n    audiences: [{AUDIENCE}]\n    algorithms: [EdDSA]\n    jwks: {{ file: \"{}\" }}\n\
         \x20 - name: hmac\n    issuer: https://hmac.test\n    audiences: [{AUDIENCE}]\n    algorithms: [HS256]\n    hmac_secret_env: TEST_HMAC_SECRET\n",
        file.display()
    );
    let (running, svc) = service(&config_yaml(&jwks.url(), &extra, "")).await;
    wait_ready(&running).await;

    let token_for = |key: &SigningKey, iss: &str| {
        let mut c = claims("alice");
        c["iss"] = iss.into();
        bearer(&key.sign_jwt(&c).unwrap())
    };
    let hs = SigningKey::hmac(Alg::HS256, "h", b"0123456789abcdef0123456789abcdef-secret").unwrap();
    let wrong_hs = SigningKey::hmac(Alg::HS256, "h", b"0123456789abcdef0123456789abcdef-wrong!").unwrap();
    for (auth, want) in [
        (token_for(&disc_key, &issuer), 200),
        (token_for(&file_key, "https://file.test"), 200),
        (token_for(&hs, "https://hmac.test"), 200),
        (token_for(&wrong_hs, "https://hmac.test"), 401),
        // HS256 for a provider that does not allow it, even with its secret.
        (token_for(&hs, ISSUER), 401),
    ] {
        let r = svc.check_request(&request(&[("authorization", &auth)], "/x", &[])).await;
        assert_eq!(outcome(&r).0, want, "{:?}", outcome(&r));
    }
}

/// Bytes in, bytes out: lets the test send a body prost would never produce.
#[derive(Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

#[tokio::test]
async fn grpc_server_answers_envoys_client_and_refuses_garbage() {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let (running, _) = service(&config_yaml(&jwks.url(), "", "")).await;
    wait_ready(&running).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // The generated client decodes the pre-encoded responses: first sight, then a cache hit.
    let mut client = AuthorizationClient::new(channel.clone());
    let auth = bearer(&keys.es.sign_jwt(&claims("alice")).unwrap());
    for _ in 0..2 {
        let r = client.check(request(&[("authorization", &auth)], "/x", &[])).await.unwrap().into_inner();
        assert_eq!(outcome(&r).0, 200);
        let meta = r.dynamic_metadata.expect("claims metadata");
        let Some(Kind::StructValue(claims)) = &meta.fields["hopauth"].kind else { panic!("{meta:?}") };
        assert_eq!(claims.fields["sub"].kind, Some(Kind::StringValue("alice".into())));
    }
    let r = client.check(request(&[], "/x", &[])).await.unwrap().into_inner();
    assert_eq!(outcome(&r).0, 401);

    // Bytes that are not a CheckRequest: a 400 deny inside a normal CheckResponse (gRPC
    // OK), never a gRPC error that Envoy's `failure_mode_allow` would turn into an allow.
    let raw = tonic::client::Grpc::new(channel.clone());
    let call = |body: Vec<u8>, path: &'static str| {
        let mut raw = raw.clone();
        async move {
            raw.ready().await.unwrap();
            raw.unary(tonic::Request::new(body), tonic::codegen::http::uri::PathAndQuery::from_static(path), RawCodec)
                .await
        }
    };
    const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";
    let malformed_before = metric_value(&running.metrics.render(), "malformed_request");
    let garbage = [vec![0x0a, 0x7f, 0x01], vec![0xff; 12], vec![0x08, 0x01]];
    for bytes in &garbage {
        let reply = call(bytes.clone(), CHECK).await.unwrap_or_else(|e| panic!("{bytes:?}: gRPC error {e:?}"));
        let r = <CheckResponse as prost::Message>::decode(&reply.into_inner()[..]).unwrap();
        let (status, body) = outcome(&r);
        assert_eq!(status, 400, "{bytes:?}: {body}");
        assert_eq!(r.status.as_ref().unwrap().code, 3, "INVALID_ARGUMENT inside the CheckResponse");
        assert_eq!(r.status.as_ref().unwrap().message, "malformed_request");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "invalid_request");
        assert!(denied_header(&r, "www-authenticate").unwrap().contains("error=\"invalid_request\""));
    }
    // A message tonic refuses before hopauth sees it (past its 4 MiB receive limit) is a
    // deny too, not tonic's OUT_OF_RANGE.
    let oversize = prost::Message::encode_to_vec(&request(&[("x-pad", &"a".repeat(5 << 20))], "/x", &[]));
    let reply = call(oversize, CHECK).await.unwrap_or_else(|e| panic!("oversize: gRPC error {e:?}"));
    let r = <CheckResponse as prost::Message>::decode(&reply.into_inner()[..]).unwrap();
    assert_eq!(outcome(&r).0, 400, "{r:?}");
    assert_eq!(r.status.as_ref().unwrap().message, "malformed_request");
    let counted = metric_value(&running.metrics.render(), "malformed_request") - malformed_before;
    assert_eq!(counted, garbage.len() as u64 + 1, "each malformed request is counted once");
    // The same route accepts what prost encodes.
    let ok = call(prost::Message::encode_to_vec(&request(&[("authorization", &auth)], "/x", &[])), CHECK).await;
    let r = <CheckResponse as prost::Message>::decode(&ok.unwrap().into_inner()[..]).unwrap();
    assert_eq!(outcome(&r).0, 200);
    let err = call(vec![], "/envoy.service.auth.v3.Authorization/Other").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn a_check_that_queued_too_long_is_shed_unless_it_is_a_cache_hit() {
    use hopauth::grpc::wire::CheckView;
    use prost::Message;
    use std::time::Instant;
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    // Generous enough that a loaded machine never sheds the on-time Checks below.
    let yaml = format!("{}max_queue_delay: 500ms\n", config_yaml(&jwks.url(), "", ""));
    let (running, svc) = service(&yaml).await;
    wait_ready(&running).await;
    let check = |token: &str, arrived: Instant| {
        let view =
            CheckView::parse(request(&[("authorization", &bearer(token))], "/x", &[]).encode_to_vec().into()).unwrap();
        let svc = &svc;
        async move { CheckResponse::decode(svc.check_wire(&view, arrived).await).unwrap() }
    };
    let cached = keys.es.sign_jwt(&claims("alice")).unwrap();
    let fresh = keys.rs.sign_jwt(&claims("bob")).unwrap();
    let long_ago = Instant::now() - Duration::from_secs(5);

    assert_eq!(outcome(&check(&cached, Instant::now()).await).0, 200);
    // Waited past max_queue_delay: a token that needs a signature check gets a fast 503...
    let shed = check(&fresh, long_ago).await;
    assert_eq!(outcome(&shed).0, 503);
    assert_eq!(shed.status.as_ref().unwrap().message, "overloaded");
    assert_eq!(denied_header(&shed, "retry-after"), Some("5"));
    // ...a malformed one is still refused for what it is (no signature work to save)...
    assert_eq!(outcome(&check("not-a-jwt", long_ago).await).0, 401);
    // ...a cached token is still answered, and the shed token passes once on time.
    assert_eq!(outcome(&check(&cached, long_ago).await).0, 200);
    assert_eq!(outcome(&check(&fresh, Instant::now()).await).0, 200);
    let metrics = running.metrics.render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hopauth_checks_total") && l.contains("reason=\"overloaded\"") && l.ends_with(" 1")),
        "{metrics}"
    );
}

/// A counter of `hopauth_jwks_refresh_total` for provider `main` and `result`.
fn refreshes(running: &hopauth::server::Running, result: &str) -> u64 {
    let want = format!(r#"hopauth_jwks_refresh_total{{provider="main",result="{result}"}} "#);
    running.metrics.render().lines().find_map(|l| l.strip_prefix(want.as_str())?.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn a_withdrawn_key_stops_its_cached_tokens_at_the_next_refresh() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let yaml = config_yaml(&jwks.url(), "", "").replace("refresh_interval: 5m", "refresh_interval: 1s");
    let (running, svc) = service(&yaml).await;
    wait_ready(&running).await;
    let withdrawn = bearer(&keys.es.sign_jwt(&claims("alice")).unwrap());
    let kept = bearer(&keys.rs.sign_jwt(&claims("bob")).unwrap());
    let check = |auth: &str| {
        let r = request(&[("authorization", auth)], "/x", &[]);
        let svc = &svc;
        async move { outcome(&svc.check_request(&r).await) }
    };
    for auth in [&withdrawn, &kept, &withdrawn, &kept] {
        assert_eq!(check(auth).await.0, 200);
    }
    let m = &running.metrics;
    assert_eq!(m.checks().verify_cache_hits(), 2, "both tokens are cached");

    // The IdP withdraws es-1 (a compromise, say): at the next refresh its tokens are
    // refused, the cached one included; the other key's cached token still passes.
    jwks.set(jwks_of(&[&keys.rs, &keys.ps, &keys.ed]));
    wait_until("the cached es-1 token to be refused", Duration::from_secs(10), || async {
        check(&withdrawn).await.0 == 401
    })
    .await;
    let (status, body) = check(&withdrawn).await;
    assert_eq!(status, 401);
    assert!(body.contains("token signing key is unknown"), "{body}");
    let (hits, misses) = (m.checks().verify_cache_hits(), m.checks().verify_cache_misses());
    assert_eq!(check(&kept).await.0, 200);
    assert_eq!(
        (m.checks().verify_cache_hits(), m.checks().verify_cache_misses()),
        (hits + 1, misses),
        "still a cache hit"
    );
}

#[tokio::test]
async fn past_max_stale_a_cached_token_gets_503() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let yaml = config_yaml(&jwks.url(), "", "")
        .replace("refresh_interval: 5m", "refresh_interval: 1s\n      max_stale: 2s\n      timeout: 500ms");
    let (running, svc) = service(&yaml).await;
    wait_ready(&running).await;
    let auth = bearer(&keys.es.sign_jwt(&claims("alice")).unwrap());
    let check = || {
        let r = request(&[("authorization", &auth)], "/x", &[]);
        let svc = &svc;
        async move { outcome(&svc.check_request(&r).await).0 }
    };
    assert_eq!(check().await, 200);
    assert_eq!(check().await, 200);
    let hits = running.metrics.checks().verify_cache_hits();
    assert!(hits >= 1);

    jwks.set_failing(true);
    wait_until("the cached token to get 503", Duration::from_secs(10), || async { check().await == 503 }).await;
    assert!(running.metrics.checks().verify_cache_hits() > hits, "answered from the cache");
    // The JWKS comes back: the same cached token passes again.
    jwks.set_failing(false);
    wait_until("the cached token to pass again", Duration::from_secs(10), || async { check().await == 200 }).await;
}

#[tokio::test]
async fn conditional_requests_confirm_the_keys_with_304s() {
    for validation in [Validation::Both, Validation::ETagOnly, Validation::LastModifiedOnly] {
        let keys = Keys::generate();
        let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
        jwks.set_validation(validation);
        // max_stale 2s: only the 304s keep the keys fresh past it.
        let yaml = config_yaml(&jwks.url(), "", "")
            .replace("refresh_interval: 5m", "refresh_interval: 1s\n      max_stale: 2s");
        let (running, svc) = service(&yaml).await;
        wait_ready(&running).await;
        wait_until("three 304s", Duration::from_secs(10), || async { jwks.not_modified() >= 3 }).await;
        assert_eq!(jwks.oks(), 1, "{validation:?}: one full fetch, then 304s");
        assert!(refreshes(&running, "success") >= 4, "{validation:?}: a 304 counts as a confirmation");
        assert!(running.authorizer.ready(), "{validation:?}: confirmed keys are not stale");
        let fresh = bearer(&keys.ps.sign_jwt(&claims("alice")).unwrap());
        assert_eq!(outcome(&svc.check_request(&request(&[("authorization", &fresh)], "/x", &[])).await).0, 200);

        // A new document is a 200, and its new key verifies.
        let added = SigningKey::generate(Alg::ES256, "es-2").unwrap();
        jwks.set(jwks_of(&[&keys.es, &added]));
        wait_until("the new document", Duration::from_secs(10), || async { jwks.oks() == 2 }).await;
        let token = bearer(&added.sign_jwt(&claims("bob")).unwrap());
        wait_until("the new key to verify", Duration::from_secs(5), || async {
            outcome(&svc.check_request(&request(&[("authorization", &token)], "/x", &[])).await).0 == 200
        })
        .await;
    }
}

#[tokio::test]
async fn a_misbehaving_jwks_is_a_failed_refresh_and_the_last_good_keys_stay() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let yaml = config_yaml(&jwks.url(), "", "")
        .replace("refresh_interval: 5m", "refresh_interval: 1s\n      max_stale: 1h\n      timeout: 500ms");
    let (running, svc) = service(&yaml).await;
    wait_ready(&running).await;
    for how in [Misbehave::Html, Misbehave::Huge, Misbehave::NoKeys, Misbehave::Redirect, Misbehave::Stall] {
        let errors = refreshes(&running, "error");
        let start = std::time::Instant::now();
        jwks.misbehave(Some(how));
        wait_until("a failed refresh", Duration::from_secs(10), || async { refreshes(&running, "error") > errors })
            .await;
        if how == Misbehave::Stall {
            // Refresh every 1s + the 500ms timeout: far from the 30s the server stalls.
            assert!(start.elapsed() < Duration::from_secs(5), "{how:?}: timeout not enforced");
        }
        // The last good keys still verify a token never seen before.
        let fresh = bearer(&keys.es.sign_jwt(&claims(&format!("{how:?}"))).unwrap());
        let r = svc.check_request(&request(&[("authorization", &fresh)], "/x", &[])).await;
        assert_eq!(outcome(&r).0, 200, "{how:?}");
        assert!(running.authorizer.ready(), "{how:?}");
        jwks.misbehave(None);
    }
    assert_eq!(jwks.elsewhere_hits(), 0, "a redirect is never followed");
    let metrics = running.metrics.render();
    assert!(metrics.contains(r#"hopauth_jwks_keys{provider="main"} 4"#), "{metrics}");
}
