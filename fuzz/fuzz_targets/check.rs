//! The whole Check on arbitrary request bytes: `AuthorizationService::check_wire` of the
//! fixture (Ed25519 JWKS file, HS256 secret, memory revocation store with a revoked `jti`
//! and subject), driven on a current-thread runtime.
//!
//! First byte even: the rest is a CheckRequest's bytes, as Envoy would send them. Odd: the
//! rest is `flags, header JSON \0 claims JSON \0 path`, and the token is signed here with
//! the fixture's HS256 secret, so mutations reach every check after the signature (claims,
//! policy, revocation, the allow's headers and metadata) instead of stopping at it.
//!
//! Properties: never a panic; every reply decodes as a CheckResponse under prost's default
//! limits, with a status and an http_response; OK is status 0, a deny is 401, 403 or 503
//! with a non-zero status; a verified allow carries a token that an independent check
//! (`hopauth_fuzz::acceptable`: own base64, JSON and crypto) and the route's policy
//! (providers, required scopes) accept; an anonymous allow removes the client's identity
//! headers.
#![no_main]

use hopauth_core::clock::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use hopauth::grpc::wire::CheckView;
use hopauth_core::token::{extract, TokenSource};
use hopauth_fuzz::{acceptable, fixture, signing_keys};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = if mode % 2 == 0 { rest.to_vec() } else { signed_request(rest).encode_to_vec() };
    let f = fixture();
    // Decode errors are answered by the codec (an INVALID_ARGUMENT there is hole 8's
    // business, checked in tests/check.rs); every request the view accepts gets a Check.
    let Ok(view) = CheckView::parse(Bytes::from(bytes)) else { return };
    let reply = f.runtime.block_on(f.service.check_wire(&view, Instant::now()));
    let response = CheckResponse::decode(reply.clone()).expect("every reply decodes as a CheckResponse");
    let status = response.status.as_ref().expect("a reply has a status").code;
    match response.http_response.as_ref().expect("a reply has an http_response") {
        HttpResponse::OkResponse(ok) => {
            assert_eq!(status, 0, "an allow with a non-OK status");
            let sources = [
                TokenSource::Header { name: "authorization".into(), prefix: "Bearer ".into() },
                TokenSource::Cookie("access_token".into()),
                TokenSource::Query("access_token".into()),
            ];
            let set = |name: &str| ok.headers.iter().filter_map(|h| h.header.as_ref()).find(|h| h.key == name);
            match extract(&view, &sources, hopauth::config::DEFAULT_MAX_TOKEN_BYTES) {
                Ok(Some(token)) => {
                    let now = hopauth_core::clock::unix_now();
                    if let Err(why) = acceptable(token, now, f) {
                        panic!("allowed a token the independent check refuses ({why}): {token}");
                    }
                    let payload = token.split('.').nth(1).expect("three segments");
                    assert_eq!(set("x-jwt-payload").map(|h| h.value.as_str()), Some(payload));
                    let claims: serde_json::Value =
                        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
                    if let Err(why) = route_allows(&view, &claims) {
                        panic!("allowed a token the route refuses ({why}): {token}");
                    }
                }
                Ok(None) => {
                    // Anonymous: a client's own x-jwt-* headers are removed, never passed on.
                    assert!(set("x-jwt-sub").is_none() && set("x-jwt-payload").is_none());
                    for h in ["x-jwt-sub", "x-jwt-payload"] {
                        assert!(ok.headers_to_remove.iter().any(|r| r == h), "anonymous allow keeps {h}");
                    }
                }
                Err(reason) => panic!("allowed a request whose token extraction fails ({reason:?})"),
            }
        }
        HttpResponse::DeniedResponse(d) => {
            assert_ne!(status, 0, "a deny with an OK status");
            let code = d.status.as_ref().expect("a deny has an HTTP status").code;
            assert!(matches!(code, 401 | 403 | 503), "deny with HTTP {code}");
        }
        HttpResponse::ErrorResponse(_) => panic!("hopauth never sends error_response"),
    }
});

/// The route's policy (docs/configuration.md, "Per-route policy"), read independently:
/// a provider list must name the fixture's provider, and every required scope must be in
/// the token's `scope` (space list) or `scp` (string or array).
fn route_allows(view: &CheckView, claims: &serde_json::Value) -> Result<(), String> {
    if let Some(list) = view.context_extension("hopauth.providers").filter(|l| !l.trim().is_empty()) {
        if !list.split(',').any(|p| p.trim() == "fuzz") {
            return Err(format!("provider list {list:?}"));
        }
    }
    let mut have: Vec<&str> = Vec::new();
    for claim in ["scope", "scp"] {
        match claims.get(claim) {
            Some(serde_json::Value::String(s)) => have.extend(s.split_ascii_whitespace()),
            Some(serde_json::Value::Array(items)) => have.extend(items.iter().filter_map(|v| v.as_str())),
            _ => {}
        }
    }
    let required = view.context_extension("hopauth.require_scopes").unwrap_or_default();
    match required.split_ascii_whitespace().find(|want| !have.contains(want)) {
        Some(missing) => Err(format!("scope {missing:?} missing")),
        None => Ok(()),
    }
}

/// A CheckRequest carrying a token signed with the fixture's HS256 key over the fuzzed
/// header and claims; flags pick where the token goes and the route's extensions.
fn signed_request(rest: &[u8]) -> CheckRequest {
    let (flags, rest) = rest.split_first().map_or((0, rest), |(f, r)| (*f, r));
    let mut parts = rest.splitn(3, |b| *b == 0);
    let (header, claims, path) =
        (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let (_, hs) = signing_keys();
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let sig = hs.sign_raw(input.as_bytes()).expect("HMAC signs");
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
    let mut path = String::from_utf8_lossy(path).into_owned();
    let mut headers = std::collections::HashMap::new();
    let mut header_map = None;
    match flags & 3 {
        0 => drop(headers.insert("authorization".to_string(), format!("Bearer {token}"))),
        1 => {
            header_map = Some(HeaderMap {
                headers: vec![HeaderValue {
                    key: "Authorization".into(),
                    raw_value: format!("bearer {token}").into_bytes(),
                    ..Default::default()
                }],
            })
        }
        2 => drop(headers.insert("cookie".to_string(), format!("a=b; access_token={token}"))),
        _ => path = format!("{path}?access_token={token}"),
    }
    if flags & 4 != 0 {
        headers.insert("x-jwt-sub".into(), "forged".into());
    }
    let mut ext = std::collections::HashMap::new();
    if flags & 8 != 0 {
        ext.insert("hopauth.anonymous".to_string(), "allow".to_string());
    }
    if flags & 16 != 0 {
        ext.insert("hopauth.require_scopes".to_string(), "read".to_string());
    }
    if flags & 32 != 0 {
        ext.insert("hopauth.providers".to_string(), if flags & 64 != 0 { "fuzz" } else { "other" }.to_string());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest { method: "GET".into(), path, headers, header_map, ..Default::default() }),
                ..Default::default()
            }),
            context_extensions: ext,
            ..Default::default()
        }),
    }
}
