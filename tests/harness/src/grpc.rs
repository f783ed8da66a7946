//! Unary gRPC callouts (`proxy_grpc_call`) carried over real HTTP/2, as Envoy's gRPC async
//! client does: the cluster argument (a serialized `GrpcService` or a plain cluster name), the
//! request framing (`/service/method`, `application/grpc`, `te: trailers`, `grpc-timeout`, the
//! module's initial metadata), the answer (one length-prefixed message, `grpc-status` and
//! `grpc-message` in trailers or a trailers-only response) and the timeout, which the host
//! enforces: a late answer is dropped and the module gets `DEADLINE_EXCEEDED`.
//!
//! The VM side (tokens, delivery through `proxy_on_grpc_receive` / `proxy_on_grpc_close`) is in
//! [`crate::Plugin::pending_grpc_calls`] and [`crate::Plugin::deliver_grpc_reply`];
//! [`GrpcClient`] is the network side, used by [`crate::Plugin::run_grpc_calls`] and the dev
//! proxy. Cluster addresses come from [`crate::SharedState::set_cluster_address`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

use crate::types::{CallId, HeaderMap, StreamId};

/// gRPC status codes the host produces itself (the module may receive any 0–16 from a server).
pub mod code {
    /// Success.
    pub const OK: u32 = 0;
    /// Non-200 HTTP status without `grpc-status` (Envoy's async client reports it as cancelled).
    pub const CANCELLED: u32 = 1;
    /// No `grpc-status` in the answer.
    pub const UNKNOWN: u32 = 2;
    /// The host's timeout fired first.
    pub const DEADLINE_EXCEEDED: u32 = 4;
    /// The answer's message exceeds [`super::MAX_MESSAGE_BYTES`].
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    /// Bad framing, a compressed message, or no message with status OK.
    pub const INTERNAL: u32 = 13;
    /// No address for the cluster, connection refused or reset.
    pub const UNAVAILABLE: u32 = 14;
}

/// Largest message accepted from a server (gRPC's customary default receive limit).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// An outstanding `proxy_grpc_call`, waiting for an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingGrpcCall {
    /// Identity for [`crate::Plugin::deliver_grpc_reply`] (token `n*4 + 1`).
    pub id: CallId,
    /// Cluster name (from the plain name or the `GrpcService`'s `envoy_grpc.cluster_name`).
    pub cluster: String,
    /// `:authority` of the request (`envoy_grpc.authority`, else the cluster name).
    pub authority: String,
    /// Fully-qualified service, e.g. `envoy.service.ratelimit.v3.RateLimitService`.
    pub service: String,
    /// Method, e.g. `ShouldRateLimit`.
    pub method: String,
    /// Initial metadata the module sent (lower-case keys).
    pub metadata: HeaderMap,
    /// Serialized request message.
    pub message: Vec<u8>,
    /// Timeout in ms; 0 = none (Envoy).
    pub timeout_ms: u32,
    /// The stream whose context issued the call, if any.
    pub stream: Option<StreamId>,
}

/// The answer to a unary gRPC call as the module sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrpcReply {
    /// Status OK with one message: `proxy_on_grpc_receive` with the message in buffer 5.
    Message(Vec<u8>),
    /// Any failure: `proxy_on_grpc_close` with `code`; `proxy_get_status` gives `message`.
    Status {
        /// gRPC status code.
        code: u32,
        /// `grpc-message` (percent-decoded) or the host's reason.
        message: String,
    },
}

impl GrpcReply {
    /// A failure with `code` and `message`.
    pub fn status(code: u32, message: impl Into<String>) -> Self {
        Self::Status {
            code,
            message: message.into(),
        }
    }
}

/// `envoy.config.core.v3.GrpcService`, only the fields the host reads.
#[derive(Clone, PartialEq, prost::Message)]
struct GrpcService {
    #[prost(message, optional, tag = "1")]
    envoy_grpc: Option<EnvoyGrpc>,
    #[prost(message, optional, tag = "2")]
    google_grpc: Option<Skipped>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EnvoyGrpc {
    #[prost(string, tag = "1")]
    cluster_name: String,
    #[prost(string, tag = "2")]
    authority: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Skipped {}

/// What the cluster argument of `proxy_grpc_call` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A cluster and the `:authority` to send.
    Cluster { name: String, authority: String },
    /// Bytes that are not a `GrpcService` and not a known cluster name: ParseFailure.
    UnknownName,
    /// A `GrpcService` Envoy's client manager refuses (no `envoy_grpc`, empty cluster name, or
    /// `google_grpc`, which this host does not run): InternalFailure.
    Refused,
}

/// Envoy's rule: parse the argument as a serialized `GrpcService`; if it is not one, it is a
/// cluster name, which must exist. A `GrpcService`'s cluster is checked at send time.
pub(crate) fn resolve_target(bytes: &[u8], known: impl Fn(&str) -> bool) -> Target {
    match GrpcService::decode(bytes) {
        Ok(service) => match service.envoy_grpc {
            Some(envoy) if !envoy.cluster_name.is_empty() && service.google_grpc.is_none() => {
                let authority = if envoy.authority.is_empty() {
                    envoy.cluster_name.clone()
                } else {
                    envoy.authority
                };
                Target::Cluster {
                    name: envoy.cluster_name,
                    authority,
                }
            }
            _ => Target::Refused,
        },
        Err(_) => {
            let name = String::from_utf8_lossy(bytes).into_owned();
            if known(&name) {
                Target::Cluster {
                    authority: name.clone(),
                    name,
                }
            } else {
                Target::UnknownName
            }
        }
    }
}

/// Serializes a `GrpcService { envoy_grpc { cluster_name, authority } }` (for tests and
/// modules that pass the proto form).
pub fn grpc_service_bytes(cluster: &str, authority: &str) -> Vec<u8> {
    GrpcService {
        envoy_grpc: Some(EnvoyGrpc {
            cluster_name: cluster.to_owned(),
            authority: authority.to_owned(),
        }),
        google_grpc: None,
    }
    .encode_to_vec()
}

/// Frames one gRPC message: flag 0 (uncompressed), 4-byte big-endian length, the message.
pub fn frame_message(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    out
}

/// Reads length-prefixed messages from `buf` as they complete.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message: `Ok(None)` when more bytes are needed; `Err` (a gRPC code
    /// and reason) for a compressed message or one over [`MAX_MESSAGE_BYTES`].
    pub fn next_message(&mut self) -> Result<Option<Bytes>, (u32, String)> {
        let Some(header) = self.buf.get(..5) else {
            return Ok(None);
        };
        let compressed = header.first().copied().unwrap_or(0);
        let len_bytes: [u8; 4] = header
            .get(1..5)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 4]);
        let len = u32::from_be_bytes(len_bytes) as usize;
        if compressed != 0 {
            return Err((
                code::INTERNAL,
                "compressed gRPC message without a negotiated encoding".to_owned(),
            ));
        }
        if len > MAX_MESSAGE_BYTES {
            return Err((
                code::RESOURCE_EXHAUSTED,
                format!("gRPC message of {len} bytes exceeds {MAX_MESSAGE_BYTES}"),
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Bytes received that do not form a whole message.
    pub fn leftover(&self) -> usize {
        self.buf.len()
    }
}

/// `grpc-message` is percent-encoded on the wire.
pub fn percent_decode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        if b == b'%'
            && let Some(hex) = value.get(i + 1..i + 3)
            && let Ok(text) = std::str::from_utf8(hex)
            && let Ok(decoded) = u8::from_str_radix(text, 16)
        {
            out.push(decoded);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status in a header or trailer block: `None` without `grpc-status`.
fn status_of(map: &http::HeaderMap) -> Option<(u32, String)> {
    let code = map
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u32>().unwrap_or(code::UNKNOWN))?;
    let message = map
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    Some((code, message))
}

/// An HTTP/2 gRPC client with one connection per address (re-dialled when it breaks). Cheap to
/// clone; safe to share between tasks.
#[derive(Clone, Debug, Default)]
pub struct GrpcClient {
    connections: Arc<tokio::sync::Mutex<HashMap<SocketAddr, h2::client::SendRequest<Bytes>>>>,
}

impl GrpcClient {
    /// A client without connections yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `call` to `address` (`None`: the cluster has no address → UNAVAILABLE) and waits
    /// for the answer, at most `call.timeout_ms` (0 = no limit) → DEADLINE_EXCEEDED.
    pub async fn call(&self, address: Option<SocketAddr>, call: &PendingGrpcCall) -> GrpcReply {
        let Some(address) = address else {
            return GrpcReply::status(
                code::UNAVAILABLE,
                format!(
                    "no healthy upstream: cluster `{}` has no address",
                    call.cluster
                ),
            );
        };
        let exchange = self.exchange(address, call);
        if call.timeout_ms == 0 {
            return exchange.await;
        }
        match tokio::time::timeout(Duration::from_millis(call.timeout_ms.into()), exchange).await {
            Ok(reply) => reply,
            Err(_) => GrpcReply::status(code::DEADLINE_EXCEEDED, "upstream request timeout"),
        }
    }

    async fn connection(
        &self,
        address: SocketAddr,
        fresh: bool,
    ) -> Result<h2::client::SendRequest<Bytes>, String> {
        let mut connections = self.connections.lock().await;
        if !fresh && let Some(existing) = connections.get(&address) {
            return Ok(existing.clone());
        }
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("upstream connect error: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (send, connection) = h2::client::handshake(tcp)
            .await
            .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
        tokio::spawn(async move {
            // Ends when the peer closes; the next call notices and re-dials.
            let _ = connection.await;
        });
        connections.insert(address, send.clone());
        Ok(send)
    }

    fn request(call: &PendingGrpcCall, address: SocketAddr) -> Result<http::Request<()>, String> {
        let mut builder = http::Request::builder()
            .method("POST")
            .uri(format!(
                "http://{}/{}/{}",
                if call.authority.is_empty() {
                    address.to_string()
                } else {
                    call.authority.clone()
                },
                call.service,
                call.method
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if call.timeout_ms > 0 {
            builder = builder.header("grpc-timeout", format!("{}m", call.timeout_ms));
        }
        for (key, value) in call.metadata.iter() {
            if key.starts_with(':') {
                continue;
            }
            builder = builder.header(key, value);
        }
        builder
            .body(())
            .map_err(|e| format!("invalid gRPC request: {e}"))
    }

    async fn exchange(&self, address: SocketAddr, call: &PendingGrpcCall) -> GrpcReply {
        if let Err(reason) = Self::request(call, address) {
            return GrpcReply::status(code::INTERNAL, reason);
        }
        let body = Bytes::from(frame_message(&call.message));
        // A cached connection may have been closed by the peer since: one fresh retry.
        let mut fresh = false;
        let response = loop {
            let sender = match self.connection(address, fresh).await {
                Ok(sender) => sender,
                Err(reason) => return GrpcReply::status(code::UNAVAILABLE, reason),
            };
            let Ok(request) = Self::request(call, address) else {
                return GrpcReply::status(code::INTERNAL, "invalid gRPC request");
            };
            let sent = async {
                let mut sender = sender.ready().await?;
                let (response, mut stream) = sender.send_request(request, false)?;
                stream.send_data(body.clone(), true)?;
                Ok::<_, h2::Error>(response)
            }
            .await;
            match sent {
                Ok(response) => break response,
                Err(_) if !fresh => fresh = true,
                Err(e) => {
                    return GrpcReply::status(
                        code::UNAVAILABLE,
                        format!("upstream connect error or disconnect/reset before headers: {e}"),
                    );
                }
            }
        };
        let response = match response.await {
            Ok(response) => response,
            Err(e) => {
                return GrpcReply::status(
                    code::UNAVAILABLE,
                    format!("upstream connect error or disconnect/reset before headers: {e}"),
                );
            }
        };
        let (head, mut body) = response.into_parts();
        if body.is_end_stream() {
            // Trailers-only: the status is in the headers.
            return match status_of(&head.headers) {
                Some((code::OK, _)) => GrpcReply::status(code::INTERNAL, "no gRPC message"),
                Some((code, message)) => GrpcReply::Status { code, message },
                None if head.status != http::StatusCode::OK => GrpcReply::status(
                    code::CANCELLED,
                    format!("HTTP status {}", head.status.as_u16()),
                ),
                None => GrpcReply::status(code::UNKNOWN, "no grpc-status"),
            };
        }
        if head.status != http::StatusCode::OK {
            return GrpcReply::status(
                code::CANCELLED,
                format!("HTTP status {}", head.status.as_u16()),
            );
        }
        let mut decoder = FrameDecoder::default();
        let mut message: Option<Bytes> = None;
        while let Some(chunk) = body.data().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    return GrpcReply::status(code::INTERNAL, format!("stream reset: {e}"));
                }
            };
            let _ = body.flow_control().release_capacity(chunk.len());
            decoder.push(&chunk);
            loop {
                match decoder.next_message() {
                    Ok(Some(next)) => {
                        if message.is_some() {
                            return GrpcReply::status(
                                code::INTERNAL,
                                "more than one message on a unary call",
                            );
                        }
                        message = Some(next);
                    }
                    Ok(None) => break,
                    Err((code, reason)) => return GrpcReply::status(code, reason),
                }
            }
        }
        let trailers = match body.trailers().await {
            Ok(trailers) => trailers.unwrap_or_default(),
            Err(e) => return GrpcReply::status(code::INTERNAL, format!("stream reset: {e}")),
        };
        if decoder.leftover() > 0 {
            return GrpcReply::status(code::INTERNAL, "truncated gRPC message");
        }
        match (status_of(&trailers), message) {
            (Some((code::OK, _)), Some(message)) => GrpcReply::Message(message.to_vec()),
            (Some((code::OK, _)), None) => GrpcReply::status(code::INTERNAL, "no gRPC message"),
            (Some((code, message)), _) => GrpcReply::Status { code, message },
            (None, _) => GrpcReply::status(code::UNKNOWN, "no grpc-status in trailers"),
        }
    }
}

/// A [`GrpcClient`] with its own runtime, for synchronous callers (tests, `pw-run`).
#[derive(Debug)]
pub struct BlockingGrpcClient {
    runtime: tokio::runtime::Runtime,
    client: GrpcClient,
}

impl BlockingGrpcClient {
    /// A client on a one-thread runtime.
    ///
    /// # Errors
    /// The runtime cannot start.
    pub fn new() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        Ok(Self {
            runtime,
            client: GrpcClient::new(),
        })
    }

    /// Runs every call concurrently; answers in the order of `calls`.
    pub fn call_all(&self, calls: Vec<(Option<SocketAddr>, PendingGrpcCall)>) -> Vec<GrpcReply> {
        self.runtime.block_on(async {
            let tasks: Vec<_> = calls
                .into_iter()
                .map(|(address, call)| {
                    let client = self.client.clone();
                    tokio::spawn(async move { client.call(address, &call).await })
                })
                .collect();
            let mut replies = Vec::with_capacity(tasks.len());
            for task in tasks {
                replies.push(task.await.unwrap_or_else(|e| {
                    GrpcReply::status(code::INTERNAL, format!("host task failed: {e}"))
                }));
            }
            replies
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_and_grpc_services_resolve_like_envoy() {
        let known = |n: &str| n == "ratelimit";
        assert_eq!(
            resolve_target(b"ratelimit", known),
            Target::Cluster {
                name: "ratelimit".into(),
                authority: "ratelimit".into()
            }
        );
        assert_eq!(resolve_target(b"nope-cluster", known), Target::UnknownName);
        assert_eq!(
            resolve_target(&grpc_service_bytes("rls", "rls.example"), known),
            Target::Cluster {
                name: "rls".into(),
                authority: "rls.example".into()
            }
        );
        assert_eq!(
            resolve_target(&grpc_service_bytes("rls", ""), known),
            Target::Cluster {
                name: "rls".into(),
                authority: "rls".into()
            }
        );
        // An empty argument parses as an empty GrpcService: no target.
        assert_eq!(resolve_target(b"", known), Target::Refused);
    }

    #[test]
    fn frames_round_trip_and_bad_frames_are_refused() {
        let mut decoder = FrameDecoder::default();
        let framed = frame_message(b"hello");
        let (first, rest) = framed.split_at(3);
        decoder.push(first);
        assert_eq!(decoder.next_message(), Ok(None));
        decoder.push(rest);
        assert_eq!(
            decoder.next_message(),
            Ok(Some(Bytes::from_static(b"hello")))
        );
        assert_eq!(decoder.leftover(), 0);

        let mut compressed = FrameDecoder::default();
        compressed.push(&[1, 0, 0, 0, 1, 7]);
        assert_eq!(
            compressed.next_message().map_err(|e| e.0),
            Err(code::INTERNAL)
        );

        let mut huge = FrameDecoder::default();
        huge.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            huge.next_message().map_err(|e| e.0),
            Err(code::RESOURCE_EXHAUSTED)
        );
    }

    #[test]
    fn grpc_message_is_percent_decoded() {
        assert_eq!(percent_decode(b"over%20limit%zz%"), "over limit%zz%");
    }
}
