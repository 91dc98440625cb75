//! The seam through which a host pre-renders the answer that allows a verified token: the
//! cache keeps what [`Renderer::allow`] built next to the token, so a cache hit answers
//! without building anything (the sidecar renders an encoded CheckResponse, the Envoy
//! module a header list). `()` renders nothing.

use serde_json::{Map, Value};

/// What a verified token's allow carries, for the host to render once.
#[derive(Debug, Clone, Copy)]
pub struct AllowParts<'a> {
    /// Every header any provider sets: the client's copies are removed.
    pub identity_headers: &'a [String],
    /// (header, value) from the provider's `claims_to_headers`, values already safe.
    pub headers: &'a [(&'a str, String)],
    /// The provider's `payload_header` name and the token's payload segment.
    pub payload: Option<(&'a str, &'a str)>,
    /// The claims for dynamic metadata: the verified claims, or those of them the
    /// provider's `claims_to_metadata` lists (empty: no metadata).
    pub claims: &'a Map<String, Value>,
}

pub trait Renderer: Send + Sync + 'static {
    /// The host's ready answer, kept per cached token.
    type Rendered: std::fmt::Debug + Send + Sync + 'static;
    fn allow(&self, parts: AllowParts<'_>) -> Self::Rendered;
    /// Heap bytes `rendered` holds: part of the cache entry's weight.
    fn bytes(&self, rendered: &Self::Rendered) -> usize;
}

impl Renderer for () {
    type Rendered = ();
    fn allow(&self, _parts: AllowParts<'_>) {}
    fn bytes(&self, _rendered: &()) -> usize {
        0
    }
}

/// A claim as a header value: strings as they are, arrays of strings space-joined, other
/// values as JSON. `None` when the value would not be a safe header (control characters).
pub fn header_value(v: &Value) -> Option<String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")
        }
        Value::Null => return None,
        other => other.to_string(),
    };
    let safe = text.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    (safe && !text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_values_are_rendered_safely() {
        assert_eq!(header_value(&json!("alice")).as_deref(), Some("alice"));
        assert_eq!(header_value(&json!(["a", "b"])).as_deref(), Some("a b"));
        assert_eq!(header_value(&json!(42)).as_deref(), Some("42"));
        assert_eq!(header_value(&json!({"k":1})).as_deref(), Some("{\"k\":1}"));
        assert_eq!(header_value(&json!("evil\r\nx-admin: 1")), None);
        assert_eq!(header_value(&json!(null)), None);
        assert_eq!(header_value(&json!("")), None);
    }
}
