//! OpenTelemetry tracing of Checks: one span per Check, a child of the W3C `traceparent`
//! the request carries (Envoy forwards it in the CheckRequest headers when it is in
//! `allowed_headers`), exported over OTLP/gRPC. Off unless the config has a `tracing`
//! section; off, the Check path only tests an `Option` (no span, no allocation).
//! The core reports each decision through the sidecar's observer (`observer.rs`), which
//! hands it here.

use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde::{Deserialize, Serialize};

use hopauth_core::observe::{Facts, Verdict};
use hopauth_core::token::RequestView;

use hopauth_service::config_file::Problem;

/// Default share of root traces (requests without a sampled `traceparent`) that get a span.
pub const DEFAULT_SAMPLE_RATIO: f64 = 0.1;
/// Default `service.name` resource attribute.
pub const DEFAULT_SERVICE_NAME: &str = "hopauth";
/// Default time one OTLP export may take.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The span's name.
pub const SPAN_NAME: &str = "hopauth.check";

/// The `tracing` config section; absent means tracing off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/gRPC collector endpoint, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: String,
    /// Parent-based sampling: a request whose `traceparent` is sampled (or not) follows
    /// that; one without gets a span with this probability.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Time one export may take.
    #[serde(default = "default_export_timeout", with = "hopauth_service::config_file::duration")]
    pub export_timeout: Duration,
}

fn default_sample_ratio() -> f64 {
    DEFAULT_SAMPLE_RATIO
}
fn default_service_name() -> String {
    DEFAULT_SERVICE_NAME.to_string()
}
fn default_export_timeout() -> Duration {
    DEFAULT_EXPORT_TIMEOUT
}

impl TracingConfig {
    /// The problems of this section, keys prefixed `tracing.`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key: &str, message: String| out.push(Problem { key: format!("tracing.{key}"), message });
        match url::Url::parse(&self.otlp_endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            Ok(_) => bad("otlp_endpoint", "must be an http:// or https:// URL with a host".into()),
            Err(e) => bad("otlp_endpoint", format!("{:?} is not a URL: {e}", self.otlp_endpoint)),
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            bad("sample_ratio", "must be between 0 and 1".into());
        }
        if self.service_name.is_empty() {
            bad("service_name", "must not be empty".into());
        }
        if self.export_timeout.is_zero() || self.export_timeout > Duration::from_secs(60) {
            bad("export_timeout", "must be more than 0 and at most 60s".into());
        }
        out
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_problems_name_the_key() {
        let mut c: TracingConfig = serde_yaml_ng::from_str("otlp_endpoint: http://127.0.0.1:4317").unwrap();
        assert!(c.problems().is_empty());
        assert_eq!(c.sample_ratio, DEFAULT_SAMPLE_RATIO);
        c.otlp_endpoint = "127.0.0.1:4317".into();
        c.sample_ratio = 1.5;
        c.service_name.clear();
        let keys: Vec<String> = c.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["tracing.otlp_endpoint", "tracing.sample_ratio", "tracing.service_name"]);
    }
}
