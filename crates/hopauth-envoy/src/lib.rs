//! hopauth as an Envoy HTTP-filter dynamic module (`libhopauth_envoy.so`).
//!
//! Layers, from the boundary inwards:
//! - [`ffi`] (private): the only module with `unsafe`. Every `extern "C"` callback we call
//!   and every `envoy_dynamic_module_on_*` hook we export, with `catch_unwind` at each hook.
//! - [`filter`]: the safe API the rest of the crate uses ([`filter::HttpFilter`],
//!   [`filter::RequestContext`], [`filter::Scheduler`], counters, per-route config).
//! - [`host`]: the `hopauth` filter: the decision core on Envoy's request path, its
//!   process-wide core, module threads, per-route policy and Envoy stats.
//! - [`registry`]: maps the `filter_name` of the Envoy config to a filter implementation.
//! - [`probe`]: the `abi_probe` filter, which drives every wrapped callback so that
//!   `tests/abi.rs` can observe each one through a real Envoy.
//!
//! The ABI this is written against is described in `ABI.md` next to this crate's manifest.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod ffi;
pub mod filter;
pub mod host;
pub mod probe;
pub mod registry;

/// The Envoy release line this module is built for. The repository Makefile's
/// `ENVOY_VERSION` must be a version of this line; `tests/abi.rs` fails otherwise.
pub const ENVOY_VERSION_LINE: &str = "1.40";

/// The dynamic-module ABI version string returned by `envoy_dynamic_module_on_program_init`.
/// Envoy 1.40.0 contains exactly this string; a different one only logs a warning in Envoy,
/// so `tests/abi.rs` checks it against the binary instead.
pub const ABI_VERSION: &str = "v0.2.0";
