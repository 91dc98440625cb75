//! `hopauth serve` as a child process, for what only a real process shows: signals
//! (`kill -HUP` reload, SIGTERM drain) and exit codes. Its output goes to a log file the
//! test reads; the child is killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;

use crate::{bearer_check, wait_until, ADMIN_TOKEN};

pub struct ServeProcess {
    child: Child,
    pub log: PathBuf,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServeProcess {
    /// Runs `bin serve --config config` (whose listeners are `grpc` and `http`) on two
    /// runtime threads, with the test admin token in its environment.
    pub fn spawn(bin: &Path, config: &Path, log: PathBuf, grpc: SocketAddr, http: SocketAddr) -> Self {
        Self::spawn_with_threads(bin, config, log, grpc, http, 2)
    }

    /// [`ServeProcess::spawn`] with `--worker-threads threads`.
    pub fn spawn_with_threads(
        bin: &Path,
        config: &Path,
        log: PathBuf,
        grpc: SocketAddr,
        http: SocketAddr,
        threads: usize,
    ) -> Self {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(bin)
            .args(["serve", "--worker-threads", &threads.to_string(), "--config"])
            .arg(config)
            .env("HOPAUTH_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("run hopauth serve");
        ServeProcess { child, log, grpc, http }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `/readyz` to answer 200 (fails early, with the log, if the process exits).
    pub async fn wait_ready(&mut self) {
        let url = format!("http://{}/readyz", self.http);
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("hopauth serve exited with {status}: {}", self.log_text());
            }
            if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(tokio::time::Instant::now() < end, "hopauth serve not ready: {}", self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (`HUP`, `TERM`, ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().unwrap();
        assert!(ok.success(), "kill -{signal} {}", self.pid());
    }

    /// Waits for a log line containing `text`, `deadline` at most; the line.
    pub async fn wait_log(&self, text: &str, deadline: Duration) -> String {
        wait_until(&format!("a log line with {text:?}"), deadline, || async { self.log_text().contains(text) }).await;
        self.log_text().lines().find(|l| l.contains(text)).unwrap().to_string()
    }

    /// Waits for the process to exit, `deadline` at most.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(tokio::time::Instant::now() < end, "still running after {deadline:?}: {}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A gRPC channel to the ext_authz listener.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.grpc)).unwrap().connect().await.unwrap()
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http)).await.unwrap().text().await.unwrap()
    }
}

/// The HTTP status the ext_authz answer to `token` renders as (200: allow), or the gRPC or
/// transport error that prevented an answer.
pub async fn grpc_status(channel: &tonic::transport::Channel, token: &str) -> Result<i32, String> {
    let reply = AuthorizationClient::new(channel.clone())
        .check(bearer_check(token))
        .await
        .map_err(|e| format!("{e:?}"))?
        .into_inner();
    match reply.http_response {
        Some(HttpResponse::OkResponse(_)) => Ok(200),
        Some(HttpResponse::DeniedResponse(d)) => Ok(d.status.map(|s| s.code).unwrap_or(0)),
        other => Err(format!("no http_response: {other:?}")),
    }
}
