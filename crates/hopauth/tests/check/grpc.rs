//! The gRPC server against Envoy's client and garbage; queue shedding.

use super::*;

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
        let r = client.check(check_request(&[("authorization", &auth)], &[], "/x", &[])).await.unwrap().into_inner();
        assert_eq!(outcome(&r).0, 200);
        let meta = r.dynamic_metadata.expect("claims metadata");
        let Some(Kind::StructValue(claims)) = &meta.fields["hopauth"].kind else { panic!("{meta:?}") };
        assert_eq!(claims.fields["sub"].kind, Some(Kind::StringValue("alice".into())));
    }
    let r = client.check(check_request(&[], &[], "/x", &[])).await.unwrap().into_inner();
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
    let oversize = prost::Message::encode_to_vec(&check_request(&[("x-pad", &"a".repeat(5 << 20))], &[], "/x", &[]));
    let reply = call(oversize, CHECK).await.unwrap_or_else(|e| panic!("oversize: gRPC error {e:?}"));
    let r = <CheckResponse as prost::Message>::decode(&reply.into_inner()[..]).unwrap();
    assert_eq!(outcome(&r).0, 400, "{r:?}");
    assert_eq!(r.status.as_ref().unwrap().message, "malformed_request");
    let counted = metric_value(&running.metrics.render(), "malformed_request") - malformed_before;
    assert_eq!(counted, garbage.len() as u64 + 1, "each malformed request is counted once");
    // The same route accepts what prost encodes.
    let ok =
        call(prost::Message::encode_to_vec(&check_request(&[("authorization", &auth)], &[], "/x", &[])), CHECK).await;
    let r = <CheckResponse as prost::Message>::decode(&ok.unwrap().into_inner()[..]).unwrap();
    assert_eq!(outcome(&r).0, 200);
    let err = call(vec![], "/envoy.service.auth.v3.Authorization/Other").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn a_check_that_queued_too_long_is_shed_unless_it_is_a_cache_hit() {
    use hopauth::grpc::wire::CheckView;
    use hopauth_core::clock::Instant;
    use prost::Message;
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    // Generous enough that a loaded machine never sheds the on-time Checks below.
    let yaml = format!("{}max_queue_delay: 500ms\n", config_yaml(&jwks.url(), "", ""));
    let (running, svc) = service(&yaml).await;
    wait_ready(&running).await;
    let check = |token: &str, arrived: Instant| {
        let view = CheckView::parse(
            check_request(&[("authorization", &bearer(token))], &[], "/x", &[]).encode_to_vec().into(),
        )
        .unwrap();
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
