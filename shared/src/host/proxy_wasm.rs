//! [`Host`] in the proxy: the audited raw imports of [`crate::abi`], plus the SDK for the two
//! calls whose bookkeeping lives in its dispatcher.
//!
//! Compiled only for `wasm32-wasip1`. Nothing here panics: every status becomes a [`HostError`].
//!
//! Callouts (`http_call`, `grpc_call`) go through the SDK's `Context` methods on purpose: the
//! SDK's dispatcher records which context started a callout and routes the response to it (a
//! token it does not know would make it panic when the response arrives). The wrappers it calls
//! accept every status Envoy returns for these two imports except `BadArgument` from
//! `proxy_grpc_call`, which we rule out by checking the arguments first; header values of
//! callouts must be UTF-8 (the SDK's signature), else `BadArgument`.
//!
//! `fill_random` uses WASI `random_get` (through `getrandom`) in chunks of at most 64 KiB, Envoy's
//! limit per call.

use std::time::Duration;

use ::proxy_wasm::traits::Context;

use super::{
    BufferKind, GrpcCall, HeaderMap, Host, HostError, HostResult, HttpCall, LocalReply, LogLevel,
    MapKind, MetricKind, Nanos, PropertyPath, SharedValue, StreamKind,
};
use crate::abi::{self, BufferType, MapType};

/// Envoy fails `random_get` above this size.
const MAX_RANDOM_CHUNK: usize = 64 * 1024;

/// The proxy. Zero-sized: create one wherever needed.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyWasmHost;

/// A context value only for calling the SDK's callout methods, which register the token for the
/// context the dispatcher is currently delivering a callback to.
struct CalloutRegistrar;

impl Context for CalloutRegistrar {}

impl ProxyWasmHost {
    /// A handle to the proxy.
    pub const fn new() -> Self {
        Self
    }
}

const fn map_type(map: MapKind) -> MapType {
    match map {
        MapKind::RequestHeaders => MapType::HttpRequestHeaders,
        MapKind::RequestTrailers => MapType::HttpRequestTrailers,
        MapKind::ResponseHeaders => MapType::HttpResponseHeaders,
        MapKind::ResponseTrailers => MapType::HttpResponseTrailers,
        MapKind::HttpCallResponseHeaders => MapType::HttpCallResponseHeaders,
        MapKind::HttpCallResponseTrailers => MapType::HttpCallResponseTrailers,
        MapKind::GrpcInitialMetadata => MapType::GrpcReceiveInitialMetadata,
        MapKind::GrpcTrailingMetadata => MapType::GrpcReceiveTrailingMetadata,
    }
}

const fn buffer_type(kind: BufferKind) -> BufferType {
    match kind {
        BufferKind::RequestBody => BufferType::HttpRequestBody,
        BufferKind::ResponseBody => BufferType::HttpResponseBody,
        BufferKind::HttpCallResponseBody => BufferType::HttpCallResponseBody,
        BufferKind::GrpcReceiveBuffer => BufferType::GrpcReceiveBuffer,
        BufferKind::VmConfiguration => BufferType::VmConfiguration,
        BufferKind::PluginConfiguration => BufferType::PluginConfiguration,
    }
}

/// Borrows byte pairs as the `&str` pairs the SDK's callout wrappers take.
fn utf8_pairs<'a>(pairs: &[(&'a str, &'a [u8])]) -> HostResult<Vec<(&'a str, &'a str)>> {
    pairs
        .iter()
        .map(|(k, v)| {
            std::str::from_utf8(v)
                .map(|v| (*k, v))
                .map_err(|_| HostError::BadArgument)
        })
        .collect()
}

fn sdk_error(status: ::proxy_wasm::types::Status) -> HostError {
    HostError::from_status(status as u32)
}

impl Host for ProxyWasmHost {
    fn header_map(&self, map: MapKind) -> HostResult<HeaderMap> {
        abi::header_map(map_type(map))
    }

    fn header(&self, map: MapKind, name: &str) -> HostResult<Option<Vec<u8>>> {
        abi::header(map_type(map), name)
    }

    fn set_header(&self, map: MapKind, name: &str, value: &[u8]) -> HostResult<()> {
        abi::set_header(map_type(map), name, value)
    }

    fn add_header(&self, map: MapKind, name: &str, value: &[u8]) -> HostResult<()> {
        abi::add_header(map_type(map), name, value)
    }

    fn remove_header(&self, map: MapKind, name: &str) -> HostResult<()> {
        abi::remove_header(map_type(map), name)
    }

    fn set_header_map(&self, map: MapKind, pairs: &[(&str, &[u8])]) -> HostResult<()> {
        abi::set_header_map(map_type(map), pairs)
    }

    fn buffer(&self, kind: BufferKind, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
        abi::buffer(buffer_type(kind), start, max)
    }

    fn property(&self, path: &PropertyPath) -> HostResult<Option<Vec<u8>>> {
        abi::property(path.as_bytes())
    }

    fn set_property(&self, path: &PropertyPath, value: &[u8]) -> HostResult<()> {
        abi::set_property(path.as_bytes(), value)
    }

    fn shared_data(&self, key: &str) -> HostResult<SharedValue> {
        abi::shared_data(key)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        abi::set_shared_data(key, value, cas)
    }

    fn register_queue(&self, name: &str) -> HostResult<u32> {
        abi::register_queue(name)
    }

    fn resolve_queue(&self, vm_id: &str, name: &str) -> HostResult<Option<u32>> {
        abi::resolve_queue(vm_id, name)
    }

    fn enqueue(&self, queue: u32, value: &[u8]) -> HostResult<()> {
        abi::enqueue(queue, value)
    }

    fn dequeue(&self, queue: u32) -> HostResult<Option<Vec<u8>>> {
        abi::dequeue(queue)
    }

    fn now(&self) -> HostResult<Nanos> {
        abi::current_time_nanos()
    }

    fn fill_random(&self, buf: &mut [u8]) -> HostResult<()> {
        for chunk in buf.chunks_mut(MAX_RANDOM_CHUNK) {
            getrandom::fill(chunk).map_err(|_| HostError::InternalFailure)?;
        }
        Ok(())
    }

    fn set_effective_context(&self, context_id: u32) -> HostResult<()> {
        abi::set_effective_context(context_id)
    }

    fn set_tick_period(&self, millis: u32) -> HostResult<()> {
        abi::set_tick_period_millis(millis)
    }

    fn send_local_response(&self, reply: &LocalReply<'_>) -> HostResult<()> {
        abi::send_local_response(
            reply.status,
            reply.details,
            reply.body,
            reply.headers,
            reply.grpc_status,
        )
    }

    fn continue_stream(&self, stream: StreamKind) -> HostResult<()> {
        abi::continue_stream(stream)
    }

    fn close_stream(&self, stream: StreamKind) -> HostResult<()> {
        abi::close_stream(stream)
    }

    fn http_call(&self, call: &HttpCall<'_>) -> HostResult<u32> {
        let headers = utf8_pairs(call.headers)?;
        let trailers = utf8_pairs(call.trailers)?;
        CalloutRegistrar
            .dispatch_http_call(
                call.cluster,
                headers,
                (!call.body.is_empty()).then_some(call.body),
                trailers,
                Duration::from_millis(u64::from(call.timeout_ms)),
            )
            .map_err(sdk_error)
    }

    fn grpc_call(&self, call: &GrpcCall<'_>) -> HostResult<u32> {
        // Envoy's BadArgument would panic inside the SDK wrapper: reject what it would reject.
        if call.cluster.is_empty() || call.service.is_empty() || call.method.is_empty() {
            return Err(HostError::BadArgument);
        }
        CalloutRegistrar
            .dispatch_grpc_call(
                call.cluster,
                call.service,
                call.method,
                call.metadata.to_vec(),
                Some(call.message),
                Duration::from_millis(u64::from(call.timeout_ms)),
            )
            .map_err(sdk_error)
    }

    fn grpc_cancel(&self, token: u32) -> HostResult<()> {
        abi::grpc_cancel(token)
    }

    fn grpc_close(&self, token: u32) -> HostResult<()> {
        abi::grpc_close(token)
    }

    fn call_status(&self) -> HostResult<(u32, Option<Vec<u8>>)> {
        abi::call_status()
    }

    fn call_foreign_function(&self, name: &str, args: &[u8]) -> HostResult<Option<Vec<u8>>> {
        abi::call_foreign_function(name, args)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32> {
        abi::define_metric(kind, name)
    }

    fn increment_metric(&self, id: u32, delta: i64) -> HostResult<()> {
        abi::increment_metric(id, delta)
    }

    fn record_metric(&self, id: u32, value: u64) -> HostResult<()> {
        abi::record_metric(id, value)
    }

    fn metric(&self, id: u32) -> HostResult<u64> {
        abi::metric(id)
    }

    fn log(&self, level: LogLevel, message: &str) {
        abi::log(level, message);
    }

    fn log_level(&self) -> LogLevel {
        abi::log_level().unwrap_or(LogLevel::Info)
    }
}
