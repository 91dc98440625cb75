//! CheckRequests as Envoy sends them, built with envoy-types: for the in-process Check
//! tests, the wire reader's tests and the fuzz seeds (one builder for all of them).

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

/// `GET path` with `headers` in the `headers` map (keys as Envoy lowercases them), `raw`
/// headers in `header_map` (Envoy's `encode_raw_headers: true`; left unset when empty), and
/// the route's `context_extensions`. The other fields Envoy fills (a request id, host,
/// scheme, protocol, the source's principal) are set too, so the encoded bytes carry what
/// hopauth's reader must skip.
pub fn check_request(
    headers: &[(&str, &str)],
    raw: &[(&str, &[u8])],
    path: &str,
    ext: &[(&str, &str)],
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer { principal: "spiffe://cluster.local/ns/a/sa/b".into(), ..Default::default() }),
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "1".into(),
                    method: "GET".into(),
                    path: path.into(),
                    host: "svc".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/2".into(),
                    headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    header_map: (!raw.is_empty()).then(|| HeaderMap {
                        headers: raw
                            .iter()
                            .map(|(k, v)| HeaderValue {
                                key: k.to_string(),
                                raw_value: v.to_vec(),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: ext.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }),
    }
}
