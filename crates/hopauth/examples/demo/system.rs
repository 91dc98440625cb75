//! The system `make demo` and `make up` start, in either mode:
//! - `ext_authz` (the default): Redis, the issuer, one `hopauth` per Envoy (in this
//!   process, sharing Redis; one shared instance on the memory backend without Redis), and
//!   the gateway and sidecars from `envoy/gateway.yaml` and `envoy/sidecar.yaml`;
//! - `module`: Redis, the issuer, and the same Envoys with hopauth inside each of them
//!   (libhopauth_envoy.so; the configs rendered in module mode by the testkit's
//!   `module_configs`), each Envoy's module reading its own hopauth.yaml (the same settings,
//!   its own `http_listen` side port).

use std::net::SocketAddr;
use std::time::Duration;

use hopauth_testkit::chain_stack::{Chain, ChainFiles, HopauthAddrs};
use hopauth_testkit::issuer_stack::{hopauth_yaml, post_form, start_issuer, IssuerParts, Options, TokenReply};
use hopauth_testkit::{module_configs, pick_port, redis_server, start_hopauth, wait_ready, ADMIN_TOKEN};

use crate::output::{dim, yellow};
use crate::Mode;

/// Where one Envoy's decisions are taken.
pub(crate) enum Authz {
    /// `hopauth serve` (in this process), asked over ext_authz gRPC.
    Sidecar(Box<hopauth::server::Running>),
    /// The module inside that Envoy; `http_addr` is its side port.
    Module { http_addr: SocketAddr },
}

impl Authz {
    /// `http_listen`: /metrics, /readyz, /admin.
    pub(crate) fn http_addr(&self) -> SocketAddr {
        match self {
            Authz::Sidecar(r) => r.http_addr,
            Authz::Module { http_addr } => *http_addr,
        }
    }

    fn describe(&self, label: &str) -> String {
        match self {
            Authz::Sidecar(r) => format!("grpc {} · http://{}/metrics", r.grpc_addr, r.http_addr),
            Authz::Module { http_addr } => format!("inside the {label} Envoy · http://{http_addr}/metrics"),
        }
    }
}

/// Everything `make demo` and `make up` start; `shutdown` stops it all.
pub(crate) struct System {
    pub(crate) mode: Mode,
    pub(crate) issuer: IssuerParts,
    /// `(label, authz)`: one per Envoy (gateway, A, B, C) with Redis, one shared without.
    pub(crate) hopauths: Vec<(&'static str, Authz)>,
    pub(crate) chain: Chain,
    pub(crate) client: reqwest::Client,
    /// The module-mode configs (hopauth.yaml per Envoy, rendered Envoy configs).
    _configs: Option<tempfile::TempDir>,
}

const LABELS: [&str; 4] = ["gateway", "A", "B", "C"];

impl System {
    pub(crate) async fn start(mode: Mode) -> System {
        let redis = redis_server::which("redis-server").is_some();
        if mode == Mode::Module && !redis {
            eprintln!(
                "MODE=module needs redis-server (`make redis` installs it with apt): every Envoy has its own \
                 hopauth inside, and the issuer's revocations reach them through Redis"
            );
            std::process::exit(2);
        }
        if mode == Mode::Module {
            println!(
                "{}",
                dim("starting Redis, the issuer, the gateway and A → B → C (hopauth inside each Envoy) on free ports…")
            );
        } else if redis {
            println!("{}", dim("starting Redis, the issuer, 4 hopauths, the gateway and A → B → C on free ports…"));
        } else {
            println!(
                "{} {}",
                yellow(crate::output::bold("note:")),
                yellow(
                    "redis-server is not on PATH (`make tools` installs it with apt): using the memory \
                     revocation backend with ONE hopauth shared by the gateway and every sidecar. The \
                     issuer's revocations cannot reach hopauth without Redis, so the revocation step \
                     writes through hopauth's own POST /admin/revoke instead."
                )
            );
            println!("{}", dim("starting the issuer, hopauth, the gateway and A → B → C on free ports…"));
        }
        let issuer = start_issuer(&Options { issuer_extra: String::new(), redis }).await;
        let redis_url = issuer.redis.as_ref().map(redis_server::RedisServer::url);
        let yaml = hopauth_yaml(&issuer.config.issuer, redis_url.as_deref());
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("reqwest client");
        let (hopauths, chain, configs) = match mode {
            Mode::ExtAuthz => {
                let labels: &[&'static str] = if redis { &LABELS } else { &["shared"] };
                let mut hopauths = Vec::new();
                for label in labels {
                    hopauths.push((*label, start_hopauth(&yaml).await));
                }
                for (_, h) in &hopauths {
                    wait_ready(h).await;
                }
                let addr = |i: usize| hopauths[i.min(hopauths.len() - 1)].1.grpc_addr;
                let addrs = HopauthAddrs { gateway: addr(0), sidecars: [addr(1), addr(2), addr(3)] };
                let chain = Chain::start(addrs).await;
                (hopauths.into_iter().map(|(l, h)| (l, Authz::Sidecar(Box::new(h)))).collect(), chain, None)
            }
            Mode::Module => {
                let (files, addrs, dir) = module_configs_for(&yaml);
                let sides = [addrs.gateway, addrs.sidecars[0], addrs.sidecars[1], addrs.sidecars[2]];
                let chain = Chain::start_with_files(&files, addrs).await;
                let hopauths = LABELS.iter().zip(sides).map(|(l, a)| (*l, Authz::Module { http_addr: a })).collect();
                (hopauths, chain, Some(dir))
            }
        };
        System { mode, issuer, hopauths, chain, client, _configs: configs }
    }

    pub(crate) fn redis(&self) -> bool {
        self.issuer.redis.is_some()
    }

    pub(crate) fn issuer_url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.config.issuer)
    }

    /// The hopauth the Envoy of `hop` asks (0: gateway, 1..=3: A, B, C).
    pub(crate) fn hopauth_of(&self, hop: usize) -> &Authz {
        &self.hopauths[hop.min(self.hopauths.len() - 1)].1
    }

    /// `(label, url)` of the gateway and each sidecar inbound, for `path`.
    pub(crate) fn entry_points(&self, gateway_path: &str, sidecar_path: &str) -> Vec<(String, String)> {
        let mut v = vec![("gateway".to_string(), self.chain.gateway_url(gateway_path))];
        for hop in &self.chain.hops {
            v.push((format!("{}'s sidecar", hop.name), hop.url(sidecar_path)));
        }
        v
    }

    pub(crate) fn print(&self) {
        println!();
        let row = |k: &str, v: String| println!("  {:<26} {}", k, v);
        row("mode", self.mode.describe().to_string());
        match &self.issuer.redis {
            Some(r) => row("Redis", r.url()),
            None => row("Redis", yellow("none: memory backend, one shared hopauth")),
        }
        row("issuer", format!("{} (token, revoke, logout, JWKS)", self.issuer.config.issuer));
        row("issuer admin", format!("http://{}/metrics", self.issuer.issuer.admin_addr));
        for (label, h) in &self.hopauths {
            row(&format!("hopauth ({label})"), h.describe(label));
        }
        row("gateway", format!("{} (Envoy admin http://{})", self.chain.gateway_url("/"), self.chain.gateway.admin));
        for hop in &self.chain.hops {
            row(
                &format!("{}'s sidecar", hop.name),
                format!("{} (Envoy admin http://{})", hop.url("/"), hop.envoy.admin),
            );
        }
    }

    pub(crate) async fn login(&self, user: &str, password: &str) -> TokenReply {
        let form = [("grant_type", "password"), ("username", user), ("password", password)];
        post_form(&self.client, &self.issuer_url("/token"), &form, None).await
    }

    pub(crate) async fn shutdown(self) {
        let System { issuer, hopauths, chain, .. } = self;
        drop(chain); // every Envoy (and every module inside one) is killed on drop
        for (_, h) in hopauths {
            if let Authz::Sidecar(h) = h {
                h.shutdown().await;
            }
        }
        let IssuerParts { redis, issuer, dir, .. } = issuer;
        issuer.shutdown().await;
        drop(redis); // killed on drop
        drop(dir);
    }
}

/// Module mode: per Envoy, `yaml` with its own side port, and its Envoy config rendered in
/// module mode reading it; the files, the side ports (what each Envoy's readiness waits
/// on) and the directory holding them. Envoy finds the module through the environment.
fn module_configs_for(yaml: &str) -> (ChainFiles, HopauthAddrs, tempfile::TempDir) {
    std::env::set_var(module_configs::SEARCH_PATH_ENV, module_configs::module_dir());
    // The module reads the admin token from the environment, as `hopauth serve` does.
    std::env::set_var("HOPAUTH_ADMIN_TOKEN", ADMIN_TOKEN);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let render = |label: &str, file: &str| {
        let side = SocketAddr::from(([127, 0, 0, 1], pick_port()));
        let own = dir.path().join(label);
        std::fs::create_dir_all(&own).unwrap();
        let hopauth = own.join("hopauth.yaml");
        std::fs::write(&hopauth, yaml.replace("http_listen: 127.0.0.1:0", &format!("http_listen: {side}"))).unwrap();
        let config = module_configs::render_to(file, &hopauth, side, &own);
        (config.display().to_string(), side)
    };
    let (gateway, gw) = render("gateway", "gateway.yaml");
    let [(a, sa), (b, sb), (c, sc)] = ["A", "B", "C"].map(|l| render(l, "sidecar.yaml"));
    let files = ChainFiles { gateway, sidecars: [a, b, c] };
    (files, HopauthAddrs { gateway: gw, sidecars: [sa, sb, sc] }, dir)
}
