//! The HTTP side port: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz` (every
//! provider has keys and the revocation store is synced), `POST /admin/revoke`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::authorizer::Authorizer;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct HttpState {
    pub authorizer: Arc<Authorizer>,
    pub metrics: Metrics,
    /// Bearer token for `/admin/*`; `None` turns the admin API off (every call 401).
    pub admin_token: Option<Arc<str>>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/admin/revoke", post(revoke))
        .with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

async fn readyz(State(s): State<HttpState>) -> Response {
    let providers: serde_json::Map<String, serde_json::Value> =
        s.authorizer.verifier().providers().iter().map(|p| (p.name.to_string(), json!(p.keys.usable()))).collect();
    let store = s.authorizer.revocation();
    let ready = s.authorizer.ready();
    let body = json!({
        "ready": ready,
        "providers": providers,
        "revocation": { "backend": store.backend(), "ready": store.ready() },
    });
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// `{"jti","exp"}` or `{"iss","sub","before"}`.
#[derive(Debug, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum RevokeRequest {
    Jti { jti: String, exp: i64 },
    Subject { iss: String, sub: String, before: Option<i64> },
}

fn authorized(headers: &HeaderMap, expected: Option<&str>) -> bool {
    let Some(expected) = expected else { return false };
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some(presented) = value.get(..7).filter(|p| p.eq_ignore_ascii_case("bearer ")).map(|_| &value[7..]) else {
        return false;
    };
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

fn error(code: StatusCode, error: &str, description: impl Into<String>) -> Response {
    (code, Json(json!({ "error": error, "error_description": description.into() }))).into_response()
}

async fn revoke(State(s): State<HttpState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !authorized(&headers, s.admin_token.as_deref()) {
        let mut r = error(StatusCode::UNAUTHORIZED, "invalid_token", "admin bearer token required");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer realm=\"hopauth-admin\"".parse().expect("static"));
        return r;
    }
    let request: RevokeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "body must be {\"jti\":…,\"exp\":…} or {\"iss\":…,\"sub\":…,\"before\":…}",
            )
        }
    };
    let store = s.authorizer.revocation();
    let (kind, result, echo) = match &request {
        RevokeRequest::Jti { jti, exp } => {
            ("jti", store.revoke_jti(jti, *exp).await, json!({"revoked": "jti", "jti": jti, "exp": exp}))
        }
        RevokeRequest::Subject { iss, sub, before } => {
            let before = before.unwrap_or_else(crate::verify::unix_now);
            (
                "subject",
                store.revoke_subject(iss, sub, before).await,
                json!({"revoked": "subject", "iss": iss, "sub": sub, "before": before}),
            )
        }
    };
    s.metrics.record_admin_revocation(kind, result.is_ok());
    match result {
        Ok(()) => {
            tracing::info!(kind, backend = store.backend(), "revocation written");
            (StatusCode::OK, Json(echo)).into_response()
        }
        Err(crate::revocation::RevocationError::Invalid(why)) => error(StatusCode::BAD_REQUEST, "invalid_request", why),
        Err(e) => {
            tracing::warn!(error = %e, "revocation write failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_is_compared_exactly() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, Some("secret")));
        h.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        assert!(authorized(&h, Some("secret")));
        assert!(!authorized(&h, Some("secret2")));
        assert!(!authorized(&h, None));
        h.insert(header::AUTHORIZATION, "bearer secre".parse().unwrap());
        assert!(!authorized(&h, Some("secret")));
    }
}
