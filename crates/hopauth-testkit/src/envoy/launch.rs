//! How a test launches Envoy in front of hopauth: the [`Mode`] (and [`in_both_modes!`],
//! one test written once for both), what the filter talks to ([`Authz`]), the module
//! build ([`module_dir`]) and the [`Launch`] that renders the shipped config and waits.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use super::{pick_port, replace_once, Envoy, POLL, STARTUP};
use crate::{repo_root, ADMIN_TOKEN};

/// How Envoy asks hopauth: the two deployments a user can pick (docs/in-process.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `envoy/hopauth.yaml`: the ext_authz filter calls `hopauth serve` over gRPC.
    ExtAuthz,
    /// `envoy/module.yaml`: the hopauth dynamic module decides inside Envoy.
    Module,
}

impl Mode {
    /// The shipped Envoy config of this mode, under `envoy/`.
    pub fn config_file(self) -> &'static str {
        match self {
            Mode::ExtAuthz => "hopauth.yaml",
            Mode::Module => "module.yaml",
        }
    }

    /// The argument of `%DYNAMIC_METADATA(…)%` that names hopauth's claims in this mode.
    pub fn claims_metadata(self) -> &'static str {
        match self {
            Mode::ExtAuthz => "envoy.filters.http.ext_authz:hopauth",
            Mode::Module => "hopauth",
        }
    }

    /// The [`Launch::replace`] that makes the shipped config's catch-all route copy
    /// hopauth's claims metadata into request header `header`, so the app shows what Envoy
    /// holds (decoded from the CheckResponse, or set by the module; `-` when there is none).
    /// Panics if the shipped config no longer has exactly one such route.
    pub fn claims_metadata_route(self, header: &str) -> (&'static str, String) {
        const CATCH_ALL: &str = "              - match: { prefix: / }\n";
        let shipped = std::fs::read_to_string(repo_root().join("envoy").join(self.config_file())).unwrap();
        assert_eq!(shipped.matches(CATCH_ALL).count(), 1, "envoy/{} changed its catch-all route", self.config_file());
        let to = format!(
            "{CATCH_ALL}                request_headers_to_add:\n                \
             - header: {{ key: {header}, value: \"%DYNAMIC_METADATA({})%\" }}\n",
            self.claims_metadata()
        );
        (CATCH_ALL, to)
    }
}

/// Instantiates each `async fn NAME(mode: Mode)` of the calling module as two tests,
/// `ext_authz::NAME` and `module::NAME`, so a failure names its mode.
#[macro_export]
macro_rules! in_both_modes {
    ($($name:ident),+ $(,)?) => {
        mod ext_authz {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Mode::ExtAuthz).await
                }
            )+
        }
        mod module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Mode::Module).await
                }
            )+
        }
    };
}

/// What Envoy's hopauth filter talks to.
#[derive(Debug, Clone, Copy)]
pub enum Authz<'a> {
    /// `envoy/hopauth.yaml`'s hopauth cluster (`port_value: 9001`) at this gRPC address;
    /// Envoy is ready once that cluster is healthy.
    Sidecar(SocketAddr),
    /// `envoy/module.yaml`'s filter reading this hopauth.yaml
    /// (`/etc/hopauth/hopauth.yaml`), the module found in [`module_dir`].
    Module(&'a Path),
}

/// The directory holding `libhopauth_envoy.so`: `$HOPAUTH_MODULE_DIR` if set (a module
/// built elsewhere, e.g. a debug one), else `cargo build --release -p hopauth-envoy
/// --features test-hooks` once per test process (a no-op when it is fresh), into
/// `<target>/test-module/`: the tests' module carries the test-only panic trigger that
/// `tests/module.rs` drives, so it never lands where `make module` and `cargo build
/// --release` put the module users load (`<target>/release/`).
pub fn module_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("HOPAUTH_MODULE_DIR").map(PathBuf::from) {
            assert!(
                dir.join("libhopauth_envoy.so").is_file(),
                "HOPAUTH_MODULE_DIR: no libhopauth_envoy.so in {}",
                dir.display()
            );
            return dir;
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        // Cargo marks its target dir with CACHEDIR.TAG (target/<profile>/deps/<exe>, or
        // target/<profile>/examples/<exe>).
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
            exe.ancestors()
                .find(|d| d.join("CACHEDIR.TAG").is_file())
                .expect("a cargo target dir above the test")
                .into()
        });
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "hopauth-envoy", "--features", "test-hooks"])
            .current_dir(repo_root())
            .env("CARGO_INCREMENTAL", "0")
            .env("CARGO_TARGET_DIR", target.join("test-module"))
            .status()
            .expect("run cargo build --release -p hopauth-envoy --features test-hooks");
        assert!(status.success(), "cargo build --release -p hopauth-envoy --features test-hooks failed");
        let dir = target.join("test-module/release");
        assert!(dir.join("libhopauth_envoy.so").is_file(), "no libhopauth_envoy.so in {}", dir.display());
        dir
    })
}

/// Envoy from the shipped config of an [`Authz`]: its listener (`port_value: 10000`) on a
/// free port, the admin port free, the app (`port_value: 8080`) at `app`, hopauth wired as
/// the `Authz` says, then `replace`d placeholders (each must occur in the file).
pub struct Launch<'a> {
    authz: Authz<'a>,
    app: u16,
    replacements: Vec<(&'a str, String)>,
    concurrency: u32,
    log_level: &'a str,
}

impl<'a> Launch<'a> {
    pub fn new(authz: Authz<'a>, app: u16) -> Self {
        Launch { authz, app, replacements: Vec::new(), concurrency: 1, log_level: "warn" }
    }

    /// Also replaces `from` (which must occur in the config) by `to`, in the same pass.
    pub fn replace(mut self, from: &'a str, to: String) -> Self {
        self.replacements.push((from, to));
        self
    }

    /// `--concurrency n` (default 1).
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    /// `--log-level` (default `warn`).
    pub fn log_level(mut self, level: &'a str) -> Self {
        self.log_level = level;
        self
    }

    /// Starts Envoy and waits until it is ready (see [`Authz`]); panics with Envoy's log if
    /// it exits or is not ready in 30 s.
    pub async fn start(self) -> Envoy {
        let (mut envoy, cluster) = self.spawn();
        let end = Instant::now() + STARTUP;
        loop {
            match envoy.poll_ready(cluster.as_deref()) {
                Ok(true) => return envoy,
                Ok(false) => {}
                Err(status) => panic!("envoy exited with {status}:\n{}", envoy.log()),
            }
            assert!(Instant::now() < end, "envoy did not become ready in {STARTUP:?}:\n{}", envoy.log());
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`Launch::start`] for synchronous tests; `Err` with the exit code and Envoy's log
    /// when Envoy refuses the config and exits.
    pub fn start_blocking(self) -> Result<Envoy, (i32, String)> {
        let (mut envoy, cluster) = self.spawn();
        let end = Instant::now() + STARTUP;
        loop {
            match envoy.poll_ready(cluster.as_deref()) {
                Ok(true) => return Ok(envoy),
                Ok(false) => {}
                Err(status) => return Err((status.code().unwrap_or(-1), envoy.log())),
            }
            assert!(Instant::now() < end, "envoy did not become ready in {STARTUP:?}:\n{}", envoy.log());
            std::thread::sleep(POLL);
        }
    }

    fn spawn(self) -> (Envoy, Option<String>) {
        let mode = match self.authz {
            Authz::Sidecar(_) => Mode::ExtAuthz,
            Authz::Module(_) => Mode::Module,
        };
        let file = mode.config_file();
        let text = std::fs::read_to_string(repo_root().join("envoy").join(file)).unwrap();
        let port = pick_port();
        let mut all = vec![
            ("port_value: 10000", format!("port_value: {port}")),
            ("port_value: 9901", "port_value: 0".to_string()),
            ("port_value: 8080", format!("port_value: {}", self.app)),
        ];
        let mut env: Vec<(&str, OsString)> = Vec::new();
        let cluster = match self.authz {
            Authz::Sidecar(addr) => {
                all.push(("port_value: 9001", format!("port_value: {}", addr.port())));
                Some(addr.to_string())
            }
            Authz::Module(config) => {
                all.push(("/etc/hopauth/hopauth.yaml", config.display().to_string()));
                env.push(("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir().into()));
                // What start_hopauth gives the sidecar: the module reads it from Envoy's env.
                env.push(("HOPAUTH_ADMIN_TOKEN", ADMIN_TOKEN.into()));
                None
            }
        };
        all.extend(self.replacements);
        for (from, _) in &all {
            assert!(text.contains(from), "envoy/{file} has no {from:?}");
        }
        let text = replace_once(&text, &all);
        let concurrency = self.concurrency.to_string();
        let args = ["--concurrency", &concurrency, "--log-level", self.log_level, "--file-flush-interval-msec", "100"];
        (Envoy::spawn(&text, port, &args, &env), cluster)
    }
}
