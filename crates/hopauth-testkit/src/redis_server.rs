//! Real `redis-server` processes on free loopback ports: single nodes (with AOF, so a
//! restart keeps data), a 3-master Cluster, and sentinels.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `bin` found on `PATH`, if it is there.
pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var("PATH").unwrap_or_default().split(':').map(|dir| Path::new(dir).join(bin)).find(|p| p.exists())
}

fn require(bin: &str) -> PathBuf {
    which(bin).unwrap_or_else(|| {
        panic!("{bin} not found on PATH: run `make tools` (installs Debian's redis-server with apt)")
    })
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    extra: Vec<String>,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl RedisServer {
    /// A node on `port` keeping its data (AOF, fsync always) in `dir`.
    pub fn start(dir: &Path, port: u16, extra: &[&str]) -> RedisServer {
        let mut s = RedisServer {
            child: None,
            port,
            dir: dir.to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let log = std::fs::File::create(self.dir.join(format!("redis-{}.log", self.port))).unwrap();
        let child = Command::new(require("redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < end, "redis-server on {} did not answer PING", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Hard kill (no save): what a crash looks like to hopauth.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Clean stop (`SHUTDOWN`, as `systemctl stop` does): Redis closes every client first.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            self.cli(&["SHUTDOWN"]);
            let _ = c.wait();
        }
    }

    /// Starts the node again (after `kill` or `stop`) on the same port and data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server on {} is still running", self.port);
        self.spawn();
    }

    /// Starts the same node again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis-cli` against this node; stdout, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(require("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A `redis-server --sentinel` monitoring `127.0.0.1:<master>` as `mymaster`; killed on drop.
pub struct Sentinel {
    child: Child,
    pub port: u16,
}

impl Sentinel {
    /// `quorum` sentinels must agree that the master is down before a failover.
    pub fn start(dir: &Path, master: u16, quorum: u32) -> Sentinel {
        let port = free_port();
        let dir = dir.join(format!("sentinel-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {master} {quorum}\n\
                 sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n",
                dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("sentinel.log")).unwrap();
        let child = Command::new(require("redis-server"))
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start redis-server --sentinel");
        let end = Instant::now() + Duration::from_secs(10);
        while !cli(port, &["SENTINEL", "get-master-addr-by-name", "mymaster"]).contains(&master.to_string()) {
            assert!(Instant::now() < end, "sentinel on {port} does not name master {master}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sentinel { child, port }
    }

    /// The master's port this sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        cli(self.port, &["SENTINEL", "get-master-addr-by-name", "mymaster"]).lines().nth(1)?.trim().parse().ok()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
