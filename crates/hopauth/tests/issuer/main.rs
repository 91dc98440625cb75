//! The reference issuer end to end, with a real Redis, hopauth (provider found through the
//! issuer's discovery document) and a real Envoy: login → call → refresh (rotation, reuse
//! kills the family) → logout refused at the next hop; key rotation under continuous
//! traffic; RFC 6749 errors; one behaviour suite for the memory and Redis refresh stores.

use hopauth_testkit as support;
use hopauth_testkit::issuer_stack;
use hopauth_testkit::redis_server;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopauth_issuer::refresh::{
    new_family, new_token, MemoryRefreshStore, NewToken, RedisRefreshStore, RefreshStore, Refused, Rotation, Session,
};
use issuer_stack::{IssuerStack, Options};
use redis_server::{free_port, RedisServer};
use serde_json::Value;

/// Polls `Envoy` with `token` until it answers `want`; the time it took.
async fn until_status(s: &IssuerStack, token: &str, want: u16, deadline: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = s.call("/anything", token).await;
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < deadline, "still {got} after {deadline:?}, want {want}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn kid(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let h: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    h["kid"].as_str().unwrap().to_string()
}

mod abuse;
mod burst;
mod cli;
mod flows;
mod stores;
