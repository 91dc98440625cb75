//! The ABI as Rust sees it (abi.h, Envoy 1.40, ABI `v0.2.0`): the C types and constants,
//! and `extern "C"` declarations of exactly the callbacks the safe wrapper uses. Each is
//! exported by Envoy 1.40.0 (`tests/abi` checks them against `nm -D`) and exercised through
//! a real Envoy by `tests/abi`; Envoy does not check signatures, so a declaration that
//! drifts from Envoy's is undefined behaviour, not an error. Nothing here runs code.
use std::ffi::c_void;
use std::ptr;

/// `envoy_dynamic_module_type_envoy_buffer` and `..._module_buffer`: `{ const char*, size_t }`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Buffer {
    pub(super) ptr: *const u8,
    pub(super) length: usize,
}

impl Buffer {
    pub(super) const NULL: Buffer = Buffer { ptr: ptr::null(), length: 0 };

    pub(super) fn of(bytes: &[u8]) -> Buffer {
        Buffer { ptr: bytes.as_ptr(), length: bytes.len() }
    }
}

/// `envoy_dynamic_module_type_module_key_value_pair`: a key buffer then a value buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct KeyValue {
    pub(super) key: Buffer,
    pub(super) value: Buffer,
}

impl KeyValue {
    pub(super) const NULL: KeyValue = KeyValue { key: Buffer::NULL, value: Buffer::NULL };
}

/// `envoy_dynamic_module_type_{module,envoy}_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct HttpHeader {
    pub(super) key_ptr: *const u8,
    pub(super) key_length: usize,
    pub(super) value_ptr: *const u8,
    pub(super) value_length: usize,
}

/// `envoy_dynamic_module_type_http_header_type` (a C enum: `int`).
#[derive(Clone, Copy)]
#[repr(u32)]
pub(super) enum HeaderMapKind {
    RequestHeaders = 0,
}

pub(super) type FilterEnvoyPtr = *mut c_void;
pub(super) type FilterModulePtr = *const c_void;
pub(super) type ConfigEnvoyPtr = *mut c_void;
pub(super) type ConfigModulePtr = *const c_void;
pub(super) type PerRouteModulePtr = *const c_void;
pub(super) type SchedulerPtr = *mut c_void;

/// `envoy_dynamic_module_type_on_http_filter_request_headers_status`.
pub(super) const HEADERS_CONTINUE: u32 = 0;
pub(super) const HEADERS_STOP_ITERATION: u32 = 1;
/// `..._request_body_status_Continue`, `..._trailers_status_Continue`, etc.: all 0.
pub(super) const CONTINUE: u32 = 0;
/// `envoy_dynamic_module_type_metrics_result_Success`.
pub(super) const METRICS_SUCCESS: u32 = 0;

// Callbacks (implemented by Envoy). Only those the safe wrapper uses.
extern "C" {
    // Unit tests run without Envoy and log to stderr instead (`raw::log`).
    #[cfg_attr(test, allow(dead_code))]
    pub(super) fn envoy_dynamic_module_callback_log(level: u32, message: Buffer);

    pub(super) fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: Buffer,
        result: *mut Buffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    pub(super) fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoyPtr,
        header_type: u32,
    ) -> usize;
    pub(super) fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: u32,
        result_headers: *mut HttpHeader,
    ) -> bool;
    pub(super) fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    pub(super) fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;

    pub(super) fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status_code: u32,
        headers: *mut HttpHeader,
        headers_size: usize,
        body: Buffer,
        details: Buffer,
    );

    pub(super) fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter: FilterEnvoyPtr,
        ns: Buffer,
        key: Buffer,
        value: Buffer,
    );
    pub(super) fn envoy_dynamic_module_callback_http_set_dynamic_metadata_number(
        filter: FilterEnvoyPtr,
        ns: Buffer,
        key: Buffer,
        value: f64,
    );

    /// Sets `pairs_length` string entries of namespace `ns` in one merge. Read from the
    /// 1.40.0 binary (`objdump -d`: the pair array in the fourth argument, its length in the
    /// fifth, 32 bytes per pair: key buffer then value buffer); see ABI.md.
    pub(super) fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
        filter: FilterEnvoyPtr,
        ns: Buffer,
        pairs: *const KeyValue,
        pairs_length: usize,
    );
    pub(super) fn envoy_dynamic_module_callback_http_set_dynamic_metadata_bool(
        filter: FilterEnvoyPtr,
        ns: Buffer,
        key: Buffer,
        value: bool,
    );

    /// `serialized` is a `google.protobuf.Struct` in protobuf binary; Envoy parses it (a
    /// buffer that does not parse is logged by Envoy and ignored) and merges its fields
    /// into namespace `ns`. Read from the 1.40.0 binary: the header copies stored for
    /// this build predate the callback (see ABI.md).
    pub(super) fn envoy_dynamic_module_callback_http_set_dynamic_metadata_struct(
        filter: FilterEnvoyPtr,
        ns: Buffer,
        serialized: Buffer,
    );

    pub(super) fn envoy_dynamic_module_callback_get_most_specific_route_config(
        filter: FilterEnvoyPtr,
    ) -> PerRouteModulePtr;

    pub(super) fn envoy_dynamic_module_callback_http_filter_scheduler_new(filter: FilterEnvoyPtr) -> SchedulerPtr;
    pub(super) fn envoy_dynamic_module_callback_http_filter_scheduler_commit(scheduler: SchedulerPtr, event_id: u64);
    pub(super) fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: SchedulerPtr);
    pub(super) fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoyPtr);

    pub(super) fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: Buffer,
        label_names: *mut Buffer,
        label_names_length: usize,
        counter_id: *mut usize,
    ) -> u32;
    pub(super) fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut Buffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}
