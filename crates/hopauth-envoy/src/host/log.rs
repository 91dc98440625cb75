//! The decision core logs through `tracing`; inside Envoy those lines go to Envoy's own
//! log (`[dynamic_modules]`), at the event's level. Installed once per process, as the
//! global subscriber, unless the host process already has one.
use std::io;

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

use crate::ffi::{log, LogLevel};

/// Installs the bridge (a no-op after the first call). `RUST_LOG` filters as usual;
/// the default is `info`.
pub fn install() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(EnvoyLog)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_level(false)
        .try_init();
}

/// Hands each formatted event to Envoy's logger.
#[derive(Clone, Copy)]
struct EnvoyLog;

/// One event's line, written to Envoy on drop.
struct Line {
    level: LogLevel,
    buf: Vec<u8>,
}

impl io::Write for Line {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if !text.is_empty() {
            log(self.level, &format!("hopauth: {text}"));
        }
    }
}

impl<'a> MakeWriter<'a> for EnvoyLog {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { level: LogLevel::Info, buf: Vec::new() }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        let level = match *meta.level() {
            Level::TRACE => LogLevel::Trace,
            Level::DEBUG => LogLevel::Debug,
            Level::INFO => LogLevel::Info,
            Level::WARN => LogLevel::Warn,
            Level::ERROR => LogLevel::Error,
        };
        Line { level, buf: Vec::new() }
    }
}
