//! hopauth: an Envoy ext_authz (v3, gRPC) server that verifies the caller's JWT on every hop.
//!
//! The map of the house:
//! - [`config`]: the typed YAML configuration and its validation.
//! - [`alg`]: the JWS algorithms and the key family each needs.
//! - [`token`]: finding the one token in a request (header, cookie, query).
//! - [`jws`]: strict parsing of a compact JWS and its claims.
//! - [`jwks`]: per-provider keys, fetched and refreshed in the background.
//! - [`verify`]: signature and claims checks; the verified-token cache.
//! - [`policy`]: per-route requirements from Envoy's context extensions.
//! - [`revocation`]: the revocation store seam and its backends.
//! - [`decision`]: `Decision` and `DenyReason`, free of wire types.
//! - [`authorizer`]: the decision path that ties the above together.
//! - [`grpc`]: the ext_authz adapter (CheckRequest → CheckResponse).
//! - [`http`]: metrics, health and admin endpoints.
//! - [`metrics`]: Prometheus metrics.
//! - [`sign`]: signing JWTs (reference issuer, tests, benchmarks).
//! - [`server`]: start-up and shutdown.
//! - [`background`]: tasks that share one stop signal and shut down together.
//! - [`issuer`]: the reference authentication service (login, refresh, logout, JWKS).

pub mod alg;
pub mod authorizer;
pub mod background;
pub mod config;
pub mod decision;
pub mod grpc;
pub mod http;
pub mod issuer;
pub mod jwks;
pub mod jws;
pub mod listener;
pub mod metrics;
pub mod policy;
pub mod revocation;
pub mod server;
pub mod sign;
pub mod tls;
pub mod token;
pub mod trace;
pub mod verify;
