//! hopauth in-process: `check_request` with built CheckRequests (both header encodings,
//! metadata, missing attributes), JWKS sources and failures, HMAC providers, readiness and
//! grpc.health.v1 over a real gRPC connection.

use hopauth_testkit as support;

use std::collections::HashMap;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use hopauth::grpc::AuthorizationService;
use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use serde_json::json;
use support::check_request::check_request;
use support::*;

/// (HTTP status, body) of a response; 200 for OK.
fn outcome(r: &CheckResponse) -> (i32, String) {
    match r.http_response.as_ref().expect("every response carries an http_response") {
        HttpResponse::OkResponse(_) => (200, String::new()),
        HttpResponse::DeniedResponse(d) => (d.status.as_ref().unwrap().code, d.body.clone()),
        HttpResponse::ErrorResponse(_) => panic!("hopauth never sends error_response"),
    }
}

/// `hopauth_checks_total{decision="deny",reason=…}` in a metrics rendering (0 when absent).
fn metric_value(metrics: &str, reason: &str) -> u64 {
    let series = format!("hopauth_checks_total{{decision=\"deny\",reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |v| v.trim().parse().unwrap())
}

fn denied_header<'a>(r: &'a CheckResponse, name: &str) -> Option<&'a str> {
    let Some(HttpResponse::DeniedResponse(d)) = r.http_response.as_ref() else { return None };
    d.headers.iter().filter_map(|h| h.header.as_ref()).find(|h| h.key == name).map(|h| h.value.as_str())
}

async fn service(yaml: &str) -> (hopauth::server::Running, AuthorizationService) {
    let running = start_hopauth(yaml).await;
    let service = AuthorizationService::new(running.authorizer.clone());
    (running, service)
}

mod allow;
mod grpc;
mod jwks;
