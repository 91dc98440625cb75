//! One service of the A → B → C chain: answers every GET with who it is, the identity its
//! sidecar verified, and, when it has a next service, that service's answer nested.
//!
//! It forwards the incoming `Authorization` header unchanged on its own call, so the next
//! hop's sidecar verifies the same token again (the seed design's token propagation). It
//! also forwards `x-request-id`, so the access log lines of every hop share one id.
//! Shared by `crates/hopauth/examples/chain_service.rs` (the runnable service), the chain
//! stack and `crates/hopauth/tests/chain.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

/// Headers the service forwards to the next hop, as received.
const FORWARDED: [&str; 2] = ["authorization", "x-request-id"];
/// Identity headers set by hopauth through the sidecar start with this.
const IDENTITY_PREFIX: &str = "x-jwt-";
/// Below the sidecar's outbound route timeout (8s), so this service answers first.
const NEXT_TIMEOUT: Duration = Duration::from_secs(7);

/// What one service is.
#[derive(Clone, Debug)]
pub struct ChainConfig {
    /// Shown in every answer.
    pub name: String,
    /// The URL of the next service, through this service's sidecar outbound listener
    /// (e.g. `http://127.0.0.1:10001/chain`); `None` ends the chain.
    pub next: Option<String>,
}

struct ChainState {
    config: ChainConfig,
    client: reqwest::Client,
}

/// The service's routes: `/healthz` answers `ok` (for probes, no call to the next
/// service); every other path gets the chain handler.
pub fn router(config: ChainConfig) -> Router {
    let client = reqwest::Client::builder().timeout(NEXT_TIMEOUT).build().expect("reqwest client builds");
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(handle)
        .with_state(Arc::new(ChainState { config, client }))
}

/// Serves `router(config)` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, config: ChainConfig) -> std::io::Result<()> {
    axum::serve(listener, router(config)).await
}

async fn handle(State(state): State<Arc<ChainState>>, uri: Uri, headers: HeaderMap) -> Response {
    let identity: Map<String, Value> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with(IDENTITY_PREFIX) && name.as_str() != "x-jwt-payload")
        .map(|(name, value)| (name.to_string(), Value::String(String::from_utf8_lossy(value.as_bytes()).into())))
        .collect();
    let mut body = json!({
        "service": state.config.name,
        "path": uri.path(),
        "identity": identity,
        "token_received": headers.contains_key(header::AUTHORIZATION),
    });
    let Some(next) = &state.config.next else {
        return Json(body).into_response();
    };
    let mut request = state.client.get(next);
    for name in FORWARDED {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let (status, next_body) = match request.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.unwrap_or_default();
            let parsed = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            (status, parsed)
        }
        Err(error) => (0, Value::String(error.to_string())),
    };
    body["next"] = json!({ "status": status, "body": next_body });
    // A failed downstream call is this service's failure to answer: 502, with the
    // downstream's status and body nested so the caller sees which hop refused.
    let code = if (200..300).contains(&status) { StatusCode::OK } else { StatusCode::BAD_GATEWAY };
    (code, Json(body)).into_response()
}
