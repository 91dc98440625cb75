//! The module's own threads: one tokio runtime per core, its threads named `hopauth-*`,
//! never an Envoy worker. JWKS refresh, the Redis sync, the HTTP side port and unknown-`kid`
//! refetches run here. Dropping a [`ModuleRuntime`] stops its tasks and joins its threads,
//! bounded by [`SHUTDOWN_DEADLINE`], and says so in Envoy's log.
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hopauth_service::Background;

use crate::ffi::{log, LogLevel};

/// Threads of the module's runtime: background work is light (fetches, one Redis
/// connection, the side port); decisions stay on Envoy's workers.
const THREADS: usize = 2;
/// How long shutdown waits for tasks to finish and threads to exit.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);

/// A tokio runtime owned by the module, with the background tasks it runs.
pub struct ModuleRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    background: Option<Background>,
}

impl ModuleRuntime {
    /// Starts the runtime's threads (`hopauth-rt-<n>`).
    pub fn start() -> std::io::Result<Self> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(THREADS)
            .thread_name_fn(|| format!("hopauth-rt-{}", N.fetch_add(1, Ordering::Relaxed)))
            .enable_all()
            .build()?;
        Ok(Self { runtime: Some(runtime), background: Some(Background::new()) })
    }

    /// The runtime's handle (to spawn onto it, or to enter its context).
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.as_ref().expect("runtime present until drop").handle()
    }

    /// Runs `fut` to completion on the runtime, blocking the calling (non-runtime) thread:
    /// start-up work on Envoy's main thread.
    pub fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
        self.runtime.as_ref().expect("runtime present until drop").block_on(fut)
    }

    /// The background set, to add tasks that stop with the runtime.
    pub fn background(&mut self) -> &mut Background {
        self.background.as_mut().expect("background present until drop")
    }
}

impl Drop for ModuleRuntime {
    fn drop(&mut self) {
        let started = Instant::now();
        let Some(runtime) = self.runtime.take() else { return };
        if let Some(background) = self.background.take() {
            // Signal every task, let in-flight work finish, bounded.
            let stopped =
                runtime.block_on(async { tokio::time::timeout(SHUTDOWN_DEADLINE, background.shutdown()).await });
            if stopped.is_err() {
                log(LogLevel::Warn, "hopauth: background tasks did not stop within the deadline; aborting them");
            }
        }
        // Joins the threads; tasks still running past the deadline are dropped.
        runtime.shutdown_timeout(SHUTDOWN_DEADLINE.saturating_sub(started.elapsed()));
        log(LogLevel::Info, &format!("hopauth: module threads stopped in {} ms", started.elapsed().as_millis()));
    }
}
