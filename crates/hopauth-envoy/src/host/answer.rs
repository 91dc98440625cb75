//! What a decision does to an Envoy stream, in host terms: an [`AllowEdit`] (identity
//! headers to remove and to set, claims for dynamic metadata namespace `hopauth`) or a
//! [`LocalReply`] (status, headers, body). Both are derived from the responses the
//! ext_authz path renders (`hopauth::grpc::render`), so the two modes answer the same
//! bytes: there is one place that decides what a deny looks like.
use envoy_types::pb::envoy::service::auth::v3::{check_response::HttpResponse, CheckResponse};
use envoy_types::pb::google::protobuf::{value::Kind, Value as PbValue};
use hopauth::grpc::render::{self, METADATA_NAMESPACE};
use hopauth_core::decision::DenyReason;
use prost::Message;

use crate::ffi::RequestContext;

/// A local reply: the deny the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// `%RESPONSE_CODE_DETAILS%`: `hopauth_<reason>`.
    pub details: String,
}

impl LocalReply {
    /// The reply for `reason`, from the same CheckResponse the ext_authz server sends.
    pub fn deny(reason: &DenyReason) -> Self {
        let response = render::deny(reason);
        let details = format!("hopauth_{}", reason.as_str());
        match response.http_response {
            Some(HttpResponse::DeniedResponse(d)) => LocalReply {
                status: d.status.map_or(403, |s| u16::try_from(s.code).unwrap_or(403)),
                headers: d
                    .headers
                    .into_iter()
                    .filter_map(|h| h.header)
                    .map(|h| (h.key, if h.raw_value.is_empty() { h.value.into_bytes() } else { h.raw_value }))
                    .collect(),
                body: d.body.into_bytes(),
                details,
            },
            // render::deny always builds a DeniedResponse; Envoy's own default deny is 403.
            _ => LocalReply { status: 403, headers: Vec::new(), body: Vec::new(), details },
        }
    }

    /// Sends the reply on `ctx`.
    pub fn send(&self, ctx: &mut RequestContext<'_>) {
        let headers: Vec<(&str, &[u8])> = self.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        ctx.send_local_reply(self.status, &headers, &self.body, &self.details);
    }
}

/// A claim value for Envoy's dynamic metadata. The ABI sets strings and numbers; other
/// JSON values (booleans, arrays, objects, null) go in as their JSON text.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Text(String),
    Number(f64),
}

/// The edit an allow makes to the upstream request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AllowEdit {
    /// Identity headers removed (client copies), every one not in `set`.
    pub remove: Vec<String>,
    /// Identity headers set, replacing what the client sent.
    pub set: Vec<(String, Vec<u8>)>,
    /// Claims, under namespace `hopauth`.
    pub claims: Vec<(String, MetaValue)>,
}

impl AllowEdit {
    /// The edit of an encoded ext_authz allow (`VerifiedToken::allow_response`, or the
    /// anonymous allow). `None` if the bytes are not an OK CheckResponse.
    pub fn from_check_response(bytes: &[u8]) -> Option<Self> {
        let response = CheckResponse::decode(bytes).ok()?;
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else { return None };
        let set = ok
            .headers
            .into_iter()
            .filter_map(|h| h.header)
            .map(|h| (h.key, if h.raw_value.is_empty() { h.value.into_bytes() } else { h.raw_value }))
            .collect();
        let claims = response
            .dynamic_metadata
            .and_then(|mut m| m.fields.remove(METADATA_NAMESPACE))
            .and_then(|v| match v.kind {
                Some(Kind::StructValue(s)) => Some(s.fields),
                _ => None,
            })
            .map(|fields| {
                let mut claims: Vec<(String, MetaValue)> =
                    fields.into_iter().map(|(k, v)| (k, meta_value(&v))).collect();
                claims.sort_by(|a, b| a.0.cmp(&b.0));
                claims
            })
            .unwrap_or_default();
        Some(AllowEdit { remove: ok.headers_to_remove, set, claims })
    }

    /// Applies the edit to the request on `ctx`.
    pub fn apply(&self, ctx: &mut RequestContext<'_>) {
        for name in &self.remove {
            ctx.remove_header(name);
        }
        for (name, value) in &self.set {
            ctx.set_header(name, value);
        }
        for (key, value) in &self.claims {
            match value {
                MetaValue::Text(s) => ctx.set_metadata_string(METADATA_NAMESPACE, key, s),
                MetaValue::Number(n) => ctx.set_metadata_number(METADATA_NAMESPACE, key, *n),
            }
        }
    }
}

fn meta_value(v: &PbValue) -> MetaValue {
    match &v.kind {
        Some(Kind::StringValue(s)) => MetaValue::Text(s.clone()),
        Some(Kind::NumberValue(n)) => MetaValue::Number(*n),
        _ => MetaValue::Text(to_json(v).to_string()),
    }
}

fn to_json(v: &PbValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n).map_or(J::Null, J::Number),
        Some(Kind::StringValue(s)) => J::String(s.clone()),
        Some(Kind::ListValue(l)) => J::Array(l.values.iter().map(to_json).collect()),
        Some(Kind::StructValue(s)) => J::Object(s.fields.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deny_is_the_ext_authz_deny() {
        let r = LocalReply::deny(&DenyReason::Expired);
        assert_eq!(r.status, 401);
        let challenge = r.headers.iter().find(|(k, _)| k == "www-authenticate").unwrap();
        assert!(String::from_utf8_lossy(&challenge.1).contains("error=\"invalid_token\""));
        assert_eq!(r.details, "hopauth_expired");
        let r = LocalReply::deny(&DenyReason::RevocationUnavailable);
        assert_eq!(r.status, 503);
        assert!(r.headers.iter().any(|(k, v)| k == "retry-after" && v == b"5"));
    }

    #[test]
    fn an_allow_sets_headers_removes_the_rest_and_carries_claims() {
        let identity = ["x-jwt-sub".to_string(), "x-jwt-scope".to_string()];
        let claims = serde_json::json!({"sub": "alice", "exp": 5, "admin": true, "aud": ["a", "b"]});
        let bytes = render::allow(&identity, [("x-jwt-sub", "alice")], None, claims.as_object());
        let edit = AllowEdit::from_check_response(&bytes).unwrap();
        assert_eq!(edit.remove, ["x-jwt-scope"]);
        assert_eq!(edit.set, [("x-jwt-sub".to_string(), b"alice".to_vec())]);
        assert_eq!(
            edit.claims,
            [
                ("admin".to_string(), MetaValue::Text("true".into())),
                ("aud".to_string(), MetaValue::Text("[\"a\",\"b\"]".into())),
                ("exp".to_string(), MetaValue::Number(5.0)),
                ("sub".to_string(), MetaValue::Text("alice".into())),
            ]
        );
        let anonymous = AllowEdit::from_check_response(&render::allow(&identity, [], None, None)).unwrap();
        assert_eq!(anonymous.remove, identity);
        assert!(anonymous.set.is_empty() && anonymous.claims.is_empty());
    }
}
