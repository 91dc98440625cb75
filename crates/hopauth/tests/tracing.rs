//! OpenTelemetry: with a `tracing` section, each Check through a real Envoy becomes an
//! OTLP span, a child of the `traceparent` the client sent (Envoy forwards it because the
//! shipped config lists it in `allowed_headers`), received by an OTLP/gRPC collector this
//! test runs; the deny log line carries the request id and trace id.

use hopauth_testkit as support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use support::*;

/// The OTLP collector: keeps every span it is sent, with its resource's service name.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.clone())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn start_collector() -> (SocketAddr, Collector) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap()
    });
    (addr, collector)
}

fn attr<'s>(span: &'s Span, key: &str) -> Option<&'s AnyValue> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_check_is_a_span_inside_the_callers_trace() {
    let (collector_addr, collector) = start_collector().await;
    // Ratio 0: only requests whose traceparent is sampled get a span (parent-based).
    let s = Stack::start_with(
        "",
        &format!("tracing:\n  otlp_endpoint: http://{collector_addr}\n  sample_ratio: 0\n  service_name: hopauth-test"),
    )
    .await;
    let allowed_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let denied_trace = "0af7651916cd43dd8448eb211c80319c";
    let unsampled_trace = "11111111111111111111111111111111";
    let parent = "00f067aa0ba902b7";
    let token = s.keys.es.sign_jwt(&claims("alice")).unwrap();
    let traceparent = |t: &str, flags: &str| format!("00-{t}-{parent}-{flags}");

    let bearer = bearer(&token);
    let tp = traceparent(allowed_trace, "01");
    let r = s.get("/a", &[("authorization", &bearer), ("traceparent", &tp)]).await;
    assert_eq!(r.status, 200);
    // Second time: a cache hit.
    let r = s.get("/a", &[("authorization", &bearer), ("traceparent", &tp)]).await;
    assert_eq!(r.status, 200);
    let tp = traceparent(denied_trace, "01");
    let r = s.get("/a", &[("authorization", "Bearer not.a.jwt"), ("traceparent", &tp)]).await;
    assert_eq!(r.status, 401);
    let tp = traceparent(unsampled_trace, "00");
    assert_eq!(s.get("/a", &[("authorization", &bearer), ("traceparent", &tp)]).await.status, 200);

    let tracer = s.sidecar().authorizer.observer().tracer().expect("tracing is configured").clone();
    tokio::task::spawn_blocking(move || tracer.flush()).await.unwrap();
    wait_until("the collector to receive 3 spans", Duration::from_secs(10), || {
        let c = collector.clone();
        async move { c.spans.lock().unwrap().len() >= 3 }
    })
    .await;

    let spans = collector.spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 3, "the unsampled traceparent must give no span: {spans:#?}");
    for (service, span) in &spans {
        assert_eq!(service, "hopauth-test");
        assert_eq!(span.name, "hopauth.check");
        assert_eq!(hex(&span.parent_span_id), parent, "child of the caller's span");
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        assert!(matches!(attr(span, "hopauth.duration_us"), Some(AnyValue::IntValue(_))));
    }
    let of_trace = |t: &str| spans.iter().map(|(_, s)| s).filter(|s| hex(&s.trace_id) == t).collect::<Vec<_>>();
    let allowed = of_trace(allowed_trace);
    assert_eq!(allowed.len(), 2);
    for span in &allowed {
        assert_eq!(attr(span, "hopauth.decision"), Some(&AnyValue::StringValue("allow".into())));
        assert_eq!(attr(span, "hopauth.provider"), Some(&AnyValue::StringValue("main".into())));
    }
    let hits: Vec<_> = allowed.iter().map(|s| attr(s, "hopauth.cache_hit").cloned()).collect();
    assert!(hits.contains(&Some(AnyValue::BoolValue(false))) && hits.contains(&Some(AnyValue::BoolValue(true))));
    let denied = of_trace(denied_trace);
    assert_eq!(denied.len(), 1);
    assert_eq!(attr(denied[0], "hopauth.decision"), Some(&AnyValue::StringValue("deny".into())));
    assert_eq!(attr(denied[0], "hopauth.reason"), Some(&AnyValue::StringValue("malformed_token".into())));
}
