//! What a decision does to an Envoy stream, in host terms: an [`AllowEdit`] (identity
//! headers to remove and to set, the claims for dynamic metadata namespace `hopauth` as
//! [`ClaimsMetadata`]) or a
//! [`LocalReply`] (status, headers, body). A deny is derived from the CheckResponse the
//! ext_authz path renders (`hopauth::render::deny`), so there is one place that
//! decides what a deny looks like. An allow is rendered by [`HeaderEdits`] from the same
//! parts the ext_authz renderer encodes, once per verified token; the tests here hold the
//! two to the same headers, order and claims.
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use hopauth::render;
use hopauth_core::decision::DenyReason;
use hopauth_core::render::{AllowParts, Renderer};

use super::metadata::ClaimsMetadata;
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
    /// The claims for namespace `hopauth` (objects, lists and booleans keep their types, as
    /// through ext_authz); empty for an anonymous allow, which sets no metadata.
    pub claims: ClaimsMetadata,
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
        AllowEdit { remove, set, claims: ClaimsMetadata::of(parts.claims) }
    }

    /// The edit of an anonymous allow: every identity header removed, nothing set.
    pub fn anonymous(identity_headers: &[String]) -> Self {
        AllowEdit { remove: identity_headers.iter().map(|h| Box::from(h.as_str())).collect(), ..Default::default() }
    }

    /// Heap bytes the edit holds (the verified-token cache weighs entries by it).
    fn heap_bytes(&self) -> usize {
        let strs = self.remove.iter().map(|h| h.len() + size_of::<Box<str>>()).sum::<usize>();
        let set = self.set.iter().map(|(h, v)| h.len() + v.len() + size_of::<SetHeader>()).sum::<usize>();
        strs + set + self.claims.heap_bytes()
    }

    /// Which of the edit's headers the request has, asked of `has` before the edit
    /// changes anything (a header mutation invalidates what Envoy listed).
    pub fn present(&self, has: impl Fn(&str) -> bool) -> Present {
        let names = self.remove.iter().map(|h| &**h).chain(self.set.iter().map(|(h, _)| &**h));
        if self.remove.len() + self.set.len() > 64 {
            return Present(u64::MAX);
        }
        Present(names.enumerate().filter(|(_, h)| has(h)).fold(0, |bits, (i, _)| bits | 1 << i))
    }

    /// Applies the edit to the request on `ctx`, `present` being what
    /// [`present`](Self::present) found. A header the request does not have is appended
    /// rather than set, and not removed at all: Envoy's set and remove look the name up,
    /// which builds a table of the whole header map first (callgrind through Envoy 1.40: a
    /// set ~4k instructions, an append ~1k), and most requests carry no identity header.
    pub fn apply(&self, ctx: &mut RequestContext<'_>, present: Present) {
        for (i, name) in self.remove.iter().enumerate() {
            if present.has(i) {
                ctx.remove_header(name);
            }
        }
        for (j, (name, value)) in self.set.iter().enumerate() {
            // A name set twice (two claims to one header) has a value the second time.
            let again = self.set[..j].iter().any(|(earlier, _)| earlier == name);
            if again || present.has(self.remove.len() + j) {
                ctx.set_header(name, value);
            } else {
                ctx.add_header(name, value);
            }
        }
        self.claims.apply(ctx);
    }
}

/// Which headers of an [`AllowEdit`] the request had: bit `i` for `remove[i]`, then `set` in
/// order. An edit of more than 64 headers takes every one as present (set and remove: the
/// same result, only slower).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present(u64);

impl Present {
    fn has(self, i: usize) -> bool {
        i >= 64 || self.0 & (1 << i) != 0
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
    use envoy_types::pb::google::protobuf::Struct;
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
    /// allow (`render::allow`), decoded with prost's own types: the header edits, and the
    /// `hopauth` namespace's Struct.
    fn decoded(bytes: &[u8]) -> (AllowEdit, Struct) {
        use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
        use envoy_types::pb::google::protobuf::value::Kind;
        use prost::Message;

        let response = CheckResponse::decode(bytes).unwrap();
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else { panic!("not an OK response") };
        let set = ok.headers.into_iter().filter_map(|h| h.header).map(|h| (h.key.into(), h.value.as_bytes().into()));
        let claims = match response
            .dynamic_metadata
            .and_then(|mut m| m.fields.remove(render::METADATA_NAMESPACE))
            .and_then(|v| v.kind)
        {
            Some(Kind::StructValue(s)) => s,
            _ => Default::default(),
        };
        (
            AllowEdit {
                remove: ok.headers_to_remove.iter().map(|h| h.as_str().into()).collect(),
                set: set.collect(),
                claims: ClaimsMetadata::default(),
            },
            claims,
        )
    }

    fn both(identity: &[String], headers: &[(&str, String)], payload: Option<(&str, &str)>, claims: Value) {
        let claims = claims.as_object().unwrap();
        let (ext_authz, ext_authz_claims) =
            decoded(&render::allow(identity, headers.iter().map(|(h, v)| (*h, v.as_str())), payload, Some(claims)));
        let module = HeaderEdits.allow(AllowParts { identity_headers: identity, headers, payload, claims });
        // The namespace holds the same fields with the same values and types.
        assert_eq!(module.claims.to_struct(), ext_authz_claims, "claims {claims:?}");
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
        let fields = edit.claims.to_struct().fields;
        assert_eq!(fields.len(), 4);
        assert_eq!(fields["admin"].kind, Some(Kind::BoolValue(true)), "a boolean stays a boolean");
        let Some(Kind::ListValue(aud)) = &fields["aud"].kind else { panic!("aud is not a list: {fields:?}") };
        assert_eq!(aud.values.len(), 2);
        assert_eq!(fields["exp"].kind, Some(Kind::NumberValue(5.0)));
        assert_eq!(fields["sub"].kind, Some(Kind::StringValue("alice".into())));
        let anonymous = AllowEdit::anonymous(&identity);
        assert_eq!((anonymous.clone(), Struct::default()), decoded(&render::allow(&identity, [], None, None)));
        assert_eq!(anonymous.remove.len(), 2);
        assert!(anonymous.set.is_empty() && anonymous.claims.is_empty());
    }

    #[test]
    fn present_marks_the_headers_the_request_has_removed_ones_first() {
        let identity = ["x-jwt-sub".to_string(), "x-jwt-scope".to_string(), "x-tenant".to_string()];
        let headers = [("x-jwt-sub", "alice".to_string()), ("x-tenant", "a".to_string())];
        let claims = json!({"sub": "alice"});
        let edit = HeaderEdits.allow(AllowParts {
            identity_headers: &identity,
            headers: &headers,
            payload: None,
            claims: claims.as_object().unwrap(),
        });
        // remove = [x-jwt-scope]; set = [x-jwt-sub, x-tenant].
        assert_eq!(edit.present(|h| h == "x-jwt-scope"), Present(0b001));
        assert_eq!(edit.present(|h| h == "x-tenant"), Present(0b100));
        assert_eq!(edit.present(|_| false), Present(0));
        assert!((0..3).all(|i| edit.present(|_| true).has(i)));
        // Past 64 headers every one counts as present: set and remove, never a lost copy.
        let many: Vec<String> = (0..65).map(|i| format!("x-h{i}")).collect();
        let big = AllowEdit::anonymous(&many);
        let p = big.present(|_| false);
        assert!(p.has(0) && p.has(64), "{p:?}");
    }
}
