//! The issuer's HTTP adapters. Public port: `POST /token` (RFC 6749), `POST /revoke`
//! (RFC 7009), `POST /logout`, `GET /.well-known/jwks.json`, `GET
//! /.well-known/openid-configuration`. Admin port: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::json;

use super::tokens::{Issued, OAuthError, TokenService};

/// Form bodies are a few hundred bytes; anything much larger is not a token request.
const MAX_BODY: usize = 16 * 1024;

#[derive(Clone)]
pub struct IssuerState {
    pub service: Arc<TokenService>,
    pub jwks_max_age: Duration,
    /// Set by the readiness poller: the refresh store answered its last ping.
    pub store_ready: Arc<AtomicBool>,
}

pub fn public_router(state: IssuerState) -> Router {
    Router::new()
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .route("/logout", post(logout))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(close_after_unread_body))
        .with_state(state)
}

/// A body over [`MAX_BODY`] is refused unread, and hyper closes a connection that still
/// holds unread request bytes once the answer is written. Saying `Connection: close` in
/// that answer keeps a client from pooling the connection and losing its next request to
/// the close (seen as `IncompleteMessage` by reqwest).
async fn close_after_unread_body(req: Request, next: Next) -> Response {
    let too_large = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY as u64);
    let mut r = next.run(req).await;
    if too_large {
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

pub fn admin_router(state: IssuerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

type Params = Vec<(String, String)>;

/// RFC 6749 §3.1: parameters sent twice are an error; unknown ones are ignored.
fn param<'a>(params: &'a Params, name: &str) -> Result<Option<&'a str>, OAuthError> {
    let mut found = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let first = found.next();
    if found.next().is_some() {
        return Err(OAuthError::InvalidRequest(format!("parameter `{name}` is repeated")));
    }
    Ok(first)
}

fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, OAuthError> {
    param(params, name)?
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::InvalidRequest(format!("parameter `{name}` is required")))
}

fn form(body: Result<Form<Params>, FormRejection>) -> Result<Params, OAuthError> {
    body.map(|Form(p)| p).map_err(|e| {
        tracing::debug!(error = %e, "malformed form body");
        OAuthError::InvalidRequest("the body must be application/x-www-form-urlencoded".into())
    })
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// RFC 6749 §5.2 error body; `invalid_token` (RFC 6750) is 401 with a challenge, `slow_down`
/// is 429 with `retry-after`, `temporarily_unavailable` 503, everything else 400.
fn error_response(e: &OAuthError) -> Response {
    let status = match e {
        OAuthError::InvalidToken => StatusCode::UNAUTHORIZED,
        OAuthError::SlowDown { .. } => StatusCode::TOO_MANY_REQUESTS,
        OAuthError::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut r = (status, Json(json!({ "error": e.as_str(), "error_description": e.to_string() }))).into_response();
    match e {
        OAuthError::SlowDown { retry_after } => {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        OAuthError::InvalidToken => {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hopauth-issuer\", error=\"invalid_token\""),
            );
        }
        OAuthError::TemporarilyUnavailable => {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    no_store(r)
}

fn issued_response(i: Issued) -> Response {
    no_store(
        Json(json!({
            "access_token": i.access_token,
            "token_type": "Bearer",
            "expires_in": i.expires_in,
            "refresh_token": i.refresh_token,
            "scope": i.scope,
        }))
        .into_response(),
    )
}

async fn token(
    State(s): State<IssuerState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Form<Params>, FormRejection>,
) -> Response {
    let start = Instant::now();
    let mut grant: &'static str = "unknown";
    let result = async {
        let params = form(body)?;
        match required(&params, "grant_type")? {
            "password" => {
                grant = "password";
                let (user, pw) = (required(&params, "username")?, required(&params, "password")?);
                s.service.password_grant(user, pw, param(&params, "scope")?, peer.ip()).await
            }
            "refresh_token" => {
                grant = "refresh_token";
                s.service.refresh_grant(required(&params, "refresh_token")?, param(&params, "scope")?, peer.ip()).await
            }
            _ => Err(OAuthError::UnsupportedGrantType),
        }
    }
    .await;
    let took = start.elapsed();
    match result {
        Ok(issued) => {
            s.service.metrics().record_token(grant, "issued", took);
            issued_response(issued)
        }
        Err(e) => {
            s.service.metrics().record_token(grant, e.as_str(), took);
            error_response(&e)
        }
    }
}

async fn revoke(
    State(s): State<IssuerState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Form<Params>, FormRejection>,
) -> Response {
    let result = async {
        let params = form(body)?;
        // token_type_hint is optional and only a hint (RFC 7009 §2.1): both kinds are tried.
        let _ = param(&params, "token_type_hint")?;
        s.service.revoke(required(&params, "token")?, peer.ip()).await
    }
    .await;
    match result {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => error_response(&e),
    }
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| OAuthError::InvalidToken)?;
    match value.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => Ok(Some(value[7..].trim())),
        _ => Err(OAuthError::InvalidToken),
    }
}

async fn logout(
    State(s): State<IssuerState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Form<Params>, FormRejection>,
) -> Response {
    let result = async {
        // A logout may carry no body at all: only the bearer token.
        let params = match body {
            Err(FormRejection::InvalidFormContentType(_)) if !headers.contains_key(header::CONTENT_TYPE) => Vec::new(),
            other => form(other)?,
        };
        s.service.logout(bearer(&headers)?, param(&params, "refresh_token")?, peer.ip()).await
    }
    .await;
    match result {
        Ok(out) => no_store(
            Json(json!({ "revoked": { "access_tokens": out.access_tokens, "sessions": out.sessions } }))
                .into_response(),
        ),
        Err(e) => error_response(&e),
    }
}

async fn jwks(State(s): State<IssuerState>) -> Response {
    let keys = s.service.keys().current();
    let cache = format!("public, max-age={}", s.jwks_max_age.as_secs());
    ([(header::CACHE_CONTROL, cache)], Json(keys.jwks.clone())).into_response()
}

async fn discovery(State(s): State<IssuerState>) -> Response {
    let iss = s.service.issuer();
    let algs: Vec<&str> = {
        let keys = s.service.keys().current();
        let mut a: Vec<&str> = keys.entries.iter().map(|e| e.alg.as_str()).collect();
        a.sort();
        a.dedup();
        a
    };
    Json(json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "token_endpoint": format!("{iss}/token"),
        "revocation_endpoint": format!("{iss}/revoke"),
        "end_session_endpoint": format!("{iss}/logout"),
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "id_token_signing_alg_values_supported": algs,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "roles", "sid"],
    }))
    .into_response()
}

async fn metrics(State(s): State<IssuerState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.service.metrics().render()).into_response()
}

async fn readyz(State(s): State<IssuerState>) -> Response {
    let store = s.store_ready.load(Ordering::Acquire);
    let keys = s.service.keys().current();
    let body = json!({
        "ready": store,
        "store": { "backend": s.service.refresh_store().backend(), "ready": store },
        "keys": { "active": keys.active.kid, "published": keys.entries.len() },
    });
    let code = if store { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_invalid_requests() {
        let p: Params = vec![("a".into(), "1".into()), ("a".into(), "2".into()), ("b".into(), "".into())];
        assert_eq!(param(&p, "a").unwrap_err().as_str(), "invalid_request");
        assert_eq!(param(&p, "c").unwrap(), None);
        assert!(required(&p, "b").is_err(), "empty is missing");
    }

    #[test]
    fn errors_map_to_rfc_statuses() {
        let r = error_response(&OAuthError::SlowDown { retry_after: Duration::from_millis(1500) });
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert_eq!(error_response(&OAuthError::UnsupportedGrantType).status(), 400);
        assert_eq!(error_response(&OAuthError::InvalidToken).status(), 401);
        assert_eq!(error_response(&OAuthError::InvalidGrant("x")).headers()[header::CACHE_CONTROL], "no-store");
    }
}
