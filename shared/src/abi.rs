//! The audited proxy-wasm ABI v0.2.1 imports: the only `unsafe` code in meshward.
//!
//! Why not the SDK's `proxy_wasm::hostcalls`: its wrappers `panic!` on statuses Envoy really
//! returns (e.g. `BadArgument` from `proxy_get_header_map_value` once a map is gone), declare the
//! imports as returning the SDK's `Status` enum (undefined behaviour for codes it lacks, such as
//! 6, 11 and 12), copy whole header maps into owned `String`s, drop `details` on local replies and
//! allocate to serialize property paths. The SDK stays for what it does well: the callback
//! dispatcher, contexts, and the callout bookkeeping (see [`http_call`] and [`grpc_call`]).
//!
//! Every function here returns `Result<_, HostError>` for every status (no panic, no probe), takes
//! borrowed data, and returns only the buffer the host wrote. Statuses per import are listed in
//! the team's ABI notes (§2); the host's behaviour is exercised through the real `.wasm` in
//! `tests/harness` and `tests/integration`.
//!
//! Returned buffers: the host allocates exactly `len` bytes through the module's
//! `proxy_on_memory_allocate` export (the SDK's: a boxed slice of exactly `len` bytes, alignment
//! 1), writes them and hands ownership to us; we adopt that block as a `Vec` with capacity
//! `len`, which is the layout it was allocated with. A null pointer or zero length means empty.

#![allow(
    unsafe_code,
    reason = "the raw proxy-wasm imports: every block below states its SAFETY argument"
)]

use std::ptr::{null, null_mut};

use arrayvec::ArrayVec;

use crate::header_map::{self, HeaderMap};
use crate::host::{HostError, HostResult, LogLevel, MetricKind, SharedValue, StreamKind};

/// Buffer types of the ABI (`proxy_buffer_type_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum BufferType {
    /// Request body.
    HttpRequestBody = 0,
    /// Response body.
    HttpResponseBody = 1,
    /// `http_call` response body (inside its callback).
    HttpCallResponseBody = 4,
    /// gRPC message received (inside the gRPC callbacks).
    GrpcReceiveBuffer = 5,
    /// VM configuration.
    VmConfiguration = 6,
    /// Plugin configuration (inside `on_configure`).
    PluginConfiguration = 7,
    /// Foreign-function arguments.
    CallData = 8,
}

/// Map types of the ABI (`proxy_map_type_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MapType {
    /// Request headers.
    HttpRequestHeaders = 0,
    /// Request trailers.
    HttpRequestTrailers = 1,
    /// Response headers.
    HttpResponseHeaders = 2,
    /// Response trailers.
    HttpResponseTrailers = 3,
    /// gRPC initial metadata received.
    GrpcReceiveInitialMetadata = 4,
    /// gRPC trailing metadata received.
    GrpcReceiveTrailingMetadata = 5,
    /// `http_call` response headers.
    HttpCallResponseHeaders = 6,
    /// `http_call` response trailers.
    HttpCallResponseTrailers = 7,
}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_set_header_map_pairs(map_type: u32, map_data: *const u8, map_size: usize) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_register_shared_queue(
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_resolve_shared_queue(
        vm_id_data: *const u8,
        vm_id_size: usize,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_dequeue_shared_queue(
        queue_id: u32,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_enqueue_shared_queue(queue_id: u32, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_grpc_cancel(token_id: u32) -> u32;
    fn proxy_grpc_close(token_id: u32) -> u32;
    fn proxy_get_status(
        return_code: *mut u32,
        return_message_data: *mut *mut u8,
        return_message_size: *mut usize,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
}

/// Header blocks up to this size are serialized on the stack (local replies; no allocation).
const SMALL_HEADER_BLOCK: usize = 1024;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const EMPTY: u32 = 7;

fn check(status: u32) -> HostResult<()> {
    if status == OK {
        Ok(())
    } else {
        Err(HostError::from_status(status))
    }
}

/// Adopts a buffer the host wrote for us.
///
/// # Safety
/// `(data, size)` must come from a hostcall that returned Ok and wrote them as its return-buffer
/// out-parameters, and must not have been adopted before.
unsafe fn adopt(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() || size == 0 {
        return None;
    }
    // SAFETY: per the ABI the host allocated `size` bytes at `data` with this module's
    // `proxy_on_memory_allocate` (a `Box<[u8]>` of exactly `size` bytes, so length, capacity and
    // alignment match `Vec<u8>`'s layout), initialised all of them, and transferred ownership to
    // us; the caller guarantees we adopt it once.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Calls a hostcall that returns a buffer through two out-parameters and adopts the result.
fn with_return_buffer(
    call: impl FnOnce(*mut *mut u8, *mut usize) -> u32,
) -> HostResult<Option<Vec<u8>>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    check(call(&mut data, &mut size))?;
    // SAFETY: `call` returned Ok, so the host wrote `data`/`size` as return-buffer out-parameters
    // (or left them null/0 for an empty result); they are fresh locals, adopted once.
    Ok(unsafe { adopt(data, size) })
}

/// Writes a log line (failures are dropped: there is nowhere to report them).
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the pointer and length describe `message`, alive for the duration of the call; the
    // host only reads them.
    let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// The proxy's log level; Envoy's "off" (6) and unknown values read as `Critical`.
pub fn log_level() -> HostResult<LogLevel> {
    let mut level = 0u32;
    // SAFETY: `level` is a valid, aligned out-parameter for one u32.
    check(unsafe { proxy_get_log_level(&mut level) })?;
    Ok(match level {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => LogLevel::Critical,
    })
}

/// The proxy's wall clock in nanoseconds since the Unix epoch.
pub fn current_time_nanos() -> HostResult<u64> {
    let mut nanos = 0u64;
    // SAFETY: `nanos` is a valid, aligned out-parameter for one u64.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos)
}

/// Arms (0: disarms) the calling root context's tick timer.
pub fn set_tick_period_millis(millis: u32) -> HostResult<()> {
    // SAFETY: no memory is passed.
    check(unsafe { proxy_set_tick_period_milliseconds(millis) })
}

/// Up to `max` bytes of a buffer from `start`; `None` when empty or not available (NotFound).
pub fn buffer(kind: BufferType, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
    // cpp-host rejects `start + max` overflowing with BadArgument: clip instead.
    let max = max.min(usize::MAX - start);
    // SAFETY: the out-parameters are valid locals provided by `with_return_buffer`.
    match with_return_buffer(|data, size| unsafe {
        proxy_get_buffer_bytes(kind as u32, start, max, data, size)
    }) {
        Err(HostError::NotFound) => Ok(None),
        other => other,
    }
}

/// A whole header map in one hostcall (Envoy answers an unavailable map with an empty one).
pub fn header_map(map: MapType) -> HostResult<HeaderMap> {
    // SAFETY: the out-parameters are valid locals provided by `with_return_buffer`.
    let bytes = with_return_buffer(|data, size| unsafe {
        proxy_get_header_map_pairs(map as u32, data, size)
    })?;
    Ok(HeaderMap::from_bytes(bytes.unwrap_or_default()))
}

/// Replaces a whole header map.
pub fn set_header_map(map: MapType, pairs: &[(&str, &[u8])]) -> HostResult<()> {
    let bytes = header_map::serialize(pairs.iter().map(|(k, v)| (k.as_bytes(), *v)));
    // SAFETY: pointer and length describe `bytes`, alive during the call; the host only reads.
    check(unsafe { proxy_set_header_map_pairs(map as u32, bytes.as_ptr(), bytes.len()) })
}

/// The first value of `name`; `None` when absent. `BadArgument` when the map is not available.
pub fn header(map: MapType, name: &str) -> HostResult<Option<Vec<u8>>> {
    // SAFETY: `name` is alive during the call and only read; the out-parameters are valid locals.
    let result = with_return_buffer(|data, size| unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), data, size)
    });
    match result {
        // Present with an empty value: distinguish it from absent.
        Ok(None) => Ok(Some(Vec::new())),
        Err(HostError::NotFound) => Ok(None),
        other => other,
    }
}

/// Replaces every value of `name`.
pub fn set_header(map: MapType, name: &str, value: &[u8]) -> HostResult<()> {
    // SAFETY: both slices are alive during the call and only read by the host.
    check(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Appends a value to `name`.
pub fn add_header(map: MapType, name: &str, value: &[u8]) -> HostResult<()> {
    // SAFETY: both slices are alive during the call and only read by the host.
    check(unsafe {
        proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes every value of `name` (Ok when absent).
pub fn remove_header(map: MapType, name: &str) -> HostResult<()> {
    // SAFETY: `name` is alive during the call and only read by the host.
    check(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

/// A property by its NUL-joined path; `None` when absent or empty.
pub fn property(path: &[u8]) -> HostResult<Option<Vec<u8>>> {
    // SAFETY: `path` is alive during the call and only read; the out-parameters are valid locals.
    match with_return_buffer(|data, size| unsafe {
        proxy_get_property(path.as_ptr(), path.len(), data, size)
    }) {
        Err(HostError::NotFound) => Ok(None),
        other => other,
    }
}

/// Sets a property (filter state `wasm.<path>` in Envoy).
pub fn set_property(path: &[u8], value: &[u8]) -> HostResult<()> {
    // SAFETY: both slices are alive during the call and only read by the host.
    check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// A shared-data key with its CAS token.
pub fn shared_data(key: &str) -> HostResult<SharedValue> {
    let mut cas = 0u32;
    // SAFETY: `key` is alive during the call and only read; `cas` and the buffer out-parameters
    // are valid locals.
    match with_return_buffer(|data, size| unsafe {
        proxy_get_shared_data(key.as_ptr(), key.len(), data, size, &mut cas)
    }) {
        Ok(value) => Ok(SharedValue {
            value,
            cas: (cas != 0).then_some(cas),
        }),
        Err(HostError::NotFound) => Ok(SharedValue::default()),
        Err(error) => Err(error),
    }
}

/// Writes a shared-data key (`cas` 0 or `None`: unconditionally).
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
    // SAFETY: both slices are alive during the call and only read by the host.
    check(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

/// Registers (creates or takes over) a shared queue.
pub fn register_queue(name: &str) -> HostResult<u32> {
    let mut id = 0u32;
    // SAFETY: `name` is alive during the call and only read; `id` is a valid out-parameter.
    check(unsafe { proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Looks up a shared queue; `None` when it does not exist.
pub fn resolve_queue(vm_id: &str, name: &str) -> HostResult<Option<u32>> {
    let mut id = 0u32;
    // SAFETY: both slices are alive during the call and only read; `id` is a valid out-parameter.
    let status = unsafe {
        proxy_resolve_shared_queue(
            vm_id.as_ptr(),
            vm_id.len(),
            name.as_ptr(),
            name.len(),
            &mut id,
        )
    };
    match status {
        OK => Ok(Some(id)),
        NOT_FOUND => Ok(None),
        other => Err(HostError::from_status(other)),
    }
}

/// Appends an item to a shared queue.
pub fn enqueue(queue: u32, value: &[u8]) -> HostResult<()> {
    // SAFETY: `value` is alive during the call and only read by the host.
    check(unsafe { proxy_enqueue_shared_queue(queue, value.as_ptr(), value.len()) })
}

/// Takes the oldest item of a shared queue; `None` when it is empty.
pub fn dequeue(queue: u32) -> HostResult<Option<Vec<u8>>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-parameters are valid locals.
    let status = unsafe { proxy_dequeue_shared_queue(queue, &mut data, &mut size) };
    match status {
        // SAFETY: Ok means the host wrote the out-parameters; adopted once.
        OK => Ok(Some(unsafe { adopt(data, size) }.unwrap_or_default())),
        EMPTY => Ok(None),
        other => Err(HostError::from_status(other)),
    }
}

fn stream_type(stream: StreamKind) -> u32 {
    match stream {
        StreamKind::Request => 0,
        StreamKind::Response => 1,
    }
}

/// Resumes a paused direction of the current stream.
pub fn continue_stream(stream: StreamKind) -> HostResult<()> {
    // SAFETY: no memory is passed.
    check(unsafe { proxy_continue_stream(stream_type(stream)) })
}

/// Resets a direction of the current stream.
pub fn close_stream(stream: StreamKind) -> HostResult<()> {
    // SAFETY: no memory is passed.
    check(unsafe { proxy_close_stream(stream_type(stream)) })
}

/// Sends a local reply, `details` included (Envoy shows them as `%RESPONSE_CODE_DETAILS%`).
pub fn send_local_response(
    status: u16,
    details: &str,
    body: &[u8],
    headers: &[(&str, &[u8])],
    grpc_status: Option<u32>,
) -> HostResult<()> {
    let pairs = headers.iter().map(|(k, v)| (k.as_bytes(), *v));
    let mut small = ArrayVec::<u8, SMALL_HEADER_BLOCK>::new();
    let heap;
    let headers: &[u8] = if header_map::serialize_into(pairs.clone(), &mut small) {
        &small
    } else {
        heap = header_map::serialize(pairs);
        &heap
    };
    // Envoy reads -1 (and anything outside 0..=16) as "no gRPC status".
    let grpc = grpc_status
        .and_then(|code| i32::try_from(code).ok())
        .filter(|code| (0..=16).contains(code))
        .unwrap_or(-1);
    // SAFETY: every slice is alive during the call and only read by the host.
    check(unsafe {
        proxy_send_local_response(
            u32::from(status),
            details.as_ptr(),
            details.len(),
            if body.is_empty() {
                null()
            } else {
                body.as_ptr()
            },
            body.len(),
            headers.as_ptr(),
            headers.len(),
            grpc,
        )
    })
}

/// Cancels a gRPC call.
pub fn grpc_cancel(token: u32) -> HostResult<()> {
    // SAFETY: no memory is passed.
    check(unsafe { proxy_grpc_cancel(token) })
}

/// Closes a gRPC call or stream.
pub fn grpc_close(token: u32) -> HostResult<()> {
    // SAFETY: no memory is passed.
    check(unsafe { proxy_grpc_close(token) })
}

/// The status code and message of the callout being delivered.
pub fn call_status() -> HostResult<(u32, Option<Vec<u8>>)> {
    let mut code = 0u32;
    // SAFETY: `code` and the buffer out-parameters are valid locals.
    let message =
        with_return_buffer(|data, size| unsafe { proxy_get_status(&mut code, data, size) })?;
    Ok((code, message))
}

/// Makes the following hostcalls act on `context_id`.
pub fn set_effective_context(context_id: u32) -> HostResult<()> {
    // SAFETY: no memory is passed.
    check(unsafe { proxy_set_effective_context(context_id) })
}

/// Calls a host extension (e.g. Envoy's `clear_route_cache`).
pub fn call_foreign_function(name: &str, args: &[u8]) -> HostResult<Option<Vec<u8>>> {
    // SAFETY: both slices are alive during the call and only read; the out-parameters are valid
    // locals provided by `with_return_buffer`.
    with_return_buffer(|data, size| unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            data,
            size,
        )
    })
}

/// Defines (or re-opens) a metric.
pub fn define_metric(kind: MetricKind, name: &str) -> HostResult<u32> {
    let kind = match kind {
        MetricKind::Counter => 0,
        MetricKind::Gauge => 1,
        MetricKind::Histogram => 2,
    };
    let mut id = 0u32;
    // SAFETY: `name` is alive during the call and only read; `id` is a valid out-parameter.
    check(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Adds to a counter (delta > 0) or gauge.
pub fn increment_metric(id: u32, delta: i64) -> HostResult<()> {
    // SAFETY: no memory is passed.
    check(unsafe { proxy_increment_metric(id, delta) })
}

/// Records a histogram sample, sets a gauge or adds to a counter.
pub fn record_metric(id: u32, value: u64) -> HostResult<()> {
    // SAFETY: no memory is passed.
    check(unsafe { proxy_record_metric(id, value) })
}

/// Reads a counter or gauge.
pub fn metric(id: u32) -> HostResult<u64> {
    let mut value = 0u64;
    // SAFETY: `value` is a valid, aligned out-parameter for one u64.
    check(unsafe { proxy_get_metric(id, &mut value) })?;
    Ok(value)
}
