//! Differential test against Envoy's own JWT verifier (`envoy.filters.http.jwt_authn`, the
//! jwt_verify_lib code Google wrote and Envoy now carries in `source/common/jwt`).
//!
//! One real Envoy runs two listeners in front of the echo app: `jwt_authn` with a provider
//! that has hopauth's issuer, audiences, keys and clock skew, and the shipped ext_authz
//! listener of `envoy/hopauth.yaml` calling hopauth in-process. Thousands of tokens from a
//! seeded generator (valid ones, claim, header and encoding variants, signature mutations,
//! JSON quirks, random mutations) go to both, and each pair of outcomes is classified.
//!
//! The property: hopauth allows nothing that jwt_authn refuses, apart from the short
//! `LOOSER_THAN_JWT_AUTHN` list below (each entry with its reason). Where hopauth is
//! stricter, the classes are printed; docs/security.md#deviations-from-envoy-jwt_authn
//! explains each one.
//!
//! How the two are made comparable:
//! - Same issuer, same audiences, same four keys (jwt_authn gets them inline as
//!   `local_jwks`, hopauth fetches the same JWKS from the test's JWKS server).
//! - `clock_skew_seconds` = hopauth's `leeway` (30 s, hopauth's default).
//! - `require_expiration: true`: hopauth always requires `exp`; jwt_authn does only with
//!   this flag (it exists in the 1.40 API, next to `max_lifetime`).
//! - Audiences are compared as configured, byte for byte: jwt_verify_lib strips an
//!   `http://`/`https://` prefix and a trailing `/` on both sides before comparing, hopauth
//!   does not (RFC 7519 §4.1.3 compares strings). The provider lists a URL audience so the
//!   difference shows up, in the "only hopauth refuses" direction.
//! - Tokens whose outcome depends on the current second (the `time` class) are minted just
//!   before they are sent and sent again if the second changed while both answers were in
//!   flight, so a boundary crossing between the two requests cannot look like a difference.
//!
//! `HOPAUTH_DIFF_SEED` picks another seed; the default seed makes every run generate the same
//! set of cases (the keys are fresh each run, so the signature bytes differ).

use hopauth_testkit as support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::HeaderValue;
use support::*;

/// The default seed; `HOPAUTH_DIFF_SEED` overrides it.
const DEFAULT_SEED: u64 = 0x6a77_745f_6175_7468;
/// hopauth's default `leeway`, given to jwt_authn as `clock_skew_seconds`.
const SKEW: i64 = hopauth::config::DEFAULT_LEEWAY.as_secs() as i64;
/// The second configured audience: a URL, where jwt_verify_lib's normalisation matters.
const URL_AUDIENCE: &str = "https://api.orders.test";
/// Requests in flight at once (each case is two requests).
const CONCURRENCY: usize = 8;
/// Random mutants of valid tokens, and of valid tokens' JSON (re-signed).
const RANDOM_TOKEN_MUTANTS: usize = 1800;
const RANDOM_JSON_MUTANTS: usize = 1400;

/// Security bugs this test found that are tracked and being fixed elsewhere: a looser case
/// matching one is excused but printed as a bug; an entry that no longer matches is printed
/// as fixed (remove it then). `(class, label prefix, issue)`.
// Empty since the `token` branch: hole 7's percent-encoded `access%5Ftoken` is now seen.
const KNOWN_BUGS: &[(&str, &str, &str)] = &[];

/// Cases where hopauth may allow what jwt_authn refuses: `(class, label prefix, reason)`.
/// Every entry must match at least one case, so a stale entry fails the test.
const LOOSER_THAN_JWT_AUTHN: &[(&str, &str, &str)] = &[
    (
        "credentials",
        "bearer lowercase",
        "RFC 7235 §2.1: an auth-scheme is case-insensitive, and the token is verified in full; \
         jwt_authn matches the prefix `Bearer ` byte for byte",
    ),
    ("credentials", "BEARER uppercase", "as `bearer`: the scheme's case says nothing about the token"),
];

// ---------------------------------------------------------------------------------------
// The Envoy side.

/// The jwt_authn listener: a provider mirroring hopauth's, required on every route.
/// `@PORT@`, `@SKEW@`, `@JWKS@` are filled in by `envoy_config`.
const JWT_AUTHN_LISTENER: &str = r#"
  - name: jwt_authn
    address:
      socket_address: { address: 127.0.0.1, port_value: @PORT@ }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: jwt_authn
          normalize_path: true
          merge_slashes: true
          route_config:
            name: jwt_authn_routes
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: app }
          http_filters:
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                main:
                  issuer: https://issuer.test
                  audiences: [orders, "https://api.orders.test"]
                  local_jwks:
                    inline_string: '@JWKS@'
                  clock_skew_seconds: @SKEW@      # = hopauth's leeway
                  require_expiration: true        # hopauth always requires exp
                  forward: true                   # the upstream sees the token, as with hopauth
                  # Default token locations: `Authorization: Bearer …` and ?access_token=,
                  # the same two hopauth is configured with below.
              rules:
              - match: { prefix: / }
                requires: { provider_name: main }
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#;

/// envoy/hopauth.yaml as shipped (its ext_authz listener untouched, ports rewritten), with
/// the jwt_authn listener added beside it.
fn envoy_config(ext_authz_port: u16, jwt_port: u16, hopauth: u16, app: u16, jwks: &str) -> String {
    let shipped = std::fs::read_to_string(repo_root().join("envoy/hopauth.yaml")).expect("envoy/hopauth.yaml");
    let shipped = shipped
        .replace("port_value: 10000", &format!("port_value: {ext_authz_port}"))
        .replace("port_value: 9901", "port_value: 0")
        .replace("port_value: 9001", &format!("port_value: {hopauth}"))
        .replace("port_value: 8080", &format!("port_value: {app}"));
    let listener = JWT_AUTHN_LISTENER
        .replace("@PORT@", &jwt_port.to_string())
        .replace("@SKEW@", &SKEW.to_string())
        .replace("@JWKS@", jwks);
    let anchor = "static_resources:\n  listeners:\n";
    assert!(shipped.contains(anchor), "envoy/hopauth.yaml no longer starts its listeners with {anchor:?}");
    shipped.replacen(anchor, &format!("{anchor}{}\n", listener.trim_start_matches('\n')), 1)
}

/// hopauth with the shipped defaults (leeway 30 s, max_token_bytes 8192, …) and the same
/// provider as the jwt_authn listener.
fn hopauth_config(jwks_url: &str) -> String {
    format!(
        r#"grpc_listen: 127.0.0.1:0
http_listen: 127.0.0.1:0
sources:
  - header: authorization
    prefix: "Bearer "
  - query: access_token
providers:
  - name: main
    issuer: {ISSUER}
    audiences: [{AUDIENCE}, "{URL_AUDIENCE}"]
    algorithms: [ES256, RS256, PS256, EdDSA]
    jwks:
      uri: {jwks_url}
"#
    )
}

// ---------------------------------------------------------------------------------------
// Token building.

type Mint = Arc<dyn Fn(i64) -> String + Send + Sync>;

enum Tok {
    /// Sent as `Authorization: Bearer <token>`.
    Ready(String),
    /// Minted at send time from the current second, sent as `Ready`.
    Timed(Mint),
    /// A whole credential shape: these headers, and this query string after the path.
    Request(Headers, String),
}

/// Request headers as (name, value) pairs.
type Headers = Vec<(&'static str, String)>;

struct Case {
    class: &'static str,
    label: String,
    tok: Tok,
}

struct Gen {
    keys: Arc<Keys>,
    /// A key of each family that no JWKS lists.
    strangers: Keys,
    now: i64,
    rng: StdRng,
    cases: Vec<Case>,
}

impl Gen {
    fn add(&mut self, class: &'static str, label: impl Into<String>, token: String) {
        self.cases.push(Case { class, label: label.into(), tok: Tok::Ready(token) });
    }

    fn request(&mut self, label: impl Into<String>, headers: Headers, query: String) {
        self.cases.push(Case { class: "credentials", label: label.into(), tok: Tok::Request(headers, query) });
    }

    fn timed(
        &mut self,
        class: &'static str,
        label: impl Into<String>,
        mint: impl Fn(i64) -> String + Send + Sync + 'static,
    ) {
        self.cases.push(Case { class, label: label.into(), tok: Tok::Timed(Arc::new(mint)) });
    }

    fn all_keys(&self) -> [&SigningKey; 4] {
        [&self.keys.es, &self.keys.rs, &self.keys.ps, &self.keys.ed]
    }

    /// Every valid token the generator made, for the mutation classes.
    fn valid_tokens(&self) -> Vec<String> {
        self.cases
            .iter()
            .filter(|c| c.class == "valid")
            .filter_map(|c| match &c.tok {
                Tok::Ready(t) => Some(t.clone()),
                Tok::Timed(_) | Tok::Request(..) => None,
            })
            .collect()
    }

    fn generate(&mut self) {
        self.valid();
        self.time();
        self.claim_types();
        self.iss_aud();
        self.missing_claims();
        self.header_alg();
        self.header_kid();
        self.header_typ_cty();
        self.header_crit_members();
        self.encoding();
        self.segments();
        self.signature();
        self.json_duplicates();
        self.json_nesting();
        self.json_unicode();
        self.json_numbers();
        self.json_syntax();
        self.claim_combinations();
        self.sizes();
        self.credentials();
        self.random_tokens();
        self.random_json();
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` of a raw ECDSA signature.
fn der_ecdsa(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn int(v: &[u8]) -> Vec<u8> {
        let v: Vec<u8> = v.iter().copied().skip_while(|&b| b == 0).collect();
        let v = if v.first().is_some_and(|&b| b & 0x80 != 0) { [vec![0], v].concat() } else { v };
        [vec![0x02, v.len() as u8], v].concat()
    }
    let body = [int(r), int(s)].concat();
    [vec![0x30, body.len() as u8], body].concat()
}

mod claims;
mod encoding;
mod forge;
mod headers;
mod json;
mod run;

use forge::*;
