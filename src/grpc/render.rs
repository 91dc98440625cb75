//! CheckResponses as Envoy reads them, encoded once: an allow is rendered when its token is
//! first verified and the cache keeps the bytes, so a cache hit sends them as they are.
//! Denies are rendered per reason once, except `insufficient_scope`, which names the
//! route's scopes.

use std::collections::HashMap;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value as PbValue};
use envoy_types::pb::google::rpc::Status;
use prost::Message;

use crate::decision::{DenyReason, DenyStatus};

/// gRPC status codes placed in `CheckResponse.status` (google.rpc.Code).
const RPC_OK: i32 = 0;
const RPC_PERMISSION_DENIED: i32 = 7;
const RPC_UNAVAILABLE: i32 = 14;
const RPC_UNAUTHENTICATED: i32 = 16;

/// Namespace of the claims in Envoy's dynamic metadata.
pub const METADATA_NAMESPACE: &str = "hopauth";
/// Seconds a client should wait after a 503.
const RETRY_AFTER_SECS: &str = "5";

/// A message as the bytes of its protobuf encoding.
pub fn encode(response: &CheckResponse) -> Bytes {
    response.encode_to_vec().into()
}

/// The allow for a verified token: `headers` set (overwriting what the client sent), every
/// other identity header removed, and the claims (a JSON object, already validated) as
/// dynamic metadata under `hopauth`. `payload` is the `payload_header` name and the
/// token's payload segment. With no claims, the allow of an anonymous request.
pub fn allow<'a>(
    identity_headers: &[String],
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    payload: Option<(&'a str, &'a str)>,
    claims_json: Option<&str>,
) -> CheckResponse {
    let mut ok = OkHttpResponse { headers_to_remove: identity_headers.to_vec(), ..Default::default() };
    for (name, value) in headers.into_iter().chain(payload) {
        ok.headers.push(header(name, value, HeaderAppendAction::OverwriteIfExistsOrAdd));
    }
    // Removal is applied after the set headers; do not remove what we just set.
    ok.headers_to_remove.retain(|h| !ok.headers.iter().any(|set| set.header.as_ref().is_some_and(|s| s.key == *h)));
    let metadata = claims_json.map(|json| {
        let claims = serde_json::from_str::<PbJson>(json).map_or_else(|_| PbValue::default(), |v| v.0);
        Struct { fields: HashMap::from([(METADATA_NAMESPACE.to_string(), claims)]) }
    });
    CheckResponse {
        status: Some(Status { code: RPC_OK, ..Default::default() }),
        http_response: Some(HttpResponse::OkResponse(ok)),
        dynamic_metadata: metadata,
    }
}

fn header(key: &str, value: impl Into<String>, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: key.to_string(), value: value.into(), raw_value: Vec::new() }),
        append_action: action as i32,
        ..Default::default()
    }
}

/// The deny Envoy turns into the client's 401, 403 or 503.
pub fn deny(reason: &DenyReason) -> CheckResponse {
    let (http, rpc) = match reason.status() {
        DenyStatus::Unauthorized => (StatusCode::Unauthorized, RPC_UNAUTHENTICATED),
        DenyStatus::Forbidden => (StatusCode::Forbidden, RPC_PERMISSION_DENIED),
        DenyStatus::Unavailable => (StatusCode::ServiceUnavailable, RPC_UNAVAILABLE),
    };
    let description = reason.description();
    let (error, challenge) = match reason {
        // RFC 6750 §3.1: a request without credentials gets no error code.
        DenyReason::MissingToken => (None, "Bearer realm=\"hopauth\"".to_string()),
        DenyReason::InsufficientScope(scope) => (
            Some("insufficient_scope"),
            format!(
                "Bearer realm=\"hopauth\", error=\"insufficient_scope\", error_description=\"{description}\", scope=\"{}\"",
                quote_safe(scope)
            ),
        ),
        _ if reason.status() == DenyStatus::Unavailable => (Some("temporarily_unavailable"), String::new()),
        _ => (
            Some("invalid_token"),
            format!("Bearer realm=\"hopauth\", error=\"invalid_token\", error_description=\"{description}\""),
        ),
    };
    let mut headers = vec![header("content-type", "application/json", HeaderAppendAction::OverwriteIfExistsOrAdd)];
    if !challenge.is_empty() {
        headers.push(header("www-authenticate", challenge, HeaderAppendAction::OverwriteIfExistsOrAdd));
    }
    if reason.status() == DenyStatus::Unavailable {
        headers.push(header("retry-after", RETRY_AFTER_SECS, HeaderAppendAction::OverwriteIfExistsOrAdd));
    }
    let body = match error {
        Some(e) => serde_json::json!({ "error": e, "error_description": description }),
        None => serde_json::json!({ "error": "unauthorized", "error_description": description }),
    };
    CheckResponse {
        status: Some(Status { code: rpc, message: reason.as_str().to_string(), ..Default::default() }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: http as i32 }),
            headers,
            body: body.to_string(),
        })),
        dynamic_metadata: None,
    }
}

/// Scope tokens are `%x21 / %x23-5B / %x5D-7E` (RFC 6750 §3): drop anything else so the
/// challenge stays well-formed whatever the route config holds.
fn quote_safe(s: &str) -> String {
    s.chars().filter(|c| *c == ' ' || (c.is_ascii_graphic() && *c != '"' && *c != '\\')).collect()
}

/// JSON read straight into protobuf `Value`s (no intermediate `serde_json::Value`).
struct PbJson(PbValue);

impl<'de> serde::Deserialize<'de> for PbJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PbJsonVisitor)
    }
}

struct PbJsonVisitor;

fn pb(kind: Kind) -> PbJson {
    PbJson(PbValue { kind: Some(kind) })
}

impl<'de> serde::de::Visitor<'de> for PbJsonVisitor {
    type Value = PbJson;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<PbJson, E> {
        Ok(pb(Kind::BoolValue(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<PbJson, E> {
        Ok(pb(Kind::NumberValue(v as f64)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<PbJson, E> {
        Ok(pb(Kind::NumberValue(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<PbJson, E> {
        Ok(pb(Kind::NumberValue(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<PbJson, E> {
        Ok(pb(Kind::StringValue(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<PbJson, E> {
        Ok(pb(Kind::StringValue(v)))
    }
    fn visit_unit<E>(self) -> Result<PbJson, E> {
        Ok(pb(Kind::NullValue(0)))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<PbJson, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(PbJson(v)) = seq.next_element()? {
            values.push(v);
        }
        Ok(pb(Kind::ListValue(ListValue { values })))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<PbJson, A::Error> {
        let mut fields = HashMap::with_capacity(map.size_hint().unwrap_or(8));
        while let Some((k, PbJson(v))) = map.next_entry::<String, PbJson>()? {
            fields.insert(k, v);
        }
        Ok(pb(Kind::StructValue(Struct { fields })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(r: &CheckResponse) -> &DeniedHttpResponse {
        match r.http_response.as_ref() {
            Some(HttpResponse::DeniedResponse(d)) => d,
            _ => panic!("not a denied response"),
        }
    }

    fn header_value<'a>(d: &'a DeniedHttpResponse, name: &str) -> Option<&'a str> {
        d.headers.iter().filter_map(|h| h.header.as_ref()).find(|h| h.key == name).map(|h| h.value.as_str())
    }

    #[test]
    fn missing_token_has_no_error_code() {
        let r = deny(&DenyReason::MissingToken);
        assert_eq!(r.status.as_ref().unwrap().code, RPC_UNAUTHENTICATED);
        let d = denied(&r);
        assert_eq!(d.status.as_ref().unwrap().code, StatusCode::Unauthorized as i32);
        assert_eq!(header_value(d, "www-authenticate"), Some("Bearer realm=\"hopauth\""));
    }

    #[test]
    fn invalid_token_and_scope_follow_rfc6750() {
        let r = deny(&DenyReason::Expired);
        let d = denied(&r);
        let challenge = header_value(d, "www-authenticate").unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(body["error"], "invalid_token");
        assert_eq!(body["error_description"], "token has expired");

        let r = deny(&DenyReason::InsufficientScope("orders:write\"x".into()));
        let d = denied(&r);
        assert_eq!(d.status.as_ref().unwrap().code, StatusCode::Forbidden as i32);
        let challenge = header_value(d, "www-authenticate").unwrap();
        assert!(challenge.contains("scope=\"orders:writex\""), "{challenge}");
    }

    #[test]
    fn unavailable_is_503_with_retry_after_inside_a_normal_response() {
        let r = deny(&DenyReason::KeysUnavailable);
        let d = denied(&r);
        assert_eq!(d.status.as_ref().unwrap().code, StatusCode::ServiceUnavailable as i32);
        assert_eq!(header_value(d, "retry-after"), Some(RETRY_AFTER_SECS));
        assert_eq!(r.status.as_ref().unwrap().code, RPC_UNAVAILABLE);
    }

    #[test]
    fn anonymous_allow_strips_identity_headers() {
        let r = allow(&["x-jwt-sub".to_string()], [], None, None);
        let Some(HttpResponse::OkResponse(ok)) = r.http_response else { panic!() };
        assert_eq!(ok.headers_to_remove, vec!["x-jwt-sub"]);
        assert!(ok.headers.is_empty());
        assert_eq!(r.status.unwrap().code, RPC_OK);
        assert!(r.dynamic_metadata.is_none());
    }

    #[test]
    fn verified_allow_sets_headers_and_claims_metadata() {
        let identity = ["x-jwt-sub".to_string(), "x-jwt-scope".to_string(), "x-jwt-payload".to_string()];
        let r = allow(
            &identity,
            [("x-jwt-sub", "alice")],
            Some(("x-jwt-payload", "eyJzdWIiOiJhbGljZSJ9")),
            Some(r#"{"sub":"alice","n":[1,true,null]}"#),
        );
        let Some(HttpResponse::OkResponse(ok)) = r.http_response else { panic!() };
        let set: Vec<(&str, &str)> =
            ok.headers.iter().filter_map(|h| h.header.as_ref()).map(|h| (h.key.as_str(), h.value.as_str())).collect();
        assert_eq!(set, vec![("x-jwt-sub", "alice"), ("x-jwt-payload", "eyJzdWIiOiJhbGljZSJ9")]);
        // What was set is not also removed; what was not set is.
        assert_eq!(ok.headers_to_remove, vec!["x-jwt-scope"]);
        let claims = &r.dynamic_metadata.unwrap().fields[METADATA_NAMESPACE];
        let Some(Kind::StructValue(s)) = &claims.kind else { panic!("{claims:?}") };
        assert_eq!(s.fields["sub"].kind, Some(Kind::StringValue("alice".into())));
        let Some(Kind::ListValue(list)) = &s.fields["n"].kind else { panic!() };
        assert_eq!(list.values.len(), 3);
    }
}
