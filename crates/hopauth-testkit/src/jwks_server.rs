//! A JWKS endpoint (and OIDC discovery document) for tests: content that changes, counted
//! hits, conditional requests (ETag / Last-Modified) and misbehaviour on cue.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use serde_json::{json, Value};

use crate::{jwks_of, now};

/// How a [`JwksServer`] misbehaves when told to (SECURITY faults F3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehave {
    /// A 200 login page instead of JSON.
    Html,
    /// A 50 MB body, streamed without a length.
    Huge,
    /// `{"keys":[]}`.
    NoKeys,
    /// A 302 to `/elsewhere`, which serves other keys (counted by `elsewhere_hits`).
    Redirect,
    /// Answers after 30 s.
    Stall,
}

/// Which validators a [`JwksServer`] sends and honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// `ETag` and `Last-Modified` (the default); `If-None-Match` wins when both are sent.
    Both,
    ETagOnly,
    LastModifiedOnly,
    /// Neither: every fetch is a 200.
    None,
}

/// A JWKS endpoint (and OIDC discovery document) whose content can change and whose hits
/// are counted; it answers conditional requests (304s counted apart from 200s) and
/// misbehaves on cue.
#[derive(Clone)]
pub struct JwksServer {
    pub addr: SocketAddr,
    jwks: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    oks: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
    elsewhere_hits: Arc<AtomicUsize>,
    /// Unix second of the last `set`: the `Last-Modified` of the current document.
    modified_at: Arc<Mutex<i64>>,
    misbehave: Arc<Mutex<Option<Misbehave>>>,
    validation: Arc<Mutex<Validation>>,
    discovery_jwks_uri: Arc<Mutex<Option<String>>>,
}

impl JwksServer {
    pub async fn start(jwks: Value, issuer: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = JwksServer {
            addr,
            jwks: Arc::new(Mutex::new(jwks)),
            hits: Arc::new(AtomicUsize::new(0)),
            failing: Arc::new(AtomicBool::new(false)),
            oks: Arc::new(AtomicUsize::new(0)),
            not_modified: Arc::new(AtomicUsize::new(0)),
            elsewhere_hits: Arc::new(AtomicUsize::new(0)),
            modified_at: Arc::new(Mutex::new(now() - 60)),
            misbehave: Arc::new(Mutex::new(None)),
            validation: Arc::new(Mutex::new(Validation::Both)),
            discovery_jwks_uri: Arc::new(Mutex::new(None)),
        };
        let issuer = issuer.to_string();
        let app = Router::new()
            .route("/jwks.json", get(serve_jwks))
            .route(
                "/elsewhere",
                get(|State(s): State<JwksServer>| async move {
                    s.elsewhere_hits.fetch_add(1, Ordering::SeqCst);
                    Json(jwks_of(&[&SigningKey::generate(Alg::ES256, "es-1").unwrap()]))
                }),
            )
            .route(
                "/.well-known/openid-configuration",
                get(move |State(s): State<JwksServer>| async move {
                    let uri = s.discovery_jwks_uri.lock().unwrap().clone().unwrap_or_else(|| s.url());
                    Json(json!({ "issuer": issuer, "jwks_uri": uri }))
                }),
            )
            .with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn set(&self, jwks: Value) {
        *self.jwks.lock().unwrap() = jwks;
        // Last-Modified has one-second resolution: keep it strictly increasing, so a client
        // that validates by date never mistakes a new document for the one it holds.
        let mut at = self.modified_at.lock().unwrap();
        *at = (*at + 1).max(now());
    }

    /// Fetches answered 200 with the JWKS.
    pub fn oks(&self) -> usize {
        self.oks.load(Ordering::SeqCst)
    }

    /// Fetches answered 304 Not Modified.
    pub fn not_modified(&self) -> usize {
        self.not_modified.load(Ordering::SeqCst)
    }

    /// Requests that followed the redirect of [`Misbehave::Redirect`].
    pub fn elsewhere_hits(&self) -> usize {
        self.elsewhere_hits.load(Ordering::SeqCst)
    }

    /// Misbehaves from now on (`None`: behaves again).
    pub fn misbehave(&self, how: Option<Misbehave>) {
        *self.misbehave.lock().unwrap() = how;
    }

    pub fn set_validation(&self, v: Validation) {
        *self.validation.lock().unwrap() = v;
    }

    /// The `jwks_uri` the discovery document names (default: this server's `url()`).
    pub fn set_discovery_jwks_uri(&self, uri: &str) {
        *self.discovery_jwks_uri.lock().unwrap() = Some(uri.to_string());
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

async fn serve_jwks(State(s): State<JwksServer>, request: HeaderMap) -> axum::response::Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    if s.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
    }
    let misbehave = *s.misbehave.lock().unwrap();
    match misbehave {
        None => {}
        Some(Misbehave::Html) => {
            return axum::response::Html("<html><body>Please log in</body></html>").into_response()
        }
        Some(Misbehave::Huge) => {
            let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
            let stream = futures_util::stream::iter((0..50).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
            return axum::body::Body::from_stream(stream).into_response();
        }
        Some(Misbehave::NoKeys) => return Json(json!({"keys": []})).into_response(),
        Some(Misbehave::Redirect) => return axum::response::Redirect::to("/elsewhere").into_response(),
        Some(Misbehave::Stall) => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return Json(s.jwks.lock().unwrap().clone()).into_response();
        }
    }
    let body = s.jwks.lock().unwrap().to_string();
    let etag = format!("\"{:016x}\"", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        h.finish()
    });
    let modified = httpdate(*s.modified_at.lock().unwrap());
    let validation = *s.validation.lock().unwrap();
    let (send_etag, send_date) = match validation {
        Validation::Both => (true, true),
        Validation::ETagOnly => (true, false),
        Validation::LastModifiedOnly => (false, true),
        Validation::None => (false, false),
    };
    let header = |name: &str| request.get(name).and_then(|v| v.to_str().ok());
    // RFC 9110 §13.1.3: If-None-Match, when present, decides; If-Modified-Since otherwise.
    let unchanged = match header("if-none-match") {
        Some(tags) if send_etag => tags.split(',').any(|t| t.trim() == etag),
        Some(_) => false,
        None => send_date && header("if-modified-since") == Some(modified.as_str()),
    };
    let mut headers = HeaderMap::new();
    if send_etag {
        headers.insert("etag", etag.parse().unwrap());
    }
    if send_date {
        headers.insert("last-modified", modified.parse().unwrap());
    }
    if unchanged {
        s.not_modified.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    s.oks.fetch_add(1, Ordering::SeqCst);
    headers.insert("content-type", "application/json".parse().unwrap());
    (headers, body).into_response()
}

/// An IMF-fixdate (RFC 9110 §5.6.7) for a Unix second.
pub fn httpdate(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (days, secs) = (unix.div_euclid(86400), unix.rem_euclid(86400));
    // Civil from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
