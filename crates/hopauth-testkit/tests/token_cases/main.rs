//! The token cases of docs/security.md as final decisions, through
//! `AuthorizationService::check_request` / `check_wire` in-process: the explicit-typing and
//! token-age profile (T29, T33), the `kid`-less key policy (T11), bounded input (T19),
//! signature mangling (T37, T38), odd requests and credential variants (T41–T43), `kid`
//! injection (R4), and a property test that every answer decodes under protobuf's limits.
//!
//! A counting allocator (per thread) measures what refusing oversize input allocates.
#![allow(unsafe_code)]

use hopauth_testkit as support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value as PbValue};
use hopauth::grpc::wire::CheckView;
use hopauth::grpc::AuthorizationService;
use hopauth_core::alg::Alg;
use hopauth_core::clock;
use hopauth_core::jws::MAX_JSON_DEPTH;
use hopauth_core::sign::SigningKey;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use support::check_request::check_request;
use support::*;

// ---- A per-thread byte count of allocations, so other tests' threads do not disturb it.

struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated_on_this_thread() -> usize {
    ALLOCATED.with(Cell::get)
}

fn allocations_on_this_thread() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// ---- Requests and answers.

const ANONYMOUS: &[(&str, &str)] = &[("hopauth.anonymous", "allow")];

/// (HTTP status, deny reason): 200 and "" for an allow.
fn verdict(r: &CheckResponse) -> (i32, String) {
    match r.http_response.as_ref().expect("every response carries an http_response") {
        HttpResponse::OkResponse(_) => (200, String::new()),
        HttpResponse::DeniedResponse(d) => {
            (d.status.as_ref().unwrap().code, r.status.as_ref().unwrap().message.clone())
        }
        HttpResponse::ErrorResponse(_) => panic!("hopauth never sends error_response"),
    }
}

fn challenge(r: &CheckResponse) -> Option<&str> {
    let Some(HttpResponse::DeniedResponse(d)) = r.http_response.as_ref() else { return None };
    d.headers.iter().filter_map(|h| h.header.as_ref()).find(|h| h.key == "www-authenticate").map(|h| h.value.as_str())
}

/// Whether an allow carries identity (a verified token) rather than the anonymous allow.
fn identity_set(r: &CheckResponse) -> bool {
    matches!(&r.http_response, Some(HttpResponse::OkResponse(ok)) if !ok.headers.is_empty())
}

/// These tests call `check_request` back to back on a shared 2-core machine: a stall past
/// the default 50 ms `max_queue_delay` would shed a Check (503) that is not under test.
const NO_SHEDDING: &str = "max_queue_delay: 10s\n";

struct Fixture {
    keys: Keys,
    jwks: JwksServer,
    running: hopauth::server::Running,
    svc: AuthorizationService,
}

async fn fixture(extra_providers: &str) -> Fixture {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let running = start_hopauth(&config_yaml(&jwks.url(), extra_providers, NO_SHEDDING)).await;
    wait_ready(&running).await;
    let svc = AuthorizationService::new(running.authorizer.clone());
    Fixture { keys, jwks, running, svc }
}

impl Fixture {
    async fn check(&self, headers: &[(&str, &str)], path: &str, ext: &[(&str, &str)]) -> CheckResponse {
        self.svc.check_request(&check_request(headers, &[], path, ext)).await
    }

    async fn token(&self, token: &str) -> (i32, String) {
        verdict(&self.check(&[("authorization", &bearer(token))], "/x", &[]).await)
    }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

// ---- T29, T33: the token profile.

mod bounds;
mod claims_depth;
mod credentials;
mod profiles;
