//! `GET /admin/revocations` lists the revocations this sidecar enforces (its local view,
//! which with Redis mirrors every `hopauth:revoked:*` key), a bounded page at a time;
//! `POST /admin/unrevoke` undoes one through the configured backend (with Redis a DEL, which
//! every sidecar's sync applies). Both take the admin token and its failure budget; an undo
//! writes an audit line saying who undid what.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use hopauth_core::render::Renderer;
use hopauth_core::revocation::listing::MAX_PAGE;
use hopauth_core::revocation::{ListKey, Listed};
use serde_json::{json, Value};

use super::{admin_refusal, error, write_outcome, Caller, HttpState, RevokeBody, Verb};
use crate::metrics::RevocationKind;

/// Entries per page when `limit` is not given.
const DEFAULT_PAGE: usize = 100;

/// `?limit=N&after=CURSOR`: entries in one order (jti entries by jti, then subjects by
/// issuer and subject), `next` the cursor of the following page (null on the last).
pub(super) async fn list<R: Renderer>(
    State(s): State<HttpState<R>>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let caller = Caller::of(&extensions, &headers);
    if let Some(refused) = admin_refusal(&s, &headers) {
        return refused;
    }
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let (limit, after) = match page_query(&query) {
        Ok(q) => q,
        Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_request", why),
    };
    let authorizer = s.live.authorizer();
    let store = authorizer.revocation();
    let page = store.list(after.as_ref(), limit);
    let next = page.more.then(|| page.entries.last().map(|e| cursor(&e.key))).flatten();
    tracing::info!(entries = page.entries.len(), client = ?caller.peer, request_id = ?caller.request_id,
        "admin: revocations listed");
    let entries: Vec<Value> = page.entries.iter().map(entry).collect();
    Json(json!({ "backend": store.backend(), "revocations": entries, "next": next })).into_response()
}

fn page_query(query: &HashMap<String, String>) -> Result<(usize, Option<ListKey>), String> {
    if let Some(unknown) = query.keys().find(|k| !matches!(k.as_str(), "limit" | "after")) {
        return Err(format!("{unknown}: unknown parameter (expected limit, after)"));
    }
    let limit = match query.get("limit") {
        None => DEFAULT_PAGE,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return Err(format!("limit: must be a number from 1 to {MAX_PAGE}")),
        },
    };
    let after = query.get("after").map(|c| parse_cursor(c).ok_or("after: not a cursor this API gave")).transpose()?;
    Ok((limit, after))
}

fn entry(e: &Listed) -> Value {
    match &e.key {
        ListKey::Jti(jti) => json!({ "kind": "jti", "jti": jti, "until": e.until }),
        ListKey::Subject { iss, sub } => {
            json!({ "kind": "subject", "iss": iss, "sub": sub, "before": e.before, "until": e.until })
        }
    }
}

/// The key as an opaque cursor: base64url of `["jti", jti]` or `["subject", iss, sub]`.
fn cursor(key: &ListKey) -> String {
    let parts = match key {
        ListKey::Jti(jti) => json!(["jti", jti]),
        ListKey::Subject { iss, sub } => json!(["subject", iss, sub]),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(parts.to_string())
}

fn parse_cursor(text: &str) -> Option<ListKey> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
    let parts: Vec<String> = serde_json::from_slice(&bytes).ok()?;
    match parts.as_slice() {
        [kind, jti] if kind == "jti" => Some(ListKey::Jti(jti.clone())),
        [kind, iss, sub] if kind == "subject" => Some(ListKey::Subject { iss: iss.clone(), sub: sub.clone() }),
        _ => None,
    }
}

/// The body `/admin/revoke` takes (`exp` and `before` are accepted and do not matter: the
/// whole entry goes), so the revoking call can be replayed to undo it.
#[derive(Debug)]
enum Undo {
    Jti(String),
    Subject { iss: String, sub: String },
}

fn parse_undo(body: &[u8]) -> Result<Undo, String> {
    match RevokeBody::read(body)? {
        RevokeBody { jti: Some(jti), iss: None, sub: None, before: None, .. } => Ok(Undo::Jti(jti)),
        RevokeBody { jti: Some(_), .. } => Err("jti: give either jti or iss+sub".into()),
        RevokeBody { iss: Some(iss), sub: Some(sub), exp: None, .. } => Ok(Undo::Subject { iss, sub }),
        RevokeBody { exp: Some(_), .. } => Err("exp: only with jti".into()),
        RevokeBody { iss: None, sub: Some(_), .. } => Err("iss: required with sub".into()),
        RevokeBody { iss: Some(_), .. } => Err("sub: required with iss".into()),
        _ => Err("give {\"jti\":…} or {\"iss\":…,\"sub\":…}".into()),
    }
}

/// 200 when the store had the revocation, 404 when it did not; either way none is left.
pub(super) async fn unrevoke<R: Renderer>(
    State(s): State<HttpState<R>>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let caller = Caller::of(&extensions, &headers);
    if let Some(refused) = admin_refusal(&s, &headers) {
        return refused;
    }
    let undo = match parse_undo(&body) {
        Ok(u) => u,
        Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_request", why),
    };
    let authorizer = s.live.authorizer();
    let store = authorizer.revocation();
    let (kind, result, echo) = match &undo {
        Undo::Jti(jti) => (RevocationKind::Jti, store.unrevoke_jti(jti).await, json!({"unrevoked": "jti", "jti": jti})),
        Undo::Subject { iss, sub } => (
            RevocationKind::Subject,
            store.unrevoke_subject(iss, sub).await,
            json!({"unrevoked": "subject", "iss": iss, "sub": sub}),
        ),
    };
    match write_outcome(&s, Verb::Unrevoke, kind, store.backend(), &caller, &echo, result) {
        Ok(true) => (StatusCode::OK, Json(echo)).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "not_found", format!("no such revocation: {echo}")),
        Err(refused) => *refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        for key in [ListKey::Jti("a|b".into()), ListKey::Subject { iss: "https://i".into(), sub: "x\"y".into() }] {
            assert_eq!(parse_cursor(&cursor(&key)), Some(key));
        }
        assert_eq!(parse_cursor("bm9wZQ"), None);
        assert_eq!(parse_cursor("!!"), None);
        let q =
            |pairs: &[(&str, &str)]| page_query(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        assert_eq!(q(&[]).unwrap().0, DEFAULT_PAGE);
        assert!(q(&[("limit", "0")]).unwrap_err().starts_with("limit:"));
        assert!(q(&[("limit", "1001")]).unwrap_err().starts_with("limit:"));
        assert!(q(&[("after", "zz")]).unwrap_err().starts_with("after:"));
        assert!(q(&[("offset", "1")]).unwrap_err().starts_with("offset:"));
    }

    #[test]
    fn undo_takes_the_revoke_bodies() {
        assert!(matches!(parse_undo(br#"{"jti":"j","exp":5}"#), Ok(Undo::Jti(j)) if j == "j"));
        assert!(matches!(parse_undo(br#"{"iss":"i","sub":"s","before":5}"#), Ok(Undo::Subject { .. })));
        assert!(parse_undo(br#"{"sub":"s"}"#).unwrap_err().starts_with("iss:"));
        assert!(parse_undo(br#"{"jti":"j","sub":"s"}"#).unwrap_err().starts_with("jti:"));
        assert!(parse_undo(br#"{"jtl":"j"}"#).unwrap_err().contains("jtl"));
    }
}
