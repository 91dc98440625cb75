//! hopauth as an Envoy HTTP-filter dynamic module (`libhopauth_envoy.so`).
//!
//! Modules, each depending only on those listed after it:
//! - [`registry`]: maps the `filter_name` of the Envoy config to a filter implementation
//!   (the [`ffi::Module`] table the hooks use, [`MODULE`]).
//! - [`host`]: the `hopauth` filter: the decision core on Envoy's request path, its
//!   process-wide core, module threads, per-route policy and Envoy stats.
//! - [`probe`]: the `abi_probe` filter, which drives every wrapped callback so that
//!   `tests/abi` can observe each one through a real Envoy.
//! - [`ffi`]: the boundary to Envoy and the safe API the filters use
//!   ([`ffi::HttpFilter`], [`ffi::RequestContext`], [`ffi::Scheduler`], counters,
//!   per-route config); the only module with `unsafe` (in its submodules). It knows no
//!   filter: its hooks reach them through [`MODULE`].
//!
//! The ABI this is written against is described in `ABI.md` next to this crate's manifest.
#![deny(unsafe_code)]

pub mod ffi;
pub mod host;
pub mod probe;
pub mod registry;

/// The filters Envoy's hooks build: this crate's [`registry`].
pub(crate) static MODULE: &dyn ffi::Module = &registry::Registry;

/// The Envoy release line this module is built for. The repository Makefile's
/// `ENVOY_VERSION` must be a version of this line; `tests/abi/` fails otherwise.
pub const ENVOY_VERSION_LINE: &str = "1.40";

/// The dynamic-module ABI version string returned by `envoy_dynamic_module_on_program_init`.
/// Envoy 1.40.0 contains exactly this string; a different one only logs a warning in Envoy,
/// so `tests/abi/` checks it against the binary instead.
pub const ABI_VERSION: &str = "v0.2.0";
