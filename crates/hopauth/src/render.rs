//! CheckResponses as Envoy reads them, encoded once: an allow is rendered when its token is
//! first verified and the cache keeps the bytes, so a cache hit sends them as they are.
//! Denies are rendered per reason once, except `insufficient_scope`, which names the
//! route's scopes.

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc::Status;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;
use serde_json::{Map, Value};

use hopauth_core::decision::{DenyReason, DenyStatus};
use hopauth_core::render::{AllowParts, Renderer};

/// gRPC status codes placed in `CheckResponse.status` (google.rpc.Code).
const RPC_OK: i32 = 0;
const RPC_INVALID_ARGUMENT: i32 = 3;
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

/// The allow for a verified token, encoded: `headers` set (overwriting what the client
/// sent), every other identity header removed, and the verified claims as dynamic
/// metadata under `hopauth`. `payload` is the `payload_header` name and the token's
/// payload segment. With no claims, the allow of an anonymous request.
pub fn allow<'a>(
    identity_headers: &[String],
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    payload: Option<(&'a str, &'a str)>,
    claims: Option<&Map<String, Value>>,
) -> Bytes {
    let mut ok = OkHttpResponse { headers_to_remove: identity_headers.to_vec(), ..Default::default() };
    for (name, value) in headers.into_iter().chain(payload) {
        ok.headers.push(header(name, value, HeaderAppendAction::OverwriteIfExistsOrAdd));
    }
    // Removal is applied after the set headers; do not remove what we just set.
    ok.headers_to_remove.retain(|h| !ok.headers.iter().any(|set| set.header.as_ref().is_some_and(|s| s.key == *h)));
    let response = CheckResponse {
        status: Some(Status { code: RPC_OK, ..Default::default() }),
        http_response: Some(HttpResponse::OkResponse(ok)),
        dynamic_metadata: None,
    };
    // Fields of a protobuf message may come in any order: the metadata is appended as a
    // `dynamic_metadata` field written straight from the parsed claims.
    let metadata = claims.map(metadata_len).unwrap_or(0);
    let mut buf = Vec::with_capacity(response.encoded_len() + metadata + 8);
    response.encode_raw(&mut buf);
    if let Some(claims) = claims {
        encode_len_field(CHECK_RESPONSE_DYNAMIC_METADATA, metadata, &mut buf);
        write_metadata(claims, &mut buf);
    }
    buf.into()
}

/// The ext_authz renderer the verified-token cache is built with: a verified token's allow
/// as the encoded CheckResponse, kept with the token.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckResponses;

impl Renderer for CheckResponses {
    type Rendered = Bytes;

    fn allow(&self, parts: AllowParts<'_>) -> Bytes {
        allow(
            parts.identity_headers,
            parts.headers.iter().map(|(h, v)| (*h, v.as_str())),
            parts.payload,
            // No claims to carry (`claims_to_metadata: []`): no metadata at all.
            (!parts.claims.is_empty()).then_some(parts.claims),
        )
    }

    fn bytes(&self, rendered: &Bytes) -> usize {
        rendered.len()
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
        DenyStatus::BadRequest => (StatusCode::BadRequest, RPC_INVALID_ARGUMENT),
    };
    let description = reason.description();
    let (error, challenge) = match reason {
        // RFC 6750 §3.1: a request without credentials, or with credentials of an
        // unsupported method (`Basic`), gets no error code.
        DenyReason::MissingToken | DenyReason::OtherScheme => (None, "Bearer realm=\"hopauth\"".to_string()),
        DenyReason::InsufficientScope(scope) => (
            Some("insufficient_scope"),
            format!(
                "Bearer realm=\"hopauth\", error=\"insufficient_scope\", error_description=\"{description}\", scope=\"{}\"",
                quote_safe(scope)
            ),
        ),
        _ if reason.status() == DenyStatus::Unavailable => (Some("temporarily_unavailable"), String::new()),
        _ if reason.status() == DenyStatus::BadRequest => (
            Some("invalid_request"),
            format!("Bearer realm=\"hopauth\", error=\"invalid_request\", error_description=\"{description}\""),
        ),
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

// ---- The claims as a `google.protobuf.Struct`, written without building one.
// Struct { map<string, Value> fields = 1 }; a map entry is { key = 1; value = 2 };
// Value { null_value = 1; number_value = 2; string_value = 3; bool_value = 4;
// struct_value = 5; list_value = 6 }; ListValue { repeated Value values = 1 }.

const CHECK_RESPONSE_DYNAMIC_METADATA: u32 = 4;

fn encode_len_field(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// Bytes of a length-delimited field `tag` whose content is `len` bytes.
fn len_field(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// `Struct { fields: { "hopauth": Value { struct_value: claims } } }`
fn metadata_len(claims: &Map<String, Value>) -> usize {
    len_field(1, entry_len(METADATA_NAMESPACE, len_field(5, struct_len(claims))))
}

fn write_metadata(claims: &Map<String, Value>, buf: &mut Vec<u8>) {
    let value = len_field(5, struct_len(claims));
    encode_len_field(1, entry_len(METADATA_NAMESPACE, value), buf);
    encode_len_field(1, METADATA_NAMESPACE.len(), buf);
    buf.extend_from_slice(METADATA_NAMESPACE.as_bytes());
    encode_len_field(2, value, buf);
    encode_len_field(5, struct_len(claims), buf);
    write_struct(claims, buf);
}

/// `claims` as a serialized `google.protobuf.Struct` (the claims themselves, not wrapped in
/// a namespace): what the Envoy module hands to `set_dynamic_metadata_struct`, encoded
/// exactly as the ext_authz allow's `hopauth` namespace.
pub fn claims_struct(claims: &Map<String, Value>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(struct_len(claims));
    write_struct(claims, &mut buf);
    buf
}

fn entry_len(key: &str, value_len: usize) -> usize {
    len_field(1, key.len()) + len_field(2, value_len)
}

fn struct_len(map: &Map<String, Value>) -> usize {
    map.iter().map(|(k, v)| len_field(1, entry_len(k, value_len(v)))).sum()
}

fn write_struct(map: &Map<String, Value>, buf: &mut Vec<u8>) {
    for (k, v) in map {
        let len = value_len(v);
        encode_len_field(1, entry_len(k, len), buf);
        encode_len_field(1, k.len(), buf);
        buf.extend_from_slice(k.as_bytes());
        encode_len_field(2, len, buf);
        write_value(v, buf);
    }
}

/// Length of a `Value` message's content.
fn value_len(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 2,
        Value::Number(_) => 9,
        Value::String(s) => len_field(3, s.len()),
        Value::Object(m) => len_field(5, struct_len(m)),
        Value::Array(items) => len_field(6, list_len(items)),
    }
}

fn list_len(items: &[Value]) -> usize {
    items.iter().map(|v| len_field(1, value_len(v))).sum()
}

fn write_value(v: &Value, buf: &mut Vec<u8>) {
    match v {
        Value::Null => {
            encode_key(1, WireType::Varint, buf);
            encode_varint(0, buf);
        }
        Value::Bool(b) => {
            encode_key(4, WireType::Varint, buf);
            encode_varint(u64::from(*b), buf);
        }
        Value::Number(n) => {
            encode_key(2, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
        }
        Value::String(s) => {
            encode_len_field(3, s.len(), buf);
            buf.extend_from_slice(s.as_bytes());
        }
        Value::Object(m) => {
            encode_len_field(5, struct_len(m), buf);
            write_struct(m, buf);
        }
        Value::Array(items) => {
            encode_len_field(6, list_len(items), buf);
            for item in items {
                encode_len_field(1, value_len(item), buf);
                write_value(item, buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value as PbValue};

    /// The reference: serde_json → prost's own types.
    fn to_pb(v: &Value) -> PbValue {
        let kind = match v {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(a) => Kind::ListValue(ListValue { values: a.iter().map(to_pb).collect() }),
            Value::Object(m) => {
                Kind::StructValue(Struct { fields: m.iter().map(|(k, v)| (k.clone(), to_pb(v))).collect() })
            }
        };
        PbValue { kind: Some(kind) }
    }

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
    fn other_schemes_get_the_no_error_challenge_and_bad_requests_400() {
        let r = deny(&DenyReason::OtherScheme);
        let d = denied(&r);
        assert_eq!(d.status.as_ref().unwrap().code, StatusCode::Unauthorized as i32);
        assert_eq!(header_value(d, "www-authenticate"), Some("Bearer realm=\"hopauth\""));
        let r = deny(&DenyReason::MalformedRequest);
        let d = denied(&r);
        assert_eq!(d.status.as_ref().unwrap().code, StatusCode::BadRequest as i32);
        assert_eq!(r.status.as_ref().unwrap().code, RPC_INVALID_ARGUMENT);
        assert!(header_value(d, "www-authenticate").unwrap().contains("error=\"invalid_request\""));
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(body["error"], "invalid_request");
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
        let r = CheckResponse::decode(allow(&["x-jwt-sub".to_string()], [], None, None)).unwrap();
        let Some(HttpResponse::OkResponse(ok)) = r.http_response else { panic!() };
        assert_eq!(ok.headers_to_remove, vec!["x-jwt-sub"]);
        assert!(ok.headers.is_empty());
        assert_eq!(r.status.unwrap().code, RPC_OK);
        assert!(r.dynamic_metadata.is_none());
    }

    #[test]
    fn verified_allow_sets_headers_and_claims_metadata() {
        let identity = ["x-jwt-sub".to_string(), "x-jwt-scope".to_string(), "x-jwt-payload".to_string()];
        let claims = serde_json::json!({
            "sub": "alice", "n": [1, true, null, -2.5, "x", [], {}], "o": {"k": {"deep": ""}}, "e": ""
        });
        let bytes = allow(
            &identity,
            [("x-jwt-sub", "alice")],
            Some(("x-jwt-payload", "eyJzdWIiOiJhbGljZSJ9")),
            claims.as_object(),
        );
        let r = CheckResponse::decode(bytes).unwrap();
        let Some(HttpResponse::OkResponse(ok)) = r.http_response else { panic!() };
        let set: Vec<(&str, &str)> =
            ok.headers.iter().filter_map(|h| h.header.as_ref()).map(|h| (h.key.as_str(), h.value.as_str())).collect();
        assert_eq!(set, vec![("x-jwt-sub", "alice"), ("x-jwt-payload", "eyJzdWIiOiJhbGljZSJ9")]);
        // What was set is not also removed; what was not set is.
        assert_eq!(ok.headers_to_remove, vec!["x-jwt-scope"]);
        // The hand-written Struct decodes to the same value prost builds from the JSON.
        let metadata = r.dynamic_metadata.unwrap();
        assert_eq!(metadata.fields.len(), 1);
        assert_eq!(metadata.fields[METADATA_NAMESPACE], to_pb(&claims));
    }

    #[test]
    fn an_allow_without_claims_to_carry_has_no_metadata() {
        let identity = ["x-jwt-sub".to_string()];
        let headers = [("x-jwt-sub", "alice".to_string())];
        let render = |claims: &Map<String, Value>| {
            let parts = AllowParts { identity_headers: &identity, headers: &headers, payload: None, claims };
            CheckResponse::decode(CheckResponses.allow(parts)).unwrap()
        };
        // `claims_to_metadata: []`: the headers as ever, no metadata field at all.
        let r = render(&Map::new());
        assert!(r.dynamic_metadata.is_none(), "{r:?}");
        let Some(HttpResponse::OkResponse(ok)) = r.http_response else { panic!() };
        assert_eq!(ok.headers.len(), 1);
        let claims = serde_json::json!({"sub": "alice"});
        assert!(render(claims.as_object().unwrap()).dynamic_metadata.is_some());
    }
}
