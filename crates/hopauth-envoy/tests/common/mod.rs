//! Helpers shared by the module's Envoy tests: the Envoy binary, the built module, free
//! ports, condition waits and HTTP/1.1 over std (an echo upstream and a client) come from
//! the testkit (one Envoy launcher and one module build for every test); deadlines are
//! this crate's.
#![allow(dead_code, unused_imports)]
use std::path::PathBuf;
use std::time::Duration;

pub(crate) use hopauth_testkit::http1::{
    admin_get, dechunk, find, get, parse_header_lines, serve_echo, try_get, wait_blocking as wait_until, Echo, Response,
};
pub(crate) use hopauth_testkit::{envoy_bin, module_dir, pick_port as free_port, repo_root, scratch_dir};

pub(crate) const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
pub(crate) const POLL: Duration = Duration::from_millis(20);

pub(crate) fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
