//! A thin rate limit service for tests and `make run`: Envoy's
//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` over HTTP/2 (gRPC framing by
//! hand), answered by Kuadrant's `limitador` check-and-update and nothing else.
//!
//! Mapping, as Limitador's own RLS front does: the request's `domain` is the Limitador
//! namespace; the descriptors are bound as the CEL list `descriptors` (each a map of entry key →
//! value), so limits read `descriptors[0]['remote_address']`; `hits_addend` is the delta (0 means
//! 1, as in Envoy). Per-descriptor `hits_addend` and `limit` overrides are ignored, as Limitador
//! ignores them. The answer: `OK` or `OVER_LIMIT` overall, one status per descriptor carrying
//! the most restrictive counter (limit, remaining, time to reset), and Limitador's
//! `X-RateLimit-Limit/Remaining/Reset` (draft-03) in `response_headers_to_add`. A storage
//! failure (Redis down) is the gRPC status UNAVAILABLE, so the proxy's failure mode decides.
//!
//! Limits come from a YAML file in Limitador's own format (`namespace`, `max_value`, `seconds`,
//! `conditions`, `variables`, `name`), so the same file works with a Limitador deployment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::{Buf, Bytes, BytesMut};
use limitador::limit::{Context, Limit, Namespace};
use prost::Message;

pub mod proto;

use proto::{
    Code, DescriptorStatus, Duration, HeaderValue, RateLimit, RateLimitRequest, RateLimitResponse,
};

/// The one method served.
pub const SHOULD_RATE_LIMIT_PATH: &str =
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// Largest request message accepted (descriptors are small; anything bigger is refused).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// gRPC status codes this service answers with.
mod grpc_code {
    pub(crate) const OK: u32 = 0;
    pub(crate) const INVALID_ARGUMENT: u32 = 3;
    pub(crate) const RESOURCE_EXHAUSTED: u32 = 8;
    pub(crate) const UNIMPLEMENTED: u32 = 12;
    pub(crate) const INTERNAL: u32 = 13;
    pub(crate) const UNAVAILABLE: u32 = 14;
}

/// Where the counters live.
pub enum Storage {
    /// Limitador's in-memory storage (one process only), with this many counters at most.
    Memory {
        /// Counter cache size (Limitador evicts beyond it).
        cache_size: u64,
    },
    /// Limitador's Redis storage (exact across service instances), at this `redis://` URL.
    #[cfg(feature = "redis")]
    Redis {
        /// `redis://host:port`.
        url: String,
    },
}

enum Engine {
    Memory(limitador::RateLimiter),
    #[cfg(feature = "redis")]
    Redis(limitador::AsyncRateLimiter),
}

/// The service: limits plus their counters.
pub struct RateLimitService {
    engine: Engine,
}

/// Reads a Limitador limits file (YAML list of limits).
///
/// # Errors
/// Unreadable file or a limit Limitador cannot parse (CEL conditions/variables included).
pub fn read_limits(path: &std::path::Path) -> anyhow::Result<Vec<Limit>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_limits(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Parses limits in Limitador's YAML format.
///
/// # Errors
/// Invalid YAML or limit.
pub fn parse_limits(yaml: &str) -> anyhow::Result<Vec<Limit>> {
    Ok(serde_yaml::from_str(yaml)?)
}

impl RateLimitService {
    /// A service over `storage` with `limits`.
    ///
    /// # Errors
    /// Redis unreachable at start, or limits Limitador refuses.
    pub async fn new(storage: Storage, limits: Vec<Limit>) -> anyhow::Result<Self> {
        let engine = match storage {
            Storage::Memory { cache_size } => {
                let limiter = limitador::RateLimiter::new(cache_size);
                limiter
                    .configure_with(limits)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Engine::Memory(limiter)
            }
            #[cfg(feature = "redis")]
            Storage::Redis { url } => {
                let storage = limitador::storage::redis::AsyncRedisStorage::new(&url)
                    .await
                    .with_context(|| format!("connecting to {url}"))?;
                let limiter = limitador::AsyncRateLimiter::new_with_storage(Box::new(storage));
                limiter
                    .configure_with(limits)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Engine::Redis(limiter)
            }
        };
        Ok(Self { engine })
    }

    /// `ShouldRateLimit`: check-and-update in Limitador. `Err` is a gRPC status (code, message).
    pub async fn should_rate_limit(
        &self,
        request: &RateLimitRequest,
    ) -> Result<RateLimitResponse, (u32, String)> {
        if request.domain.is_empty() {
            return Err((grpc_code::INVALID_ARGUMENT, "empty domain".to_owned()));
        }
        let namespace = Namespace::from(request.domain.as_str());
        let descriptors: Vec<HashMap<String, String>> = request
            .descriptors
            .iter()
            .map(|d| {
                d.entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect()
            })
            .collect();
        let mut ctx = Context::default();
        ctx.list_binding("descriptors".to_owned(), descriptors);
        let delta = u64::from(request.hits_addend.max(1));
        let result = match &self.engine {
            Engine::Memory(limiter) => {
                limiter.check_rate_limited_and_update(&namespace, &ctx, delta)
            }
            #[cfg(feature = "redis")]
            Engine::Redis(limiter) => {
                limiter
                    .check_rate_limited_and_update(&namespace, &ctx, delta)
                    .await
            }
        };
        let mut result = result.map_err(|e| (grpc_code::UNAVAILABLE, format!("limitador: {e}")))?;
        let code = if result.limited {
            Code::OverLimit
        } else {
            Code::Ok
        };
        let headers = result.response_header();
        // Most restrictive first (response_header sorted them).
        let status = result.counters.first().map(|counter| DescriptorStatus {
            code: code as i32,
            current_limit: Some(RateLimit {
                name: counter.limit().name().unwrap_or_default().to_owned(),
                requests_per_unit: u32::try_from(counter.max_value()).unwrap_or(u32::MAX),
                unit: unit_of(counter.window().as_secs()) as i32,
            }),
            limit_remaining: u32::try_from(counter.remaining().unwrap_or(counter.max_value()))
                .unwrap_or(u32::MAX),
            duration_until_reset: counter.expires_in().map(|d| Duration {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
            }),
        });
        let mut response_headers_to_add: Vec<HeaderValue> = headers
            .into_iter()
            .map(|(key, value)| HeaderValue {
                key: key.to_ascii_lowercase(),
                value,
            })
            .collect();
        response_headers_to_add.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(RateLimitResponse {
            overall_code: code as i32,
            statuses: request
                .descriptors
                .iter()
                .filter_map(|_| status.clone())
                .collect(),
            response_headers_to_add,
            request_headers_to_add: Vec::new(),
        })
    }
}

/// Envoy's `RateLimit.Unit` for a window (SECOND=1 … DAY=4; other windows report UNKNOWN).
fn unit_of(seconds: u64) -> proto::Unit {
    match seconds {
        1 => proto::Unit::Second,
        60 => proto::Unit::Minute,
        3600 => proto::Unit::Hour,
        86_400 => proto::Unit::Day,
        _ => proto::Unit::Unknown,
    }
}

/// Frames one gRPC message.
fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 5);
    out.extend_from_slice(&[0]);
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    out.freeze()
}

/// Reads the single request message of a unary call.
fn unframe(mut body: Bytes) -> Result<Bytes, (u32, String)> {
    if body.len() < 5 {
        return Err((grpc_code::INTERNAL, "truncated gRPC frame".to_owned()));
    }
    let compressed = body.get_u8();
    let len = body.get_u32() as usize;
    if compressed != 0 {
        return Err((
            grpc_code::UNIMPLEMENTED,
            "compressed messages are not supported".to_owned(),
        ));
    }
    if len != body.len() {
        return Err((grpc_code::INTERNAL, "bad gRPC frame length".to_owned()));
    }
    Ok(body)
}

fn status_trailers(code: u32, message: &str) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from(code));
    // grpc-message is percent-encoded; our messages are ASCII, so only escape what must be.
    let encoded: String = message
        .bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if let Ok(value) = http::HeaderValue::from_str(&encoded) {
        trailers.insert("grpc-message", value);
    }
    trailers
}

async fn answer(
    service: &RateLimitService,
    request: http::Request<h2::RecvStream>,
) -> Result<Bytes, (u32, String)> {
    let (head, mut body) = request.into_parts();
    if head.uri.path() != SHOULD_RATE_LIMIT_PATH {
        return Err((
            grpc_code::UNIMPLEMENTED,
            format!("unknown method {}", head.uri.path()),
        ));
    }
    let mut received = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| (grpc_code::INTERNAL, e.to_string()))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if received.len() + chunk.len() > MAX_REQUEST_BYTES + 5 {
            return Err((
                grpc_code::RESOURCE_EXHAUSTED,
                "request message too large".to_owned(),
            ));
        }
        received.extend_from_slice(&chunk);
    }
    let message = unframe(received.freeze())?;
    let request = RateLimitRequest::decode(message)
        .map_err(|e| (grpc_code::INTERNAL, format!("bad RateLimitRequest: {e}")))?;
    let response = service.should_rate_limit(&request).await?;
    Ok(frame(&response.encode_to_vec()))
}

async fn respond(
    service: Arc<RateLimitService>,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let head = || {
        http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .body(())
    };
    let Ok(head) = head() else { return };
    match answer(&service, request).await {
        Ok(message) => {
            let Ok(mut stream) = respond.send_response(head, false) else {
                return;
            };
            if stream.send_data(message, false).is_ok() {
                let _ = stream.send_trailers(status_trailers(grpc_code::OK, ""));
            }
        }
        Err((code, message)) => {
            // Trailers-only: the status in the response headers.
            let (mut parts, ()) = head.into_parts();
            parts.headers.extend(status_trailers(code, &message));
            let _ = respond.send_response(http::Response::from_parts(parts, ()), true);
        }
    }
}

/// Serves HTTP/2 connections on `listener` until the task is dropped/aborted.
pub async fn serve(listener: tokio::net::TcpListener, service: Arc<RateLimitService>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let Ok(mut connection) = h2::server::handshake(tcp).await else {
                return;
            };
            while let Some(Ok((request, send))) = connection.accept().await {
                tokio::spawn(respond(Arc::clone(&service), request, send));
            }
        });
    }
}

/// A service running on its own runtime thread (tests): stops when dropped.
pub struct RunningService {
    /// Where it listens.
    pub address: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl RunningService {
    /// Starts a service on `address` (port 0: a free one) with `storage` and `limits`.
    ///
    /// # Errors
    /// Bind failure or [`RateLimitService::new`]'s.
    pub fn start(
        address: SocketAddr,
        storage: Storage,
        limits: Vec<Limit>,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let (listener, service) = runtime.block_on(async {
            let service = RateLimitService::new(storage, limits).await?;
            let listener = tokio::net::TcpListener::bind(address).await?;
            Ok::<_, anyhow::Error>((listener, Arc::new(service)))
        })?;
        let address = listener.local_addr()?;
        runtime.spawn(serve(listener, service));
        Ok(Self {
            address,
            runtime: Some(runtime),
        })
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Closes the listener and every connection now: clients see the service go away.
            runtime.shutdown_background();
        }
    }
}
