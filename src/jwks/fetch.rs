//! Fetching a JWKS (or an OIDC discovery document) over HTTP(S): bounded in size and time,
//! no redirects, `Cache-Control: max-age` read for the refresh schedule.

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

/// A fetched body and the server's `max-age`, if any.
#[derive(Debug)]
pub struct Fetched {
    pub body: Bytes,
    pub max_age: Option<Duration>,
}

/// One HTTP client for every provider: rustls, no redirects, no proxies from the environment.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hopauth/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a default rustls client always builds")
}

pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    limit: usize,
) -> Result<Fetched, FetchError> {
    let http = |source| FetchError::Http { url: url.to_string(), source };
    let send = client.get(url).header("accept", "application/json").timeout(timeout).send();
    let mut response = send.await.map_err(http)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status { url: url.to_string(), status: status.as_u16() });
    }
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(FetchError::TooLarge { url: url.to_string(), limit });
    }
    let max_age =
        response.headers().get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(parse_max_age);
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(http)? {
        if body.len() + chunk.len() > limit {
            return Err(FetchError::TooLarge { url: url.to_string(), limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched { body: body.freeze(), max_age })
}

pub(super) async fn read_file(path: &std::path::Path, limit: usize) -> Result<Fetched, FetchError> {
    let err = |source| FetchError::File { path: path.display().to_string(), source };
    let body = tokio::fs::read(path).await.map_err(err)?;
    if body.len() > limit {
        return Err(FetchError::TooLarge { url: path.display().to_string(), limit });
    }
    Ok(Fetched { body: body.into(), max_age: None })
}

/// Finds `jwks_uri` through `<issuer>/.well-known/openid-configuration` (OIDC Discovery
/// §4); the document's `issuer` must equal ours exactly (§4.3).
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
    match url::Url::parse(&doc.jwks_uri) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Ok(doc.jwks_uri),
        _ => Err(bad(format!("jwks_uri {:?} is not an http(s) URL", doc.jwks_uri))),
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
    fn reads_max_age() {
        assert_eq!(parse_max_age("public, max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(parse_max_age("Max-Age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(parse_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(parse_max_age("public"), None);
        assert_eq!(parse_max_age("max-age=abc"), None);
    }
}
