//! [`Host`] over `proxy_wasm::hostcalls`: the only code in meshward that calls the proxy.
//!
//! Compiled only for `wasm32-wasip1`. Every non-success status is mapped to [`HostError`]; this
//! file never panics itself. The proxy-wasm 0.2.5 wrappers, however, `panic!` on statuses they do
//! not list, and calling the raw `extern "C"` imports ourselves would need `unsafe` (forbidden
//! workspace-wide). Audit of what remains, per method (statuses from
//! `shared/docs/proxy-wasm-abi.md` §2):
//!
//! | method | SDK wrapper | Envoy statuses the wrapper would panic on | what we do |
//! |---|---|---|---|
//! | `header` | `get_map_bytes` (not `get_map_value_bytes`) | none: Envoy answers a pairs read of an unavailable map with Ok + empty | scan the map for the first value; `get_map_value*` would panic on the BadArgument Envoy returns once the map is gone |
//! | `set_header`, `add_header`, `remove_header`, `set_header_map` | `*_map_value_bytes`, `set_map_bytes` | BadArgument when the map is not available | request/response headers: refuse with `BadArgument` when a pairs read comes back empty (they always hold `:method` / `:status` while available), a probe skipped for the map a handle from `in_headers_callback` owns; **trailers: unguarded**, write them only inside their callbacks |
//! | `buffer` | `get_buffer` | BadArgument (only for start + max overflow) | `max` clipped so `start + max` cannot overflow |
//! | `property` | `get_property` | none (SerializationFailure / InternalFailure come back as `Err`) | — |
//! | `set_property` | `set_property` | NotFound in a root context (no stream) | **unavoidable**: call it only from HTTP-context callbacks |
//! | `shared_data`, `set_shared_data` | `get_shared_data`, `set_shared_data` | none | — |
//! | `now`, `log` | `get_current_time`, `log` | none | — |
//! | `log_level` | `get_log_level` | none, but Envoy may report 6 ("off"), which the SDK's enum cannot hold | **unavoidable**; filters set their own level from config as well |
//! | `send_local_response` | `send_http_response` / `send_grpc_response` | none | **`details` is dropped**: the 0.2.5 wrappers always send empty details; header values must be UTF-8 (else `BadArgument`); with `grpc_status` the HTTP status is 200 and the body is the gRPC message |
//! | `resume_request`, `resume_response` | `resume_http_*` | none | — |
//! | `http_call` | `dispatch_http_call` | none | header/trailer values must be UTF-8 (else `BadArgument`) |
//! | `grpc_call` | `dispatch_grpc_call` | BadArgument (invalid arguments) | **unavoidable**: we reject empty cluster/service/method ourselves first |
//! | `call_foreign_function` | `call_foreign_function` | none | — |
//! | metrics | `define_metric`, `increment_metric`, `record_metric`, `get_metric` | `record_metric`: BadArgument is not produced by Envoy | — |
//!
//! `fill_random` uses `getrandom` (WASI `random_get`) in chunks of at most 64 KiB, because Envoy
//! rejects larger requests.

use std::time::{Duration, UNIX_EPOCH};

use ::proxy_wasm::hostcalls;
use ::proxy_wasm::types::{BufferType, GrpcStatusCode, MapType, MetricType, Status};

use super::{
    BufferKind, GrpcCallout, HeaderPairs, Host, HostError, HostResult, HttpCallout, LocalResponse,
    LogLevel, MapKind, MetricKind, Nanos, SharedValue,
};

/// Envoy fails `random_get` above this size.
const MAX_RANDOM_CHUNK: usize = 64 * 1024;

/// The proxy, reached through `proxy_wasm::hostcalls`. Create one wherever needed.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyWasmHost {
    /// A header map the current callback is known to have (its own map: request headers in
    /// `on_http_request_headers`, response headers in `on_http_response_headers`), so writes to it
    /// skip the availability probe (a full map read, ~6k wasm instructions per write).
    available: Option<MapKind>,
}

impl ProxyWasmHost {
    /// A handle to the proxy.
    pub const fn new() -> Self {
        Self { available: None }
    }

    /// A handle for a header callback that owns `map` (Envoy guarantees the request headers in
    /// `on_http_request_headers` and the response headers in `on_http_response_headers`). Use
    /// only there: outside its callback a write to an unavailable map makes the SDK panic.
    pub const fn in_headers_callback(map: MapKind) -> Self {
        Self {
            available: Some(map),
        }
    }

    fn ensure_writable(&self, map: MapKind) -> HostResult<()> {
        if self.available == Some(map) {
            Ok(())
        } else {
            ensure_writable(map)
        }
    }
}

/// Maps a proxy-wasm status to a [`HostError`] (`Ok` never reaches here in practice; it maps to
/// `Status(0)` rather than panicking).
fn host_error(status: Status) -> HostError {
    match status {
        Status::NotFound => HostError::NotFound,
        Status::BadArgument => HostError::BadArgument,
        Status::SerializationFailure | Status::ParseFailure => HostError::SerializationFailure,
        Status::CasMismatch => HostError::CasMismatch,
        Status::InternalFailure => HostError::InternalFailure,
        other => HostError::Status(other as u32),
    }
}

fn map_type(map: MapKind) -> MapType {
    match map {
        MapKind::RequestHeaders => MapType::HttpRequestHeaders,
        MapKind::RequestTrailers => MapType::HttpRequestTrailers,
        MapKind::ResponseHeaders => MapType::HttpResponseHeaders,
        MapKind::ResponseTrailers => MapType::HttpResponseTrailers,
        MapKind::HttpCallResponseHeaders => MapType::HttpCallResponseHeaders,
        MapKind::HttpCallResponseTrailers => MapType::HttpCallResponseTrailers,
    }
}

fn buffer_type(kind: BufferKind) -> BufferType {
    match kind {
        BufferKind::RequestBody => BufferType::HttpRequestBody,
        BufferKind::ResponseBody => BufferType::HttpResponseBody,
        BufferKind::HttpCallResponseBody => BufferType::HttpCallResponseBody,
        BufferKind::VmConfiguration => BufferType::VmConfiguration,
        BufferKind::PluginConfiguration => BufferType::PluginConfiguration,
    }
}

fn metric_type(kind: MetricKind) -> MetricType {
    match kind {
        MetricKind::Counter => MetricType::Counter,
        MetricKind::Gauge => MetricType::Gauge,
        MetricKind::Histogram => MetricType::Histogram,
    }
}

fn sdk_level(level: LogLevel) -> ::proxy_wasm::types::LogLevel {
    use ::proxy_wasm::types::LogLevel as Sdk;
    match level {
        LogLevel::Trace => Sdk::Trace,
        LogLevel::Debug => Sdk::Debug,
        LogLevel::Info => Sdk::Info,
        LogLevel::Warn => Sdk::Warn,
        LogLevel::Error => Sdk::Error,
        LogLevel::Critical => Sdk::Critical,
    }
}

fn grpc_code(code: u32) -> HostResult<GrpcStatusCode> {
    Ok(match code {
        0 => GrpcStatusCode::Ok,
        1 => GrpcStatusCode::Cancelled,
        2 => GrpcStatusCode::Unknown,
        3 => GrpcStatusCode::InvalidArgument,
        4 => GrpcStatusCode::DeadlineExceeded,
        5 => GrpcStatusCode::NotFound,
        6 => GrpcStatusCode::AlreadyExists,
        7 => GrpcStatusCode::PermissionDenied,
        8 => GrpcStatusCode::ResourceExhausted,
        9 => GrpcStatusCode::FailedPrecondition,
        10 => GrpcStatusCode::Aborted,
        11 => GrpcStatusCode::OutOfRange,
        12 => GrpcStatusCode::Unimplemented,
        13 => GrpcStatusCode::Internal,
        14 => GrpcStatusCode::Unavailable,
        15 => GrpcStatusCode::DataLoss,
        16 => GrpcStatusCode::Unauthenticated,
        _ => return Err(HostError::BadArgument),
    })
}

/// Borrows `(String, Vec<u8>)` pairs as the `(&str, &str)` the 0.2.5 string-only wrappers want.
fn utf8_pairs(pairs: &[(String, Vec<u8>)]) -> HostResult<Vec<(&str, &str)>> {
    pairs
        .iter()
        .map(|(k, v)| {
            std::str::from_utf8(v)
                .map(|v| (k.as_str(), v))
                .map_err(|_| HostError::BadArgument)
        })
        .collect()
}

fn byte_pairs(pairs: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect()
}

/// The SDK writers panic on the BadArgument Envoy returns for an unavailable map. Request and
/// response header maps always hold a pseudo-header while available, so an empty pairs read
/// (which never panics) means "not available now": refuse before calling the writer.
fn ensure_writable(map: MapKind) -> HostResult<()> {
    match map {
        MapKind::RequestHeaders | MapKind::ResponseHeaders => {
            let pairs = hostcalls::get_map_bytes(map_type(map)).map_err(host_error)?;
            if pairs.is_empty() {
                Err(HostError::BadArgument)
            } else {
                Ok(())
            }
        }
        MapKind::HttpCallResponseHeaders | MapKind::HttpCallResponseTrailers => {
            Err(HostError::BadArgument)
        }
        MapKind::RequestTrailers | MapKind::ResponseTrailers => Ok(()),
    }
}

impl Host for ProxyWasmHost {
    fn header_map(&self, map: MapKind) -> HostResult<HeaderPairs> {
        hostcalls::get_map_bytes(map_type(map)).map_err(host_error)
    }

    fn header(&self, map: MapKind, name: &str) -> HostResult<Option<Vec<u8>>> {
        let name = name.to_ascii_lowercase();
        let pairs = hostcalls::get_map_bytes(map_type(map)).map_err(host_error)?;
        Ok(pairs.into_iter().find(|(k, _)| *k == name).map(|(_, v)| v))
    }

    fn set_header(&self, map: MapKind, name: &str, value: &[u8]) -> HostResult<()> {
        self.ensure_writable(map)?;
        hostcalls::set_map_value_bytes(map_type(map), name, Some(value)).map_err(host_error)
    }

    fn add_header(&self, map: MapKind, name: &str, value: &[u8]) -> HostResult<()> {
        self.ensure_writable(map)?;
        hostcalls::add_map_value_bytes(map_type(map), name, value).map_err(host_error)
    }

    fn remove_header(&self, map: MapKind, name: &str) -> HostResult<()> {
        self.ensure_writable(map)?;
        hostcalls::remove_map_value(map_type(map), name).map_err(host_error)
    }

    fn set_header_map(&self, map: MapKind, pairs: &[(String, Vec<u8>)]) -> HostResult<()> {
        self.ensure_writable(map)?;
        hostcalls::set_map_bytes(map_type(map), byte_pairs(pairs)).map_err(host_error)
    }

    fn buffer(&self, kind: BufferKind, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
        let max = max.min(usize::MAX - start);
        hostcalls::get_buffer(buffer_type(kind), start, max).map_err(host_error)
    }

    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        hostcalls::get_property(path.to_vec()).map_err(host_error)
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> HostResult<()> {
        hostcalls::set_property(path.to_vec(), Some(value)).map_err(host_error)
    }

    fn shared_data(&self, key: &str) -> HostResult<SharedValue> {
        let (value, cas) = hostcalls::get_shared_data(key).map_err(host_error)?;
        Ok(SharedValue {
            value: value.filter(|v| !v.is_empty()),
            cas,
        })
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(host_error)
    }

    fn now(&self) -> HostResult<Nanos> {
        let now = hostcalls::get_current_time().map_err(host_error)?;
        let since_epoch = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| HostError::InternalFailure)?;
        Nanos::try_from(since_epoch.as_nanos()).map_err(|_| HostError::InternalFailure)
    }

    fn fill_random(&self, buf: &mut [u8]) -> HostResult<()> {
        for chunk in buf.chunks_mut(MAX_RANDOM_CHUNK) {
            getrandom::fill(chunk).map_err(|_| HostError::InternalFailure)?;
        }
        Ok(())
    }

    fn send_local_response(&self, response: &LocalResponse) -> HostResult<()> {
        match response.grpc_status {
            Some(code) => {
                let message = std::str::from_utf8(&response.body)
                    .ok()
                    .filter(|m| !m.is_empty());
                hostcalls::send_grpc_response(
                    grpc_code(code)?,
                    message,
                    byte_pairs(&response.headers),
                )
                .map_err(host_error)
            }
            None => {
                let body = (!response.body.is_empty()).then_some(response.body.as_slice());
                hostcalls::send_http_response(
                    u32::from(response.status),
                    utf8_pairs(&response.headers)?,
                    body,
                )
                .map_err(host_error)
            }
        }
    }

    fn resume_request(&self) -> HostResult<()> {
        hostcalls::resume_http_request().map_err(host_error)
    }

    fn resume_response(&self) -> HostResult<()> {
        hostcalls::resume_http_response().map_err(host_error)
    }

    fn http_call(&self, call: &HttpCallout) -> HostResult<u32> {
        let body = (!call.body.is_empty()).then_some(call.body.as_slice());
        hostcalls::dispatch_http_call(
            &call.cluster,
            utf8_pairs(&call.headers)?,
            body,
            utf8_pairs(&call.trailers)?,
            Duration::from_millis(u64::from(call.timeout_ms)),
        )
        .map_err(host_error)
    }

    fn grpc_call(&self, call: &GrpcCallout) -> HostResult<u32> {
        // Envoy's BadArgument would panic inside the SDK wrapper: reject what we can see here.
        if call.cluster.is_empty() || call.service.is_empty() || call.method.is_empty() {
            return Err(HostError::BadArgument);
        }
        hostcalls::dispatch_grpc_call(
            &call.cluster,
            &call.service,
            &call.method,
            byte_pairs(&call.metadata),
            Some(call.message.as_slice()),
            Duration::from_millis(u64::from(call.timeout_ms)),
        )
        .map_err(host_error)
    }

    fn call_foreign_function(&self, name: &str, args: &[u8]) -> HostResult<Option<Vec<u8>>> {
        hostcalls::call_foreign_function(name, Some(args)).map_err(host_error)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32> {
        hostcalls::define_metric(metric_type(kind), name).map_err(host_error)
    }

    fn increment_metric(&self, id: u32, delta: i64) -> HostResult<()> {
        hostcalls::increment_metric(id, delta).map_err(host_error)
    }

    fn record_metric(&self, id: u32, value: u64) -> HostResult<()> {
        hostcalls::record_metric(id, value).map_err(host_error)
    }

    fn metric(&self, id: u32) -> HostResult<u64> {
        hostcalls::get_metric(id).map_err(host_error)
    }

    fn log(&self, level: LogLevel, message: &str) {
        // Envoy only fails a log call for a level above Critical, which we never send; there is
        // nowhere to report a logging failure anyway.
        let _ = hostcalls::log(sdk_level(level), message);
    }

    fn log_level(&self) -> LogLevel {
        use ::proxy_wasm::types::LogLevel as Sdk;
        match hostcalls::get_log_level() {
            Ok(Sdk::Trace) => LogLevel::Trace,
            Ok(Sdk::Debug) => LogLevel::Debug,
            Ok(Sdk::Info) | Err(_) => LogLevel::Info,
            Ok(Sdk::Warn) => LogLevel::Warn,
            Ok(Sdk::Error) => LogLevel::Error,
            Ok(Sdk::Critical) => LogLevel::Critical,
        }
    }
}
