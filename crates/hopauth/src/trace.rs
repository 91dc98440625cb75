//! OpenTelemetry tracing of Checks: one span per Check, a child of the W3C `traceparent`
//! the request carries (Envoy forwards it in the CheckRequest headers when it is in
//! `allowed_headers`), exported over OTLP/gRPC. Off unless the config has a `tracing`
//! section; off, the Check path only tests an `Option` (no span, no allocation).
//! The core reports each decision through the sidecar's observer (`observer.rs`), which
//! hands it here.

use std::time::SystemTime;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use hopauth_core::observe::{Facts, Verdict};
use hopauth_core::token::RequestView;

use crate::config::TracingConfig;

/// The span's name.
pub const SPAN_NAME: &str = "hopauth.check";

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("tracing.otlp_endpoint: cannot set up the OTLP exporter")]
pub struct TracingError(#[source] opentelemetry_otlp::ExporterBuildError);

/// The tracer Checks record into; cloning shares the exporter.
#[derive(Clone)]
pub struct CheckTracer {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl std::fmt::Debug for CheckTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckTracer")
    }
}

impl CheckTracer {
    /// Starts the batch exporter; must run inside the Tokio runtime (tonic's channel).
    pub fn start(config: &TracingConfig) -> Result<Self, TracingError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .with_timeout(config.export_timeout)
            .build()
            .map_err(TracingError)?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio))))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("hopauth");
        Ok(CheckTracer { provider, tracer })
    }

    /// Records the span of one finished Check.
    pub fn record<R: RequestView>(&self, req: &R, verdict: Verdict<'_>, facts: &Facts) {
        let parent = TraceContextPropagator::new().extract_with_context(&Context::new(), &Headers(req));
        let elapsed = facts.elapsed;
        let mut attributes = Vec::with_capacity(6);
        match verdict {
            Verdict::Verified { provider } => {
                attributes.push(KeyValue::new("hopauth.decision", "allow"));
                attributes.push(KeyValue::new("hopauth.provider", provider.to_string()));
            }
            Verdict::Anonymous => {
                attributes.push(KeyValue::new("hopauth.decision", "allow"));
                attributes.push(KeyValue::new("hopauth.reason", "anonymous"));
            }
            Verdict::Deny(reason) => {
                attributes.push(KeyValue::new("hopauth.decision", "deny"));
                attributes.push(KeyValue::new("hopauth.reason", reason.as_str()));
            }
        }
        if let Some(hit) = facts.cache_hit {
            attributes.push(KeyValue::new("hopauth.cache_hit", hit));
        }
        attributes.push(KeyValue::new("hopauth.duration_us", elapsed.as_micros() as i64));
        let span = self
            .tracer
            .span_builder(SPAN_NAME)
            .with_kind(SpanKind::Server)
            .with_start_time(SystemTime::now() - elapsed)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        drop(span); // ends it now
    }

    /// Exports what is buffered (blocking: call off the async threads).
    pub fn flush(&self) {
        if let Err(error) = self.provider.force_flush() {
            tracing::warn!(%error, "trace export flush failed");
        }
    }

    /// Exports what is buffered and stops the exporter (blocking).
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "trace exporter shutdown failed");
        }
    }
}

/// The request's headers as the propagator reads them (text values only).
struct Headers<'r, R>(&'r R);

impl<R: RequestView> Extractor for Headers<'_, R> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.header_values(key).next().and_then(|v| std::str::from_utf8(v).ok())
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}
