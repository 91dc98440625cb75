//! What a decision does to an Envoy stream, in host terms: an [`AllowEdit`] (identity
//! headers to remove and to set, the claims as a `google.protobuf.Struct` for dynamic
//! metadata namespace `hopauth`, encoded once by the sidecar's `render::claims_struct`) or a
//! [`LocalReply`] (status, headers, body). A deny is derived from the CheckResponse the
//! ext_authz path renders (`hopauth::render::deny`), so there is one place that
//! decides what a deny looks like. An allow is rendered by [`HeaderEdits`] from the same
//! parts the ext_authz renderer encodes, once per verified token; the tests here hold the
//! two to the same headers, order and claims.
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use hopauth::render::{self, METADATA_NAMESPACE};
use hopauth_core::decision::DenyReason;
use hopauth_core::render::{AllowParts, Renderer};

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

/// A header to set: name and value bytes.
pub type SetHeader = (Box<str>, Box<[u8]>);

/// The edit an allow makes to the upstream request: what the ext_authz path's OK
/// CheckResponse tells Envoy to do, in the same order. Built once per verified token
/// ([`HeaderEdits`]), applied as it is on every cache hit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AllowEdit {
    /// Identity headers removed (client copies), every one not in `set`.
    pub remove: Box<[Box<str>]>,
    /// Identity headers set, replacing what the client sent: `claims_to_headers` in the
    /// provider's order, then the `payload_header`.
    pub set: Box<[SetHeader]>,
    /// The claims as a serialized `google.protobuf.Struct`, merged into namespace `hopauth`
    /// in one call (objects, lists and booleans keep their types, as through ext_authz);
    /// empty for an anonymous allow, which sets no metadata.
    pub claims: Box<[u8]>,
}

impl AllowEdit {
    /// The edit of a verified token's allow.
    pub fn of(parts: AllowParts<'_>) -> Self {
        let set: Box<[SetHeader]> = parts
            .headers
            .iter()
            .map(|(h, v)| (*h, v.as_str()))
            .chain(parts.payload)
            .map(|(h, v)| (Box::from(h), Box::from(v.as_bytes())))
            .collect();
        // As `render::allow`: what was set is not also removed.
        let remove = parts
            .identity_headers
            .iter()
            .filter(|h| !set.iter().any(|(s, _)| **s == ***h))
            .map(|h| Box::from(h.as_str()))
            .collect();
        let claims = render::claims_struct(parts.claims).into();
        AllowEdit { remove, set, claims }
    }

    /// The edit of an anonymous allow: every identity header removed, nothing set.
    pub fn anonymous(identity_headers: &[String]) -> Self {
        AllowEdit { remove: identity_headers.iter().map(|h| Box::from(h.as_str())).collect(), ..Default::default() }
    }

    /// Heap bytes the edit holds (the verified-token cache weighs entries by it).
    fn heap_bytes(&self) -> usize {
        let strs = self.remove.iter().map(|h| h.len() + size_of::<Box<str>>()).sum::<usize>();
        let set = self.set.iter().map(|(h, v)| h.len() + v.len() + size_of::<SetHeader>()).sum::<usize>();
        strs + set + self.claims.len()
    }

    /// Applies the edit to the request on `ctx`.
    pub fn apply(&self, ctx: &mut RequestContext<'_>) {
        for name in &self.remove {
            ctx.remove_header(name);
        }
        for (name, value) in &self.set {
            ctx.set_header(name, value);
        }
        if !self.claims.is_empty() {
            ctx.set_metadata_struct(METADATA_NAMESPACE, &self.claims);
        }
    }
}

/// The module's renderer: the verified-token cache keeps each token's [`AllowEdit`], so a
/// cache hit applies it without decoding or building anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderEdits;

impl Renderer for HeaderEdits {
    type Rendered = AllowEdit;

    fn allow(&self, parts: AllowParts<'_>) -> AllowEdit {
        AllowEdit::of(parts)
    }

    fn bytes(&self, rendered: &AllowEdit) -> usize {
        rendered.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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

    /// The reference: what Envoy's ext_authz filter would do with the sidecar's encoded
    /// allow (`render::allow`), decoded with prost's own types; the claims come back as
    /// the `hopauth` namespace's Struct re-encoded by prost.
    fn decoded(bytes: &[u8]) -> AllowEdit {
        use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
        use envoy_types::pb::google::protobuf::value::Kind;
        use prost::Message;

        let response = CheckResponse::decode(bytes).unwrap();
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else { panic!("not an OK response") };
        let set = ok.headers.into_iter().filter_map(|h| h.header).map(|h| (h.key.into(), h.value.as_bytes().into()));
        let claims = match response
            .dynamic_metadata
            .and_then(|mut m| m.fields.remove(METADATA_NAMESPACE))
            .and_then(|v| v.kind)
        {
            Some(Kind::StructValue(s)) => s.encode_to_vec(),
            _ => Vec::new(),
        };
        AllowEdit {
            remove: ok.headers_to_remove.iter().map(|h| h.as_str().into()).collect(),
            set: set.collect(),
            claims: claims.into(),
        }
    }

    /// The claims an edit carries, decoded as Envoy decodes them.
    fn claims_of(edit: &AllowEdit) -> envoy_types::pb::google::protobuf::Struct {
        prost::Message::decode(&*edit.claims).expect("a serialized Struct")
    }

    fn both(identity: &[String], headers: &[(&str, String)], payload: Option<(&str, &str)>, claims: Value) {
        let claims = claims.as_object().unwrap();
        let ext_authz =
            decoded(&render::allow(identity, headers.iter().map(|(h, v)| (*h, v.as_str())), payload, Some(claims)));
        let module = HeaderEdits.allow(AllowParts { identity_headers: identity, headers, payload, claims });
        // The same Struct (prost orders map fields, so equal bytes are expected too, but the
        // decoded values are what Envoy sees).
        assert_eq!(claims_of(&module), claims_of(&ext_authz), "claims {claims:?}");
        assert_eq!((&module.remove, &module.set), (&ext_authz.remove, &ext_authz.set), "claims {claims:?}");
        assert!(HeaderEdits.bytes(&module) > 0);
    }

    #[test]
    fn an_allow_is_the_edit_the_ext_authz_allow_makes() {
        let identity: Vec<String> =
            ["x-jwt-sub", "x-jwt-scope", "x-jwt-payload", "x-tenant"].map(String::from).to_vec();
        let headers = [("x-jwt-sub", "alice".to_string()), ("x-jwt-scope", "a b".to_string())];
        let payload = Some(("x-jwt-payload", "eyJzdWIiOiJhbGljZSJ9"));
        both(&identity, &headers, payload, json!({"sub": "alice", "exp": 5, "admin": true, "aud": ["a", "b"]}));
        both(
            &identity,
            &headers,
            None,
            json!({"n": [1, true, null, -2.5, "x", [], {}], "o": {"z": 1, "k": {"deep": ""}}, "e": "", "big": 1e300,
                   "neg": -7, "u": 18446744073709551615u64, "nul": null, "f": false}),
        );
        both(&identity, &[], payload, json!({}));
        // A header set twice (two claims to one name) is set twice, in order.
        both(&identity, &[("x-tenant", "a".into()), ("x-tenant", "b".into())], None, json!({"sub": "s"}));
        both(&[], &[], None, json!({"sub": "s"}));
    }

    #[test]
    fn an_allow_sets_headers_removes_the_rest_and_carries_claims() {
        let identity = ["x-jwt-sub".to_string(), "x-jwt-scope".to_string()];
        let claims = json!({"sub": "alice", "exp": 5, "admin": true, "aud": ["a", "b"]});
        let headers = [("x-jwt-sub", "alice".to_string())];
        let edit = HeaderEdits.allow(AllowParts {
            identity_headers: &identity,
            headers: &headers,
            payload: None,
            claims: claims.as_object().unwrap(),
        });
        assert_eq!(&*edit.remove, [Box::from("x-jwt-scope")]);
        assert_eq!(&*edit.set, [(Box::from("x-jwt-sub"), Box::from(&b"alice"[..]))]);
        use envoy_types::pb::google::protobuf::value::Kind;
        let fields = claims_of(&edit).fields;
        assert_eq!(fields.len(), 4);
        assert_eq!(fields["admin"].kind, Some(Kind::BoolValue(true)), "a boolean stays a boolean");
        let Some(Kind::ListValue(aud)) = &fields["aud"].kind else { panic!("aud is not a list: {fields:?}") };
        assert_eq!(aud.values.len(), 2);
        assert_eq!(fields["exp"].kind, Some(Kind::NumberValue(5.0)));
        assert_eq!(fields["sub"].kind, Some(Kind::StringValue("alice".into())));
        let anonymous = AllowEdit::anonymous(&identity);
        assert_eq!(anonymous, decoded(&render::allow(&identity, [], None, None)));
        assert_eq!(anonymous.remove.len(), 2);
        assert!(anonymous.set.is_empty() && anonymous.claims.is_empty());
    }
}
