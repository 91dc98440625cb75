//! Fetching a JWKS (or an OIDC discovery document) over HTTP(S): bounded in size and time,
//! no redirects, no proxy, conditional requests (`ETag`, `Last-Modified`), and
//! `Cache-Control: max-age` read for the refresh schedule.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} sent more than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("discovery document at {url} is unusable: {why}")]
    Discovery { url: String, why: String },
}

/// A fetched body, the server's `max-age`, if any, and its validators for the next
/// conditional request.
#[derive(Debug)]
pub struct Fetched {
    pub body: Bytes,
    pub max_age: Option<Duration>,
    pub validators: Validators,
}

/// What a document's server said identifies this version of it (RFC 9110 §8.8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    fn from_headers(h: &reqwest::header::HeaderMap) -> Self {
        let text = |name| h.get(name).and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok()).map(str::to_owned);
        Validators { etag: text(reqwest::header::ETAG), last_modified: text(reqwest::header::LAST_MODIFIED) }
    }

    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// The answer to a conditional fetch.
#[derive(Debug)]
pub enum Conditional {
    /// A new document (HTTP 200).
    Modified(Fetched),
    /// HTTP 304: the document we hold is current; `max_age` from the 304's headers.
    NotModified { max_age: Option<Duration> },
}

/// One HTTP client for every provider: rustls, no redirects, and no proxy: reqwest reads
/// `HTTP(S)_PROXY`/`ALL_PROXY` from the environment unless told not to, and a proxy between
/// hopauth and its IdP could hand it any key it likes.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hopauth/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a default rustls client always builds")
}

/// GETs `url`: a 2xx body of at most `limit` bytes within `timeout`; anything else is an
/// error.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    limit: usize,
) -> Result<Fetched, FetchError> {
    match fetch_conditional(client, url, timeout, limit, &Validators::default()).await? {
        Conditional::Modified(fetched) => Ok(fetched),
        // Only an unconditional request can get here: a 304 to it is a broken server.
        Conditional::NotModified { .. } => Err(FetchError::Status { url: url.to_string(), status: 304 }),
    }
}

/// Like [`fetch`], sending `If-None-Match`/`If-Modified-Since` from `known` (the validators
/// of the document we hold), so an unchanged document costs the server a 304.
pub async fn fetch_conditional(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    limit: usize,
    known: &Validators,
) -> Result<Conditional, FetchError> {
    let http = |source| FetchError::Http { url: url.to_string(), source };
    let mut request = client.get(url).header("accept", "application/json").timeout(timeout);
    if let Some(etag) = &known.etag {
        request = request.header(reqwest::header::IF_NONE_MATCH, etag);
    }
    if let Some(date) = &known.last_modified {
        request = request.header(reqwest::header::IF_MODIFIED_SINCE, date);
    }
    let mut response = request.send().await.map_err(http)?;
    let status = response.status();
    let max_age =
        response.headers().get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(parse_max_age);
    if status == reqwest::StatusCode::NOT_MODIFIED && !known.is_empty() {
        return Ok(Conditional::NotModified { max_age });
    }
    if !status.is_success() {
        return Err(FetchError::Status { url: url.to_string(), status: status.as_u16() });
    }
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(FetchError::TooLarge { url: url.to_string(), limit });
    }
    let validators = Validators::from_headers(response.headers());
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(http)? {
        if body.len() + chunk.len() > limit {
            return Err(FetchError::TooLarge { url: url.to_string(), limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Conditional::Modified(Fetched { body: body.freeze(), max_age, validators }))
}

pub(super) async fn read_file(path: &std::path::Path, limit: usize) -> Result<Fetched, FetchError> {
    let err = |source| FetchError::File { path: path.display().to_string(), source };
    let body = tokio::fs::read(path).await.map_err(err)?;
    if body.len() > limit {
        return Err(FetchError::TooLarge { url: path.display().to_string(), limit });
    }
    Ok(Fetched { body: body.into(), max_age: None, validators: Validators::default() })
}

/// Finds `jwks_uri` through `<issuer>/.well-known/openid-configuration` (OIDC Discovery
/// §4); the document's `issuer` must equal ours exactly (§4.3), and an `https` issuer's
/// `jwks_uri` must be `https` too (see [`check_jwks_uri`]).
pub async fn discover(
    client: &reqwest::Client,
    issuer: &str,
    timeout: Duration,
    limit: usize,
) -> Result<String, FetchError> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let fetched = fetch(client, &url, timeout, limit).await?;
    #[derive(serde::Deserialize)]
    struct Doc {
        issuer: String,
        jwks_uri: String,
    }
    let bad = |why: String| FetchError::Discovery { url: url.clone(), why };
    let doc: Doc = serde_json::from_slice(&fetched.body).map_err(|e| bad(e.to_string()))?;
    if doc.issuer != issuer {
        return Err(bad(format!("issuer {:?} differs from the configured {issuer:?}", doc.issuer)));
    }
    check_jwks_uri(issuer, &doc.jwks_uri).map_err(bad)?;
    Ok(doc.jwks_uri)
}

/// A discovered `jwks_uri` is usable: an http(s) URL, and never a downgrade: the keys of
/// an `https` issuer must come over TLS too, or anyone on the path could inject keys.
pub fn check_jwks_uri(issuer: &str, jwks_uri: &str) -> Result<(), String> {
    let issuer_https = url::Url::parse(issuer).is_ok_and(|u| u.scheme() == "https");
    match url::Url::parse(jwks_uri) {
        Ok(u) if u.scheme() == "https" => Ok(()),
        Ok(u) if u.scheme() == "http" && !issuer_https => Ok(()),
        Ok(u) if u.scheme() == "http" => Err(format!("jwks_uri {jwks_uri:?} is http:// for an https:// issuer")),
        _ => Err(format!("jwks_uri {jwks_uri:?} is not an http(s) URL")),
    }
}

/// An error with its whole `source()` chain, "a: b: c", skipping a cause its parent's
/// message already spells out: reqwest's own message ("error sending request") hides the
/// root cause ("Connection refused") an operator needs.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !shown.contains(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            next = cause.source();
        }
        Ok(())
    }
}

/// `max-age` from a Cache-Control value; `no-cache`/`no-store` read as zero.
pub fn parse_max_age(value: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            max_age = v.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    max_age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_https_issuer_never_gets_its_keys_over_http() {
        assert!(check_jwks_uri("https://idp.test", "https://idp.test/keys").is_ok());
        assert!(check_jwks_uri("https://idp.test", "https://cdn.test/keys").is_ok());
        assert!(check_jwks_uri("http://127.0.0.1:1", "http://127.0.0.1:1/keys").is_ok());
        assert!(check_jwks_uri("http://127.0.0.1:1", "https://127.0.0.1:1/keys").is_ok());
        let err = check_jwks_uri("https://idp.test", "http://idp.test/keys").unwrap_err();
        assert!(err.contains("http:// for an https:// issuer"), "{err}");
        assert!(check_jwks_uri("https://idp.test", "HTTP://idp.test/keys").is_err());
        assert!(check_jwks_uri("https://idp.test", "ftp://idp.test/keys").is_err());
        assert!(check_jwks_uri("https://idp.test", "/keys").is_err());
    }

    #[tokio::test]
    async fn a_failed_fetch_names_its_root_cause() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/jwks.json");
        let err = fetch(&http_client(), &url, Duration::from_secs(2), 1024).await.unwrap_err();
        let logged = ErrorChain(&err).to_string();
        assert!(logged.to_ascii_lowercase().contains("connection refused"), "{logged}");
        assert!(logged.starts_with(&format!("request to {url} failed")), "{logged}");
    }

    #[test]
    fn reads_max_age() {
        assert_eq!(parse_max_age("public, max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(parse_max_age("Max-Age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(parse_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(parse_max_age("public"), None);
        assert_eq!(parse_max_age("max-age=abc"), None);
    }
}
