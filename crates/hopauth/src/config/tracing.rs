//! `tracing`: OpenTelemetry span export of Checks over OTLP/gRPC; the section absent means
//! tracing off (the exporter itself is `crate::trace`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problems;

/// Default share of root traces (requests without a sampled `traceparent`) that get a span.
pub const DEFAULT_SAMPLE_RATIO: f64 = 0.1;
/// Default `service.name` resource attribute.
pub const DEFAULT_SERVICE_NAME: &str = "hopauth";
/// Default time one OTLP export may take.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `tracing` config section. `otlp_endpoint` is required: left out, validation names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/gRPC collector endpoint, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: String,
    /// Parent-based sampling: a request whose `traceparent` is sampled (or not) follows
    /// that; one without gets a span with this probability.
    pub sample_ratio: f64,
    pub service_name: String,
    /// Time one export may take.
    #[serde(with = "super::duration")]
    pub export_timeout: Duration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            sample_ratio: DEFAULT_SAMPLE_RATIO,
            service_name: DEFAULT_SERVICE_NAME.to_string(),
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
        }
    }
}

impl TracingConfig {
    /// The problems of this section, keys prefixed `tracing.`.
    pub fn validate(&self, out: &mut Problems) {
        let key = |name: &str| format!("tracing.{name}");
        match url::Url::parse(&self.otlp_endpoint) {
            _ if self.otlp_endpoint.is_empty() => out.add(key("otlp_endpoint"), "required, e.g. http://127.0.0.1:4317"),
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            Ok(_) => out.add(key("otlp_endpoint"), "must be an http:// or https:// URL with a host"),
            Err(e) => out.add(key("otlp_endpoint"), format!("{:?} is not a URL: {e}", self.otlp_endpoint)),
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            out.add(key("sample_ratio"), "must be between 0 and 1");
        }
        if self.service_name.is_empty() {
            out.add(key("service_name"), "must not be empty");
        }
        if self.export_timeout.is_zero() || self.export_timeout > Duration::from_secs(60) {
            out.add(key("export_timeout"), "must be more than 0 and at most 60s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(c: &TracingConfig) -> Vec<String> {
        let mut out = Problems::default();
        c.validate(&mut out);
        out.into_vec().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn problems_name_the_key() {
        let mut c: TracingConfig = serde_yaml_ng::from_str("otlp_endpoint: http://127.0.0.1:4317").unwrap();
        assert!(keys(&c).is_empty());
        assert_eq!(c.sample_ratio, DEFAULT_SAMPLE_RATIO);
        c.otlp_endpoint = "127.0.0.1:4317".into();
        c.sample_ratio = 1.5;
        c.service_name.clear();
        assert_eq!(keys(&c), ["tracing.otlp_endpoint", "tracing.sample_ratio", "tracing.service_name"]);
        let c: TracingConfig = serde_yaml_ng::from_str("sample_ratio: 1").unwrap();
        assert_eq!(keys(&c), ["tracing.otlp_endpoint"], "required");
    }
}
