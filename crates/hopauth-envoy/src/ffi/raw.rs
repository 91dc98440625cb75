//! Safe handles over Envoy's raw pointers, one `unsafe` call each: [`RawFilter`] (a stream
//! during one hook), [`RawConfig`] (a filter config while Envoy builds it) and
//! [`RawScheduler`] (a stream's scheduler, usable from any thread). The safe wrapper in
//! `ffi` (the parent module) is built on these; nothing else touches them.
use std::any::Any;
use std::marker::PhantomData;
use std::ptr;

use super::decl::*;
use super::{LogLevel, RouteConfig};

/// String metadata entries passed to Envoy per call (a stack array; more take more calls).
const STRING_BATCH: usize = 16;

/// Writes to Envoy's log. Envoy's logger is thread-safe; the message is copied by Envoy.
/// The crate's unit tests run without Envoy (the callback is not linked): there it goes to
/// stderr.
#[cfg(test)]
pub(super) fn log(level: LogLevel, message: &str) {
    eprintln!("[{level:?}] {message}");
}

/// Writes to Envoy's log. Envoy's logger is thread-safe; the message is copied by Envoy.
#[cfg(not(test))]
pub(super) fn log(level: LogLevel, message: &str) {
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
pub(super) struct RawFilter<'hook> {
    ptr: FilterEnvoyPtr,
    _hook: PhantomData<&'hook ()>,
}

impl<'hook> RawFilter<'hook> {
    pub(super) fn new(ptr: FilterEnvoyPtr) -> Self {
        Self { ptr, _hook: PhantomData }
    }

    /// Value `index` of header `name` and the number of values.
    pub(super) fn header(&self, kind: HeaderMapKind, name: &str, index: usize) -> (Option<&[u8]>, usize) {
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

    /// Every header of `kind`, in Envoy's order: one Envoy call (and one allocation) for the
    /// whole map, where a lookup by name of a header Envoy does not index costs it the
    /// building of its lookup table.
    pub(super) fn headers(&self, kind: HeaderMapKind) -> RawHeaders<'_> {
        // SAFETY: RawFilter invariant (live filter, worker thread).
        let n = unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.ptr, kind as u32) };
        if n == 0 {
            return RawHeaders { raw: Vec::new(), _filter: PhantomData };
        }
        let empty = HttpHeader { key_ptr: ptr::null(), key_length: 0, value_ptr: ptr::null(), value_length: 0 };
        let mut raw = vec![empty; n];
        // SAFETY: RawFilter invariant; `raw` has room for the `n` headers Envoy just
        // reported, and nothing can change the map between the two calls (same thread).
        let ok = unsafe { envoy_dynamic_module_callback_http_get_headers(self.ptr, kind as u32, raw.as_mut_ptr()) };
        if !ok {
            raw.clear();
        }
        RawHeaders { raw, _filter: PhantomData }
    }

    /// Sets (`Some`) or removes (`None`) header `name`.
    pub(super) fn set_header(&mut self, kind: HeaderMapKind, name: &str, value: Option<&[u8]>) -> bool {
        let value = value.map_or(Buffer::NULL, Buffer::of);
        // SAFETY: RawFilter invariant; Envoy copies key and value. A null value pointer
        // removes the header (abi.h on http_set_header).
        unsafe {
            envoy_dynamic_module_callback_http_set_header(self.ptr, kind as u32, Buffer::of(name.as_bytes()), value)
        }
    }

    /// Appends a value to header `name`.
    pub(super) fn add_header(&mut self, kind: HeaderMapKind, name: &str, value: &[u8]) -> bool {
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
    pub(super) fn send_response(&mut self, status: u32, headers: &[(&str, &[u8])], body: &[u8], details: &str) {
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

    pub(super) fn set_metadata_string(&mut self, ns: &str, key: &str, value: &str) {
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

    pub(super) fn set_metadata_number(&mut self, ns: &str, key: &str, value: f64) {
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

    /// Sets string entries of `ns`, [`STRING_BATCH`] pairs per Envoy call.
    pub(super) fn set_metadata_strings<K: AsRef<str>, V: AsRef<str>>(&mut self, ns: &str, entries: &[(K, V)]) {
        let mut pairs = [KeyValue::NULL; STRING_BATCH];
        for chunk in entries.chunks(STRING_BATCH) {
            for (pair, (key, value)) in pairs.iter_mut().zip(chunk) {
                let (key, value) = (key.as_ref().as_bytes(), value.as_ref().as_bytes());
                *pair = KeyValue { key: Buffer::of(key), value: Buffer::of(value) };
            }
            // SAFETY: RawFilter invariant; the first `chunk.len()` pairs point into
            // `entries`, which outlives the call, and Envoy copies every buffer.
            unsafe {
                envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
                    self.ptr,
                    Buffer::of(ns.as_bytes()),
                    pairs.as_ptr(),
                    chunk.len(),
                )
            }
        }
    }

    pub(super) fn set_metadata_bool(&mut self, ns: &str, key: &str, value: bool) {
        // SAFETY: RawFilter invariant; Envoy copies the two buffers.
        unsafe {
            envoy_dynamic_module_callback_http_set_dynamic_metadata_bool(
                self.ptr,
                Buffer::of(ns.as_bytes()),
                Buffer::of(key.as_bytes()),
                value,
            )
        }
    }

    pub(super) fn set_metadata_struct(&mut self, ns: &str, serialized: &[u8]) {
        // SAFETY: RawFilter invariant; Envoy parses (copies) both buffers during the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_dynamic_metadata_struct(
                self.ptr,
                Buffer::of(ns.as_bytes()),
                Buffer::of(serialized),
            )
        }
    }

    /// The per-route config object this module built for the request's route, if any.
    pub(super) fn route_config(&self) -> Option<&(dyn Any + Send + Sync)> {
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

    pub(super) fn new_scheduler(&mut self) -> RawScheduler {
        // SAFETY: RawFilter invariant; the ABI requires this on the worker thread, which a
        // RawFilter is confined to (it is not Send).
        let ptr = unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.ptr) };
        RawScheduler { ptr }
    }

    pub(super) fn continue_decoding(&mut self) {
        // SAFETY: RawFilter invariant. Envoy runs the next filters synchronously; hooks it
        // may re-enter meanwhile never touch the module's filter object.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.ptr) }
    }

    /// Adds `by` to counter `id` with `labels` (as many as it was defined with; the caller
    /// checks, Envoy does not).
    pub(super) fn increment_counter(&mut self, id: usize, labels: &[&str], by: u64) -> bool {
        let mut values: Vec<Buffer> = labels.iter().map(|l| Buffer::of(l.as_bytes())).collect();
        let values_ptr = if values.is_empty() { ptr::null_mut() } else { values.as_mut_ptr() };
        // SAFETY: RawFilter invariant; `id` came from define_counter on the config that
        // created this filter, and the number of label values equals the number of label
        // names it was defined with (checked by `ffi::RequestContext`); `values` outlives
        // the call.
        let r = unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(self.ptr, id, values_ptr, values.len(), by)
        };
        r == METRICS_SUCCESS
    }
}

/// The entries Envoy wrote for [`RawFilter::headers`]: they point into Envoy's header map and
/// borrow the filter handle (`'a`), so they cannot outlive the hook or a header mutation
/// (setters take `&mut` of the handle).
pub(super) struct RawHeaders<'a> {
    raw: Vec<HttpHeader>,
    _filter: PhantomData<&'a RawFilter<'a>>,
}

impl<'a> RawHeaders<'a> {
    pub(super) fn len(&self) -> usize {
        self.raw.len()
    }

    /// Entry `i` as (name, value); `None` past the end.
    pub(super) fn get(&self, i: usize) -> Option<(&'a [u8], &'a [u8])> {
        let h = self.raw.get(i)?;
        Some((slice_or_empty(h.key_ptr, h.key_length), slice_or_empty(h.value_ptr, h.value_length)))
    }
}

fn slice_or_empty<'a>(p: *const u8, len: usize) -> &'a [u8] {
    if p.is_null() {
        return &[];
    }
    // SAFETY: only called by `RawHeaders::get` on buffers Envoy returned, which stay valid
    // until the end of the hook or the next mutation; `RawHeaders<'a>` borrows the filter
    // handle for 'a, which cannot outlive either.
    unsafe { std::slice::from_raw_parts(p, len) }
}

/// Envoy's `DynamicModuleHttpFilterConfig*` during `on_http_filter_config_new` (main thread).
pub(super) struct RawConfig {
    pub(super) ptr: ConfigEnvoyPtr,
}

impl RawConfig {
    /// Defines counter `name` with `labels` (label names); its id.
    pub(super) fn define_counter(&self, name: &str, labels: &[&str]) -> Result<usize, u32> {
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
pub(super) struct RawScheduler {
    ptr: SchedulerPtr,
}

// SAFETY: abi.h: `scheduler_commit` may be called from any thread. The pointer is only
// dereferenced by Envoy; `ffi::Scheduler` serialises commit and delete with a mutex, so
// no commit runs during or after the delete.
unsafe impl Send for RawScheduler {}

impl RawScheduler {
    pub(super) fn commit(&self, event_id: u64) {
        // SAFETY: the scheduler is not yet deleted (`ffi::Scheduler` holds it in its
        // mutex until `delete`, which consumes it); commit is thread-safe in Envoy.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(self.ptr, event_id) }
    }

    pub(super) fn delete(self) {
        // SAFETY: consumed by value, so this runs once per scheduler Envoy allocated.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(self.ptr) }
    }
}
