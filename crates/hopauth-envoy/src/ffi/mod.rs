//! The boundary to Envoy's dynamic-module C ABI (Envoy 1.40, ABI `v0.2.0`), and the safe
//! API over it that the rest of the crate uses: the only module with `unsafe`, which stays
//! in its submodules, each block with a `// SAFETY:` comment. This file has none.
//!
//! - [`decl`]: the C types and the `extern "C"` callbacks we call.
//! - [`raw`]: one safe handle per raw pointer (a stream in a hook, a config, a scheduler).
//! - [`hooks`]: every `envoy_dynamic_module_on_*` hook Envoy 1.40.0 looks up, each that
//!   runs Rust code inside `catch_unwind` (a panic is logged and answered 503; it never
//!   unwinds into Envoy).
//! - here: what a filter implementation sees. The handles ([`RequestContext`],
//!   [`ConfigContext`]) are built only by the hooks and borrow from the hook, so a header
//!   value read from Envoy cannot outlive the hook, nor survive a header mutation (setters
//!   take `&mut self`). [`Scheduler`] is the one handle that may leave the hook and the
//!   worker thread.
//!
//! The layer knows no filter: the hooks build filter configs through the [`Module`] table
//! the crate root hands them (`crate::MODULE`). Argument layouts and lifetimes are in
//! `ABI.md`, with where each fact came from.
use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

#[allow(unsafe_code)]
mod decl;
#[allow(unsafe_code)]
mod hooks;
#[allow(unsafe_code)]
mod raw;

use self::decl::HeaderMapKind;
use self::raw::{RawConfig, RawFilter, RawHeaders, RawScheduler};

/// What the filter chain does after a headers hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersStatus {
    /// Pass the headers on to the next filter now.
    Continue,
    /// Hold the request; resume it later with [`RequestContext::continue_decoding`]
    /// (from [`HttpFilter::on_scheduled`]) or answer it with a local reply.
    StopIteration,
}

/// Envoy's log levels (`envoy_dynamic_module_type_log_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `trace`
    Trace,
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
}

/// Writes `message` to Envoy's own log (logger id `dynamic_modules`). Any thread.
pub fn log(level: LogLevel, message: &str) {
    raw::log(level, message);
}

/// A filter configuration error: Envoy refuses the config and its log shows this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// What is wrong, naming the offending key or value.
    pub message: String,
}

impl ConfigError {
    /// An error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Body of the 503 a stream gets when the filter failed (panicked, or lost its decision).
pub const FAILURE_BODY: &[u8] = b"{\"error\":\"internal\",\"reason\":\"filter failure\"}";

/// The filters a module provides, as Envoy's hooks reach them: the table the hooks look
/// filter configs up in (one, `crate::MODULE`, for the whole process).
pub trait Module: Sync {
    /// Builds the filter configuration for `filter_name` from its `filter_config` bytes
    /// (main thread, once per filter config in Envoy's config).
    fn new_filter_config(
        &self,
        filter_name: &str,
        config: &[u8],
        cx: &mut ConfigContext<'_>,
    ) -> Result<Box<dyn FilterFactory>, ConfigError>;

    /// Builds a per-route config (`typed_per_filter_config`) for the filter `name` (empty
    /// when the route's config names none).
    fn new_per_route_config(&self, name: &str, config: &[u8]) -> Result<RouteConfig, ConfigError>;
}

/// Creates one [`HttpFilter`] per HTTP stream. Shared by every worker thread.
pub trait FilterFactory: Send + Sync {
    /// A new filter for one stream (called on the stream's worker thread).
    fn new_filter(&self) -> Box<dyn HttpFilter>;
}

/// One HTTP stream's filter. It lives on one worker thread from creation to drop.
///
/// Envoy may re-enter the module while a hook runs (a local reply notifies the filter
/// chain, `continue_decoding` runs the next filters), so these methods are the only
/// places the filter is touched; re-entrant hooks never reach it.
pub trait HttpFilter {
    /// The request headers arrived.
    fn on_request_headers(&mut self, ctx: &mut RequestContext<'_>, end_of_stream: bool) -> HeadersStatus;

    /// An event committed through this stream's [`Scheduler`] arrived on the worker.
    fn on_scheduled(&mut self, ctx: &mut RequestContext<'_>, event_id: u64) {
        let _ = (ctx, event_id);
    }
}

/// A counter defined in [`ConfigContext::define_counter`]; increment it per request with
/// [`RequestContext::increment_counter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    id: usize,
    labels: usize,
}

/// The handle given while Envoy creates a filter configuration (main thread).
/// Stats can be defined only here.
pub struct ConfigContext<'hook> {
    raw: &'hook RawConfig,
}

impl<'hook> ConfigContext<'hook> {
    fn new(raw: &'hook RawConfig) -> Self {
        Self { raw }
    }

    /// Defines a counter (no labels). Envoy shows it at `/stats` as
    /// `dynamicmodulescustom.<name>`.
    pub fn define_counter(&mut self, name: &str) -> Result<Counter, ConfigError> {
        self.define_counter_with_labels(name, &[])
    }

    /// Defines a counter with label names `labels`; every increment gives one value per
    /// name, in order. Envoy shows it at `/stats/prometheus` as
    /// `envoy_dynamicmodulescustom_<name>{<label>="<value>",…}`. Label values must come
    /// from closed sets (the team rule for metrics).
    pub fn define_counter_with_labels(&mut self, name: &str, labels: &[&str]) -> Result<Counter, ConfigError> {
        match self.raw.define_counter(name, labels) {
            Ok(id) => Ok(Counter { id, labels: labels.len() }),
            Err(code) => {
                Err(ConfigError::new(format!("Envoy refused to define counter {name:?} (metrics result {code})")))
            }
        }
    }
}

/// Per-filter state kept by `ffi` next to the filter, reachable from its hooks.
#[derive(Default)]
struct StreamState {
    scheduler: Option<Scheduler>,
    replied: bool,
}

/// The handle given to [`HttpFilter`] hooks: the stream's request headers, local replies,
/// dynamic metadata, per-route config, the scheduler and counters.
/// It exists only during one hook, on the stream's worker thread.
pub struct RequestContext<'hook> {
    raw: RawFilter<'hook>,
    state: &'hook mut StreamState,
}

impl<'hook> RequestContext<'hook> {
    fn new(raw: RawFilter<'hook>, state: &'hook mut StreamState) -> Self {
        Self { raw, state }
    }

    /// Every value of request header `name` (lowercase), in order. The bytes are Envoy's
    /// own (not necessarily UTF-8), valid until the next mutation or the end of the hook.
    /// For several lookups in one hook, [`headers`](Self::headers) is cheaper.
    pub fn header<'n>(&self, name: &'n str) -> HeaderValues<'_, 'n> {
        let (first, count) = self.raw.header(HeaderMapKind::RequestHeaders, name, 0);
        HeaderValues { raw: &self.raw, name, first, index: 0, count }
    }

    /// The first value of request header `name`, if any.
    pub fn first_header(&self, name: &str) -> Option<&[u8]> {
        self.raw.header(HeaderMapKind::RequestHeaders, name, 0).0
    }

    /// Every request header, in Envoy's order (pseudo-headers first), read with one call:
    /// the cheap way to look up several names, or one Envoy does not index (its lookup by
    /// name builds a table of the whole map first).
    pub fn headers(&self) -> HeaderList<'_> {
        HeaderList { raw: self.raw.headers(HeaderMapKind::RequestHeaders) }
    }

    /// Replaces every value of request header `name` with `value`.
    pub fn set_header(&mut self, name: &str, value: &[u8]) -> bool {
        self.raw.set_header(HeaderMapKind::RequestHeaders, name, Some(value))
    }

    /// Appends a value to request header `name`, keeping existing ones.
    pub fn add_header(&mut self, name: &str, value: &[u8]) -> bool {
        self.raw.add_header(HeaderMapKind::RequestHeaders, name, value)
    }

    /// Removes every value of request header `name`.
    pub fn remove_header(&mut self, name: &str) -> bool {
        self.raw.set_header(HeaderMapKind::RequestHeaders, name, None)
    }

    /// Answers the request locally. The hook's status is then forced to
    /// [`HeadersStatus::StopIteration`]; a second reply in the same stream is ignored.
    /// `details` shows in `%RESPONSE_CODE_DETAILS%`.
    pub fn send_local_reply(&mut self, status: u16, headers: &[(&str, &[u8])], body: &[u8], details: &str) {
        if self.state.replied {
            return;
        }
        self.state.replied = true;
        self.raw.send_response(u32::from(status), headers, body, details);
    }

    /// Answers 503 with [`FAILURE_BODY`]: what a stream gets when the filter itself failed
    /// (a panic, a lost decision). `details` shows in `%RESPONSE_CODE_DETAILS%`.
    pub fn send_failure_reply(&mut self, details: &str) {
        self.send_local_reply(503, &[("content-type", b"application/json")], FAILURE_BODY, details);
    }

    /// Whether a local reply was sent in this stream.
    pub fn replied(&self) -> bool {
        self.state.replied
    }

    /// Sets dynamic metadata `namespace.key` to a string.
    pub fn set_metadata_string(&mut self, namespace: &str, key: &str, value: &str) {
        self.raw.set_metadata_string(namespace, key, value);
    }

    /// Sets dynamic metadata `namespace.key` to a number.
    pub fn set_metadata_number(&mut self, namespace: &str, key: &str, value: f64) {
        self.raw.set_metadata_number(namespace, key, value);
    }

    /// Sets dynamic metadata `namespace.key` to `value` for every pair of `entries`, in one
    /// merge per 16 pairs (cheaper than one [`set_metadata_string`](Self::set_metadata_string)
    /// per pair).
    pub fn set_metadata_strings<K: AsRef<str>, V: AsRef<str>>(&mut self, namespace: &str, entries: &[(K, V)]) {
        self.raw.set_metadata_strings(namespace, entries);
    }

    /// Sets dynamic metadata `namespace.key` to a boolean.
    pub fn set_metadata_bool(&mut self, namespace: &str, key: &str, value: bool) {
        self.raw.set_metadata_bool(namespace, key, value);
    }

    /// Merges the fields of `serialized_struct` (a `google.protobuf.Struct` in protobuf
    /// binary) into dynamic metadata `namespace`: nested objects, lists and booleans keep
    /// their types, unlike the string and number setters.
    pub fn set_metadata_struct(&mut self, namespace: &str, serialized_struct: &[u8]) {
        self.raw.set_metadata_struct(namespace, serialized_struct);
    }

    /// The most specific per-route config of this filter for the request's route, if it is
    /// a `T` (what [`Module::new_per_route_config`] built).
    pub fn route_config<T: Any>(&self) -> Option<&T> {
        self.raw.route_config()?.downcast_ref::<T>()
    }

    /// This stream's scheduler, created on first use (on the worker, as the ABI requires).
    pub fn scheduler(&mut self) -> Scheduler {
        if let Some(s) = &self.state.scheduler {
            return s.clone();
        }
        let s = Scheduler { inner: Arc::new(Mutex::new(Some(self.raw.new_scheduler()))) };
        self.state.scheduler = Some(s.clone());
        s
    }

    /// Resumes a request held by [`HeadersStatus::StopIteration`].
    pub fn continue_decoding(&mut self) {
        self.raw.continue_decoding();
    }

    /// Adds `by` to `counter` (defined without labels).
    pub fn increment_counter(&mut self, counter: Counter, by: u64) -> bool {
        self.increment_counter_with_labels(counter, &[], by)
    }

    /// Adds `by` to `counter` for the label `values` (one per label name it was defined
    /// with). A wrong number of values is refused here (`false`): Envoy would not check it.
    pub fn increment_counter_with_labels(&mut self, counter: Counter, values: &[&str], by: u64) -> bool {
        if values.len() != counter.labels {
            return false;
        }
        self.raw.increment_counter(counter.id, values, by)
    }
}

/// The request headers as one list; see [`RequestContext::headers`]. Names are Envoy's
/// (lowercase); the bytes are valid until the next mutation or the end of the hook.
pub struct HeaderList<'a> {
    raw: RawHeaders<'a>,
}

impl<'a> HeaderList<'a> {
    /// Every header as (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        (0..self.raw.len()).filter_map(|i| self.raw.get(i))
    }

    /// Every value of header `name` (ASCII case-insensitive), in order.
    pub fn values<'s, 'n>(&'s self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 's, 'n> {
        self.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }

    /// Whether header `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }
}

/// The values of one request header; see [`RequestContext::header`].
pub struct HeaderValues<'a, 'n> {
    raw: &'a RawFilter<'a>,
    name: &'n str,
    first: Option<&'a [u8]>,
    index: usize,
    count: usize,
}

impl<'a> Iterator for HeaderValues<'a, '_> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.index >= self.count {
            return None;
        }
        let value = if self.index == 0 {
            self.first.take()
        } else {
            self.raw.header(HeaderMapKind::RequestHeaders, self.name, self.index).0
        };
        self.index += 1;
        // A value Envoy reports but cannot return reads as empty rather than ending early.
        Some(value.unwrap_or_default())
    }
}

/// Wakes a held stream from any thread: [`Scheduler::commit`] makes Envoy call
/// [`HttpFilter::on_scheduled`] on the stream's worker. After the stream ends the handle
/// is inert (commits return `false`), so a late background result costs nothing.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Mutex<Option<RawScheduler>>>,
}

impl Scheduler {
    /// Schedules `event_id` for the stream. `false` if the stream is already gone.
    pub fn commit(&self, event_id: u64) -> bool {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(raw) => {
                raw.commit(event_id);
                true
            }
            None => false,
        }
    }

    /// Deletes Envoy's scheduler object (stream destroyed); later commits are no-ops.
    fn close(&self) {
        let taken = self.inner.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(raw) = taken {
            raw.delete();
        }
    }
}

/// A per-route config value, type-erased; see [`RequestContext::route_config`].
pub type RouteConfig = Box<dyn Any + Send + Sync>;
