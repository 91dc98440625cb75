//! The boundary to Envoy's dynamic-module C ABI (Envoy 1.40, ABI `v0.2.0`): the only file
//! of this crate with `unsafe`.
//!
//! - `extern "C"` declarations of exactly the callbacks the safe wrapper uses. Each is
//!   exported by Envoy 1.40.0 (`tests/abi.rs` checks them against `nm -D`) and exercised
//!   through a real Envoy by `tests/abi.rs`; Envoy does not check signatures, so a
//!   declaration that drifts from Envoy's is undefined behaviour, not an error.
//! - Every `envoy_dynamic_module_on_http_filter_*` hook Envoy 1.40.0 looks up (it refuses a
//!   module that lacks one), plus `envoy_dynamic_module_on_program_init`.
//! - Each hook that runs Rust code does so inside `catch_unwind`: a panic is logged, the
//!   stream is answered 503 (or the config refused) and the filter is poisoned; it never
//!   unwinds into Envoy. Hooks whose body is a constant cannot panic.
//!
//! Argument layouts and lifetimes are documented in `ABI.md`, with where each fact came
//! from.
use std::any::Any;
use std::ffi::{c_void, CStr};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use crate::filter::{
    ConfigContext, FilterFactory, HeadersStatus, HttpFilter, LogLevel, RequestContext, RouteConfig, StreamState,
};
use crate::registry;

// ------------------------------------------------------------------------------------------
// ABI types (abi.h "Common Types" / "HTTP Filter Types")
// ------------------------------------------------------------------------------------------

/// `envoy_dynamic_module_type_envoy_buffer` and `..._module_buffer`: `{ const char*, size_t }`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Buffer {
    ptr: *const u8,
    length: usize,
}

impl Buffer {
    const NULL: Buffer = Buffer { ptr: ptr::null(), length: 0 };

    fn of(bytes: &[u8]) -> Buffer {
        Buffer { ptr: bytes.as_ptr(), length: bytes.len() }
    }
}

/// `envoy_dynamic_module_type_{module,envoy}_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
struct HttpHeader {
    key_ptr: *const u8,
    key_length: usize,
    value_ptr: *const u8,
    value_length: usize,
}

/// `envoy_dynamic_module_type_http_header_type` (a C enum: `int`).
#[derive(Clone, Copy)]
#[repr(u32)]
pub(crate) enum HeaderMapKind {
    RequestHeaders = 0,
}

type FilterEnvoyPtr = *mut c_void;
type FilterModulePtr = *const c_void;
type ConfigEnvoyPtr = *mut c_void;
type ConfigModulePtr = *const c_void;
type PerRouteModulePtr = *const c_void;
type SchedulerPtr = *mut c_void;

/// `envoy_dynamic_module_type_on_http_filter_request_headers_status`.
const HEADERS_CONTINUE: u32 = 0;
const HEADERS_STOP_ITERATION: u32 = 1;
/// `..._request_body_status_Continue`, `..._trailers_status_Continue`, etc.: all 0.
const CONTINUE: u32 = 0;
/// `envoy_dynamic_module_type_metrics_result_Success`.
const METRICS_SUCCESS: u32 = 0;

// ------------------------------------------------------------------------------------------
// Callbacks (implemented by Envoy). Only those the safe wrapper uses.
// ------------------------------------------------------------------------------------------

extern "C" {
    fn envoy_dynamic_module_callback_log(level: u32, message: Buffer);

    fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: Buffer,
        result: *mut Buffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_headers_size(filter: FilterEnvoyPtr, header_type: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: u32,
        result_headers: *mut HttpHeader,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status_code: u32,
        headers: *mut HttpHeader,
        headers_size: usize,
        body: Buffer,
        details: Buffer,
    );

    fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter: FilterEnvoyPtr,
        ns: Buffer,
        key: Buffer,
        value: Buffer,
    );
    fn envoy_dynamic_module_callback_http_set_dynamic_metadata_number(
        filter: FilterEnvoyPtr,
        ns: Buffer,
        key: Buffer,
        value: f64,
    );

    fn envoy_dynamic_module_callback_get_most_specific_route_config(filter: FilterEnvoyPtr) -> PerRouteModulePtr;

    fn envoy_dynamic_module_callback_http_filter_scheduler_new(filter: FilterEnvoyPtr) -> SchedulerPtr;
    fn envoy_dynamic_module_callback_http_filter_scheduler_commit(scheduler: SchedulerPtr, event_id: u64);
    fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: SchedulerPtr);
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoyPtr);

    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: Buffer,
        label_names: *mut Buffer,
        label_names_length: usize,
        counter_id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut Buffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}

// ------------------------------------------------------------------------------------------
// Safe handles over the raw pointers (used by `filter`).
// ------------------------------------------------------------------------------------------

/// Writes to Envoy's log. Envoy's logger is thread-safe; the message is copied by Envoy.
pub(crate) fn log(level: LogLevel, message: &str) {
    let level = match level {
        LogLevel::Trace => 0,
        LogLevel::Debug => 1,
        LogLevel::Info => 2,
        LogLevel::Warn => 3,
        LogLevel::Error => 4,
    };
    // SAFETY: `message` is valid for the duration of the call; Envoy copies it and the
    // callback may be called from any thread (abi.h "Logging").
    unsafe { envoy_dynamic_module_callback_log(level, Buffer::of(message.as_bytes())) }
}

/// Envoy's `DynamicModuleHttpFilter*`, valid for `'hook`: it is built only inside a hook
/// from the pointer Envoy passed, and `'hook` never outlives that hook. Not `Send`: the
/// pointer may be used only on the stream's worker thread.
pub(crate) struct RawFilter<'hook> {
    ptr: FilterEnvoyPtr,
    _hook: PhantomData<&'hook ()>,
}

impl<'hook> RawFilter<'hook> {
    fn new(ptr: FilterEnvoyPtr) -> Self {
        Self { ptr, _hook: PhantomData }
    }

    /// Value `index` of header `name` and the number of values.
    pub(crate) fn header(&self, kind: HeaderMapKind, name: &str, index: usize) -> (Option<&[u8]>, usize) {
        let mut out = Buffer::NULL;
        let mut count = 0usize;
        // SAFETY: `self.ptr` is the live filter of the current hook on its worker thread
        // (RawFilter invariant); `name`, `out` and `count` are valid for the call.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                self.ptr,
                kind as u32,
                Buffer::of(name.as_bytes()),
                &mut out,
                index,
                &mut count,
            )
        };
        if !ok || out.ptr.is_null() {
            return (None, count);
        }
        // SAFETY: Envoy owns the bytes and keeps them valid until the end of the hook unless a
        // header setter is called (abi.h on http_get_header); the returned slice borrows
        // `self`, and every setter takes `&mut self`, so the slice cannot outlive either.
        let value = unsafe { std::slice::from_raw_parts(out.ptr, out.length) };
        (Some(value), count)
    }

    /// Every header of `kind` as (name, value).
    pub(crate) fn headers(&self, kind: HeaderMapKind) -> Vec<(&[u8], &[u8])> {
        // SAFETY: RawFilter invariant (live filter, worker thread).
        let n = unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.ptr, kind as u32) };
        if n == 0 {
            return Vec::new();
        }
        let empty = HttpHeader { key_ptr: ptr::null(), key_length: 0, value_ptr: ptr::null(), value_length: 0 };
        let mut raw = vec![empty; n];
        // SAFETY: RawFilter invariant; `raw` has room for the `n` headers Envoy just
        // reported, and nothing can change the map between the two calls (same thread).
        let ok = unsafe { envoy_dynamic_module_callback_http_get_headers(self.ptr, kind as u32, raw.as_mut_ptr()) };
        if !ok {
            return Vec::new();
        }
        raw.iter()
            .map(|h| (slice_or_empty(h.key_ptr, h.key_length), slice_or_empty(h.value_ptr, h.value_length)))
            .collect()
    }

    /// Sets (`Some`) or removes (`None`) header `name`.
    pub(crate) fn set_header(&mut self, kind: HeaderMapKind, name: &str, value: Option<&[u8]>) -> bool {
        let value = value.map_or(Buffer::NULL, Buffer::of);
        // SAFETY: RawFilter invariant; Envoy copies key and value. A null value pointer
        // removes the header (abi.h on http_set_header).
        unsafe {
            envoy_dynamic_module_callback_http_set_header(self.ptr, kind as u32, Buffer::of(name.as_bytes()), value)
        }
    }

    /// Appends a value to header `name`.
    pub(crate) fn add_header(&mut self, kind: HeaderMapKind, name: &str, value: &[u8]) -> bool {
        // SAFETY: RawFilter invariant; Envoy copies key and value.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                self.ptr,
                kind as u32,
                Buffer::of(name.as_bytes()),
                Buffer::of(value),
            )
        }
    }

    /// Sends a local reply (the caller makes the hook return StopIteration).
    pub(crate) fn send_response(&mut self, status: u32, headers: &[(&str, &[u8])], body: &[u8], details: &str) {
        let mut raw: Vec<HttpHeader> = headers
            .iter()
            .map(|(k, v)| HttpHeader {
                key_ptr: k.as_ptr(),
                key_length: k.len(),
                value_ptr: v.as_ptr(),
                value_length: v.len(),
            })
            .collect();
        // SAFETY: RawFilter invariant; `raw`, `body` and `details` outlive the call and
        // Envoy copies them. Envoy may re-enter the module (local_reply, stream_complete
        // hooks) during this call; those hooks never touch the module's filter object.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.ptr,
                status,
                raw.as_mut_ptr(),
                raw.len(),
                Buffer::of(body),
                Buffer::of(details.as_bytes()),
            )
        }
    }

    pub(crate) fn set_metadata_string(&mut self, ns: &str, key: &str, value: &str) {
        // SAFETY: RawFilter invariant; Envoy copies the three buffers.
        unsafe {
            envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
                self.ptr,
                Buffer::of(ns.as_bytes()),
                Buffer::of(key.as_bytes()),
                Buffer::of(value.as_bytes()),
            )
        }
    }

    pub(crate) fn set_metadata_number(&mut self, ns: &str, key: &str, value: f64) {
        // SAFETY: RawFilter invariant; Envoy copies the two buffers.
        unsafe {
            envoy_dynamic_module_callback_http_set_dynamic_metadata_number(
                self.ptr,
                Buffer::of(ns.as_bytes()),
                Buffer::of(key.as_bytes()),
                value,
            )
        }
    }

    /// The per-route config object this module built for the request's route, if any.
    pub(crate) fn route_config(&self) -> Option<&(dyn Any + Send + Sync)> {
        // SAFETY: RawFilter invariant.
        let p = unsafe { envoy_dynamic_module_callback_get_most_specific_route_config(self.ptr) };
        if p.is_null() {
            return None;
        }
        // SAFETY: every non-null pointer Envoy returns here is one our
        // `on_http_filter_per_route_config_new` produced by `Box::into_raw(Box<RouteConfig>)`,
        // freed only in `..._per_route_config_destroy`, which Envoy calls after the route
        // (held by this stream) is gone; the borrow is tied to `self`, i.e. to the hook.
        let boxed: &RouteConfig = unsafe { &*p.cast::<RouteConfig>() };
        Some(boxed.as_ref())
    }

    pub(crate) fn new_scheduler(&mut self) -> RawScheduler {
        // SAFETY: RawFilter invariant; the ABI requires this on the worker thread, which a
        // RawFilter is confined to (it is not Send).
        let ptr = unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.ptr) };
        RawScheduler { ptr }
    }

    pub(crate) fn continue_decoding(&mut self) {
        // SAFETY: RawFilter invariant. Envoy runs the next filters synchronously; hooks it
        // may re-enter meanwhile never touch the module's filter object.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.ptr) }
    }

    /// Adds `by` to counter `id` with `labels` (as many as it was defined with; the caller
    /// checks, Envoy does not).
    pub(crate) fn increment_counter(&mut self, id: usize, labels: &[&str], by: u64) -> bool {
        let mut values: Vec<Buffer> = labels.iter().map(|l| Buffer::of(l.as_bytes())).collect();
        let values_ptr = if values.is_empty() { ptr::null_mut() } else { values.as_mut_ptr() };
        // SAFETY: RawFilter invariant; `id` came from define_counter on the config that
        // created this filter, and the number of label values equals the number of label
        // names it was defined with (checked by `filter::RequestContext`); `values` outlives
        // the call.
        let r = unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(self.ptr, id, values_ptr, values.len(), by)
        };
        r == METRICS_SUCCESS
    }
}

fn slice_or_empty<'a>(p: *const u8, len: usize) -> &'a [u8] {
    if p.is_null() {
        return &[];
    }
    // SAFETY: only called by `RawFilter::headers` on buffers Envoy returned, which stay valid
    // until the end of the hook or the next mutation; the caller ties 'a to `&self`.
    unsafe { std::slice::from_raw_parts(p, len) }
}

/// Envoy's `DynamicModuleHttpFilterConfig*` during `on_http_filter_config_new` (main thread).
pub(crate) struct RawConfig {
    ptr: ConfigEnvoyPtr,
}

impl RawConfig {
    /// Defines counter `name` with `labels` (label names); its id.
    pub(crate) fn define_counter(&self, name: &str, labels: &[&str]) -> Result<usize, u32> {
        let mut names: Vec<Buffer> = labels.iter().map(|l| Buffer::of(l.as_bytes())).collect();
        let names_ptr = if names.is_empty() { ptr::null_mut() } else { names.as_mut_ptr() };
        let mut id = 0usize;
        // SAFETY: `self.ptr` is the config Envoy passed to the running config_new hook (main
        // thread), the only place stats may be defined; `name`, `names` and `id` outlive the
        // call (Envoy copies the names).
        let r = unsafe {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                self.ptr,
                Buffer::of(name.as_bytes()),
                names_ptr,
                names.len(),
                &mut id,
            )
        };
        if r == METRICS_SUCCESS {
            Ok(id)
        } else {
            Err(r)
        }
    }
}

/// Envoy's `DynamicModuleHttpFilterScheduler*`. Allocated by Envoy, owned by the module,
/// deleted exactly once by [`RawScheduler::delete`]. It holds a weak reference to the
/// filter, so a commit after the stream ended is dropped by Envoy.
pub(crate) struct RawScheduler {
    ptr: SchedulerPtr,
}

// SAFETY: abi.h: `scheduler_commit` may be called from any thread. The pointer is only
// dereferenced by Envoy; `filter::Scheduler` serialises commit and delete with a mutex, so
// no commit runs during or after the delete.
#[allow(unsafe_code)]
unsafe impl Send for RawScheduler {}

impl RawScheduler {
    pub(crate) fn commit(&self, event_id: u64) {
        // SAFETY: the scheduler is not yet deleted (`filter::Scheduler` holds it in its
        // mutex until `delete`, which consumes it); commit is thread-safe in Envoy.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(self.ptr, event_id) }
    }

    pub(crate) fn delete(self) {
        // SAFETY: consumed by value, so this runs once per scheduler Envoy allocated.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(self.ptr) }
    }
}

// ------------------------------------------------------------------------------------------
// Module-side objects behind the pointers we hand to Envoy.
// ------------------------------------------------------------------------------------------

struct ConfigBox {
    filter_name: String,
    factory: Box<dyn FilterFactory>,
}

struct FilterBox {
    filter: Box<dyn HttpFilter>,
    state: StreamState,
    /// Set after a panic: the filter's state is unknown, so it is never called again.
    poisoned: bool,
    filter_name: String,
}

/// The ABI version string, NUL-terminated, static (abi.h: must outlive program_init).
static ABI_VERSION_C: &CStr = c"v0.2.0";

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

fn answer_panic(fb: &mut FilterBox, envoy_ptr: FilterEnvoyPtr, hook: &str, payload: &(dyn Any + Send)) {
    fb.poisoned = true;
    log(
        LogLevel::Error,
        &format!(
            "hopauth_envoy: filter {:?} panicked in {hook}: {}; answering 503",
            fb.filter_name,
            panic_text(payload)
        ),
    );
    if !fb.state.replied {
        fb.state.replied = true;
        let mut raw = RawFilter::new(envoy_ptr);
        raw.send_response(
            503,
            &[("content-type", b"application/json")],
            crate::filter::FAILURE_BODY,
            "hopauth_filter_panic",
        );
    }
}

// ------------------------------------------------------------------------------------------
// Exported hooks.
// ------------------------------------------------------------------------------------------

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_program_init() -> *const std::ffi::c_char {
    ABI_VERSION_C.as_ptr()
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy_ptr: ConfigEnvoyPtr,
    name: Buffer,
    config: Buffer,
) -> ConfigModulePtr {
    let result = catch_unwind(|| {
        // SAFETY: Envoy passes buffers valid for the duration of this hook (abi.h).
        let name = unsafe { buffer_bytes(name) };
        // SAFETY: as above.
        let config = unsafe { buffer_bytes(config) };
        let name = String::from_utf8_lossy(name).into_owned();
        let raw = RawConfig { ptr: config_envoy_ptr };
        let mut cx = ConfigContext::new(&raw);
        match registry::new_filter_config(&name, config, &mut cx) {
            Ok(factory) => {
                let boxed = Box::new(ConfigBox { filter_name: name, factory });
                Box::into_raw(boxed) as ConfigModulePtr
            }
            Err(e) => {
                log(LogLevel::Error, &format!("hopauth_envoy: filter config for filter_name {name:?} refused: {e}"));
                ptr::null()
            }
        }
    });
    result.unwrap_or_else(|payload| {
        log(
            LogLevel::Error,
            &format!("hopauth_envoy: panic while building a filter config: {}", panic_text(&*payload)),
        );
        ptr::null()
    })
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ConfigModulePtr) {
    let r = catch_unwind(|| {
        if !config.is_null() {
            // SAFETY: `config` came from Box::into_raw in config_new; Envoy destroys it once.
            drop(unsafe { Box::from_raw(config as *mut ConfigBox) });
        }
    });
    if r.is_err() {
        log(LogLevel::Error, "hopauth_envoy: panic while dropping a filter config");
    }
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    name: Buffer,
    config: Buffer,
) -> PerRouteModulePtr {
    let result = catch_unwind(|| {
        // SAFETY: Envoy passes buffers valid for the duration of this hook (abi.h).
        let name = unsafe { buffer_bytes(name) };
        // SAFETY: as above.
        let config = unsafe { buffer_bytes(config) };
        let name = String::from_utf8_lossy(name).into_owned();
        match registry::new_per_route_config(&name, config) {
            Ok(route) => Box::into_raw(Box::new(route)) as PerRouteModulePtr,
            Err(e) => {
                log(LogLevel::Error, &format!("hopauth_envoy: per-route config {name:?} refused: {e}"));
                ptr::null()
            }
        }
    });
    result.unwrap_or_else(|payload| {
        log(
            LogLevel::Error,
            &format!("hopauth_envoy: panic while building a per-route config: {}", panic_text(&*payload)),
        );
        ptr::null()
    })
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(config: PerRouteModulePtr) {
    let r = catch_unwind(|| {
        if !config.is_null() {
            // SAFETY: from Box::into_raw(Box<RouteConfig>) in per_route_config_new; once.
            drop(unsafe { Box::from_raw(config as *mut RouteConfig) });
        }
    });
    if r.is_err() {
        log(LogLevel::Error, "hopauth_envoy: panic while dropping a per-route config");
    }
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ConfigModulePtr,
    _filter_envoy_ptr: FilterEnvoyPtr,
) -> FilterModulePtr {
    let result = catch_unwind(|| {
        // SAFETY: `config` is a live ConfigBox from config_new: Envoy creates filters only
        // from a config it has not destroyed. Shared (&) access: it is Sync.
        let cfg = unsafe { &*(config as *const ConfigBox) };
        let fb = Box::new(FilterBox {
            filter: cfg.factory.new_filter(),
            state: StreamState::default(),
            poisoned: false,
            filter_name: cfg.filter_name.clone(),
        });
        Box::into_raw(fb) as FilterModulePtr
    });
    // A null filter makes Envoy close the stream.
    result.unwrap_or_else(|payload| {
        log(LogLevel::Error, &format!("hopauth_envoy: panic while creating a filter: {}", panic_text(&*payload)));
        ptr::null()
    })
}

/// Runs `f` on the stream's filter inside `catch_unwind`; on panic answers 503.
/// `None` when the filter is poisoned (it is not called again).
fn with_filter<R>(
    envoy_ptr: FilterEnvoyPtr,
    module_ptr: FilterModulePtr,
    hook: &str,
    f: impl FnOnce(&mut dyn HttpFilter, &mut RequestContext<'_>) -> R,
) -> Option<R> {
    // SAFETY: `module_ptr` is the FilterBox from on_http_filter_new, alive until
    // on_http_filter_destroy; Envoy calls a stream's hooks on its one worker thread, and the
    // hooks that may re-enter during a callback (local_reply, stream_complete, watermarks)
    // never form a reference to it, so this `&mut` is unique for the hook.
    let fb = unsafe { &mut *(module_ptr as *mut FilterBox) };
    if fb.poisoned {
        return None;
    }
    let run = catch_unwind(AssertUnwindSafe(|| {
        let mut ctx = RequestContext::new(RawFilter::new(envoy_ptr), &mut fb.state);
        f(fb.filter.as_mut(), &mut ctx)
    }));
    match run {
        Ok(r) => Some(r),
        Err(payload) => {
            answer_panic(fb, envoy_ptr, hook, &*payload);
            None
        }
    }
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy_ptr: FilterEnvoyPtr,
    module_ptr: FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    let status = with_filter(envoy_ptr, module_ptr, "on_request_headers", |f, ctx| {
        let s = f.on_request_headers(ctx, end_of_stream);
        // Continuing after a local reply would run the rest of the chain on an answered
        // stream; a reply always stops.
        if ctx.replied() {
            HeadersStatus::StopIteration
        } else {
            s
        }
    });
    match status {
        Some(HeadersStatus::Continue) => HEADERS_CONTINUE,
        Some(HeadersStatus::StopIteration) => HEADERS_STOP_ITERATION,
        // Panicked now (answered 503) or earlier (already answered): stop.
        None => HEADERS_STOP_ITERATION,
    }
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    envoy_ptr: FilterEnvoyPtr,
    module_ptr: FilterModulePtr,
    event_id: u64,
) {
    let _ = with_filter(envoy_ptr, module_ptr, "on_scheduled", |f, ctx| f.on_scheduled(ctx, event_id));
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_destroy(module_ptr: FilterModulePtr) {
    let r = catch_unwind(|| {
        if module_ptr.is_null() {
            return;
        }
        // SAFETY: from Box::into_raw in on_http_filter_new; Envoy destroys each filter once,
        // after its last hook.
        let fb = unsafe { Box::from_raw(module_ptr as *mut FilterBox) };
        if let Some(s) = &fb.state.scheduler {
            // Deleted here, on the worker, while the filter still exists; module threads
            // holding a Scheduler clone now see an inert handle.
            s.close();
        }
        drop(fb);
    });
    if r.is_err() {
        log(LogLevel::Error, "hopauth_envoy: panic while dropping a filter");
    }
}

/// # Safety
/// `b` must be null or point to `b.length` bytes valid for the returned lifetime.
unsafe fn buffer_bytes<'a>(b: Buffer) -> &'a [u8] {
    if b.ptr.is_null() {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(b.ptr, b.length) }
}

// Hooks Envoy 1.40 requires but this module does not use. Their bodies are constants (no
// Rust code that can panic), they never touch the module's objects, so re-entrancy during
// a callback (e.g. local_reply inside send_response) is harmless.

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
) -> u32 {
    CONTINUE
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
) -> u32 {
    CONTINUE
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
) {
}

/// `envoy_dynamic_module_type_on_http_filter_local_reply_status_Continue`.
#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
    _response_code: u32,
    _details: Buffer,
    _reset_imminent: bool,
) -> u32 {
    CONTINUE
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
) {
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
) {
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
    _callout_id: u64,
    _result: u32,
    _headers: *mut HttpHeader,
    _headers_size: usize,
    _body_chunks: *mut Buffer,
    _body_chunks_size: usize,
) {
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
    _stream_id: u64,
    _headers: *mut HttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
    _stream_id: u64,
    _data: *const Buffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
    _stream_id: u64,
    _trailers: *mut HttpHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
    _stream_id: u64,
) {
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _envoy_ptr: FilterEnvoyPtr,
    _module_ptr: FilterModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _config_envoy_ptr: ConfigEnvoyPtr,
    _config_ptr: ConfigModulePtr,
    _event_id: u64,
) {
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _config_envoy_ptr: ConfigEnvoyPtr,
    _config_ptr: ConfigModulePtr,
    _callout_id: u64,
    _result: u32,
    _headers: *mut HttpHeader,
    _headers_size: usize,
    _body_chunks: *mut Buffer,
    _body_chunks_size: usize,
) {
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _config_envoy_ptr: ConfigEnvoyPtr,
    _config_ptr: ConfigModulePtr,
    _stream_id: u64,
    _headers: *mut HttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _config_envoy_ptr: ConfigEnvoyPtr,
    _config_ptr: ConfigModulePtr,
    _stream_id: u64,
    _data: *const Buffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _config_envoy_ptr: ConfigEnvoyPtr,
    _config_ptr: ConfigModulePtr,
    _stream_id: u64,
    _trailers: *mut HttpHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    _config_envoy_ptr: ConfigEnvoyPtr,
    _config_ptr: ConfigModulePtr,
    _stream_id: u64,
) {
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _config_envoy_ptr: ConfigEnvoyPtr,
    _config_ptr: ConfigModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_version_c_string_matches_the_crate_constant() {
        assert_eq!(ABI_VERSION_C.to_str().unwrap(), crate::ABI_VERSION);
    }

    #[test]
    fn panic_text_reads_str_and_string_payloads() {
        assert_eq!(panic_text(&"a"), "a");
        assert_eq!(panic_text(&String::from("b")), "b");
        assert_eq!(panic_text(&1u8), "non-string panic payload");
    }
}
