//! Background tasks that share one stop signal and shut down together: the listeners and
//! loops of `hopauth serve` and `hopauth issuer`; and `run_server`, which runs them until
//! SIGINT/SIGTERM.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long `shutdown` lets in-flight work finish before aborting it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub struct Background {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Default for Background {
    fn default() -> Self {
        Background { stop: watch::channel(false).0, tasks: JoinSet::new() }
    }
}

impl Background {
    pub fn new() -> Self {
        Self::default()
    }

    /// A future that resolves once a stop is requested (for graceful-shutdown hooks).
    pub fn stop_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Runs `task` until it ends or a stop is requested.
    pub fn spawn_until_stopped(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        let done = self.stop_signal();
        self.tasks.spawn(async move {
            tokio::select! { _ = task => {}, _ = done => {} }
        });
    }

    /// Runs `task`, which watches `stop_signal` itself (servers with graceful shutdown).
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Resolves when a stop was requested.
    pub async fn stopped(&self) {
        self.stop_signal().await
    }

    /// Requests a stop, lets in-flight work finish (bounded), then aborts what is left.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.tasks.join_next() => if next.is_none() { break },
                _ = &mut deadline => { self.tasks.abort_all(); break }
            }
        }
    }
}

/// Builds the runtime, starts a server, runs it until SIGINT/SIGTERM (or its own stop) and
/// shuts it down cleanly.
pub fn run_server<F, E>(worker_threads: Option<usize>, start: impl FnOnce() -> F) -> ExitCode
where
    F: Future<Output = Result<Background, E>>,
    E: std::fmt::Display,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads.filter(|n| *n > 0) {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match start().await {
            Ok(background) => {
                tokio::select! {
                    _ = shutdown_signal() => tracing::info!("shutting down"),
                    _ = background.stopped() => {}
                }
                background.shutdown().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
