//! Background tasks that share one stop signal and shut down together: the listeners and
//! loops of `hopauth serve` and `hopauth issuer`.

use std::future::Future;
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
