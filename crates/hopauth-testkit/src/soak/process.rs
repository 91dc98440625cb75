//! `hopauth serve` as a child process of the soak, its config, and signals to it and to Redis.

use super::*;

pub(super) struct HopauthProc {
    pub(super) bin: PathBuf,
    pub(super) config: PathBuf,
    pub(super) log: PathBuf,
    pub(super) http_port: u16,
    pub(super) child: Option<Child>,
}

impl HopauthProc {
    pub(super) fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(&self.bin)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("HOPAUTH_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("HOPAUTH_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub(super) async fn wait_ready(&mut self, within: Duration) {
        let url = format!("http://127.0.0.1:{}/readyz", self.http_port);
        let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
        let end = Instant::now() + within;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("hopauth exited with {status}:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < end, "hopauth not ready within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (a graceful stop), then wait for the exit.
    pub(super) async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let end = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > end {
                let _ = child.kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.wait();
    }
}

impl Drop for HopauthProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(super) fn hopauth_config(grpc: u16, http: u16, redis_url: &str, providers: &[Provider], opts: &Options) -> String {
    let mut y = format!("grpc_listen: 127.0.0.1:{grpc}\nhttp_listen: 127.0.0.1:{http}\nproviders:\n");
    for p in providers {
        let uri = format!("http://{}/jwks.json", p.jwks_proxy.addr);
        let _ = write!(
            y,
            "  - name: {}\n    issuer: {}\n    audiences: [{AUDIENCE}]\n    algorithms: [{}]\n    jwks:\n      uri: {}\n      \
             refresh_interval: {}ms\n      kid_refetch_interval: 1s\n    leeway: 0s\n    claims_to_headers:\n      sub: x-jwt-sub\n",
            p.name,
            p.issuer,
            p.alg.as_str(),
            uri,
            opts.jwks_refresh.as_millis()
        );
    }
    y.push_str(&format!(
        "revocation:\n  backend: redis\n  redis_url: \"{redis_url}\"\n  max_staleness: {}ms\n  failure_mode: deny\n",
        opts.max_staleness.as_millis()
    ));
    y
}

pub(super) fn redis_pid(redis: &RedisServer) -> u32 {
    let info = redis.cli(&["INFO", "server"]);
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("redis process_id")
}

pub(super) fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([sig, &pid.to_string()]).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "kill {sig} {pid} failed");
}
