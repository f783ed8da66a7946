//! Property (attribute) resolution as Envoy does it for `proxy_get_property`: CEL attributes
//! first, then the Wasm-only names, then filter state `wasm.<name>`.

use crate::abi::status::{NOT_FOUND, SERIALIZATION_FAILURE};
use crate::types::{HeaderMap, PropValue};
use crate::vm::{HostState, StreamCtx};

/// Envoy's filter-state key prefix for values written by `proxy_set_property`.
pub const FILTER_STATE_PREFIX: &str = "wasm.";

/// Every top-level path the host resolves (for the README parity table and tests).
pub const SUPPORTED_PATHS: &[&str] = &[
    "request.path",
    "request.url_path",
    "request.host",
    "request.scheme",
    "request.method",
    "request.headers",
    "request.headers.<name>",
    "request.referer",
    "request.useragent",
    "request.id",
    "request.protocol",
    "request.query",
    "request.time",
    "request.size",
    "request.duration",
    "request.total_size",
    "response.code",
    "response.code_details",
    "response.headers",
    "response.headers.<name>",
    "response.trailers",
    "response.grpc_status",
    "response.flags",
    "response.size",
    "response.total_size",
    "response.backend_latency",
    "source.address",
    "source.port",
    "destination.address",
    "destination.port",
    "connection.id",
    "connection.mtls",
    "xds.route_name",
    "xds.cluster_name",
    "xds.node.id",
    "xds.node.cluster",
    "xds.node.metadata.<key>",
    "node.id",
    "node.cluster",
    "node.metadata.<key>",
    "plugin_name",
    "plugin_root_id",
    "plugin_vm_id",
    "filter_state.<key>",
    "<name> (filter state wasm.<name>)",
];

fn map_value(map: &HeaderMap) -> Vec<u8> {
    crate::wire::encode_map(map.iter().map(|(k, v)| (k.as_bytes(), v)))
}

/// Envoy's `HeaderMap::byteSize()`: every key and value, pseudo-headers included.
fn byte_size(map: Option<&HeaderMap>) -> u64 {
    map.map_or(0, |m| {
        m.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
    })
}

fn int(value: u64) -> Vec<u8> {
    PropValue::Int(i64::try_from(value).unwrap_or(i64::MAX)).encode()
}

fn duration(from: Option<u64>, to: Option<u64>) -> Result<Vec<u8>, i32> {
    match (from, to) {
        (Some(from), Some(to)) => Ok(PropValue::Duration(
            i64::try_from(to.saturating_sub(from)).unwrap_or(i64::MAX),
        )
        .encode()),
        _ => Err(NOT_FOUND),
    }
}

fn port_of(address: &str) -> Option<i64> {
    address.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

fn query_of(path: &str) -> &str {
    path.split_once('?').map_or("", |(_, q)| q)
}

/// Resolves `path`; `Ok(bytes)` (empty = the SDK's `None`) or a status (NotFound, …).
pub(crate) fn get(state: &HostState, path: &[String]) -> Result<Vec<u8>, i32> {
    let Some(first) = path.first() else {
        return Err(NOT_FOUND);
    };
    let stream = state.acting_stream();
    if let Some(stream) = stream {
        let dotted = path.join(".");
        if let Some(v) = stream.info.extra.get(&dotted) {
            return Ok(v.encode());
        }
    }
    let rest = path.get(1..).unwrap_or(&[]);
    match first.as_str() {
        "request" => request(stream.ok_or(NOT_FOUND)?, rest),
        "response" => response(stream.ok_or(NOT_FOUND)?, rest),
        "source" | "destination" => {
            let s = stream.ok_or(NOT_FOUND)?;
            let address = if first == "source" {
                &s.info.source_address
            } else {
                &s.info.destination_address
            };
            match rest.first().map(String::as_str) {
                Some("address") => Ok(PropValue::String(address.clone()).encode()),
                Some("port") => port_of(address)
                    .map(|p| PropValue::Int(p).encode())
                    .ok_or(NOT_FOUND),
                _ => Err(NOT_FOUND),
            }
        }
        "connection" => {
            let s = stream.ok_or(NOT_FOUND)?;
            match rest.first().map(String::as_str) {
                Some("id") => Ok(PropValue::Uint(s.info.connection_id).encode()),
                Some("mtls") => Ok(PropValue::Bool(s.info.mtls).encode()),
                _ => Err(NOT_FOUND),
            }
        }
        "xds" => match rest.first().map(String::as_str) {
            Some("route_name") => Ok(stream
                .ok_or(NOT_FOUND)?
                .info
                .route_name
                .clone()
                .into_bytes()),
            Some("cluster_name") => Ok(stream
                .ok_or(NOT_FOUND)?
                .info
                .cluster_name
                .clone()
                .into_bytes()),
            Some("node") => node(state, rest.get(1..).unwrap_or(&[])),
            _ => Err(NOT_FOUND),
        },
        "node" => node(state, rest),
        "plugin_name" => Ok(state.plugin.name.clone().into_bytes()),
        "plugin_root_id" => Ok(state.plugin.root_id.clone().into_bytes()),
        "plugin_vm_id" => Ok(state.plugin.vm_id.clone().into_bytes()),
        "filter_state" => {
            let s = stream.ok_or(NOT_FOUND)?;
            let key = rest.first().ok_or(NOT_FOUND)?;
            s.filter_state.get(key).ok_or(NOT_FOUND)
        }
        name => {
            let s = stream.ok_or(NOT_FOUND)?;
            let key = format!("{FILTER_STATE_PREFIX}{}", path.join("\0"));
            let _ = name;
            s.filter_state.get(&key).ok_or(NOT_FOUND)
        }
    }
}

fn request(s: &StreamCtx, rest: &[String]) -> Result<Vec<u8>, i32> {
    let field = rest.first().map(String::as_str);
    if field == Some("time") {
        return Ok(PropValue::Timestamp(s.request_time_ns).encode());
    }
    if field == Some("protocol") {
        return Ok(s.info.protocol.clone().into_bytes());
    }
    if field == Some("size") {
        return Ok(PropValue::Int(i64::try_from(s.request_body_size).unwrap_or(i64::MAX)).encode());
    }
    if field == Some("duration") {
        // Envoy: `requestComplete()`, set when the stream completes (so in `proxy_on_log`).
        return duration(Some(s.started_ns), s.completed_ns);
    }
    if field == Some("total_size") {
        // Envoy: bytes received plus the request headers' byte size.
        return Ok(int(s.request_body_size + byte_size(s.request_seen.as_ref())));
    }
    let headers = s.request_seen.as_ref().ok_or(NOT_FOUND)?;
    let get = |name: &str| headers.get_joined(name).ok_or(NOT_FOUND);
    match field {
        Some("path") => get(":path"),
        Some("url_path") => {
            let path = get(":path")?;
            Ok(path
                .split(|b| *b == b'?')
                .next()
                .unwrap_or_default()
                .to_vec())
        }
        Some("host") => get(":authority"),
        Some("scheme") => get(":scheme"),
        Some("method") => get(":method"),
        Some("referer") => get("referer"),
        Some("useragent") => get("user-agent"),
        Some("id") => get("x-request-id"),
        Some("query") => {
            let path = get(":path")?;
            Ok(query_of(&String::from_utf8_lossy(&path))
                .as_bytes()
                .to_vec())
        }
        Some("headers") => match rest.get(1) {
            None => Ok(map_value(headers)),
            Some(name) => get(name),
        },
        None => Err(SERIALIZATION_FAILURE),
        _ => Err(NOT_FOUND),
    }
}

fn response(s: &StreamCtx, rest: &[String]) -> Result<Vec<u8>, i32> {
    let field = rest.first().map(String::as_str);
    match field {
        Some("code_details") => {
            if s.response_code_details.is_empty() {
                Err(NOT_FOUND)
            } else {
                Ok(s.response_code_details.clone().into_bytes())
            }
        }
        Some("flags") => Ok(PropValue::Int(0).encode()),
        Some("size") => {
            Ok(PropValue::Int(i64::try_from(s.response_body_size).unwrap_or(i64::MAX)).encode())
        }
        // Envoy: bytes sent plus the response headers' and trailers' byte sizes.
        Some("total_size") => Ok(int(s.response_body_size
            + byte_size(s.response_seen.as_ref())
            + byte_size(s.response_trailers_seen.as_ref()))),
        // Envoy: last upstream byte received minus first upstream byte sent; absent without an
        // upstream exchange (here: no response phase delivered).
        Some("backend_latency") => duration(s.upstream_first_tx_ns, s.upstream_last_rx_ns),
        Some("code") => {
            let headers = s.response_seen.as_ref().ok_or(NOT_FOUND)?;
            let code: i64 = headers
                .get(":status")
                .and_then(|v| v.parse().ok())
                .ok_or(NOT_FOUND)?;
            Ok(PropValue::Int(code).encode())
        }
        Some("grpc_status") => {
            let headers = s.response_seen.as_ref().ok_or(NOT_FOUND)?;
            let trailers = s.response_trailers_seen.as_ref();
            let code = trailers
                .and_then(|t| t.get("grpc-status"))
                .or_else(|| headers.get("grpc-status"))
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or(NOT_FOUND)?;
            Ok(PropValue::Int(code).encode())
        }
        Some("headers") => {
            let headers = s.response_seen.as_ref().ok_or(NOT_FOUND)?;
            match rest.get(1) {
                None => Ok(map_value(headers)),
                Some(name) => headers.get_joined(name).ok_or(NOT_FOUND),
            }
        }
        Some("trailers") => {
            let trailers = s.response_trailers_seen.as_ref().ok_or(NOT_FOUND)?;
            match rest.get(1) {
                None => Ok(map_value(trailers)),
                Some(name) => trailers.get_joined(name).ok_or(NOT_FOUND),
            }
        }
        None => Err(SERIALIZATION_FAILURE),
        _ => Err(NOT_FOUND),
    }
}

fn node(state: &HostState, rest: &[String]) -> Result<Vec<u8>, i32> {
    let node = state.shared.node();
    match rest.first().map(String::as_str) {
        Some("id") => Ok(node.id.into_bytes()),
        Some("cluster") => Ok(node.cluster.into_bytes()),
        Some("metadata") => match rest.get(1) {
            Some(key) => node
                .metadata
                .get(key)
                .map(|v| v.clone().into_bytes())
                .ok_or(NOT_FOUND),
            None => Err(SERIALIZATION_FAILURE),
        },
        None => {
            // Serialized envoy.config.core.v3.Node with id (1) and cluster (2): enough for
            // filters that only check presence.
            let mut out = Vec::new();
            for (field, value) in [(1u8, node.id.as_bytes()), (2u8, node.cluster.as_bytes())] {
                if value.is_empty() {
                    continue;
                }
                out.push((field << 3) | 2);
                let mut len = value.len();
                loop {
                    let byte = (len & 0x7f) as u8;
                    len >>= 7;
                    if len == 0 {
                        out.push(byte);
                        break;
                    }
                    out.push(byte | 0x80);
                }
                out.extend_from_slice(value);
            }
            Ok(out)
        }
        _ => Err(NOT_FOUND),
    }
}
