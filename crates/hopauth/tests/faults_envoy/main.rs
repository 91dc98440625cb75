//! Faults seen through a real Envoy (envoy/hopauth.yaml; docs/security.md F6, F9, F11):
//! Redis slower than Envoy's ext_authz timeout, Envoy giving up on a Check in the middle of
//! a verification (its deadline, or the client hanging up), and hopauth killed outright.

use hopauth_testkit as support;
use hopauth_testkit::fault_proxy;
use hopauth_testkit::redis_server;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fault_proxy::{Dir, FaultProxy};
use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use redis_server::{free_port, RedisServer};
use serde_json::json;
use support::*;

/// envoy/hopauth.yaml pointed at `hopauth` and `app`, with `failure_mode_allow` as given.
async fn envoy(hopauth: SocketAddr, app: SocketAddr, failure_mode_allow: bool) -> Envoy {
    let port = pick_port();
    Envoy::start_with(
        "hopauth.yaml",
        hopauth,
        &[
            ("port_value: 10000", format!("port_value: {port}")),
            ("port_value: 9001", format!("port_value: {}", hopauth.port())),
            ("port_value: 8080", format!("port_value: {}", app.port())),
            ("failure_mode_allow: false", format!("failure_mode_allow: {failure_mode_allow}")),
        ],
    )
    .await
}

/// A client that keeps no idle connections, so open file descriptors can be compared.
fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(0).build().unwrap()
}

async fn get(client: &reqwest::Client, envoy: &Envoy, token: &str) -> Reply {
    send(client, &envoy.url("/x"), &[("authorization", &bearer(token))]).await
}

const ALLOWS: &str = r#"hopauth_checks_total{decision="allow",reason="verified"}"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

mod abandoned;
mod killed;
mod slow_redis;
