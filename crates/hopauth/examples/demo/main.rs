//! `make demo` / `cargo run --release --example demo`: the whole system, told as a story.
//!
//! Starts, on free loopback ports: Redis (when `redis-server` is on `PATH`), the reference
//! issuer (`hopauth issuer`, in-process), the edge gateway (`envoy/gateway.yaml`) and the
//! chain A → B → C, each service behind its own sidecar (`envoy/sidecar.yaml`), and
//! hopauth for every Envoy (see [`system`] for the two modes). Then: log in; call
//! A → B → C with every hop verified; no token and a tampered token refused at the
//! gateway; a call that bypasses the gateway refused by B's sidecar; revoke the token at
//! the issuer and time every hop's refusal; refresh and continue; a scope-protected route.
//! Exits 0 when every step behaved, 1 otherwise (naming the step), after stopping every
//! process it started.
//!
//! `--mode ext_authz` (the default, `make demo`): hopauth beside every Envoy, asked over
//! ext_authz. `--mode module` (`make demo MODE=module`): hopauth inside every Envoy, the
//! dynamic module `libhopauth_envoy.so` (`make module` builds it); needs Redis.
//!
//! `--up` (`make up`, `make up MODE=module`) starts the same system, prints its URLs and a
//! ready-made `curl`, and keeps it running until Ctrl-C. Output is coloured on a terminal;
//! plain when stdout is not a TTY or `NO_COLOR` is set. The wiring is the tests':
//! the testkit's `issuer_stack`, `chain_stack`, `redis_server` and `module_configs`.

mod checks;
mod output;
mod revoke;
mod steps;
mod story;
mod system;
mod up;

use std::time::Instant;

use output::{bold, dim};
use system::System;

/// Where hopauth runs: beside every Envoy (ext_authz) or inside it (the module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    ExtAuthz,
    Module,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s {
            "ext_authz" => Some(Mode::ExtAuthz),
            "module" => Some(Mode::Module),
            _ => None,
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Mode::ExtAuthz => "ext_authz: hopauth beside every Envoy, one Check per request over gRPC",
            Mode::Module => "module: hopauth inside every Envoy (libhopauth_envoy.so), no hop",
        }
    }
}

async fn run(up: bool, mode: Mode) -> i32 {
    println!("{}", bold("hopauth demo: an issuer, a gateway and a chain of services, every hop verifying the JWT"));
    // Panics with install instructions when Envoy is missing, before anything starts.
    let envoy_bin = hopauth_testkit::envoy_bin();
    let started = Instant::now();
    let log = if up { up::log_to_file() } else { None };
    let sys = System::start(mode).await;
    sys.print();
    println!("  {}", dim(format!("Envoy {}; ready in {:.1} s", envoy_bin.display(), started.elapsed().as_secs_f64())));
    if up {
        up::run_up(sys, log).await
    } else {
        story::run_demo(sys).await
    }
}

const USAGE: &str = "usage: demo [--up] [--mode ext_authz|module]";

/// `(up, mode)` from the command line; exits 2 with the usage on anything else.
fn parse_args() -> (bool, Mode) {
    let (mut up, mut mode) = (false, Mode::ExtAuthz);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--up" => up = true,
            "--mode" => match args.next().as_deref().and_then(Mode::parse) {
                Some(m) => mode = m,
                None => {
                    eprintln!("--mode takes ext_authz or module\n{USAGE}");
                    std::process::exit(2);
                }
            },
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    (up, mode)
}

fn main() {
    let (up, mode) = parse_args();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let code = runtime.block_on(run(up, mode));
    // Every process is gone before exiting: `System::shutdown` stopped Envoy, hopauth, the
    // issuer and Redis; dropping the runtime ends the chain services' tasks.
    drop(runtime);
    std::process::exit(code);
}
