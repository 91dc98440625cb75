//! The HTTP side port: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz` (every
//! provider has keys and the revocation store is synced), `POST /admin/revoke`, and listing
//! and undoing revocations (`revocations`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

mod revocations;

use hopauth_core::clock::unix_now;
use hopauth_core::revocation::RevocationError;

use hopauth_core::authorizer::Authorizer;
use hopauth_core::observe::Observer;
use hopauth_core::render::Renderer;

use crate::live::Live;
use crate::metrics::{AdminRefusal, Metrics, RevocationKind};
use crate::render::CheckResponses;

/// What the side port serves from. `R` is the renderer of the core's verified-token cache
/// (the sidecar's ext_authz responses, or the Envoy module's header edits); the side port
/// reads nothing it renders.
pub struct HttpState<R: Renderer = CheckResponses> {
    /// The core serving now (and the admin token of its config); a reload swaps it.
    pub live: Live<R>,
    pub metrics: Metrics,
    /// Failed admin authentications, limited for every caller at once.
    pub admin_failures: Arc<FailureBudget>,
}

impl<R: Renderer> Clone for HttpState<R> {
    fn clone(&self) -> Self {
        HttpState {
            live: self.live.clone(),
            metrics: self.metrics.clone(),
            admin_failures: self.admin_failures.clone(),
        }
    }
}

/// Failed admin authentications allowed in a burst; past it every admin call gets 429 until
/// the budget refills, so the token cannot be guessed at speed (nor its answers timed).
pub const ADMIN_FAILURE_BURST: u32 = 10;
/// One failed attempt is given back per this interval.
pub const ADMIN_FAILURE_REFILL: Duration = Duration::from_secs(1);

/// A token bucket of failed attempts, shared by every caller.
pub struct FailureBudget {
    state: Mutex<BudgetState>,
    burst: u32,
    refill: Duration,
}

struct BudgetState {
    attempts: f64,
    updated: Instant,
    /// Set when the last attempt is spent: closed for a whole refill interval from then, so
    /// the answer to the next call does not depend on a fraction of an attempt.
    closed_until: Option<Instant>,
}

impl Default for FailureBudget {
    fn default() -> Self {
        Self::new(ADMIN_FAILURE_BURST, ADMIN_FAILURE_REFILL)
    }
}

impl FailureBudget {
    pub fn new(burst: u32, refill: Duration) -> Self {
        let state = BudgetState { attempts: f64::from(burst), updated: Instant::now(), closed_until: None };
        FailureBudget { state: Mutex::new(state), burst, refill }
    }

    fn refilled(&self, state: &mut BudgetState, now: Instant) {
        let earned = now.saturating_duration_since(state.updated).as_secs_f64() / self.refill.as_secs_f64();
        state.attempts = (state.attempts + earned).min(f64::from(self.burst));
        state.updated = now.max(state.updated);
    }

    /// Whether attempts are allowed at all at `now`; `Err` carries the seconds until one is.
    pub fn open(&self, now: Instant) -> Result<(), u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refilled(&mut state, now);
        match state.closed_until {
            Some(until) if until > now => Err(until.duration_since(now).as_secs_f64().ceil().max(1.0) as u64),
            _ if state.attempts >= 1.0 => Ok(()),
            _ => Err(((1.0 - state.attempts) * self.refill.as_secs_f64()).ceil().max(1.0) as u64),
        }
    }

    /// Spends one failed attempt at `now`.
    pub fn spend(&self, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refilled(&mut state, now);
        state.attempts = (state.attempts - 1.0).max(0.0);
        if state.attempts < 1.0 {
            state.closed_until = Some(now + self.refill);
        }
    }
}

/// Every route on one listener (no `admin_listen`).
pub fn router<R: Renderer>(state: HttpState<R>) -> Router {
    public_router(state.clone()).merge(admin_router(state))
}

/// `/metrics`, `/healthz`, `/readyz`: what probes and Prometheus reach on `http_listen`.
pub fn public_router<R: Renderer>(state: HttpState<R>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<R>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<R>))
        .with_state(state)
}

/// `/admin/*`: on `admin_listen` when set, so the scraped port cannot revoke.
pub fn admin_router<R: Renderer>(state: HttpState<R>) -> Router {
    Router::new()
        .route("/admin/revoke", post(revoke::<R>))
        .route("/admin/unrevoke", post(revocations::unrevoke::<R>))
        .route("/admin/revocations", get(revocations::list::<R>))
        .with_state(state)
}

async fn metrics<R: Renderer>(State(s): State<HttpState<R>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

async fn readyz<R: Renderer>(State(s): State<HttpState<R>>) -> Response {
    let authorizer = s.live.authorizer();
    let providers: serde_json::Map<String, serde_json::Value> =
        authorizer.verifier().providers().iter().map(|p| (p.name.to_string(), json!(p.keys.usable()))).collect();
    let store = authorizer.revocation();
    let ready = authorizer.ready();
    let body = json!({
        "ready": ready,
        "providers": providers,
        "revocation": { "backend": store.backend(), "ready": store.ready() },
    });
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// `{"jti","exp"}` or `{"iss","sub","before"}`.
#[derive(Debug)]
enum RevokeRequest {
    Jti { jti: String, exp: i64 },
    Subject { iss: String, sub: String, before: Option<i64> },
}

/// The body as sent: one flat shape, so a bad field can be named (an untagged enum's
/// error only says "no variant matched").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    jti: Option<String>,
    exp: Option<i64>,
    iss: Option<String>,
    sub: Option<String>,
    before: Option<i64>,
}

impl RevokeBody {
    /// The body, or what is wrong with its JSON, naming the field.
    fn read(body: &[u8]) -> Result<Self, String> {
        let de = &mut serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(de).map_err(|e| match e.path().to_string() {
            p if p == "." => e.into_inner().to_string(),
            p => format!("{p}: {}", e.into_inner()),
        })
    }
}

impl RevokeRequest {
    /// The request, or what is wrong with the body, naming the field.
    fn parse(body: &[u8]) -> Result<Self, String> {
        match RevokeBody::read(body)? {
            RevokeBody { jti: Some(jti), exp: Some(exp), iss: None, sub: None, before: None } => {
                Ok(RevokeRequest::Jti { jti, exp })
            }
            RevokeBody { jti: Some(_), exp: None, .. } => Err("exp: required with jti".into()),
            RevokeBody { jti: Some(_), .. } => Err("jti: give either jti+exp or iss+sub(+before)".into()),
            RevokeBody { iss: Some(iss), sub: Some(sub), before, exp: None, .. } => {
                Ok(RevokeRequest::Subject { iss, sub, before })
            }
            RevokeBody { exp: Some(_), .. } => Err("exp: only with jti".into()),
            RevokeBody { iss: None, sub: Some(_), .. } => Err("iss: required with sub".into()),
            RevokeBody { iss: Some(_), .. } => Err("sub: required with iss".into()),
            _ => Err("give {\"jti\":…,\"exp\":…} or {\"iss\":…,\"sub\":…,\"before\":…}".into()),
        }
    }
}

/// Whether the request carries the admin token. Digests are compared, in constant time, so
/// neither the content nor the length of the token leaks through timing.
fn authorized(headers: &HeaderMap, expected: Option<&str>) -> bool {
    let Some(expected) = expected else { return false };
    let Some(value) = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) else { return false };
    let Some(presented) = value.get(..7).filter(|p| p.eq_ignore_ascii_case(b"bearer ")).map(|_| &value[7..]) else {
        return false;
    };
    Sha256::digest(presented).ct_eq(&Sha256::digest(expected.as_bytes())).into()
}

fn error(code: StatusCode, error: &str, description: impl Into<String>) -> Response {
    (code, Json(json!({ "error": error, "error_description": description.into() }))).into_response()
}

/// Why an admin call is refused, if it is: 429 while failed attempts are throttled, 401
/// without the right token.
fn admin_refusal<R: Renderer>(s: &HttpState<R>, headers: &HeaderMap) -> Option<Response> {
    let now = Instant::now();
    if let Err(retry_after) = s.admin_failures.open(now) {
        s.metrics.admin().refused(AdminRefusal::Throttled);
        let mut r =
            error(StatusCode::TOO_MANY_REQUESTS, "slow_down", "too many failed admin authentications; retry later");
        r.headers_mut().insert(header::RETRY_AFTER, retry_after.into());
        return Some(r);
    }
    if !authorized(headers, s.live.current().admin_token.as_deref()) {
        s.admin_failures.spend(now);
        s.metrics.admin().refused(AdminRefusal::WrongToken);
        tracing::warn!("admin call refused: missing or wrong admin token");
        let mut r = error(StatusCode::UNAUTHORIZED, "invalid_token", "admin bearer token required");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer realm=\"hopauth-admin\"".parse().expect("static"));
        return Some(r);
    }
    None
}

/// The default `before` of a subject revocation: now by hopauth's clock, plus the skew the
/// token's issuer is allowed (its `leeway`; the largest of all providers for an unknown
/// issuer). `iat` comes from the issuer's clock: a token it issued a moment ago may carry an
/// `iat` ahead of ours, and "revoke everything until now" must cover it.
fn default_before<R: Renderer, O: Observer>(authorizer: &Authorizer<R, O>, iss: &str, now: i64) -> i64 {
    let providers = authorizer.verifier().providers();
    let skew = match providers.iter().find(|p| &*p.issuer == iss) {
        Some(p) => p.leeway_secs,
        None => providers.iter().map(|p| p.leeway_secs).max().unwrap_or(0),
    };
    now + skew
}

/// Who made an admin call, for the audit line: the peer address (the admin API has one
/// token, so the address is the "who"), and the request id and user agent when sent.
/// Never the token. Header values are bounded and logged escaped (`?`).
struct Caller {
    peer: Option<std::net::SocketAddr>,
    request_id: Option<String>,
    user_agent: Option<String>,
}

impl Caller {
    fn of(extensions: &axum::http::Extensions, headers: &HeaderMap) -> Self {
        let text = |name: &str| {
            let v = headers.get(name)?.as_bytes();
            Some(String::from_utf8_lossy(&v[..v.len().min(AUDIT_HEADER_MAX)]).into_owned())
        };
        Caller {
            peer: extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0),
            request_id: text("x-request-id"),
            user_agent: text("user-agent"),
        }
    }
}

/// Longest header value an audit line repeats.
const AUDIT_HEADER_MAX: usize = 128;

async fn revoke<R: Renderer>(
    State(s): State<HttpState<R>>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let caller = Caller::of(&extensions, &headers);
    if let Some(refused) = admin_refusal(&s, &headers) {
        return refused;
    }
    let request = match RevokeRequest::parse(&body) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_request", why),
    };
    let serving = s.live.current();
    let authorizer = serving.authorizer();
    // A revocation for an issuer no provider trusts is written (it may be configured
    // later), but it protects nothing now: say so.
    let warning = match &request {
        RevokeRequest::Subject { iss, .. } if !authorizer.verifier().providers().iter().any(|p| &*p.issuer == iss) => {
            tracing::warn!(iss = ?iss, client = ?caller.peer, "admin: revocation for an issuer no provider has");
            Some(format!("no provider has issuer {iss:?}: this revocation matches no token hopauth accepts now"))
        }
        _ => None,
    };
    let store = authorizer.revocation();
    let (kind, result, echo) = match &request {
        RevokeRequest::Jti { jti, exp } => {
            (RevocationKind::Jti, store.revoke_jti(jti, *exp).await, json!({"revoked": "jti", "jti": jti, "exp": exp}))
        }
        RevokeRequest::Subject { iss, sub, before } => {
            let before = before.unwrap_or_else(|| default_before(authorizer, iss, unix_now()));
            (
                RevocationKind::Subject,
                store.revoke_subject(iss, sub, before).await,
                json!({"revoked": "subject", "iss": iss, "sub": sub, "before": before}),
            )
        }
    };
    if let Err(refused) = write_outcome(&s, Verb::Revoke, kind, store.backend(), &caller, &echo, result.map(|()| true))
    {
        return *refused;
    }
    let mut echo = echo;
    if let Some(w) = warning {
        echo["warning"] = json!(w);
    }
    (StatusCode::OK, Json(echo)).into_response()
}

/// The admin call that writes to the revocation store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Revoke,
    Unrevoke,
}

/// The shared tail of `/admin/revoke` and `/admin/unrevoke`: counts the outcome, writes the
/// audit line (who did what to which revocation), and maps a store error to its answer
/// (`Invalid` → 400, any other → 503; boxed, it is large). `Ok(found)`: the store did it,
/// and had the entry.
fn write_outcome<R: Renderer>(
    s: &HttpState<R>,
    verb: Verb,
    kind: RevocationKind,
    backend: &'static str,
    caller: &Caller,
    echo: &serde_json::Value,
    result: Result<bool, RevocationError>,
) -> Result<bool, Box<Response>> {
    let admin = s.metrics.admin();
    match verb {
        Verb::Revoke => admin.revocation(kind, result.is_ok()),
        Verb::Unrevoke => admin.unrevocation(kind, result.as_ref().ok().copied()),
    }
    let (done, failed) = match verb {
        Verb::Revoke => ("admin: revocation written", "admin: revocation write failed"),
        Verb::Unrevoke => ("admin: revocation undone", "admin: undoing a revocation failed"),
    };
    match result {
        Ok(found) => {
            tracing::info!(
                kind = kind.as_str(),
                backend,
                revocation = %echo,
                found = (verb == Verb::Unrevoke).then_some(found),
                client = ?caller.peer,
                request_id = ?caller.request_id,
                user_agent = ?caller.user_agent,
                "{done}"
            );
            Ok(found)
        }
        Err(RevocationError::Invalid(why)) => Err(Box::new(error(StatusCode::BAD_REQUEST, "invalid_request", why))),
        Err(e) => {
            tracing::warn!(error = %e, revocation = %echo, client = ?caller.peer, "{failed}");
            Err(Box::new(error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", e.to_string())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_attempts_are_budgeted_and_refill() {
        let b = FailureBudget::new(3, Duration::from_secs(2));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.open(t0).is_ok());
            b.spend(t0);
        }
        assert_eq!(b.open(t0), Err(2), "the budget is spent: throttled, retry when one attempt is back");
        assert_eq!(b.open(t0 + Duration::from_secs(1)), Err(1));
        assert!(b.open(t0 + Duration::from_secs(2)).is_ok(), "one attempt came back");
        b.spend(t0 + Duration::from_secs(2));
        assert!(b.open(t0 + Duration::from_secs(2)).is_err());
        assert!(b.open(t0 + Duration::from_secs(60)).is_ok(), "refills up to the burst");
    }

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
