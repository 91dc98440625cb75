//! The module's own threads: one tokio runtime per core, its threads named `hopauth-*`,
//! never an Envoy worker. JWKS refresh, the Redis sync, the HTTP side port and unknown-`kid`
//! refetches run here. Dropping a [`ModuleRuntime`] stops its tasks and joins its threads,
//! bounded by [`SHUTDOWN_DEADLINE`], and says so in Envoy's log. Only the thread that
//! started it (Envoy's main thread) waits for that: a drop anywhere else (an Envoy worker
//! holding the last stream of a config an LDS update removed) hands the wait to a thread
//! of its own, `hopauth-stop`, and returns at once.
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, ThreadId};
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
    /// The thread that started it: the only one a drop may block.
    owner: ThreadId,
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
        Ok(Self { runtime: Some(runtime), background: Some(Background::new()), owner: thread::current().id() })
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
        let Some(runtime) = self.runtime.take() else { return };
        let background = self.background.take();
        if thread::current().id() == self.owner {
            stop(runtime, background);
            return;
        }
        // Not Envoy's main thread: most likely a worker, which must not wait. If no thread
        // can be started, the stop happens here after all (bounded as ever).
        let parts = Arc::new(Mutex::new(Some((runtime, background))));
        let theirs = parts.clone();
        let handed = thread::Builder::new().name("hopauth-stop".into()).spawn(move || {
            if let Some((runtime, background)) = theirs.lock().unwrap_or_else(PoisonError::into_inner).take() {
                stop(runtime, background);
            }
        });
        if let Err(e) = handed {
            log(
                LogLevel::Warn,
                &format!("hopauth: cannot start a thread to stop the module's threads ({e}); stopping them here"),
            );
            if let Some((runtime, background)) = parts.lock().unwrap_or_else(PoisonError::into_inner).take() {
                stop(runtime, background);
            }
        }
    }
}

/// Signals every task, lets in-flight work finish and joins the threads, all within
/// [`SHUTDOWN_DEADLINE`]; tasks still running past it are dropped.
fn stop(runtime: tokio::runtime::Runtime, background: Option<Background>) {
    let started = Instant::now();
    if let Some(background) = background {
        let stopped = runtime.block_on(async { tokio::time::timeout(SHUTDOWN_DEADLINE, background.shutdown()).await });
        if stopped.is_err() {
            log(LogLevel::Warn, "hopauth: background tasks did not stop within the deadline; aborting them");
        }
    }
    runtime.shutdown_timeout(SHUTDOWN_DEADLINE.saturating_sub(started.elapsed()));
    log(LogLevel::Info, &format!("hopauth: module threads stopped in {} ms", started.elapsed().as_millis()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A runtime whose one background task, once told to stop, holds the stop until
    /// `release` fires; it reports on the returned channel when it is done.
    fn held_runtime() -> (ModuleRuntime, tokio::sync::oneshot::Sender<()>, mpsc::Receiver<()>) {
        let mut runtime = ModuleRuntime::start().unwrap();
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let (done, finished) = mpsc::channel();
        let background = runtime.background();
        let stop = background.stop_signal();
        let handle = runtime.handle().clone();
        let _enter = handle.enter();
        runtime.background().spawn(async move {
            stop.await;
            let _ = held.await;
            let _ = done.send(());
        });
        drop(_enter);
        (runtime, release, finished)
    }

    #[test]
    fn a_drop_off_the_starting_thread_returns_before_the_threads_stop() {
        let (runtime, release, finished) = held_runtime();
        // The drop on a "worker" returns while the stop is still held up by the task.
        thread::spawn(move || drop(runtime)).join().unwrap();
        assert!(finished.try_recv().is_err(), "the drop waited for the background task");
        // The stop went on without the worker: once released, the task finishes.
        release.send(()).unwrap();
        finished.recv_timeout(SHUTDOWN_DEADLINE).expect("the background task was stopped");
    }

    #[test]
    fn a_drop_on_the_starting_thread_waits_for_the_threads() {
        let (runtime, release, finished) = held_runtime();
        let releaser = thread::spawn(move || release.send(()));
        drop(runtime);
        // Stopped before the drop returned.
        assert!(finished.try_recv().is_ok(), "the drop returned before its tasks stopped");
        releaser.join().unwrap().unwrap();
    }
}
