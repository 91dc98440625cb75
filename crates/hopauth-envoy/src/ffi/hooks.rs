//! Every hook Envoy 1.40.0 looks up in a module (it refuses a module that lacks one):
//! `envoy_dynamic_module_on_program_init` and each `envoy_dynamic_module_on_http_filter_*`.
//!
//! Each hook that runs Rust code does so inside `catch_unwind` ([`guarded!`]): a panic is
//! logged, the stream is answered 503 (or the config refused) and the filter is poisoned;
//! it never unwinds into Envoy. The hooks this module does not use are produced by
//! [`constant_hooks!`]: their bodies are constants, which cannot panic and never touch the
//! module's objects, so re-entrancy during a callback (e.g. `local_reply` inside
//! `send_response`) is harmless.
use std::any::Any;
use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;

use super::decl::*;
use super::raw::{log, RawConfig, RawFilter};
use super::{ConfigContext, FilterFactory, HeadersStatus, HttpFilter, LogLevel, RequestContext, RouteConfig};
use super::{StreamState, FAILURE_BODY};

/// The module-side object behind a filter config pointer.
struct ConfigBox {
    filter_name: Arc<str>,
    factory: Box<dyn FilterFactory>,
}

/// The module-side object behind a stream's filter pointer.
struct FilterBox {
    filter: Box<dyn HttpFilter>,
    state: StreamState,
    /// Set after a panic: the filter's state is unknown, so it is never called again.
    poisoned: bool,
    /// The config's name, shared: a stream's filter is created per request, and a copy of
    /// the name would be an allocation on every one.
    filter_name: Arc<str>,
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

/// Runs `$body` inside `catch_unwind`; a panic is logged as "panic while `$what`" and the
/// hook returns `$fallback` instead.
macro_rules! guarded {
    ($what:literal, $fallback:expr, $body:block) => {
        match catch_unwind(AssertUnwindSafe(|| $body)) {
            Ok(value) => value,
            Err(payload) => {
                log(
                    LogLevel::Error,
                    &format!(concat!("hopauth_envoy: panic while ", $what, ": {}"), panic_text(&*payload)),
                );
                $fallback
            }
        }
    };
}

/// A `*_destroy` hook for an object made by `Box::into_raw(Box<$ty>)` in its `*_new` hook.
macro_rules! destroy_hook {
    ($name:ident, $ty:ty, $what:literal) => {
        #[no_mangle]
        extern "C" fn $name(object: *const std::ffi::c_void) {
            guarded!($what, (), {
                if !object.is_null() {
                    // SAFETY: `object` came from `Box::into_raw(Box<$ty>)` in the matching
                    // `*_new` hook, and Envoy destroys each object exactly once, after its
                    // last use.
                    drop(unsafe { Box::from_raw(object as *mut $ty) });
                }
            })
        }
    };
}

/// Hooks Envoy requires but this module does not use: `name(argument types) -> type =
/// value`, or `name(argument types)` for the `void` ones.
macro_rules! constant_hooks {
    ($($name:ident($($arg:ty),* $(,)?) $(-> $ret:ty = $value:expr)?;)*) => {
        $(
            #[no_mangle]
            extern "C" fn $name($(_: $arg),*) $(-> $ret)? {
                $($value)?
            }
        )*
    };
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_program_init() -> *const std::ffi::c_char {
    ABI_VERSION_C.as_ptr()
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

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy_ptr: ConfigEnvoyPtr,
    name: Buffer,
    config: Buffer,
) -> ConfigModulePtr {
    guarded!("building a filter config", ptr::null(), {
        // SAFETY: Envoy passes buffers valid for the duration of this hook (abi.h).
        let (name, config) = unsafe { (buffer_bytes(name), buffer_bytes(config)) };
        let name = String::from_utf8_lossy(name).into_owned();
        let raw = RawConfig { ptr: config_envoy_ptr };
        let mut cx = ConfigContext::new(&raw);
        match crate::MODULE.new_filter_config(&name, config, &mut cx) {
            Ok(factory) => Box::into_raw(Box::new(ConfigBox { filter_name: name.into(), factory })) as ConfigModulePtr,
            Err(e) => {
                log(LogLevel::Error, &format!("hopauth_envoy: filter config for filter_name {name:?} refused: {e}"));
                ptr::null()
            }
        }
    })
}

destroy_hook!(envoy_dynamic_module_on_http_filter_config_destroy, ConfigBox, "dropping a filter config");

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    name: Buffer,
    config: Buffer,
) -> PerRouteModulePtr {
    guarded!("building a per-route config", ptr::null(), {
        // SAFETY: Envoy passes buffers valid for the duration of this hook (abi.h).
        let (name, config) = unsafe { (buffer_bytes(name), buffer_bytes(config)) };
        let name = String::from_utf8_lossy(name).into_owned();
        match crate::MODULE.new_per_route_config(&name, config) {
            // `raw::RawFilter::route_config` reads it back as a `RouteConfig`.
            Ok(route) => Box::into_raw(Box::new(route)) as PerRouteModulePtr,
            Err(e) => {
                log(LogLevel::Error, &format!("hopauth_envoy: per-route config {name:?} refused: {e}"));
                ptr::null()
            }
        }
    })
}

destroy_hook!(envoy_dynamic_module_on_http_filter_per_route_config_destroy, RouteConfig, "dropping a per-route config");

#[no_mangle]
extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ConfigModulePtr,
    _filter_envoy_ptr: FilterEnvoyPtr,
) -> FilterModulePtr {
    // A null filter makes Envoy close the stream.
    guarded!("creating a filter", ptr::null(), {
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
    })
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
        raw.send_response(503, &[("content-type", b"application/json")], FAILURE_BODY, "hopauth_filter_panic");
    }
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
    guarded!("dropping a filter", (), {
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
    })
}

// The stream hooks this module does not use (`Continue` = 0 for every status enum),
// then the config-level ones (scheduler, HTTP callouts and streams of a filter config).
constant_hooks! {
    envoy_dynamic_module_on_http_filter_request_body(FilterEnvoyPtr, FilterModulePtr, bool) -> u32 = CONTINUE;
    envoy_dynamic_module_on_http_filter_request_trailers(FilterEnvoyPtr, FilterModulePtr) -> u32 = CONTINUE;
    envoy_dynamic_module_on_http_filter_response_headers(FilterEnvoyPtr, FilterModulePtr, bool) -> u32 = CONTINUE;
    envoy_dynamic_module_on_http_filter_response_body(FilterEnvoyPtr, FilterModulePtr, bool) -> u32 = CONTINUE;
    envoy_dynamic_module_on_http_filter_response_trailers(FilterEnvoyPtr, FilterModulePtr) -> u32 = CONTINUE;
    envoy_dynamic_module_on_http_filter_stream_complete(FilterEnvoyPtr, FilterModulePtr);
    // `envoy_dynamic_module_type_on_http_filter_local_reply_status_Continue`.
    envoy_dynamic_module_on_http_filter_local_reply(FilterEnvoyPtr, FilterModulePtr, u32, Buffer, bool) -> u32 = CONTINUE;
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(FilterEnvoyPtr, FilterModulePtr);
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(FilterEnvoyPtr, FilterModulePtr);
    envoy_dynamic_module_on_http_filter_http_callout_done(
        FilterEnvoyPtr, FilterModulePtr, u64, u32, *mut HttpHeader, usize, *mut Buffer, usize,
    );
    envoy_dynamic_module_on_http_filter_http_stream_headers(
        FilterEnvoyPtr, FilterModulePtr, u64, *mut HttpHeader, usize, bool,
    );
    envoy_dynamic_module_on_http_filter_http_stream_data(
        FilterEnvoyPtr, FilterModulePtr, u64, *const Buffer, usize, bool,
    );
    envoy_dynamic_module_on_http_filter_http_stream_trailers(FilterEnvoyPtr, FilterModulePtr, u64, *mut HttpHeader, usize);
    envoy_dynamic_module_on_http_filter_http_stream_complete(FilterEnvoyPtr, FilterModulePtr, u64);
    envoy_dynamic_module_on_http_filter_http_stream_reset(FilterEnvoyPtr, FilterModulePtr, u64, u32);
    envoy_dynamic_module_on_http_filter_config_scheduled(ConfigEnvoyPtr, ConfigModulePtr, u64);
    envoy_dynamic_module_on_http_filter_config_http_callout_done(
        ConfigEnvoyPtr, ConfigModulePtr, u64, u32, *mut HttpHeader, usize, *mut Buffer, usize,
    );
    envoy_dynamic_module_on_http_filter_config_http_stream_headers(
        ConfigEnvoyPtr, ConfigModulePtr, u64, *mut HttpHeader, usize, bool,
    );
    envoy_dynamic_module_on_http_filter_config_http_stream_data(
        ConfigEnvoyPtr, ConfigModulePtr, u64, *const Buffer, usize, bool,
    );
    envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
        ConfigEnvoyPtr, ConfigModulePtr, u64, *mut HttpHeader, usize,
    );
    envoy_dynamic_module_on_http_filter_config_http_stream_complete(ConfigEnvoyPtr, ConfigModulePtr, u64);
    envoy_dynamic_module_on_http_filter_config_http_stream_reset(ConfigEnvoyPtr, ConfigModulePtr, u64, u32);
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
