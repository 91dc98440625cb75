//! The FFI layer through a real Envoy 1.40: one assertion per declared callback, the panic
//! path, config refusal, and the version coupling (Envoy version, callback symbols, hooks,
//! ABI string). Envoy loads `libhopauth_envoy.so` (the testkit's `module_dir` release build)
//! and runs the `abi_probe` filter in front of a tiny echo upstream; every test starts its
//! own Envoy on free loopback ports.
//!
//! Needs `.tools/bin/envoy` (`make envoy`, or `HOPAUTH_ENVOY=<path>`) and binutils' `nm`.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use hopauth_testkit::http1::{admin_get, find, get, try_get, wait_blocking as wait_until, Echo};
use hopauth_testkit::{envoy_bin, module_dir, pick_port as free_port, repo_root, scratch_dir};

const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
use hopauth_envoy::{ABI_VERSION, ENVOY_VERSION_LINE};

// ------------------------------------------------------------------------------------------
// Envoy with the module.
// ------------------------------------------------------------------------------------------

struct Envoy {
    child: Child,
    dir: PathBuf,
    listen: u16,
    admin: u16,
    log: PathBuf,
    access_log: PathBuf,
    echo: Echo,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Kept after a failure, for its envoy.log / access.log.
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Envoy {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn access_log_text(&self) -> String {
        std::fs::read_to_string(&self.access_log).unwrap_or_default()
    }

    fn counter(&self, name: &str) -> Option<u64> {
        let stats = admin_get(self.admin, "/stats");
        stats.lines().find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            (k == name).then(|| v.trim().parse().ok())?
        })
    }
}

const PROBE_LABEL: &str = "probe-label-1";

fn config_yaml(
    listen: u16,
    admin: u16,
    echo: u16,
    access_log: &Path,
    filter_name: &str,
    filter_config: &str,
) -> String {
    let route = |prefix: &str, per_route: Option<&str>| {
        let mut r =
            format!("              - match: {{ prefix: \"{prefix}\" }}\n                route: {{ cluster: echo }}\n");
        if let Some(v) = per_route {
            r.push_str(&format!(
                "                typed_per_filter_config:
                  abi_probe:
                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute
                    dynamic_module_config: {{ name: hopauth_envoy }}
                    filter_name: abi_probe
                    filter_config: {{ \"@type\": type.googleapis.com/google.protobuf.StringValue, value: \"{v}\" }}
"
            ));
        }
        r
    };
    let routes = [route("/a", Some("route=alpha")), route("/b", Some("route=beta")), route("/", None)].concat();
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {access_log}
              log_format:
                text_format_source:
                  inline_string: "tag=%REQ(X-TAG)% route=%DYNAMIC_METADATA(probe:route)% in_count=%DYNAMIC_METADATA(probe:in_count)% batch=%DYNAMIC_METADATA(probe:s0)%,%DYNAMIC_METADATA(probe:s15)%,%DYNAMIC_METADATA(probe:s16)% flag=%DYNAMIC_METADATA(probe:flag)% nested=%DYNAMIC_METADATA(probe:nested)% code=%RESPONSE_CODE% details=%RESPONSE_CODE_DETAILS%\n"
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}          http_filters:
          - name: abi_probe
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {{ name: hopauth_envoy }}
              filter_name: {filter_name}
              filter_config: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: "{filter_config}" }}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {echo} }} }} }} }} ] }} ]
"#,
        access_log = access_log.display(),
    )
}

/// Starts Envoy with `filter_name`/`filter_config`; returns it (ready) or its exit and log.
fn spawn_envoy(filter_name: &str, filter_config: &str) -> Result<Envoy, (i32, String)> {
    let dir = scratch_dir(filter_name);
    let (listen, admin) = (free_port(), free_port());
    let echo = Echo::start();
    let access_log = dir.join("access.log");
    let log = dir.join("envoy.log");
    let cfg = dir.join("envoy.yaml");
    std::fs::write(&cfg, config_yaml(listen, admin, echo.port, &access_log, filter_name, filter_config)).unwrap();
    let child = Command::new(envoy_bin())
        .arg("-c")
        .arg(&cfg)
        .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info", "--file-flush-interval-msec", "50"])
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn envoy");
    let mut envoy = Envoy { child, dir, listen, admin, log, access_log, echo };
    let end = Instant::now() + STARTUP_DEADLINE;
    loop {
        if let Some(status) = envoy.child.try_wait().unwrap() {
            return Err((status.code().unwrap_or(-1), envoy.log_text()));
        }
        let ready = try_get(admin, "/ready", &[]).is_some_and(|r| r.body_text().trim() == "LIVE")
            && TcpStream::connect(("127.0.0.1", listen)).is_ok();
        if ready {
            return Ok(envoy);
        }
        assert!(Instant::now() < end, "Envoy not ready after {STARTUP_DEADLINE:?}; log:\n{}", envoy.log_text());
        thread::sleep(POLL);
    }
}

fn probe_envoy() -> Envoy {
    spawn_envoy("abi_probe", &format!("label={PROBE_LABEL}"))
        .unwrap_or_else(|(code, log)| panic!("Envoy exited ({code}) at startup; log:\n{log}"))
}

impl Envoy {
    /// Envoy still answers on its admin port.
    fn child_alive(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.admin)).is_ok()
    }
}

mod behaviour;
mod coupling;
