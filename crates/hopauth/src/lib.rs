//! hopauth, the sidecar: an Envoy ext_authz (v3, gRPC) server around the decision core
//! (`hopauth_core`), with everything the core leaves to its host.
//!
//! - [`config`]: the typed YAML configuration and its validation.
//! - [`settings`]: the config mapped to the core's plain settings.
//! - [`assemble`]: a config turned into a decision core and its background work (any host).
//! - [`jwks`]: fetching and refreshing each provider's keys into its core key set.
//! - [`revocation`]: the Redis backend (the sync that keeps the core's local view).
//! - [`redis_url`]: the forms of `revocation.redis_url`, parsed without connecting.
//! - [`revoke`]: `hopauth revoke`, one revocation written straight to Redis.
//! - [`grpc`]: the ext_authz adapter (CheckRequest in, CheckResponse bytes out).
//! - [`render`]: CheckResponses encoded once (the core's `Renderer` for the sidecar; the
//!   Envoy module builds its denies from it too).
//! - [`observer`]: the core's decisions as metrics and spans.
//! - [`metrics`]: Prometheus metrics, one handle per component.
//! - [`trace`]: OpenTelemetry span export.
//! - [`http`]: metrics, health and admin endpoints.
//! - [`listener`], [`tls`]: the gRPC listener (TCP or Unix socket) and its TLS.
//! - [`live`]: the core serving now, swapped whole by a reload.
//! - [`reload`]: `kill -HUP` reloads the config file; the serving core's background work.
//! - [`server`]: start-up and shutdown.

pub mod assemble;
pub mod config;
pub mod grpc;
pub mod http;
pub mod jwks;
pub mod listener;
pub mod live;
pub mod metrics;
pub mod observer;
pub mod redis_url;
pub mod reload;
pub mod render;
pub mod revocation;
pub mod revoke;
pub mod server;
pub mod settings;
pub mod tls;
pub mod trace;

/// The sidecar's authorizer: answers rendered as encoded CheckResponses, decisions
/// recorded as metrics (and spans).
pub type SidecarAuthorizer = hopauth_core::authorizer::Authorizer<render::CheckResponses, observer::SidecarObserver>;
