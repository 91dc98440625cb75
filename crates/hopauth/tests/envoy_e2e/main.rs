//! End to end through a real Envoy in front of an echo app and a real JWKS endpoint, every
//! test in both modes (`ext_authz::…`: envoy/hopauth.yaml with hopauth serving in this
//! process; `module::…`: envoy/module.yaml with libhopauth_envoy.so deciding inside
//! Envoy): the contract's decision table, token sources, identity headers, per-route
//! policy, key rotation, kid floods, RFC 8725 attacks, Redis revocation and outages, and
//! `--concurrency 4` under concurrent traffic.

use hopauth_testkit as support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use serde_json::{json, Value};
use support::*;
use support::{in_both_modes, Mode};

fn challenge(r: &Reply) -> &str {
    r.header("www-authenticate").unwrap_or_else(|| panic!("no WWW-Authenticate in {r:?}"))
}

fn assert_invalid_token(r: &Reply, description: &str) {
    assert_eq!(r.status, 401, "{r:?}");
    let c = challenge(r);
    assert!(c.starts_with("Bearer realm=\"hopauth\""), "{c}");
    assert!(c.contains("error=\"invalid_token\""), "{c}");
    assert_eq!(r.body["error"], "invalid_token", "{r:?}");
    assert_eq!(r.body["error_description"], description, "{r:?}");
}

/// GET `path` with raw header bytes (values a `&str` cannot hold).
async fn send_raw(s: &Stack, path: &str, headers: &[(&str, &[u8])]) -> u16 {
    let mut req = s.client.get(s.envoy.url(path));
    for (k, v) in headers {
        req = req.header(*k, reqwest::header::HeaderValue::from_bytes(v).unwrap());
    }
    req.send().await.unwrap().status().as_u16()
}

mod attacks;
mod concurrency;
mod decisions;
mod hygiene;
mod keys;
mod redis;
