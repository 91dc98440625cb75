//! What hopauth's two services, the sidecar (`hopauth serve`) and the reference issuer
//! (`hopauth issuer`), share and the decision core has no use for:
//! - [`config_file`]: reading a YAML config file and reporting every problem in it (of
//!   shape while parsing, then what each service's `validate` finds), the duration syntax
//!   (`30s`, `5m`), and printing URLs without their passwords.
//! - [`background`]: tasks that share one stop signal and shut down together.

pub mod background;
pub mod config_file;

pub use background::Background;
