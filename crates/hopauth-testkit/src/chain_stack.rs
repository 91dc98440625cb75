//! The token-propagation chain, wired: client → gateway (envoy/gateway.yaml) → A's sidecar
//! → A → A's sidecar outbound → B's sidecar inbound → B → … → C, three sidecars from
//! envoy/sidecar.yaml, the services from examples/chain/service.rs (each forwards the
//! incoming `Authorization` header on its own call). Each Envoy consults the hopauth it is
//! given: one shared instance, or one per Envoy (sharing a revocation store).
//! Used by tests/chain.rs and examples/demo (whose in-process mode passes module configs
//! rendered by [`crate::module_configs`]).

use crate::chain_service as service;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;
use service::ChainConfig;

use crate::{pick_port, sidecar_over_tcp, Envoy};

/// The services, in call order.
pub const NAMES: [&str; 3] = ["A", "B", "C"];

/// One service of the chain and its sidecar.
pub struct Hop {
    pub name: &'static str,
    /// The service itself, on loopback behind its sidecar.
    pub app: SocketAddr,
    /// The sidecar's inbound listener: the only way other services reach this one.
    pub inbound: u16,
    /// The sidecar's outbound listener: this service's calls to the next one.
    pub outbound: u16,
    pub envoy: Envoy,
    pub access_log: PathBuf,
}

impl Hop {
    /// `path` on this service through its sidecar's inbound listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.inbound)
    }
}

/// The gateway and the three hops; every process stops when this is dropped.
pub struct Chain {
    pub gateway: Envoy,
    pub gateway_log: PathBuf,
    pub hops: Vec<Hop>,
    /// Holds the log files until the chain is dropped.
    _logs: tempfile::TempDir,
}

/// Where each Envoy sends its Checks.
pub struct HopauthAddrs {
    pub gateway: SocketAddr,
    /// For A's, B's and C's sidecars, in that order.
    pub sidecars: [SocketAddr; 3],
}

impl HopauthAddrs {
    /// One hopauth for every Envoy.
    pub fn shared(addr: SocketAddr) -> Self {
        HopauthAddrs { gateway: addr, sidecars: [addr; 3] }
    }
}

/// Starts a chain service on a free loopback port.
async fn start_service(name: &str, next: Option<String>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ChainConfig { name: name.to_string(), next };
    tokio::spawn(async move { service::serve(listener, config).await.unwrap() });
    addr
}

/// The Envoy config of the gateway and of each sidecar: a file name under `envoy/` or the
/// absolute path of a rendered one (in-process mode: `module_configs::render_to`).
pub struct ChainFiles {
    pub gateway: String,
    /// For A's, B's and C's sidecars, in that order.
    pub sidecars: [String; 3],
}

impl Default for ChainFiles {
    /// The shipped ext_authz configs, `envoy/gateway.yaml` and `envoy/sidecar.yaml`.
    fn default() -> Self {
        ChainFiles {
            gateway: "gateway.yaml".into(),
            sidecars: ["sidecar.yaml".into(), "sidecar.yaml".into(), "sidecar.yaml".into()],
        }
    }
}

impl Chain {
    /// Starts the services, the sidecars and the gateway on free loopback ports (access
    /// logs in a temporary directory); returns once every Envoy is ready.
    pub async fn start(hopauth: HopauthAddrs) -> Chain {
        Self::start_with_files(&ChainFiles::default(), hopauth).await
    }

    /// [`Chain::start`] with the Envoy configs `files`; each Envoy is ready once its
    /// `hopauth` cluster, at the address `hopauth` gives for it, is healthy.
    pub async fn start_with_files(files: &ChainFiles, hopauth: HopauthAddrs) -> Chain {
        let logs = tempfile::tempdir().unwrap();
        // Ports first: each service's next URL is its own sidecar's outbound listener, and
        // each sidecar's next_service is the following sidecar's inbound listener.
        let inbound: Vec<u16> = NAMES.iter().map(|_| pick_port()).collect();
        let outbound: Vec<u16> = NAMES.iter().map(|_| pick_port()).collect();
        let unused = pick_port(); // C calls no one: its next_service points at a closed port
        let mut apps = Vec::new();
        for (i, name) in NAMES.iter().enumerate() {
            let next = (i + 1 < NAMES.len()).then(|| format!("http://127.0.0.1:{}/chain", outbound[i]));
            apps.push(start_service(name, next).await);
        }
        let sidecar = |i: usize| {
            let log = logs.path().join(format!("{}.log", NAMES[i]));
            let next_in = inbound.get(i + 1).copied().unwrap_or(unused);
            let replacements = vec![
                ("port_value: 10000", format!("port_value: {}", inbound[i])),
                ("port_value: 10001", format!("port_value: {}", outbound[i])),
                ("port_value: 10002", format!("port_value: {next_in}")),
                sidecar_over_tcp(hopauth.sidecars[i]),
                ("port_value: 8080", format!("port_value: {}", apps[i].port())),
                ("path: /dev/stdout", format!("path: {}", log.display())),
            ];
            (replacements, log)
        };
        let (r_a, log_a) = sidecar(0);
        let (r_b, log_b) = sidecar(1);
        let (r_c, log_c) = sidecar(2);
        let gw_port = pick_port();
        let gateway_log = logs.path().join("gateway.log");
        let r_gw = vec![
            ("port_value: 10000", format!("port_value: {gw_port}")),
            ("port_value: 9001", format!("port_value: {}", hopauth.gateway.port())),
            ("port_value: 8080", format!("port_value: {}", inbound[0])),
            ("path: /dev/stdout", format!("path: {}", gateway_log.display())),
        ];
        let [h_a, h_b, h_c] = hopauth.sidecars;
        let [f_a, f_b, f_c] = &files.sidecars;
        let (e_a, e_b, e_c, gateway) = tokio::join!(
            Envoy::start_with(f_a, h_a, &r_a),
            Envoy::start_with(f_b, h_b, &r_b),
            Envoy::start_with(f_c, h_c, &r_c),
            Envoy::start_with(&files.gateway, hopauth.gateway, &r_gw),
        );
        let hop = |i: usize, envoy: Envoy, access_log: PathBuf| Hop {
            name: NAMES[i],
            app: apps[i],
            inbound: inbound[i],
            outbound: outbound[i],
            envoy,
            access_log,
        };
        let hops = vec![hop(0, e_a, log_a), hop(1, e_b, log_b), hop(2, e_c, log_c)];
        Chain { gateway, gateway_log, hops, _logs: logs }
    }

    /// `path` through the gateway.
    pub fn gateway_url(&self, path: &str) -> String {
        self.gateway.url(path)
    }

    /// Every Envoy, the gateway first.
    pub fn envoys(&self) -> impl Iterator<Item = &Envoy> {
        [&self.gateway].into_iter().chain(self.hops.iter().map(|h| &h.envoy))
    }

    /// Envoy's ext_authz error counters summed over every Envoy (a deny is not an error).
    pub async fn ext_authz_errors(&self) -> u64 {
        let mut n = 0;
        for envoy in self.envoys() {
            n += envoy.stat("http.inbound.ext_authz.error").await + envoy.stat("http.edge.ext_authz.error").await;
        }
        n
    }
}

/// The JSON lines of an Envoy access log.
pub fn access_log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {l}")))
        .collect()
}
