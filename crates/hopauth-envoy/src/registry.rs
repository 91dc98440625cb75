//! Which filter implementation a `filter_name` in Envoy's config selects: `hopauth` (the
//! decision core, [`crate::host`]) or `abi_probe` (the ABI test filter, [`crate::probe`]).
use crate::ffi::{ConfigContext, ConfigError, FilterFactory, Module, RouteConfig};
use crate::{host, probe};

/// The `filter_name`s this module knows, for error messages.
pub const FILTER_NAMES: &[&str] = &[host::FILTER_NAME, probe::FILTER_NAME];

/// This module's filters, as [`crate::MODULE`] hands them to Envoy's hooks.
pub struct Registry;

impl Module for Registry {
    fn new_filter_config(
        &self,
        filter_name: &str,
        config: &[u8],
        cx: &mut ConfigContext<'_>,
    ) -> Result<Box<dyn FilterFactory>, ConfigError> {
        match filter_name {
            host::FILTER_NAME => Ok(Box::new(host::HopauthFactory::new(config, cx)?)),
            probe::FILTER_NAME => Ok(Box::new(probe::ProbeFactory::new(config, cx)?)),
            other => Err(unknown(other)),
        }
    }

    /// Envoy passes the `filter_name` of the route's `DynamicModuleFilterPerRoute` as
    /// `name`, empty when it is not set (the documented per-route example sets none): empty
    /// means `hopauth`. The older `per_route_config_name` still works in 1.40 but is
    /// deprecated.
    fn new_per_route_config(&self, name: &str, config: &[u8]) -> Result<RouteConfig, ConfigError> {
        match name {
            "" | host::FILTER_NAME => Ok(Box::new(host::new_route_config(config)?)),
            probe::FILTER_NAME => Ok(Box::new(probe::ProbeRoute::parse(config)?)),
            other => Err(unknown(other)),
        }
    }
}

fn unknown(name: &str) -> ConfigError {
    ConfigError::new(format!("unknown filter_name {name:?}; this module (hopauth_envoy) provides {FILTER_NAMES:?}"))
}
